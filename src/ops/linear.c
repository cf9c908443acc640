/* The fully connected layer, y = x wᵀ + b: CLBlast GEMMs plus the shared
 * per-channel helpers (a [N, O] tensor is [N, C] with C = O). */
#include <stdio.h>

#include "ops/ops.h"

/* The dtype of an op's first input picks the kernel build: f32 or f64. */
static dynb_status check_real(dynb_ctx *ctx, const char *op, const char *name, dynb_dtype dt) {
  DYNB_CHECK(ctx, dt == DYNB_F32 || dt == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: %s has dtype %s; expected f32 or f64", op, name, dynb__dtype_name(dt));
  return DYNB_OK;
}

/* Checks `t` as the rank-`ndim` argument `name` of `op`, dtype dt, and its
 * leading dims against rows, cols (cols ignored for rank 1). */
static dynb_status check_mat(dynb_ctx *ctx, const char *op, const dynb__tensor *t,
                             const char *name, dynb_dtype dt, int ndim, int64_t rows,
                             int64_t cols) {
  char what[64];
  snprintf(what, sizeof what, "%s: %s", op, name);
  DYNB_CHECK(ctx, t != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s is NULL", what);
  DYNB_TRY(dynb__tensor_check(ctx, t, what, dt, ndim));
  bool ok = t->dims[0] == rows && (ndim == 1 || t->dims[1] == cols);
  if (ndim == 1)
    DYNB_CHECK(ctx, ok, DYNB_STATUS_SHAPE_MISMATCH, "%s is [%lld], expected [%lld]", what,
               (long long)t->dims[0], (long long)rows);
  DYNB_CHECK(ctx, ok, DYNB_STATUS_SHAPE_MISMATCH, "%s is [%lld, %lld], expected [%lld, %lld]",
             what, (long long)t->dims[0], (long long)t->dims[1], (long long)rows,
             (long long)cols);
  return DYNB_OK;
}

/* Checks x: [N, I] and w: [O, I] and returns N, I, O. */
static dynb_status check_xw(dynb_ctx *ctx, const char *op, const dynb__tensor *x,
                            const dynb__tensor *w, int64_t *n, int64_t *in, int64_t *out) {
  DYNB_CHECK(ctx, x != NULL && w != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
             x ? "w" : "x");
  DYNB_TRY(check_real(ctx, op, "x", x->dtype));
  char what[64];
  snprintf(what, sizeof what, "%s: x", op);
  DYNB_TRY(dynb__tensor_check(ctx, x, what, x->dtype, 2));
  *n = x->dims[0];
  *in = x->dims[1];
  snprintf(what, sizeof what, "%s: w", op);
  DYNB_TRY(dynb__tensor_check(ctx, w, what, x->dtype, 2));
  *out = w->dims[0];
  DYNB_CHECK(ctx, w->dims[1] == *in, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: w is [%lld, %lld] for inputs of %lld features", op, (long long)w->dims[0],
             (long long)w->dims[1], (long long)*in);
  return DYNB_OK;
}

dynb_status dynb__linear_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *w,
                                 const dynb__tensor *b, const dynb__tensor *y) {
  const char *op = "linear_forward";
  int64_t n = 0, in = 0, out = 0;
  DYNB_TRY(check_xw(ctx, op, x, w, &n, &in, &out));
  if (b) DYNB_TRY(check_mat(ctx, op, b, "b", x->dtype, 1, out, 0));
  DYNB_TRY(check_mat(ctx, op, y, "y", x->dtype, 2, n, out));
  /* y[N, O] = x[N, I] · w[O, I]ᵀ */
  dynb__gemm_args g = {.trans_b = true, .m = (size_t)n, .n = (size_t)out, .k = (size_t)in,
                       .alpha = 1, .beta = 0, .a = x, .lda = (size_t)in, .b = w,
                       .ldb = (size_t)in, .c = y, .ldc = (size_t)out};
  DYNB_TRY(dynb__gemm(ctx, &g));
  return b ? dynb__bias_add(ctx, y, b) : DYNB_OK;
}

dynb_status dynb__linear_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *w,
                                  const dynb__tensor *dy, const dynb__tensor *dx,
                                  const dynb__tensor *dw, const dynb__tensor *db, bool acc_dx,
                                  bool acc_params) {
  const char *op = "linear_backward";
  int64_t n = 0, in = 0, out = 0;
  DYNB_TRY(check_xw(ctx, op, x, w, &n, &in, &out));
  dynb_dtype dt = x->dtype;
  DYNB_TRY(check_mat(ctx, op, dy, "dy", dt, 2, n, out));
  if (dx) DYNB_TRY(check_mat(ctx, op, dx, "dx", dt, 2, n, in));
  if (dw) DYNB_TRY(check_mat(ctx, op, dw, "dw", dt, 2, out, in));
  if (db) DYNB_TRY(check_mat(ctx, op, db, "db", dt, 1, out, 0));
  if (dx) { /* dx[N, I] (+)= dy[N, O] · w[O, I] */
    dynb__gemm_args g = {.m = (size_t)n, .n = (size_t)in, .k = (size_t)out, .alpha = 1,
                         .beta = acc_dx ? 1 : 0, .a = dy, .lda = (size_t)out, .b = w,
                         .ldb = (size_t)in, .c = dx, .ldc = (size_t)in};
    DYNB_TRY(dynb__gemm(ctx, &g));
  }
  if (dw) { /* dw[O, I] (+)= dy[N, O]ᵀ · x[N, I] */
    dynb__gemm_args g = {.trans_a = true, .m = (size_t)out, .n = (size_t)in, .k = (size_t)n,
                         .alpha = 1, .beta = acc_params ? 1 : 0, .a = dy, .lda = (size_t)out,
                         .b = x, .ldb = (size_t)in, .c = dw, .ldc = (size_t)in};
    DYNB_TRY(dynb__gemm(ctx, &g));
  }
  return db ? dynb__channel_sum(ctx, dy, db, acc_params) : DYNB_OK;
}
