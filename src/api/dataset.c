/* Public data sets: a dynb__dataset (src/train/dataset.c) with the context
 * that receives its messages. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static dynb_status make(dynb_ctx *ctx, const dynb__dataset *d, dynb_dataset **out) {
  dynb_dataset *h = dynb__calloc(ctx, 1, sizeof *h);
  if (!h) return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_dataset: no host memory");
  h->ctx = ctx;
  h->d = *d;
  *out = h;
  return DYNB_OK;
}

dynb_status dynb_dataset_open(dynb_ctx *ctx, const char *name, const char *data_dir, int test,
                              dynb_dataset **out) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_dataset_open: out is NULL");
  *out = NULL;
  char err[1024] = "";
  dynb__dataset d;
  dynb_status st = dynb__dataset_load(name, data_dir, test != 0, &d, err, sizeof err);
  if (st != DYNB_OK) return dynb__fail(ctx, st, "%s", err);
  st = make(ctx, &d, out);
  if (st != DYNB_OK) dynb__dataset_release(&d);
  return st;
}

dynb_status dynb_dataset_from_host(dynb_ctx *ctx, int64_t n, int64_t channels, int64_t height,
                                   int64_t width, int64_t classes, const float *images,
                                   const int32_t *labels, dynb_dataset **out) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_dataset_from_host: out is NULL");
  *out = NULL;
  DYNB_CHECK(ctx, images && labels, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_from_host: %s is NULL", images ? "labels" : "images");
  /* The limits keep every size an int and every byte count a size_t. */
  DYNB_CHECK(ctx, n >= 1 && n <= INT32_MAX, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_from_host: n = %lld samples (expected 1 .. 2^31-1)", (long long)n);
  DYNB_CHECK(ctx, channels >= 1 && channels <= 65536 && height >= 1 && height <= 65536 &&
                      width >= 1 && width <= 65536,
             DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_from_host: image shape %lldx%lldx%lld (each 1 .. 65536)",
             (long long)channels, (long long)height, (long long)width);
  DYNB_CHECK(ctx, classes >= 2 && classes <= 65536, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_from_host: %lld classes (expected 2 .. 65536)", (long long)classes);
  for (int64_t i = 0; i < n; i++)
    DYNB_CHECK(ctx, labels[i] >= 0 && labels[i] < classes, DYNB_STATUS_INVALID_ARGUMENT,
               "dynb_dataset_from_host: labels[%lld] = %d is outside [0, %lld)", (long long)i,
               (int)labels[i], (long long)classes);
  size_t per = (size_t)channels * (size_t)height * (size_t)width;
  DYNB_CHECK(ctx, per <= SIZE_MAX / sizeof(float) / (size_t)n, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_from_host: %lld samples of %zu values do not fit in memory",
             (long long)n, per);
  /* malloc, as dynb__dataset_release frees (the loaders' sets too). */
  dynb__dataset d = {.n = n, .c = (int)channels, .h = (int)height, .w = (int)width,
                     .classes = (int)classes};
  d.images = malloc((size_t)n * per * sizeof(float));
  d.labels = malloc((size_t)n * sizeof(int32_t));
  if (!d.images || !d.labels) {
    dynb__dataset_release(&d);
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_dataset_from_host: no host memory");
  }
  memcpy(d.images, images, (size_t)n * per * sizeof(float));
  memcpy(d.labels, labels, (size_t)n * sizeof(int32_t));
  dynb_status st = make(ctx, &d, out);
  if (st != DYNB_OK) dynb__dataset_release(&d);
  return st;
}

void dynb_dataset_free(dynb_dataset *d) {
  if (!d) return;
  dynb__dataset_release(&d->d);
  dynb__free(d->ctx, d);
}

dynb_status dynb_dataset_shape(const dynb_dataset *d, int64_t *n, int64_t *channels,
                               int64_t *height, int64_t *width, int64_t *classes) {
  DYNB__API_HANDLE(d);
  if (n) *n = d->d.n;
  if (channels) *channels = d->d.c;
  if (height) *height = d->d.h;
  if (width) *width = d->d.w;
  if (classes) *classes = d->d.classes;
  return DYNB_OK;
}

dynb_status dynb_dataset_shuffle(dynb_dataset *d, uint64_t seed) {
  DYNB__API_HANDLE(d);
  uint64_t rng = seed;
  dynb__dataset_shuffle(&d->d, &rng);
  return DYNB_OK;
}

dynb_status dynb_dataset_split(dynb_dataset *d, int64_t count, dynb_dataset **tail) {
  DYNB__API_HANDLE(d);
  DYNB_CHECK(d->ctx, tail, DYNB_STATUS_INVALID_ARGUMENT, "dynb_dataset_split: tail is NULL");
  *tail = NULL;
  DYNB_CHECK(d->ctx, count >= 0 && count < d->d.n, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_split: %lld of %lld samples leaves none", (long long)count,
             (long long)d->d.n);
  dynb__dataset t;
  DYNB_CHECK(d->ctx, dynb__dataset_split(&d->d, count, &t) == DYNB_OK,
             DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_dataset_split: no host memory");
  dynb_status st = make(d->ctx, &t, tail);
  if (st != DYNB_OK) {
    d->d.n += count; /* the samples are still there: only n moved */
    dynb__dataset_release(&t);
  }
  return st;
}

dynb_status dynb_dataset_truncate(dynb_dataset *d, int64_t n) {
  DYNB__API_HANDLE(d);
  DYNB_CHECK(d->ctx, n >= 1, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_truncate: n = %lld (expected >= 1)", (long long)n);
  if (n < d->d.n) d->d.n = n;
  return DYNB_OK;
}

dynb_status dynb_dataset_stats(const dynb_dataset *d, double *mean, double *std) {
  DYNB__API_HANDLE(d);
  DYNB_CHECK(d->ctx, mean && std, DYNB_STATUS_INVALID_ARGUMENT, "dynb_dataset_stats: %s is NULL",
             mean ? "std" : "mean");
  dynb__dataset_stats(&d->d, mean, std);
  return DYNB_OK;
}

dynb_status dynb_dataset_normalise(dynb_dataset *d, const double *mean, const double *std) {
  DYNB__API_HANDLE(d);
  DYNB_CHECK(d->ctx, mean && std, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_dataset_normalise: %s is NULL", mean ? "std" : "mean");
  for (int c = 0; c < d->d.c; c++)
    DYNB_CHECK(d->ctx, isfinite(mean[c]) && isfinite(std[c]) && std[c] > 0,
               DYNB_STATUS_INVALID_ARGUMENT,
               "dynb_dataset_normalise: channel %d: mean %g, std %g (std must be finite and > 0)",
               c, mean[c], std[c]);
  dynb__dataset_normalise(&d->d, mean, std);
  return DYNB_OK;
}
