#include <math.h>

#include "ref/ref.h"

void ref_interp_weights(const double *t_controls, int J, double t, int *j0, double *w) {
  *j0 = 0;
  *w = 0;
  if (J <= 1 || t <= t_controls[0]) return;
  if (t >= t_controls[J - 1]) {
    *j0 = J - 1;
    return;
  }
  int j = 0;
  while (t_controls[j + 1] <= t) j++;
  *j0 = j;
  *w = (t - t_controls[j]) / (t_controls[j + 1] - t_controls[j]);
}

void ref_interp_forward(size_t p, const double *c, int j0, double w, double *out) {
  const double *a = c + (size_t)j0 * p, *b = a + p;
  for (size_t i = 0; i < p; i++) out[i] = w == 0 ? a[i] : (1 - w) * a[i] + w * b[i];
}

void ref_interp_backward(size_t p, const double *dout, int j0, double w, double *dc) {
  double *a = dc + (size_t)j0 * p, *b = a + p;
  for (size_t i = 0; i < p; i++) {
    a[i] += (1 - w) * dout[i];
    if (w != 0) b[i] += w * dout[i];
  }
}

void ref_sgd_step(size_t n, double *param, const double *grad, double *vel, double lr,
                  double momentum, double wd, int nesterov) {
  for (size_t i = 0; i < n; i++) {
    double g = grad[i] + wd * param[i];
    if (momentum != 0) {
      vel[i] = momentum * vel[i] + g;
      g = nesterov ? g + momentum * vel[i] : vel[i];
    }
    param[i] -= lr * g;
  }
}

void ref_adam_step(size_t n, double *param, const double *grad, double *m, double *v, double lr,
                   double beta1, double beta2, double eps, double wd, int64_t step) {
  for (size_t i = 0; i < n; i++) {
    double g = grad[i] + wd * param[i];
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    double mhat = m[i] / (1 - pow(beta1, (double)step));
    double vhat = v[i] / (1 - pow(beta2, (double)step));
    param[i] -= lr * mhat / (sqrt(vhat) + eps);
  }
}

void ref_clip(size_t n, double *param, double lo, double hi) {
  for (size_t i = 0; i < n; i++) {
    if (param[i] < lo) param[i] = lo;
    if (param[i] > hi) param[i] = hi;
  }
}

double ref_timereg(int J, size_t p, const double *c, const double *h, double alpha) {
  double r = 0;
  for (int j = 0; j + 1 < J; j++)
    for (size_t i = 0; i < p; i++) r += h[j] * fabs(c[(size_t)(j + 1) * p + i] - c[(size_t)j * p + i]);
  return alpha * r;
}

static double sign(double d) { return d > 0 ? 1 : d < 0 ? -1 : 0; }

void ref_timereg_backward(int J, size_t p, const double *c, const double *h, double alpha,
                          double *dc) {
  /* R = alpha Σ_j h[j] |c[j+1] - c[j]|: each term pushes c[j+1] by +h[j] sign
   * and c[j] by -h[j] sign. */
  for (int j = 0; j + 1 < J; j++)
    for (size_t i = 0; i < p; i++) {
      double s = alpha * h[j] * sign(c[(size_t)(j + 1) * p + i] - c[(size_t)j * p + i]);
      dc[(size_t)(j + 1) * p + i] += s;
      dc[(size_t)j * p + i] -= s;
    }
}
