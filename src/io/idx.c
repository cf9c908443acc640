/* IDX files (MNIST, Fashion-MNIST), raw or gzip'd, and finding them in a
 * folder. The format: a big-endian magic 00 00 <type> <ndim>, ndim big-endian
 * u32 dimensions, then the items. Only unsigned bytes (type 0x08) occur in
 * these data sets, so other types are refused by name rather than read. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"

static const char *type_name(unsigned char t) {
  switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    default: return "unknown";
  }
}

static dynb_status read_magic(dynb__reader *r, int ndim, char *err, size_t errlen) {
  unsigned char m[4];
  dynb_status st = dynb__reader_exact(r, m, 4, "the IDX magic number", err, errlen);
  if (st != DYNB_OK) return st;
  if (m[0] != 0 || m[1] != 0)
    return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte 0: not an IDX file (magic %02x %02x %02x %02x)", r->name, m[0],
                         m[1], m[2], m[3]);
  if (m[2] != 0x08)
    return dynb__io_fail(
        err, errlen, DYNB_STATUS_BAD_FORMAT,
        "%s: byte 2: IDX data type 0x%02x (%s); only unsigned bytes (0x08) are supported", r->name,
        m[2], type_name(m[2]));
  if (m[3] != ndim)
    return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte 3: IDX file of %d dimension(s); expected %d (%s)", r->name, m[3],
                         ndim,
                         ndim == 3   ? "images, magic 0x00000803"
                         : ndim == 1 ? "labels, magic 0x00000801"
                                     : "");
  return DYNB_OK;
}

/* Reads and checks the dimensions; writes the item bytes they promise. */
static dynb_status read_dims(dynb__reader *r, int ndim, int64_t *dims, uint64_t *count, char *err,
                             size_t errlen) {
  unsigned char b[4 * DYNB_IDX_MAX_DIMS];
  dynb_status st = dynb__reader_exact(r, b, 4 * (size_t)ndim, "IDX dimensions", err, errlen);
  if (st != DYNB_OK) return st;
  /* Caps bound the product: 10^8 · 4096^(ndim-1) < 2^64 for ndim <= 4. */
  uint64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    uint32_t d = dynb__load_be32(b + 4 * i), cap = i == 0 ? DYNB_IDX_MAX_ITEMS : DYNB_IDX_MAX_SIDE;
    if (d == 0 || d > cap)
      return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: byte %d: dimension %d is %" PRIu32 ", outside 1..%" PRIu32, r->name,
                           4 + 4 * i, i, d, cap);
    dims[i] = d;
    n *= d;
  }
  if (n > DYNB_IDX_MAX_BYTES || n > SIZE_MAX - 1)
    return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW,
                         "%s: %" PRIu64 " bytes of items exceed the cap of %" PRIu64, r->name, n,
                         (uint64_t)DYNB_IDX_MAX_BYTES);
  *count = n;
  return DYNB_OK;
}

dynb_status dynb__idx_read_from(dynb__reader *r, int ndim, int64_t *dims, unsigned char **data,
                                char *err, size_t errlen) {
  if (!r || !dims || !data || ndim < 1 || ndim > DYNB_IDX_MAX_DIMS)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "IDX read: bad argument");
  *data = NULL;
  uint64_t count = 0;
  dynb_status st = read_magic(r, ndim, err, errlen);
  if (st == DYNB_OK) st = read_dims(r, ndim, dims, &count, err, errlen);
  const char *what = ndim == 1 ? "label data" : ndim == 3 ? "image data" : "IDX data";
  unsigned char *b = NULL;
  if (st == DYNB_OK) st = dynb__reader_exact_grow(r, &b, 0, (size_t)count, what, err, errlen);
  if (st == DYNB_OK) st = dynb__reader_end(r, what, err, errlen);
  if (st != DYNB_OK) {
    free(b);
    return st;
  }
  *data = b;
  return DYNB_OK;
}

dynb_status dynb__idx_read(const char *path, int ndim, int64_t *dims, unsigned char **data,
                           char *err, size_t errlen) {
  if (data) *data = NULL;
  dynb__reader r;
  dynb_status st = dynb__reader_open_file(&r, path, true, err, errlen);
  if (st != DYNB_OK) return st;
  st = dynb__idx_read_from(&r, ndim, dims, data, err, errlen);
  dynb__reader_close(&r);
  return st;
}

dynb_status dynb__labels_check(const unsigned char *labels, int64_t n, int classes,
                               const char *name, char *err, size_t errlen) {
  if ((!labels && n > 0) || n < 0 || classes < 1)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "labels check: bad argument");
  for (int64_t i = 0; i < n; i++)
    if (labels[i] >= classes)
      return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: item %" PRId64 " has label %d; expected 0..%d",
                           name ? name : "labels", i, labels[i], classes - 1);
  return DYNB_OK;
}

/* <dir>/<split>-<kind>, with ".gz" when that file exists, else without
 * when that exists; NULL with *missing set when neither does. */
static dynb_status find_one(const char *dir, const char *split, const char *kind, char **out,
                            char *err, size_t errlen) {
  size_t cap = strlen(dir) + strlen(split) + strlen(kind) + 8;
  char *p = malloc(cap);
  if (!p)
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                         dir);
  snprintf(p, cap, "%s/%s-%s.gz", dir, split, kind);
  if (access(p, R_OK) == 0) {
    *out = p;
    return DYNB_OK;
  }
  snprintf(p, cap, "%s/%s-%s", dir, split, kind);
  if (access(p, R_OK) == 0) {
    *out = p;
    return DYNB_OK;
  }
  free(p);
  bool debian = strcmp(dir, DYNB_FASHION_MNIST_DIR) == 0;
  return dynb__io_fail(err, errlen, DYNB_STATUS_IO_ERROR, "%s: no readable %s-%s[.gz]%s", dir,
                       split, kind,
                       debian ? " (Debian's package dataset-fashion-mnist installs it)" : "");
}

dynb_status dynb__idx_locate(const char *dir, const char *split, char **images, char **labels,
                             char *err, size_t errlen) {
  if (!dir || !*dir || !split || !images || !labels ||
      (strcmp(split, "train") != 0 && strcmp(split, "t10k") != 0))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "IDX locate: needs a folder and the split \"train\" or \"t10k\"");
  *images = *labels = NULL;
  dynb_status st = find_one(dir, split, "images-idx3-ubyte", images, err, errlen);
  if (st == DYNB_OK) st = find_one(dir, split, "labels-idx1-ubyte", labels, err, errlen);
  if (st != DYNB_OK) {
    free(*images);
    *images = NULL;
  }
  return st;
}
