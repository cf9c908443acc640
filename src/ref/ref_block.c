/* Reference of a dynamic block (SPEC §1.1): θ interpolated from the control
 * points, the layer function of ref_layer.c, and an explicit Runge–Kutta
 * step written straight from the formulas
 *   K_i = f(y_k + h Σ_{j<i} A_ij K_j, θ(t_k + c_i h)),  y_{k+1} = y_k + h Σ_i b_i K_i,
 * keeping every stage, with f's sign applied where the SPEC writes it
 * (unlike the library, which folds it into the coefficients). */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "ref/ref.h"

void ref_block_forward(const struct dynb__layer *l, int n, int h, int w, int s, const double *c,
                       const double *a, const double *b, int nstates, const double *t_states,
                       int ncontrols, const double *t_controls, const double *controls,
                       const double *x, int train, double *running, double *out) {
  size_t m = (size_t)n * (size_t)l->channels * (size_t)h * (size_t)w, P;
  dynb__layer_params(l, NULL, &P);
  size_t per_eval = (size_t)dynb__layer_batch_norms(l) * 2 * (size_t)l->channels;
  double *y = malloc(m * sizeof *y), *in = malloc(m * sizeof *in);
  double *kst = malloc((size_t)s * m * sizeof *kst), *theta = malloc(P * sizeof *theta);
  memcpy(y, x, m * sizeof *y);
  for (int k = 0; k + 1 < nstates; k++) {
    double hk = t_states[k + 1] - t_states[k];
    for (int i = 0; i < s; i++) {
      for (size_t e = 0; e < m; e++) {
        double v = y[e];
        for (int j = 0; j < i; j++) v += hk * a[i * s + j] * kst[(size_t)j * m + e];
        in[e] = v;
      }
      int j0;
      double wt;
      ref_interp_weights(t_controls, ncontrols, t_states[k] + c[i] * hk, &j0, &wt);
      ref_interp_forward(P, controls, j0, wt, theta);
      double *run = NULL;
      if (running && per_eval) run = running + ((size_t)k * (size_t)s + (size_t)i) * per_eval;
      ref_layer_f(l, n, h, w, theta, in, train, run, kst + (size_t)i * m, NULL);
    }
    for (size_t e = 0; e < m; e++) {
      double v = 0;
      for (int i = 0; i < s; i++) v += b[i] * kst[(size_t)i * m + e];
      y[e] += hk * v;
    }
  }
  memcpy(out, y, m * sizeof *out);
  free(y), free(in), free(kst), free(theta);
}

/* Leapfrog (SPEC §1.4), straight from its formulas with the second-order
 * start: Y_1 = Y_0 + ½ h_0² f(Y_0), then
 * Y_{k+1} = Y_k + (h_k/h_{k−1})(Y_k − Y_{k−1}) + ½ h_k (h_k + h_{k−1}) f(Y_k),
 * θ at tY[k]; running statistics as stage 0 of each step. */
void ref_leapfrog_forward(const struct dynb__layer *l, int n, int h, int w, int nstates,
                          const double *t_states, int ncontrols, const double *t_controls,
                          const double *controls, const double *x, int train, double *running,
                          double *out) {
  size_t m = (size_t)n * (size_t)l->channels * (size_t)h * (size_t)w, P;
  dynb__layer_params(l, NULL, &P);
  size_t per_eval = (size_t)dynb__layer_batch_norms(l) * 2 * (size_t)l->channels;
  double *prev = malloc(m * sizeof *prev), *cur = malloc(m * sizeof *cur);
  double *f = malloc(m * sizeof *f), *theta = malloc(P * sizeof *theta);
  memcpy(cur, x, m * sizeof *cur);
  for (int k = 0; k + 1 < nstates; k++) {
    double hk = t_states[k + 1] - t_states[k];
    int j0;
    double wt;
    ref_interp_weights(t_controls, ncontrols, t_states[k], &j0, &wt);
    ref_interp_forward(P, controls, j0, wt, theta);
    double *run = running && per_eval ? running + (size_t)k * per_eval : NULL;
    ref_layer_f(l, n, h, w, theta, cur, train, run, f, NULL);
    for (size_t e = 0; e < m; e++) {
      double next;
      if (k == 0) {
        next = cur[e] + 0.5 * hk * hk * f[e];
      } else {
        double hp = t_states[k] - t_states[k - 1];
        next = cur[e] + hk / hp * (cur[e] - prev[e]) + 0.5 * hk * (hk + hp) * f[e];
      }
      prev[e] = cur[e];
      cur[e] = next;
    }
  }
  memcpy(out, cur, m * sizeof *out);
  free(prev), free(cur), free(f), free(theta);
}
