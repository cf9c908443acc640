/* Activations: kernels against the reference (forward, backward, in place,
 * accumulation), backward against central differences, names, argument
 * checks. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

static const dynb_act all_acts[] = {DYNB_ACT_IDENTITY, DYNB_ACT_RELU, DYNB_ACT_TANH,
                                    DYNB_ACT_LEAKY_RELU};

/* Relative bounds, in units of roundoff u, per activation:
 * - identity, relu, leaky_relu: at most the product slope·x (the slope is
 *   itself rounded to the real type), dy·σ' and the accumulation round,
 *   so 4u.
 * - tanh: OpenCL allows tanh 5 ulp (10u); the backward uses 1/cosh² with
 *   cosh 4 ulp, squared, divided (2.5 ulp), times dy and accumulated:
 *   about 24u. The double reference computes 1 - tanh² whose cancellation
 *   costs 2u / sech²(x) <= 29u for |x| <= 2, which matters in f64. 64u
 *   covers the sum. Inputs are O(1), so the same bound serves as absolute
 *   error near zero. */
static double tol(dynb_act act, dynb_dtype dt) {
  return (act == DYNB_ACT_TANH ? 64 : 4) * tu_unit(dt);
}

/* Inputs in [-2, 2] with every seventh exactly 0, the kink of relu and
 * leaky_relu, where the derivative convention shows. */
static double *act_inputs(tu_rng *r, size_t n) {
  double *x = tu_random(r, n, -2, 2);
  for (size_t i = 0; i < n; i += 7) x[i] = 0;
  return x;
}

static void ref_hand_checked(void **state) {
  (void)state;
  /* σ(x) by hand: relu(-1) = 0, relu(2) = 2, leaky(-2) = -0.02, leaky(3) = 3,
   * tanh(0) = 0, tanh(1) = 0.76159415595576489 (tables). */
  const double x[3] = {-1, 2, 0}, xl[2] = {-2, 3}, xt[2] = {0, 1};
  double y[3];
  ref_act_forward(DYNB_ACT_RELU, 3, x, y);
  assert_true(y[0] == 0 && y[1] == 2 && y[2] == 0);
  ref_act_forward(DYNB_ACT_LEAKY_RELU, 2, xl, y);
  assert_true(fabs(y[0] + 0.02) < 1e-17 && y[1] == 3);
  ref_act_forward(DYNB_ACT_TANH, 2, xt, y);
  assert_true(y[0] == 0 && fabs(y[1] - 0.76159415595576489) < 1e-15);
  ref_act_forward(DYNB_ACT_IDENTITY, 3, x, y);
  assert_true(y[0] == -1 && y[1] == 2 && y[2] == 0);
  /* σ' times dy = 7: relu'(0) = 0 and leaky'(0) = 0.01 (PyTorch),
   * tanh'(0) = 1, tanh'(1) = 1 - 0.76159415595576489² = 0.41997434161402603. */
  const double z[2] = {0, 1}, dy[2] = {7, 7};
  double dx[2];
  ref_act_backward(DYNB_ACT_RELU, 2, z, dy, dx);
  assert_true(dx[0] == 0 && dx[1] == 7);
  ref_act_backward(DYNB_ACT_LEAKY_RELU, 2, z, dy, dx);
  assert_true(fabs(dx[0] - 0.07) < 1e-16 && dx[1] == 7);
  ref_act_backward(DYNB_ACT_TANH, 2, z, dy, dx);
  assert_true(dx[0] == 7 && fabs(dx[1] - 7 * 0.41997434161402603) < 1e-14);
  ref_act_backward(DYNB_ACT_IDENTITY, 2, z, dy, dx);
  assert_true(dx[0] == 7 && dx[1] == 7);
}

static void names_round_trip(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof all_acts / sizeof *all_acts; i++) {
    dynb_act a = (dynb_act)-1;
    assert_true(dynb__act_parse(dynb__act_name(all_acts[i]), &a));
    assert_int_equal(a, all_acts[i]);
  }
  assert_string_equal(dynb__act_name(DYNB_ACT_LEAKY_RELU), "leaky_relu");
  dynb_act a = DYNB_ACT_TANH;
  assert_false(dynb__act_parse("RELU", &a)); /* names are case-sensitive */
  assert_false(dynb__act_parse("sigmoid", &a));
  assert_false(dynb__act_parse(NULL, &a));
  assert_int_equal(a, DYNB_ACT_TANH); /* untouched on failure */
  assert_string_equal(dynb__act_name((dynb_act)99), "?");
}

/* Forward on [n, c, h, w] at a buffer offset, and in place. */
static void forward_case(dynb_ctx *ctx, dynb_dtype dt, dynb_act act, int64_t n, int64_t c,
                         int64_t h, int64_t w) {
  tu_rng r = tu_rng_seed((uint64_t)(n * 1000 + c * 100 + h * 10 + w + 7 * act));
  size_t p = (size_t)(n * c * h * w);
  int64_t dims[4] = {n, c, h, w};
  double *x = act_inputs(&r, p), *want = malloc(p * sizeof *want), *got = malloc(p * sizeof *got);
  tu_round_to(dt, x, p);
  ref_act_forward(act, p, x, want);
  dynb__tensor bx, by;
  dynb__tensor tx = tu_upload_at(ctx, dt, 4, dims, x, 5, &bx),
               ty = tu_upload_at(ctx, dt, 4, dims, NULL, 2, &by);
  TU_OK(ctx, dynb__act_forward(ctx, act, &tx, &ty));
  tu_download(ctx, &ty, got);
  char what[96];
  snprintf(what, sizeof what, "act_forward %s %s %zu", dynb__act_name(act), dynb__dtype_name(dt),
           p);
  tu_assert_close(what, got, want, p, tol(act, dt), tol(act, dt));
  TU_OK(ctx, dynb__act_forward(ctx, act, &tx, &tx)); /* y aliases x */
  tu_download(ctx, &tx, got);
  snprintf(what, sizeof what, "act_forward %s %s %zu in place", dynb__act_name(act),
           dynb__dtype_name(dt), p);
  tu_assert_close(what, got, want, p, tol(act, dt), tol(act, dt));
  dynb__tensor_release(&bx), dynb__tensor_release(&by);
  free(x), free(want), free(got);
}

static void forward_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (size_t a = 0; a < sizeof all_acts / sizeof *all_acts; a++) {
      forward_case(ctx, dt, all_acts[a], 1, 1, 1, 1);
      forward_case(ctx, dt, all_acts[a], 2, 3, 7, 5);
      forward_case(ctx, dt, all_acts[a], 1, 17, 13, 9); /* 1989: no multiple of 64 */
    }
  }
  dynb_ctx_free(ctx);
}

/* Backward with acc = false, acc = true onto random values, and in place
 * (dx aliasing dy, acc = false). */
static void backward_case(dynb_ctx *ctx, dynb_dtype dt, dynb_act act, int64_t n, int64_t c,
                          int64_t h, int64_t w) {
  tu_rng r = tu_rng_seed((uint64_t)(n * 1000 + c * 100 + h * 10 + w + 7 * act + 1));
  size_t p = (size_t)(n * c * h * w);
  int64_t dims[4] = {n, c, h, w};
  double *x = act_inputs(&r, p), *dy = tu_random(&r, p, -1, 1), *dx0 = tu_random(&r, p, -1, 1);
  double *want = malloc(p * sizeof *want), *got = malloc(p * sizeof *got);
  tu_round_to(dt, x, p), tu_round_to(dt, dy, p), tu_round_to(dt, dx0, p);
  ref_act_backward(act, p, x, dy, want);
  dynb__tensor bx, bdy, bdx;
  dynb__tensor tx = tu_upload_at(ctx, dt, 4, dims, x, 1, &bx);
  dynb__tensor tdy = tu_upload_at(ctx, dt, 4, dims, dy, 0, &bdy);
  dynb__tensor tdx = tu_upload_at(ctx, dt, 4, dims, dx0, 9, &bdx);
  char what[96];
  const char *an = dynb__act_name(act), *dn = dynb__dtype_name(dt);
  TU_OK(ctx, dynb__act_backward(ctx, act, &tx, &tdy, &tdx, false));
  tu_download(ctx, &tdx, got);
  snprintf(what, sizeof what, "act_backward %s %s %zu", an, dn, p);
  tu_assert_close(what, got, want, p, tol(act, dt), tol(act, dt));
  tu_write(ctx, &tdx, dx0);
  TU_OK(ctx, dynb__act_backward(ctx, act, &tx, &tdy, &tdx, true));
  tu_download(ctx, &tdx, got);
  for (size_t i = 0; i < p; i++) want[i] += dx0[i];
  snprintf(what, sizeof what, "act_backward %s %s %zu acc", an, dn, p);
  tu_assert_close(what, got, want, p, tol(act, dt), tol(act, dt));
  ref_act_backward(act, p, x, dy, want);
  TU_OK(ctx, dynb__act_backward(ctx, act, &tx, &tdy, &tdy, false));
  tu_download(ctx, &tdy, got);
  snprintf(what, sizeof what, "act_backward %s %s %zu in place", an, dn, p);
  tu_assert_close(what, got, want, p, tol(act, dt), tol(act, dt));
  dynb__tensor_release(&bx), dynb__tensor_release(&bdy), dynb__tensor_release(&bdx);
  free(x), free(dy), free(dx0), free(want), free(got);
}

static void backward_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (size_t a = 0; a < sizeof all_acts / sizeof *all_acts; a++) {
      backward_case(ctx, dt, all_acts[a], 1, 1, 1, 1);
      backward_case(ctx, dt, all_acts[a], 2, 3, 7, 5);
      backward_case(ctx, dt, all_acts[a], 1, 17, 13, 9);
    }
  }
  dynb_ctx_free(ctx);
}

/* L(x) = Σ w ⊙ σ(x) in double through the reference forward. */
typedef struct fd_ctx {
  dynb_act act;
  size_t p;
  double *x, *w, *tmp;
} fd_ctx;

static double fd_loss(void *user) {
  fd_ctx *c = user;
  ref_act_forward(c->act, c->p, c->x, c->tmp);
  return tu_dot(c->w, c->tmp, c->p);
}

/* The device's f64 backward with dy = w against central differences. The
 * inputs keep |x| >= 0.1, ten thousand steps away from the kinks, where
 * relu and leaky_relu are linear and the differences exact. For tanh the
 * truncation error is h²/6·|(w·tanh)'''| <= 2e-11 at h = 1e-5; rounding of
 * L (105 terms of order 1, ~1e-14) over 2h adds ~1e-9: tolerance 1e-7. */
static void backward_matches_fd(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  for (size_t a = 0; a < sizeof all_acts / sizeof *all_acts; a++) {
    tu_rng r = tu_rng_seed(40 + a);
    const size_t p = 3 * 7 * 5;
    int64_t dims[4] = {1, 3, 7, 5};
    fd_ctx c = {.act = all_acts[a], .p = p, .x = tu_random(&r, p, 0.1, 2),
                .w = tu_random(&r, p, -1, 1), .tmp = malloc(p * sizeof(double))};
    for (size_t i = 0; i < p; i += 2) c.x[i] = -c.x[i];
    dynb__tensor tx = tu_upload(ctx, DYNB_F64, 4, dims, c.x);
    dynb__tensor tw = tu_upload(ctx, DYNB_F64, 4, dims, c.w);
    dynb__tensor tdx = tu_upload(ctx, DYNB_F64, 4, dims, NULL);
    TU_OK(ctx, dynb__act_backward(ctx, all_acts[a], &tx, &tw, &tdx, false));
    double *an = malloc(p * sizeof *an);
    tu_download(ctx, &tdx, an);
    char what[64];
    snprintf(what, sizeof what, "act %s d/dx", dynb__act_name(all_acts[a]));
    tu_check_gradient(what, fd_loss, &c, c.x, p, an, 1e-5, 1e-7, p);
    dynb__tensor_release(&tx), dynb__tensor_release(&tw), dynb__tensor_release(&tdx);
    free(c.x), free(c.w), free(c.tmp), free(an);
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t p = 10, p9 = 9, two[2] = {2, 5}, big = 25;
  double ones[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, got[10];
  dynb__tensor x = tu_upload(ctx, DYNB_F32, 1, &p, NULL), y = tu_upload(ctx, DYNB_F32, 1, &p, ones);
  dynb__tensor y9 = tu_upload(ctx, DYNB_F32, 1, &p9, NULL),
               y64 = tu_upload(ctx, DYNB_F64, 1, &p, NULL);
  dynb__tensor xi = tu_upload(ctx, DYNB_I32, 1, &p, NULL),
               buf = tu_upload(ctx, DYNB_F32, 1, &big, NULL);
  const dynb_act relu = DYNB_ACT_RELU;
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, NULL, &y), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &x, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, (dynb_act)7, &x, &y), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &x, &y64), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &xi, &xi), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &x, &y9), DYNB_STATUS_SHAPE_MISMATCH);
  /* Same element count in another shape is fine: activations are elementwise. */
  dynb__tensor y2 = dynb__tensor_view(y.mem, 0, DYNB_F32, 2, two);
  TU_OK(ctx, dynb__act_forward(ctx, relu, &x, &y2));
  tu_write(ctx, &y, ones);
  dynb__tensor over = x;
  over.offset = 1;
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &over, &y), DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &x, &over), DYNB_STATUS_BUFFER_TOO_SMALL);
  dynb__tensor nobuf = x;
  nobuf.mem = NULL;
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &nobuf, &y), DYNB_STATUS_INVALID_ARGUMENT);
  /* Views of one buffer that overlap without coinciding would race. */
  dynb__tensor a = dynb__tensor_view(buf.mem, 0, DYNB_F32, 1, &p);
  dynb__tensor b = dynb__tensor_view(buf.mem, 3, DYNB_F32, 1, &p);
  dynb__tensor c = dynb__tensor_view(buf.mem, 10, DYNB_F32, 1, &p);
  TU_EXPECT_STATUS(ctx, dynb__act_forward(ctx, relu, &a, &b), DYNB_STATUS_INVALID_ARGUMENT);
  TU_OK(ctx, dynb__act_forward(ctx, relu, &a, &c)); /* adjacent, disjoint */
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, relu, &x, &a, &b, false),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, relu, &b, &x, &a, false),
                   DYNB_STATUS_INVALID_ARGUMENT);
  /* dx may alias dy only when overwriting. */
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, relu, &x, &y, &y, true),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, relu, &x, NULL, &y, false),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, relu, &x, &y, &y9, false),
                   DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, relu, &x, &y64, &y, false),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, relu, &x, &over, &y, false),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__act_backward(ctx, (dynb_act)-1, &x, &x, &y, false),
                   DYNB_STATUS_INVALID_ARGUMENT);
  /* None of the failed calls wrote y (x is zeros, so any launch would have). */
  tu_download(ctx, &y, got);
  for (int i = 0; i < 10; i++) assert_true(got[i] == 1);
  dynb__tensor_release(&x), dynb__tensor_release(&y), dynb__tensor_release(&y9);
  dynb__tensor_release(&y64), dynb__tensor_release(&xi), dynb__tensor_release(&buf);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(names_round_trip),
      cmocka_unit_test(forward_matches_reference),
      cmocka_unit_test(backward_matches_reference),
      cmocka_unit_test(backward_matches_fd),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
