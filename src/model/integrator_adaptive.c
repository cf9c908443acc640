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
 * several data-parallel replicas (src/parallel/group.c, SPEC §2.1), each
 * replica's Σ (err/tol)² and element count are summed across the group in
 * training, through the replica link batch norm uses (ctx->link), before
 * dynb__ctrl_ratio, and so are the norms of Hairer's first step and of the
 * adjoint's backward attempts: every replica then takes the steps one
 * device would take on the global batch (see replica_sum below).
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
  int attempts, rejected, adjoint_rejected;
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
  /* Gradient "adjoint" (see the second half of this file). `fixed`: a
   * tableau without error estimate, stepped on t_states alone. */
  bool adjoint, fixed;
  dynb__tensor coef2;   /* scratch: the a-equation's rows (step +h where y takes −h) */
  dynb__tensor ka;      /* scratch: [s][NCHW], the stages of a */
  dynb__run ainputs;    /* scratch: s items of NCHW, the stage inputs of a */
  dynb__tensor abuf, acand, aerr, ybuf; /* scratch: [NCHW] each */
  dynb__tensor dscaled; /* scratch: [P] */
} adaptive;

static adaptive *impl(const dynb__block *b) { return b->impl; }

/* Coefficient rows, each s+1 long (index s weighs ȳ): row i < s: Y_i;
 * row s: y'; row s+1: err; row s+2+i: ḡ_i; row 2s+2: ones. */
static size_t row(const dynb__block *b, int r) { return (size_t)r * (size_t)(b->tab.stages + 1); }

static dynb_status ad_check(const dynb__layer *l, const dynb__tableau *t, char *err,
                            size_t errlen) {
  /* Reversible schemes (integrator_leapfrog.c) have their own exact,
   * memory-free backward; the adjoint here steps (c, A, b) only. */
  if (t->kind != DYNB_SCHEME_RK) {
    snprintf(err, errlen,
             "gradient 'adjoint' applies to Runge-Kutta schemes; scheme '%s' is reversible",
             t->name);
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (dynb__integrator_check_not_hamiltonian(l, t, err, errlen) != DYNB_OK)
    return DYNB_STATUS_SPEC_ERROR;
  if (l->norm == DYNB_NORM_BATCH) {
    snprintf(err, errlen,
             "batch norm cannot be used in a block with adaptive steps or gradient 'adjoint' "
             "(scheme '%s'): its running statistics belong to fixed evaluations",
             t->name);
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (!t->embedded) return DYNB_OK; /* fixed steps, gradient 'adjoint' */
  if (t->stages < 2 || t->stages > DYNB_MAX_STAGES || t->order < 1) {
    snprintf(err, errlen, "embedded pair '%s' has %d stages, order %d", t->name, t->stages,
             t->order);
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (t->embedded && (!(t->atol > 0) || !(t->rtol >= 0) || t->max_steps < 1 ||
                      t->max_steps > DYNB_MAX_TIME_POINTS)) {
    snprintf(err, errlen, "scheme '%s': rtol %g, atol %g, max_steps %d out of range", t->name,
             t->rtol, t->atol, t->max_steps);
    return DYNB_STATUS_SPEC_ERROR;
  }
  return DYNB_OK;
}

static void ad_shape(dynb__block *b) {
  adaptive *a = impl(b);
  a->adjoint = b->tab.gradient == DYNB_GRADIENT_ADJOINT;
  a->fixed = !b->tab.embedded;
  if (a->fixed) {
    /* The steps of t_states, as the explicit RK integrator takes them. */
    a->max_steps = b->nsteps;
    a->nstops = b->nsteps + 1;
    memcpy(a->stops, b->t_states, (size_t)a->nstops * sizeof *a->stops);
    return;
  }
  a->max_steps = b->tab.max_steps;
  a->nstops = dynb__ctrl_stops(b->nsteps + 1, b->t_states, b->ncontrols, b->t_controls, a->stops);
}

static void ad_carve(dynb__block *b, dynb__arena_cursor *k, dynb__arena_cursor *t) {
  adaptive *a = impl(b);
  size_t s = (size_t)b->tab.stages;
  /* The adjoint restarts y from every accepted step's end, the last (the
   * block's output) included. */
  size_t kept = a->adjoint ? (size_t)a->max_steps : a->max_steps > 1 ? (size_t)a->max_steps - 1 : 1;
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
  if (!a->adjoint) return;
  a->coef2 = dynb__arena_flat(t, row(b, 2 * (int)s + 3), "adjoint coefficients");
  a->ka = dynb__arena_flat(t, s * b->nchw, "adjoint stages");
  a->ainputs = dynb__arena_run(t, s, b->nchw, "adjoint stage input");
  a->abuf = dynb__arena_flat(t, b->nchw, "adjoint state");
  a->acand = dynb__arena_flat(t, b->nchw, "adjoint candidate");
  a->aerr = dynb__arena_flat(t, b->nchw, "adjoint error estimate");
  a->ybuf = dynb__arena_flat(t, b->nchw, "adjoint backward state");
  a->dscaled = dynb__arena_flat(t, b->P, "adjoint parameter gradient");
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

/* Writes every coefficient row of a step of size h into `to`. */
static dynb_status write_coefs_to(dynb__block *b, double h, const dynb__tensor *to) {
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
  return dynb__tensor_write_f64(b->ctx, to, c);
}

static dynb_status write_coefs(dynb__block *b, double h) {
  return write_coefs_to(b, h, &impl(b)->coef);
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

static dynb_status ad_forward_adaptive(dynb__block *b, const dynb__tensor *x,
                                       const dynb__tensor *out, bool train);

/* Σ (v / (atol + rtol·|y|))² over this replica's part of the batch. */
static double scaled_sumsq(size_t n, const double *v, const double *y, double rtol, double atol) {
  double s = 0;
  for (size_t e = 0; e < n; e++) {
    double q = v[e] / (atol + rtol * fabs(y[e]));
    s += q * q;
  }
  return s;
}

/* Sums v[0..m) over the replicas of a data-parallel group, in place, when
 * `shared` (training) and the context is one replica of a group (ctx->link,
 * src/parallel/group.c). Every replica gathers the same doubles and adds
 * them in the fixed replica order, so every replica gets the same bits and
 * takes the same decision: the same steps, and so the same number of calls
 * here (a replica that stepped differently would wait in a collective the
 * others never reach). Alone, or not shared, v is left as it is.
 *
 * `shared` is false in evaluation: there each replica runs its own slice of
 * the data set in as many batches as that slice needs (group.c
 * replica_eval), so the replicas do not make the same number of forwards
 * and a collective per attempt would deadlock; each replica's batches take
 * their own steps, as one device's batches do. */
static dynb_status replica_sum(dynb__block *b, bool shared, double *v, int m) {
  dynb__replica_link *link = b->ctx->link;
  if (!shared || !link) return DYNB_OK;
  double *all = dynb__alloc(b->ctx, (size_t)link->replicas * (size_t)m * sizeof *all);
  DYNB_CHECK(b->ctx, all, DYNB_STATUS_OUT_OF_HOST_MEMORY, "adaptive block: no host memory");
  dynb_status st = link->allgather(link, b->ctx, v, (size_t)m, all);
  for (int j = 0; st == DYNB_OK && j < m; j++) {
    double s = 0;
    for (int k = 0; k < link->replicas; k++) s += all[(size_t)k * (size_t)m + (size_t)j];
    v[j] = s;
  }
  dynb__free(b->ctx, all);
  /* A failure (another replica's) is recorded on ctx by the link, naming
   * it; group.c reports it as it stands. */
  return st;
}

/* The error ratio r of an attempt: this replica's (Σ (err/tol)², count),
 * summed over the replicas when `shared` (replica_sum), so that r is the
 * RMS over the global batch, as one device would compute it up to the
 * order of the sums. */
static dynb_status reduce_error(dynb__block *b, bool shared, size_t n, const double *err,
                                const double *y0, const double *y1, double *r) {
  double v[2] = {dynb__ctrl_sumsq(n, err, y0, y1, b->tab.rtol, b->tab.atol), (double)n};
  DYNB_TRY(replica_sum(b, shared, v, 2));
  *r = dynb__ctrl_ratio(v[0], v[1]);
  return DYNB_OK;
}

/* Hairer's first step: two evaluations at t0 (into the stage rows 0 and 1
 * of adj), norms on the host, each an RMS over the global batch when
 * `shared` (replica_sum), so that every replica starts with the same h. */
static dynb_status first_step(dynb__block *b, const dynb__tensor *x, bool shared, double *host,
                              double *h) {
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
  double v[3] = {scaled_sumsq(n, y, y, rtol, atol), scaled_sumsq(n, f0, y, rtol, atol), (double)n};
  DYNB_TRY(replica_sum(b, shared, v, 3));
  double d0 = dynb__ctrl_ratio(v[0], v[2]), d1 = dynb__ctrl_ratio(v[1], v[2]);
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
  double w[2] = {scaled_sumsq(n, f1, y, rtol, atol), (double)n};
  DYNB_TRY(replica_sum(b, shared, w, 2));
  double d2 = dynb__ctrl_ratio(w[0], w[1]) / h0;
  *h = dynb__ctrl_first_step(h0, d1, d2, b->tab.order, a->stops[a->nstops - 1] - a->stops[0]);
  return DYNB_OK;
}

static dynb_status forward_steps(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                                 bool train, double *host) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  size_t n = b->nchw;
  double h0;
  /* Training on several replicas: one step sequence for the global batch. */
  bool shared = train;
  DYNB_TRY(first_step(b, x, shared, host, &h0));
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
    double r;
    DYNB_TRY(reduce_error(b, shared, n, host + 2 * n, host, host + n, &r));
    bool ok = false;
    st = dynb__ctrl_judge(&c, r, &ok, why, sizeof why);
    a->attempts = c.attempts, a->rejected = c.rejected, a->naccepted = c.accepted;
    if (st != DYNB_OK) return dynb__fail(b->ctx, st, "adaptive block (%s): %s", b->tab.name, why);
    if (ok) a->t[c.accepted] = c.t;
  }
  return DYNB_OK;
}

/* A tableau without error estimate (gradient "adjoint" only): one step per
 * interval of t_states. */
static dynb_status forward_fixed(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                                 bool train) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  a->nfe_forward = 0;
  a->t[0] = a->stops[0];
  for (int k = 0; k < b->nsteps; k++) {
    double t = a->stops[k], h = a->stops[k + 1] - t;
    dynb__tensor y = state_at(b, x, k), next = k + 1 == b->nsteps ? *out : state_at(b, x, k + 1);
    DYNB_TRY(write_coefs(b, h));
    DYNB_TRY(stages(b, &y, t, h, train));
    dynb__tensor g = stages_view(b, s), cn = coef_view(b, s, s);
    DYNB_TRY(dynb__rk_combine(b->ctx, &y, &g, &cn, &next));
    a->nfe_forward += s;
    a->t[k + 1] = a->stops[k + 1];
    a->naccepted = a->attempts = k + 1;
  }
  return DYNB_OK;
}

static dynb_status ad_forward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                              bool train) {
  adaptive *a = impl(b);
  a->naccepted = a->rejected = 0;
  if (a->fixed) {
    DYNB_TRY(forward_fixed(b, x, out, train));
  } else {
    DYNB_TRY(ad_forward_adaptive(b, x, out, train));
  }
  /* The adjoint restarts y at the output too: keep a copy. */
  if (!a->adjoint) return DYNB_OK;
  dynb__tensor last = dynb__run_at(&a->states, (size_t)a->naccepted - 1, 4, b->dims);
  return dynb__tensor_copy(b->ctx, out, &last);
}

static dynb_status ad_forward_adaptive(dynb__block *b, const dynb__tensor *x,
                                       const dynb__tensor *out, bool train) {
  /* Host room for three states, for the error norm: allocated per call
   * (device memory stays fixed; this is the host side of the reduction). */
  double *host = dynb__alloc(b->ctx, 3 * b->nchw * sizeof *host);
  DYNB_CHECK(b->ctx, host, DYNB_STATUS_OUT_OF_HOST_MEMORY, "adaptive block: no host memory");
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

static dynb_status adjoint_backward(dynb__block *b, const dynb__tensor *dout,
                                    const dynb__tensor *dx);

static dynb_status ad_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                               const dynb__tensor *dx) {
  adaptive *a = impl(b);
  if (a->adjoint) return adjoint_backward(b, dout, dx);
  int s = b->tab.stages;
  dynb__tensor ybar = dynb__block_nchw_at(b, &a->adj, (size_t)s);
  DYNB_TRY(dynb__tensor_copy(b->ctx, dout, &ybar));
  for (int k = a->naccepted - 1; k >= 0; k--)
    DYNB_TRY(step_backward(b, x, k, k == 0 ? dx : &ybar));
  a->nfe_backward = 2.0 * s * a->naccepted; /* recomputed stages + their backward */
  return DYNB_OK;
}

/* ---- backward (adjoint: the continuous adjoint solved backward) ---------------------- *
 *
 * The augmented system, backward in time from a(t_end) = ∂L/∂out:
 *   y' = f(y, θ(t)),   a' = −aᵀ ∂f/∂y,   ∂L/∂θ(t) = aᵀ ∂f/∂θ(t),
 * with ∂L/∂θ_j = ∫ w_j(t) aᵀ ∂f/∂θ dt through the interpolation weights w_j,
 * each stage's contribution h b_i aᵀ ∂f/∂θ(t_i) sent to the control points
 * of its time t_i. The segments between accepted forward steps are solved
 * from last to first with the same pair and tolerances (y and a both
 * controlled; first try: the whole segment), and y restarts at each segment
 * from the stored state y_{k+1} instead of being carried backward from the
 * output: integrating y backward (Chen et al.; torchdiffeq's adjoint) is
 * unstable where the forward flow contracts (dissipative layers: backward
 * it expands, and errors grow by the same factor), while a restart bounds
 * the drift to one segment (ANODE, Gholami et al. 2019, who checkpoint for
 * the same reason). With a fixed-step tableau the segments are the steps of
 * t_states and each is one backward step. */

/* One backward attempt over [t − h, t] from (ybuf, abuf) into (cand, acand)
 * with error estimates; dtheta holds the stages' θ gradients, unscaled. */
static dynb_status adjoint_attempt(dynb__block *b, double t, double h) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  DYNB_TRY(write_coefs_to(b, -h, &a->coef));
  DYNB_TRY(write_coefs_to(b, h, &a->coef2));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &a->dtheta));
  dynb__tensor y = dynb__block_nchw_at(b, &a->ybuf, 0), av = dynb__block_nchw_at(b, &a->abuf, 0);
  int64_t d2[2] = {s, (int64_t)b->nchw};
  dynb__tensor ky = stages_view(b, s), ka = dynb__tensor_sub(&a->ka, 0, 2, d2);
  for (int i = 0; i < s; i++) {
    bool zero = row_is_zero(&b->tab, i);
    dynb__tensor yin = zero ? y : dynb__run_at(&a->inputs, (size_t)i, 4, b->dims);
    dynb__tensor ain = zero ? av : dynb__run_at(&a->ainputs, (size_t)i, 4, b->dims);
    if (!zero) {
      dynb__tensor cy = coef_view(b, i, s);
      int64_t len = s;
      dynb__tensor ca = dynb__tensor_sub(&a->coef2, row(b, i), 1, &len);
      DYNB_TRY(dynb__rk_combine(b->ctx, &y, &ky, &cy, &yin));
      DYNB_TRY(dynb__rk_combine(b->ctx, &av, &ka, &ca, &ain));
    }
    dynb__tensor th = p_at(b, &a->theta, i), cache = cache_at(b, i), dth = p_at(b, &a->dtheta, i);
    DYNB_TRY(dynb__block_theta(b, t - b->tab.c[i] * h, &th));
    dynb__layer_eval e = {&th, &yin, &cache, NULL, b->train_last};
    dynb__tensor gy = dynb__block_nchw_at(b, &a->adj, (size_t)i);
    dynb__tensor ga = dynb__block_nchw_at(b, &a->ka, (size_t)i);
    DYNB_TRY(dynb__layer_forward(b->ctx, &b->layer, &e, &gy, &b->work));
    DYNB_TRY(dynb__layer_backward(b->ctx, &b->layer, &e, &ain, &ga, false, &dth, &b->work));
  }
  a->nfe_backward += 2.0 * s;
  int64_t len = s;
  dynb__tensor cy = coef_view(b, s, s), ey = coef_view(b, s + 1, s);
  dynb__tensor ca = dynb__tensor_sub(&a->coef2, row(b, s), 1, &len);
  dynb__tensor ea = dynb__tensor_sub(&a->coef2, row(b, s + 1), 1, &len);
  dynb__tensor yc = dynb__block_nchw_at(b, &a->cand, 0), ac = dynb__block_nchw_at(b, &a->acand, 0);
  DYNB_TRY(dynb__rk_combine(b->ctx, &y, &ky, &cy, &yc));
  DYNB_TRY(dynb__rk_combine(b->ctx, &av, &ka, &ca, &ac));
  if (a->fixed) return DYNB_OK;
  DYNB_TRY(dynb__rk_combine(b->ctx, NULL, &ky, &ey, &a->errv));
  return dynb__rk_combine(b->ctx, NULL, &ka, &ea, &a->aerr);
}

/* Accepts the attempt: y, a move on; each stage's θ gradient, scaled by
 * σ h b_i, goes to the control points of its time. */
static dynb_status adjoint_accept(dynb__block *b, double t, double h) {
  adaptive *a = impl(b);
  int s = b->tab.stages;
  DYNB_TRY(dynb__tensor_copy(b->ctx, &a->cand, &a->ybuf));
  DYNB_TRY(dynb__tensor_copy(b->ctx, &a->acand, &a->abuf));
  int64_t one = 1, p = (int64_t)b->P;
  for (int i = 0; i < s; i++) {
    if (b->tab.b[i] == 0) continue;
    dynb__tensor w = dynb__tensor_sub(&a->coef2, row(b, s) + (size_t)i, 1, &one);
    dynb__tensor dth = dynb__tensor_sub(&a->dtheta, (size_t)i * b->P, 2, (int64_t[2]){1, p});
    DYNB_TRY(dynb__rk_combine(b->ctx, NULL, &dth, &w, &a->dscaled));
    DYNB_TRY(dynb__block_theta_backward(b, t - b->tab.c[i] * h, &a->dscaled));
  }
  return DYNB_OK;
}

/* Solves one segment [t0, t1] backward, from (ybuf, abuf) at t1. */
static dynb_status adjoint_segment(dynb__block *b, double t0, double t1, double *host) {
  adaptive *a = impl(b);
  size_t n = b->nchw;
  if (a->fixed) {
    DYNB_TRY(adjoint_attempt(b, t1, t1 - t0));
    return adjoint_accept(b, t1, t1 - t0);
  }
  /* Reversed time τ = −t, so the controller's stops increase. */
  double stops[2] = {-t1, -t0};
  dynb__ctrl c;
  dynb__ctrl_start(&c, stops, 2, b->tab.order, a->max_steps, t1 - t0);
  char why[256];
  while (!dynb__ctrl_done(&c)) {
    double tau, h;
    dynb_status st = dynb__ctrl_propose(&c, &tau, &h, why, sizeof why);
    if (st != DYNB_OK)
      return dynb__fail(b->ctx, st, "adaptive block (%s), adjoint over [%g, %g]: %s",
                        b->tab.name, t0, t1, why);
    DYNB_TRY(adjoint_attempt(b, -tau, h));
    const dynb__tensor *v[6] = {&a->ybuf, &a->cand, &a->errv, &a->abuf, &a->acand, &a->aerr};
    for (int q = 0; q < 6; q++) DYNB_TRY(dynb__tensor_read_f64(b->ctx, v[q], host + q * n));
    /* y and a both controlled; summed over the replicas in training, as
     * the forward's (every replica's a is its rows of the global batch's
     * ∂L/∂y: the loss weighs each sample by 1/B on every replica). */
    double e[2] = {dynb__ctrl_sumsq(n, host + 2 * n, host, host + n, b->tab.rtol, b->tab.atol) +
                       dynb__ctrl_sumsq(n, host + 5 * n, host + 3 * n, host + 4 * n, b->tab.rtol,
                                        b->tab.atol),
                   2.0 * (double)n};
    DYNB_TRY(replica_sum(b, b->train_last, e, 2));
    double r = dynb__ctrl_ratio(e[0], e[1]);
    bool ok = false;
    st = dynb__ctrl_judge(&c, r, &ok, why, sizeof why);
    a->adjoint_rejected += !ok;
    if (st != DYNB_OK)
      return dynb__fail(b->ctx, st, "adaptive block (%s), adjoint: %s", b->tab.name, why);
    if (ok) DYNB_TRY(adjoint_accept(b, -tau, h));
  }
  return DYNB_OK;
}

static dynb_status adjoint_backward(dynb__block *b, const dynb__tensor *dout,
                                    const dynb__tensor *dx) {
  adaptive *a = impl(b);
  double *host = dynb__alloc(b->ctx, 6 * b->nchw * sizeof *host);
  DYNB_CHECK(b->ctx, host, DYNB_STATUS_OUT_OF_HOST_MEMORY, "adaptive block: no host memory");
  a->nfe_backward = 0, a->adjoint_rejected = 0;
  dynb_status st = dynb__tensor_copy(b->ctx, dout, &a->abuf);
  for (int k = a->naccepted - 1; st == DYNB_OK && k >= 0; k--) {
    dynb__tensor yk1 = dynb__run_at(&a->states, (size_t)k, 4, b->dims);
    st = dynb__tensor_copy(b->ctx, &yk1, &a->ybuf);
    if (st == DYNB_OK) st = adjoint_segment(b, a->t[k], a->t[k + 1], host);
  }
  if (st == DYNB_OK) st = dynb__tensor_copy(b->ctx, &a->abuf, dx);
  dynb__free(b->ctx, host);
  return st;
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

void dynb__block_step_counts(const dynb__block *b, dynb__step_counts *out) {
  memset(out, 0, sizeof *out);
  double fwd, bwd, rec;
  b->integ->evals(b, &fwd, &bwd, &rec);
  out->nfe_forward = fwd, out->nfe_backward = bwd + rec;
  if (b->integ != &dynb__integrator_adaptive) return;
  const adaptive *a = impl(b);
  out->adaptive = true;
  out->accepted = a->naccepted;
  out->rejected = a->rejected;
  out->nfe_forward = a->nfe_forward;
  out->nfe_backward = a->nfe_backward;
  out->t = a->t;
}

double dynb__net_nfe(const dynb__net *net) {
  double n = 0;
  for (int i = 0; i < net->spec.nblocks; i++) {
    dynb__step_counts c;
    dynb__block_step_counts(net->blocks[i], &c);
    n += c.nfe_forward + c.nfe_backward;
  }
  return n;
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
