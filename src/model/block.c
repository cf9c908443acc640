/* Dynamic blocks: the layer, the time grids, the control parameters
 * interpolated in time, the running statistics and the buffers of one
 * batch shape. How the states advance and how the gradient flows back is
 * the block's integrator's (integrator.h): this file checks arguments,
 * lays the arenas out and dispatches. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/integrator.h"

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
  const dynb__integrator *integ = dynb__integrator_for(&desc->tableau);
  if (st == DYNB_OK) st = integ->check(&desc->layer, &desc->tableau, err, errlen);
  if (st != DYNB_OK) return dynb__fail(ctx, st, "%s", err);
  DYNB_TRY(dynb__check_real(ctx, real));
  dynb__block *b = dynb__calloc(ctx, 1, sizeof *b);
  DYNB_CHECK(ctx, b, DYNB_STATUS_OUT_OF_HOST_MEMORY, "block: no memory");
  b->ctx = ctx;
  b->integ = integ;
  b->impl = dynb__calloc(ctx, 1, integ->impl_size);
  if (!b->impl) {
    dynb__free(ctx, b);
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "block: no memory");
  }
  b->layer = desc->layer;
  b->tab = desc->tableau;
  b->real = real;
  b->nsteps = desc->nstates - 1;
  b->ncontrols = desc->ncontrols;
  dynb__layer_params(&b->layer, NULL, &b->P);
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
  dynb__free(b->ctx, b->impl);
  dynb__free(b->ctx, b);
}

const dynb__tensor *dynb__block_controls(const dynb__block *b) { return &b->controls; }
const dynb__tensor *dynb__block_grads(const dynb__block *b) { return &b->grads; }
const dynb__tensor *dynb__block_running(const dynb__block *b) { return &b->running; }
size_t dynb__block_param_count(const dynb__block *b) { return b->P; }
size_t dynb__block_buffer_bytes(const dynb__block *b) { return b->bytes; }

void dynb__block_conv_flops(const dynb__block *b, double *forward, double *backward) {
  double fwd, bwd, rec;
  b->integ->evals(b, &fwd, &bwd, &rec);
  double f = dynb__layer_conv_flops(&b->layer, b->dims[0], b->dims[2], b->dims[3]);
  *forward = fwd * f;
  /* A layer backward costs the data and weight gradients of both
   * convolutions; recomputed evaluations cost a forward each. */
  *backward = 2 * bwd * f + rec * f;
}

/* ---- prepare -------------------------------------------------------------------- */

/* Lays the buffers out over two arenas, by lifetime: `keep` holds what
 * lives from a forward to its backward, `scratch` what one forward or
 * backward call uses and drops (what each holds is the integrator's,
 * then the layer's work). A plan lends every block the same scratch. In
 * arenas not yet allocated it only sizes them. */
static void carve(dynb__block *b, dynb__arena *keep, dynb__arena *scratch) {
  dynb__arena_cursor k = dynb__arena_begin(keep), t = dynb__arena_begin(scratch);
  b->integ->carve(b, &k, &t);
  b->work = dynb__arena_flat(&t, b->work_elems, "block layer work");
}

/* Sets the shape and mode and the sizes derived from them; chooses the
 * layer's convolution routes, which fix the work it needs. */
static dynb_status shape(dynb__block *b, int64_t n, int64_t h, int64_t w, dynb_memory_mode mode) {
  dynb_ctx *ctx = b->ctx;
  DYNB_CHECK(ctx, n >= 1 && h >= 1 && w >= 1, DYNB_STATUS_INVALID_ARGUMENT,
             "block: batch shape must be positive");
  DYNB_CHECK(ctx, mode == DYNB_MEMORY_STORE || mode == DYNB_MEMORY_CHECKPOINT ||
                      mode == DYNB_MEMORY_RECONSTRUCT,
             DYNB_STATUS_INVALID_ARGUMENT, "block: unknown memory mode");
  int64_t c = b->layer.channels;
  DYNB_CHECK(ctx, (double)n * c * h * w < 2147483647.0, DYNB_STATUS_SIZE_OVERFLOW,
             "block: batch of %lld x %lld x %lld x %lld exceeds 2^31 elements", (long long)n,
             (long long)c, (long long)h, (long long)w);
  b->mode = mode;
  b->dims[0] = n, b->dims[1] = c, b->dims[2] = h, b->dims[3] = w;
  b->nchw = (size_t)(n * c * h * w);
  b->cache_elems = (dynb__layer_cache_size(&b->layer, n, h, w) + 31) / 32 * 32;
  b->integ->shape(b);
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
    if (st == DYNB_OK) st = b->integ->upload(b);
  }
  if (st != DYNB_OK) {
    release_buffers(b);
    return st;
  }
  b->prepared = true;
  return DYNB_OK;
}

/* ---- helpers for the integrators ----------------------------------------------- */

dynb__tensor dynb__block_nchw_at(const dynb__block *b, const dynb__tensor *base, size_t index) {
  return dynb__tensor_sub(base, index * b->nchw, 4, b->dims);
}

dynb__tensor dynb__block_running_at(const dynb__block *b, int k, int i) {
  if (!b->running.mem) return b->running;
  int64_t n = (int64_t)running_per_eval(b);
  return dynb__tensor_sub(&b->running, ((size_t)k * (size_t)b->tab.stages + (size_t)i) * (size_t)n,
                          1, &n);
}

dynb_status dynb__block_theta(dynb__block *b, double t, const dynb__tensor *out) {
  int j0;
  double w;
  dynb__interp_weights(b->t_controls, b->ncontrols, t, &j0, &w);
  return dynb__interp_forward(b->ctx, &b->controls, j0, w, out);
}

dynb_status dynb__block_theta_backward(dynb__block *b, double t, const dynb__tensor *dtheta) {
  int j0;
  double w;
  dynb__interp_weights(b->t_controls, b->ncontrols, t, &j0, &w);
  return dynb__interp_backward(b->ctx, dtheta, j0, w, &b->grads);
}

static double stage_time(const dynb__block *b, int k, double c) {
  return b->t_states[k] + c * (b->t_states[k + 1] - b->t_states[k]);
}

/* ---- forward and backward ---------------------------------------------------------- */

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
  b->forward_done = false;
  DYNB_TRY(b->integ->forward(b, x, out, train));
  b->train_last = train;
  b->forward_done = true;
  return DYNB_OK;
}

dynb_status dynb__block_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                                 const dynb__tensor *dx) {
  DYNB_TRY(check_io(b, x, "block: x", dout, "block: dout"));
  DYNB_TRY(check_io(b, x, "block: x", dx, "block: dx"));
  DYNB_CHECK(b->ctx, b->forward_done, DYNB_STATUS_MISUSE,
             "block: backward needs a forward since the last prepare");
  return b->integ->backward(b, x, dout, dx);
}

dynb_status dynb__block_reconstruction_error(dynb__block *b, const dynb__tensor *x, double *err) {
  DYNB_CHECK(b->ctx, err, DYNB_STATUS_INVALID_ARGUMENT, "block: NULL err");
  *err = 0;
  if (!b->prepared || !b->integ->reconstruction_error) return DYNB_OK;
  DYNB_TRY(dynb__tensor_check(b->ctx, x, "block: x", b->real, 4));
  return b->integ->reconstruction_error(b, x, err);
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
    int64_t p = (int64_t)nb->P;
    dynb__tensor row = dynb__tensor_sub(&nb->controls, (size_t)j * nb->P, 1, &p);
    DYNB_TRY(dynb__interp_forward(b->ctx, &b->controls, j0, w, &row));
  }
  for (int k = 0; nb->running.mem && k < nb->nsteps; k++)
    for (int i = 0; i < nb->tab.stages; i++) {
      int ok = 0, oi = 0;
      nearest_eval(b, stage_time(nb, k, nb->tab.c[i]), i, &ok, &oi);
      dynb__tensor src = dynb__block_running_at(b, ok, oi), dst = dynb__block_running_at(nb, k, i);
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
