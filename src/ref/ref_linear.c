#include "ref/ref.h"

void ref_linear_forward(int n, int in, int out, const double *x, const double *w,
                        const double *b, double *y) {
  for (int r = 0; r < n; r++)
    for (int o = 0; o < out; o++) {
      double s = b ? b[o] : 0;
      for (int i = 0; i < in; i++) s += x[(size_t)r * in + i] * w[(size_t)o * in + i];
      y[(size_t)r * out + o] = s;
    }
}

void ref_linear_backward(int n, int in, int out, const double *x, const double *w,
                         const double *dy, double *dx, double *dw, double *db) {
  if (dx)
    for (int r = 0; r < n; r++)
      for (int i = 0; i < in; i++) {
        double s = 0;
        for (int o = 0; o < out; o++) s += dy[(size_t)r * out + o] * w[(size_t)o * in + i];
        dx[(size_t)r * in + i] = s;
      }
  if (dw)
    for (int o = 0; o < out; o++)
      for (int i = 0; i < in; i++) {
        double s = 0;
        for (int r = 0; r < n; r++) s += dy[(size_t)r * out + o] * x[(size_t)r * in + i];
        dw[(size_t)o * in + i] = s;
      }
  if (db)
    for (int o = 0; o < out; o++) {
      double s = 0;
      for (int r = 0; r < n; r++) s += dy[(size_t)r * out + o];
      db[o] = s;
    }
}
