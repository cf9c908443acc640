/* Convolution references: square odd k, stride 1, zero padding k/2, NCHW,
 * weights [Cout][Cin][k][k]. The conv is a cross-correlation (as PyTorch):
 *   y[n][co][i][j] = b[co] + Σ_{ci,a,c} w[co][ci][a][c] x[n][ci][i+a-k/2][j+c-k/2].
 * The transposed direction is written as a scatter, the way its definition
 * reads, independently of the gather the kernels use. */
#include "ref/ref.h"

/* Index of [n][c][i][j] in an NCHW tensor with C channels of h×w. */
static size_t at4(int n, int c, int i, int j, int cc, int h, int w) {
  return (((size_t)n * cc + c) * h + i) * w + j;
}

static int inside(int i, int j, int h, int w) { return i >= 0 && i < h && j >= 0 && j < w; }

void ref_conv2d_forward(int n, int cin, int cout, int h, int w, int k, const double *x,
                        const double *wt, const double *b, double *y) {
  int p = k / 2;
  for (int b0 = 0; b0 < n; b0++)
    for (int co = 0; co < cout; co++)
      for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
          double s = b ? b[co] : 0;
          for (int ci = 0; ci < cin; ci++)
            for (int a = 0; a < k; a++)
              for (int c = 0; c < k; c++)
                if (inside(i + a - p, j + c - p, h, w))
                  s += wt[at4(co, ci, a, c, cin, k, k)] *
                       x[at4(b0, ci, i + a - p, j + c - p, cin, h, w)];
          y[at4(b0, co, i, j, cout, h, w)] = s;
        }
}

void ref_conv2d_backward_data(int n, int cin, int cout, int h, int w, int k, const double *dy,
                              const double *wt, double *dx) {
  int p = k / 2;
  for (size_t i = 0; i < (size_t)n * cin * h * w; i++) dx[i] = 0;
  /* Each output pixel sends its gradient back to the inputs it read. */
  for (int b0 = 0; b0 < n; b0++)
    for (int co = 0; co < cout; co++)
      for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++)
          for (int ci = 0; ci < cin; ci++)
            for (int a = 0; a < k; a++)
              for (int c = 0; c < k; c++)
                if (inside(i + a - p, j + c - p, h, w))
                  dx[at4(b0, ci, i + a - p, j + c - p, cin, h, w)] +=
                      wt[at4(co, ci, a, c, cin, k, k)] * dy[at4(b0, co, i, j, cout, h, w)];
}

void ref_conv2d_backward_weights(int n, int cin, int cout, int h, int w, int k, const double *x,
                                 const double *dy, double *dw) {
  int p = k / 2;
  for (int co = 0; co < cout; co++)
    for (int ci = 0; ci < cin; ci++)
      for (int a = 0; a < k; a++)
        for (int c = 0; c < k; c++) {
          double s = 0;
          for (int b0 = 0; b0 < n; b0++)
            for (int i = 0; i < h; i++)
              for (int j = 0; j < w; j++)
                if (inside(i + a - p, j + c - p, h, w))
                  s += dy[at4(b0, co, i, j, cout, h, w)] *
                       x[at4(b0, ci, i + a - p, j + c - p, cin, h, w)];
          dw[at4(co, ci, a, c, cin, k, k)] = s;
        }
}

void ref_conv2d_transpose_forward(int n, int cin, int cout, int h, int w, int k, const double *z,
                                  const double *wt, const double *b, double *y) {
  ref_conv2d_backward_data(n, cin, cout, h, w, k, z, wt, y);
  if (!b) return;
  for (int b0 = 0; b0 < n; b0++)
    for (int ci = 0; ci < cin; ci++)
      for (int i = 0; i < h * w; i++) y[((size_t)b0 * cin + ci) * h * w + i] += b[ci];
}
