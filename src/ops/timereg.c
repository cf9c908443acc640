/* Regularisation in time: R = alpha Σ_{j<J-1} h[j] ‖θ_{j+1} - θ_j‖₁ over the
 * control points of one parameter set, and its subgradient.
 *
 * With a single control point (J == 1) there is no difference, R = 0, and h
 * would have zero entries, which no tensor can have: h must then be NULL.
 * With J > 1, h is required and holds J - 1 entries.
 *
 * The forward is a fused first pass (kernels/param.cl, dynb_timereg_partial)
 * that reads the controls once and leaves G <= 256 weighted partial sums,
 * then dynb__sum over those partials. Writing the P per-column sums and
 * calling dynb__sum on them would move P more elements out and back in; here
 * only G values are, and dynb__sum of G <= 256 elements costs two tiny
 * launches. Both passes have a fixed tree, so R is deterministic. */
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

/* Work-groups of the first pass: one column per work-item where possible,
 * at most 256 groups so that the partials stay small. Depends only on P
 * (not on the kernel's work-group size, which the workspace must not wait
 * for), which fixes the reduction order. */
static size_t partial_groups(size_t p) {
  size_t g = (p + DYNB__REDUCE_MAX - 1) / DYNB__REDUCE_MAX;
  return g < 1 ? 1 : g > 256 ? 256 : g;
}

size_t dynb__timereg_workspace(dynb_ctx *ctx, int64_t p) {
  size_t g = partial_groups(p < 1 ? 1 : (size_t)p);
  return g + dynb__sum_workspace(ctx, g);
}

/* Checks controls [J, ...] (rank >= 2), h (NULL iff J == 1, else [J - 1])
 * and alpha; returns J and P. */
static dynb_status check_common(dynb_ctx *ctx, const char *op, const dynb__tensor *controls,
                                const dynb__tensor *h, double alpha, int *J, size_t *P) {
  char name[64];
  snprintf(name, sizeof name, "%s: controls", op);
  DYNB_TRY(dynb__tensor_check(ctx, controls, name, controls->dtype, -1));
  DYNB_TRY(check_real_arg(ctx, name, controls->dtype));
  DYNB_TRY(dynb__check_real(ctx, controls->dtype)); /* fp64 support, even when J == 1 */
  DYNB_CHECK(ctx, controls->ndim >= 2, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: controls has rank %d, expected [J, P] (rank >= 2)", op, controls->ndim);
  *J = (int)controls->dims[0];
  *P = dynb__tensor_numel(controls) / (size_t)*J;
  if (*J == 1) {
    DYNB_CHECK(ctx, h == NULL, DYNB_STATUS_SHAPE_MISMATCH,
               "%s: h must be NULL for a single control point (it has no steps)", op);
  } else {
    DYNB_CHECK(ctx, h != NULL, DYNB_STATUS_INVALID_ARGUMENT,
               "%s: h is NULL but there are %d control points", op, *J);
    snprintf(name, sizeof name, "%s: h", op);
    DYNB_TRY(dynb__tensor_check(ctx, h, name, controls->dtype, 1));
    DYNB_CHECK(ctx, h->dims[0] == *J - 1, DYNB_STATUS_SHAPE_MISMATCH,
               "%s: h has %lld entries for %d control points (expected %d)", op,
               (long long)h->dims[0], *J, *J - 1);
  }
  DYNB_CHECK(ctx, alpha >= 0 && isfinite(alpha), DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "%s: alpha = %g, expected a finite value >= 0", op, alpha);
  return DYNB_OK;
}

/* A flat view of `n` elements of `t` starting `skip` elements in. */
static dynb__tensor sub_view(const dynb__tensor *t, size_t skip, size_t n) {
  dynb__tensor v = *t;
  v.offset += skip;
  v.ndim = 1;
  v.dims[0] = (int64_t)n;
  return v;
}

dynb_status dynb__timereg_forward(dynb_ctx *ctx, const dynb__tensor *controls,
                                  const dynb__tensor *h, double alpha, const dynb__tensor *out,
                                  bool acc, const dynb__tensor *work) {
  DYNB_CHECK(ctx, controls && out && work, DYNB_STATUS_INVALID_ARGUMENT,
             "timereg_forward: NULL tensor");
  int J = 0;
  size_t p = 0;
  DYNB_TRY(check_common(ctx, "timereg_forward", controls, h, alpha, &J, &p));
  dynb_dtype dt = controls->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, out, "timereg_forward: out", dt, -1));
  DYNB_TRY(dynb__tensor_check(ctx, work, "timereg_forward: work", dt, -1));
  size_t need = dynb__timereg_workspace(ctx, (int64_t)p);
  DYNB_CHECK(ctx, dynb__tensor_numel(work) >= need, DYNB_STATUS_BUFFER_TOO_SMALL,
             "timereg_forward: work holds %zu elements, needs %zu", dynb__tensor_numel(work),
             need);
  dynb__tensor out0 = sub_view(out, 0, 1);
  if (J == 1) return acc ? DYNB_OK : dynb__tensor_zero(ctx, &out0);
  size_t groups = partial_groups(p);
  dynb__tensor partial = sub_view(work, 0, groups);
  dynb__tensor rest = sub_view(work, groups, need - groups);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "param", "dynb_timereg_partial", dt));
  size_t wg = dynb__launch_reduce_wg(&l, dynb__dtype_size(dt));
  dynb__arg_int(&l, J);
  dynb__arg_int(&l, (int)p);
  dynb__arg_tensor(&l, controls);
  dynb__arg_tensor(&l, h);
  dynb__arg_real(&l, alpha);
  dynb__arg_tensor(&l, &partial);
  dynb__arg_local(&l, wg * dynb__dtype_size(dt));
  size_t global = groups * wg;
  DYNB_TRY(dynb__launch_run(&l, 1, &global, &wg));
  return dynb__sum(ctx, &partial, &out0, acc, &rest);
}

dynb_status dynb__timereg_backward(dynb_ctx *ctx, const dynb__tensor *controls,
                                   const dynb__tensor *h, double alpha,
                                   const dynb__tensor *dcontrols) {
  DYNB_CHECK(ctx, controls && dcontrols, DYNB_STATUS_INVALID_ARGUMENT,
             "timereg_backward: NULL tensor");
  int J = 0;
  size_t p = 0;
  DYNB_TRY(check_common(ctx, "timereg_backward", controls, h, alpha, &J, &p));
  DYNB_TRY(dynb__tensor_check(ctx, dcontrols, "timereg_backward: dcontrols", controls->dtype,
                              -1));
  DYNB_TRY(dynb__tensor_check_same(ctx, controls, "timereg_backward: controls", dcontrols,
                                   "dcontrols"));
  if (J == 1) return DYNB_OK; /* R does not depend on a lone control point */
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "param", "dynb_timereg_backward", controls->dtype));
  dynb__arg_int(&l, J);
  dynb__arg_int(&l, (int)p);
  dynb__arg_tensor(&l, controls);
  dynb__arg_tensor(&l, h);
  dynb__arg_real(&l, alpha);
  dynb__arg_tensor(&l, dcontrols);
  return dynb__launch_1d(&l, (size_t)J * p);
}
