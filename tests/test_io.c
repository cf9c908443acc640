/* safetensors: round trips through every way in (file, memory, owned
 * buffer, a trickling source of unknown size), a byte-exact check of the
 * writer against a hand-written file, every rejection of the reader and the
 * writer, truncation at every byte, every bit flipped in the header, read
 * errors at every byte. Atomic saves: test_io_atomic.c. No device needed. */
#define _POSIX_C_SOURCE 200809L

#include "io_testutil.h"

/* ---- a sample file ---- */

static const float s_f32[6] = {1, -2, 3.5f, 4, 5, 6};
static const double s_f64[2] = {0.1, -1e300};
static const int32_t s_i32[3] = {7, -8, 9};
static const int64_t s_i64[1] = {-5};
static const unsigned char s_u8[5] = {1, 2, 3, 4, 255};
static const uint16_t s_f16[2] = {0x3c00, 0xc000}; /* 1.0, -2.0 as half */
static const float s_scalar = 42.0f;
static const uint32_t s_c64[4] = {1, 2, 3, 4};
static int64_t d23[2] = {2, 3}, d2[1] = {2}, d3[1] = {3}, d1[1] = {1}, d511[3] = {5, 1, 1},
               d0[1] = {0}, d203[3] = {2, 0, 3};

#define NSAMPLE 10
/* Names with quotes, backslashes, a newline and non-ASCII text exercise the
 * writer's escaping and the reader's decoding. */
static const dynb__st_entry sample[NSAMPLE] = {
    {"a.weight", DYNB_ST_F32, 2, d23, s_f32},
    {"b", DYNB_ST_F64, 1, d2, s_f64},
    {"labels", DYNB_ST_I32, 1, d3, s_i32},
    {"big", DYNB_ST_I64, 1, d1, s_i64},
    {"bytes", DYNB_ST_U8, 3, d511, s_u8},
    {"half \"quoted\" \\ name\n", DYNB_ST_F16, 1, d2, s_f16},
    {"scalar (0-d)", DYNB_ST_F32, 0, NULL, &s_scalar},
    {"empty", DYNB_ST_F64, 1, d0, NULL},
    {"empty.2x0x3 \xc3\xa9\xe2\x82\xac", DYNB_ST_I64, 3, d203, NULL},
    {"complex", DYNB_ST_C64, 1, d2, s_c64},
};
static const char *const meta_k[3] = {"dynblocks.spec", "note", "quote\"d"};
static const char *const meta_v[3] = {"{\"x\": 1}", "h\xc3\xa9llo \xf0\x9f\x99\x82", "tab\there"};

static void write_sample(const char *path) {
  char err[512];
  if (dynb__st_write(path, sample, NSAMPLE, meta_k, meta_v, 3, err, sizeof err) != DYNB_OK)
    fail_msg("%s", err);
}

static unsigned char *sample_bytes(size_t *n) {
  char path[300];
  iot_path(path, sizeof path, "sample.safetensors");
  write_sample(path);
  return iot_slurp(path, n);
}

static size_t entry_bytes(const dynb__st_entry *e) {
  size_t n = dynb__st_dtype_size(e->dtype);
  for (int d = 0; d < e->ndim; d++) n *= (size_t)e->dims[d];
  return n;
}

/* Everything in f is what `sample` wrote, in order. */
static void check_sample(const dynb__st_file *f) {
  assert_int_equal(f->ntensors, NSAMPLE);
  assert_int_equal(f->data_start % 8, 0);
  assert_int_equal(f->bytes[8], '{');
  for (int i = 0; i < NSAMPLE; i++) {
    const dynb__st_entry *e = &sample[i];
    const dynb__st_tensor *t = dynb__st_find(f, e->name);
    if (!t) fail_msg("tensor '%s' not found", e->name);
    assert_ptr_equal(t, &f->tensors[i]); /* header order = insertion order */
    assert_string_equal(t->name, e->name);
    assert_int_equal(t->dtype, e->dtype);
    assert_int_equal(t->ndim, e->ndim);
    for (int d = 0; d < e->ndim; d++) assert_int_equal(t->dims[d], e->dims[d]);
    size_t n = entry_bytes(e);
    assert_int_equal(t->end - t->begin, n);
    if (n) assert_memory_equal(dynb__st_data(f, t), e->data, n);
    unsigned char copy[64];
    char err[256];
    assert_int_equal(dynb__st_copy(f, t, copy, n, err, sizeof err), DYNB_OK);
    if (n) assert_memory_equal(copy, e->data, n);
    if (n) assert_int_equal(dynb__st_copy(f, t, copy, n - 1, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  }
  for (int i = 0; i < 3; i++) assert_string_equal(dynb__st_meta(f, meta_k[i]), meta_v[i]);
  assert_null(dynb__st_meta(f, "absent"));
  assert_null(dynb__st_find(f, "absent"));
  assert_null(dynb__st_find(f, "a.weigh"));
  assert_int_equal(dynb__st_numel(dynb__st_find(f, "scalar (0-d)")), 1);
  assert_int_equal(dynb__st_numel(dynb__st_find(f, "empty.2x0x3 \xc3\xa9\xe2\x82\xac")), 0);
}

static void st_round_trip(void **state) {
  (void)state;
  char path[300], err[512];
  iot_path(path, sizeof path, "sample.safetensors");
  write_sample(path);
  dynb__st_file f;
  if (dynb__st_open(path, &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  check_sample(&f);
  dynb__st_release(&f);
  dynb__st_release(&f); /* release twice is harmless */

  size_t n;
  unsigned char *b = iot_slurp(path, &n);
  if (dynb__st_open_mem(b, n, "mem", &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  check_sample(&f);
  dynb__st_release(&f);

  /* A source of unknown size that hands out 3 bytes per call. */
  iot_source s = iot_trickle(b, n, 3, SIZE_MAX);
  dynb__reader r;
  assert_int_equal(dynb__reader_open_source(&r, "trickle", iot_source_read, &s, DYNB__SIZE_UNKNOWN,
                                            false, err, sizeof err), DYNB_OK);
  if (dynb__st_read(&r, &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  dynb__reader_close(&r);
  check_sample(&f);
  dynb__st_release(&f);

  if (dynb__st_parse(b, n, "owned", &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err); /* takes b */
  check_sample(&f);
  dynb__st_release(&f);

  /* No tensors, no metadata: the smallest file, "{}" padded to 8. */
  iot_path(path, sizeof path, "none.safetensors");
  if (dynb__st_write(path, NULL, 0, NULL, NULL, 0, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  b = iot_slurp(path, &n);
  assert_int_equal(n, 16);
  assert_memory_equal(b, "\x08\0\0\0\0\0\0\0{}      ", 16);
  free(b);
  if (dynb__st_open(path, &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  assert_int_equal(f.ntensors, 0);
  dynb__st_release(&f);
}

/* The writer's bytes against a file written out by hand from the format's
 * description: metadata first; dtype, shape, data_offsets in that order; no
 * spaces; the header padded with spaces to a multiple of 8; little-endian
 * data. The header below is 79 bytes (26 for the metadata entry and its
 * comma, 52 for the tensor entry, 1 for the closing brace), so one space
 * pads it to 80 = 0x50. 1.0f is 0x3f800000, 2.0f is 0x40000000. */
static void st_golden_bytes(void **state) {
  (void)state;
  static const char header[] =
      "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} ";
  static const unsigned char prefix[8] = {0x50, 0, 0, 0, 0, 0, 0, 0};
  static const unsigned char data[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40};
  assert_int_equal(strlen(header), 80);
  const float v[2] = {1.0f, 2.0f};
  int64_t two = 2;
  dynb__st_entry e = {"a", DYNB_ST_F32, 1, &two, v};
  const char *k = "k", *val = "v";
  char path[300], err[512];
  iot_path(path, sizeof path, "golden.safetensors");
  if (dynb__st_write(path, &e, 1, &k, &val, 1, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  size_t n;
  unsigned char *b = iot_slurp(path, &n);
  assert_int_equal(n, 8 + 80 + 8);
  assert_memory_equal(b, prefix, 8);
  assert_memory_equal(b + 8, header, 80);
  assert_memory_equal(b + 88, data, 8);
  free(b);

  /* What Python's json.dumps writes (spaces after separators, no padding,
   * tensors out of data order) reads as well. */
  static const char py[] = "{\"y\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [4, 12]}, "
                           "\"x\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}";
  size_t hl = strlen(py);
  unsigned char file[512] = {0};
  file[0] = (unsigned char)hl;
  memcpy(file + 8, py, hl);
  memcpy(file + 8 + hl, data, 4); /* x = 1.0f at data byte 0; y (bytes 4..12) = 0 */
  dynb__st_file f;
  if (dynb__st_open_mem(file, 8 + hl + 12, "py", &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  assert_int_equal(f.ntensors, 2);
  float x;
  assert_int_equal(dynb__st_copy(&f, dynb__st_find(&f, "x"), &x, 4, err, sizeof err), DYNB_OK);
  assert_true(x == 1.0f);
  dynb__st_release(&f);
}

/* ---- rejections ---- */

/* A file of `header` (its length prefix computed) and `data_len` zeros. */
static dynb_status parse_text(const char *header, size_t data_len, char *err, size_t errlen) {
  size_t hl = strlen(header), size = 8 + hl + data_len;
  unsigned char *b = calloc(size, 1);
  dynb__store_le64(b, hl);
  memcpy(b + 8, header, hl);
  dynb__st_file f;
  dynb_status st = dynb__st_parse(b, size, "bad.safetensors", &f, err, errlen);
  if (st == DYNB_OK) dynb__st_release(&f);
  return st;
}

#define T1(x) "{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": " x "}}"

static void st_rejections(void **state) {
  (void)state;
  static const struct {
    const char *header;
    size_t data;
    dynb_status status;
    const char *needle;
  } cases[] = {
      {"", 0, DYNB_STATUS_BAD_FORMAT, "does not start with '{'"},
      {"[1]", 0, DYNB_STATUS_BAD_FORMAT, "does not start with '{'"},
      {" {}", 0, DYNB_STATUS_BAD_FORMAT, "does not start with '{'"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}", 8, DYNB_STATUS_BAD_FORMAT, "not valid JSON"},
      {"{\"x\" 1}", 0, DYNB_STATUS_BAD_FORMAT, "byte 13: the header is not valid JSON"},
      {"{} xyz", 0, DYNB_STATUS_BAD_FORMAT, "byte 11: unexpected text after the header"},
      {"{}\x01", 0, DYNB_STATUS_BAD_FORMAT, "byte 10: control byte 0x01"},
      {"{\"a\xff\": 1}", 0, DYNB_STATUS_BAD_FORMAT, "byte 11: the header is not valid UTF-8"},
      {"{\"a\xc0\x80\": 1}", 0, DYNB_STATUS_BAD_FORMAT, "not valid UTF-8"}, /* overlong NUL */
      {"{\"x\": 3}", 0, DYNB_STATUS_BAD_FORMAT, "tensor 'x': not an object"},
      {"{\"x\": {\"dtype\": \"F16x\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4, DYNB_STATUS_BAD_FORMAT, "unsupported dtype 'F16x'"},
      {"{\"x\": {\"dtype\": \"F4\", \"shape\": [2], \"data_offsets\": [0, 1]}}", 1, DYNB_STATUS_BAD_FORMAT, "unsupported dtype 'F4'"},
      {"{\"x\": {\"dtype\": 1, \"shape\": [2], \"data_offsets\": [0, 4]}}", 4, DYNB_STATUS_BAD_FORMAT, "needs \"dtype\" (a string)"},
      {"{\"x\": {\"shape\": [2], \"data_offsets\": [0, 4]}}", 4, DYNB_STATUS_BAD_FORMAT, "needs \"dtype\""},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 4]}}", 4, DYNB_STATUS_BAD_FORMAT, "needs \"dtype\""},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, DYNB_STATUS_BAD_FORMAT, "needs \"dtype\""},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"extra\": 1}}", 4, DYNB_STATUS_BAD_FORMAT, "unexpected key 'extra'"},
      {"{\"x\": {\"dtype\": \"F32\", \"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, DYNB_STATUS_BAD_FORMAT, "key 'dtype' appears twice"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, DYNB_STATUS_BAD_FORMAT, "shape[0] is not a non-negative integer"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", 8, DYNB_STATUS_BAD_FORMAT, "shape[0] is not"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8, DYNB_STATUS_BAD_FORMAT, "shape[0] is not"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 8]}}", 8, DYNB_STATUS_BAD_FORMAT, "shape[0] is not"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4, DYNB_STATUS_BAD_FORMAT, "rank 9 exceeds 8"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}", 8, DYNB_STATUS_BAD_FORMAT, "more than 2^64 elements"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1099511627776], \"data_offsets\": [0, 4398046511104]}}", 0, DYNB_STATUS_SIZE_OVERFLOW, "exceed the cap"},
      {T1("[0]"), 4, DYNB_STATUS_BAD_FORMAT, "data_offsets must be two non-negative integers"},
      {T1("[0, 4, 8]"), 4, DYNB_STATUS_BAD_FORMAT, "data_offsets must be two"},
      {T1("[-4, 0]"), 4, DYNB_STATUS_BAD_FORMAT, "data_offsets must be two"},
      {T1("\"0-4\""), 4, DYNB_STATUS_BAD_FORMAT, "needs \"dtype\""},
      {T1("[8, 4]"), 8, DYNB_STATUS_BAD_FORMAT, "data_offsets [8, 4) end before they begin"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 999999]}}", 512, DYNB_STATUS_BAD_FORMAT, "tensor 'x': data_offsets [0, 999999) past the end of the data (512 bytes)"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 12]}}", 12, DYNB_STATUS_BAD_FORMAT, "hold 12 bytes; 2 elements of F32 need 8"},
      {T1("[4, 8]"), 8, DYNB_STATUS_BAD_FORMAT, "tensor 'x' starts at byte 4 of the data; expected 0 (a gap)"},
      {T1("[0, 4]"), 8, DYNB_STATUS_BAD_FORMAT, "4 bytes of data after the last tensor"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"y\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", 12, DYNB_STATUS_BAD_FORMAT, "'y' starts at byte 8 of the data; expected 4 (a gap)"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"y\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, DYNB_STATUS_BAD_FORMAT, "expected 8 (an overlap)"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"y\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, DYNB_STATUS_BAD_FORMAT, "an overlap"},
      {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, DYNB_STATUS_BAD_FORMAT, "tensor 'x' appears twice"},
      /* "a\u0000b" and "a\u0000c" both become "a" in C: caught as twins. */
      {"{\"a\\u0000b\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, \"a\\u0000c\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", 2, DYNB_STATUS_BAD_FORMAT, "appears twice"},
      {"{\"__metadata__\": {\"k\": 1}}", 0, DYNB_STATUS_BAD_FORMAT, "__metadata__ 'k' is not a string"},
      {"{\"__metadata__\": [\"k\"]}", 0, DYNB_STATUS_BAD_FORMAT, "__metadata__ is not an object"},
      {"{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", 0, DYNB_STATUS_BAD_FORMAT, "__metadata__ key 'k' appears twice"},
      {"{\"__metadata__\": {}, \"__metadata__\": {}}", 0, DYNB_STATUS_BAD_FORMAT, "__metadata__ appears twice"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char err[512] = "";
    dynb_status st = parse_text(cases[i].header, cases[i].data, err, sizeof err);
    if (st != cases[i].status)
      fail_msg("case %zu: %s, expected %s (%s)", i, dynb_status_name(st),
               dynb_status_name(cases[i].status), err);
    iot_expect_msg(err, "bad.safetensors", cases[i].needle);
  }
  /* Accepted on purpose: null metadata, zero-size tensors anywhere in the
   * tiling, padding by any JSON whitespace. */
  char err[512];
  static const char *const good[] = {
      "{\"__metadata__\": null}",
      "{\"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]}, "
      "\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
      "{}\t\r\n ",
  };
  assert_int_equal(parse_text(good[0], 0, err, sizeof err), DYNB_OK);
  assert_int_equal(parse_text(good[1], 4, err, sizeof err), DYNB_OK);
  assert_int_equal(parse_text(good[2], 0, err, sizeof err), DYNB_OK);
}

static void st_length_prefix(void **state) {
  (void)state;
  char err[512];
  dynb__st_file f;
  for (size_t n = 0; n < 8; n++) {
    unsigned char *b = calloc(8, 1);
    assert_int_equal(dynb__st_parse(b, n, "short.safetensors", &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
    iot_expect_msg(err, "short.safetensors", "too short");
  }
  static const struct {
    uint64_t hl;
    const char *needle;
  } cases[] = {
      {200, "header length 200 runs past the end of the file (8 bytes after the length)"},
      {9, "runs past the end"},
      {((uint64_t)100 << 20) + 1, "exceeds the cap of 104857600 bytes"},
      {UINT64_MAX, "exceeds the cap"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    unsigned char raw[16] = "........{}      ";
    dynb__store_le64(raw, cases[i].hl);
    unsigned char *b = malloc(16);
    memcpy(b, raw, 16);
    assert_int_equal(dynb__st_parse(b, 16, "len.safetensors", &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
    iot_expect_msg(err, "len.safetensors", cases[i].needle);
    /* The reader path checks the same before allocating. */
    assert_int_equal(dynb__st_open_mem(raw, 16, "len.safetensors", &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
    iot_expect_msg(err, "len.safetensors", cases[i].needle);
  }
  /* One byte too many after the last tensor, through the reader. */
  size_t n;
  unsigned char *b = sample_bytes(&n);
  unsigned char *longer = calloc(n + 1, 1);
  memcpy(longer, b, n);
  assert_int_equal(dynb__st_open_mem(longer, n + 1, "long", &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "long", "1 bytes of data after the last tensor");
  iot_source s = iot_trickle(longer, n + 1, 5, SIZE_MAX);
  dynb__reader r;
  assert_int_equal(dynb__reader_open_source(&r, "long", iot_source_read, &s, DYNB__SIZE_UNKNOWN, false,
                                            err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__st_read(&r, &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "long", "unexpected bytes after the last tensor");
  dynb__reader_close(&r);
  free(longer), free(b);
}

/* Many tensors: the name index and the tiling sort are n log n, and every
 * name is found. */
static void st_many_tensors(void **state) {
  (void)state;
  enum { N = 20000 };
  dynb__st_entry *e = calloc(N, sizeof *e);
  char (*names)[16] = calloc(N, sizeof *names);
  unsigned char *bytes = calloc(N, 1);
  int64_t one = 1;
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "t%05d", (i * 7919) % N); /* not in sorted order */
    bytes[i] = (unsigned char)i;
    e[i] = (dynb__st_entry){names[i], DYNB_ST_U8, 1, &one, &bytes[i]};
  }
  char path[300], err[512];
  iot_path(path, sizeof path, "many.safetensors");
  if (dynb__st_write(path, e, N, NULL, NULL, 0, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  dynb__st_file f;
  if (dynb__st_open(path, &f, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  for (int i = 0; i < N; i++) {
    const dynb__st_tensor *t = dynb__st_find(&f, names[i]);
    assert_non_null(t);
    assert_int_equal(*dynb__st_data(&f, t), (unsigned char)i);
  }
  dynb__st_release(&f);
  free(e), free(names), free(bytes);
}

/* ---- truncation, flips, read errors ---- */

static void st_truncation_every_byte(void **state) {
  (void)state;
  size_t n;
  unsigned char *good = sample_bytes(&n);
  char err[512], path[300];
  iot_path(path, sizeof path, "cut.safetensors");
  dynb__st_file f;
  for (size_t len = 0; len < n; len++) {
    unsigned char *b = malloc(len + 1);
    memcpy(b, good, len);
    if (dynb__st_parse(b, len, "cut", &f, err, sizeof err) != DYNB_STATUS_BAD_FORMAT)
      fail_msg("prefix of %zu of %zu bytes: %s", len, n, err);
    iot_expect_msg(err, "cut", "");
    if (dynb__st_open_mem(good, len, "cut", &f, err, sizeof err) != DYNB_STATUS_BAD_FORMAT)
      fail_msg("prefix of %zu of %zu bytes (reader): %s", len, n, err);
    iot_source s = iot_trickle(good, len, 7, SIZE_MAX);
    dynb__reader r;
    assert_int_equal(dynb__reader_open_source(&r, "cut", iot_source_read, &s, DYNB__SIZE_UNKNOWN,
                                              false, err, sizeof err), DYNB_OK);
    if (dynb__st_read(&r, &f, err, sizeof err) != DYNB_STATUS_BAD_FORMAT)
      fail_msg("prefix of %zu of %zu bytes (unknown size): %s", len, n, err);
    dynb__reader_close(&r);
    iot_write(path, good, len);
    if (dynb__st_open(path, &f, err, sizeof err) != DYNB_STATUS_BAD_FORMAT)
      fail_msg("prefix of %zu of %zu bytes (file): %s", len, n, err);
    iot_expect_msg(err, path, "");
  }
  /* A cut inside the data names the bytes missing. */
  assert_int_equal(dynb__st_open_mem(good, n - 3, "cut", &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "cut", "past the end of the data");
  iot_source s = iot_trickle(good, n - 3, 64, SIZE_MAX);
  dynb__reader r;
  assert_int_equal(dynb__reader_open_source(&r, "cut", iot_source_read, &s, DYNB__SIZE_UNKNOWN, false,
                                            err, sizeof err), DYNB_OK);
  assert_int_equal(dynb__st_read(&r, &f, err, sizeof err), DYNB_STATUS_BAD_FORMAT);
  iot_expect_msg(err, "cut", "bytes of tensor data");
  dynb__reader_close(&r);
  printf("truncation: %zu prefixes of a %zu-byte file rejected four ways\n", n, n);
  free(good);
}

/* A parse that succeeded must describe a file whose every tensor lies in
 * the data and can be copied. */
static void check_consistent(const dynb__st_file *f) {
  for (int i = 0; i < f->ntensors; i++) {
    const dynb__st_tensor *t = &f->tensors[i];
    assert_true(t->begin <= t->end && f->data_start + t->end <= f->size);
    assert_int_equal(dynb__st_numel(t) * dynb__st_dtype_size(t->dtype), t->end - t->begin);
    assert_ptr_equal(dynb__st_find(f, t->name), t);
    unsigned char *copy = malloc(t->end - t->begin + 1);
    char err[256];
    assert_int_equal(dynb__st_copy(f, t, copy, t->end - t->begin, err, sizeof err), DYNB_OK);
    free(copy);
  }
}

static void st_byte_flips(void **state) {
  (void)state;
  size_t n;
  unsigned char *good = sample_bytes(&n);
  size_t data_start = 8 + (size_t)dynb__load_le64(good);
  int accepted = 0, rejected = 0;
  char err[512];
  for (size_t i = 0; i < data_start; i++)
    for (int bit = 0; bit < 8; bit++) {
      unsigned char *b = malloc(n);
      memcpy(b, good, n);
      b[i] ^= (unsigned char)(1u << bit);
      dynb__st_file f;
      dynb_status st = dynb__st_parse(b, n, "flip", &f, err, sizeof err);
      if (st == DYNB_OK) {
        accepted++;
        check_consistent(&f);
        dynb__st_release(&f);
      } else {
        rejected++;
        if (st != DYNB_STATUS_BAD_FORMAT && st != DYNB_STATUS_SIZE_OVERFLOW)
          fail_msg("flip at byte %zu bit %d: %s (%s)", i, bit, dynb_status_name(st), err);
        iot_expect_msg(err, "flip", "");
      }
    }
  /* Flips in the data section change values, never the structure. */
  for (size_t i = data_start; i < n; i++) {
    unsigned char *b = malloc(n);
    memcpy(b, good, n);
    b[i] ^= 0xff;
    dynb__st_file f;
    if (dynb__st_parse(b, n, "flip", &f, err, sizeof err) != DYNB_OK) fail_msg("data flip: %s", err);
    dynb__st_release(&f);
  }
  printf("header bit flips: %d accepted as valid files (checked consistent), %d rejected\n", accepted,
         rejected);
  free(good);
}

static void st_read_errors(void **state) {
  (void)state;
  size_t n;
  unsigned char *good = sample_bytes(&n);
  char err[512];
  for (size_t k = 0; k <= n; k++) {
    iot_source s = iot_trickle(good, n, 11, k);
    dynb__reader r;
    dynb__st_file f;
    dynb_status st = dynb__reader_open_source(&r, "faulty", iot_source_read, &s, n, false, err, sizeof err);
    if (st == DYNB_OK) st = dynb__st_read(&r, &f, err, sizeof err);
    dynb__reader_close(&r);
    if (k < n) {
      if (st != DYNB_STATUS_IO_ERROR) fail_msg("fault at byte %zu: %s (%s)", k, dynb_status_name(st), err);
      iot_expect_msg(err, "faulty", "read error");
    } else {
      /* The fault lies past the end: reaching it is the end check. */
      assert_true(st == DYNB_OK || st == DYNB_STATUS_IO_ERROR);
      if (st == DYNB_OK) dynb__st_release(&f);
    }
  }
  free(good);
  dynb__st_file f;
  char path[300];
  iot_path(path, sizeof path, "absent.safetensors");
  assert_int_equal(dynb__st_open(path, &f, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, path, "cannot open");
  assert_int_equal(dynb__st_open(iot_dir, &f, err, sizeof err), DYNB_STATUS_IO_ERROR);
  iot_expect_msg(err, iot_dir, "Is a directory");
}

/* ---- writer argument checks ---- */

static void st_write_checks(void **state) {
  (void)state;
  const float v[4] = {0};
  int64_t two = 2, neg = -1, big[2] = {INT64_MAX, 4};
  const char *k2[2] = {"k", "k"}, *v2[2] = {"a", "b"}, *bad_utf8 = "\xc3(";
  const char *null_key = NULL;
  struct {
    dynb__st_entry e[2];
    int n;
    const char *const *keys, *const *vals;
    int nmeta;
    dynb_status status;
    const char *needle;
  } cases[] = {
      {{{NULL, DYNB_ST_F32, 1, &two, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "tensor name 0 is NULL"},
      {{{"__metadata__", DYNB_ST_F32, 1, &two, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "reserved"},
      {{{"\xc3(", DYNB_ST_F32, 1, &two, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "not valid UTF-8"},
      {{{"x", (dynb_st_dtype)99, 1, &two, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "dtype 99 unknown"},
      {{{"x", (dynb_st_dtype)-1, 1, &two, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "unknown"},
      {{{"x", DYNB_ST_F32, 9, big, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "rank 9 outside 0..8"},
      {{{"x", DYNB_ST_F32, -1, &two, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "rank -1"},
      {{{"x", DYNB_ST_F32, 1, NULL, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "rank 1"},
      {{{"x", DYNB_ST_F32, 1, &neg, v}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "dims[0] = -1 is negative"},
      {{{"x", DYNB_ST_F32, 2, big, v}}, 1, NULL, NULL, 0, DYNB_STATUS_SIZE_OVERFLOW, "more than 68719476736 bytes"},
      {{{"x", DYNB_ST_F32, 1, &two, NULL}}, 1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "data is NULL"},
      {{{"x", DYNB_ST_F32, 1, &two, v}, {"x", DYNB_ST_F32, 1, &two, v}}, 2, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "tensor name 'x' appears twice"},
      {{{"x", DYNB_ST_F32, 1, &two, v}}, 1, k2, v2, 2, DYNB_STATUS_INVALID_ARGUMENT, "metadata key 'k' appears twice"},
      {{{"x", DYNB_ST_F32, 1, &two, v}}, 1, &null_key, v2, 1, DYNB_STATUS_INVALID_ARGUMENT, "metadata key 0 is NULL"},
      {{{"x", DYNB_ST_F32, 1, &two, v}}, 1, k2, &bad_utf8, 1, DYNB_STATUS_INVALID_ARGUMENT, "metadata value 0 is not valid UTF-8"},
      {{{"x", DYNB_ST_F32, 1, &two, v}}, 1, NULL, NULL, 1, DYNB_STATUS_INVALID_ARGUMENT, "bad metadata list"},
      {{{"x", DYNB_ST_F32, 1, &two, v}}, -1, NULL, NULL, 0, DYNB_STATUS_INVALID_ARGUMENT, "bad tensor list"},
  };
  char path[300], err[512];
  iot_path(path, sizeof path, "checked.safetensors");
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    dynb_status st = dynb__st_write(path, cases[i].e, cases[i].n, cases[i].keys, cases[i].vals,
                                    cases[i].nmeta, err, sizeof err);
    if (st != cases[i].status)
      fail_msg("case %zu: %s, expected %s (%s)", i, dynb_status_name(st),
               dynb_status_name(cases[i].status), err);
    iot_expect_msg(err, path, cases[i].needle);
    assert_int_equal(access(path, F_OK), -1); /* nothing written */
  }
  assert_int_equal(iot_count(".tmp."), 0);
  assert_int_equal(dynb__st_write(NULL, NULL, 0, NULL, NULL, 0, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(dynb__st_write("", NULL, 0, NULL, NULL, 0, err, sizeof err), DYNB_STATUS_INVALID_ARGUMENT);
  /* A tiny error buffer is filled safely; none at all is allowed. */
  char tiny[8];
  assert_int_equal(dynb__st_write(path, NULL, -1, NULL, NULL, 0, tiny, sizeof tiny), DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(strlen(tiny), 7);
  assert_int_equal(dynb__st_write(path, NULL, -1, NULL, NULL, 0, NULL, 0), DYNB_STATUS_INVALID_ARGUMENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(st_round_trip),
      cmocka_unit_test(st_golden_bytes),
      cmocka_unit_test(st_rejections),
      cmocka_unit_test(st_length_prefix),
      cmocka_unit_test(st_many_tensors),
      cmocka_unit_test(st_truncation_every_byte),
      cmocka_unit_test(st_byte_flips),
      cmocka_unit_test(st_read_errors),
      cmocka_unit_test(st_write_checks),
  };
  return cmocka_run_group_tests(tests, iot_setup, iot_teardown);
}
