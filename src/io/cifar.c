/* CIFAR-10 binary batches: records of one label byte (0..9) and 3072 pixel
 * bytes (3 × 32 × 32, channel-major), nothing else. A gzip'd batch is read
 * too: its first byte 0x1f can never start a raw batch (labels are 0..9). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

/* Makes room for `want` records in both arrays. */
static dynb_status reserve(const char *name, unsigned char **images, unsigned char **labels,
                           size_t want, char *err, size_t errlen) {
  unsigned char *im = realloc(*images, want * DYNB_CIFAR_PIXELS);
  if (im) *images = im;
  unsigned char *lb = im ? realloc(*labels, want) : NULL;
  if (lb) *labels = lb;
  if (!im || !lb)
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY,
                         "%s: out of host memory for %zu records", name, want);
  return DYNB_OK;
}

static dynb_status not_whole(const dynb__reader *r, uint64_t bytes, char *err, size_t errlen) {
  return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                       "%s: %" PRIu64
                       " bytes is not a whole, non-zero number of CIFAR-10 records "
                       "(%d bytes each)",
                       r->name, bytes, DYNB_CIFAR_RECORD);
}

/* Checks what a promised size allows before anything is reserved. */
static dynb_status plan(const dynb__reader *r, size_t old, size_t *cap, char *err, size_t errlen) {
  uint64_t rem = dynb__reader_remaining(r);
  *cap = old + 1024;
  if (rem == DYNB__SIZE_UNKNOWN) return DYNB_OK;
  if (rem == 0 || rem % DYNB_CIFAR_RECORD != 0) return not_whole(r, rem, err, errlen);
  if (rem / DYNB_CIFAR_RECORD > DYNB_CIFAR_MAX_RECORDS - old)
    return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW, "%s: more than %d records in all",
                         r->name, DYNB_CIFAR_MAX_RECORDS);
  *cap = old + (size_t)(rem / DYNB_CIFAR_RECORD);
  return DYNB_OK;
}

dynb_status dynb__cifar_read_from(dynb__reader *r, int64_t *n, unsigned char **images,
                                  unsigned char **labels, char *err, size_t errlen) {
  if (!r || !n || !images || !labels || *n < 0 || *n > DYNB_CIFAR_MAX_RECORDS)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "CIFAR-10 read: bad argument");
  size_t old = (size_t)*n, count = 0, cap;
  dynb_status st = plan(r, old, &cap, err, errlen);
  if (st == DYNB_OK) st = reserve(r->name, images, labels, cap, err, errlen);
  unsigned char rec[DYNB_CIFAR_RECORD];
  while (st == DYNB_OK) {
    uint64_t at = r->pos;
    size_t got;
    st = dynb__reader_read(r, rec, sizeof rec, &got, err, errlen);
    if (st != DYNB_OK || got == 0) break;
    if (got < sizeof rec) return not_whole(r, at + got, err, errlen);
    if (rec[0] > 9)
      return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: byte %" PRIu64
                           ": record %zu has label %d; CIFAR-10 labels are 0..9",
                           r->name, at, count, rec[0]);
    if (old + count == cap) {
      if (cap >= DYNB_CIFAR_MAX_RECORDS)
        return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW,
                             "%s: more than %d records in all", r->name, DYNB_CIFAR_MAX_RECORDS);
      cap = cap > DYNB_CIFAR_MAX_RECORDS / 2 ? DYNB_CIFAR_MAX_RECORDS : cap * 2;
      st = reserve(r->name, images, labels, cap, err, errlen);
      if (st != DYNB_OK) break;
    }
    (*labels)[old + count] = rec[0];
    memcpy(*images + (old + count) * DYNB_CIFAR_PIXELS, rec + 1, DYNB_CIFAR_PIXELS);
    count++;
  }
  if (st == DYNB_OK && count == 0) return not_whole(r, 0, err, errlen);
  if (st == DYNB_OK) *n = (int64_t)(old + count);
  return st;
}

dynb_status dynb__cifar_read(const char *path, int64_t *n, unsigned char **images,
                             unsigned char **labels, char *err, size_t errlen) {
  dynb__reader r;
  dynb_status st = dynb__reader_open_file(&r, path, true, err, errlen);
  if (st != DYNB_OK) return st;
  st = dynb__cifar_read_from(&r, n, images, labels, err, errlen);
  dynb__reader_close(&r);
  return st;
}
