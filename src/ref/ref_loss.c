#include <math.h>

#include "ref/ref.h"

/* softmax of one row of k logits into p, shifted by the maximum so that
 * exp never overflows. */
static void softmax_row(int k, const double *z, double *p) {
  double m = z[0], s = 0;
  for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
  for (int j = 0; j < k; j++) s += (p[j] = exp(z[j] - m));
  for (int j = 0; j < k; j++) p[j] /= s;
}

void ref_xent_forward(int n, int k, const double *logits, const int32_t *labels, double out[2]) {
  double loss = 0, correct = 0;
  for (int r = 0; r < n; r++) {
    const double *z = logits + (size_t)r * k;
    int label = labels[r], arg = 0;
    for (int j = 1; j < k; j++)
      if (z[j] > z[arg]) arg = j;
    if (label < 0 || label >= k) {
      loss = NAN;
      continue;
    }
    /* -log softmax_label = log Σ_j exp(z_j - m) - (z_label - m) */
    double m = z[arg], s = 0;
    for (int j = 0; j < k; j++) s += exp(z[j] - m);
    loss += log(s) - (z[label] - m);
    correct += arg == label;
  }
  out[0] = loss / n;
  out[1] = correct;
}

void ref_xent_backward(int n, int k, const double *logits, const int32_t *labels, double scale,
                       double *dlogits) {
  for (int r = 0; r < n; r++) {
    const double *z = logits + (size_t)r * k;
    double *d = dlogits + (size_t)r * k;
    softmax_row(k, z, d);
    int label = labels[r];
    for (int j = 0; j < k; j++) {
      double onehot = j == label ? 1 : 0;
      d[j] = (label < 0 || label >= k) ? NAN : scale * (d[j] - onehot) / n;
    }
  }
}
