/* Data sets in host memory: statistics, normalisation, splits, shuffling. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"

void dynb__dataset_stats(const dynb__dataset *d, double *mean, double *std) {
  size_t plane = (size_t)d->h * (size_t)d->w;
  for (int c = 0; c < d->c; c++) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < d->n; i++) {
      const float *p = d->images + ((size_t)i * (size_t)d->c + (size_t)c) * plane;
      for (size_t j = 0; j < plane; j++) s += p[j], s2 += (double)p[j] * p[j];
    }
    double m = (double)d->n * (double)plane;
    mean[c] = m > 0 ? s / m : 0;
    double var = m > 0 ? s2 / m - mean[c] * mean[c] : 1;
    std[c] = var > 1e-12 ? sqrt(var) : 1.0;
  }
}

void dynb__dataset_normalise(dynb__dataset *d, const double *mean, const double *std) {
  size_t plane = (size_t)d->h * (size_t)d->w;
  for (int64_t i = 0; i < d->n; i++)
    for (int c = 0; c < d->c; c++) {
      float *p = d->images + ((size_t)i * (size_t)d->c + (size_t)c) * plane;
      for (size_t j = 0; j < plane; j++) p[j] = (float)((p[j] - mean[c]) / std[c]);
    }
}

dynb_status dynb__dataset_split(dynb__dataset *d, int64_t count, dynb__dataset *tail) {
  memset(tail, 0, sizeof *tail);
  if (count < 0 || count > d->n) return DYNB_STATUS_INVALID_ARGUMENT;
  *tail = *d;
  tail->n = count;
  size_t per = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  tail->images = malloc((count ? (size_t)count : 1) * per * sizeof(float));
  tail->labels = malloc((count ? (size_t)count : 1) * sizeof(int32_t));
  if (!tail->images || !tail->labels) {
    dynb__dataset_release(tail);
    return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  }
  int64_t keep = d->n - count;
  memcpy(tail->images, d->images + (size_t)keep * per, (size_t)count * per * sizeof(float));
  memcpy(tail->labels, d->labels + keep, (size_t)count * sizeof(int32_t));
  d->n = keep;
  return DYNB_OK;
}

static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void dynb__dataset_shuffle(dynb__dataset *d, uint64_t *rng) {
  size_t per = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  float *tmp = malloc(per * sizeof *tmp);
  if (!tmp) return;
  for (int64_t i = d->n - 1; i > 0; i--) {
    int64_t j = (int64_t)(next_u64(rng) % (uint64_t)(i + 1));
    if (j == i) continue;
    memcpy(tmp, d->images + (size_t)i * per, per * sizeof *tmp);
    memcpy(d->images + (size_t)i * per, d->images + (size_t)j * per, per * sizeof *tmp);
    memcpy(d->images + (size_t)j * per, tmp, per * sizeof *tmp);
    int32_t l = d->labels[i];
    d->labels[i] = d->labels[j];
    d->labels[j] = l;
  }
  free(tmp);
}

void dynb__dataset_release(dynb__dataset *d) {
  free(d->images);
  free(d->labels);
  memset(d, 0, sizeof *d);
}
