/* See ref_normsync.h. */
#include <stddef.h>

#include "ref/ref_normsync.h"

void ref_bn_moments(int n, int c, int s, const double *x, double *mean, double *m2) {
  const double m = (double)n * (double)s;
  for (int ch = 0; ch < c; ch++) {
    double sum = 0;
    for (int b = 0; b < n; b++)
      for (int j = 0; j < s; j++) sum += x[((size_t)b * (size_t)c + (size_t)ch) * (size_t)s + (size_t)j];
    const double mu = sum / m;
    double sq = 0;
    for (int b = 0; b < n; b++)
      for (int j = 0; j < s; j++) {
        const double d = x[((size_t)b * (size_t)c + (size_t)ch) * (size_t)s + (size_t)j] - mu;
        sq += d * d;
      }
    mean[ch] = mu, m2[ch] = sq;
  }
}
