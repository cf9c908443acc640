/* Softmax cross-entropy, mean over the batch, with the accuracy count. */
#include <stdio.h>

#include "ops/ops.h"

/* Per-row losses, then per-row correct flags. */
size_t dynb__xent_workspace(int64_t n) { return n > 0 ? 2 * (size_t)n : 0; }

/* Checks logits: [N, K] (real) and labels: [N] (I32). */
static dynb_status check_logits_labels(dynb_ctx *ctx, const char *op, const dynb__tensor *logits,
                                       const dynb__tensor *labels) {
  DYNB_CHECK(ctx, logits != NULL && labels != NULL, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: %s is NULL", op, logits ? "labels" : "logits");
  char what[64];
  snprintf(what, sizeof what, "%s: logits", op);
  DYNB_CHECK(ctx, logits->dtype == DYNB_F32 || logits->dtype == DYNB_F64,
             DYNB_STATUS_INVALID_ARGUMENT, "%s has dtype %s; expected f32 or f64", what,
             dynb__dtype_name(logits->dtype));
  DYNB_TRY(dynb__tensor_check(ctx, logits, what, logits->dtype, 2));
  snprintf(what, sizeof what, "%s: labels", op);
  DYNB_TRY(dynb__tensor_check(ctx, labels, what, DYNB_I32, 1));
  DYNB_CHECK(ctx, labels->dims[0] == logits->dims[0], DYNB_STATUS_SHAPE_MISMATCH,
             "%s: %lld labels for %lld rows of logits", op, (long long)labels->dims[0],
             (long long)logits->dims[0]);
  return DYNB_OK;
}

dynb_status dynb__xent_forward(dynb_ctx *ctx, const dynb__tensor *logits,
                               const dynb__tensor *labels, const dynb__tensor *out,
                               const dynb__tensor *work) {
  const char *op = "xent_forward";
  DYNB_TRY(check_logits_labels(ctx, op, logits, labels));
  dynb_dtype dt = logits->dtype;
  DYNB_CHECK(ctx, out != NULL && work != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s is NULL",
             op, out ? "work" : "out");
  DYNB_TRY(dynb__tensor_check(ctx, out, "xent_forward: out", dt, 1));
  DYNB_CHECK(ctx, out->dims[0] == 2, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: out has %lld elements, expected 2 (loss, correct count)", op,
             (long long)out->dims[0]);
  DYNB_TRY(dynb__tensor_check(ctx, work, "xent_forward: work", dt, -1));
  int64_t n = logits->dims[0], k = logits->dims[1];
  size_t need = dynb__xent_workspace(n);
  DYNB_CHECK(ctx, dynb__tensor_numel(work) >= need, DYNB_STATUS_BUFFER_TOO_SMALL,
             "%s: work holds %zu elements, needs %zu", op, dynb__tensor_numel(work), need);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "loss", "dynb_xent_rows", dt));
  dynb__arg_int(&l, (int)n);
  dynb__arg_int(&l, (int)k);
  dynb__arg_tensor(&l, logits);
  dynb__arg_tensor(&l, labels);
  dynb__arg_tensor(&l, work);
  DYNB_TRY(dynb__launch_1d(&l, (size_t)n));
  DYNB_TRY(dynb__launch_begin(&l, ctx, "loss", "dynb_xent_reduce", dt));
  size_t wg = dynb__launch_reduce_wg(&l, dynb__dtype_size(dt));
  dynb__arg_int(&l, (int)n);
  dynb__arg_tensor(&l, work);
  dynb__arg_tensor(&l, out);
  dynb__arg_local(&l, wg * dynb__dtype_size(dt));
  return dynb__launch_run(&l, 1, &wg, &wg);
}

dynb_status dynb__xent_backward(dynb_ctx *ctx, const dynb__tensor *logits,
                                const dynb__tensor *labels, double scale,
                                const dynb__tensor *dlogits, bool acc) {
  const char *op = "xent_backward";
  DYNB_TRY(check_logits_labels(ctx, op, logits, labels));
  dynb_dtype dt = logits->dtype;
  DYNB_CHECK(ctx, dlogits != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: dlogits is NULL", op);
  DYNB_TRY(dynb__tensor_check(ctx, dlogits, "xent_backward: dlogits", dt, 2));
  DYNB_TRY(dynb__tensor_check_same(ctx, logits, "xent_backward: logits", dlogits, "dlogits"));
  int64_t n = logits->dims[0], k = logits->dims[1];
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "loss", "dynb_xent_backward", dt));
  dynb__arg_int(&l, (int)n);
  dynb__arg_int(&l, (int)k);
  dynb__arg_tensor(&l, logits);
  dynb__arg_tensor(&l, labels);
  dynb__arg_real(&l, scale);
  dynb__arg_tensor(&l, dlogits);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, (size_t)n);
}

