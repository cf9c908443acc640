/* Per-channel bias and sums, and the whole-tensor sum: kernels against the
 * references, accumulation, edge sizes and argument checks. */
#include "testutil.h"
#include "ref/ref.h"

/* A sum of m terms of size ≤ 1 in float: each partial sum rounds with
 * relative error 2^-24, so |error| ≤ m·2^-24·Σ|x|; with m up to ~3000
 * and Σ|x| ~ m/2 the bound 2e-4·(1 + |want|) holds with margin. In double
 * the same argument with 2^-53 gives 1e-12. */
static double tol(dynb_dtype dt) { return dt == DYNB_F32 ? 2e-4 : 1e-12; }

static void ref_hand_checked(void **state) {
  (void)state;
  /* n=2, c=2, s=2: x = [[1,2],[3,4]] for image 0, [[5,6],[7,8]] for image 1 */
  const double x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[2] = {10, 20};
  double out[2], y[8];
  ref_channel_sum(2, 2, 2, x, out);
  assert_true(out[0] == 1 + 2 + 5 + 6 && out[1] == 3 + 4 + 7 + 8);
  memcpy(y, x, sizeof y);
  ref_bias_add(2, 2, 2, y, b);
  assert_true(y[0] == 11 && y[2] == 23 && y[5] == 16 && y[7] == 28);
}

static void channel_case(dynb_ctx *ctx, dynb_dtype dt, int64_t n, int64_t c, int64_t h, int64_t w) {
  tu_rng r = tu_rng_seed((uint64_t)(n * 31 + c * 7 + h * 3 + w));
  size_t p = (size_t)(n * c * h * w);
  int s = (int)(h * w);
  int64_t dims[4] = {n, c, h, w};
  double *x = tu_random(&r, p, -1, 1), *b = tu_random(&r, (size_t)c, -1, 1);
  double *got = malloc(p * sizeof *got), *want = malloc(p * sizeof *want);
  double *sum0 = tu_random(&r, (size_t)c, -1, 1), sumgot[64], sumwant[64];
  dynb__tensor tx = tu_upload(ctx, dt, 4, dims, x), tb = tu_upload(ctx, dt, 1, &c, b);
  dynb__tensor ts = tu_upload(ctx, dt, 1, &c, sum0);
  char what[96];
  TU_OK(ctx, dynb__bias_add(ctx, &tx, &tb));
  tu_download(ctx, &tx, got);
  memcpy(want, x, p * sizeof *want);
  ref_bias_add((int)n, (int)c, s, want, b);
  snprintf(what, sizeof what, "bias_add %s %lldx%lldx%lldx%lld", dynb__dtype_name(dt), (long long)n,
           (long long)c, (long long)h, (long long)w);
  tu_assert_close(what, got, want, p, tol(dt) / 100, tol(dt) / 100);
  tu_write(ctx, &tx, x);
  for (int acc = 0; acc < 2; acc++) {
    tu_write(ctx, &ts, sum0);
    TU_OK(ctx, dynb__channel_sum(ctx, &tx, &ts, acc));
    tu_download(ctx, &ts, sumgot);
    ref_channel_sum((int)n, (int)c, s, x, sumwant);
    for (int64_t i = 0; acc && i < c; i++) sumwant[i] += sum0[i];
    snprintf(what, sizeof what, "channel_sum %s %lldx%lldx%lldx%lld acc=%d", dynb__dtype_name(dt),
             (long long)n, (long long)c, (long long)h, (long long)w, acc);
    tu_assert_close(what, sumgot, sumwant, (size_t)c, tol(dt), tol(dt));
  }
  /* the whole-tensor sum */
  int64_t one = 1, wn = (int64_t)dynb__sum_workspace(ctx, p);
  double total = 0, prior = 0.5, gotsum;
  for (size_t i = 0; i < p; i++) total += x[i];
  dynb__tensor tout = tu_upload(ctx, dt, 1, &one, &prior), twork = tu_upload(ctx, dt, 1, &wn, NULL);
  TU_OK(ctx, dynb__sum(ctx, &tx, &tout, true, &twork));
  tu_download(ctx, &tout, &gotsum);
  double want_sum = total + prior;
  snprintf(what, sizeof what, "sum %s p=%zu", dynb__dtype_name(dt), p);
  tu_assert_close(what, &gotsum, &want_sum, 1, tol(dt), tol(dt));
  dynb__tensor_release(&tx), dynb__tensor_release(&tb), dynb__tensor_release(&ts);
  dynb__tensor_release(&tout), dynb__tensor_release(&twork);
  free(x), free(b), free(got), free(want), free(sum0);
}

static void kernels_match_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    channel_case(ctx, dt, 1, 1, 1, 1);
    channel_case(ctx, dt, 2, 3, 7, 5);
    channel_case(ctx, dt, 1, 17, 13, 9);  /* 1989 elements */
    channel_case(ctx, dt, 5, 2, 1, 1);    /* a linear layer's [N, C] */
    channel_case(ctx, dt, 3, 64, 17, 19); /* more than one work-group of partial sums */
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t d[4] = {2, 3, 4, 5}, c3 = 3, c4 = 4, one = 1;
  dynb__tensor x = tu_upload(ctx, DYNB_F32, 4, d, NULL), b3 = tu_upload(ctx, DYNB_F32, 1, &c3, NULL);
  dynb__tensor b4 = tu_upload(ctx, DYNB_F32, 1, &c4, NULL), o = tu_upload(ctx, DYNB_F32, 1, &one, NULL);
  dynb__tensor bd = tu_upload(ctx, DYNB_F64, 1, &c3, NULL);
  TU_EXPECT_STATUS(ctx, dynb__bias_add(ctx, &x, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__bias_add(ctx, &x, &b4), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__bias_add(ctx, &x, &bd), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__channel_sum(ctx, &x, &b4, false), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__channel_sum(ctx, &b3, &b3, false), DYNB_STATUS_SHAPE_MISMATCH);
  /* a work buffer too small for the partial sums of a large tensor */
  int64_t big = 1 << 16;
  dynb__tensor xb = tu_upload(ctx, DYNB_F32, 1, &big, NULL);
  assert_true(dynb__sum_workspace(ctx, (size_t)big) > 1);
  TU_EXPECT_STATUS(ctx, dynb__sum(ctx, &xb, &o, false, &o), DYNB_STATUS_BUFFER_TOO_SMALL);
  dynb__tensor_release(&xb);
  dynb__tensor past = b3;
  past.offset = 1;
  TU_EXPECT_STATUS(ctx, dynb__channel_sum(ctx, &x, &past, false), DYNB_STATUS_BUFFER_TOO_SMALL);
  dynb__tensor_release(&x), dynb__tensor_release(&b3), dynb__tensor_release(&b4);
  dynb__tensor_release(&o), dynb__tensor_release(&bd);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(kernels_match_reference),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
