/* Regularisation in time: the reduction against the reference (overwrite
 * and accumulate, deterministic), the subgradient against the reference and
 * finite differences, the single-control-point case, argument checks. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

/* R is a sum of K = (J-1)·P non-negative terms h|Δθ|, so its relative
 * rounding error is at most (longest chain of roundings)·u: a product and a
 * difference per term, (J-1)·⌈P/(G·L)⌉ sequential additions per work-item
 * (≤ 8 for P = 70001, J = 3 with G = 256 groups of L = 256), a log2(L) = 8
 * level tree, alpha, then dynb__sum's two trees (≤ 16 levels): ≲ 40 u with
 * u = 2^-24 in float (2.4e-6), 2^-53 in double (4.4e-15). The reference
 * adds its K terms one after another in double, which is itself off by up
 * to K · 2^-53 (1.6e-11 for K = 140002), so that enters the bound too. */
static double fwd_tol(dynb_dtype dt, size_t k) {
  double u = dt == DYNB_F32 ? 0x1p-24 : 0x1p-53;
  return 40 * u + (double)k * 0x1p-53;
}
/* The subgradient per element is alpha (h_a s_a - h_b s_b) with signs
 * s ∈ {-1, 0, 1}: one product each, a difference, alpha, the accumulation:
 * ≤ 4 roundings of values ≲ 5, i.e. ≲ 1.2e-6 in float: 2e-6; 1e-14 in double. */
static double bwd_tol(dynb_dtype dt) { return dt == DYNB_F32 ? 2e-6 : 1e-14; }

static void ref_hand_checked(void **state) {
  (void)state;
  /* J = 3, P = 2, θ = [[0, 1], [2, -1], [2, 0]], h = [0.5, 2], alpha = 3:
   * θ1 - θ0 = [2, -2], ‖·‖₁ = 4, times 0.5 = 2; θ2 - θ1 = [0, 1], ‖·‖₁ = 1,
   * times 2 = 2; R = 3 · (2 + 2) = 12. */
  const double c[6] = {0, 1, 2, -1, 2, 0}, h[2] = {0.5, 2};
  assert_true(ref_timereg(3, 2, c, h, 3) == 12);
  /* dR/dθ[j][p] = alpha (h[j-1] sign(θj - θj-1) - h[j] sign(θj+1 - θj)):
   * j=0: p0 3·(-0.5·1) = -1.5, p1 3·(-0.5·-1) = 1.5;
   * j=1: p0 3·(0.5·1 - 2·0) = 1.5 (sign(0) = 0), p1 3·(0.5·-1 - 2·1) = -7.5;
   * j=2: p0 3·(2·0) = 0, p1 3·(2·1) = 6. Added to ones. */
  double dc[6] = {1, 1, 1, 1, 1, 1};
  ref_timereg_backward(3, 2, c, h, 3, dc);
  const double want[6] = {-0.5, 2.5, 2.5, -6.5, 1, 7};
  for (int i = 0; i < 6; i++) assert_true(dc[i] == want[i]);
  /* One control point: nothing to sum. */
  assert_true(ref_timereg(1, 2, c, NULL, 3) == 0);
}

/* Controls whose consecutive differences all have |Δ| >= 0.1, away from
 * the kinks of |·| (finite differences need that), in [-3, 3] or so. */
static double *spaced_controls(tu_rng *r, int J, size_t p) {
  double *c = malloc((size_t)J * p * sizeof *c);
  for (size_t i = 0; i < p; i++) c[i] = tu_uniform(r, -1, 1);
  for (int j = 1; j < J; j++)
    for (size_t i = 0; i < p; i++) {
      double d = tu_uniform(r, 0.1, 0.6);
      c[(size_t)j * p + i] = c[(size_t)(j - 1) * p + i] + (tu_uniform(r, 0, 1) < 0.5 ? -d : d);
    }
  return c;
}

static void forward_case(dynb_ctx *ctx, dynb_dtype dt, int J, size_t p, bool acc) {
  tu_rng r = tu_rng_seed((uint64_t)J * 7919 + p + acc);
  size_t n = (size_t)J * p;
  double *c = tu_random(&r, n, -1, 1), *h = tu_random(&r, (size_t)J, 0.1, 2);
  tu_round_to(dt, c, n);
  tu_round_to(dt, h, (size_t)J);
  int64_t cd[2] = {J, (int64_t)p}, hd = J - 1;
  dynb__tensor tc = tu_upload(ctx, dt, 2, cd, c);
  dynb__tensor th = J > 1 ? tu_upload(ctx, dt, 1, &hd, h) : (dynb__tensor){0};
  /* out is element 2 of a 4-element buffer; work sits at offset 3 of a
   * buffer that is exactly large enough. */
  double o0[4] = {0.25, -0.5, tu_uniform(&r, -1, 1), 0.75}, got[4];
  tu_round_to(dt, o0, 4);
  int64_t four = 4, one = 1, wn = (int64_t)(3 + dynb__timereg_workspace(ctx, (int64_t)p));
  dynb__tensor tobuf = tu_upload(ctx, dt, 1, &four, o0), twbuf = tu_upload(ctx, dt, 1, &wn, NULL);
  dynb__tensor to = dynb__tensor_view(tobuf.mem, 2, dt, 1, &one);
  int64_t wsize = wn - 3;
  dynb__tensor tw = dynb__tensor_view(twbuf.mem, 3, dt, 1, &wsize);
  const double alpha = 0.37;
  TU_OK(ctx, dynb__timereg_forward(ctx, &tc, J > 1 ? &th : NULL, alpha, &to, acc, &tw));
  tu_download(ctx, &tobuf, got);
  double R = ref_timereg(J, p, c, h, alpha), want = acc ? o0[2] + R : R;
  char what[96];
  snprintf(what, sizeof what, "timereg_forward %s J=%d p=%zu%s", dynb__dtype_name(dt), J, p,
           acc ? " acc" : "");
  /* The error bound is relative to R, not to R plus the accumulated value. */
  double atol = fwd_tol(dt, (size_t)(J - 1) * p) * R;
  tu_assert_close(what, &got[2], &want, 1, 0, atol > 0 ? atol : 1e-300);
  assert_true(got[0] == o0[0] && got[1] == o0[1] && got[3] == o0[3]);
  /* Deterministic: the same call gives the same bits. */
  double again[4];
  TU_OK(ctx, dynb__timereg_forward(ctx, &tc, J > 1 ? &th : NULL, alpha, &to, false, &tw));
  tu_download(ctx, &tobuf, again);
  if (!acc) assert_true(again[2] == got[2]);
  dynb__tensor_release(&tc), dynb__tensor_release(&tobuf), dynb__tensor_release(&twbuf);
  if (J > 1) dynb__tensor_release(&th);
  free(c), free(h);
}

static void forward_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (int acc = 0; acc < 2; acc++) {
      forward_case(ctx, dt, 1, 35, acc);     /* one control point: R = 0 */
      forward_case(ctx, dt, 2, 1, acc);      /* P = 1 */
      forward_case(ctx, dt, 5, 35, acc);     /* 7x5 */
      forward_case(ctx, dt, 3, 117, acc);    /* 13x9 */
      forward_case(ctx, dt, 4, 1989, acc);   /* not a multiple of any work-group */
      forward_case(ctx, dt, 3, 70001, acc);  /* more columns than 256 groups hold at once */
    }
  }
  dynb_ctx_free(ctx);
}

/* Finite differences of R in double with respect to the controls. */
typedef struct fd_ctx {
  int J;
  size_t p;
  double *c, *h, alpha;
} fd_ctx;

static double fd_loss(void *user) {
  fd_ctx *f = user;
  return ref_timereg(f->J, f->p, f->c, f->h, f->alpha);
}

static void backward_case(dynb_ctx *ctx, dynb_dtype dt, int J, size_t p, bool ties) {
  tu_rng r = tu_rng_seed((uint64_t)J * 31 + p + ties);
  size_t n = (size_t)J * p;
  double *c = spaced_controls(&r, J, p), *h = tu_random(&r, (size_t)J, 0.1, 2);
  /* Ties: control 1 equals control 0, so those differences are exactly 0
   * and contribute sign(0) = 0. */
  if (ties && J > 1) memcpy(c + p, c, p * sizeof *c);
  tu_round_to(dt, c, n);
  tu_round_to(dt, h, (size_t)J);
  double *dc0 = tu_random(&r, n, -1, 1), *got = malloc(n * sizeof *got);
  tu_round_to(dt, dc0, n);
  int64_t cd[2] = {J, (int64_t)p}, hd = J - 1;
  dynb__tensor tc = tu_upload(ctx, dt, 2, cd, c), tdc = tu_upload(ctx, dt, 2, cd, dc0);
  dynb__tensor th = J > 1 ? tu_upload(ctx, dt, 1, &hd, h) : (dynb__tensor){0};
  const double alpha = 0.6;
  TU_OK(ctx, dynb__timereg_backward(ctx, &tc, J > 1 ? &th : NULL, alpha, &tdc));
  tu_download(ctx, &tdc, got);
  double *want = malloc(n * sizeof *want);
  memcpy(want, dc0, n * sizeof *want);
  ref_timereg_backward(J, p, c, h, alpha, want);
  char what[96];
  snprintf(what, sizeof what, "timereg_backward %s J=%d p=%zu%s", dynb__dtype_name(dt), J, p,
           ties ? " ties" : "");
  tu_assert_close(what, got, want, n, bwd_tol(dt), bwd_tol(dt));
  if (dt == DYNB_F64 && !ties) {
    /* R is linear in each control between kinks, all |Δ| >= 0.1 > step:
     * central differences are exact up to the rounding of R (a sum of
     * (J-1)P terms ≲ 1: ~1e-12 / step) — 1e-8 bounds it. */
    double *analytic = malloc(n * sizeof *analytic);
    for (size_t i = 0; i < n; i++) analytic[i] = got[i] - dc0[i];
    fd_ctx f = {J, p, c, h, alpha};
    snprintf(what, sizeof what, "timereg d/dcontrols J=%d p=%zu", J, p);
    tu_check_gradient(what, fd_loss, &f, c, n, analytic, 1e-3, 1e-8, 400);
    free(analytic);
  }
  dynb__tensor_release(&tc), dynb__tensor_release(&tdc);
  if (J > 1) dynb__tensor_release(&th);
  free(c), free(h), free(dc0), free(got), free(want);
}

static void backward_matches_reference_and_fd(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    backward_case(ctx, dt, 1, 35, false);   /* one control point: dcontrols unchanged */
    backward_case(ctx, dt, 2, 1, false);
    backward_case(ctx, dt, 5, 35, false);
    backward_case(ctx, dt, 3, 117, false);
    backward_case(ctx, dt, 4, 1989, false);
    backward_case(ctx, dt, 4, 117, true);   /* sign(0) = 0 */
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t cd[2] = {3, 10}, c1d[2] = {1, 10}, flat = 30, hd = 2, h3 = 3, one = 1;
  double *c0 = tu_random(&(tu_rng){9}, 30, -1, 1);
  dynb__tensor c = tu_upload(ctx, DYNB_F32, 2, cd, c0), dc = tu_upload(ctx, DYNB_F32, 2, cd, c0);
  dynb__tensor c1 = tu_upload(ctx, DYNB_F32, 2, c1d, NULL);
  dynb__tensor cflat = tu_upload(ctx, DYNB_F32, 1, &flat, NULL);
  dynb__tensor ci = tu_upload(ctx, DYNB_I32, 2, cd, NULL);
  dynb__tensor h = tu_upload(ctx, DYNB_F32, 1, &hd, NULL), hbad = tu_upload(ctx, DYNB_F32, 1, &h3, NULL);
  dynb__tensor h64 = tu_upload(ctx, DYNB_F64, 1, &hd, NULL);
  double o0 = 0.5, got_o;
  dynb__tensor out = tu_upload(ctx, DYNB_F32, 1, &one, &o0);
  int64_t wn = (int64_t)dynb__timereg_workspace(ctx, 10), wshort = wn - 1;
  dynb__tensor work = tu_upload(ctx, DYNB_F32, 1, &wn, NULL);
  dynb__tensor ws = tu_upload(ctx, DYNB_F32, 1, &wshort, NULL);
  dynb__tensor over = c;
  over.offset = 31;
  const dynb_status INV = DYNB_STATUS_INVALID_ARGUMENT, SHAPE = DYNB_STATUS_SHAPE_MISMATCH;
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, NULL, &h, 1, &out, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, &h, 1, NULL, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, &h, 1, &out, false, NULL), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, NULL, 1, &out, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &ci, &h, 1, &out, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, &h64, 1, &out, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, &hbad, 1, &out, false, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &cflat, &h, 1, &out, false, &work), SHAPE);
  /* A lone control point takes no h. */
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c1, &h, 1, &out, false, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &over, &h, 1, &out, false, &work),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, &h, 1, &out, false, &ws),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, &h, -1, &out, false, &work),
                   DYNB_STATUS_PARAM_OUT_OF_BOUND);
  TU_EXPECT_STATUS(ctx, dynb__timereg_forward(ctx, &c, &h, NAN, &out, false, &work),
                   DYNB_STATUS_PARAM_OUT_OF_BOUND);
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, NULL, &h, 1, &dc), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, &c, &h, 1, NULL), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, &c, NULL, 1, &dc), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, &c, &hbad, 1, &dc), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, &c, &h, 1, &cflat), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, &c, &h, 1, &ci), INV);
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, &c, &h, INFINITY, &dc),
                   DYNB_STATUS_PARAM_OUT_OF_BOUND);
  over = dc;
  over.offset = 1;
  TU_EXPECT_STATUS(ctx, dynb__timereg_backward(ctx, &c, &h, 1, &over),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  /* Nothing was enqueued: out and dcontrols are as uploaded. */
  double got[30];
  tu_download(ctx, &dc, got);
  for (int i = 0; i < 30; i++) assert_true(got[i] == (float)c0[i]);
  tu_download(ctx, &out, &got_o);
  assert_true(got_o == 0.5);
  dynb__tensor_release(&c), dynb__tensor_release(&dc), dynb__tensor_release(&c1);
  dynb__tensor_release(&cflat), dynb__tensor_release(&ci), dynb__tensor_release(&h);
  dynb__tensor_release(&hbad), dynb__tensor_release(&h64), dynb__tensor_release(&out);
  dynb__tensor_release(&work), dynb__tensor_release(&ws);
  free(c0);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(forward_matches_reference),
      cmocka_unit_test(backward_matches_reference_and_fd),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
