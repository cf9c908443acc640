/* Reference adaptive solver (SPEC §1.5): an embedded Runge–Kutta pair
 * stepped by the controller of controller.c, written straight from the
 * formulas in double on the host, with no FSAL reuse and every evaluation
 * counted. Used as the oracle for adaptive blocks and, on scalar and small
 * linear systems, to check that the error follows the tolerance. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "ref/ref.h"

/* rms(v / (atol + rtol·|y|)) */
static double scaled_rms(size_t m, const double *v, const double *y, double rtol, double atol) {
  double s = 0;
  for (size_t e = 0; e < m; e++) {
    double q = v[e] / (atol + rtol * fabs(y[e]));
    s += q * q;
  }
  return m ? sqrt(s / (double)m) : 0;
}

int ref_adaptive_solve(const dynb__tableau *tab, ref_rhs_fn f, void *user, size_t m,
                       const double *y0, int nstops, const double *stops, double rtol,
                       double atol, int max_steps, double *y_out,
                       ref_adaptive_stats *st, char *err, size_t errlen) {
  int s = tab->stages;
  double *y = malloc(m * sizeof *y), *y1 = malloc(m * sizeof *y1), *ye = malloc(m * sizeof *ye);
  double *in = malloc(m * sizeof *in), *k = malloc((size_t)s * m * sizeof *k);
  dynb_status rc = DYNB_STATUS_OUT_OF_HOST_MEMORY;
  dynb__ctrl c = {0};
  double *steps = st->steps;
  memset(st, 0, sizeof *st);
  st->steps = steps;
  if (!y || !y1 || !ye || !in || !k) goto out;
  memcpy(y, y0, m * sizeof *y);
  /* Hairer's first step: f0 into k[0], a trial Euler step into in, f1 into k[1]
   * (s >= 2 for any pair worth the name; with s == 1, k[1] would not exist). */
  double *f0 = k, *f1 = s > 1 ? k + m : in;
  f(user, stops[0], y, f0);
  double d0 = scaled_rms(m, y, y, rtol, atol), d1 = scaled_rms(m, f0, y, rtol, atol);
  double h0 = dynb__ctrl_first_guess(d0, d1);
  for (size_t e = 0; e < m; e++) ye[e] = y[e] + h0 * f0[e];
  f(user, stops[0] + h0, ye, f1);
  for (size_t e = 0; e < m; e++) ye[e] = f1[e] - f0[e];
  double d2 = scaled_rms(m, ye, y, rtol, atol) / h0;
  st->nfe = 2;
  double h = dynb__ctrl_first_step(h0, d1, d2, tab->order, stops[nstops - 1] - stops[0]);
  dynb__ctrl_start(&c, stops, nstops, tab->order, max_steps, h);
  if (st->steps) st->steps[0] = stops[0];
  while (!dynb__ctrl_done(&c)) {
    double t, hk;
    rc = dynb__ctrl_propose(&c, &t, &hk, err, errlen);
    if (rc != DYNB_OK) goto out;
    for (int i = 0; i < s; i++) {
      for (size_t e = 0; e < m; e++) {
        double v = y[e];
        for (int j = 0; j < i; j++) v += hk * tab->a[i][j] * k[(size_t)j * m + e];
        in[e] = v;
      }
      f(user, t + tab->c[i] * hk, in, k + (size_t)i * m);
    }
    st->nfe += s;
    for (size_t e = 0; e < m; e++) {
      double v = 0, d = 0;
      for (int i = 0; i < s; i++) {
        v += tab->b[i] * k[(size_t)i * m + e];
        d += (tab->b[i] - tab->b_err[i]) * k[(size_t)i * m + e];
      }
      y1[e] = y[e] + hk * v;
      ye[e] = hk * d;
    }
    double r = dynb__ctrl_ratio(dynb__ctrl_sumsq(m, ye, y, y1, rtol, atol), (double)m);
    bool ok = false;
    rc = dynb__ctrl_judge(&c, r, &ok, err, errlen);
    if (rc != DYNB_OK) goto out;
    if (ok) {
      memcpy(y, y1, m * sizeof *y);
      if (st->steps) st->steps[c.accepted] = c.t;
    }
  }
  memcpy(y_out, y, m * sizeof *y);
  rc = DYNB_OK;
out:
  st->accepted = c.accepted, st->rejected = c.rejected;
  free(y), free(y1), free(ye), free(in), free(k);
  return rc;
}

/* f of a block: θ(t) interpolated from the controls, then the layer. */
typedef struct block_rhs {
  const struct dynb__layer *l;
  int n, h, w, ncontrols;
  const double *t_controls, *controls;
  double *theta;
} block_rhs;

static void block_f(void *user, double t, const double *y, double *out) {
  block_rhs *b = user;
  size_t P;
  dynb__layer_params(b->l, NULL, &P);
  int j0;
  double wt;
  ref_interp_weights(b->t_controls, b->ncontrols, t, &j0, &wt);
  ref_interp_forward(P, b->controls, j0, wt, b->theta);
  ref_layer_f(b->l, b->n, b->h, b->w, b->theta, y, 1, NULL, out, NULL);
}

int ref_block_adaptive_forward(const struct dynb__layer *l, int n, int h, int w,
                               const dynb__tableau *tab, int nstates,
                               const double *t_states, int ncontrols,
                               const double *t_controls, const double *controls,
                               double rtol, double atol, int max_steps, const double *x,
                               double *out, ref_adaptive_stats *st, char *err,
                               size_t errlen) {
  size_t P, m = (size_t)n * (size_t)l->channels * (size_t)h * (size_t)w;
  dynb__layer_params(l, NULL, &P);
  double *stops = malloc((size_t)(nstates + ncontrols) * sizeof *stops);
  block_rhs b = {l, n, h, w, ncontrols, t_controls, controls, malloc(P * sizeof(double))};
  dynb_status rc = DYNB_STATUS_OUT_OF_HOST_MEMORY;
  if (stops && b.theta) {
    int ns = dynb__ctrl_stops(nstates, t_states, ncontrols, t_controls, stops);
    rc = ref_adaptive_solve(tab, block_f, &b, m, x, ns, stops, rtol, atol, max_steps, out, st,
                            err, errlen);
  }
  free(stops), free(b.theta);
  return rc;
}
