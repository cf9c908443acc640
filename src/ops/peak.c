/* The device's measured peak FMA rate (kernels/peak.cl): the denominator of
 * `dynblocks bench`'s fraction of peak. Like dynb__conv2d_prepare, the
 * measurement waits for the device; the kernel launch itself does not. */
#include "ops/ops.h"

const int dynb__peak_widths[DYNB__PEAK_NWIDTHS] = {1, 4, 8, 16};

dynb_status dynb__peak_fma(dynb_ctx *ctx, const dynb__tensor *out, int width, int n, int iters,
                           double m, double a) {
  DYNB_CHECK(ctx, out != NULL, DYNB_STATUS_INVALID_ARGUMENT, "peak: out is NULL");
  DYNB_TRY(dynb__tensor_check(ctx, out, "peak: out", out->dtype, -1));
  DYNB_TRY(dynb__check_real(ctx, out->dtype));
  const char *name = NULL;
  switch (width) {
    case 1: name = "dynb_peak_fma_v1"; break;
    case 4: name = "dynb_peak_fma_v4"; break;
    case 8: name = "dynb_peak_fma_v8"; break;
    case 16: name = "dynb_peak_fma_v16"; break;
    default: break;
  }
  DYNB_CHECK(ctx, name, DYNB_STATUS_INVALID_ARGUMENT, "peak: width %d is not 1, 4, 8 or 16",
             width);
  DYNB_CHECK(ctx, n >= 1 && iters >= 0, DYNB_STATUS_INVALID_ARGUMENT,
             "peak: n must be >= 1 and iters >= 0 (got %d, %d)", n, iters);
  DYNB_CHECK(ctx, dynb__tensor_numel(out) >= (size_t)n, DYNB_STATUS_BUFFER_TOO_SMALL,
             "peak: out holds %zu elements, n is %d", dynb__tensor_numel(out), n);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "peak", name, out->dtype));
  dynb__arg_tensor(&l, out);
  dynb__arg_int(&l, n);
  dynb__arg_int(&l, iters);
  dynb__arg_real(&l, m);
  dynb__arg_real(&l, a);
  /* Groups of 64, or fewer where the kernel or device allows fewer. */
  size_t g = (size_t)n, local = dynb__launch_reduce_wg(&l, 0);
  if (local > 64) local = 64;
  return dynb__launch_run(&l, 1, &g, &local);
}

/* Seconds one launch of `iters` takes, enqueue to completion. */
static dynb_status time_once(dynb_ctx *ctx, const dynb__tensor *out, int width, int n, int iters,
                             double *seconds) {
  double t0 = dynb__now();
  /* m = 0.5 keeps every chain bounded (x → a / (1 - m) = 1): no overflow, no
   * denormal, whatever the count. */
  DYNB_TRY(dynb__peak_fma(ctx, out, width, n, iters, 0.5, 0.5));
  DYNB_TRY(dynb__finish(ctx));
  *seconds = dynb__now() - t0;
  return DYNB_OK;
}

dynb_status dynb__peak_measure(dynb_ctx *ctx, dynb_dtype dt, double run_seconds,
                               dynb__peak *out) {
  DYNB_CHECK(ctx, out && run_seconds > 0, DYNB_STATUS_INVALID_ARGUMENT,
             "peak: NULL result or non-positive run time");
  DYNB_TRY(dynb__check_real(ctx, dt));
  *out = (dynb__peak){0};
  /* Eight work-groups per compute unit: enough to keep every core or SM
   * busy, with the chains inside each work-item supplying the rest. */
  size_t cu = ctx->info.compute_units ? ctx->info.compute_units : 1;
  size_t items = cu * 8 * 64;
  int n = items > (1u << 20) ? 1 << 20 : (int)items;
  int64_t dims = n;
  dynb__tensor buf;
  DYNB_TRY(dynb__tensor_alloc(ctx, dt, 1, &dims, &buf));
  dynb_status st = DYNB_OK;
  for (int w = 0; st == DYNB_OK && w < DYNB__PEAK_NWIDTHS; w++) {
    int width = dynb__peak_widths[w], iters = 16;
    double t = 0, best;
    /* The first launch builds nothing (the program is built at the first
     * dynb__kernel), but may page in code: grow iters until one launch
     * takes run_seconds, then keep the best of that and two more. */
    st = time_once(ctx, &buf, width, n, iters, &t);
    while (st == DYNB_OK && t < run_seconds && iters < (1 << 24)) {
      double grow = t > 0 ? run_seconds / t * 1.2 : 16;
      iters = (int)(iters * (grow < 2 ? 2 : grow > 16 ? 16 : grow));
      if (iters > (1 << 24)) iters = 1 << 24;
      st = time_once(ctx, &buf, width, n, iters, &t);
    }
    best = t;
    for (int r = 0; st == DYNB_OK && r < 2; r++) {
      st = time_once(ctx, &buf, width, n, iters, &t);
      if (t < best) best = t;
    }
    if (st != DYNB_OK || best <= 0) break;
    double flops = 2.0 * n * (double)iters * DYNB__PEAK_CHAINS * width;
    if (flops / best / 1e9 > out->gflops) out->gflops = flops / best / 1e9, out->width = width;
  }
  dynb__tensor_release(&buf);
  return st;
}
