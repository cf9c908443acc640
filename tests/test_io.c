/* File formats: safetensors round trips and rejections, truncation at every
 * byte, byte flips, atomic writes; IDX raw and gzip; CIFAR-10 records. No
 * device needed. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"
#include "io/io.h"

static char dir[256];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/dynb-io-test-%ld", (long)getpid());
  mkdir(dir, 0755);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd);
}

static void path_of(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static unsigned char *slurp(const char *path, size_t *n) {
  char err[256];
  unsigned char *b;
  assert_int_equal(dynb__file_read(path, 1 << 30, false, &b, n, err, sizeof err), DYNB_OK);
  return b;
}

/* A small file with every dtype, a scalar-free set of shapes and metadata. */
static void write_sample(const char *path) {
  static const float f[6] = {1, -2, 3.5f, 4, 5, 6};
  static const double d[2] = {0.1, -1e300};
  static const int32_t i[3] = {7, -8, 9};
  static const int64_t l[1] = {-5};
  static const unsigned char u[5] = {1, 2, 3, 4, 255};
  int64_t s23[2] = {2, 3}, s2[1] = {2}, s3[1] = {3}, s1[1] = {1}, s5[3] = {5, 1, 1};
  dynb__st_entry e[] = {{"a.weight", DYNB_ST_F32, 2, s23, f}, {"b", DYNB_ST_F64, 1, s2, d},
                        {"labels", DYNB_ST_I32, 1, s3, i}, {"big", DYNB_ST_I64, 1, s1, l},
                        {"bytes", DYNB_ST_U8, 3, s5, u}};
  const char *keys[2] = {"dynblocks.spec", "note"}, *vals[2] = {"{\"x\": 1}", "h\u00e9llo"};
  char err[256];
  if (dynb__st_write(path, e, 5, keys, vals, 2, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
}

static void safetensors_round_trip(void **state) {
  (void)state;
  char path[300], err[512];
  path_of(path, sizeof path, "sample.safetensors");
  write_sample(path);
  dynb__st_file f;
  if (dynb__st_open(path, &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  assert_int_equal(f.ntensors, 5);
  assert_int_equal((f.data_start - 8) % 8, 0); /* header padded to 8 */
  const dynb__st_tensor *a = dynb__st_find(&f, "a.weight");
  assert_non_null(a);
  assert_int_equal(a->ndim, 2);
  assert_int_equal(a->dims[1], 3);
  float fa[6];
  memcpy(fa, dynb__st_data(&f, a), sizeof fa);
  assert_true(fa[2] == 3.5f && fa[1] == -2);
  double db[2];
  memcpy(db, dynb__st_data(&f, dynb__st_find(&f, "b")), sizeof db);
  assert_true(db[0] == 0.1 && db[1] == -1e300);
  assert_string_equal(dynb__st_meta(&f, "dynblocks.spec"), "{\"x\": 1}");
  assert_null(dynb__st_meta(&f, "absent"));
  assert_int_equal(dynb__st_find(&f, "bytes")->dims[0], 5);
  assert_null(dynb__st_find(&f, "nope"));
  dynb__st_release(&f);
}

/* A hand-written header around `data_len` zero bytes. */
static dynb_status parse_text(const char *header, size_t data_len, char *err, size_t n) {
  size_t hl = strlen(header), size = 8 + hl + data_len;
  unsigned char *b = calloc(size, 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(((uint64_t)hl >> (8 * i)) & 0xff);
  memcpy(b + 8, header, hl);
  dynb__st_file f;
  dynb_status st = dynb__st_parse(b, size, "bad.safetensors", &f, err, n);
  if (st == DYNB_OK) dynb__st_release(&f);
  return st;
}

static void safetensors_rejections(void **state) {
  (void)state;
  static const struct {
    const char *header;
    size_t data;
    const char *needle;
  } cases[] = {
      {"[1]", 0, "not a JSON object"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}", 8, "not valid JSON"},
      {"{\"x\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4, "unsupported dtype 'F16'"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 12]}}", 12, "12 bytes for 2 elements"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4, "outside the data (4 bytes)"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, "shape[0] is not a size"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", 8, "shape[0] is not a size"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}", 8, "shape overflows"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, "expected 0 (gap or overlap)"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 8, "4 bytes of data are not covered"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"y\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "gap or overlap"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, "'x' appears twice"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"extra\": 1}}", 4, "unexpected or repeated key 'extra'"},
      {"{\"__metadata__\": {\"k\": 1}}", 0, "__metadata__.k is not a string"},
      {"{\"x\": 3}", 0, "tensor 'x': not an object"},
      {"{} xyz", 0, "garbage after the header"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char err[512] = "";
    dynb_status st = parse_text(cases[i].header, cases[i].data, err, sizeof err);
    if (st == DYNB_OK) fail_msg("case %zu accepted", i);
    if (!strstr(err, cases[i].needle) || strncmp(err, "bad.safetensors: ", 17) != 0)
      fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].needle);
  }
  /* A header length past the end of the file. */
  unsigned char *b = calloc(16, 1);
  b[0] = 200;
  dynb__st_file f;
  char err[256];
  assert_int_equal(dynb__st_parse(b, 16, "short.safetensors", &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  assert_non_null(strstr(err, "exceeds the file"));
}

/* Every prefix of a valid file is rejected cleanly; every single-byte flip
 * of the header either parses or is rejected cleanly (ASan watches). */
static void safetensors_truncations_and_flips(void **state) {
  (void)state;
  char path[300], err[512];
  path_of(path, sizeof path, "cut.safetensors");
  write_sample(path);
  size_t n;
  unsigned char *good = slurp(path, &n);
  for (size_t len = 0; len < n; len++) {
    unsigned char *b = malloc(len ? len : 1);
    memcpy(b, good, len);
    dynb__st_file f;
    if (dynb__st_parse(b, len, "cut", &f, err, sizeof err) == DYNB_OK)
      fail_msg("prefix of %zu of %zu bytes accepted", len, n);
  }
  size_t header_end = 8 + (size_t)good[0] + ((size_t)good[1] << 8);
  int accepted = 0;
  for (size_t i = 0; i < header_end; i++)
    for (int bit = 0; bit < 8; bit += 3) {
      unsigned char *b = malloc(n);
      memcpy(b, good, n);
      b[i] ^= (unsigned char)(1u << bit);
      dynb__st_file f;
      if (dynb__st_parse(b, n, "flip", &f, err, sizeof err) == DYNB_OK) {
        accepted++;
        dynb__st_release(&f);
      }
    }
  printf("byte flips accepted as valid files: %d\n", accepted);
  free(good);
}

static void atomic_write_keeps_the_old_file(void **state) {
  (void)state;
  char path[300], err[512];
  path_of(path, sizeof path, "keep.safetensors");
  write_sample(path);
  size_t n0;
  unsigned char *before = slurp(path, &n0);
  /* Make the directory unwritable: the temporary file cannot be created. */
  chmod(dir, 0555);
  int64_t one = 1;
  float v = 1;
  dynb__st_entry e = {"x", DYNB_ST_F32, 1, &one, &v};
  dynb_status st = dynb__st_write(path, &e, 1, NULL, NULL, 0, err, sizeof err);
  chmod(dir, 0755);
  if (geteuid() != 0) { /* root writes anyway; the check needs a normal user */
    assert_int_equal(st, DYNB_STATUS_IO_ERROR);
    assert_non_null(strstr(err, "keep.safetensors"));
  }
  if (st != DYNB_OK) {
    size_t n1;
    unsigned char *after = slurp(path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(after);
  }
  /* A target in a missing folder fails without leaving anything. */
  char missing[400];
  snprintf(missing, sizeof missing, "%s/no/such/dir/x.safetensors", dir);
  assert_int_equal(dynb__st_write(missing, &e, 1, NULL, NULL, 0, err, sizeof err), DYNB_STATUS_IO_ERROR);
  assert_non_null(strstr(err, "no/such/dir"));
  free(before);
}

/* ---- IDX and CIFAR ---- */

static void write_idx(const char *path, bool gz, int ndim, const uint32_t *dims, size_t extra) {
  size_t count = 1;
  for (int i = 0; i < ndim; i++) count *= dims[i];
  size_t n = 4 + 4 * (size_t)ndim + count + extra;
  unsigned char *b = calloc(n, 1);
  b[2] = 8, b[3] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++)
    for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
  for (size_t i = 0; i < count + extra; i++) b[4 + 4 * (size_t)ndim + i] = (unsigned char)(i * 7);
  if (gz) {
    gzFile g = gzopen(path, "wb");
    gzwrite(g, b, (unsigned)n);
    gzclose(g);
  } else {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
  }
  free(b);
}

static void idx_files(void **state) {
  (void)state;
  char path[300], err[512];
  uint32_t dims[3] = {3, 5, 4};
  int64_t got[3];
  unsigned char *data;
  for (int gz = 0; gz < 2; gz++) {
    path_of(path, sizeof path, gz ? "img.idx.gz" : "img.idx");
    write_idx(path, gz, 3, dims, 0);
    if (dynb__idx_read(path, 3, got, &data, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
    assert_true(got[0] == 3 && got[1] == 5 && got[2] == 4);
    assert_int_equal(data[59], (unsigned char)(59 * 7));
    free(data);
    /* labels file read as images: wrong rank */
    assert_int_equal(dynb__idx_read(path, 1, got, &data, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
    assert_non_null(strstr(err, "not an IDX file"));
    write_idx(path, gz, 3, dims, 1);
    assert_int_equal(dynb__idx_read(path, 3, got, &data, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
    assert_non_null(strstr(err, "header promises 60 bytes of data, the file holds 61"));
  }
  /* every prefix of a raw file */
  path_of(path, sizeof path, "full.idx");
  write_idx(path, false, 3, dims, 0);
  size_t n;
  unsigned char *good = slurp(path, &n);
  char cut[300];
  path_of(cut, sizeof cut, "cut.idx");
  for (size_t len = 0; len < n; len++) {
    FILE *f = fopen(cut, "wb");
    fwrite(good, 1, len, f);
    fclose(f);
    assert_int_equal(dynb__idx_read(cut, 3, got, &data, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  }
  free(good);
  uint32_t zero[1] = {0};
  write_idx(path, false, 1, zero, 0);
  assert_int_equal(dynb__idx_read(path, 1, got, &data, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  assert_int_equal(dynb__idx_read("/nonexistent/x.idx", 1, got, &data, err, sizeof err), DYNB_STATUS_IO_ERROR);
  assert_non_null(strstr(err, "/nonexistent/x.idx"));
}

static void fashion_mnist_test_set(void **state) {
  (void)state;
  const char *p = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  if (access(p, R_OK) != 0) {
    printf("skipping: %s absent\n", p);
    skip();
  }
  int64_t d[3], l[1];
  unsigned char *img, *lab;
  char err[512];
  if (dynb__idx_read(p, 3, d, &img, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  assert_true(d[0] == 10000 && d[1] == 28 && d[2] == 28);
  if (dynb__idx_read("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", 1, l, &lab, err,
                     sizeof err) != DYNB_OK)
    fail_msg("%s", err);
  int count[10] = {0};
  for (int i = 0; i < 10000; i++) {
    assert_true(lab[i] < 10);
    count[lab[i]]++;
  }
  for (int k = 0; k < 10; k++) assert_int_equal(count[k], 1000); /* balanced test set */
  free(img), free(lab);
}

static void cifar_records(void **state) {
  (void)state;
  char path[300], err[512];
  path_of(path, sizeof path, "batch.bin");
  unsigned char rec[2 * 3073] = {0};
  rec[0] = 3, rec[3073] = 9, rec[3073 + 5] = 42;
  FILE *f = fopen(path, "wb");
  fwrite(rec, 1, sizeof rec, f);
  fclose(f);
  int64_t n = 0;
  unsigned char *im = NULL, *lb = NULL;
  if (dynb__cifar_read(path, &n, &im, &lb, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  assert_int_equal(n, 2);
  assert_true(lb[0] == 3 && lb[1] == 9 && im[3072 + 4] == 42);
  rec[3073] = 10;
  f = fopen(path, "wb");
  fwrite(rec, 1, sizeof rec, f);
  fclose(f);
  assert_int_equal(dynb__cifar_read(path, &n, &im, &lb, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  assert_non_null(strstr(err, "record 1 has label 10"));
  f = fopen(path, "wb");
  fwrite(rec, 1, 3000, f);
  fclose(f);
  assert_int_equal(dynb__cifar_read(path, &n, &im, &lb, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  assert_non_null(strstr(err, "not a whole number of CIFAR-10 records"));
  free(im), free(lb);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(safetensors_round_trip),
      cmocka_unit_test(safetensors_rejections),
      cmocka_unit_test(safetensors_truncations_and_flips),
      cmocka_unit_test(atomic_write_keeps_the_old_file),
      cmocka_unit_test(idx_files),
      cmocka_unit_test(fashion_mnist_test_set),
      cmocka_unit_test(cifar_records),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
