#include "ref/ref.h"

void ref_rk_combine(size_t p, int S, const double *y, const double *k, const double *coef,
                    double *out) {
  for (size_t i = 0; i < p; i++) {
    double acc = y[i];
    for (int j = 0; j < S; j++) acc += coef[j] * k[(size_t)j * p + i];
    out[i] = acc;
  }
}

void ref_rk_combine_backward(size_t p, int S, const double *dout, const double *coef, double *dy,
                             double *dk) {
  for (size_t i = 0; i < p; i++) {
    dy[i] = dout[i];
    for (int j = 0; j < S; j++) dk[(size_t)j * p + i] = coef[j] * dout[i];
  }
}

void ref_lincomb(size_t p, double a, const double *x, double b, const double *y, double c,
                 const double *z, double *out) {
  for (size_t i = 0; i < p; i++) {
    double v = a * x[i];
    if (y) v += b * y[i];
    if (z) v += c * z[i];
    out[i] = v;
  }
}
