/* The step-size controller of adaptive blocks (SPEC §1.5), as pure host
 * functions: the caller evaluates f and reduces the error on the device;
 * this file only decides. The formulas are the standard ones of Hairer,
 * Nørsett & Wanner, Solving ODEs I, §II.4, and follow torchdiffeq
 * (torchdiffeq/_impl/rk_common.py, misc.py) where it does:
 *
 *   error ratio   r = sqrt(mean_e (err_e / (atol + rtol·max(|y0_e|, |y1_e|)))²)
 *                 (torchdiffeq's _compute_error_ratio with its default RMS
 *                 norm; the mean runs over every element of the whole batch,
 *                 so one step sequence serves the batch);
 *   accept        r <= 1;
 *   next step     h·min(10, max(0.2, 0.9·r^(−1/q))), q the order of b's
 *                 solution (torchdiffeq: safety 0.9, ifactor 10, dfactor
 *                 0.2, exponent 1/order with order 5 for dopri5); after an
 *                 accepted step the factor is at least 1 (SPEC: an accepted
 *                 step never shrinks the next one; torchdiffeq sets dfactor
 *                 to 1 for r < 1 to the same end); r = 0 grows by 10;
 *   first step    Hairer's rule (torchdiffeq's _select_initial_step, with
 *                 exponent 1/q as in Hairer's HINIT for DOPRI5 where q = 5).
 *
 * Where this differs: torchdiffeq clamps the factor to [1/10, 10/0.9]
 * through its safety term (min(ifactor, max(safety/ifactor, r^(1/q)/safety))
 * inverted), we use Hairer's [0.2, 10] as SPEC §1.5 writes it; and a step
 * is cut to end exactly on the next stop (t_states and interior control
 * times), where torchdiffeq only does so for its grid_points option.
 * max_steps counts attempted steps, accepted and rejected, as torchdiffeq's
 * max_num_steps does; it bounds the accepted steps a plan must hold. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

#define SAFETY 0.9
#define GROW_MAX 10.0
#define SHRINK_MIN 0.2

double dynb__ctrl_sumsq(size_t n, const double *err, const double *y0, const double *y1,
                        double rtol, double atol) {
  double s = 0;
  for (size_t e = 0; e < n; e++) {
    double tol = atol + rtol * fmax(fabs(y0[e]), fabs(y1[e]));
    double q = err[e] / tol;
    s += q * q;
  }
  return s;
}

double dynb__ctrl_ratio(double sumsq, double count) {
  return count > 0 ? sqrt(sumsq / count) : 0;
}

double dynb__ctrl_factor(double r, int order, bool accepted) {
  double f;
  if (r == 0)
    f = GROW_MAX;
  else
    f = fmin(GROW_MAX, fmax(SHRINK_MIN, SAFETY * pow(r, -1.0 / (order > 0 ? order : 1))));
  return accepted ? fmax(1.0, f) : f;
}

double dynb__ctrl_first_guess(double d0, double d1) {
  /* Hairer: h0 = 0.01·‖y0‖/‖f0‖, or 1e-6 when either is tiny (the ratio
   * would mean nothing). */
  return d0 < 1e-5 || d1 < 1e-5 ? 1e-6 : 0.01 * d0 / d1;
}

double dynb__ctrl_first_step(double h0, double d1, double d2, int order, double span) {
  double m = fmax(d1, d2), h1;
  if (m <= 1e-15)
    h1 = fmax(1e-6, h0 * 1e-3);
  else
    h1 = pow(0.01 / m, 1.0 / (order > 0 ? order : 1));
  return fmin(fmin(100 * h0, h1), span);
}

int dynb__ctrl_stops(int nstates, const double *t_states, int ncontrols,
                     const double *t_controls, double *out) {
  /* A merge of two sorted lists, keeping control times strictly inside
   * (t_states[0], t_states[end]) and dropping those equal to a state time. */
  int n = 0, i = 0, j = 0;
  double lo = t_states[0], hi = t_states[nstates - 1];
  while (i < nstates || j < ncontrols) {
    double v;
    if (j >= ncontrols || (i < nstates && t_states[i] <= t_controls[j])) {
      v = t_states[i++];
    } else {
      v = t_controls[j++];
      if (!(v > lo && v < hi)) continue;
    }
    if (n == 0 || v > out[n - 1]) out[n++] = v;
  }
  return n;
}

void dynb__ctrl_start(dynb__ctrl *c, const double *stops, int nstops, int order, int max_steps,
                      double h) {
  memset(c, 0, sizeof *c);
  c->stops = stops;
  c->nstops = nstops;
  c->next = 1;
  c->order = order;
  c->max_steps = max_steps;
  c->t = stops[0];
  c->h = h;
}

bool dynb__ctrl_done(const dynb__ctrl *c) { return c->next >= c->nstops; }

dynb_status dynb__ctrl_propose(dynb__ctrl *c, double *t, double *h, char *err, size_t errlen) {
  double stop = c->stops[c->next], left = stop - c->t;
  if (c->attempts >= c->max_steps) {
    if (err && errlen)
      snprintf(err, errlen,
               "max_steps (%d) reached at t = %.6g before t = %.6g (%d steps accepted, %d "
               "rejected); raise max_steps or loosen rtol/atol",
               c->max_steps, c->t, c->stops[c->nstops - 1], c->accepted, c->rejected);
    return DYNB_STATUS_PARAM_OUT_OF_BOUND;
  }
  /* A step that would end within a whisker of the stop (relative 1e-10 of
   * what is left) ends on it, so no sliver of a step follows. */
  double hs = c->h;
  c->clipped = hs >= left * (1 - 1e-10);
  if (c->clipped) hs = left;
  if (!(hs > 0) || c->t + hs == c->t) {
    if (err && errlen)
      snprintf(err, errlen,
               "step size underflow (h = %g) at t = %.17g after %d rejected steps: the error "
               "estimate does not shrink with the step",
               hs, c->t, c->rejected);
    return DYNB_STATUS_NON_FINITE;
  }
  c->h_try = hs;
  *t = c->t;
  *h = hs;
  return DYNB_OK;
}

dynb_status dynb__ctrl_judge(dynb__ctrl *c, double r, bool *accepted, char *err, size_t errlen) {
  c->attempts++;
  if (!(r >= 0) || isinf(r)) {
    if (err && errlen)
      snprintf(err, errlen, "error estimate is not finite (ratio %g) at t = %.6g, h = %g", r,
               c->t, c->h_try);
    return DYNB_STATUS_NON_FINITE;
  }
  bool ok = r <= 1;
  c->h = c->h_try * dynb__ctrl_factor(r, c->order, ok);
  if (ok) {
    c->accepted++;
    if (c->clipped) {
      c->t = c->stops[c->next++]; /* exactly on the stop, no rounding drift */
    } else {
      c->t += c->h_try;
    }
  } else {
    c->rejected++;
  }
  if (accepted) *accepted = ok;
  return DYNB_OK;
}
