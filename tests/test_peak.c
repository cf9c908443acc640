/* The peak-FMA microkernel (kernels/peak.cl): the reference on hand-computed
 * cases, every width against the reference on sizes that are not multiples
 * of the work-group (64), with the elements past n left alone, argument
 * checks, and the measurement. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

static void ref_hand_checked(void **state) {
  (void)state;
  /* m = 0.5, a = 1. One chain, one lane, i = 0: x = 0.5 → 0.5·0.5 + 1 = 1.25
   * → 1.25·0.5 + 1 = 1.625. */
  assert_true(ref_peak_fma(0, 1, 1, 1, 0.5, 1) == 1.25);
  assert_true(ref_peak_fma(0, 1, 1, 2, 0.5, 1) == 1.625);
  /* Chain 1 starts at 0.5 + 1/32 = 0.53125 → 1.265625; with chain 0: 2.515625. */
  assert_true(ref_peak_fma(0, 1, 2, 1, 0.5, 1) == 2.515625);
  /* Lane 1 starts at 0.5 + 1/512 = 0.501953125 → 1.2509765625; with lane 0:
   * 2.5009765625. */
  assert_true(ref_peak_fma(0, 2, 1, 1, 0.5, 1) == 2.5009765625);
  /* i = 15, chain 1: (15 + 1) & 15 = 0, back to 0.5; chain 0 starts at
   * 0.5 + 15/32 = 0.96875. No steps: 1.46875. */
  assert_true(ref_peak_fma(15, 1, 2, 0, 0.5, 1) == 1.46875);
}

/* One width, n work-items at element offset 5 of a buffer whose n + 7
 * elements start as -7: out[0..n) against the reference, the rest still -7.
 * Tolerance: a chain's fma rounds once per step (u relative) and its errors
 * shrink by m = 0.75 each step, so a value is off by at most
 * u·max|x| / (1 - m) = 4u·max|x|; the 8·W ≤ 128 positive values are then
 * summed in a tree of depth ≤ 7, adding ≤ 7u·Σ|x| = 7u·|sum|. So 11u
 * relative; 16u checked. */
static void width_case(dynb_ctx *ctx, dynb_dtype dt, int width, int n, int iters) {
  const double m = 0.75, a = 0.125;
  size_t total = (size_t)n + 7;
  double *init = malloc(total * sizeof *init), *got = malloc(total * sizeof *got);
  double *want = malloc((size_t)n * sizeof *want);
  for (size_t i = 0; i < total; i++) init[i] = -7;
  int64_t d = (int64_t)total;
  dynb__tensor base, out = tu_upload_at(ctx, dt, 1, &d, init, 5, &base);
  TU_OK(ctx, dynb__peak_fma(ctx, &out, width, n, iters, m, a));
  tu_download(ctx, &out, got);
  for (int i = 0; i < n; i++) want[i] = ref_peak_fma(i, width, DYNB__PEAK_CHAINS, iters, m, a);
  char what[96];
  snprintf(what, sizeof what, "peak_fma %s width %d n %d iters %d", dynb__dtype_name(dt), width,
           n, iters);
  tu_assert_close(what, got, want, (size_t)n, 16 * tu_unit(dt), 0);
  for (size_t i = (size_t)n; i < total; i++) assert_true(got[i] == -7);
  dynb__tensor_release(&base);
  free(init), free(got), free(want);
}

static void matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  const int ns[] = {1, 63, 65, 130}, iters[] = {0, 1, 5, 33};
  for (int dt = 0; dt < 2; dt++) {
    dynb_dtype real = dt ? DYNB_F64 : DYNB_F32;
    if (real == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (int w = 0; w < DYNB__PEAK_NWIDTHS; w++)
      for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        width_case(ctx, real, dynb__peak_widths[w], ns[i], iters[(i + (size_t)w) % 4]);
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t d = 10;
  dynb__tensor out = tu_upload(ctx, DYNB_F32, 1, &d, NULL);
  TU_EXPECT_STATUS(ctx, dynb__peak_fma(ctx, &out, 3, 10, 1, 0.5, 0.5),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__peak_fma(ctx, &out, 4, 11, 1, 0.5, 0.5),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__peak_fma(ctx, &out, 4, 0, 1, 0.5, 0.5),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__peak_fma(ctx, NULL, 4, 1, 1, 0.5, 0.5),
                   DYNB_STATUS_INVALID_ARGUMENT);
  dynb__peak p;
  TU_EXPECT_STATUS(ctx, dynb__peak_measure(ctx, DYNB_F32, 0, &p), DYNB_STATUS_INVALID_ARGUMENT);
  dynb__tensor_release(&out);
  dynb_ctx_free(ctx);
}

/* The measurement gives a rate and names a width it tried. Its value is
 * the device's: only its sign and finiteness can be asserted here. */
static void measure_reports_a_rate(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb__peak p = {0};
  TU_OK(ctx, dynb__peak_measure(ctx, DYNB_F32, 0.002, &p));
  assert_true(isfinite(p.gflops) && p.gflops > 0);
  bool known = false;
  for (int w = 0; w < DYNB__PEAK_NWIDTHS; w++) known |= p.width == dynb__peak_widths[w];
  assert_true(known);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(matches_reference),
      cmocka_unit_test(bad_arguments_are_reported),
      cmocka_unit_test(measure_reports_a_rate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
