/* The explicit Runge–Kutta integrator of a dynamic block (SPEC §1.1), and
 * the exact gradient of that discrete computation (discretise, then
 * optimise).
 *
 * One step k, with h = tY[k+1] - tY[k], s stages and f = σ·g (σ the layer's
 * sign, see dynb__layer_sign):
 *   Y_i = y_k + Σ_{j<i} σ h A_ij g_j,   g_i = g(Y_i, θ(tY[k] + c_i h)),
 *   y_{k+1} = y_k + Σ_i σ h b_i g_i.
 * Its adjoint, for the incoming gradient ȳ = ∂L/∂y_{k+1}, stages from last
 * to first:
 *   ḡ_i = σ h b_i ȳ + Σ_{l>i} σ h A_li Ȳ_l,   Ȳ_i = (∂g/∂Y)ᵀ ḡ_i,
 *   ∂L/∂y_k = ȳ + Σ_i Ȳ_i.
 * Every combination above is one dynb__rk_combine with a row of
 * precomputed coefficients, so a step costs one pass over memory per
 * combination whatever the tableau.
 *
 * Memory modes: store keeps every stage's input and cache; checkpoint (and
 * reconstruct, which an RK step cannot invert) keeps only the states and
 * recomputes one step's stages at a time during backward. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/integrator.h"

typedef struct rk {
  /* Stage times that coincide (rk4's two c = 1/2) share one θ: unique[u]
   * holds the distinct c values, stage_slot[i] the slot of stage i. */
  int nunique, stage_slot[DYNB_MAX_STAGES];
  double unique_c[DYNB_MAX_STAGES];
  /* Stages with a nonzero row of A keep their input Y_i (the others take
   * y_k itself): input_index[i] numbers them, ninputs counts them. */
  int ninputs, input_index[DYNB_MAX_STAGES];
  bool store; /* every stage kept (store mode); else one step's, recomputed */
  dynb__tensor coef;   /* keep: [K][2s+2][s+1] rows, see coef_row() */
  dynb__run theta;     /* keep: [K][nunique] items of P */
  dynb__run states;    /* keep: K-1 items of NCHW: y_k for k >= 1 (y_0 is the caller's x) */
  dynb__run inputs;    /* keep (store mode) or scratch: [K or 1][ninputs] items of NCHW */
  dynb__run caches;    /* keep (store mode) or scratch: [K or 1][s] items of cache */
  dynb__tensor adj;    /* scratch: [s+1][NCHW]: Ȳ_0..Ȳ_{s-1}, then ȳ */
  dynb__tensor gstage; /* adj's first s rows: g_i of the step being computed */
  dynb__tensor gbar;   /* scratch: [NCHW]: ḡ_i */
  dynb__tensor dtheta; /* scratch: [nunique][P] */
} rk;

static rk *impl(const dynb__block *b) { return b->impl; }

/* Coefficient rows of step k, each s+1 long (index s weighs ȳ):
 * row i < s: forward Y_i; row s: forward y_{k+1}; row s+1+i: backward ḡ_i;
 * row 2s+1: ones, for ∂L/∂y_k = ȳ + Σ Ȳ_i. All on the device once per prepare. */
static size_t coef_row(const dynb__block *b, int k, int row) {
  int s = b->tab.stages;
  return ((size_t)k * (size_t)(2 * s + 2) + (size_t)row) * (size_t)(s + 1);
}

static dynb_status rk_check(const dynb__layer *l, const dynb__tableau *t, char *err,
                            size_t errlen) {
  (void)l;
  if (t->stages < 1 || t->stages > DYNB_MAX_STAGES) {
    snprintf(err, errlen, "tableau has %d stages", t->stages);
    return DYNB_STATUS_SPEC_ERROR;
  }
  return DYNB_OK;
}

static bool row_is_zero(const dynb__tableau *t, int i) {
  for (int j = 0; j < i; j++)
    if (t->a[i][j] != 0) return false;
  return true;
}

static void rk_shape(dynb__block *b) {
  rk *r = impl(b);
  r->nunique = 0;
  for (int i = 0; i < b->tab.stages; i++) {
    int u = 0;
    while (u < r->nunique && r->unique_c[u] != b->tab.c[i]) u++;
    if (u == r->nunique) r->unique_c[r->nunique++] = b->tab.c[i];
    r->stage_slot[i] = u;
  }
  r->ninputs = 0;
  for (int i = 0; i < b->tab.stages; i++)
    r->input_index[i] = row_is_zero(&b->tab, i) ? -1 : r->ninputs++;
  r->store = b->mode == DYNB_MEMORY_STORE;
}

/* Keep: coefficients, θ, the states and, in store mode, every stage's
 * input and cache. Scratch: the adjoints, g_i, which share rows since a
 * step's g_i are dead once its adjoint begins (a checkpoint recomputation
 * writes g_i only into rows that adjoint has yet to write, and the
 * combinations skip zero coefficients), and, in checkpoint mode, the one
 * step's stage inputs and caches. Each state, stage input, stage cache and
 * θ is placed whole, so a device whose largest allocation holds the
 * biggest of these (adj: s + 1 states) runs the block however many steps
 * it keeps. */
static void rk_carve(dynb__block *b, dynb__arena_cursor *k, dynb__arena_cursor *t) {
  rk *r = impl(b);
  size_t s = (size_t)b->tab.stages, K = (size_t)b->nsteps;
  size_t kept = r->store ? K : 1;
  dynb__arena_cursor *evals = r->store ? k : t;
  r->coef = dynb__arena_flat(k, coef_row(b, b->nsteps, 0), "block coefficients");
  r->theta = dynb__arena_run(k, K * (size_t)r->nunique, b->P, "block parameters at a stage time");
  r->states = dynb__arena_run(k, K - 1, b->nchw, "block state");
  r->inputs = dynb__arena_run(evals, kept * (size_t)r->ninputs, b->nchw, "block stage input");
  r->caches = dynb__arena_run(evals, kept * s, b->cache_elems, "block stage cache");
  r->adj = dynb__arena_flat(t, (s + 1) * b->nchw, "block adjoints (stages + 1 states)");
  r->gstage = r->adj;
  r->gbar = dynb__arena_flat(t, b->nchw, "block stage gradient");
  r->dtheta = dynb__arena_flat(t, (size_t)r->nunique * b->P, "block parameter gradients");
}

static dynb_status rk_upload(dynb__block *b) {
  int s = b->tab.stages;
  size_t n = coef_row(b, b->nsteps, 0);
  double *c = dynb__calloc(b->ctx, n, sizeof *c);
  DYNB_CHECK(b->ctx, c, DYNB_STATUS_OUT_OF_HOST_MEMORY, "block: no memory");
  double sign = dynb__layer_sign(&b->layer);
  for (int k = 0; k < b->nsteps; k++) {
    double sh = sign * (b->t_states[k + 1] - b->t_states[k]);
    for (int i = 0; i < s; i++) {
      for (int j = 0; j < i; j++) c[coef_row(b, k, i) + j] = sh * b->tab.a[i][j];
      c[coef_row(b, k, s) + i] = sh * b->tab.b[i];
      double *back = &c[coef_row(b, k, s + 1 + i)];
      for (int l = i + 1; l < s; l++) back[l] = sh * b->tab.a[l][i];
      back[s] = sh * b->tab.b[i];
      c[coef_row(b, k, 2 * s + 1) + i] = 1.0;
    }
  }
  dynb_status st = dynb__tensor_write_f64(b->ctx, &impl(b)->coef, c);
  dynb__free(b->ctx, c);
  return st;
}

/* ---- views ------------------------------------------------------------------------ */

static dynb__tensor coef_view(const dynb__block *b, int k, int row, int len) {
  int64_t d = len;
  return dynb__tensor_sub(&impl(b)->coef, coef_row(b, k, row), 1, &d);
}

static dynb__tensor theta_slot(const dynb__block *b, size_t slot) {
  int64_t p = (int64_t)b->P;
  return dynb__run_at(&impl(b)->theta, slot, 1, &p);
}

static dynb__tensor stages_view(const dynb__block *b, const dynb__tensor *base, int count) {
  int64_t d[2] = {count, (int64_t)b->nchw};
  return dynb__tensor_sub(base, 0, 2, d);
}

static dynb__tensor theta_at(const dynb__block *b, const dynb__tensor *base, size_t slot) {
  int64_t p = (int64_t)b->P;
  return dynb__tensor_sub(base, slot * b->P, 1, &p);
}

/* y_k: the caller's x for k = 0, else the stored state. */
static dynb__tensor state_at(const dynb__block *b, const dynb__tensor *x, int k) {
  return k == 0 ? *x : dynb__run_at(&impl(b)->states, (size_t)k - 1, 4, b->dims);
}

/* Where stage i of step k keeps its cache: per step in store mode, one
 * shared set otherwise. */
static size_t eval_slot(const dynb__block *b, int k, int i) {
  return (impl(b)->store ? (size_t)k : 0) * (size_t)b->tab.stages + (size_t)i;
}

/* The stage input Y_i: y_k itself when row i of A is zero (always for i = 0). */
static dynb__tensor stage_input(const dynb__block *b, const dynb__tensor *x, int k, int i) {
  rk *r = impl(b);
  if (r->input_index[i] < 0) return state_at(b, x, k);
  size_t step = r->store ? (size_t)k : 0;
  return dynb__run_at(&r->inputs, step * (size_t)r->ninputs + (size_t)r->input_index[i], 4,
                      b->dims);
}

static dynb__tensor cache_at(const dynb__block *b, int k, int i) {
  int64_t n = (int64_t)b->cache_elems;
  return dynb__run_at(&impl(b)->caches, eval_slot(b, k, i), 1, &n);
}

static double stage_time(const dynb__block *b, int k, double c) {
  return b->t_states[k] + c * (b->t_states[k + 1] - b->t_states[k]);
}

/* ---- forward ------------------------------------------------------------------------ */

/* θ at the step's distinct stage times: one interpolation per time, shared
 * by every stage (and, in checkpoint mode, by the recomputation). */
static dynb_status interpolate_step(dynb__block *b, int k) {
  rk *r = impl(b);
  for (int u = 0; u < r->nunique; u++) {
    dynb__tensor th = theta_slot(b, (size_t)k * (size_t)r->nunique + (size_t)u);
    DYNB_TRY(dynb__block_theta(b, stage_time(b, k, r->unique_c[u]), &th));
  }
  return DYNB_OK;
}

/* Computes the stages of step k into gstage and the per-stage cache. With
 * update_running false, batch statistics leave the running ones alone (a
 * checkpoint recomputation must not count a batch twice). */
static dynb_status step_stages(dynb__block *b, const dynb__tensor *x, int k, bool train,
                               bool update_running) {
  rk *r = impl(b);
  int s = b->tab.stages;
  dynb__tensor y = state_at(b, x, k);
  for (int i = 0; i < s; i++) {
    dynb__tensor in = stage_input(b, x, k, i);
    if (r->input_index[i] >= 0) {
      dynb__tensor g = stages_view(b, &r->gstage, s), c = coef_view(b, k, i, s);
      DYNB_TRY(dynb__rk_combine(b->ctx, &y, &g, &c, &in));
    }
    dynb__tensor th = theta_slot(b, (size_t)k * (size_t)r->nunique + (size_t)r->stage_slot[i]);
    dynb__tensor cache = cache_at(b, k, i), run = dynb__block_running_at(b, k, i);
    dynb__layer_eval e = {&th, &in, &cache, NULL, train};
    if (b->running.mem && (!train || update_running)) e.running = &run;
    dynb__tensor out = dynb__block_nchw_at(b, &r->gstage, (size_t)i);
    DYNB_TRY(dynb__layer_forward(b->ctx, &b->layer, &e, &out, &b->work));
  }
  return DYNB_OK;
}

static dynb_status rk_forward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                              bool train) {
  int s = b->tab.stages;
  for (int k = 0; k < b->nsteps; k++) {
    DYNB_TRY(interpolate_step(b, k));
    DYNB_TRY(step_stages(b, x, k, train, true));
    dynb__tensor y = state_at(b, x, k), g = stages_view(b, &impl(b)->gstage, s);
    dynb__tensor c = coef_view(b, k, s, s);
    dynb__tensor next = k + 1 == b->nsteps ? *out : state_at(b, x, k + 1);
    DYNB_TRY(dynb__rk_combine(b->ctx, &y, &g, &c, &next));
  }
  return DYNB_OK;
}

/* ---- backward ------------------------------------------------------------------------ */

static dynb_status accumulate_controls(dynb__block *b, int k) {
  rk *r = impl(b);
  for (int u = 0; u < r->nunique; u++) {
    dynb__tensor dth = theta_at(b, &r->dtheta, (size_t)u);
    DYNB_TRY(dynb__block_theta_backward(b, stage_time(b, k, r->unique_c[u]), &dth));
  }
  return DYNB_OK;
}

/* The adjoint of step k: from ȳ in adj[s] to ∂L/∂y_k in `target`. */
static dynb_status step_backward(dynb__block *b, const dynb__tensor *x, int k,
                                 const dynb__tensor *target) {
  rk *r = impl(b);
  int s = b->tab.stages;
  if (!r->store) DYNB_TRY(step_stages(b, x, k, b->train_last, false));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &r->dtheta));
  dynb__tensor adj = stages_view(b, &r->adj, s + 1), gbar = dynb__block_nchw_at(b, &r->gbar, 0);
  for (int i = s - 1; i >= 0; i--) {
    dynb__tensor c = coef_view(b, k, s + 1 + i, s + 1);
    DYNB_TRY(dynb__rk_combine(b->ctx, NULL, &adj, &c, &gbar));
    dynb__tensor in = stage_input(b, x, k, i), cache = cache_at(b, k, i);
    dynb__tensor th = theta_slot(b, (size_t)k * (size_t)r->nunique + (size_t)r->stage_slot[i]);
    dynb__tensor run = dynb__block_running_at(b, k, i);
    dynb__layer_eval e = {&th, &in, &cache, NULL, b->train_last};
    if (b->running.mem && !b->train_last) e.running = &run;
    dynb__tensor dth = theta_at(b, &r->dtheta, (size_t)r->stage_slot[i]);
    dynb__tensor dyi = dynb__block_nchw_at(b, &r->adj, (size_t)i);
    DYNB_TRY(dynb__layer_backward(b->ctx, &b->layer, &e, &gbar, &dyi, false, &dth, &b->work));
  }
  DYNB_TRY(accumulate_controls(b, k));
  dynb__tensor ybar = dynb__block_nchw_at(b, &r->adj, (size_t)s);
  dynb__tensor ones = coef_view(b, k, 2 * s + 1, s + 1);
  return dynb__rk_combine(b->ctx, &ybar, &adj, &ones, target);
}

static dynb_status rk_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                               const dynb__tensor *dx) {
  dynb__tensor ybar = dynb__block_nchw_at(b, &impl(b)->adj, (size_t)b->tab.stages);
  DYNB_TRY(dynb__tensor_copy(b->ctx, dout, &ybar));
  for (int k = b->nsteps - 1; k >= 0; k--) DYNB_TRY(step_backward(b, x, k, k == 0 ? dx : &ybar));
  return DYNB_OK;
}

/* Backward: every layer_backward and, when not storing, step_stages again. */
static void rk_evals(const dynb__block *b, double *forward, double *backward,
                     double *recomputed) {
  *forward = *backward = (double)b->nsteps * (double)b->tab.stages;
  *recomputed = impl(b)->store ? 0 : *forward;
}

const dynb__integrator dynb__integrator_rk = {
    .name = "explicit Runge-Kutta",
    .impl_size = sizeof(rk),
    .check = rk_check,
    .shape = rk_shape,
    .carve = rk_carve,
    .upload = rk_upload,
    .forward = rk_forward,
    .backward = rk_backward,
    .evals = rk_evals,
    .reconstruction_error = NULL,
};
