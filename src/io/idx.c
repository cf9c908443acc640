/* IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary files. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

/* 60000 MNIST-sized images are 47 MB; ten million are beyond any IDX set. */
#define IDX_MAX_BYTES ((size_t)1 << 33)

dynb_status dynb__idx_read(const char *path, int ndim, int64_t *dims, unsigned char **data,
                           char *err, size_t errlen) {
  unsigned char *b;
  size_t n;
  *data = NULL;
  dynb_status st = dynb__file_read(path, IDX_MAX_BYTES, true, &b, &n, err, errlen);
  if (st != DYNB_OK) return st;
  size_t head = 4 + 4 * (size_t)ndim;
  if (n < head || b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] != ndim) {
    snprintf(err, errlen, "%s: not an IDX file of unsigned bytes with %d dimension(s) (magic %02x %02x %02x %02x)",
             path, ndim, n > 0 ? b[0] : 0, n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, n > 3 ? b[3] : 0);
    free(b);
    return DYNB_STATUS_BAD_FORMAT;
  }
  uint64_t count = 1;
  for (int i = 0; i < ndim; i++) {
    const unsigned char *p = b + 4 + 4 * i;
    uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (d == 0 || d > (i == 0 ? 100000000u : 4096u)) {
      snprintf(err, errlen, "%s: dimension %d is %" PRIu32 ", outside 1..%u", path, i, d,
               i == 0 ? 100000000u : 4096u);
      free(b);
      return DYNB_STATUS_BAD_FORMAT;
    }
    dims[i] = d;
    count *= d;
  }
  if (count != n - head) {
    snprintf(err, errlen, "%s: header promises %" PRIu64 " bytes of data, the file holds %zu", path,
             count, n - head);
    free(b);
    return DYNB_STATUS_BAD_FORMAT;
  }
  memmove(b, b + head, (size_t)count);
  *data = b;
  return DYNB_OK;
}

#define CIFAR_RECORD 3073

dynb_status dynb__cifar_read(const char *path, int64_t *n, unsigned char **images,
                             unsigned char **labels, char *err, size_t errlen) {
  unsigned char *b;
  size_t size;
  dynb_status st = dynb__file_read(path, (size_t)1 << 31, false, &b, &size, err, errlen);
  if (st != DYNB_OK) return st;
  if (size == 0 || size % CIFAR_RECORD != 0) {
    snprintf(err, errlen, "%s: %zu bytes is not a whole number of CIFAR-10 records (%d bytes each)",
             path, size, CIFAR_RECORD);
    free(b);
    return DYNB_STATUS_BAD_FORMAT;
  }
  size_t records = size / CIFAR_RECORD, old = (size_t)*n;
  unsigned char *im = realloc(*images, (old + records) * 3072);
  if (im) *images = im;
  unsigned char *lb = im ? realloc(*labels, old + records) : NULL;
  if (lb) *labels = lb;
  if (!im || !lb) {
    snprintf(err, errlen, "%s: out of host memory", path);
    free(b);
    return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  }
  for (size_t r = 0; r < records; r++) {
    const unsigned char *rec = b + r * CIFAR_RECORD;
    if (rec[0] > 9) {
      snprintf(err, errlen, "%s: record %zu has label %d; CIFAR-10 labels are 0..9", path, r, rec[0]);
      free(b);
      return DYNB_STATUS_BAD_FORMAT;
    }
    lb[old + r] = rec[0];
    memcpy(im + (old + r) * 3072, rec + 1, 3072);
  }
  *n = (int64_t)(old + records);
  free(b);
  return DYNB_OK;
}
