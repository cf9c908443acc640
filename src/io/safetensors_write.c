/* safetensors writing. The header is written by hand rather than through
 * cJSON: cJSON prints numbers past 2^31 in floating-point forms ("1e+17")
 * that stricter readers, the reference one included, refuse, and printing
 * ourselves fixes the byte layout (metadata first, then tensors, keys in
 * the order dtype, shape, data_offsets, as the reference writer emits). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

/* ---- a growing text buffer ---- */

typedef struct text {
  char *p;
  size_t len, cap;
  bool oom;
} text;

static void put(text *t, const char *s, size_t n) {
  if (t->oom) return;
  if (n > t->cap - t->len) {
    size_t cap = t->cap ? t->cap : 256;
    while (n > cap - t->len && cap <= SIZE_MAX / 2) cap *= 2;
    char *p = n <= cap - t->len ? realloc(t->p, cap) : NULL;
    if (!p) {
      t->oom = true;
      return;
    }
    t->p = p, t->cap = cap;
  }
  memcpy(t->p + t->len, s, n);
  t->len += n;
}

static void put_s(text *t, const char *s) { put(t, s, strlen(s)); }

static void put_u64(text *t, uint64_t v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%" PRIu64, v);
  put(t, b, (size_t)n);
}

/* A JSON string: quotes, backslashes and control characters escaped;
 * everything else (valid UTF-8, checked by the caller) as is. */
static void put_json(text *t, const char *s) {
  put(t, "\"", 1);
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      put(t, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      put(t, esc, 6);
    } else {
      put(t, p, 1);
    }
  }
  put(t, "\"", 1);
}

/* ---- argument checks ---- */

static dynb_status check_string(const char *path, const char *what, int i, const char *s, char *err,
                                size_t errlen) {
  if (!s)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s %d is NULL", path, what,
                         i);
  if (!dynb__utf8_valid(s, strlen(s)))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s %d is not valid UTF-8",
                         path, what, i);
  return DYNB_OK;
}

/* Checks one entry and writes its byte size. */
static dynb_status check_entry(const char *path, const dynb__st_entry *e, int i, uint64_t *bytes,
                               char *err, size_t errlen) {
  dynb_status st = check_string(path, "tensor name", i, e->name, err, errlen);
  if (st != DYNB_OK) return st;
  const char *n = e->name;
  if (strcmp(n, "__metadata__") == 0)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "%s: tensor %d: the name '__metadata__' is reserved", path, i);
  size_t size = dynb__st_dtype_size(e->dtype);
  if (size == 0)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "%s: tensor '%s': dtype %d unknown", path, n, (int)e->dtype);
  if (e->ndim < 0 || e->ndim > DYNB_ST_MAX_DIMS || (e->ndim > 0 && !e->dims))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "%s: tensor '%s': rank %d outside 0..%d", path, n, e->ndim,
                         DYNB_ST_MAX_DIMS);
  uint64_t numel = 1;
  bool zero = false, big = false;
  for (int d = 0; d < e->ndim; d++) {
    if (e->dims[d] < 0)
      return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                           "%s: tensor '%s': dims[%d] = %" PRId64 " is negative", path, n, d,
                           e->dims[d]);
    uint64_t v = (uint64_t)e->dims[d];
    if (v == 0)
      zero = true;
    else if (numel > DYNB_ST_MAX_DATA / v)
      big = true;
    else
      numel *= v;
  }
  if (zero)
    numel = 0;
  else if (big || numel > DYNB_ST_MAX_DATA / size)
    return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW,
                         "%s: tensor '%s': more than %" PRIu64 " bytes", path, n,
                         (uint64_t)DYNB_ST_MAX_DATA);
  *bytes = numel * size;
  if (*bytes > 0 && !e->data)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "%s: tensor '%s': data is NULL",
                         path, n);
  return DYNB_OK;
}

static dynb_status check_unique(const char *path, const char *what, const char *const *s, int n,
                                char *err, size_t errlen) {
  const char *twice;
  if (dynb__first_duplicate(s, n, &twice) != DYNB_OK)
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                         path);
  if (twice)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s '%s' appears twice",
                         path, what, twice);
  return DYNB_OK;
}

static dynb_status check_meta(const char *path, const char *const *keys, const char *const *vals,
                              int nmeta, char *err, size_t errlen) {
  if (nmeta < 0 || (nmeta > 0 && (!keys || !vals)))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "%s: bad metadata list", path);
  for (int i = 0; i < nmeta; i++) {
    dynb_status st = check_string(path, "metadata key", i, keys[i], err, errlen);
    if (st == DYNB_OK) st = check_string(path, "metadata value", i, vals[i], err, errlen);
    if (st != DYNB_OK) return st;
  }
  return check_unique(path, "metadata key", keys, nmeta, err, errlen);
}

/* Checks everything the caller passed; writes each tensor's byte size. */
static dynb_status check_all(const char *path, const dynb__st_entry *entries, int n,
                             uint64_t *bytes, const char *const *keys, const char *const *vals,
                             int nmeta, char *err, size_t errlen) {
  uint64_t total = 0;
  for (int i = 0; i < n; i++) {
    dynb_status st = check_entry(path, &entries[i], i, &bytes[i], err, errlen);
    if (st != DYNB_OK) return st;
    total += bytes[i]; /* each at most 2^36, at most 2^20 of them: no overflow */
    if (total > DYNB_ST_MAX_DATA)
      return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW,
                           "%s: more than %" PRIu64 " bytes of data", path,
                           (uint64_t)DYNB_ST_MAX_DATA);
  }
  const char **names = malloc(((size_t)n + 1) * sizeof *names);
  if (!names)
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                         path);
  for (int i = 0; i < n; i++) names[i] = entries[i].name;
  dynb_status st = check_unique(path, "tensor name", names, n, err, errlen);
  free(names);
  return st == DYNB_OK ? check_meta(path, keys, vals, nmeta, err, errlen) : st;
}

/* ---- the header ---- */

/* Length prefix, JSON and padding in one buffer. */
static dynb_status build_header(const char *path, const dynb__st_entry *entries, int n,
                                const uint64_t *bytes, const char *const *keys,
                                const char *const *vals, int nmeta, text *t, char *err,
                                size_t errlen) {
  put(t, "\0\0\0\0\0\0\0\0{", 9);
  if (nmeta > 0) {
    put_s(t, "\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
      if (i) put(t, ",", 1);
      put_json(t, keys[i]);
      put(t, ":", 1);
      put_json(t, vals[i]);
    }
    put(t, "}", 1);
  }
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    const dynb__st_entry *e = &entries[i];
    if (i || nmeta > 0) put(t, ",", 1);
    put_json(t, e->name);
    put_s(t, ":{\"dtype\":\"");
    put_s(t, dynb__st_dtype_name(e->dtype));
    put_s(t, "\",\"shape\":[");
    for (int d = 0; d < e->ndim; d++) {
      if (d) put(t, ",", 1);
      put_u64(t, (uint64_t)e->dims[d]);
    }
    put_s(t, "],\"data_offsets\":[");
    put_u64(t, at);
    put(t, ",", 1);
    put_u64(t, at + bytes[i]);
    put_s(t, "]}");
    at += bytes[i];
  }
  put(t, "}", 1);
  /* Spaces up to a multiple of 8, so the data section starts 8-aligned. */
  while (!t->oom && (t->len - 8) % 8 != 0) put(t, " ", 1);
  if (t->oom)
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                         path);
  if (t->len - 8 > DYNB_ST_MAX_HEADER)
    return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW,
                         "%s: header of %zu bytes exceeds the cap of %u", path, t->len - 8,
                         DYNB_ST_MAX_HEADER);
  dynb__store_le64((unsigned char *)t->p, (uint64_t)(t->len - 8));
  return DYNB_OK;
}

/* On a big-endian host every multi-byte tensor is converted into a copy. */
static dynb_status data_parts(const char *path, const dynb__st_entry *entries, int n,
                              const uint64_t *bytes, const void **parts, void **owned, char *err,
                              size_t errlen) {
  bool le = dynb__host_is_little_endian();
  for (int i = 0; i < n; i++) {
    size_t unit = dynb__st_dtype_swap_unit(entries[i].dtype);
    parts[i] = entries[i].data;
    if (le || unit == 1 || bytes[i] == 0) continue;
    owned[i] = malloc((size_t)bytes[i]);
    if (!owned[i])
      return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                           path);
    dynb__le_copy(owned[i], entries[i].data, (size_t)bytes[i] / unit, unit);
    parts[i] = owned[i];
  }
  return DYNB_OK;
}

dynb_status dynb__st_write(const char *path, const dynb__st_entry *entries, int n,
                           const char *const *meta_keys, const char *const *meta_values, int nmeta,
                           char *err, size_t errlen) {
  if (!path || !*path)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "safetensors write: no file name");
  if (n < 0 || n > DYNB_ST_MAX_TENSORS || (n > 0 && !entries))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "%s: bad tensor list (%d entries)", path, n);
  uint64_t *bytes = calloc((size_t)n + 1, sizeof *bytes);
  const void **parts = calloc((size_t)n + 2, sizeof *parts);
  void **owned = calloc((size_t)n + 1, sizeof *owned);
  size_t *sizes = calloc((size_t)n + 2, sizeof *sizes);
  text t = {0};
  dynb_status st = bytes && parts && owned && sizes
                       ? DYNB_OK
                       : dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY,
                                       "%s: out of host memory", path);
  if (st == DYNB_OK)
    st = check_all(path, entries, n, bytes, meta_keys, meta_values, nmeta, err, errlen);
  if (st == DYNB_OK)
    st = build_header(path, entries, n, bytes, meta_keys, meta_values, nmeta, &t, err, errlen);
  if (st == DYNB_OK) st = data_parts(path, entries, n, bytes, parts + 1, owned, err, errlen);
  if (st == DYNB_OK) {
    parts[0] = t.p, sizes[0] = t.len;
    for (int i = 0; i < n; i++) sizes[i + 1] = (size_t)bytes[i];
    st = dynb__file_write_atomic(path, parts, sizes, n + 1, err, errlen);
  }
  for (int i = 0; owned && i < n; i++) free(owned[i]);
  free(t.p), free(bytes), free(parts), free(owned), free(sizes);
  return st;
}
