/* The byte reader (exact reads, gzip, read errors), IDX and CIFAR-10 files
 * (round trips, every rejection, truncation at every byte raw and gzip'd,
 * byte flips, read errors at every byte), finding MNIST-style files, and the
 * real Fashion-MNIST files where Debian's package is installed. No device
 * needed. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>

#include "io_testutil.h"

/* ---- reader ---- */

static void reader_basics(void **state) {
  (void)state;
  static const unsigned char bytes[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  char err[512];
  unsigned char got[16];
  dynb__reader r;
  assert_int_equal(dynb__reader_open_mem(&r, "ten", bytes, 10, true, err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__reader_remaining(&r), 10);
  assert_int_equal(dynb__reader_exact(&r, got, 4, "four", err, sizeof err), DYNB_OK);
  assert_memory_equal(got, bytes, 4);
  assert_int_equal(dynb__reader_remaining(&r), 6);
  assert_int_equal(dynb__reader_end(&r, "four", err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "ten", "byte 4: 6 unexpected bytes after four");
  /* The end check consumed one byte: 5 remain, 8 are asked. */
  assert_int_equal(dynb__reader_exact(&r, got, 8, "the rest", err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "ten", "byte 5: file ends after 5 of the 8 bytes of the rest");
  size_t n;
  assert_int_equal(dynb__reader_read(&r, got, 4, &n, err, sizeof err), DYNB_OK);
  assert_int_equal(n, 0);
  assert_int_equal(dynb__reader_end(&r, "x", err, sizeof err), DYNB_OK);
  dynb__reader_close(&r);
  dynb__reader_close(&r);

  /* exact_grow with a promised size that is too small fails before
   * reserving anything; with enough, it appends. */
  unsigned char *buf = NULL;
  assert_int_equal(dynb__reader_open_mem(&r, "ten", bytes, 10, false, err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__reader_exact_grow(&r, &buf, 0, 1u << 30, "a gigabyte", err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  assert_null(buf);
  iot_expect_msg(err, "ten", "file ends after 10 of the 1073741824 bytes of a gigabyte");
  assert_int_equal(dynb__reader_exact_grow(&r, &buf, 0, 3, "three", err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__reader_exact_grow(&r, &buf, 3, 7, "seven", err, sizeof err), DYNB_OK);
  assert_memory_equal(buf, bytes, 10);
  free(buf);
  dynb__reader_close(&r);

  unsigned char *all;
  assert_int_equal(dynb__reader_open_mem(&r, "ten", bytes, 10, false, err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__reader_all(&r, 9, &all, &n, err, sizeof err), DYNB_STATUS_SIZE_OVERFLOW);
  iot_expect_msg(err, "ten", "larger than 9 bytes");
  dynb__reader_close(&r);

  char path[300];
  iot_path(path, sizeof path, "absent");
  assert_int_equal(dynb__reader_open_file(&r, path, true, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, path, "cannot open: No such file or directory");
  assert_int_equal(dynb__reader_open_file(&r, iot_dir, true, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, iot_dir, "Is a directory");
  assert_int_equal(dynb__reader_open_file(&r, "", true, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  dynb__reader_close(&r);
  assert_int_equal(dynb__file_read(path, 10, false, &all, &n, err, sizeof err), DYNB_STATUS_IO_ERROR);
}

/* Byte order and UTF-8 on hand-written values. */
static void byte_helpers(void **state) {
  (void)state;
  static const unsigned char be[4] = {0x00, 0x00, 0x08, 0x03};
  assert_int_equal(dynb__load_be32(be), 0x803);
  static const unsigned char le[8] = {0x50, 0x01, 0, 0, 0, 0, 0, 0x80};
  assert_true(dynb__load_le64(le) == 0x8000000000000150ull);
  unsigned char out[8];
  dynb__store_le64(out, 0x8000000000000150ull);
  assert_memory_equal(out, le, 8);
  /* Two 4-byte elements reversed each; C64-style units of 4 in 8. */
  static const unsigned char in[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  static const unsigned char swapped[8] = {4, 3, 2, 1, 8, 7, 6, 5};
  dynb__byteswap_copy(out, in, 2, 4);
  assert_memory_equal(out, swapped, 8);
  static const unsigned char swapped8[8] = {8, 7, 6, 5, 4, 3, 2, 1};
  dynb__byteswap_copy(out, in, 1, 8);
  assert_memory_equal(out, swapped8, 8);
  /* On this (little-endian) host le_copy is a plain copy. */
  const float one = 1.0f;
  unsigned char f[4];
  dynb__le_copy(f, &one, 1, 4);
  if (dynb__host_is_little_endian()) {
    static const unsigned char want[4] = {0x00, 0x00, 0x80, 0x3f};
    assert_memory_equal(f, want, 4);
  }
  static const struct {
    const char *s;
    size_t valid_prefix;
  } utf8[] = {
      {"plain", 5},
      {"\xc3\xa9\xe2\x82\xac\xf0\x90\x8d\x88", 9}, /* é € 𐍈 */
      {"a\xc0\x80", 1},                            /* overlong NUL */
      {"a\xe0\x80\xaf", 1},                        /* overlong '/' */
      {"\xed\xa0\x80", 0},                         /* surrogate U+D800 */
      {"\xf4\x90\x80\x80", 0},                     /* U+110000 */
      {"ab\xe2\x82", 2},                           /* cut short */
      {"\x80", 0},                                 /* lone continuation */
      {"\xff", 0},
  };
  for (size_t i = 0; i < sizeof utf8 / sizeof *utf8; i++) {
    size_t n = strlen(utf8[i].s);
    assert_int_equal(dynb__utf8_prefix(utf8[i].s, n), utf8[i].valid_prefix);
    assert_int_equal(dynb__utf8_valid(utf8[i].s, n), utf8[i].valid_prefix == n);
  }
}

/* Compressible bytes that still cross the reader's 64 KiB buffer. */
static unsigned char *pattern(size_t n) {
  unsigned char *b = malloc(n);
  for (size_t i = 0; i < n; i++) b[i] = (unsigned char)((i * 2654435761u) >> 13 & 0x0f);
  return b;
}

/* Reads everything from a reader over `src` (gunzip on, `chunk` bytes per
 * source call, size unknown); returns the status and the bytes. */
static dynb_status read_through(const unsigned char *src, size_t n, size_t chunk, size_t fail_at,
                                unsigned char **out, size_t *out_n, char *err, size_t errlen) {
  iot_source s = iot_trickle(src, n, chunk, fail_at);
  dynb__reader r;
  dynb_status st = dynb__reader_open_source(&r, "gz", iot_source_read, &s, DYNB__SIZE_UNKNOWN, true,
                                            err, errlen);
  *out = NULL, *out_n = 0;
  if (st == DYNB_OK) st = dynb__reader_all(&r, 1 << 24, out, out_n, err, errlen);
  dynb__reader_close(&r);
  return st;
}

static void reader_gzip(void **state) {
  (void)state;
  enum { N = 300000 };
  unsigned char *plain = pattern(N), *out;
  size_t gz_n, n;
  unsigned char *gz = iot_gzip(plain, N, &gz_n);
  char err[512];
  for (size_t chunk = 1; chunk <= 1u << 20; chunk *= 64) {
    assert_int_equal(read_through(gz, gz_n, chunk, SIZE_MAX, &out, &n, err, sizeof err), DYNB_OK);
    assert_int_equal(n, N);
    assert_memory_equal(out, plain, N);
    free(out);
  }
  /* Two members are one stream. */
  size_t gz2_n;
  unsigned char *gz2 = iot_gzip(plain + 1000, 500, &gz2_n);
  unsigned char *both = malloc(gz_n + gz2_n + 2);
  memcpy(both, gz, gz_n);
  memcpy(both + gz_n, gz2, gz2_n);
  assert_int_equal(read_through(both, gz_n + gz2_n, 4096, SIZE_MAX, &out, &n, err, sizeof err), DYNB_OK);
  assert_int_equal(n, N + 500);
  assert_memory_equal(out + N, plain + 1000, 500);
  free(out);
  /* Anything else after a member is an error, even one zero byte. */
  both[gz_n] = 0;
  assert_int_equal(read_through(both, gz_n + 1, 4096, SIZE_MAX, &out, &n, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "gz", "unexpected bytes after the gzip data");
  /* The CRC catches a changed payload byte. */
  memcpy(both, gz, gz_n);
  both[gz_n - 8] ^= 1; /* first byte of the CRC-32 trailer */
  assert_int_equal(read_through(both, gz_n, 4096, SIZE_MAX, &out, &n, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "gz", "corrupt gzip data (incorrect data check)");
  /* Cut short: an error, never a quiet end. */
  assert_int_equal(read_through(gz, gz_n - 1, 4096, SIZE_MAX, &out, &n, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "gz", "the gzip data is cut short");
  /* A read error inside the compressed data. */
  assert_int_equal(read_through(gz, gz_n, 4096, gz_n / 2, &out, &n, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, "gz", "read error: Input/output error");
  /* Without gunzip the bytes pass through unchanged. */
  dynb__reader r;
  assert_int_equal(dynb__reader_open_mem(&r, "raw", gz, gz_n, false, err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__reader_all(&r, 1 << 24, &out, &n, err, sizeof err), DYNB_OK);
  assert_int_equal(n, gz_n);
  assert_memory_equal(out, gz, gz_n);
  free(out);
  dynb__reader_close(&r);
  /* A bomb: 64 MiB of zeros behind a tiny file; asking for 100 bytes and
   * the end stops after the first buffer, not after 64 MiB. */
  size_t zeros_n = (size_t)64 << 20, bomb_n;
  unsigned char *zeros = calloc(zeros_n, 1), *bomb = iot_gzip(zeros, zeros_n, &bomb_n);
  free(zeros);
  unsigned char hundred[100];
  assert_int_equal(dynb__reader_open_mem(&r, "bomb", bomb, bomb_n, true, err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__reader_exact(&r, hundred, 100, "data", err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__reader_end(&r, "data", err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "bomb", "byte 100: unexpected bytes after data");
  dynb__reader_close(&r);
  free(bomb), free(both), free(gz2), free(gz), free(plain);
}

/* Every prefix and every flipped bit of a small gzip stream: an error or
 * exactly the original bytes. */
static void reader_gzip_cuts_and_flips(void **state) {
  (void)state;
  static const char text[] = "dynblocks reads gzip'd IDX files and checks every byte of them.";
  size_t n = sizeof text, gz_n, got_n;
  unsigned char *gz = iot_gzip(text, n, &gz_n), *got;
  char err[512];
  for (size_t len = 2; len < gz_n; len++) { /* fewer than 2 bytes is no gzip magic */
    if (read_through(gz, len, 3, SIZE_MAX, &got, &got_n, err, sizeof err) != DYNB_STATUS_BAD_FORMAT)
      fail_msg("gzip prefix of %zu of %zu bytes accepted", len, gz_n);
    iot_expect_msg(err, "gz", "");
  }
  int same = 0, errors = 0;
  for (size_t i = 0; i < gz_n; i++)
    for (int bit = 0; bit < 8; bit++) {
      unsigned char *b = malloc(gz_n);
      memcpy(b, gz, gz_n);
      b[i] ^= (unsigned char)(1u << bit);
      dynb_status st = read_through(b, gz_n, 5, SIZE_MAX, &got, &got_n, err, sizeof err);
      if (st == DYNB_OK && i < 2) {
        /* No longer gzip: passed through as it is. */
        assert_int_equal(got_n, gz_n);
      } else if (st == DYNB_OK) {
        /* Only header fields without a check (time, flags, OS) may change. */
        if (got_n != n || memcmp(got, text, n) != 0) fail_msg("flip at %zu bit %d changed the data", i, bit);
        same++;
      } else {
        assert_int_equal(st, DYNB_STATUS_BAD_FORMAT);
        errors++;
      }
      free(got), free(b);
    }
  printf("gzip bit flips: %d harmless (header fields), %d rejected\n", same, errors);
  free(gz);
}

/* ---- IDX ---- */

/* An IDX file of unsigned bytes: the header, count items, `extra` bytes. */
static unsigned char *idx_bytes(int ndim, const uint32_t *dims, size_t extra, size_t *n) {
  size_t count = 1;
  for (int i = 0; i < ndim; i++) count *= dims[i];
  *n = 4 + 4 * (size_t)ndim + count + extra;
  unsigned char *b = calloc(*n, 1);
  b[2] = 8, b[3] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++)
    for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
  for (size_t i = 0; i < count + extra; i++) b[4 + 4 * (size_t)ndim + i] = (unsigned char)(i * 7);
  return b;
}

static void write_idx(const char *path, bool gz, int ndim, const uint32_t *dims, size_t extra) {
  size_t n, gz_n;
  unsigned char *b = idx_bytes(ndim, dims, extra, &n);
  if (gz) {
    unsigned char *z = iot_gzip(b, n, &gz_n);
    iot_write(path, z, gz_n);
    free(z);
  } else {
    iot_write(path, b, n);
  }
  free(b);
}

static void idx_round_trip(void **state) {
  (void)state;
  char path[300], err[512];
  uint32_t dims[3] = {3, 5, 4}, ldims[1] = {7};
  int64_t got[3];
  unsigned char *data;
  for (int gz = 0; gz < 2; gz++) {
    iot_path(path, sizeof path, gz ? "img.idx.gz" : "img.idx");
    write_idx(path, gz, 3, dims, 0);
    if (dynb__idx_read(path, 3, got, &data, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
    assert_true(got[0] == 3 && got[1] == 5 && got[2] == 4);
    for (int i = 0; i < 60; i++) assert_int_equal(data[i], (unsigned char)(i * 7));
    free(data);
    iot_path(path, sizeof path, gz ? "lab.idx.gz" : "lab.idx");
    write_idx(path, gz, 1, ldims, 0);
    if (dynb__idx_read(path, 1, got, &data, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
    assert_int_equal(got[0], 7);
    assert_int_equal(data[6], 42);
    free(data);
  }
  assert_int_equal(dynb__idx_read(path, 0, got, &data, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(dynb__idx_read(path, 5, got, &data, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  iot_path(path, sizeof path, "absent.idx");
  assert_int_equal(dynb__idx_read(path, 1, got, &data, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, path, "cannot open");
  assert_null(data);
}

/* IDX bytes given as text: header fields spelled out byte by byte. */
static void idx_rejections(void **state) {
  (void)state;
  static const struct {
    unsigned char head[16];
    size_t head_n, data_n;
    int ndim;
    dynb_status status;
    const char *needle;
  } cases[] = {
      {{0, 1, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}, 16, 1, 3, DYNB_STATUS_BAD_FORMAT, "byte 0: not an IDX file (magic 00 01 08 03)"},
      {{0x1f, 0x8c, 8, 3}, 4, 0, 3, DYNB_STATUS_BAD_FORMAT, "not an IDX file"},
      {{0, 0, 0x0d, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}, 16, 4, 3, DYNB_STATUS_BAD_FORMAT, "byte 2: IDX data type 0x0d (float); only unsigned bytes"},
      {{0, 0, 8, 1, 0, 0, 0, 2}, 8, 2, 3, DYNB_STATUS_BAD_FORMAT, "byte 3: IDX file of 1 dimension(s); expected 3 (images, magic 0x00000803)"},
      {{0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}, 16, 1, 1, DYNB_STATUS_BAD_FORMAT, "expected 1 (labels, magic 0x00000801)"},
      {{0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1}, 16, 0, 3, DYNB_STATUS_BAD_FORMAT, "byte 4: dimension 0 is 0, outside 1..100000000"},
      {{0, 0, 8, 3, 0x05, 0xf5, 0xe1, 0x01, 0, 0, 0, 1, 0, 0, 0, 1}, 16, 0, 3, DYNB_STATUS_BAD_FORMAT, "dimension 0 is 100000001"},
      {{0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0x10, 0x01, 0, 0, 0, 1}, 16, 0, 3, DYNB_STATUS_BAD_FORMAT, "byte 8: dimension 1 is 4097, outside 1..4096"},
      {{0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}, 16, 0, 3, DYNB_STATUS_BAD_FORMAT, "byte 12: dimension 2 is 0"},
      {{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 1}, 16, 0, 3, DYNB_STATUS_BAD_FORMAT, "dimension 0 is 4294967295"},
      /* 10^8 images of 4096 x 4096: within every dimension's cap, not the total's. */
      {{0, 0, 8, 3, 0x05, 0xf5, 0xe1, 0x00, 0, 0, 0x10, 0, 0, 0, 0x10, 0}, 16, 0, 3, DYNB_STATUS_SIZE_OVERFLOW, "1677721600000000 bytes of items exceed the cap"},
      {{0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4}, 16, 59, 3, DYNB_STATUS_BAD_FORMAT, "byte 16: file ends after 59 of the 60 bytes of image data"},
      {{0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4}, 16, 61, 3, DYNB_STATUS_BAD_FORMAT, "byte 76: 1 unexpected bytes after image data"},
      {{0, 0, 8, 1, 0, 0, 0, 3}, 8, 2, 1, DYNB_STATUS_BAD_FORMAT, "byte 8: file ends after 2 of the 3 bytes of label data"},
      {{0, 0, 8, 3, 0, 0, 0, 3, 0, 0}, 10, 0, 3, DYNB_STATUS_BAD_FORMAT, "byte 4: file ends after 6 of the 12 bytes of IDX dimensions"},
      {{0, 0, 8}, 3, 0, 3, DYNB_STATUS_BAD_FORMAT, "byte 0: file ends after 3 of the 4 bytes of the IDX magic number"},
  };
  char path[300], err[512];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    for (int gz = 0; gz < 2; gz++) {
      size_t n = cases[i].head_n + cases[i].data_n, zn;
      unsigned char *b = calloc(n + 1, 1);
      memcpy(b, cases[i].head, cases[i].head_n);
      iot_path(path, sizeof path, gz ? "bad.idx.gz" : "bad.idx");
      unsigned char *z = gz ? iot_gzip(b, n, &zn) : NULL;
      iot_write(path, gz ? z : b, gz ? zn : n);
      int64_t dims[3];
      unsigned char *data = (unsigned char *)1;
      dynb_status st = dynb__idx_read(path, cases[i].ndim, dims, &data, err, sizeof err);
      if (st != cases[i].status)
        fail_msg("case %zu%s: %s, expected %s (%s)", i, gz ? " (gzip)" : "", dynb_status_name(st),
                 dynb_status_name(cases[i].status), err);
      /* Behind gzip the reader cannot know how many bytes follow, so the
       * count of unexpected bytes is left out of that message. */
      bool extra = strstr(cases[i].needle, "unexpected") != NULL;
      iot_expect_msg(err, path, gz && extra ? "byte 76: unexpected bytes after image data" : cases[i].needle);
      assert_null(data);
      free(b), free(z);
    }
}

/* Every prefix of a raw and a gzip'd IDX file, as files and through a
 * trickling source; every bit of the raw header flipped. */
static void idx_truncation_and_flips(void **state) {
  (void)state;
  uint32_t dims[3] = {2, 3, 5};
  size_t n, gz_n;
  unsigned char *raw = idx_bytes(3, dims, 0, &n), *gz = iot_gzip(raw, n, &gz_n);
  char path[300], err[512];
  iot_path(path, sizeof path, "cut.idx");
  int64_t d[3];
  unsigned char *data;
  for (int zipped = 0; zipped < 2; zipped++) {
    const unsigned char *src = zipped ? gz : raw;
    size_t size = zipped ? gz_n : n;
    for (size_t len = 0; len < size; len++) {
      iot_write(path, src, len);
      if (dynb__idx_read(path, 3, d, &data, err, sizeof err) != DYNB_STATUS_BAD_FORMAT)
        fail_msg("%s prefix of %zu of %zu bytes: %s", zipped ? "gzip" : "raw", len, size, err);
      iot_expect_msg(err, path, "");
      assert_null(data);
      iot_source s = iot_trickle(src, len, 3, SIZE_MAX);
      dynb__reader r;
      assert_int_equal(dynb__reader_open_source(&r, "cut", iot_source_read, &s, DYNB__SIZE_UNKNOWN,
                                                true, err, sizeof err), DYNB_OK);
      assert_int_equal(dynb__idx_read_from(&r, 3, d, &data, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
      dynb__reader_close(&r);
    }
    /* Read errors at every byte. */
    for (size_t k = 0; k < size; k++) {
      iot_source s = iot_trickle(src, size, 4, k);
      dynb__reader r;
      dynb_status st = dynb__reader_open_source(&r, "faulty", iot_source_read, &s, size, true, err, sizeof err);
      if (st == DYNB_OK) st = dynb__idx_read_from(&r, 3, d, &data, err, sizeof err);
      dynb__reader_close(&r);
      if (st != DYNB_STATUS_IO_ERROR) fail_msg("fault at byte %zu: %s (%s)", k, dynb_status_name(st), err);
      iot_expect_msg(err, "faulty", "read error");
    }
  }
  int accepted = 0;
  for (size_t i = 0; i < 16; i++)
    for (int bit = 0; bit < 8; bit++) {
      unsigned char b[64];
      memcpy(b, raw, n);
      b[i] ^= (unsigned char)(1u << bit);
      dynb__reader r;
      assert_int_equal(dynb__reader_open_mem(&r, "flip", b, n, true, err, sizeof err), DYNB_OK);
      dynb_status st = dynb__idx_read_from(&r, 3, d, &data, err, sizeof err);
      dynb__reader_close(&r);
      if (st == DYNB_OK) {
        accepted++;
        assert_int_equal(d[0] * d[1] * d[2], 30); /* only a reshuffle of 30 bytes can pass */
        free(data);
      } else if (st != DYNB_STATUS_BAD_FORMAT && st != DYNB_STATUS_SIZE_OVERFLOW) {
        fail_msg("flip at %zu bit %d: %s", i, bit, dynb_status_name(st));
      }
    }
  printf("IDX header bit flips accepted: %d of 128\n", accepted);
  free(raw), free(gz);
}

static void labels_check(void **state) {
  (void)state;
  static const unsigned char labels[5] = {0, 9, 3, 10, 255};
  char err[256];
  assert_int_equal(dynb__labels_check(labels, 3, 10, "lab", err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__labels_check(labels, 5, 10, "lab", err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "lab", "item 3 has label 10; expected 0..9");
  assert_int_equal(dynb__labels_check(labels, 5, 256, "lab", err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__labels_check(labels, 5, 0, "lab", err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(dynb__labels_check(NULL, 1, 10, "lab", err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
}

/* ---- CIFAR-10 ---- */

static unsigned char *cifar_bytes(int records, size_t *n) {
  *n = (size_t)records * DYNB_CIFAR_RECORD;
  unsigned char *b = calloc(*n, 1);
  for (int r = 0; r < records; r++) {
    b[(size_t)r * DYNB_CIFAR_RECORD] = (unsigned char)(r % 10);
    for (int p = 0; p < DYNB_CIFAR_PIXELS; p++)
      b[(size_t)r * DYNB_CIFAR_RECORD + 1 + (size_t)p] = (unsigned char)(r * 31 + p);
  }
  return b;
}

static void cifar_records(void **state) {
  (void)state;
  char path[300], err[512];
  iot_path(path, sizeof path, "batch.bin");
  size_t size;
  unsigned char *b = cifar_bytes(3, &size);
  iot_write(path, b, size);
  int64_t n = 0;
  unsigned char *im = NULL, *lb = NULL;
  if (dynb__cifar_read(path, &n, &im, &lb, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  assert_int_equal(n, 3);
  /* A second batch appends; a gzip'd one reads the same. */
  size_t gz_n;
  unsigned char *gz = iot_gzip(b, size, &gz_n);
  iot_path(path, sizeof path, "batch.bin.gz");
  iot_write(path, gz, gz_n);
  if (dynb__cifar_read(path, &n, &im, &lb, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  assert_int_equal(n, 6);
  for (int r = 0; r < 6; r++) {
    assert_int_equal(lb[r], (r % 3) % 10);
    assert_memory_equal(im + (size_t)r * DYNB_CIFAR_PIXELS, b + (size_t)(r % 3) * DYNB_CIFAR_RECORD + 1,
                        DYNB_CIFAR_PIXELS);
  }
  /* A bad label names its record; n stays. */
  b[2 * DYNB_CIFAR_RECORD] = 10;
  iot_path(path, sizeof path, "bad.bin");
  iot_write(path, b, size);
  assert_int_equal(dynb__cifar_read(path, &n, &im, &lb, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, path, "byte 6146: record 2 has label 10; CIFAR-10 labels are 0..9");
  assert_int_equal(n, 6);
  b[2 * DYNB_CIFAR_RECORD] = 2;
  iot_write(path, b, 3000);
  assert_int_equal(dynb__cifar_read(path, &n, &im, &lb, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, path, "3000 bytes is not a whole, non-zero number of CIFAR-10 records (3073 bytes each)");
  iot_write(path, b, 0);
  assert_int_equal(dynb__cifar_read(path, &n, &im, &lb, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, path, "0 bytes is not a whole");
  assert_int_equal(n, 6);
  iot_path(path, sizeof path, "absent.bin");
  assert_int_equal(dynb__cifar_read(path, &n, &im, &lb, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, path, "cannot open");
  iot_path(path, sizeof path, "batch.bin");
  n = -1;
  assert_int_equal(dynb__cifar_read(path, &n, &im, &lb, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  free(im), free(lb), free(gz), free(b);
}

/* Every prefix of a two-record file, known and unknown size, raw and
 * gzip'd, and read errors at every 97th byte. */
static void cifar_truncation(void **state) {
  (void)state;
  size_t size, gz_n;
  unsigned char *b = cifar_bytes(2, &size), *gz = iot_gzip(b, size, &gz_n);
  char err[512];
  for (int zipped = 0; zipped < 2; zipped++) {
    const unsigned char *src = zipped ? gz : b;
    size_t n = zipped ? gz_n : size;
    for (size_t len = 0; len < n; len++) {
      if (!zipped && len == DYNB_CIFAR_RECORD) continue; /* one whole record is a valid file */
      for (int known = 0; known < 2; known++) {
        iot_source s = iot_trickle(src, len, 1000, SIZE_MAX);
        dynb__reader r;
        assert_int_equal(dynb__reader_open_source(&r, "cut", iot_source_read, &s,
                                                  known ? len : DYNB__SIZE_UNKNOWN, true, err, sizeof err), DYNB_OK);
        int64_t count = 0;
        unsigned char *im = NULL, *lb = NULL;
        dynb_status st = dynb__cifar_read_from(&r, &count, &im, &lb, err, sizeof err);
        dynb__reader_close(&r);
        if (st != DYNB_STATUS_BAD_FORMAT) fail_msg("prefix %zu of %zu (%d, %d): %s", len, n, zipped, known, err);
        assert_int_equal(count, 0);
        free(im), free(lb);
      }
    }
    for (size_t k = 0; k < n; k += 97) {
      iot_source s = iot_trickle(src, n, 1000, k);
      dynb__reader r;
      int64_t count = 0;
      unsigned char *im = NULL, *lb = NULL;
      dynb_status st = dynb__reader_open_source(&r, "faulty", iot_source_read, &s, n, true, err, sizeof err);
      if (st == DYNB_OK) st = dynb__cifar_read_from(&r, &count, &im, &lb, err, sizeof err);
      dynb__reader_close(&r);
      assert_int_equal(st, DYNB_STATUS_IO_ERROR);
      assert_int_equal(count, 0);
      free(im), free(lb);
    }
  }
  free(b), free(gz);
}

/* ---- finding MNIST-style files ---- */

static void idx_locate(void **state) {
  (void)state;
  char path[300], err[512], *im, *lb;
  iot_path(path, sizeof path, "train-images-idx3-ubyte.gz");
  iot_write(path, "x", 1);
  iot_path(path, sizeof path, "train-images-idx3-ubyte");
  iot_write(path, "x", 1);
  iot_path(path, sizeof path, "train-labels-idx1-ubyte");
  iot_write(path, "x", 1);
  assert_int_equal(dynb__idx_locate(iot_dir, "train", &im, &lb, err, sizeof err), DYNB_OK);
  iot_path(path, sizeof path, "train-images-idx3-ubyte.gz");
  assert_string_equal(im, path); /* .gz preferred */
  iot_path(path, sizeof path, "train-labels-idx1-ubyte");
  assert_string_equal(lb, path); /* else the raw file */
  free(im), free(lb);
  im = lb = (char *)1;
  assert_int_equal(dynb__idx_locate(iot_dir, "t10k", &im, &lb, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, iot_dir, "no readable t10k-images-idx3-ubyte[.gz]");
  assert_null(im);
  assert_null(lb);
  iot_path(path, sizeof path, "t10k-images-idx3-ubyte");
  iot_write(path, "x", 1);
  assert_int_equal(dynb__idx_locate(iot_dir, "t10k", &im, &lb, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, iot_dir, "no readable t10k-labels-idx1-ubyte[.gz]");
  assert_null(im);
  assert_int_equal(dynb__idx_locate(iot_dir, "test", &im, &lb, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(dynb__idx_locate("", "train", &im, &lb, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
}

/* The real files of Debian's dataset-fashion-mnist: 60000 + 10000 images
 * of 28 x 28 and balanced labels 0..9 (6000 and 1000 per class, as the data
 * set's description says). */
static void fashion_mnist(void **state) {
  (void)state;
  char *im_path, *lb_path, err[512];
  if (dynb__idx_locate(DYNB_FASHION_MNIST_DIR, "t10k", &im_path, &lb_path, err, sizeof err) != DYNB_OK) {
    printf("skipping: %s (install dataset-fashion-mnist)\n", err);
    skip();
  }
  static const struct {
    const char *split;
    int64_t n;
  } splits[2] = {{"t10k", 10000}, {"train", 60000}};
  for (int s = 0; s < 2; s++) {
    if (s == 1) {
      free(im_path), free(lb_path);
      if (dynb__idx_locate(DYNB_FASHION_MNIST_DIR, "train", &im_path, &lb_path, err, sizeof err) != DYNB_OK)
        fail_msg("%s", err);
    }
    int64_t d[3], l[1];
    unsigned char *img, *lab;
    if (dynb__idx_read(im_path, 3, d, &img, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
    if (dynb__idx_read(lb_path, 1, l, &lab, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
    assert_true(d[0] == splits[s].n && d[1] == 28 && d[2] == 28 && l[0] == splits[s].n);
    assert_int_equal(dynb__labels_check(lab, l[0], 10, lb_path, err, sizeof err), DYNB_OK);
    int64_t count[10] = {0};
    for (int64_t i = 0; i < l[0]; i++) count[lab[i]]++;
    for (int k = 0; k < 10; k++) assert_int_equal(count[k], splits[s].n / 10);
    unsigned lo = 255, hi = 0;
    for (int64_t i = 0; i < d[0] * 28 * 28; i++) lo = img[i] < lo ? img[i] : lo, hi = img[i] > hi ? img[i] : hi;
    assert_true(lo == 0 && hi == 255);
    printf("%s: %" PRId64 " images of 28x28, labels balanced\n", im_path, d[0]);
    free(img), free(lab);
  }
  free(im_path), free(lb_path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(reader_basics),
      cmocka_unit_test(byte_helpers),
      cmocka_unit_test(reader_gzip),
      cmocka_unit_test(reader_gzip_cuts_and_flips),
      cmocka_unit_test(idx_round_trip),
      cmocka_unit_test(idx_rejections),
      cmocka_unit_test(idx_truncation_and_flips),
      cmocka_unit_test(labels_check),
      cmocka_unit_test(cifar_records),
      cmocka_unit_test(cifar_truncation),
      cmocka_unit_test(idx_locate),
      cmocka_unit_test(fashion_mnist),
  };
  return cmocka_run_group_tests(tests, iot_setup, iot_teardown);
}
