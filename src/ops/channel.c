/* Per-channel bias and sums, and whole-tensor sums: the small reductions
 * that bias gradients, norm parameters and losses share. */
#include "ops/ops.h"

/* Splits a [N, C, ...] tensor into N, C and the product S of the rest. */
static dynb_status ncs(dynb_ctx *ctx, const dynb__tensor *t, const char *name, int *n, int *c,
                       int *s) {
  DYNB_CHECK(ctx, t->ndim >= 2, DYNB_STATUS_SHAPE_MISMATCH, "%s: rank %d, expected >= 2", name,
             t->ndim);
  *n = (int)t->dims[0];
  *c = (int)t->dims[1];
  *s = (int)(dynb__tensor_numel(t) / ((size_t)*n * (size_t)*c));
  return DYNB_OK;
}

dynb_status dynb__bias_add(dynb_ctx *ctx, const dynb__tensor *y, const dynb__tensor *b) {
  DYNB_CHECK(ctx, y && b, DYNB_STATUS_INVALID_ARGUMENT, "bias_add: NULL tensor");
  DYNB_TRY(dynb__tensor_check(ctx, y, "bias_add: y", y->dtype, -1));
  DYNB_TRY(dynb__tensor_check(ctx, b, "bias_add: b", y->dtype, 1));
  int n = 0, c = 0, s = 0;
  DYNB_TRY(ncs(ctx, y, "bias_add: y", &n, &c, &s));
  DYNB_CHECK(ctx, b->dims[0] == c, DYNB_STATUS_SHAPE_MISMATCH,
             "bias_add: b has %lld entries for %d channels", (long long)b->dims[0], c);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "channel", "dynb_bias_add", y->dtype));
  dynb__arg_int(&l, n);
  dynb__arg_int(&l, c);
  dynb__arg_int(&l, s);
  dynb__arg_tensor(&l, y);
  dynb__arg_tensor(&l, b);
  return dynb__launch_1d(&l, dynb__tensor_numel(y));
}

dynb_status dynb__channel_sum(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *out,
                              bool acc) {
  DYNB_CHECK(ctx, x && out, DYNB_STATUS_INVALID_ARGUMENT, "channel_sum: NULL tensor");
  DYNB_TRY(dynb__tensor_check(ctx, x, "channel_sum: x", x->dtype, -1));
  DYNB_TRY(dynb__tensor_check(ctx, out, "channel_sum: out", x->dtype, 1));
  int n = 0, c = 0, s = 0;
  DYNB_TRY(ncs(ctx, x, "channel_sum: x", &n, &c, &s));
  DYNB_CHECK(ctx, out->dims[0] == c, DYNB_STATUS_SHAPE_MISMATCH,
             "channel_sum: out has %lld entries for %d channels", (long long)out->dims[0], c);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "channel", "dynb_channel_sum", x->dtype));
  size_t wg = dynb__launch_reduce_wg(&l, dynb__dtype_size(x->dtype));
  dynb__arg_int(&l, n);
  dynb__arg_int(&l, c);
  dynb__arg_int(&l, s);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, out);
  dynb__arg_int(&l, acc);
  dynb__arg_local(&l, wg * dynb__dtype_size(x->dtype));
  size_t global = (size_t)c * wg;
  return dynb__launch_run(&l, 1, &global, &wg);
}

/* Number of work-groups of the first pass: enough to keep every compute
 * unit busy, few enough for one work-group to finish the job. Depends only
 * on n (not on the kernel's work-group size, which the workspace must not
 * wait for), so the reduction order is fixed. */
static size_t sum_groups(size_t n) {
  size_t g = (n + DYNB__REDUCE_MAX - 1) / DYNB__REDUCE_MAX;
  return g < 1 ? 1 : g > 256 ? 256 : g;
}

size_t dynb__sum_workspace(dynb_ctx *ctx, size_t n) {
  (void)ctx;
  return sum_groups(n);
}

dynb_status dynb__sum(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *out, bool acc,
                      const dynb__tensor *work) {
  DYNB_CHECK(ctx, x && out && work, DYNB_STATUS_INVALID_ARGUMENT, "sum: NULL tensor");
  DYNB_TRY(dynb__tensor_check(ctx, x, "sum: x", x->dtype, -1));
  DYNB_TRY(dynb__tensor_check(ctx, out, "sum: out", x->dtype, -1));
  DYNB_TRY(dynb__tensor_check(ctx, work, "sum: work", x->dtype, -1));
  size_t n = dynb__tensor_numel(x), groups = sum_groups(n);
  DYNB_CHECK(ctx, dynb__tensor_numel(work) >= groups, DYNB_STATUS_BUFFER_TOO_SMALL,
             "sum: work holds %zu elements, needs %zu", dynb__tensor_numel(work), groups);
  size_t es = dynb__dtype_size(x->dtype);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "channel", "dynb_sum_partial", x->dtype));
  size_t wg = dynb__launch_reduce_wg(&l, es);
  dynb__arg_int(&l, (int)n);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, work);
  dynb__arg_local(&l, wg * es);
  size_t global = groups * wg;
  DYNB_TRY(dynb__launch_run(&l, 1, &global, &wg));
  DYNB_TRY(dynb__launch_begin(&l, ctx, "channel", "dynb_sum_final", x->dtype));
  wg = dynb__launch_reduce_wg(&l, es);
  dynb__arg_int(&l, (int)groups);
  dynb__arg_tensor(&l, work);
  dynb__arg_tensor(&l, out);
  dynb__arg_int(&l, acc);
  dynb__arg_local(&l, wg * es);
  return dynb__launch_run(&l, 1, &wg, &wg);
}
