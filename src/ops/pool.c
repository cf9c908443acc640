/* Average pooling: 2x2 with stride 2 between blocks, global at the head. */
#include <stdio.h>

#include "ops/ops.h"

/* The dtype of an op's first input picks the kernel build: f32 or f64. */
static dynb_status check_real(dynb_ctx *ctx, const char *op, const char *name, dynb_dtype dt) {
  DYNB_CHECK(ctx, dt == DYNB_F32 || dt == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: %s has dtype %s; expected f32 or f64", op, name, dynb__dtype_name(dt));
  return DYNB_OK;
}

/* Checks `t` as the [N, C, H, W] argument `name` of `op` with dtype dt. */
static dynb_status check_nchw(dynb_ctx *ctx, const char *op, const dynb__tensor *t,
                              const char *name, dynb_dtype dt) {
  DYNB_CHECK(ctx, t != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, name);
  char what[64];
  snprintf(what, sizeof what, "%s: %s", op, name);
  return dynb__tensor_check(ctx, t, what, dt, 4);
}

/* Writes a shape as "[2, 3, 7, 5]". */
static void shape_str(int ndim, const int64_t *dims, char *buf, size_t cap) {
  size_t at = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && at < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, i ? ", %lld" : "%lld", (long long)dims[i]);
  if (at < cap) snprintf(buf + at, cap - at, "]");
}

/* Checks that `t` has the shape `dims` (rank ndim). */
static dynb_status check_dims(dynb_ctx *ctx, const char *op, const dynb__tensor *t,
                              const char *name, int ndim, const int64_t *dims) {
  bool same = t->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = t->dims[i] == dims[i];
  if (same) return DYNB_OK;
  char got[96], want[96];
  shape_str(t->ndim, t->dims, got, sizeof got);
  shape_str(ndim, dims, want, sizeof want);
  return dynb__fail(ctx, DYNB_STATUS_SHAPE_MISMATCH, "%s: %s has shape %s, expected %s", op, name,
                    got, want);
}

/* The 2x2 pooled shape of a checked [N, C, H, W] input; an input with
 * H < 2 or W < 2 would pool to nothing, which no tensor can hold. */
static dynb_status pooled_dims(dynb_ctx *ctx, const char *op, const dynb__tensor *in,
                               const char *name, int64_t out[4]) {
  DYNB_CHECK(ctx, in->dims[2] >= 2 && in->dims[3] >= 2, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: %s is %lldx%lld; 2x2 pooling needs H >= 2 and W >= 2", op, name,
             (long long)in->dims[2], (long long)in->dims[3]);
  out[0] = in->dims[0];
  out[1] = in->dims[1];
  out[2] = in->dims[2] / 2;
  out[3] = in->dims[3] / 2;
  return DYNB_OK;
}

dynb_status dynb__avgpool2_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *y) {
  const char *op = "avgpool2_forward";
  DYNB_CHECK(ctx, x != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: x is NULL", op);
  dynb_dtype dt = x->dtype;
  DYNB_TRY(check_real(ctx, op, "x", dt));
  DYNB_TRY(check_nchw(ctx, op, x, "x", dt));
  DYNB_TRY(check_nchw(ctx, op, y, "y", dt));
  int64_t want[4];
  DYNB_TRY(pooled_dims(ctx, op, x, "x", want));
  DYNB_TRY(check_dims(ctx, op, y, "y", 4, want));
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "pool", "dynb_avgpool2_forward", dt));
  dynb__arg_int(&l, (int)(x->dims[0] * x->dims[1]));
  dynb__arg_int(&l, (int)x->dims[2]);
  dynb__arg_int(&l, (int)x->dims[3]);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, y);
  return dynb__launch_1d(&l, dynb__tensor_numel(y));
}

dynb_status dynb__avgpool2_backward(dynb_ctx *ctx, const dynb__tensor *dy, const dynb__tensor *dx,
                                    bool acc) {
  const char *op = "avgpool2_backward";
  DYNB_CHECK(ctx, dy != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: dy is NULL", op);
  dynb_dtype dt = dy->dtype;
  DYNB_TRY(check_real(ctx, op, "dy", dt));
  DYNB_TRY(check_nchw(ctx, op, dy, "dy", dt));
  DYNB_TRY(check_nchw(ctx, op, dx, "dx", dt));
  int64_t want[4];
  DYNB_TRY(pooled_dims(ctx, op, dx, "dx", want));
  DYNB_TRY(check_dims(ctx, op, dy, "dy", 4, want));
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "pool", "dynb_avgpool2_backward", dt));
  dynb__arg_int(&l, (int)(dx->dims[0] * dx->dims[1]));
  dynb__arg_int(&l, (int)dx->dims[2]);
  dynb__arg_int(&l, (int)dx->dims[3]);
  dynb__arg_tensor(&l, dy);
  dynb__arg_tensor(&l, dx);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, dynb__tensor_numel(dx));
}

/* Work-group size of the global pooling: the usual reduction size, cut to
 * the smallest power of two covering one plane, so that the 8x8 planes of
 * a network head do not idle 256-item groups. It depends only on the plane
 * size and the device, so the summation tree stays fixed. */
static size_t plane_wg(const dynb__launch *l, size_t s) {
  size_t wg = dynb__launch_reduce_wg(l, dynb__dtype_size(l->real));
  while (wg > 1 && wg / 2 >= s) wg /= 2;
  return wg;
}

dynb_status dynb__global_avgpool_forward(dynb_ctx *ctx, const dynb__tensor *x,
                                         const dynb__tensor *y) {
  const char *op = "global_avgpool_forward";
  DYNB_CHECK(ctx, x != NULL && y != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
             x ? "y" : "x");
  dynb_dtype dt = x->dtype;
  DYNB_TRY(check_real(ctx, op, "x", dt));
  DYNB_TRY(check_nchw(ctx, op, x, "x", dt));
  DYNB_TRY(dynb__tensor_check(ctx, y, "global_avgpool_forward: y", dt, 2));
  DYNB_TRY(check_dims(ctx, op, y, "y", 2, x->dims));
  size_t planes = (size_t)(x->dims[0] * x->dims[1]), s = (size_t)(x->dims[2] * x->dims[3]);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "pool", "dynb_global_avgpool_forward", dt));
  size_t wg = plane_wg(&l, s), global = planes * wg;
  dynb__arg_int(&l, (int)s);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, y);
  dynb__arg_local(&l, wg * dynb__dtype_size(dt));
  return dynb__launch_run(&l, 1, &global, &wg);
}

dynb_status dynb__global_avgpool_backward(dynb_ctx *ctx, const dynb__tensor *dy,
                                          const dynb__tensor *dx, bool acc) {
  const char *op = "global_avgpool_backward";
  DYNB_CHECK(ctx, dy != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: dy is NULL", op);
  dynb_dtype dt = dy->dtype;
  DYNB_TRY(check_real(ctx, op, "dy", dt));
  DYNB_TRY(dynb__tensor_check(ctx, dy, "global_avgpool_backward: dy", dt, 2));
  DYNB_TRY(check_nchw(ctx, op, dx, "dx", dt));
  DYNB_TRY(check_dims(ctx, op, dy, "dy", 2, dx->dims));
  size_t planes = (size_t)(dx->dims[0] * dx->dims[1]), s = (size_t)(dx->dims[2] * dx->dims[3]);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "pool", "dynb_global_avgpool_backward", dt));
  dynb__arg_int(&l, (int)planes);
  dynb__arg_int(&l, (int)s);
  dynb__arg_tensor(&l, dy);
  dynb__arg_tensor(&l, dx);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, planes * s);
}
