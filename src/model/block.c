/* Dynamic blocks: an explicit Runge–Kutta integrator over a layer function,
 * with parameters interpolated from control points, and the exact gradient
 * of that discrete computation (discretise, then optimise).
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
 * combination whatever the tableau. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

struct dynb__block {
  dynb_ctx *ctx;
  dynb__layer layer;
  dynb__tableau tab;
  dynb_dtype real;
  int nsteps, ncontrols;
  double *t_states, *t_controls;
  size_t P;
  dynb__tensor controls, grads, running; /* running.mem NULL without batch norm */
  /* Stage times that coincide (rk4's two c = 1/2) share one θ: unique[u]
   * holds the distinct c values, stage_slot[i] the slot of stage i. */
  int nunique, stage_slot[DYNB_MAX_STAGES];
  double unique_c[DYNB_MAX_STAGES];
  /* Prepared buffers. */
  bool prepared;
  bool train_last; /* the mode of the last forward, which backward repeats */
  bool forward_done; /* a forward completed since prepare: backward has its caches */
  dynb_memory_mode mode;
  int64_t dims[4];
  size_t nchw, cache_elems, work_elems, bytes;
  /* Stages with a nonzero row of A keep their input Y_i (the others take
   * y_k itself): input_index[i] numbers them, ninputs counts them. */
  int ninputs, input_index[DYNB_MAX_STAGES];
  /* Views of two arenas (see carve): own_keep and own_scratch hold them
   * unless the caller lent the arenas. The runs are of items that each
   * fit one allocation, though all of them together may not. */
  dynb__arena own_keep, own_scratch;
  dynb__tensor coef;   /* keep: [K][2s+2][s+1] rows, see coef_row() */
  dynb__run theta;     /* keep: [K][nunique] items of P */
  dynb__run states;    /* keep: K-1 items of NCHW: y_k for k >= 1 (y_0 is the caller's x) */
  dynb__run inputs;    /* keep (store mode) or scratch: [K or 1][ninputs] items of NCHW */
  dynb__run caches;    /* keep (store mode) or scratch: [K or 1][s] items of cache */
  dynb__tensor adj;    /* scratch: [s+1][NCHW]: Ȳ_0..Ȳ_{s-1}, then ȳ */
  dynb__tensor gstage; /* adj's first s rows: g_i of the step being computed */
  dynb__tensor gbar;   /* scratch: [NCHW]: ḡ_i */
  dynb__tensor dtheta; /* scratch: [nunique][P] */
  dynb__tensor work;   /* scratch: the layer's */
};

/* Coefficient rows of step k, each s+1 long (index s weighs ȳ):
 * row i < s: forward Y_i; row s: forward y_{k+1}; row s+1+i: backward ḡ_i;
 * row 2s+1: ones, for ∂L/∂y_k = ȳ + Σ Ȳ_i. All on the device once per prepare. */
static size_t coef_row(const dynb__block *b, int k, int row) {
  int s = b->tab.stages;
  return ((size_t)k * (size_t)(2 * s + 2) + (size_t)row) * (size_t)(s + 1);
}

/* ---- description -------------------------------------------------------------- */

static dynb_status check_grid(const char *what, int n, int min, const double *t, char *err,
                              size_t errlen) {
  if (n < min || n > DYNB_MAX_TIME_POINTS || !t) {
    if (!t)
      snprintf(err, errlen, "%s is NULL", what);
    else
      snprintf(err, errlen, "%s needs %d..%d points, got %d", what, min, DYNB_MAX_TIME_POINTS, n);
    return DYNB_STATUS_SPEC_ERROR;
  }
  for (int i = 0; i < n; i++) {
    if (!isfinite(t[i])) {
      snprintf(err, errlen, "%s[%d] is not finite", what, i);
      return DYNB_STATUS_SPEC_ERROR;
    }
    if (i > 0 && !(t[i] > t[i - 1])) {
      snprintf(err, errlen, "%s must be strictly increasing: %s[%d] = %g after %g", what, what, i,
               t[i], t[i - 1]);
      return DYNB_STATUS_SPEC_ERROR;
    }
  }
  return DYNB_OK;
}

static dynb_status copy_grid(dynb__block *b, double **dst, const double *src, int n) {
  double *t = dynb__alloc(b->ctx, (size_t)n * sizeof *t);
  if (!t) return dynb__fail(b->ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "block: no memory for grid");
  memcpy(t, src, (size_t)n * sizeof *t);
  dynb__free(b->ctx, *dst);
  *dst = t;
  return DYNB_OK;
}

static void find_unique_stage_times(dynb__block *b) {
  b->nunique = 0;
  for (int i = 0; i < b->tab.stages; i++) {
    int u = 0;
    while (u < b->nunique && b->unique_c[u] != b->tab.c[i]) u++;
    if (u == b->nunique) b->unique_c[b->nunique++] = b->tab.c[i];
    b->stage_slot[i] = u;
  }
}

static size_t running_per_eval(const dynb__block *b) {
  return (size_t)dynb__layer_batch_norms(&b->layer) * 2 * (size_t)b->layer.channels;
}

/* Running statistics start as PyTorch's: mean 0, variance 1. */
static dynb_status running_reset(dynb__block *b) {
  if (!b->running.mem) return DYNB_OK;
  size_t n = dynb__tensor_numel(&b->running), per = running_per_eval(b), c = b->layer.channels;
  double *host = dynb__alloc(b->ctx, n * sizeof *host);
  if (!host) return dynb__fail(b->ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "block: no memory");
  for (size_t i = 0; i < n; i++) host[i] = ((i % per) / c) % 2 == 1 ? 1.0 : 0.0;
  dynb_status st = dynb__tensor_write_f64(b->ctx, &b->running, host);
  dynb__free(b->ctx, host);
  return st;
}

static dynb_status alloc_params(dynb__block *b) {
  int64_t pd[2] = {b->ncontrols, (int64_t)b->P};
  DYNB_TRY(dynb__tensor_alloc(b->ctx, b->real, 2, pd, &b->controls));
  DYNB_TRY(dynb__tensor_alloc(b->ctx, b->real, 2, pd, &b->grads));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &b->controls));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &b->grads));
  size_t per = running_per_eval(b);
  if (per) {
    int64_t rd[3] = {b->nsteps, b->tab.stages, (int64_t)per};
    DYNB_TRY(dynb__tensor_alloc(b->ctx, b->real, 3, rd, &b->running));
    DYNB_TRY(running_reset(b));
  }
  return DYNB_OK;
}

dynb_status dynb__block_create(dynb_ctx *ctx, const dynb__block_desc *desc, dynb_dtype real,
                               dynb__block **out, char *err, size_t errlen) {
  *out = NULL;
  DYNB_CHECK(ctx, desc, DYNB_STATUS_INVALID_ARGUMENT, "block: NULL description");
  dynb_status st = dynb__layer_validate(&desc->layer, err, errlen);
  if (st == DYNB_OK) st = check_grid("t_states", desc->nstates, 2, desc->t_states, err, errlen);
  if (st == DYNB_OK)
    st = check_grid("t_controls", desc->ncontrols, 1, desc->t_controls, err, errlen);
  if (st == DYNB_OK && (desc->tableau.stages < 1 || desc->tableau.stages > DYNB_MAX_STAGES)) {
    snprintf(err, errlen, "tableau has %d stages", desc->tableau.stages);
    st = DYNB_STATUS_SPEC_ERROR;
  }
  if (st != DYNB_OK) return dynb__fail(ctx, st, "%s", err);
  DYNB_TRY(dynb__check_real(ctx, real));
  dynb__block *b = dynb__calloc(ctx, 1, sizeof *b);
  DYNB_CHECK(ctx, b, DYNB_STATUS_OUT_OF_HOST_MEMORY, "block: no memory");
  b->ctx = ctx;
  b->layer = desc->layer;
  b->tab = desc->tableau;
  b->real = real;
  b->nsteps = desc->nstates - 1;
  b->ncontrols = desc->ncontrols;
  dynb__layer_params(&b->layer, NULL, &b->P);
  find_unique_stage_times(b);
  st = copy_grid(b, &b->t_states, desc->t_states, desc->nstates);
  if (st == DYNB_OK) st = copy_grid(b, &b->t_controls, desc->t_controls, desc->ncontrols);
  if (st == DYNB_OK) st = alloc_params(b);
  if (st != DYNB_OK) {
    dynb__block_free(b);
    return st;
  }
  *out = b;
  return DYNB_OK;
}

static void release_buffers(dynb__block *b) {
  dynb__arena_release(&b->own_keep);
  dynb__arena_release(&b->own_scratch);
  b->prepared = false;
  b->forward_done = false;
  b->bytes = 0;
}

void dynb__block_free(dynb__block *b) {
  if (!b) return;
  release_buffers(b);
  dynb__tensor_release(&b->controls);
  dynb__tensor_release(&b->grads);
  dynb__tensor_release(&b->running);
  dynb__free(b->ctx, b->t_states);
  dynb__free(b->ctx, b->t_controls);
  dynb__free(b->ctx, b);
}

const dynb__tensor *dynb__block_controls(const dynb__block *b) { return &b->controls; }
const dynb__tensor *dynb__block_grads(const dynb__block *b) { return &b->grads; }
const dynb__tensor *dynb__block_running(const dynb__block *b) { return &b->running; }
size_t dynb__block_param_count(const dynb__block *b) { return b->P; }
size_t dynb__block_buffer_bytes(const dynb__block *b) { return b->bytes; }

void dynb__block_conv_flops(const dynb__block *b, double *forward, double *backward) {
  double evals = (double)b->nsteps * (double)b->tab.stages;
  double f = evals * dynb__layer_conv_flops(&b->layer, b->dims[0], b->dims[2], b->dims[3]);
  *forward = f;
  /* step_backward: every layer_backward (data and weight gradients of both
   * convolutions), after step_stages again in checkpoint mode. */
  *backward = 2 * f + (b->mode == DYNB_MEMORY_CHECKPOINT ? f : 0);
}

/* ---- prepare -------------------------------------------------------------------- */

/* Lays the buffers out over two arenas, by lifetime: `keep` holds what
 * lives from a forward to its backward (coefficients, θ, the states and, in
 * store mode, every stage's input and cache); `scratch` what one forward or
 * backward call uses and drops (the adjoints, g_i, which share rows since a
 * step's g_i are dead once its adjoint begins (a checkpoint recomputation
 * writes g_i only into rows that adjoint has yet to write, and the
 * combinations skip zero coefficients), and, in checkpoint mode, the one
 * step's stage inputs and caches). A plan lends every block the same
 * scratch. In arenas not yet allocated it only sizes them. Each state,
 * stage input, stage cache and θ is placed whole, so a device whose
 * largest allocation holds the biggest of these (adj: s + 1 states, the
 * layer's work: two states and its convolutions') runs the block however
 * many steps it keeps. */
static void carve(dynb__block *b, dynb__arena *keep, dynb__arena *scratch) {
  size_t s = (size_t)b->tab.stages, K = (size_t)b->nsteps;
  size_t kept = b->mode == DYNB_MEMORY_STORE ? K : 1;
  dynb__arena_cursor k = dynb__arena_begin(keep), t = dynb__arena_begin(scratch);
  dynb__arena_cursor *evals = b->mode == DYNB_MEMORY_STORE ? &k : &t;
  b->coef = dynb__arena_flat(&k, coef_row(b, b->nsteps, 0), "block coefficients");
  b->theta = dynb__arena_run(&k, K * (size_t)b->nunique, b->P, "block parameters at a stage time");
  b->states = dynb__arena_run(&k, K - 1, b->nchw, "block state");
  b->inputs = dynb__arena_run(evals, kept * (size_t)b->ninputs, b->nchw, "block stage input");
  b->caches = dynb__arena_run(evals, kept * s, b->cache_elems, "block stage cache");
  b->adj = dynb__arena_flat(&t, (s + 1) * b->nchw, "block adjoints (stages + 1 states)");
  b->gstage = b->adj;
  b->gbar = dynb__arena_flat(&t, b->nchw, "block stage gradient");
  b->dtheta = dynb__arena_flat(&t, (size_t)b->nunique * b->P, "block parameter gradients");
  b->work = dynb__arena_flat(&t, b->work_elems, "block layer work");
}

static bool row_is_zero(const dynb__tableau *t, int i) {
  for (int j = 0; j < i; j++)
    if (t->a[i][j] != 0) return false;
  return true;
}

/* Sets the shape and mode and the sizes derived from them; chooses the
 * layer's convolution routes, which fix the work it needs. */
static dynb_status shape(dynb__block *b, int64_t n, int64_t h, int64_t w, dynb_memory_mode mode) {
  dynb_ctx *ctx = b->ctx;
  DYNB_CHECK(ctx, n >= 1 && h >= 1 && w >= 1, DYNB_STATUS_INVALID_ARGUMENT,
             "block: batch shape must be positive");
  DYNB_CHECK(ctx, mode == DYNB_MEMORY_STORE || mode == DYNB_MEMORY_CHECKPOINT,
             DYNB_STATUS_INVALID_ARGUMENT, "block: unknown memory mode");
  int64_t c = b->layer.channels;
  DYNB_CHECK(ctx, (double)n * c * h * w < 2147483647.0, DYNB_STATUS_SIZE_OVERFLOW,
             "block: batch of %lld x %lld x %lld x %lld exceeds 2^31 elements", (long long)n,
             (long long)c, (long long)h, (long long)w);
  b->mode = mode;
  b->dims[0] = n, b->dims[1] = c, b->dims[2] = h, b->dims[3] = w;
  b->nchw = (size_t)(n * c * h * w);
  b->cache_elems = (dynb__layer_cache_size(&b->layer, n, h, w) + 31) / 32 * 32;
  b->ninputs = 0;
  for (int i = 0; i < b->tab.stages; i++)
    b->input_index[i] = row_is_zero(&b->tab, i) ? -1 : b->ninputs++;
  return dynb__layer_prepare(ctx, &b->layer, b->real, n, h, w, &b->work_elems);
}

dynb_status dynb__block_sizes(dynb__block *b, int64_t n, int64_t h, int64_t w,
                              dynb_memory_mode mode, dynb__arena *keep, dynb__arena *scratch) {
  DYNB_CHECK(b->ctx, keep && scratch && !keep->allocated && !scratch->allocated &&
                         keep->dtype == b->real && scratch->dtype == b->real,
             DYNB_STATUS_INVALID_ARGUMENT, "block: sizing needs two arenas of %s not yet allocated",
             dynb__dtype_name(b->real));
  DYNB_TRY(shape(b, n, h, w, mode));
  carve(b, keep, scratch);
  /* The views of the prepared shape, if any, were overwritten: prepare again. */
  release_buffers(b);
  return DYNB_OK;
}

static dynb_status upload_coefficients(dynb__block *b) {
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
  dynb_status st = dynb__tensor_write_f64(b->ctx, &b->coef, c);
  dynb__free(b->ctx, c);
  return st;
}

/* Sizes and allocates the block's own two arenas. */
static dynb_status own_arenas(dynb__block *b) {
  dynb__arena_init(b->ctx, &b->own_keep, b->real);
  dynb__arena_init(b->ctx, &b->own_scratch, b->real);
  carve(b, &b->own_keep, &b->own_scratch);
  DYNB_TRY(dynb__arena_alloc(b->ctx, &b->own_keep, "block: keep arena"));
  DYNB_TRY(dynb__arena_alloc(b->ctx, &b->own_scratch, "block: scratch arena"));
  b->bytes = dynb__arena_bytes(&b->own_keep) + dynb__arena_bytes(&b->own_scratch);
  return DYNB_OK;
}

dynb_status dynb__block_prepare(dynb__block *b, int64_t n, int64_t h, int64_t w,
                                dynb_memory_mode mode, dynb__arena *keep,
                                dynb__arena *scratch) {
  dynb_ctx *ctx = b->ctx;
  DYNB_CHECK(ctx, (keep == NULL) == (scratch == NULL), DYNB_STATUS_INVALID_ARGUMENT,
             "block: lend both arenas or neither");
  DYNB_CHECK(ctx, !keep || (keep->allocated && scratch->allocated && keep->dtype == b->real &&
                            scratch->dtype == b->real),
             DYNB_STATUS_INVALID_ARGUMENT, "block: lent arenas must be allocated, of %s",
             dynb__dtype_name(b->real));
  release_buffers(b);
  DYNB_TRY(shape(b, n, h, w, mode));
  dynb_status st = DYNB_OK;
  if (!keep) {
    st = own_arenas(b);
    keep = &b->own_keep, scratch = &b->own_scratch;
  }
  if (st == DYNB_OK) {
    carve(b, keep, scratch);
    st = dynb__arena_check(ctx, keep, "block: keep arena");
    if (st == DYNB_OK) st = dynb__arena_check(ctx, scratch, "block: scratch arena");
    if (st == DYNB_OK) st = upload_coefficients(b);
  }
  if (st != DYNB_OK) {
    release_buffers(b);
    return st;
  }
  b->prepared = true;
  return DYNB_OK;
}

/* ---- views ------------------------------------------------------------------------ */

static dynb__tensor nchw_at(const dynb__block *b, const dynb__tensor *base, size_t index) {
  return dynb__tensor_sub(base, index * b->nchw, 4, b->dims);
}

static dynb__tensor coef_view(const dynb__block *b, int k, int row, int len) {
  int64_t d = len;
  return dynb__tensor_sub(&b->coef, coef_row(b, k, row), 1, &d);
}

static dynb__tensor theta_slot(const dynb__block *b, size_t slot) {
  int64_t p = (int64_t)b->P;
  return dynb__run_at(&b->theta, slot, 1, &p);
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
  return k == 0 ? *x : dynb__run_at(&b->states, (size_t)k - 1, 4, b->dims);
}

/* Where stage i of step k keeps its cache: per step in store mode, one
 * shared set in checkpoint mode. */
static size_t eval_slot(const dynb__block *b, int k, int i) {
  return (b->mode == DYNB_MEMORY_STORE ? (size_t)k : 0) * (size_t)b->tab.stages + (size_t)i;
}

/* The stage input Y_i: y_k itself when row i of A is zero (always for i = 0). */
static dynb__tensor stage_input(const dynb__block *b, const dynb__tensor *x, int k, int i) {
  if (b->input_index[i] < 0) return state_at(b, x, k);
  size_t step = b->mode == DYNB_MEMORY_STORE ? (size_t)k : 0;
  return dynb__run_at(&b->inputs, step * (size_t)b->ninputs + (size_t)b->input_index[i], 4,
                      b->dims);
}

static dynb__tensor cache_at(const dynb__block *b, int k, int i) {
  int64_t n = (int64_t)b->cache_elems;
  return dynb__run_at(&b->caches, eval_slot(b, k, i), 1, &n);
}

static dynb__tensor running_at(const dynb__block *b, int k, int i) {
  int64_t n = (int64_t)running_per_eval(b);
  return dynb__tensor_sub(&b->running, ((size_t)k * (size_t)b->tab.stages + (size_t)i) * (size_t)n,
                          1, &n);
}

static double stage_time(const dynb__block *b, int k, double c) {
  return b->t_states[k] + c * (b->t_states[k + 1] - b->t_states[k]);
}

/* ---- forward ------------------------------------------------------------------------ */

/* θ at the step's distinct stage times: one interpolation per time, shared
 * by every stage (and, in checkpoint mode, by the recomputation). */
static dynb_status interpolate_step(dynb__block *b, int k) {
  for (int u = 0; u < b->nunique; u++) {
    int j0;
    double w;
    dynb__interp_weights(b->t_controls, b->ncontrols, stage_time(b, k, b->unique_c[u]), &j0, &w);
    dynb__tensor th = theta_slot(b, (size_t)k * (size_t)b->nunique + (size_t)u);
    DYNB_TRY(dynb__interp_forward(b->ctx, &b->controls, j0, w, &th));
  }
  return DYNB_OK;
}

/* Computes the stages of step k into gstage and the per-stage cache. With
 * update_running false, batch statistics leave the running ones alone (a
 * checkpoint recomputation must not count a batch twice). */
static dynb_status step_stages(dynb__block *b, const dynb__tensor *x, int k, bool train,
                               bool update_running) {
  int s = b->tab.stages;
  dynb__tensor y = state_at(b, x, k);
  for (int i = 0; i < s; i++) {
    dynb__tensor in = stage_input(b, x, k, i);
    if (b->input_index[i] >= 0) {
      dynb__tensor g = stages_view(b, &b->gstage, s), c = coef_view(b, k, i, s);
      DYNB_TRY(dynb__rk_combine(b->ctx, &y, &g, &c, &in));
    }
    dynb__tensor th = theta_slot(b, (size_t)k * (size_t)b->nunique + (size_t)b->stage_slot[i]);
    dynb__tensor cache = cache_at(b, k, i), run = b->running.mem ? running_at(b, k, i) : b->running;
    dynb__layer_eval e = {&th, &in, &cache, NULL, train};
    if (b->running.mem && (!train || update_running)) e.running = &run;
    dynb__tensor out = nchw_at(b, &b->gstage, (size_t)i);
    DYNB_TRY(dynb__layer_forward(b->ctx, &b->layer, &e, &out, &b->work));
  }
  return DYNB_OK;
}

static dynb_status check_io(dynb__block *b, const dynb__tensor *x, const char *xn,
                            const dynb__tensor *y, const char *yn) {
  dynb_ctx *ctx = b->ctx;
  DYNB_CHECK(ctx, b->prepared, DYNB_STATUS_MISUSE, "block: not prepared");
  DYNB_CHECK(ctx, x && y, DYNB_STATUS_INVALID_ARGUMENT, "block: NULL tensor");
  DYNB_TRY(dynb__tensor_check(ctx, x, xn, b->real, 4));
  DYNB_TRY(dynb__tensor_check(ctx, y, yn, b->real, 4));
  dynb__tensor want = dynb__tensor_sub(x, 0, 4, b->dims);
  DYNB_TRY(dynb__tensor_check_same(ctx, x, xn, &want, "the prepared shape"));
  DYNB_TRY(dynb__tensor_check_same(ctx, y, yn, &want, "the prepared shape"));
  DYNB_CHECK(ctx, !(x->mem == y->mem && x->offset == y->offset), DYNB_STATUS_INVALID_ARGUMENT,
             "block: %s may not alias %s", yn, xn);
  return DYNB_OK;
}

dynb_status dynb__block_forward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                                bool train) {
  DYNB_TRY(check_io(b, x, "block: x", out, "block: out"));
  int s = b->tab.stages;
  b->forward_done = false;
  for (int k = 0; k < b->nsteps; k++) {
    DYNB_TRY(interpolate_step(b, k));
    DYNB_TRY(step_stages(b, x, k, train, true));
    dynb__tensor y = state_at(b, x, k), g = stages_view(b, &b->gstage, s);
    dynb__tensor c = coef_view(b, k, s, s);
    dynb__tensor next = k + 1 == b->nsteps ? *out : state_at(b, x, k + 1);
    DYNB_TRY(dynb__rk_combine(b->ctx, &y, &g, &c, &next));
  }
  b->train_last = train;
  b->forward_done = true;
  return DYNB_OK;
}

/* ---- backward ------------------------------------------------------------------------ */

static dynb_status accumulate_controls(dynb__block *b, int k) {
  for (int u = 0; u < b->nunique; u++) {
    int j0;
    double w;
    dynb__interp_weights(b->t_controls, b->ncontrols, stage_time(b, k, b->unique_c[u]), &j0, &w);
    dynb__tensor dth = theta_at(b, &b->dtheta, (size_t)u);
    DYNB_TRY(dynb__interp_backward(b->ctx, &dth, j0, w, &b->grads));
  }
  return DYNB_OK;
}

/* The adjoint of step k: from ȳ in adj[s] to ∂L/∂y_k in `target`. */
static dynb_status step_backward(dynb__block *b, const dynb__tensor *x, int k,
                                 const dynb__tensor *target) {
  int s = b->tab.stages;
  if (b->mode == DYNB_MEMORY_CHECKPOINT) DYNB_TRY(step_stages(b, x, k, b->train_last, false));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &b->dtheta));
  dynb__tensor adj = stages_view(b, &b->adj, s + 1), gbar = nchw_at(b, &b->gbar, 0);
  for (int i = s - 1; i >= 0; i--) {
    dynb__tensor c = coef_view(b, k, s + 1 + i, s + 1);
    DYNB_TRY(dynb__rk_combine(b->ctx, NULL, &adj, &c, &gbar));
    dynb__tensor in = stage_input(b, x, k, i), cache = cache_at(b, k, i);
    dynb__tensor th = theta_slot(b, (size_t)k * (size_t)b->nunique + (size_t)b->stage_slot[i]);
    dynb__tensor run = b->running.mem ? running_at(b, k, i) : b->running;
    dynb__layer_eval e = {&th, &in, &cache, NULL, b->train_last};
    if (b->running.mem && !b->train_last) e.running = &run;
    dynb__tensor dth = theta_at(b, &b->dtheta, (size_t)b->stage_slot[i]);
    dynb__tensor dyi = nchw_at(b, &b->adj, (size_t)i);
    DYNB_TRY(dynb__layer_backward(b->ctx, &b->layer, &e, &gbar, &dyi, false, &dth, &b->work));
  }
  DYNB_TRY(accumulate_controls(b, k));
  dynb__tensor ybar = nchw_at(b, &b->adj, (size_t)s), ones = coef_view(b, k, 2 * s + 1, s + 1);
  return dynb__rk_combine(b->ctx, &ybar, &adj, &ones, target);
}

dynb_status dynb__block_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                                 const dynb__tensor *dx) {
  DYNB_TRY(check_io(b, x, "block: x", dout, "block: dout"));
  DYNB_TRY(check_io(b, x, "block: x", dx, "block: dx"));
  DYNB_CHECK(b->ctx, b->forward_done, DYNB_STATUS_MISUSE,
             "block: backward needs a forward since the last prepare");
  dynb__tensor ybar = nchw_at(b, &b->adj, (size_t)b->tab.stages);
  DYNB_TRY(dynb__tensor_copy(b->ctx, dout, &ybar));
  for (int k = b->nsteps - 1; k >= 0; k--) DYNB_TRY(step_backward(b, x, k, k == 0 ? dx : &ybar));
  return DYNB_OK;
}

/* ---- re-discretisation --------------------------------------------------------------- */

/* The old evaluation (step, stage) whose time is nearest to t, for the new
 * evaluation of stage `stage`. Times are often shared (rk4's two stages at
 * c = 1/2; a step's last stage and the next step's first), so among equally
 * near evaluations one of the same stage wins: a grid that keeps the old
 * times then maps every evaluation onto itself. */
static void nearest_eval(const dynb__block *b, double t, int stage, int *k_out, int *i_out) {
  double best = INFINITY;
  bool best_same = false;
  for (int k = 0; k < b->nsteps; k++)
    for (int i = 0; i < b->tab.stages; i++) {
      double d = fabs(stage_time(b, k, b->tab.c[i]) - t);
      if (d < best || (d == best && i == stage && !best_same))
        best = d, best_same = i == stage, *k_out = k, *i_out = i;
    }
}

static dynb_status regrid_params(dynb__block *b, dynb__block *nb) {
  for (int j = 0; j < nb->ncontrols; j++) {
    int j0;
    double w;
    dynb__interp_weights(b->t_controls, b->ncontrols, nb->t_controls[j], &j0, &w);
    dynb__tensor row = theta_at(nb, &nb->controls, (size_t)j);
    DYNB_TRY(dynb__interp_forward(b->ctx, &b->controls, j0, w, &row));
  }
  for (int k = 0; nb->running.mem && k < nb->nsteps; k++)
    for (int i = 0; i < nb->tab.stages; i++) {
      int ok = 0, oi = 0;
      nearest_eval(b, stage_time(nb, k, nb->tab.c[i]), i, &ok, &oi);
      dynb__tensor src = running_at(b, ok, oi), dst = running_at(nb, k, i);
      DYNB_TRY(dynb__tensor_copy(b->ctx, &src, &dst));
    }
  return DYNB_OK;
}

dynb_status dynb__block_rediscretise(dynb__block *b, int nstates, const double *t_states,
                                     int ncontrols, const double *t_controls, char *err,
                                     size_t errlen) {
  dynb__block_desc d = {b->layer, b->tab, nstates, t_states, ncontrols, t_controls};
  dynb__block *nb = NULL;
  DYNB_TRY(dynb__block_create(b->ctx, &d, b->real, &nb, err, errlen));
  dynb_status st = regrid_params(b, nb);
  if (st == DYNB_OK) st = dynb__finish(b->ctx);
  if (st != DYNB_OK) {
    dynb__block_free(nb);
    return st;
  }
  /* Swap the new state in; the old goes out with the shell of nb. */
  dynb__block old = *b;
  *b = *nb;
  *nb = old;
  dynb__block_free(nb);
  return DYNB_OK;
}
