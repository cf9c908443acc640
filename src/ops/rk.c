/* Runge–Kutta stage combinations: y + Σ_j c_j K_j and its adjoint. */
#include <stdio.h>

#include "ops/ops.h"

/* Checks stages [S, ...] against a P-element state and coef [S]. */
static dynb_status check_stages(dynb_ctx *ctx, const char *op, const dynb__tensor *stages,
                                const dynb__tensor *coef, dynb_dtype dt, size_t p) {
  char name[64];
  snprintf(name, sizeof name, "%s: stages", op);
  DYNB_TRY(dynb__tensor_check(ctx, stages, name, dt, -1));
  snprintf(name, sizeof name, "%s: coef", op);
  DYNB_TRY(dynb__tensor_check(ctx, coef, name, dt, 1));
  size_t s = (size_t)stages->dims[0];
  DYNB_CHECK(ctx, stages->ndim >= 2 && dynb__tensor_numel(stages) == s * p,
             DYNB_STATUS_SHAPE_MISMATCH,
             "%s: stages must be [S, ...] with %zu elements per stage", op, p);
  DYNB_CHECK(ctx, (size_t)coef->dims[0] == s, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: coef has %lld entries for %zu stages", op, (long long)coef->dims[0], s);
  return DYNB_OK;
}

dynb_status dynb__rk_combine(dynb_ctx *ctx, const dynb__tensor *y, const dynb__tensor *stages,
                             const dynb__tensor *coef, const dynb__tensor *out) {
  DYNB_CHECK(ctx, stages && coef && out, DYNB_STATUS_INVALID_ARGUMENT,
             "rk_combine: NULL tensor");
  dynb_dtype dt = out->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, out, "rk_combine: out", dt, -1));
  size_t p = dynb__tensor_numel(out);
  if (y) {
    DYNB_TRY(dynb__tensor_check(ctx, y, "rk_combine: y", dt, -1));
    DYNB_CHECK(ctx, dynb__tensor_numel(y) == p, DYNB_STATUS_SHAPE_MISMATCH,
               "rk_combine: out and y differ in size");
  }
  DYNB_TRY(check_stages(ctx, "rk_combine", stages, coef, dt, p));
  dynb__tensor none = {0};
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "rk", "dynb_rk_combine", dt));
  dynb__arg_int(&l, (int)p);
  dynb__arg_int(&l, (int)stages->dims[0]);
  dynb__arg_tensor(&l, y ? y : &none);
  dynb__arg_int(&l, y != NULL);
  dynb__arg_tensor(&l, stages);
  dynb__arg_tensor(&l, coef);
  dynb__arg_tensor(&l, out);
  return dynb__launch_1d(&l, (p + 15) / 16); /* RK_CHUNK elements per work-item */
}

dynb_status dynb__rk_combine_backward(dynb_ctx *ctx, const dynb__tensor *dout,
                                      const dynb__tensor *coef, const dynb__tensor *dy,
                                      const dynb__tensor *dstages, bool acc_dy, bool acc_stages) {
  DYNB_CHECK(ctx, dout && coef && dstages, DYNB_STATUS_INVALID_ARGUMENT,
             "rk_combine_backward: NULL tensor");
  dynb_dtype dt = dout->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, dout, "rk_combine_backward: dout", dt, -1));
  size_t p = dynb__tensor_numel(dout);
  if (dy) {
    DYNB_TRY(dynb__tensor_check(ctx, dy, "rk_combine_backward: dy", dt, -1));
    DYNB_CHECK(ctx, dynb__tensor_numel(dy) == p, DYNB_STATUS_SHAPE_MISMATCH,
               "rk_combine_backward: dy and dout differ in size");
  }
  DYNB_TRY(check_stages(ctx, "rk_combine_backward", dstages, coef, dt, p));
  dynb__tensor none = {0};
  none.dtype = dt;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "rk", "dynb_rk_combine_backward", dt));
  dynb__arg_int(&l, (int)p);
  dynb__arg_int(&l, (int)dstages->dims[0]);
  dynb__arg_tensor(&l, dout);
  dynb__arg_tensor(&l, coef);
  dynb__arg_tensor(&l, dy ? dy : &none);
  dynb__arg_int(&l, dy != NULL);
  dynb__arg_int(&l, acc_dy);
  dynb__arg_tensor(&l, dstages);
  dynb__arg_int(&l, acc_stages);
  return dynb__launch_1d(&l, (p + 15) / 16); /* RK_CHUNK elements per work-item */
}

dynb_status dynb__lincomb(dynb_ctx *ctx, double a, const dynb__tensor *x, double b,
                          const dynb__tensor *y, double c, const dynb__tensor *z,
                          const dynb__tensor *out) {
  DYNB_CHECK(ctx, x && out, DYNB_STATUS_INVALID_ARGUMENT, "lincomb: NULL tensor");
  dynb_dtype dt = out->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, out, "lincomb: out", dt, -1));
  size_t p = dynb__tensor_numel(out);
  const dynb__tensor *in[3] = {x, y, z};
  static const char *const names[3] = {"lincomb: x", "lincomb: y", "lincomb: z"};
  for (int j = 0; j < 3; j++) {
    if (!in[j]) continue;
    DYNB_TRY(dynb__tensor_check(ctx, in[j], names[j], dt, -1));
    DYNB_CHECK(ctx, dynb__tensor_numel(in[j]) == p, DYNB_STATUS_SHAPE_MISMATCH,
               "%s and out differ in size", names[j]);
  }
  dynb__tensor none = {0};
  none.dtype = dt;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "rk", "dynb_lincomb", dt));
  dynb__arg_int(&l, (int)p);
  dynb__arg_real(&l, a);
  dynb__arg_tensor(&l, x);
  dynb__arg_real(&l, b);
  dynb__arg_tensor(&l, y ? y : &none);
  dynb__arg_int(&l, y != NULL);
  dynb__arg_real(&l, c);
  dynb__arg_tensor(&l, z ? z : &none);
  dynb__arg_int(&l, z != NULL);
  dynb__arg_tensor(&l, out);
  return dynb__launch_1d(&l, p);
}
