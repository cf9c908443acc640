/* Runge–Kutta stage combination: kernel against reference, adjoint against
 * finite differences, argument checks. */
#include "testutil.h"
#include "ref/ref.h"

/* The combination is a short sum of products: in float each term rounds
 * with relative error 2^-24 and at most 7 terms are added, so 1e-6
 * relative (plus 1e-6 absolute near zero) bounds it with margin; in double
 * the same argument gives 1e-14. */
static double rtol_for(dynb_dtype dt) { return dt == DYNB_F32 ? 1e-6 : 1e-14; }

static void ref_hand_checked(void **state) {
  (void)state;
  const double y[2] = {1, 2}, k[4] = {10, 20, 30, 40}, coef[2] = {0.5, -1};
  double out[2], dy[2], dk[4];
  ref_rk_combine(2, 2, y, k, coef, out);
  assert_true(out[0] == 1 + 5 - 30 && out[1] == 2 + 10 - 40);
  const double dout[2] = {3, 4};
  ref_rk_combine_backward(2, 2, dout, coef, dy, dk);
  assert_true(dy[0] == 3 && dk[1] == 2 && dk[2] == -3 && dk[3] == -4);
}

static void combine_case(dynb_ctx *ctx, dynb_dtype dt, int64_t n, int64_t c, int64_t h,
                         int64_t w, int S, bool alias) {
  tu_rng r = tu_rng_seed((uint64_t)(n * 1000 + c * 100 + h * 10 + w + S));
  size_t p = (size_t)(n * c * h * w);
  double *y = tu_random(&r, p, -1, 1), *k = tu_random(&r, p * S, -1, 1);
  double coef[8], *want = malloc(p * sizeof *want), *got = malloc(p * sizeof *got);
  for (int j = 0; j < S; j++) coef[j] = (j % 3 == 1) ? 0.0 : tu_uniform(&r, -0.5, 0.5);
  int64_t ydims[4] = {n, c, h, w}, kdims[5] = {S, n, c, h, w}, cd = S;
  int64_t kflat[2] = {S, (int64_t)p};
  (void)kdims;
  dynb__tensor ty = tu_upload(ctx, dt, 4, ydims, y), tk = tu_upload(ctx, dt, 2, kflat, k);
  dynb__tensor tc = tu_upload(ctx, dt, 1, &cd, coef);
  dynb__tensor to = alias ? ty : tu_upload(ctx, dt, 4, ydims, NULL);
  TU_OK(ctx, dynb__rk_combine(ctx, &ty, &tk, &tc, &to));
  tu_download(ctx, &to, got);
  ref_rk_combine(p, S, y, k, coef, want);
  char what[96];
  if (!alias) { /* without y: the pure combination, as the adjoint uses it */
    double *zeros = calloc(p, sizeof *zeros), *got0 = malloc(p * sizeof *got0);
    double *want0 = malloc(p * sizeof *want0);
    TU_OK(ctx, dynb__rk_combine(ctx, NULL, &tk, &tc, &to));
    tu_download(ctx, &to, got0);
    ref_rk_combine(p, S, zeros, k, coef, want0);
    snprintf(what, sizeof what, "rk_combine %s S=%d p=%zu without y", dynb__dtype_name(dt), S, p);
    tu_assert_close(what, got0, want0, p, rtol_for(dt), rtol_for(dt));
    TU_OK(ctx, dynb__rk_combine(ctx, &ty, &tk, &tc, &to));
    free(zeros), free(got0), free(want0);
  }
  snprintf(what, sizeof what, "rk_combine %s S=%d p=%zu%s", dynb__dtype_name(dt), S, p,
           alias ? " in place" : "");
  tu_assert_close(what, got, want, p, rtol_for(dt), rtol_for(dt));
  if (!alias) dynb__tensor_release(&to);
  dynb__tensor_release(&ty);
  dynb__tensor_release(&tk);
  dynb__tensor_release(&tc);
  free(y), free(k), free(want), free(got);
}

static void combine_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    combine_case(ctx, dt, 1, 1, 1, 1, 1, false);
    combine_case(ctx, dt, 2, 3, 7, 5, 4, false);  /* RK4's four stages, odd sizes */
    combine_case(ctx, dt, 1, 17, 13, 9, 6, false); /* 1989 elements: not a multiple of 64 */
    combine_case(ctx, dt, 5, 16, 32, 32, 4, true); /* in place, as y_{k+1} overwrites y_k */
  }
  dynb_ctx_free(ctx);
}

/* Adjoint against the reference, with accumulation, then against central
 * differences of L = Σ w ⊙ combine(y, K) in double. */
typedef struct fd_ctx {
  size_t p;
  int S;
  double *y, *k, *coef, *w, *tmp;
} fd_ctx;

static double fd_loss_k(void *user) {
  fd_ctx *c = user;
  ref_rk_combine(c->p, c->S, c->y, c->k, c->coef, c->tmp);
  return tu_dot(c->w, c->tmp, c->p);
}

static void backward_matches_reference_and_fd(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    tu_rng r = tu_rng_seed(7 + d);
    const int S = 4;
    const size_t p = 7 * 5 * 3;
    double *dout = tu_random(&r, p, -1, 1), coef[4] = {0.1, 0, 0.3, -0.2};
    double *dy0 = tu_random(&r, p, -1, 1), *dk0 = tu_random(&r, p * S, -1, 1);
    double *dy = malloc(p * sizeof *dy), *dk = malloc(p * S * sizeof *dk);
    double *want_dy = malloc(p * sizeof *dy), *want_dk = malloc(p * S * sizeof *dk);
    int64_t pd = (int64_t)p, kd[2] = {S, (int64_t)p}, cd = S;
    dynb__tensor tdout = tu_upload(ctx, dt, 1, &pd, dout), tc = tu_upload(ctx, dt, 1, &cd, coef);
    dynb__tensor tdy = tu_upload(ctx, dt, 1, &pd, dy0), tdk = tu_upload(ctx, dt, 2, kd, dk0);
    /* acc = true on both: results add to what was there. */
    TU_OK(ctx, dynb__rk_combine_backward(ctx, &tdout, &tc, &tdy, &tdk, true, true));
    tu_download(ctx, &tdy, dy);
    tu_download(ctx, &tdk, dk);
    ref_rk_combine_backward(p, S, dout, coef, want_dy, want_dk);
    for (size_t i = 0; i < p; i++) want_dy[i] += dy0[i];
    for (size_t i = 0; i < p * S; i++) want_dk[i] += dk0[i];
    tu_assert_close(dt == DYNB_F32 ? "rk_combine_backward f32 dy" : "rk_combine_backward f64 dy",
                    dy, want_dy, p, rtol_for(dt), rtol_for(dt));
    tu_assert_close(dt == DYNB_F32 ? "rk_combine_backward f32 dk" : "rk_combine_backward f64 dk",
                    dk, want_dk, p * S, rtol_for(dt), rtol_for(dt));
    /* acc = false overwrites, including stages whose coefficient is 0; dy NULL is allowed. */
    TU_OK(ctx, dynb__rk_combine_backward(ctx, &tdout, &tc, NULL, &tdk, false, false));
    tu_download(ctx, &tdk, dk);
    ref_rk_combine_backward(p, S, dout, coef, want_dy, want_dk);
    tu_assert_close("rk_combine_backward overwrite", dk, want_dk, p * S, rtol_for(dt),
                    rtol_for(dt));
    if (dt == DYNB_F64) {
      /* The op is linear, so central differences are exact up to rounding:
       * the tolerance 1e-8 covers the cancellation of sums of order 1 at step 1e-3. */
      fd_ctx c = {p, S, tu_random(&r, p, -1, 1), tu_random(&r, p * S, -1, 1), coef, dout,
                  malloc(p * sizeof(double))};
      tu_check_gradient("rk_combine d/dK", fd_loss_k, &c, c.k, p * S, want_dk, 1e-3, 1e-8, 200);
      free(c.y), free(c.k), free(c.tmp);
    }
    dynb__tensor_release(&tdout), dynb__tensor_release(&tc);
    dynb__tensor_release(&tdy), dynb__tensor_release(&tdk);
    free(dout), free(dy0), free(dk0), free(dy), free(dk), free(want_dy), free(want_dk);
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t p = 10, kd[2] = {3, 10}, kbad[2] = {3, 9}, cd = 3, c2 = 2;
  dynb__tensor y = tu_upload(ctx, DYNB_F32, 1, &p, NULL), k = tu_upload(ctx, DYNB_F32, 2, kd, NULL);
  dynb__tensor kb = tu_upload(ctx, DYNB_F32, 2, kbad, NULL), c = tu_upload(ctx, DYNB_F32, 1, &cd, NULL);
  dynb__tensor cshort = tu_upload(ctx, DYNB_F32, 1, &c2, NULL);
  dynb__tensor yd = tu_upload(ctx, DYNB_I32, 1, &p, NULL);
  TU_EXPECT_STATUS(ctx, dynb__rk_combine(ctx, &y, &k, &c, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__rk_combine(ctx, &y, &kb, &c, &y), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__rk_combine(ctx, &y, &k, &cshort, &y), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__rk_combine(ctx, &yd, &k, &c, &yd), DYNB_STATUS_INVALID_ARGUMENT);
  /* A view one element past its buffer. */
  dynb__tensor over = y;
  over.offset = 1;
  TU_EXPECT_STATUS(ctx, dynb__rk_combine(ctx, &over, &k, &c, &y), DYNB_STATUS_BUFFER_TOO_SMALL);
  dynb__tensor nobuf = y;
  nobuf.mem = NULL;
  TU_EXPECT_STATUS(ctx, dynb__rk_combine_backward(ctx, &y, &c, &nobuf, &k, false, false),
                   DYNB_STATUS_INVALID_ARGUMENT);
  dynb__tensor_release(&y), dynb__tensor_release(&k), dynb__tensor_release(&kb);
  dynb__tensor_release(&c), dynb__tensor_release(&cshort), dynb__tensor_release(&yd);
  dynb_ctx_free(ctx);
}

/* lincomb (the two-step schemes' state update): a hand-checked value, then
 * the kernel against ref_lincomb on edge sizes (one element; odd sizes not
 * a multiple of any work-group size), with y and z absent, and in place
 * (out aliasing x, as a leapfrog state overwrites the one two steps back).
 * Three products and two sums: the bound of rtol_for holds. */
static void lincomb_case(dynb_ctx *ctx, dynb_dtype dt, int64_t p, int terms, bool alias) {
  tu_rng r = tu_rng_seed((uint64_t)(p * 10 + terms));
  double *x = tu_random(&r, (size_t)p, -1, 1), *y = tu_random(&r, (size_t)p, -1, 1);
  double *z = tu_random(&r, (size_t)p, -1, 1), *want = malloc((size_t)p * sizeof *want);
  double *got = malloc((size_t)p * sizeof *got), a = 1.25, b = -0.75, c = 0.3;
  dynb__tensor tx = tu_upload(ctx, dt, 1, &p, x), ty = tu_upload(ctx, dt, 1, &p, y);
  dynb__tensor tz = tu_upload(ctx, dt, 1, &p, z);
  dynb__tensor to = alias ? tx : tu_upload(ctx, dt, 1, &p, NULL);
  TU_OK(ctx, dynb__lincomb(ctx, a, &tx, b, terms > 1 ? &ty : NULL, c, terms > 2 ? &tz : NULL,
                           &to));
  tu_download(ctx, &to, got);
  ref_lincomb((size_t)p, a, x, b, terms > 1 ? y : NULL, c, terms > 2 ? z : NULL, want);
  char what[96];
  snprintf(what, sizeof what, "lincomb %s p=%lld terms=%d%s", dynb__dtype_name(dt), (long long)p,
           terms, alias ? " in place" : "");
  tu_assert_close(what, got, want, (size_t)p, rtol_for(dt), rtol_for(dt));
  if (!alias) dynb__tensor_release(&to);
  dynb__tensor_release(&tx), dynb__tensor_release(&ty), dynb__tensor_release(&tz);
  free(x), free(y), free(z), free(want), free(got);
}

static void lincomb_matches_reference(void **state) {
  (void)state;
  double x[2] = {1, 2}, y[2] = {3, -1}, z[2] = {0.5, 4}, out[2];
  ref_lincomb(2, 2, x, -1, y, 4, z, out); /* 2 - 3 + 2 = 1; 4 + 1 + 16 = 21 */
  assert_true(out[0] == 1 && out[1] == 21);
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    lincomb_case(ctx, dt, 1, 3, false);
    lincomb_case(ctx, dt, 1989, 1, false);
    lincomb_case(ctx, dt, 1989, 2, false);
    lincomb_case(ctx, dt, 4097, 3, true);
  }
  int64_t p = 10, q = 9;
  dynb__tensor a = tu_upload(ctx, DYNB_F32, 1, &p, NULL), b = tu_upload(ctx, DYNB_F32, 1, &q, NULL);
  TU_EXPECT_STATUS(ctx, dynb__lincomb(ctx, 1, &a, 1, &b, 0, NULL, &a), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__lincomb(ctx, 1, NULL, 1, NULL, 0, NULL, &a),
                   DYNB_STATUS_INVALID_ARGUMENT);
  dynb__tensor_release(&a), dynb__tensor_release(&b);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(combine_matches_reference),
      cmocka_unit_test(backward_matches_reference_and_fd),
      cmocka_unit_test(bad_arguments_are_reported),
      cmocka_unit_test(lincomb_matches_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
