/* Re-discretisation through the public API (dynb_net_refine,
 * dynb_net_regrid; SPEC §1.1): a finer control grid keeps the predictions,
 * a finer state grid moves them by the change of discretisation only, which
 * shrinks at the scheme's order; refined models save and load; bad grids
 * and factors are refused with a message and leave the network as it was. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "testutil.h"

#define N 2
#define SIDE 6
#define CLASSES 3

/* Every kind of block state a refinement must carry: tv and batch norms
 * (running statistics per evaluation), a control grid apart from the state
 * grid, two schemes. tanh keeps f smooth in y for the order test. */
static const char *spec_two_blocks(void) {
  return "{\"input\": {\"channels\": 1, \"height\": 6, \"width\": 6}, \"classes\": 3,"
         " \"open\": {\"width\": 3},"
         " \"blocks\": [{\"width\": 3, \"layer\": \"doublesym\", \"norm\": \"tv\", \"act\": \"tanh\","
         "              \"scheme\": \"rk4\", \"t_states\": [0, 0.5, 1], \"t_controls\": [0, 1]},"
         "             {\"width\": 4, \"layer\": \"double\", \"norm\": \"batch\", \"act\": \"tanh\","
         "              \"scheme\": \"heun\", \"t_states\": [0, 1, 1.5], \"t_controls\": [0, 0.5, 1.5]}]}";
}

/* Gives every block tensor seeded values: controls that differ in time (or
 * refinement would be trivially exact) and running statistics that differ
 * per evaluation (so that the nearest-evaluation rule is visible). */
static void scramble_blocks(dynb_ctx *ctx, dynb_net *net, uint64_t seed, double scale) {
  tu_rng r = tu_rng_seed(seed);
  size_t count = 0;
  TU_OK(ctx, dynb_net_param_count(net, &count));
  for (size_t i = 0; i < count; i++) {
    const char *name;
    int ndim, trainable;
    int64_t dims[DYNB_MAX_DIMS];
    TU_OK(ctx, dynb_net_param_name(net, i, &name));
    if (strncmp(name, "blocks.", 7) != 0) continue;
    TU_OK(ctx, dynb_net_param_info(net, name, &ndim, dims, &trainable));
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)dims[d];
    bool var = strstr(name, "running_var") != NULL;
    double *v = tu_random(&r, n, var ? 0.5 : -scale, var ? 1.5 : scale);
    TU_OK(ctx, dynb_net_param_set(net, name, DYNB_F64, v, n));
    free(v);
  }
}

static void make_input(double *x) {
  tu_rng r = tu_rng_seed(42);
  tu_fill(&r, x, N * SIDE * SIDE, -1, 1);
}

/* Eval-mode logits [N, CLASSES] of net for x. */
static void predict(dynb_ctx *ctx, dynb_net *net, const double *x, double *logits) {
  int64_t xd[4] = {N, 1, SIDE, SIDE}, zd[2] = {N, CLASSES};
  dynb_plan *plan = NULL;
  dynb_tensor *xt = NULL, *zt = NULL;
  TU_OK(ctx, dynb_plan_build(net, N, DYNB_MEMORY_STORE, &plan));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F64, 4, xd, &xt));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F64, 2, zd, &zt));
  TU_OK(ctx, dynb_tensor_write(xt, x, N * SIDE * SIDE * sizeof *x));
  TU_OK(ctx, dynb_plan_forward(plan, xt, NULL, DYNB_PASS_EVAL));
  TU_OK(ctx, dynb_plan_logits(plan, zt));
  TU_OK(ctx, dynb_tensor_read(zt, logits, N * CLASSES * sizeof *logits));
  dynb_tensor_free(xt);
  dynb_tensor_free(zt);
  dynb_plan_free(plan);
}

static dynb_ctx *f64_ctx(void) {
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  return ctx;
}

static size_t count_of(dynb_ctx *ctx, dynb_net *net) {
  size_t n = 0;
  TU_OK(ctx, dynb_net_param_count(net, &n));
  return n;
}

/* Only the control grid changes, and it contains the old one: θ(t) is the
 * same function, every evaluation keeps its running statistics, and the
 * predictions are those of the old model up to the rounding of the
 * interpolation (θ at a stage time is now interpolated from interpolated
 * points: a few ulps per parameter, 2^-53 ≈ 1.1e-16 each, carried through
 * two blocks and the head). 1e-13 is ~1000 ulps: room for that
 * conditioning, still eight orders below a one-step change of the state
 * grid (the state test below). */
static void control_refinement_keeps_predictions(void **state) {
  (void)state;
  dynb_ctx *ctx = f64_ctx();
  dynb_net *net = NULL;
  TU_OK(ctx, dynb_net_create(ctx, spec_two_blocks(), DYNB_F64, 7, &net));
  scramble_blocks(ctx, net, 11, 0.4);
  double x[N * SIDE * SIDE], before[N * CLASSES], after[N * CLASSES];
  make_input(x);
  predict(ctx, net, x, before);
  size_t n0 = count_of(ctx, net);
  const double tc0[] = {0, 0.25, 0.5, 1}, tc1[] = {0, 0.25, 0.5, 1, 1.25, 1.5};
  TU_OK(ctx, dynb_net_regrid(net, 0, NULL, 0, tc0, 4));
  TU_OK(ctx, dynb_net_regrid(net, 1, NULL, 0, tc1, 6));
  /* Per control point, block 0's doublesym + tv has K, b1, b2 and the tv
   * shift (4 tensors), two points more; block 1's double + batch has K1,
   * b1, K2, b2 and two affine terms per norm (8), three points more. */
  assert_int_equal(count_of(ctx, net), n0 + 2 * 4 + 3 * 8);
  int ndim;
  TU_OK(ctx, dynb_net_param_info(net, "blocks.1.controls.5.conv1.weight", &ndim, NULL, NULL));
  predict(ctx, net, x, after);
  tu_assert_close("control-only refinement: logits", after, before, N * CLASSES, 1e-13, 1e-13);
  dynb_net_free(net);
  dynb_ctx_free(ctx);
}

/* |a - b|_2 over n values. */
static double dist(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
  return sqrt(s);
}

/* Halving every interval of both grids (dynb_net_refine) leaves θ(t)
 * unchanged, so the logits move by the change of the discretisation
 * alone: p_K - p_2K ≈ C h^q, and log2 of the ratio of successive changes
 * is the order q. A model of one smooth block (tanh, no norm) on [0, 1]
 * with θ's kinks on state-grid nodes at every level. (With tv the order
 * comes out the same way but later: x/sqrt(Σx² + 1e-4) bends sharply near
 * zero, so its asymptotic regime needs far smaller steps.) */
static double observed_order(const char *scheme, int k0) {
  dynb_ctx *ctx = f64_ctx();
  char spec[1024];
  char grid[256] = "";
  for (int k = 0; k <= k0; k++)
    snprintf(grid + strlen(grid), sizeof grid - strlen(grid), "%s%g", k ? ", " : "",
             (double)k / k0);
  snprintf(spec, sizeof spec,
           "{\"input\": {\"channels\": 1, \"height\": 6, \"width\": 6}, \"classes\": 3,"
           " \"open\": {\"width\": 3, \"norm\": \"none\"},"
           " \"blocks\": [{\"width\": 3, \"layer\": \"doublesym\", \"norm\": \"none\", \"act\": \"tanh\","
           "  \"scheme\": \"%s\", \"t_states\": [%s], \"t_controls\": [0, 0.5, 1]}],"
           " \"connect\": {\"norm\": \"none\", \"act\": \"tanh\"}}",
           scheme, grid);
  dynb_net *net = NULL;
  TU_OK(ctx, dynb_net_create(ctx, spec, DYNB_F64, 3, &net));
  scramble_blocks(ctx, net, 5, 0.3);
  double x[N * SIDE * SIDE], p[4][N * CLASSES];
  make_input(x);
  for (int level = 0; level < 4; level++) {
    if (level) TU_OK(ctx, dynb_net_refine(net, 2));
    predict(ctx, net, x, p[level]);
  }
  double d[3];
  for (int l = 0; l < 3; l++) d[l] = dist(p[l], p[l + 1], N * CLASSES);
  double q1 = log2(d[0] / d[1]), q2 = log2(d[1] / d[2]);
  printf("%s from %d steps: changes %.3e %.3e %.3e, observed orders %.3f %.3f\n", scheme, k0,
         d[0], d[1], d[2], q1, q2);
  dynb_net_free(net);
  dynb_ctx_free(ctx);
  return q2;
}

/* The finest pair is taken, the nearest to the asymptotic regime. ±0.2 (the
 * issue's bound for observed orders): the next-order term shifts the
 * observed order by O(h), measured on this model as 0.43, 0.25, 0.13,
 * 0.067, 0.034 for euler from 4 to 128 steps and 0.77, 0.50, 0.25, 0.12,
 * 0.06 for rk4 from 2 to 64, halving per level as an O(h) term does; the
 * finest pairs here (euler 32-64-128 steps, rk4 16-32-64) sit at 0.067
 * and 0.12.
 * A wrong order (2 for 1, 3 or 5 for 4) is far outside. The connecting
 * layer's tanh (not ReLU) keeps the logits smooth in the block's output. */
static void euler_converges_at_order_one(void **state) {
  (void)state;
  double q = observed_order("euler", 16);
  assert_true(fabs(q - 1.0) < 0.2);
}

static void rk4_converges_at_order_four(void **state) {
  (void)state;
  double q = observed_order("rk4", 8);
  assert_true(fabs(q - 4.0) < 0.2);
}

/* A refined model saved and loaded predicts bit for bit what it did
 * (model files keep f64 values and the spec's grids exactly). */
static void refined_model_round_trips(void **state) {
  (void)state;
  dynb_ctx *ctx = f64_ctx();
  dynb_net *net = NULL, *back = NULL;
  TU_OK(ctx, dynb_net_create(ctx, spec_two_blocks(), DYNB_F64, 9, &net));
  scramble_blocks(ctx, net, 13, 0.3);
  TU_OK(ctx, dynb_net_refine(net, 3));
  double x[N * SIDE * SIDE], a[N * CLASSES], b[N * CLASSES];
  make_input(x);
  predict(ctx, net, x, a);
  char path[] = "/tmp/dynb_test_refine_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  TU_OK(ctx, dynb_net_save(net, path));
  TU_OK(ctx, dynb_net_load(ctx, path, DYNB_F64, &back));
  remove(path);
  assert_int_equal(count_of(ctx, back), count_of(ctx, net));
  /* 2 steps × 3 → 6 on block 0: its last step is 5, stage 3 (rk4). */
  int ndim;
  TU_OK(ctx, dynb_net_param_info(back, "blocks.1.steps.5.stages.1.norm2.running_var", &ndim,
                                 NULL, NULL));
  predict(ctx, back, x, b);
  assert_memory_equal(a, b, sizeof a);
  dynb_net_free(back);
  dynb_net_free(net);
  dynb_ctx_free(ctx);
}

/* Bad factors and grids, a block that does not exist, live plans: refused
 * with a message naming the problem, and the network unchanged. */
static void bad_refinements_are_refused(void **state) {
  (void)state;
  dynb_ctx *ctx = f64_ctx();
  dynb_net *net = NULL;
  TU_OK(ctx, dynb_net_create(ctx, spec_two_blocks(), DYNB_F64, 7, &net));
  scramble_blocks(ctx, net, 11, 0.4);
  double x[N * SIDE * SIDE], before[N * CLASSES], after[N * CLASSES];
  make_input(x);
  predict(ctx, net, x, before);
  size_t n0 = count_of(ctx, net);
  TU_EXPECT_STATUS(ctx, dynb_net_refine(net, 0), DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "factor"));
  TU_EXPECT_STATUS(ctx, dynb_net_refine(net, 3000), DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "at most"));
  const double down[] = {0, 1, 0.5}, one[] = {0};
  TU_EXPECT_STATUS(ctx, dynb_net_regrid(net, 1, down, 3, NULL, 0), DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "blocks[1]"));
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "strictly increasing"));
  TU_EXPECT_STATUS(ctx, dynb_net_regrid(net, 0, one, 1, NULL, 0), DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "t_states"));
  TU_EXPECT_STATUS(ctx, dynb_net_regrid(net, 2, down, 2, NULL, 0), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_net_regrid(net, 0, NULL, 0, NULL, 0), DYNB_STATUS_INVALID_ARGUMENT);
  dynb_plan *plan = NULL;
  TU_OK(ctx, dynb_plan_build(net, N, DYNB_MEMORY_STORE, &plan));
  TU_EXPECT_STATUS(ctx, dynb_net_refine(net, 2), DYNB_STATUS_MISUSE);
  dynb_plan_free(plan);
  TU_EXPECT_STATUS(ctx, dynb_net_refine(NULL, 2), DYNB_STATUS_MISUSE);
  assert_int_equal(count_of(ctx, net), n0);
  predict(ctx, net, x, after);
  assert_memory_equal(after, before, sizeof after);
  dynb_net_free(net);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(control_refinement_keeps_predictions),
      cmocka_unit_test(euler_converges_at_order_one),
      cmocka_unit_test(rk4_converges_at_order_four),
      cmocka_unit_test(refined_model_round_trips),
      cmocka_unit_test(bad_refinements_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
