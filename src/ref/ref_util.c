/* Helpers that the tests and the selftest share: seeded data, the one
 * error measure, and a GEMM in double. */
#include <math.h>

#include "ref.h"

ref_rng ref_rng_seed(uint64_t seed) {
  ref_rng r = {seed * 0x9e3779b97f4a7c15ULL + 1};
  return r;
}

static uint64_t next_u64(ref_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double ref_uniform(ref_rng *r, double lo, double hi) {
  return lo + (hi - lo) * ((double)(next_u64(r) >> 11) / 9007199254740992.0);
}

void ref_fill(ref_rng *r, double *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = ref_uniform(r, lo, hi);
}

double ref_max_scaled_err(const double *got, const double *want, const double *scale, size_t n,
                          size_t *at) {
  double worst = 0;
  size_t where = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs(got[i] - want[i]) / (scale ? scale[i] : 1.0);
    if (!(e <= worst)) { /* NaN wins */
      worst = e;
      where = i;
      if (isnan(e)) break;
    }
  }
  if (at) *at = where;
  return worst;
}

double ref_unit(bool f64) { return f64 ? 0x1p-53 : 0x1p-24; }

void ref_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, double alpha,
              const double *a, size_t lda, const double *b, size_t ldb, double beta, double *c,
              size_t ldc, double *mag) {
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      double sum = 0, abs_sum = 0;
      for (size_t l = 0; l < k; l++) {
        double x = trans_a ? a[l * lda + i] : a[i * lda + l];
        double y = trans_b ? b[j * ldb + l] : b[l * ldb + j];
        sum += x * y, abs_sum += fabs(x * y);
      }
      double *cij = &c[i * ldc + j];
      if (mag) mag[i * ldc + j] = fabs(alpha) * abs_sum + fabs(beta * *cij);
      *cij = alpha * sum + beta * *cij;
    }
}
