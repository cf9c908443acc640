#include "ref/ref.h"

void ref_avgpool2_forward(int n, int c, int h, int w, const double *x, double *y) {
  int ho = h / 2, wo = w / 2;
  for (int p = 0; p < n * c; p++)
    for (int i = 0; i < ho; i++)
      for (int j = 0; j < wo; j++) {
        double s = 0;
        for (int di = 0; di < 2; di++)
          for (int dj = 0; dj < 2; dj++) s += x[((size_t)p * h + 2 * i + di) * w + 2 * j + dj];
        y[((size_t)p * ho + i) * wo + j] = s / 4;
      }
}

void ref_avgpool2_backward(int n, int c, int h, int w, const double *dy, double *dx) {
  int ho = h / 2, wo = w / 2;
  for (size_t i = 0; i < (size_t)n * c * h * w; i++) dx[i] = 0;
  for (int p = 0; p < n * c; p++)
    for (int i = 0; i < ho; i++)
      for (int j = 0; j < wo; j++)
        for (int di = 0; di < 2; di++)
          for (int dj = 0; dj < 2; dj++)
            dx[((size_t)p * h + 2 * i + di) * w + 2 * j + dj] =
                dy[((size_t)p * ho + i) * wo + j] / 4;
}

void ref_global_avgpool_forward(int n, int c, int s, const double *x, double *y) {
  for (int p = 0; p < n * c; p++) {
    double sum = 0;
    for (int j = 0; j < s; j++) sum += x[(size_t)p * s + j];
    y[p] = sum / s;
  }
}

void ref_global_avgpool_backward(int n, int c, int s, const double *dy, double *dx) {
  for (int p = 0; p < n * c; p++)
    for (int j = 0; j < s; j++) dx[(size_t)p * s + j] = dy[p] / s;
}
