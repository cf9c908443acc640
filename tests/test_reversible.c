/* Reversible blocks (SPEC §1.4): leapfrog and verlet (on the hamiltonian
 * layer) against their plain-C references, observed orders on linear
 * problems with exact solutions (leapfrog on uniform and smoothly
 * non-uniform grids), gradients against central differences for every
 * layer × norm, spec errors, and the memory modes: checkpoint equal to store bit
 * for bit, reconstruct equal to store up to the rounding of the rebuilt
 * states (which the block measures). */
#include <math.h>

#include "api_fixture.h"
#include "model/model.h"
#include "ref/ref.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------- */

enum { SM_N = 2, SM_C = 2, SM_H = 3, SM_W = 4, SM_M = SM_N * SM_C * SM_H * SM_W };

/* Non-uniform states (ratios 0.3 : 0.7 : 0.7 : 0.3 : 0.5 between steps, so
 * r = h_k/h_{k−1} is neither 1 nor constant) and controls that differ from
 * them (θ really varies between steps). */
static const double grid_ts[6] = {0, 0.3, 1, 1.7, 2, 2.5};
static const double grid_tc[3] = {0.5, 1.5, 2.2};
#define NS 6
#define NC 3

static const dynb_layer_kind kinds[3] = {DYNB_LAYER_DOUBLESYM, DYNB_LAYER_DOUBLE,
                                         DYNB_LAYER_PREACT};
static const dynb_norm_kind norms[3] = {DYNB_NORM_NONE, DYNB_NORM_TV, DYNB_NORM_BATCH};

static dynb__layer layer_of(dynb_layer_kind kind, dynb_norm_kind norm, dynb_act act, int c,
                            int kernel) {
  dynb__layer l = {.kind = kind, .norm = norm, .act = act, .channels = c, .kernel = kernel};
  return l;
}

/* The reference of either scheme. */
static void ref_forward(const char *scheme, const dynb__layer *l, int ns, const double *ts, int nc,
                        const double *tc, const double *controls, const double *x, bool train,
                        double *running, double *out) {
  if (strcmp(scheme, "verlet") == 0)
    ref_verlet_forward(l, SM_N, SM_H, SM_W, ns, ts, nc, tc, controls, x, train, running, out);
  else
    ref_leapfrog_forward(l, SM_N, SM_H, SM_W, ns, ts, nc, tc, controls, x, train, running, out);
}

/* The layers each scheme takes: leapfrog any of §1.2, verlet hamiltonian. */
static dynb__layer scheme_layer(const char *scheme, int k, dynb_norm_kind norm, dynb_act act) {
  return layer_of(strcmp(scheme, "verlet") == 0 ? DYNB_LAYER_HAMILTONIAN : kinds[k], norm, act,
                  SM_C, 3);
}

static const char *mode_name(dynb_memory_mode m) {
  return m == DYNB_MEMORY_STORE ? "store" : m == DYNB_MEMORY_CHECKPOINT ? "checkpoint" : "reconstruct";
}

/* ---- forward against the reference ------------------------------------------------ */

/* Output and running statistics after a training forward, then an
 * evaluation forward, against ref_leapfrog_forward. f64: summation order
 * only, ~1e-16 per operation over some hundred per element: 1e-12. */
static void forward_case(dynb_ctx *ctx, const char *scheme, const dynb__layer *l,
                         dynb_memory_mode mode) {
  tu_rng r = tu_rng_seed((uint64_t)(l->kind * 10 + l->norm + 7));
  dynb__block *b = tu_block_create(ctx, DYNB_F64, l, scheme, NS, grid_ts, NC, grid_tc);
  double *controls = tu_random_controls(&r, l, NC, 0.3), x[SM_M], got[SM_M], want[SM_M];
  tu_fill(&r, x, SM_M, -1, 1);
  tu_write(ctx, dynb__block_controls(b), controls);
  int64_t dims[4] = {SM_N, SM_C, SM_H, SM_W};
  dynb__tensor tx = tu_upload(ctx, DYNB_F64, 4, dims, x);
  dynb__tensor to = tu_upload(ctx, DYNB_F64, 4, dims, NULL);
  TU_OK(ctx, dynb__block_prepare(b, SM_N, SM_H, SM_W, mode, NULL, NULL));
  const dynb__tensor *run = dynb__block_running(b);
  size_t nrun = run->mem ? dynb__tensor_numel(run) : 0;
  double *want_run = malloc((nrun ? nrun : 1) * sizeof *want_run);
  double *got_run = malloc((nrun ? nrun : 1) * sizeof *got_run);
  tu_initial_running(nrun, SM_C, want_run);
  char what[160];
  for (int pass = 0; pass < 2; pass++) {
    bool train = pass == 0;
    if (!train && l->norm != DYNB_NORM_BATCH) break;
    TU_OK(ctx, dynb__block_forward(b, &tx, &to, train));
    tu_download(ctx, &to, got);
    ref_forward(scheme, l, NS, grid_ts, NC, grid_tc, controls, x, train, nrun ? want_run : NULL,
                want);
    snprintf(what, sizeof what, "%s %s %s %s %s", scheme, dynb__layer_name(l->kind),
             dynb__norm_name(l->norm), mode_name(mode), train ? "train" : "eval");
    tu_assert_close(what, got, want, SM_M, 1e-12, 1e-12);
    if (nrun) {
      tu_download(ctx, run, got_run);
      tu_assert_close(what, got_run, want_run, nrun, 1e-12, 1e-12);
    }
  }
  dynb__tensor_release(&tx), dynb__tensor_release(&to);
  dynb__block_free(b);
  free(controls), free(want_run), free(got_run);
}

static void schemes_match_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  static const dynb_memory_mode modes[3] = {DYNB_MEMORY_STORE, DYNB_MEMORY_CHECKPOINT,
                                            DYNB_MEMORY_RECONSTRUCT};
  for (int k = 0; k < 3; k++)
    for (int n = 0; n < 3; n++) {
      dynb__layer l = scheme_layer("leapfrog", k, norms[n], DYNB_ACT_RELU);
      forward_case(ctx, "leapfrog", &l, modes[(k + n) % 3]);
    }
  /* verlet: every norm and every activation (6 of the 12 pairs). */
  static const dynb_act acts[4] = {DYNB_ACT_RELU, DYNB_ACT_TANH, DYNB_ACT_LEAKY_RELU,
                                   DYNB_ACT_IDENTITY};
  for (int n = 0; n < 3; n++)
    for (int a = 0; a < 4; a++) {
      if ((n + a) % 2) continue;
      dynb__layer l = scheme_layer("verlet", 0, norms[n], acts[a]);
      forward_case(ctx, "verlet", &l, modes[(n + a / 2) % 3]);
    }
  /* Hand-checked: one channel, 1×1, f(y) = w₂(w₁ y) = −y (double, no norm,
   * identity): Y_1 = Y_0 (1 − ½h²) on one step of h = 0.5: 1 → 0.875. */
  dynb__layer l = layer_of(DYNB_LAYER_DOUBLE, DYNB_NORM_NONE, DYNB_ACT_IDENTITY, 1, 1);
  double ts[2] = {0, 0.5}, tc[1] = {0}, theta[4] = {1, 0, -1, 0}, x = 1, y = 0;
  dynb__block *b = tu_block_create(ctx, DYNB_F64, &l, "leapfrog", 2, ts, 1, tc);
  tu_write(ctx, dynb__block_controls(b), theta);
  int64_t one[4] = {1, 1, 1, 1};
  dynb__tensor tx = tu_upload(ctx, DYNB_F64, 4, one, &x), to = tu_upload(ctx, DYNB_F64, 4, one, NULL);
  TU_OK(ctx, dynb__block_prepare(b, 1, 1, 1, DYNB_MEMORY_STORE, NULL, NULL));
  TU_OK(ctx, dynb__block_forward(b, &tx, &to, true));
  tu_download(ctx, &to, &y);
  assert_true(y == 0.875);
  dynb__tensor_release(&tx), dynb__tensor_release(&to);
  dynb__block_free(b);
  dynb_ctx_free(ctx);
}

/* ---- observed order ------------------------------------------------------------------ */

/* Y'' = A Y, Y'(0) = 0 through `double` with identity activations, no
 * norm, 1×1 kernels, zero biases: f(y) = W₂ W₁ y = A y per pixel. The
 * exact solution is Y(T) = Σ_n T^{2n}/(2n)! Aⁿ Y_0 (cos/cosh of √A T),
 * summed on the host until the terms vanish. */
enum { OC = 2 };
static const double w1[OC * OC] = {1, 0.3, -0.2, 0.8}, w2[OC * OC] = {-1, 0.2, 0.1, -0.9};
static const double y0[OC] = {1, 0.5};
#define T_END 2.0

/* A = W₂ W₁ (leapfrog's f) or, with transpose_second, −W₁ W₁ᵀ (verlet's:
 * Z' = −Kᵀ Y, Y' = K Z give Y'' = −K Kᵀ Y, Y'(0) = K Z_0 = 0). */
static void matrix_a(bool verlet, double *a) {
  for (int i = 0; i < OC; i++)
    for (int j = 0; j < OC; j++) {
      a[i * OC + j] = 0;
      for (int k = 0; k < OC; k++)
        a[i * OC + j] += verlet ? -w1[i * OC + k] * w1[j * OC + k] : w2[i * OC + k] * w1[k * OC + j];
    }
}

static void exact_solution(bool verlet, double T, double *out) {
  double a[OC * OC], term[OC], next[OC];
  matrix_a(verlet, a);
  for (int i = 0; i < OC; i++) out[i] = term[i] = y0[i];
  for (int n = 1; n < 60; n++) {
    double f = T * T / ((2.0 * n) * (2.0 * n - 1));
    for (int i = 0; i < OC; i++) {
      next[i] = 0;
      for (int j = 0; j < OC; j++) next[i] += f * a[i * OC + j] * term[j];
    }
    for (int i = 0; i < OC; i++) out[i] += term[i] = next[i];
  }
}

/* Max error at T over K steps on the grid t_k = T (k/K)^p. */
static double order_error(dynb_ctx *ctx, bool verlet, int K, double p) {
  dynb__layer l = layer_of(verlet ? DYNB_LAYER_HAMILTONIAN : DYNB_LAYER_DOUBLE, DYNB_NORM_NONE,
                           DYNB_ACT_IDENTITY, OC, 1);
  double ts[DYNB_MAX_TIME_POINTS], tc[1] = {0};
  for (int k = 0; k <= K; k++) ts[k] = T_END * pow((double)k / K, p);
  dynb__block *b =
      tu_block_create(ctx, DYNB_F64, &l, verlet ? "verlet" : "leapfrog", K + 1, ts, 1, tc);
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  size_t P;
  int ne = dynb__layer_params(&l, e, &P);
  double *theta = calloc(P, sizeof *theta);
  for (int i = 0; i < ne; i++) {
    if (strcmp(e[i].name, "conv1.weight") == 0 || strcmp(e[i].name, "conv.weight") == 0)
      memcpy(theta + e[i].offset, w1, sizeof w1);
    if (strcmp(e[i].name, "conv2.weight") == 0) memcpy(theta + e[i].offset, w2, sizeof w2);
  }
  tu_write(ctx, dynb__block_controls(b), theta);
  int64_t dims[4] = {1, OC, 1, 1};
  dynb__tensor tx = tu_upload(ctx, DYNB_F64, 4, dims, y0);
  dynb__tensor to = tu_upload(ctx, DYNB_F64, 4, dims, NULL);
  TU_OK(ctx, dynb__block_prepare(b, 1, 1, 1, DYNB_MEMORY_CHECKPOINT, NULL, NULL));
  TU_OK(ctx, dynb__block_forward(b, &tx, &to, true));
  double got[OC], want[OC], err = 0;
  tu_download(ctx, &to, got);
  exact_solution(verlet, T_END, want);
  for (int i = 0; i < OC; i++) err = fmax(err, fabs(got[i] - want[i]));
  dynb__tensor_release(&tx), dynb__tensor_release(&to);
  dynb__block_free(b);
  free(theta);
  return err;
}

/* Order = log2(e_K / e_2K) between the two finest of K = 16..128, where
 * the O(h³) terms have faded (the ratio drifts by O(h) towards 2); the
 * issue's bound is 2.0 ± 0.2. Errors stay far above f64 rounding (1e-6 at
 * K = 128 against ~1e-14). */
static void leapfrog_is_second_order(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  static const double powers[2] = {1, 1.5};
  for (int g = 0; g < 2; g++) {
    double prev = 0, order = 0;
    for (int K = 16; K <= 128; K *= 2) {
      double e = order_error(ctx, false, K, powers[g]);
      if (prev > 0) order = log2(prev / e);
      printf("leapfrog t_k = T (k/K)^%g, K = %d: error %.4g, observed order %.3f\n", powers[g], K,
             e, order);
      prev = e;
    }
    if (!(fabs(order - 2) <= 0.2)) fail_msg("leapfrog grid power %g: order %.3f", powers[g], order);
  }
  dynb_ctx_free(ctx);
}

/* Verlet on the linear Hamiltonian system (identity σ, no norm): symplectic
 * Euler, first order; the bound is 1.0 ± 0.2, between the two
 * finest of K = 16..128 on a uniform grid. */
static void verlet_is_first_order(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  double prev = 0, order = 0;
  for (int K = 16; K <= 128; K *= 2) {
    double e = order_error(ctx, true, K, 1);
    if (prev > 0) order = log2(prev / e);
    printf("verlet K = %d: error %.4g, observed order %.3f\n", K, e, order);
    prev = e;
  }
  if (!(fabs(order - 1) <= 0.2)) fail_msg("verlet: order %.3f", order);
  dynb_ctx_free(ctx);
}

/* ---- spec errors --------------------------------------------------------------------- */

static void expect_spec_error(const char *layer, const char *scheme, const char *needle) {
  char text[512], err[512] = "";
  snprintf(text, sizeof text,
           "{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": 2,"
           " \"open\": {\"width\": 4}, \"blocks\": [{\"width\": 4, \"layer\": \"%s\","
           " \"norm\": \"none\", \"scheme\": \"%s\", \"t_states\": [0, 1, 2]}]}",
           layer, scheme);
  dynb__net_spec *spec = malloc(sizeof *spec);
  dynb_status st = dynb__spec_parse(text, strlen(text), "r.json", spec, err, sizeof err);
  printf("%s + %s: %s\n", layer, scheme, st == DYNB_OK ? "accepted" : err);
  if (!needle) {
    assert_int_equal(st, DYNB_OK);
  } else {
    assert_int_equal(st, DYNB_STATUS_SPEC_ERROR);
    if (!strstr(err, needle)) fail_msg("'%s' lacks '%s'", err, needle);
  }
  free(spec);
}

/* verlet and hamiltonian take only each other (SPEC §1.4); the message
 * names the key to change. The block refuses the same pairs. */
static void spec_errors_name_the_key(void **state) {
  (void)state;
  expect_spec_error("hamiltonian", "verlet", NULL);
  expect_spec_error("preact", "leapfrog", NULL);
  expect_spec_error("doublesym", "verlet", "blocks[0].layer: scheme 'verlet' takes only layer 'hamiltonian'");
  expect_spec_error("hamiltonian", "rk4", "blocks[0].scheme: layer 'hamiltonian' takes only scheme 'verlet'");
  expect_spec_error("hamiltonian", "leapfrog", "blocks[0].scheme");
  dynb_ctx *ctx = tu_ctx();
  static const char *const schemes[2] = {"rk4", "verlet"};
  for (int i = 0; i < 2; i++) {
    dynb__layer l = layer_of(i ? DYNB_LAYER_DOUBLE : DYNB_LAYER_HAMILTONIAN, DYNB_NORM_NONE,
                             DYNB_ACT_RELU, 2, 3);
    dynb__block_desc d = {.layer = l, .nstates = NS, .t_states = grid_ts, .ncontrols = NC,
                          .t_controls = grid_tc};
    assert_true(dynb__tableau_builtin(schemes[i], &d.tableau));
    dynb__block *b = NULL;
    char err[256] = "";
    TU_EXPECT_STATUS(ctx, dynb__block_create(ctx, &d, DYNB_F32, &b, err, sizeof err),
                     DYNB_STATUS_SPEC_ERROR);
    assert_null(b);
    assert_non_null(strstr(err, i ? "takes only the 'hamiltonian' layer" : "takes only scheme 'verlet'"));
  }
  dynb_ctx_free(ctx);
}

/* ---- gradients ------------------------------------------------------------------------- */

typedef struct fd_block {
  dynb_ctx *ctx;
  dynb__block *b;
  dynb__tensor x, out;
  double *xh, *ch, *w, *outh;
} fd_block;

static double fd_loss(void *user) {
  fd_block *f = user;
  tu_write(f->ctx, &f->x, f->xh);
  tu_write(f->ctx, dynb__block_controls(f->b), f->ch);
  TU_OK(f->ctx, dynb__block_forward(f->b, &f->x, &f->out, true));
  tu_download(f->ctx, &f->out, f->outh);
  return tu_dot(f->w, f->outh, SM_M);
}

/* Central differences at h and h/2, Richardson-extrapolated, as test_block
 * does: the error is O(h⁴ L⁽⁵⁾) plus cancellation ~3 ε_L / h. test_block's
 * h = 1e-5 left 6e-6 relative here, on verlet with tv, where Z starts at 0
 * and K Z + b₂ has pixels with Σ_c z² near tv's ε = 1e-4 (that derivative
 * was 1247): the difference converged to the analytic value as h shrank
 * (4e-6, 2e-6 and 1e-6 all pass), so the truncation term, not the
 * gradient, was off. h = 2.5e-6 cuts that term 256-fold, and cancellation
 * stays ~3·1e-14/2.5e-6 ≈ 1e-8; tolerance 1e-6 of max(1, |analytic|). */
static void fd_check(const char *what, fd_block *f, double *arr, const size_t *idx, size_t n,
                     const double *analytic) {
  const double step = 2.5e-6, tol = 1e-6;
  tu_check_gradient_richardson(what, fd_loss, f, arr, idx, n, analytic, step, tol);
}

/* ∂L/∂x at 8 points and ∂L/∂(first and middle element of every tensor of
 * every control point), training mode (batch statistics), f64. */
static void gradient_case(dynb_ctx *ctx, const char *scheme, const dynb__layer *l,
                          dynb_memory_mode mode) {
  tu_rng r = tu_rng_seed((uint64_t)(l->kind * 31 + l->norm * 7 + mode));
  fd_block f = {.ctx = ctx};
  f.b = tu_block_create(ctx, DYNB_F64, l, scheme, NS, grid_ts, NC, grid_tc);
  size_t P = dynb__block_param_count(f.b), nc = (size_t)NC * P;
  f.ch = tu_random_controls(&r, l, NC, 0.3);
  f.xh = tu_random(&r, SM_M, -1, 1);
  f.w = tu_random(&r, SM_M, -1, 1);
  f.outh = malloc(SM_M * sizeof *f.outh);
  int64_t dims[4] = {SM_N, SM_C, SM_H, SM_W};
  f.x = tu_upload(ctx, DYNB_F64, 4, dims, f.xh);
  f.out = tu_upload(ctx, DYNB_F64, 4, dims, NULL);
  dynb__tensor tw = tu_upload(ctx, DYNB_F64, 4, dims, f.w);
  dynb__tensor tdx = tu_upload(ctx, DYNB_F64, 4, dims, NULL);
  TU_OK(ctx, dynb__block_prepare(f.b, SM_N, SM_H, SM_W, mode, NULL, NULL));
  tu_write(ctx, dynb__block_controls(f.b), f.ch);
  TU_OK(ctx, dynb__block_forward(f.b, &f.x, &f.out, true));
  TU_OK(ctx, dynb__tensor_zero(ctx, dynb__block_grads(f.b)));
  TU_OK(ctx, dynb__block_backward(f.b, &f.x, &tw, &tdx));
  double *dx = malloc(SM_M * sizeof *dx), *dc = malloc(nc * sizeof *dc);
  tu_download(ctx, &tdx, dx);
  tu_download(ctx, dynb__block_grads(f.b), dc);
  size_t xi[8], ci[2 * DYNB_LAYER_MAX_PARAMS * NC], ncheck = 0;
  for (int i = 0; i < 8; i++) xi[i] = (size_t)i * SM_M / 8 + (size_t)i % 3;
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  int ne = dynb__layer_params(l, e, NULL);
  for (int j = 0; j < NC; j++)
    for (int i = 0; i < ne; i++) {
      size_t count = 1;
      for (int d = 0; d < e[i].ndim; d++) count *= (size_t)e[i].dims[d];
      ci[ncheck++] = (size_t)j * P + e[i].offset;
      ci[ncheck++] = (size_t)j * P + e[i].offset + count / 2;
    }
  char what[160];
  snprintf(what, sizeof what, "%s %s %s %s d/dx", scheme, dynb__layer_name(l->kind),
           dynb__norm_name(l->norm), mode_name(mode));
  fd_check(what, &f, f.xh, xi, 8, dx);
  snprintf(what, sizeof what, "%s %s %s %s d/dcontrols", scheme, dynb__layer_name(l->kind),
           dynb__norm_name(l->norm), mode_name(mode));
  fd_check(what, &f, f.ch, ci, ncheck, dc);
  dynb__tensor_release(&f.x), dynb__tensor_release(&f.out);
  dynb__tensor_release(&tw), dynb__tensor_release(&tdx);
  dynb__block_free(f.b);
  free(f.ch), free(f.xh), free(f.w), free(f.outh), free(dx), free(dc);
}

/* Every layer × norm with tanh (smooth, so the differences see no kink),
 * alternating store and reconstruct; verlet also in checkpoint mode. */
static void gradients_match_finite_differences(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  for (int k = 0; k < 3; k++)
    for (int n = 0; n < 3; n++) {
      dynb__layer l = layer_of(kinds[k], norms[n], DYNB_ACT_TANH, SM_C, 3);
      gradient_case(ctx, "leapfrog", &l,
                    (k + n) % 2 ? DYNB_MEMORY_STORE : DYNB_MEMORY_RECONSTRUCT);
    }
  for (int n = 0; n < 3; n++) {
    dynb__layer l = scheme_layer("verlet", 0, norms[n], DYNB_ACT_TANH);
    gradient_case(ctx, "verlet", &l, n == 1 ? DYNB_MEMORY_CHECKPOINT : DYNB_MEMORY_RECONSTRUCT);
    if (n != 1) gradient_case(ctx, "verlet", &l, DYNB_MEMORY_STORE);
  }
  dynb_ctx_free(ctx);
}

/* ---- memory modes ------------------------------------------------------------------------ */

/* out, dx, control gradients and running statistics after one training
 * forward and backward in `mode`, from the same start; *rec the block's
 * reconstruction error. */
static double *run_mode(dynb_ctx *ctx, dynb__block *b, dynb_memory_mode mode,
                        const double *controls, const dynb__tensor *x, const dynb__tensor *dout,
                        size_t *len, double *rec) {
  const dynb__tensor *run = dynb__block_running(b);
  size_t m = dynb__tensor_numel(x), nc = dynb__tensor_numel(dynb__block_grads(b));
  size_t nrun = run->mem ? dynb__tensor_numel(run) : 0;
  *len = 2 * m + nc + nrun;
  double *all = malloc(*len * sizeof *all), *r0 = malloc((nrun ? nrun : 1) * sizeof *r0);
  tu_initial_running(nrun, (int)x->dims[1], r0);
  dynb__tensor out, dx;
  TU_OK(ctx, dynb__tensor_alloc(ctx, x->dtype, 4, x->dims, &out));
  TU_OK(ctx, dynb__tensor_alloc(ctx, x->dtype, 4, x->dims, &dx));
  tu_write(ctx, dynb__block_controls(b), controls);
  if (nrun) tu_write(ctx, run, r0);
  TU_OK(ctx, dynb__tensor_zero(ctx, dynb__block_grads(b)));
  TU_OK(ctx, dynb__block_prepare(b, x->dims[0], x->dims[2], x->dims[3], mode, NULL, NULL));
  TU_OK(ctx, dynb__block_forward(b, x, &out, true));
  TU_OK(ctx, dynb__block_backward(b, x, dout, &dx));
  TU_OK(ctx, dynb__block_reconstruction_error(b, x, rec));
  tu_download(ctx, &out, all);
  tu_download(ctx, &dx, all + m);
  tu_download(ctx, dynb__block_grads(b), all + 2 * m);
  if (nrun) tu_download(ctx, run, all + 2 * m + nc);
  dynb__tensor_release(&out), dynb__tensor_release(&dx);
  free(r0);
  return all;
}

/* Largest difference over the largest magnitude of the store values. */
static double rel_diff(const double *a, const double *b, size_t n) {
  double d = 0, m = 0;
  for (size_t i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i])), m = fmax(m, fabs(a[i]));
  return m > 0 ? d / m : d;
}

/* Checkpoint recomputes each evaluation with the same kernels on the same
 * data as forward did: equal to store bit for bit, running statistics
 * included (the recomputation does not update them). Reconstruct rebuilds
 * Y_{K−2}..Y_1 from the last two states (step 0 reads x itself). f64: the
 * issue's 1e-10 relative (measured at most 9.5e-13, double tv, 64 steps).
 * f32: the same rounding at 2^-24 instead of 2^-53 scales that 9.5e-13 by
 * 5.4e8 to 5.1e-4; measured at most 3.6e-4 (the same case, in a control
 * gradient); bound 1e-3, twice the scaled f64 figure. The rebuilt Y_0's
 * error, which the block reports, obeys the same bounds (measured 5.5e-5
 * f32, 2.2e-13 f64). */
static void modes_case(dynb_ctx *ctx, dynb_dtype dt, const char *scheme, const dynb__layer *l,
                       int K) {
  tu_rng r = tu_rng_seed((uint64_t)(l->kind * 5 + l->norm + 100 * K));
  double ts[DYNB_MAX_TIME_POINTS], tc[2] = {0, 2};
  for (int k = 0; k <= K; k++) ts[k] = 2.0 * pow((double)k / K, 1.2);
  dynb__block *b = tu_block_create(ctx, dt, l, scheme, K + 1, ts, 2, tc);
  size_t m = (size_t)(SM_N * l->channels * SM_H * SM_W);
  double *controls = tu_random_controls(&r, l, 2, 0.3), *xh = tu_random(&r, m, -1, 1);
  double *wh = tu_random(&r, m, -1, 1);
  int64_t dims[4] = {SM_N, l->channels, SM_H, SM_W};
  dynb__tensor tx = tu_upload(ctx, dt, 4, dims, xh), tw = tu_upload(ctx, dt, 4, dims, wh);
  size_t n1, n2, n3;
  double rs, rc, rr;
  double *s = run_mode(ctx, b, DYNB_MEMORY_STORE, controls, &tx, &tw, &n1, &rs);
  double *c = run_mode(ctx, b, DYNB_MEMORY_CHECKPOINT, controls, &tx, &tw, &n2, &rc);
  double *q = run_mode(ctx, b, DYNB_MEMORY_RECONSTRUCT, controls, &tx, &tw, &n3, &rr);
  assert_true(n1 == n2 && n1 == n3);
  size_t differ = 0;
  for (size_t i = 0; i < n1; i++) differ += !(s[i] == c[i]);
  double d = rel_diff(s, q, n1), bound = dt == DYNB_F32 ? 1e-3 : 1e-10;
  printf("%s %s %s %s K=%d: checkpoint differs in %zu of %zu; reconstruct rel diff %.3g, "
         "rebuilt Y_0 error %.3g\n",
         scheme, dynb__dtype_name(dt), dynb__layer_name(l->kind), dynb__norm_name(l->norm), K,
         differ, n1,
         d, rr);
  assert_true(differ == 0);
  assert_true(rs == 0 && rc == 0); /* nothing rebuilt, nothing to report */
  if (strcmp(scheme, "verlet") == 0 && dt == DYNB_F32) assert_true(rr > 0); /* Y_0 always rebuilt */
  if (!(d <= bound)) fail_msg("reconstruct vs store: %.3g > %.3g", d, bound);
  if (!(rr <= bound)) fail_msg("rebuilt Y_0: %.3g > %.3g", rr, bound);
  if (K >= 5) assert_true(rr > 0 || dt == DYNB_F64); /* f32 rounding shows */
  dynb__tensor_release(&tx), dynb__tensor_release(&tw);
  dynb__block_free(b);
  free(controls), free(xh), free(wh), free(s), free(c), free(q);
}

/* A Runge–Kutta block cannot rebuild its states: in reconstruct mode it
 * checkpoints, bit for bit, and reports nothing rebuilt. */
static void runge_kutta_falls_back_to_checkpoint(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_rng r = tu_rng_seed(99);
  dynb__layer l = layer_of(DYNB_LAYER_DOUBLE, DYNB_NORM_BATCH, DYNB_ACT_RELU, SM_C, 3);
  dynb__block *b = tu_block_create(ctx, DYNB_F32, &l, "rk4", NS, grid_ts, NC, grid_tc);
  double *controls = tu_random_controls(&r, &l, NC, 0.3), *xh = tu_random(&r, SM_M, -1, 1);
  double *wh = tu_random(&r, SM_M, -1, 1);
  int64_t dims[4] = {SM_N, SM_C, SM_H, SM_W};
  dynb__tensor tx = tu_upload(ctx, DYNB_F32, 4, dims, xh), tw = tu_upload(ctx, DYNB_F32, 4, dims, wh);
  size_t n1, n2;
  double r1, r2;
  double *c = run_mode(ctx, b, DYNB_MEMORY_CHECKPOINT, controls, &tx, &tw, &n1, &r1);
  double *q = run_mode(ctx, b, DYNB_MEMORY_RECONSTRUCT, controls, &tx, &tw, &n2, &r2);
  assert_true(n1 == n2 && r1 == 0 && r2 == 0);
  for (size_t i = 0; i < n1; i++) assert_true(c[i] == q[i]);
  dynb__tensor_release(&tx), dynb__tensor_release(&tw);
  dynb__block_free(b);
  free(controls), free(xh), free(wh), free(c), free(q);
  dynb_ctx_free(ctx);
}

static void reconstruct_equals_store(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (int k = 0; k < 3; k++)
      for (int n = 0; n < 3; n++) {
        dynb__layer l = layer_of(kinds[k], norms[n], DYNB_ACT_TANH, SM_C, 3);
        modes_case(ctx, dt, "leapfrog", &l, k == n ? 64 : 5);
      }
    dynb__layer l = layer_of(DYNB_LAYER_DOUBLESYM, DYNB_NORM_NONE, DYNB_ACT_RELU, 1, 1);
    modes_case(ctx, dt, "leapfrog", &l, 1); /* one step: nothing to rebuild */
    modes_case(ctx, dt, "leapfrog", &l, 2);
    for (int n = 0; n < 3; n++) {
      dynb__layer h = scheme_layer("verlet", 0, norms[n], DYNB_ACT_TANH);
      modes_case(ctx, dt, "verlet", &h, n == 2 ? 64 : 5);
    }
    dynb__layer h1 = layer_of(DYNB_LAYER_HAMILTONIAN, DYNB_NORM_NONE, DYNB_ACT_RELU, 1, 1);
    modes_case(ctx, dt, "verlet", &h1, 1);
  }
  dynb_ctx_free(ctx);
}

/* ---- public API ------------------------------------------------------------------------ */

/* A leapfrog network through the public API: the same loss and input
 * gradient in store and reconstruct modes (f32; the rebuilt states differ by
 * rounding, bounded as in modes_case by 1e-3 relative), a reconstruction
 * error reported in reconstruct mode only, and a parameter gradient that
 * agrees too. */
static const char *const LF_SPEC =
    "{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": 2,"
    " \"open\": {\"width\": 4},"
    " \"blocks\": [{\"width\": 4, \"layer\": \"doublesym\", \"norm\": \"batch\","
    " \"scheme\": \"leapfrog\", \"t_states\": [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]}]}";

static void api_case(dynb_ctx *ctx, dynb_memory_mode mode, float *dx, double *loss, double *rec) {
  int64_t xd[4] = {AF_BATCH, 1, 8, 8}, yd[1] = {AF_BATCH};
  float x[AF_BATCH * AF_PIXELS];
  int32_t y[AF_BATCH];
  af_make_batch(5, x, y);
  dynb_net *net = NULL;
  dynb_plan *plan = NULL;
  dynb_tensor *xt = NULL, *yt = NULL, *gt = NULL;
  TU_OK(ctx, dynb_net_create(ctx, LF_SPEC, DYNB_F32, 3, &net));
  TU_OK(ctx, dynb_plan_build(net, AF_BATCH, mode, &plan));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F32, 4, xd, &xt));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F32, 4, xd, &gt));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_I32, 1, yd, &yt));
  TU_OK(ctx, dynb_tensor_write(xt, x, sizeof x));
  TU_OK(ctx, dynb_tensor_write(yt, y, sizeof y));
  TU_OK(ctx, dynb_plan_forward(plan, xt, yt, DYNB_PASS_TRAIN));
  double acc;
  TU_OK(ctx, dynb_plan_loss(plan, loss, &acc));
  TU_OK(ctx, dynb_plan_backward(plan, gt));
  TU_OK(ctx, dynb_plan_reconstruction_error(plan, rec));
  TU_OK(ctx, dynb_tensor_read(gt, dx, AF_BATCH * AF_PIXELS * sizeof *dx));
  TU_EXPECT_STATUS(ctx, dynb_plan_reconstruction_error(plan, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  dynb_tensor_free(xt), dynb_tensor_free(yt), dynb_tensor_free(gt);
  dynb_plan_free(plan);
  dynb_net_free(net);
}

static void api_reconstruct_mode(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  static float a[AF_BATCH * AF_PIXELS], b[AF_BATCH * AF_PIXELS];
  double la, lb, ra, rb;
  api_case(ctx, DYNB_MEMORY_STORE, a, &la, &ra);
  api_case(ctx, DYNB_MEMORY_RECONSTRUCT, b, &lb, &rb);
  double d = 0, m = 0;
  for (size_t i = 0; i < AF_BATCH * AF_PIXELS; i++)
    d = fmax(d, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)a[i]));
  printf("api leapfrog: loss %.9g / %.9g, dx rel diff %.3g, rebuilt Y_0 error %.3g\n", la, lb,
         d / m, rb);
  assert_true(la == lb); /* the forward passes are the same kernels */
  assert_true(ra == 0);
  assert_true(rb > 0 && rb <= 1e-3);
  assert_true(d <= 1e-3 * m);
  TU_EXPECT_STATUS(ctx, dynb_plan_build(NULL, 4, DYNB_MEMORY_RECONSTRUCT, NULL),
                   DYNB_STATUS_MISUSE);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(schemes_match_reference),
      cmocka_unit_test(leapfrog_is_second_order),
      cmocka_unit_test(verlet_is_first_order),
      cmocka_unit_test(spec_errors_name_the_key),
      cmocka_unit_test(gradients_match_finite_differences),
      cmocka_unit_test(reconstruct_equals_store),
      cmocka_unit_test(runge_kutta_falls_back_to_checkpoint),
      cmocka_unit_test(api_reconstruct_mode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
