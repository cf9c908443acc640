#include "ref/ref.h"

void ref_bias_add(int n, int c, int s, double *y, const double *b) {
  for (int i = 0; i < n; i++)
    for (int j = 0; j < c; j++)
      for (int k = 0; k < s; k++) y[((size_t)i * c + j) * s + k] += b[j];
}

void ref_channel_sum(int n, int c, int s, const double *x, double *out) {
  for (int j = 0; j < c; j++) {
    double acc = 0;
    for (int i = 0; i < n; i++)
      for (int k = 0; k < s; k++) acc += x[((size_t)i * c + j) * s + k];
    out[j] = acc;
  }
}
