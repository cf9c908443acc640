/* Optimiser steps and box clipping: several steps against the reference in
 * float and double, on views that sit inside one bigger buffer (as the
 * trainer's parameter arena does), with everything around them checked to
 * stay untouched; hyper-parameter and argument checks. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

/* Each step updates θ, v (and m) with a handful of roundings of quantities
 * of size M ≲ 5 (θ, g ∈ [-1, 1], a velocity that grows to at most S/(1-0)
 * over S = 4 steps, Adam's ratio m̂/(√v̂+eps) ≲ 3 for the data below);
 * hyper-parameters are rounded to float too. Per step that is ≲ 3 · M ·
 * 2^-24 ≈ 9e-7 in float; errors from earlier steps are carried with factors
 * ≤ 1 (momentum and betas are < 1), so S = 4 steps stay below 4e-6: 5e-6
 * absolute and relative. In double the same count gives ~7e-15: 1e-14. */
static double tol_for(dynb_dtype dt) { return dt == DYNB_F32 ? 5e-6 : 1e-14; }
#define STEPS 4

/* ---- references, checked by hand --------------------------------------- */

static void ref_hand_checked(void **state) {
  (void)state;
  /* SGD, θ = 1, grad = 0.5, v = 0.2, lr = 0.1, momentum = 0.9, wd = 0.1:
   * g = 0.5 + 0.1 = 0.6, v = 0.18 + 0.6 = 0.78, θ = 1 - 0.078 = 0.922;
   * Nesterov: θ = 1 - 0.1 (0.6 + 0.9 · 0.78) = 1 - 0.1302 = 0.8698. */
  double th = 1, g = 0.5, v = 0.2;
  ref_sgd_step(1, &th, &g, &v, 0.1, 0.9, 0.1, 0);
  assert_true(fabs(th - 0.922) < 1e-15 && fabs(v - 0.78) < 1e-15);
  th = 1, v = 0.2;
  ref_sgd_step(1, &th, &g, &v, 0.1, 0.9, 0.1, 1);
  assert_true(fabs(th - 0.8698) < 1e-15 && fabs(v - 0.78) < 1e-15);
  /* Plain SGD: θ = 1 - 0.1 (0.5 + 0.1) = 0.94, velocity not needed. */
  th = 1;
  ref_sgd_step(1, &th, &g, NULL, 0.1, 0, 0.1, 0);
  assert_true(fabs(th - 0.94) < 1e-15);
  /* PyTorch starts the velocity at g; from v = 0 the first step gives the
   * same: v = 0.9 · 0 + g = g. */
  th = 1, v = 0;
  ref_sgd_step(1, &th, &g, &v, 0.1, 0.9, 0, 0);
  assert_true(v == 0.5 && fabs(th - 0.95) < 1e-15);
  /* Adam with a constant gradient 0.5 from m = v = 0, lr 0.1, betas
   * (0.9, 0.999), eps 1e-8: step 1 gives m = 0.05, v = 0.00025, m̂ = 0.5,
   * v̂ = 0.25; step 2 gives m = 0.095, v = 0.00049975, m̂ = 0.095/0.19 = 0.5,
   * v̂ = 0.00049975/0.001999 = 0.25. Each step moves θ by
   * 0.1 · 0.5/(0.5 + 1e-8) = 0.1 (1 - 2e-8 + ...): θ = 0.9 + 2e-9, then
   * 0.8 + 4e-9. */
  double m = 0, vv = 0;
  th = 1;
  ref_adam_step(1, &th, &g, &m, &vv, 0.1, 0.9, 0.999, 1e-8, 0, 1);
  assert_true(fabs(m - 0.05) < 1e-15 && fabs(vv - 0.00025) < 1e-18);
  assert_true(fabs(th - 0.900000002) < 1e-14);
  ref_adam_step(1, &th, &g, &m, &vv, 0.1, 0.9, 0.999, 1e-8, 0, 2);
  assert_true(fabs(m - 0.095) < 1e-15 && fabs(vv - 0.00049975) < 1e-18);
  assert_true(fabs(th - 0.800000004) < 1e-14);
  /* Weight decay enters the gradient: grad 0.5 + 0.1 · θ(=1) = 0.6, so
   * m = 0.06, v = 0.00036, m̂ = 0.6, v̂ = 0.36,
   * θ = 1 - 0.1 · 0.6/(0.6 + 1e-8) = 1 - 0.06/0.60000001 = 0.9000000016666666(4). */
  m = 0, vv = 0, th = 1;
  ref_adam_step(1, &th, &g, &m, &vv, 0.1, 0.9, 0.999, 1e-8, 0.1, 1);
  assert_true(fabs(m - 0.06) < 1e-15 && fabs(th - 0.90000000166666664) < 1e-14);
  /* Clipping [-2, 0.5, 3] into [-1, 1] gives [-1, 0.5, 1]. */
  double c[3] = {-2, 0.5, 3};
  ref_clip(3, c, -1, 1);
  assert_true(c[0] == -1 && c[1] == 0.5 && c[2] == 1);
}

/* ---- one buffer holding several segments -------------------------------- */

/* `nseg` segments of n elements in one buffer, at offset first + k (n + gap);
 * host keeps the expected content of the whole buffer. */
typedef struct arena {
  dynb__tensor buf;
  dynb__tensor seg[4];
  size_t off[4], total, n;
  int nseg;
  double *host;
} arena;

static arena arena_make(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims, int nseg,
                        size_t first, size_t gap, tu_rng *r) {
  arena a;
  memset(&a, 0, sizeof a);
  a.n = 1;
  for (int i = 0; i < ndim; i++) a.n *= (size_t)dims[i];
  a.nseg = nseg;
  a.total = first + (size_t)nseg * (a.n + gap);
  a.host = tu_random(r, a.total, -1, 1);
  tu_round_to(dt, a.host, a.total);
  int64_t td = (int64_t)a.total;
  a.buf = tu_upload(ctx, dt, 1, &td, a.host);
  for (int k = 0; k < nseg; k++) {
    a.off[k] = first + (size_t)k * (a.n + gap);
    a.seg[k] = dynb__tensor_view(a.buf.mem, a.off[k], dt, ndim, dims);
  }
  return a;
}

/* Writes host values into segment k on both sides. */
static void arena_set(dynb_ctx *ctx, arena *a, int k, const double *x) {
  memcpy(a->host + a->off[k], x, a->n * sizeof *x);
  tu_write(ctx, &a->seg[k], x);
}

/* Segments in `checked` are compared within tolerance; every other element
 * of the buffer must be exactly as the host expects (untouched). */
static void arena_compare(dynb_ctx *ctx, const arena *a, unsigned checked, const char *what,
                          double tol) {
  double *got = malloc(a->total * sizeof *got);
  tu_download(ctx, &a->buf, got);
  char name[160];
  for (int k = 0; k < a->nseg; k++)
    if (checked & (1u << k)) {
      snprintf(name, sizeof name, "%s seg%d", what, k);
      tu_assert_close(name, got + a->off[k], a->host + a->off[k], a->n, tol, tol);
    }
  for (size_t i = 0; i < a->total; i++) {
    bool in_checked = false;
    for (int k = 0; k < a->nseg; k++)
      if ((checked & (1u << k)) && i >= a->off[k] && i < a->off[k] + a->n) in_checked = true;
    if (!in_checked && got[i] != a->host[i])
      fail_msg("%s: element %zu outside the updated views changed (%.17g, was %.17g)", what, i,
               got[i], a->host[i]);
  }
  free(got);
}

/* ---- SGD ----------------------------------------------------------------- */

enum { P_SEG = 0, G_SEG = 1, V_SEG = 2, M_SEG = 3 };

static void sgd_case(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims,
                     dynb__sgd_hyper h, bool pass_velocity, size_t first) {
  tu_rng r = tu_rng_seed(first * 7 + (size_t)(h.momentum * 10) + (size_t)h.nesterov);
  arena a = arena_make(ctx, dt, ndim, dims, 3, first, 5, &r);
  double *g = malloc(a.n * sizeof *g);
  for (int s = 0; s < STEPS; s++) {
    tu_fill(&r, g, a.n, -1, 1);
    tu_round_to(dt, g, a.n);
    arena_set(ctx, &a, G_SEG, g);
    TU_OK(ctx, dynb__sgd_step(ctx, &a.seg[P_SEG], &a.seg[G_SEG],
                              pass_velocity ? &a.seg[V_SEG] : NULL, &h));
    ref_sgd_step(a.n, a.host + a.off[P_SEG], g, a.host + a.off[V_SEG], h.lr, h.momentum,
                 h.weight_decay, h.nesterov);
  }
  char what[128];
  snprintf(what, sizeof what, "sgd %s n=%zu off=%zu m=%g wd=%g%s", dynb__dtype_name(dt), a.n,
           first, h.momentum, h.weight_decay, h.nesterov ? " nesterov" : "");
  /* With momentum 0 the velocity segment, even when passed, stays as it was. */
  unsigned checked = (1u << P_SEG) | (h.momentum != 0 ? 1u << V_SEG : 0);
  arena_compare(ctx, &a, checked, what, tol_for(dt));
  dynb__tensor_release(&a.buf);
  free(a.host), free(g);
}

static void sgd_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  const int64_t one[1] = {1}, s75[2] = {7, 5}, s139[4] = {1, 1, 13, 9}, flat[1] = {1989};
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    /* The reference configuration: momentum 0.9, weight decay 4e-4. */
    sgd_case(ctx, dt, 1, flat, (dynb__sgd_hyper){0.1, 0.9, 4e-4, false}, true, 3);
    sgd_case(ctx, dt, 1, flat, (dynb__sgd_hyper){0.1, 0.9, 4e-4, true}, true, 0);
    /* Norm parameters skip weight decay. */
    sgd_case(ctx, dt, 2, s75, (dynb__sgd_hyper){0.05, 0.9, 0, true}, true, 11);
    sgd_case(ctx, dt, 4, s139, (dynb__sgd_hyper){0.2, 0.5, 0, false}, true, 1);
    sgd_case(ctx, dt, 1, one, (dynb__sgd_hyper){0.1, 0.9, 0.1, true}, true, 2);
    /* Plain SGD: velocity NULL, or passed and left alone. */
    sgd_case(ctx, dt, 1, flat, (dynb__sgd_hyper){0.1, 0, 0.01, false}, false, 4);
    sgd_case(ctx, dt, 2, s75, (dynb__sgd_hyper){0.1, 0, 0, false}, true, 6);
  }
  dynb_ctx_free(ctx);
}

/* The trainer zero-initialises velocities; PyTorch sets v = g on the first
 * step instead. With v = 0 the step computes 0.9 · 0 + g, which is g
 * exactly, so both agree bit for bit. */
static void sgd_first_step_from_zero_velocity(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_rng r = tu_rng_seed(99);
  int64_t n = 117;
  double *th = tu_random(&r, 117, -1, 1), *g = tu_random(&r, 117, -1, 1), v[117];
  dynb__tensor tth = tu_upload(ctx, DYNB_F32, 1, &n, th), tg = tu_upload(ctx, DYNB_F32, 1, &n, g);
  dynb__tensor tv = tu_upload(ctx, DYNB_F32, 1, &n, NULL);
  dynb__sgd_hyper h = {0.1, 0.9, 0, false};
  TU_OK(ctx, dynb__sgd_step(ctx, &tth, &tg, &tv, &h));
  tu_download(ctx, &tv, v);
  for (int i = 0; i < 117; i++) assert_true(v[i] == (float)g[i]);
  dynb__tensor_release(&tth), dynb__tensor_release(&tg), dynb__tensor_release(&tv);
  free(th), free(g);
  dynb_ctx_free(ctx);
}

/* ---- Adam ---------------------------------------------------------------- */

static void adam_case(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims,
                      dynb__adam_hyper h, bool resume, size_t first) {
  tu_rng r = tu_rng_seed(first * 13 + (uint64_t)h.step);
  arena a = arena_make(ctx, dt, ndim, dims, 4, first, 3, &r);
  double *x = malloc(a.n * sizeof *x);
  /* Fresh state is zero; a resumed one has m ∈ [-0.1, 0.1], v ∈ [0.01, 0.1]
   * (v >= 0 always; m² <= v keeps the ratio m̂/√v̂ of order 1). */
  for (size_t i = 0; i < a.n; i++) x[i] = resume ? tu_uniform(&r, -0.1, 0.1) : 0;
  tu_round_to(dt, x, a.n);
  arena_set(ctx, &a, M_SEG, x);
  for (size_t i = 0; i < a.n; i++) x[i] = resume ? tu_uniform(&r, 0.01, 0.1) : 0;
  tu_round_to(dt, x, a.n);
  arena_set(ctx, &a, V_SEG, x);
  for (int s = 0; s < STEPS; s++, h.step++) {
    tu_fill(&r, x, a.n, -1, 1);
    tu_round_to(dt, x, a.n);
    arena_set(ctx, &a, G_SEG, x);
    TU_OK(ctx, dynb__adam_step(ctx, &a.seg[P_SEG], &a.seg[G_SEG], &a.seg[M_SEG], &a.seg[V_SEG],
                               &h));
    ref_adam_step(a.n, a.host + a.off[P_SEG], x, a.host + a.off[M_SEG], a.host + a.off[V_SEG],
                  h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step);
  }
  char what[128];
  snprintf(what, sizeof what, "adam %s n=%zu off=%zu b=(%g,%g) wd=%g t0=%lld",
           dynb__dtype_name(dt), a.n, first, h.beta1, h.beta2, h.weight_decay,
           (long long)(h.step - STEPS));
  arena_compare(ctx, &a, (1u << P_SEG) | (1u << M_SEG) | (1u << V_SEG), what, tol_for(dt));
  dynb__tensor_release(&a.buf);
  free(a.host), free(x);
}

static void adam_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  const int64_t one[1] = {1}, s75[2] = {7, 5}, s139[4] = {1, 1, 13, 9}, flat[1] = {1989};
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    /* PyTorch's defaults from the first step. */
    adam_case(ctx, dt, 1, flat, (dynb__adam_hyper){1e-3, 0.9, 0.999, 1e-8, 0, 1}, false, 2);
    adam_case(ctx, dt, 2, s75, (dynb__adam_hyper){0.01, 0.8, 0.99, 1e-6, 0.05, 1}, false, 0);
    /* beta1 = 0 (no first moment), offset segments, weight decay. */
    adam_case(ctx, dt, 4, s139, (dynb__adam_hyper){0.05, 0, 0.9, 1e-8, 0.01, 1}, false, 7);
    /* Resumed at step 100 with non-zero state. */
    adam_case(ctx, dt, 1, flat, (dynb__adam_hyper){1e-3, 0.9, 0.999, 1e-8, 1e-4, 100}, true, 5);
    adam_case(ctx, dt, 1, one, (dynb__adam_hyper){0.1, 0.9, 0.999, 1e-8, 0, 1}, false, 1);
  }
  dynb_ctx_free(ctx);
}

/* ---- clipping ------------------------------------------------------------ */

static void clip_case(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims, double lo,
                      double hi, size_t first) {
  tu_rng r = tu_rng_seed(first + 3);
  arena a = arena_make(ctx, dt, ndim, dims, 1, first, 4, &r);
  for (size_t i = 0; i < a.n; i++) a.host[a.off[0] + i] *= 2; /* data in [-2, 2] */
  tu_write(ctx, &a.buf, a.host);
  TU_OK(ctx, dynb__clip(ctx, &a.seg[0], lo, hi));
  /* The bounds, as the kernel sees them, are rounded to the dtype. */
  double lo_r = lo, hi_r = hi;
  tu_round_to(dt, &lo_r, 1);
  tu_round_to(dt, &hi_r, 1);
  ref_clip(a.n, a.host + a.off[0], lo_r, hi_r);
  char what[128];
  snprintf(what, sizeof what, "clip %s n=%zu [%g, %g]", dynb__dtype_name(dt), a.n, lo, hi);
  /* Selecting a value or a bound is exact: a tolerance of 1e-300 means none. */
  arena_compare(ctx, &a, 1u, what, 1e-300);
  dynb__tensor_release(&a.buf);
  free(a.host);
}

static void clip_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  const int64_t one[1] = {1}, s75[2] = {7, 5}, s139[3] = {1, 13, 9}, flat[1] = {1989};
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    clip_case(ctx, dt, 1, flat, -1, 0.5, 3);
    clip_case(ctx, dt, 2, s75, -0.3, 0.3, 0);
    clip_case(ctx, dt, 3, s139, -INFINITY, 0.1, 1);  /* one-sided */
    clip_case(ctx, dt, 1, flat, 0.25, 0.25, 2);      /* a single point */
    clip_case(ctx, dt, 1, one, -5, 5, 1);            /* nothing to clip */
  }
  /* NaN stays NaN, as torch.clamp; it is not replaced by a bound. */
  int64_t three = 3;
  double x[3] = {NAN, -3, 3}, y[3];
  dynb__tensor t = tu_upload(ctx, DYNB_F32, 1, &three, x);
  TU_OK(ctx, dynb__clip(ctx, &t, -1, 1));
  tu_download(ctx, &t, y);
  assert_true(isnan(y[0]) && y[1] == -1 && y[2] == 1);
  dynb__tensor_release(&t);
  dynb_ctx_free(ctx);
}

/* ---- argument checks ----------------------------------------------------- */

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t n = 10, n9 = 9;
  double *p0 = tu_random(&(tu_rng){3}, 10, -1, 1);
  dynb__tensor p = tu_upload(ctx, DYNB_F32, 1, &n, p0), g = tu_upload(ctx, DYNB_F32, 1, &n, NULL);
  dynb__tensor v = tu_upload(ctx, DYNB_F32, 1, &n, NULL), m = tu_upload(ctx, DYNB_F32, 1, &n, NULL);
  dynb__tensor g9 = tu_upload(ctx, DYNB_F32, 1, &n9, NULL);
  dynb__tensor g64 = tu_upload(ctx, DYNB_F64, 1, &n, NULL);
  dynb__tensor pi = tu_upload(ctx, DYNB_I32, 1, &n, NULL);
  dynb__tensor over = p;
  over.offset = 11; /* starts past the end */
  dynb__sgd_hyper sh = {0.1, 0.9, 1e-4, false};
  const dynb_status BAD = DYNB_STATUS_PARAM_OUT_OF_BOUND;

  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, NULL, &g, &v, &sh), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, NULL, &v, &sh), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, &g, NULL, &sh), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, &g, &v, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, &g64, &v, &sh), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &pi, &g, &v, &sh), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, &g9, &v, &sh), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, &g, &g9, &sh), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &over, &g, &v, &sh), DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, &g, &over, &sh), DYNB_STATUS_BUFFER_TOO_SMALL);
  const dynb__sgd_hyper bad_sgd[] = {
      {-0.1, 0.9, 0, false}, {NAN, 0.9, 0, false},  {INFINITY, 0, 0, false},
      {0.1, 1.0, 0, false},  {0.1, -0.1, 0, false}, {0.1, NAN, 0, false},
      {0.1, 0.9, -1e-4, false}, {0.1, 0.9, NAN, false}, {0.1, 0, 0, true}, /* Nesterov, no momentum */
  };
  for (size_t i = 0; i < sizeof bad_sgd / sizeof *bad_sgd; i++)
    TU_EXPECT_STATUS(ctx, dynb__sgd_step(ctx, &p, &g, &v, &bad_sgd[i]), BAD);

  dynb__adam_hyper ah = {1e-3, 0.9, 0.999, 1e-8, 0, 1};
  TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, NULL, &g, &m, &v, &ah), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, &p, &g, NULL, &v, &ah), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, &p, &g, &m, NULL, &ah), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, &p, &g, &m, &v, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, &p, &g, &g64, &v, &ah), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, &p, &g, &m, &g9, &ah), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, &p, &g, &over, &v, &ah), DYNB_STATUS_BUFFER_TOO_SMALL);
  const dynb__adam_hyper bad_adam[] = {
      {-1e-3, 0.9, 0.999, 1e-8, 0, 1}, {1e-3, 1.0, 0.999, 1e-8, 0, 1},
      {1e-3, -0.1, 0.999, 1e-8, 0, 1}, {1e-3, 0.9, 1.0, 1e-8, 0, 1},
      {1e-3, 0.9, NAN, 1e-8, 0, 1},    {1e-3, 0.9, 0.999, 0, 0, 1},
      {1e-3, 0.9, 0.999, -1e-8, 0, 1}, {1e-3, 0.9, 0.999, INFINITY, 0, 1},
      {1e-3, 0.9, 0.999, 1e-8, -1, 1}, {1e-3, 0.9, 0.999, 1e-8, 0, 0},
      {1e-3, 0.9, 0.999, 1e-8, 0, -5},
  };
  for (size_t i = 0; i < sizeof bad_adam / sizeof *bad_adam; i++)
    TU_EXPECT_STATUS(ctx, dynb__adam_step(ctx, &p, &g, &m, &v, &bad_adam[i]), BAD);

  TU_EXPECT_STATUS(ctx, dynb__clip(ctx, NULL, -1, 1), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__clip(ctx, &pi, -1, 1), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__clip(ctx, &over, -1, 1), DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__clip(ctx, &p, 1, -1), BAD);
  TU_EXPECT_STATUS(ctx, dynb__clip(ctx, &p, NAN, 1), BAD);
  TU_EXPECT_STATUS(ctx, dynb__clip(ctx, &p, -1, NAN), BAD);

  /* None of the failed calls enqueued anything: θ is as uploaded. */
  double got[10];
  tu_download(ctx, &p, got);
  for (int i = 0; i < 10; i++) assert_true(got[i] == (float)p0[i]);
  dynb__tensor_release(&p), dynb__tensor_release(&g), dynb__tensor_release(&v);
  dynb__tensor_release(&m), dynb__tensor_release(&g9), dynb__tensor_release(&g64);
  dynb__tensor_release(&pi);
  free(p0);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(sgd_matches_reference),
      cmocka_unit_test(sgd_first_step_from_zero_velocity),
      cmocka_unit_test(adam_matches_reference),
      cmocka_unit_test(clip_matches_reference),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
