/* Optimiser steps (SGD with momentum, Adam) and box clipping over one
 * parameter tensor: each is one 1-D pass over its buffers. Hyper-parameters
 * are checked against PyTorch's bounds; bad values fail with
 * DYNB_STATUS_PARAM_OUT_OF_BOUND and are never clamped. */
#include <math.h>
#include <stdio.h>

#include "ops/ops.h"

/* Kernels exist for the two reals only; say which op and argument when the
 * first tensor is something else. */
static dynb_status check_real_arg(dynb_ctx *ctx, const char *what, dynb_dtype dt) {
  DYNB_CHECK(ctx, dt == DYNB_F32 || dt == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: dtype %s, expected f32 or f64", what, dynb__dtype_name(dt));
  return DYNB_OK;
}

/* Checks a state or gradient tensor against the parameter: same dtype, same
 * number of elements (shapes may differ: optimiser state is often a flat
 * view). */
static dynb_status check_like(dynb_ctx *ctx, const char *op, const char *arg,
                              const dynb__tensor *t, const dynb__tensor *param) {
  char name[64];
  snprintf(name, sizeof name, "%s: %s", op, arg);
  DYNB_CHECK(ctx, t != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", name);
  DYNB_TRY(dynb__tensor_check(ctx, t, name, param->dtype, -1));
  DYNB_CHECK(ctx, dynb__tensor_numel(t) == dynb__tensor_numel(param), DYNB_STATUS_SHAPE_MISMATCH,
             "%s has %zu elements, param %zu", name, dynb__tensor_numel(t),
             dynb__tensor_numel(param));
  return DYNB_OK;
}

/* lo <= x < hi (or <= hi when closed), false for NaN. */
static bool in_range(double x, double lo, double hi, bool closed) {
  return x >= lo && (closed ? x <= hi : x < hi);
}

static dynb_status check_sgd_hyper(dynb_ctx *ctx, const dynb__sgd_hyper *h) {
  DYNB_CHECK(ctx, h != NULL, DYNB_STATUS_INVALID_ARGUMENT, "sgd_step: NULL hyper-parameters");
  DYNB_CHECK(ctx, in_range(h->lr, 0, INFINITY, false), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "sgd_step: lr = %g, expected a finite value >= 0", h->lr);
  DYNB_CHECK(ctx, in_range(h->momentum, 0, 1, false), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "sgd_step: momentum = %g outside [0, 1)", h->momentum);
  DYNB_CHECK(ctx, in_range(h->weight_decay, 0, INFINITY, false), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "sgd_step: weight_decay = %g, expected a finite value >= 0", h->weight_decay);
  /* As PyTorch: Nesterov without momentum would silently be plain SGD. */
  DYNB_CHECK(ctx, !h->nesterov || h->momentum > 0, DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "sgd_step: nesterov needs momentum > 0");
  return DYNB_OK;
}

dynb_status dynb__sgd_step(dynb_ctx *ctx, const dynb__tensor *param, const dynb__tensor *grad,
                           const dynb__tensor *velocity, const dynb__sgd_hyper *h) {
  DYNB_CHECK(ctx, param != NULL, DYNB_STATUS_INVALID_ARGUMENT, "sgd_step: param: NULL tensor");
  dynb_dtype dt = param->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, param, "sgd_step: param", dt, -1));
  DYNB_TRY(check_real_arg(ctx, "sgd_step: param", dt));
  DYNB_TRY(check_like(ctx, "sgd_step", "grad", grad, param));
  DYNB_TRY(check_sgd_hyper(ctx, h));
  bool use_vel = h->momentum != 0;
  /* Without momentum the velocity is neither needed nor touched. */
  if (use_vel) DYNB_TRY(check_like(ctx, "sgd_step", "velocity", velocity, param));
  size_t n = dynb__tensor_numel(param);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "param", "dynb_sgd_step", dt));
  dynb__arg_int(&l, (int)n);
  dynb__arg_tensor(&l, param);
  dynb__arg_tensor(&l, grad);
  dynb__arg_tensor(&l, use_vel ? velocity : param); /* a placeholder the kernel never reads */
  dynb__arg_real(&l, h->lr);
  dynb__arg_real(&l, h->momentum);
  dynb__arg_real(&l, h->weight_decay);
  dynb__arg_int(&l, use_vel);
  dynb__arg_int(&l, h->nesterov);
  return dynb__launch_1d(&l, n);
}

static dynb_status check_adam_hyper(dynb_ctx *ctx, const dynb__adam_hyper *h) {
  DYNB_CHECK(ctx, h != NULL, DYNB_STATUS_INVALID_ARGUMENT, "adam_step: NULL hyper-parameters");
  DYNB_CHECK(ctx, in_range(h->lr, 0, INFINITY, false), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "adam_step: lr = %g, expected a finite value >= 0", h->lr);
  DYNB_CHECK(ctx, in_range(h->beta1, 0, 1, false), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "adam_step: beta1 = %g outside [0, 1)", h->beta1);
  DYNB_CHECK(ctx, in_range(h->beta2, 0, 1, false), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "adam_step: beta2 = %g outside [0, 1)", h->beta2);
  DYNB_CHECK(ctx, h->eps > 0 && isfinite(h->eps), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "adam_step: eps = %g, expected a finite value > 0", h->eps);
  DYNB_CHECK(ctx, in_range(h->weight_decay, 0, INFINITY, false), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "adam_step: weight_decay = %g, expected a finite value >= 0", h->weight_decay);
  DYNB_CHECK(ctx, h->step >= 1, DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "adam_step: step = %lld, expected >= 1 (updates so far, this one included)",
             (long long)h->step);
  return DYNB_OK;
}

dynb_status dynb__adam_step(dynb_ctx *ctx, const dynb__tensor *param, const dynb__tensor *grad,
                            const dynb__tensor *m, const dynb__tensor *v,
                            const dynb__adam_hyper *h) {
  DYNB_CHECK(ctx, param != NULL, DYNB_STATUS_INVALID_ARGUMENT, "adam_step: param: NULL tensor");
  dynb_dtype dt = param->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, param, "adam_step: param", dt, -1));
  DYNB_TRY(check_real_arg(ctx, "adam_step: param", dt));
  DYNB_TRY(check_like(ctx, "adam_step", "grad", grad, param));
  DYNB_TRY(check_like(ctx, "adam_step", "m", m, param));
  DYNB_TRY(check_like(ctx, "adam_step", "v", v, param));
  DYNB_TRY(check_adam_hyper(ctx, h));
  /* Bias corrections in double on the host: β^t in float would lose digits
   * for large t, and they are the same for every element. */
  double t = (double)h->step;
  double bc1 = 1 - pow(h->beta1, t), bc2 = 1 - pow(h->beta2, t);
  size_t n = dynb__tensor_numel(param);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "param", "dynb_adam_step", dt));
  dynb__arg_int(&l, (int)n);
  dynb__arg_tensor(&l, param);
  dynb__arg_tensor(&l, grad);
  dynb__arg_tensor(&l, m);
  dynb__arg_tensor(&l, v);
  dynb__arg_real(&l, h->beta1);
  dynb__arg_real(&l, 1 - h->beta1);
  dynb__arg_real(&l, h->beta2);
  dynb__arg_real(&l, 1 - h->beta2);
  dynb__arg_real(&l, h->lr / bc1);
  dynb__arg_real(&l, sqrt(bc2));
  dynb__arg_real(&l, h->eps);
  dynb__arg_real(&l, h->weight_decay);
  return dynb__launch_1d(&l, n);
}

dynb_status dynb__clip(dynb_ctx *ctx, const dynb__tensor *param, double lo, double hi) {
  DYNB_CHECK(ctx, param != NULL, DYNB_STATUS_INVALID_ARGUMENT, "clip: param: NULL tensor");
  DYNB_TRY(dynb__tensor_check(ctx, param, "clip: param", param->dtype, -1));
  DYNB_TRY(check_real_arg(ctx, "clip: param", param->dtype));
  /* Infinite bounds are allowed (a one-sided box); NaN bounds are not. */
  DYNB_CHECK(ctx, lo <= hi, DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "clip: bounds [%g, %g] are not an interval (lo <= hi)", lo, hi);
  size_t n = dynb__tensor_numel(param);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "param", "dynb_clip", param->dtype));
  dynb__arg_int(&l, (int)n);
  dynb__arg_tensor(&l, param);
  dynb__arg_real(&l, lo);
  dynb__arg_real(&l, hi);
  return dynb__launch_1d(&l, n);
}
