#include <math.h>

#include "ref/ref.h"

/* Element j of channel ch of sample b in an [n][c][s] array. */
static size_t at(int c, int s, int b, int ch, int j) {
  return ((size_t)b * c + ch) * s + (size_t)j;
}

/* The per-channel sums run over M = N·H·W terms, for batch norm possibly
 * on a large offset. An ordinary double sum would err by up to
 * M · 2^-53 Σ|terms|, more than the f64 kernels' tree sums, so these sums
 * are compensated (Neumaier): their error stays near one rounding of the
 * result. Plain double, so it behaves alike everywhere (long double is
 * only double under valgrind or MSVC). */
typedef struct ksum {
  double s, c;
} ksum;

static void ksum_add(ksum *k, double v) {
  double t = k->s + v;
  k->c += fabs(k->s) >= fabs(v) ? (k->s - t) + v : (v - t) + k->s;
  k->s = t;
}

static double ksum_get(const ksum *k) { return k->s + k->c; }

void ref_tv_forward(int n, int c, int s, const double *x, const double *beta, double eps,
                    double *y) {
  for (int b = 0; b < n; b++)
    for (int j = 0; j < s; j++) {
      double ss = 0;
      for (int ch = 0; ch < c; ch++) ss += x[at(c, s, b, ch, j)] * x[at(c, s, b, ch, j)];
      double r = sqrt(ss + eps);
      for (int ch = 0; ch < c; ch++) y[at(c, s, b, ch, j)] = x[at(c, s, b, ch, j)] / r + beta[ch];
    }
}

void ref_tv_backward(int n, int c, int s, const double *x, const double *dy, double eps, double *dx,
                     double *dbeta) {
  for (int b = 0; b < n; b++)
    for (int j = 0; j < s; j++) {
      double ss = 0, dot = 0;
      for (int ch = 0; ch < c; ch++) {
        ss += x[at(c, s, b, ch, j)] * x[at(c, s, b, ch, j)];
        dot += dy[at(c, s, b, ch, j)] * x[at(c, s, b, ch, j)];
      }
      double r = sqrt(ss + eps);
      for (int ch = 0; ch < c; ch++) {
        size_t i = at(c, s, b, ch, j);
        dx[i] = dy[i] / r - x[i] * dot / (r * r * r);
      }
    }
  for (int ch = 0; dbeta && ch < c; ch++) {
    ksum sum = {0, 0};
    for (int b = 0; b < n; b++)
      for (int j = 0; j < s; j++) ksum_add(&sum, dy[at(c, s, b, ch, j)]);
    dbeta[ch] = ksum_get(&sum);
  }
}

/* Mean and biased variance of channel ch, in two passes. */
static void channel_stats(int n, int c, int s, const double *x, int ch, double *mean,
                          double *var) {
  double m = (double)n * s;
  ksum sum = {0, 0}, sq = {0, 0};
  for (int b = 0; b < n; b++)
    for (int j = 0; j < s; j++) ksum_add(&sum, x[at(c, s, b, ch, j)]);
  *mean = ksum_get(&sum) / m;
  for (int b = 0; b < n; b++)
    for (int j = 0; j < s; j++) {
      double d = x[at(c, s, b, ch, j)] - *mean;
      ksum_add(&sq, d * d);
    }
  *var = ksum_get(&sq) / m;
}

void ref_bn_train_forward(int n, int c, int s, const double *x, const double *gamma,
                          const double *beta, double momentum, double eps, double *y,
                          double *mean, double *invstd, double *running_mean,
                          double *running_var) {
  double m = (double)n * s;
  for (int ch = 0; ch < c; ch++) {
    double mu = 0, var = 0;
    channel_stats(n, c, s, x, ch, &mu, &var);
    double is = 1 / sqrt(var + eps);
    for (int b = 0; b < n; b++)
      for (int j = 0; j < s; j++) {
        size_t i = at(c, s, b, ch, j);
        y[i] = (x[i] - mu) * is * gamma[ch] + beta[ch];
      }
    mean[ch] = mu;
    invstd[ch] = is;
    if (running_mean) {
      running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * mu;
      running_var[ch] = (1 - momentum) * running_var[ch] + momentum * var * m / (m - 1);
    }
  }
}

void ref_bn_train_backward(int n, int c, int s, const double *x, const double *dy,
                           const double *gamma, const double *mean, const double *invstd,
                           double *dx, double *dgamma, double *dbeta) {
  double m = (double)n * s;
  for (int ch = 0; ch < c; ch++) {
    ksum sum_dy = {0, 0}, sum_dyx = {0, 0};
    for (int b = 0; b < n; b++)
      for (int j = 0; j < s; j++) {
        size_t i = at(c, s, b, ch, j);
        ksum_add(&sum_dy, dy[i]);
        ksum_add(&sum_dyx, dy[i] * (x[i] - mean[ch]) * invstd[ch]);
      }
    double sdy = ksum_get(&sum_dy), sdyx = ksum_get(&sum_dyx);
    for (int b = 0; b < n; b++)
      for (int j = 0; j < s; j++) {
        size_t i = at(c, s, b, ch, j);
        double xhat = (x[i] - mean[ch]) * invstd[ch];
        dx[i] = gamma[ch] * invstd[ch] / m * (m * dy[i] - sdy - xhat * sdyx);
      }
    dgamma[ch] = sdyx;
    dbeta[ch] = sdy;
  }
}

void ref_bn_eval_forward(int n, int c, int s, const double *x, const double *gamma,
                         const double *beta, const double *rmean, const double *rvar, double eps,
                         double *y) {
  for (int b = 0; b < n; b++)
    for (int ch = 0; ch < c; ch++)
      for (int j = 0; j < s; j++) {
        size_t i = at(c, s, b, ch, j);
        y[i] = (x[i] - rmean[ch]) / sqrt(rvar[ch] + eps) * gamma[ch] + beta[ch];
      }
}

void ref_bn_eval_backward(int n, int c, int s, const double *x, const double *dy,
                          const double *gamma, const double *rmean, const double *rvar,
                          double eps, double *dx, double *dgamma, double *dbeta) {
  for (int ch = 0; ch < c; ch++) {
    double r = sqrt(rvar[ch] + eps);
    ksum sum_dyx = {0, 0}, sum_dy = {0, 0};
    for (int b = 0; b < n; b++)
      for (int j = 0; j < s; j++) {
        size_t i = at(c, s, b, ch, j);
        dx[i] = dy[i] * gamma[ch] / r;
        ksum_add(&sum_dyx, dy[i] * (x[i] - rmean[ch]) / r);
        ksum_add(&sum_dy, dy[i]);
      }
    dgamma[ch] = ksum_get(&sum_dyx);
    dbeta[ch] = ksum_get(&sum_dy);
  }
}
