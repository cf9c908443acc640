/* The adaptive integrator of a dynamic block (SPEC §1.5): an embedded
 * Runge–Kutta pair stepped by the controller of controller.c, one step
 * sequence for the whole batch, and the exact gradient of the steps that
 * were accepted (discretise-then-optimise, gradient "discrete").
 *
 * A step from (t, y) with size h, s stages, f = σ·g as in integrator_rk.c:
 *   Y_i = y + Σ_{j<i} σ h A_ij g_i,   g_i = g(Y_i, θ(t + c_i h)),
 *   y'  = y + Σ_i σ h b_i g_i,        err = Σ_i σ h (b_i − b_err_i) g_i,
 * judged by the RMS over the batch of err / (atol + rtol·max(|y|, |y'|)).
 *
 * Memory is fixed at prepare: max_steps bounds the accepted steps, and
 * `keep` holds each accepted step's input y_k (max_steps − 1 states; y_0 is
 * the caller's x, the last step writes the caller's out). Whatever the
 * memory mode, a step's stages live in scratch and the backward pass
 * recomputes them from y_k, checkpoint style: an adaptive step's stages are
 * only known after the step is accepted, and keeping every attempt's would
 * size keep for max_steps × s states.
 *
 * The error norm is reduced on the host: the candidate, the state and the
 * error are read back after each attempt (3 NCHW reads; a device reduction
 * to one number would save the transfer, and is the place to add it). With
 * several data-parallel replicas (src/parallel/group.c), each replica's
 * Σ (err/tol)² and element count must be summed across the group before
 * dynb__ctrl_ratio, so that every replica takes the same steps; a block
 * does not see its group, so that reduction is not wired yet (see
 * reduce_error below).
 *
 * Gradient "discrete": the accepted step sequence (t_k, h_k) is held fixed
 * and each step is differentiated exactly as integrator_rk.c does, so the
 * gradient is that of the computation that ran; the controller's choices
 * (h depends on y through r) are not differentiated, as in every
 * discretise-then-optimise adaptive solver. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/integrator.h"

typedef struct adaptive {
  int max_steps;
  /* Stops (t_states and interior control times) and the accepted step
   * ends of the last forward: t[0] = start, t[naccepted] = end. */
  int nstops, naccepted;
  double stops[2 * DYNB_MAX_TIME_POINTS];
  double t[DYNB_MAX_TIME_POINTS + 1];
  /* Counts of the last forward and backward (function evaluations). */
  int attempts, rejected;
  double nfe_forward, nfe_backward;
  dynb__tensor coef;   /* scratch: [2s+3][s+1] rows of the step at hand, see row() */
  dynb__run states;    /* keep: max_steps − 1 items of NCHW: y_k, k >= 1 */
  dynb__run inputs;    /* scratch: s items of NCHW: the stage inputs Y_i */
  dynb__run caches;    /* scratch: s items of cache */
  dynb__tensor adj;    /* scratch: [s+1][NCHW]: g_i forward, Ȳ_i and ȳ backward */
  dynb__tensor gbar;   /* scratch: [NCHW] */
  dynb__tensor cand;   /* scratch: [NCHW], the candidate y' of an attempt */
  dynb__tensor errv;   /* scratch: [NCHW], its error estimate */
  dynb__tensor theta;  /* scratch: [s][P], θ at the stage times */
  dynb__tensor dtheta; /* scratch: [s][P] */
} adaptive;

static adaptive *impl(const dynb__block *b) { return b->impl; }

/* Coefficient rows, each s+1 long (index s weighs ȳ): row i < s: Y_i;
 * row s: y'; row s+1: err; row s+2+i: ḡ_i; row 2s+2: ones. */
static size_t row(const dynb__block *b, int r) { return (size_t)r * (size_t)(b->tab.stages + 1); }

static dynb_status ad_check(const dynb__layer *l, const dynb__tableau *t, char *err,
                            size_t errlen) {
  if (t->stages < 2 || t->stages > DYNB_MAX_STAGES || t->order < 1) {
    snprintf(err, errlen, "embedded pair '%s' has %d stages, order %d", t->name, t->stages,
             t->order);
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (l->norm == DYNB_NORM_BATCH) {
    snprintf(err, errlen,
             "batch norm cannot be used in an adaptive block (scheme '%s'): its running "
             "statistics belong to fixed evaluations",
             t->name);
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (!(t->atol > 0) || !(t->rtol >= 0) || t->max_steps < 1 ||
      t->max_steps > DYNB_MAX_TIME_POINTS) {
    snprintf(err, errlen, "scheme '%s': rtol %g, atol %g, max_steps %d out of range", t->name,
             t->rtol, t->atol, t->max_steps);
    return DYNB_STATUS_SPEC_ERROR;
  }
  return DYNB_OK;
}

static void ad_shape(dynb__block *b) {
  adaptive *a = impl(b);
  a->max_steps = b->tab.max_steps;
  a->nstops = dynb__ctrl_stops(b->nsteps + 1, b->t_states, b->ncontrols, b->t_controls, a->stops);
}

static void ad_carve(dynb__block *b, dynb__arena_cursor *k, dynb__arena_cursor *t) {
  adaptive *a = impl(b);
  size_t s = (size_t)b->tab.stages;
  size_t kept = a->max_steps > 1 ? (size_t)a->max_steps - 1 : 1;
  a->states = dynb__arena_run(k, kept, b->nchw, "adaptive block step input");
  a->coef = dynb__arena_flat(t, row(b, 2 * (int)s + 3), "adaptive block coefficients");
  a->inputs = dynb__arena_run(t, s, b->nchw, "adaptive block stage input");
  a->caches = dynb__arena_run(t, s, b->cache_elems, "adaptive block stage cache");
  a->adj = dynb__arena_flat(t, (s + 1) * b->nchw, "adaptive block adjoints (stages + 1 states)");
  a->gbar = dynb__arena_flat(t, b->nchw, "adaptive block stage gradient");
  a->cand = dynb__arena_flat(t, b->nchw, "adaptive block candidate state");
  a->errv = dynb__arena_flat(t, b->nchw, "adaptive block error estimate");
  a->theta = dynb__arena_flat(t, s * b->P, "adaptive block parameters at stage times");
  a->dtheta = dynb__arena_flat(t, s * b->P, "adaptive block parameter gradients");
}

/* Coefficients depend on h, so they are written per step (upload has
 * nothing to do). */
static dynb_status ad_upload(dynb__block *b) {
  (void)b;
  return DYNB_OK;
}

/* ---- views ------------------------------------------------------------------------ */

static dynb__tensor coef_view(const dynb__block *b, int r, int len) {
  int64_t d = len;
  return dynb__tensor_sub(&impl(b)->coef, row(b, r), 1, &d);
}

static dynb__tensor stages_view(const dynb__block *b, int count) {
  int64_t d[2] = {count, (int64_t)b->nchw};
  return dynb__tensor_sub(&impl(b)->adj, 0, 2, d);
}

static dynb__tensor p_at(const dynb__block *b, const dynb__tensor *base, int i) {
  int64_t p = (int64_t)b->P;
  return dynb__tensor_sub(base, (size_t)i * b->P, 1, &p);
}

static dynb__tensor state_at(const dynb__block *b, const dynb__tensor *x, int k) {
  return k == 0 ? *x : dynb__run_at(&impl(b)->states, (size_t)k - 1, 4, b->dims);
}

static bool row_is_zero(const dynb__tableau *t, int i) {
  for (int j = 0; j < i; j++)
    if (t->a[i][j] != 0) return false;
  return true;
}

static dynb__tensor stage_input(const dynb__block *b, const dynb__tensor *y, int i) {
  if (row_is_zero(&b->tab, i)) return *y;
  return dynb__run_at(&impl(b)->inputs, (size_t)i, 4, b->dims);
}

static dynb__tensor cache_at(const dynb__block *b, int i) {
  int64_t n = (int64_t)b->cache_elems;
  return dynb__run_at(&impl(b)->caches, (size_t)i, 1, &n);
}

/* Writes every coefficient row of a step of size h. */
static dynb_status write_coefs(dynb__block *b, double h) {
  int s = b->tab.stages;
  double c[(2 * DYNB_MAX_STAGES + 3) * (DYNB_MAX_STAGES + 1)];
  memset(c, 0, row(b, 2 * s + 3) * sizeof *c);
  double sh = dynb__layer_sign(&b->layer) * h;
  const dynb__tableau *t = &b->tab;
  for (int i = 0; i < s; i++) {
    for (int j = 0; j < i; j++) c[row(b, i) + (size_t)j] = sh * t->a[i][j];
    c[row(b, s) + (size_t)i] = sh * t->b[i];
    c[row(b, s + 1) + (size_t)i] = sh * (t->b[i] - t->b_err[i]);
    double *back = &c[row(b, s + 2 + i)];
    for (int l = i + 1; l < s; l++) back[l] = sh * t->a[l][i];
    back[s] = sh * t->b[i];
    c[row(b, 2 * s + 2) + (size_t)i] = 1.0;
  }
  return dynb__tensor_write_f64(b->ctx, &impl(b)->coef, c);
}

/* θ at the stage times and the stages g_i of a step from (t, y) of size h
 * (coefficients written), each stage's cache kept for a backward. */
static dynb_status stages(dynb__block *b, const dynb__tensor *y, double t, double h, bool train) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  for (int i = 0; i < s; i++) {
    dynb__tensor in = stage_input(b, y, i);
    if (!row_is_zero(&b->tab, i)) {
      dynb__tensor g = stages_view(b, s), c = coef_view(b, i, s);
      DYNB_TRY(dynb__rk_combine(b->ctx, y, &g, &c, &in));
    }
    dynb__tensor th = p_at(b, &a->theta, i), cache = cache_at(b, i);
    DYNB_TRY(dynb__block_theta(b, t + b->tab.c[i] * h, &th));
    dynb__layer_eval e = {&th, &in, &cache, NULL, train};
    dynb__tensor out = dynb__block_nchw_at(b, &a->adj, (size_t)i);
    DYNB_TRY(dynb__layer_forward(b->ctx, &b->layer, &e, &out, &b->work));
  }
  return DYNB_OK;
}

/* ---- forward ------------------------------------------------------------------------ */

/* rms(v / (atol + rtol·|y|)) over the batch, v and y on the host. */
static double scaled_rms(size_t n, const double *v, const double *y, double rtol, double atol) {
  double s = 0;
  for (size_t e = 0; e < n; e++) {
    double q = v[e] / (atol + rtol * fabs(y[e]));
    s += q * q;
  }
  return n ? sqrt(s / (double)n) : 0;
}

/* The error ratio of an attempt. Where replicas share the steps, the
 * (sumsq, count) pair is what they would all-reduce before the ratio. */
static double reduce_error(size_t n, const double *err, const double *y0, const double *y1,
                           double rtol, double atol) {
  double sumsq = dynb__ctrl_sumsq(n, err, y0, y1, rtol, atol), count = (double)n;
  return dynb__ctrl_ratio(sumsq, count);
}

/* Hairer's first step: two evaluations at t0 (into the stage rows 0 and 1
 * of adj), norms on the host. */
static dynb_status first_step(dynb__block *b, const dynb__tensor *x, double *host, double *h) {
  adaptive *a = impl(b);
  size_t n = b->nchw;
  double *y = host, *f0 = host + n, *f1 = host + 2 * n;
  double t0 = a->stops[0], sign = dynb__layer_sign(&b->layer);
  dynb__tensor th = p_at(b, &a->theta, 0), cache = cache_at(b, 0);
  dynb__tensor g0 = dynb__block_nchw_at(b, &a->adj, 0), g1 = dynb__block_nchw_at(b, &a->adj, 1);
  DYNB_TRY(dynb__block_theta(b, t0, &th));
  dynb__layer_eval e = {&th, x, &cache, NULL, true};
  DYNB_TRY(dynb__layer_forward(b->ctx, &b->layer, &e, &g0, &b->work));
  DYNB_TRY(dynb__tensor_read_f64(b->ctx, x, y));
  DYNB_TRY(dynb__tensor_read_f64(b->ctx, &g0, f0));
  double rtol = b->tab.rtol, atol = b->tab.atol;
  double d0 = scaled_rms(n, y, y, rtol, atol), d1 = scaled_rms(n, f0, y, rtol, atol);
  double h0 = dynb__ctrl_first_guess(d0, d1);
  /* Y = y + σ h0 g0 into the candidate buffer, then g1 = g(Y, θ(t0 + h0)). */
  double c1[2] = {sign * h0, 0};
  dynb__tensor cv = coef_view(b, 0, 1);
  DYNB_TRY(dynb__tensor_write_f64(b->ctx, &cv, c1));
  dynb__tensor one = stages_view(b, 1);
  dynb__tensor cand = dynb__block_nchw_at(b, &a->cand, 0);
  DYNB_TRY(dynb__rk_combine(b->ctx, x, &one, &cv, &cand));
  DYNB_TRY(dynb__block_theta(b, t0 + h0, &th));
  dynb__layer_eval e1 = {&th, &cand, &cache, NULL, true};
  DYNB_TRY(dynb__layer_forward(b->ctx, &b->layer, &e1, &g1, &b->work));
  DYNB_TRY(dynb__tensor_read_f64(b->ctx, &g1, f1));
  for (size_t i = 0; i < n; i++) f1[i] -= f0[i]; /* |σ| = 1: the sign drops out */
  double d2 = scaled_rms(n, f1, y, rtol, atol) / h0;
  *h = dynb__ctrl_first_step(h0, d1, d2, b->tab.order, a->stops[a->nstops - 1] - a->stops[0]);
  return DYNB_OK;
}

static dynb_status forward_steps(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                                 bool train, double *host) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  size_t n = b->nchw;
  double h0;
  DYNB_TRY(first_step(b, x, host, &h0));
  a->nfe_forward = 2;
  dynb__ctrl c;
  dynb__ctrl_start(&c, a->stops, a->nstops, b->tab.order, a->max_steps, h0);
  a->t[0] = a->stops[0];
  char why[256];
  while (!dynb__ctrl_done(&c)) {
    double t, h;
    dynb_status st = dynb__ctrl_propose(&c, &t, &h, why, sizeof why);
    a->attempts = c.attempts, a->rejected = c.rejected, a->naccepted = c.accepted;
    if (st != DYNB_OK) return dynb__fail(b->ctx, st, "adaptive block (%s): %s", b->tab.name, why);
    /* The last stop's step writes the caller's out; any other the next
     * state slot, which a rejected attempt simply overwrites next time. */
    bool last = c.clipped && c.next == c.nstops - 1;
    int k = c.accepted;
    /* Every slot is taken: this attempt could not be kept even if accepted. */
    if (!last && k + 1 > a->max_steps - 1)
      return dynb__fail(b->ctx, DYNB_STATUS_PARAM_OUT_OF_BOUND,
                        "adaptive block (%s): max_steps (%d) reached at t = %.6g before t = "
                        "%.6g (%d steps accepted, %d rejected); raise max_steps or loosen "
                        "rtol/atol",
                        b->tab.name, a->max_steps, t, a->stops[a->nstops - 1], c.accepted,
                        c.rejected);
    dynb__tensor y = state_at(b, x, k), next = last ? *out : state_at(b, x, k + 1);
    DYNB_TRY(write_coefs(b, h));
    DYNB_TRY(stages(b, &y, t, h, train));
    a->nfe_forward += s;
    dynb__tensor g = stages_view(b, s), cn = coef_view(b, s, s), ce = coef_view(b, s + 1, s);
    DYNB_TRY(dynb__rk_combine(b->ctx, &y, &g, &cn, &next));
    DYNB_TRY(dynb__rk_combine(b->ctx, NULL, &g, &ce, &a->errv));
    DYNB_TRY(dynb__tensor_read_f64(b->ctx, &y, host));
    DYNB_TRY(dynb__tensor_read_f64(b->ctx, &next, host + n));
    DYNB_TRY(dynb__tensor_read_f64(b->ctx, &a->errv, host + 2 * n));
    double r = reduce_error(n, host + 2 * n, host, host + n, b->tab.rtol, b->tab.atol);
    bool ok = false;
    st = dynb__ctrl_judge(&c, r, &ok, why, sizeof why);
    a->attempts = c.attempts, a->rejected = c.rejected, a->naccepted = c.accepted;
    if (st != DYNB_OK) return dynb__fail(b->ctx, st, "adaptive block (%s): %s", b->tab.name, why);
    if (ok) a->t[c.accepted] = c.t;
  }
  return DYNB_OK;
}

static dynb_status ad_forward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                              bool train) {
  /* Host room for three states, for the error norm: allocated per call
   * (device memory stays fixed; this is the host side of the reduction). */
  double *host = dynb__alloc(b->ctx, 3 * b->nchw * sizeof *host);
  DYNB_CHECK(b->ctx, host, DYNB_STATUS_OUT_OF_HOST_MEMORY, "adaptive block: no host memory");
  impl(b)->naccepted = 0;
  dynb_status st = forward_steps(b, x, out, train, host);
  dynb__free(b->ctx, host);
  return st;
}

/* ---- backward (discrete: the accepted steps held fixed) ------------------------------- */

static dynb_status step_backward(dynb__block *b, const dynb__tensor *x, int k,
                                 const dynb__tensor *target) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  double t = a->t[k], h = a->t[k + 1] - a->t[k];
  dynb__tensor y = state_at(b, x, k);
  DYNB_TRY(write_coefs(b, h));
  /* Recompute the stages into adj's rows: they are dead by the time the
   * adjoint of a later stage overwrites its row (stages last to first). */
  DYNB_TRY(stages(b, &y, t, h, b->train_last));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &a->dtheta));
  dynb__tensor adj = stages_view(b, s + 1), gbar = dynb__block_nchw_at(b, &a->gbar, 0);
  for (int i = s - 1; i >= 0; i--) {
    dynb__tensor c = coef_view(b, s + 2 + i, s + 1);
    DYNB_TRY(dynb__rk_combine(b->ctx, NULL, &adj, &c, &gbar));
    dynb__tensor in = stage_input(b, &y, i), cache = cache_at(b, i);
    dynb__tensor th = p_at(b, &a->theta, i), dth = p_at(b, &a->dtheta, i);
    dynb__layer_eval e = {&th, &in, &cache, NULL, b->train_last};
    dynb__tensor dyi = dynb__block_nchw_at(b, &a->adj, (size_t)i);
    DYNB_TRY(dynb__layer_backward(b->ctx, &b->layer, &e, &gbar, &dyi, false, &dth, &b->work));
  }
  for (int i = 0; i < s; i++) {
    dynb__tensor dth = p_at(b, &a->dtheta, i);
    DYNB_TRY(dynb__block_theta_backward(b, t + b->tab.c[i] * h, &dth));
  }
  dynb__tensor ybar = dynb__block_nchw_at(b, &a->adj, (size_t)s);
  dynb__tensor ones = coef_view(b, 2 * s + 2, s + 1);
  return dynb__rk_combine(b->ctx, &ybar, &adj, &ones, target);
}

static dynb_status ad_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                               const dynb__tensor *dx) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  dynb__tensor ybar = dynb__block_nchw_at(b, &a->adj, (size_t)s);
  DYNB_TRY(dynb__tensor_copy(b->ctx, dout, &ybar));
  for (int k = a->naccepted - 1; k >= 0; k--)
    DYNB_TRY(step_backward(b, x, k, k == 0 ? dx : &ybar));
  a->nfe_backward = 2.0 * s * a->naccepted; /* recomputed stages + their backward */
  return DYNB_OK;
}

/* Before any forward, the most max_steps allows; after one, what it did. */
static void ad_evals(const dynb__block *b, double *forward, double *backward,
                     double *recomputed) {
  const adaptive *a = impl(b);
  double s = b->tab.stages;
  if (a->attempts == 0) {
    *forward = 2 + s * a->max_steps;
    *backward = *recomputed = s * a->max_steps;
    return;
  }
  *forward = a->nfe_forward;
  *backward = *recomputed = s * a->naccepted;
}

void dynb__adaptive_counts(const dynb__block *b, dynb__step_counts *out) {
  memset(out, 0, sizeof *out);
  if (b->integ != &dynb__integrator_adaptive) return;
  const adaptive *a = impl(b);
  out->adaptive = true;
  out->accepted = a->naccepted;
  out->rejected = a->rejected;
  out->nfe_forward = a->nfe_forward;
  out->nfe_backward = a->nfe_backward;
  out->t = a->t;
}

const dynb__integrator dynb__integrator_adaptive = {
    .name = "adaptive embedded Runge-Kutta",
    .impl_size = sizeof(adaptive),
    .check = ad_check,
    .shape = ad_shape,
    .carve = ad_carve,
    .upload = ad_upload,
    .forward = ad_forward,
    .backward = ad_backward,
    .evals = ad_evals,
    .reconstruction_error = NULL,
};
