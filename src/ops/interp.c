/* Parameter interpolation between control points: θ(t) = (1 - w) θ_j0 +
 * w θ_{j0+1}, where (j0, w) come from the control grid on the host, and its
 * adjoint that accumulates the gradient onto the two control points. */
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

/* Exact hits: at t == t_controls[k], j0 = k and w = 0 (never j0 = k - 1 with
 * w = 1). Both give the same θ(t); this choice reads one control point only,
 * so the adjoint touches one row and t == t_end needs no special case: it is
 * the last point with w = 0, like every t beyond it.
 * A NaN t (or an unusable grid) yields j0 = 0 and w = NaN, which
 * dynb__interp_forward rejects, rather than being quietly pinned to an end. */
void dynb__interp_weights(const double *t_controls, int J, double t, int *j0, double *w) {
  *j0 = 0;
  *w = 0;
  if (J <= 1) return;
  if (!t_controls || isnan(t)) {
    *w = NAN;
    return;
  }
  if (t <= t_controls[0]) return;
  if (t >= t_controls[J - 1]) {
    *j0 = J - 1;
    return;
  }
  /* Invariant: t_controls[lo] <= t < t_controls[hi]. */
  int lo = 0, hi = J - 1;
  while (hi - lo > 1) {
    int mid = lo + (hi - lo) / 2;
    if (t_controls[mid] <= t)
      lo = mid;
    else
      hi = mid;
  }
  *j0 = lo;
  *w = (t - t_controls[lo]) / (t_controls[lo + 1] - t_controls[lo]);
}

/* Checks controls: [J, ...] (rank >= 2, one contiguous block of P elements
 * per control point) and returns J and P. */
static dynb_status check_controls(dynb_ctx *ctx, const char *op, const char *arg,
                                  const dynb__tensor *c, dynb_dtype dt, int *J, size_t *P) {
  char name[64];
  snprintf(name, sizeof name, "%s: %s", op, arg);
  DYNB_TRY(dynb__tensor_check(ctx, c, name, dt, -1));
  DYNB_TRY(check_real_arg(ctx, name, dt));
  DYNB_CHECK(ctx, c->ndim >= 2, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: rank %d, expected [J, P] (rank >= 2)", name, c->ndim);
  *J = (int)c->dims[0];
  *P = dynb__tensor_numel(c) / (size_t)*J;
  return DYNB_OK;
}

/* Checks that (j0, w) is a point of a J-point grid as interp_weights makes
 * them: 0 <= j0 < J, 0 <= w <= 1, and a next control point when w != 0. */
static dynb_status check_point(dynb_ctx *ctx, const char *op, int J, int j0, double w) {
  DYNB_CHECK(ctx, j0 >= 0 && j0 < J, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: control index j0 = %d outside 0..%d", op, j0, J - 1);
  DYNB_CHECK(ctx, w >= 0 && w <= 1, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: weight w = %g outside [0, 1]", op, w);
  DYNB_CHECK(ctx, w == 0 || j0 + 1 < J, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: weight w = %g on control %d, which is the last of %d", op, w, j0, J);
  return DYNB_OK;
}

/* The P elements of control point j, as a flat view. */
static dynb__tensor control_row(const dynb__tensor *c, int j, size_t p) {
  dynb__tensor r = *c;
  r.offset += (size_t)j * p;
  r.ndim = 1;
  r.dims[0] = (int64_t)p;
  return r;
}

dynb_status dynb__interp_forward(dynb_ctx *ctx, const dynb__tensor *controls, int j0, double w,
                                 const dynb__tensor *out) {
  DYNB_CHECK(ctx, controls && out, DYNB_STATUS_INVALID_ARGUMENT, "interp_forward: NULL tensor");
  dynb_dtype dt = controls->dtype;
  int J = 0;
  size_t p = 0;
  DYNB_TRY(check_controls(ctx, "interp_forward", "controls", controls, dt, &J, &p));
  DYNB_TRY(dynb__tensor_check(ctx, out, "interp_forward: out", dt, -1));
  DYNB_CHECK(ctx, dynb__tensor_numel(out) == p, DYNB_STATUS_SHAPE_MISMATCH,
             "interp_forward: out has %zu elements, a control point %zu",
             dynb__tensor_numel(out), p);
  DYNB_TRY(check_point(ctx, "interp_forward", J, j0, w));
  bool has_b = w != 0;
  dynb__tensor a = control_row(controls, j0, p), b = control_row(controls, has_b ? j0 + 1 : j0, p);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "param", "dynb_interp_forward", dt));
  dynb__arg_int(&l, (int)p);
  dynb__arg_tensor(&l, &a);
  dynb__arg_tensor(&l, &b);
  dynb__arg_real(&l, 1 - w);
  dynb__arg_real(&l, w);
  dynb__arg_int(&l, has_b);
  dynb__arg_tensor(&l, out);
  return dynb__launch_1d(&l, p);
}

dynb_status dynb__interp_backward(dynb_ctx *ctx, const dynb__tensor *dout, int j0, double w,
                                  const dynb__tensor *dcontrols) {
  DYNB_CHECK(ctx, dout && dcontrols, DYNB_STATUS_INVALID_ARGUMENT,
             "interp_backward: NULL tensor");
  dynb_dtype dt = dout->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, dout, "interp_backward: dout", dt, -1));
  DYNB_TRY(check_real_arg(ctx, "interp_backward: dout", dt));
  int J = 0;
  size_t p = 0;
  DYNB_TRY(check_controls(ctx, "interp_backward", "dcontrols", dcontrols, dt, &J, &p));
  DYNB_CHECK(ctx, dynb__tensor_numel(dout) == p, DYNB_STATUS_SHAPE_MISMATCH,
             "interp_backward: dout has %zu elements, a control point %zu",
             dynb__tensor_numel(dout), p);
  DYNB_TRY(check_point(ctx, "interp_backward", J, j0, w));
  bool has_b = w != 0;
  dynb__tensor a = control_row(dcontrols, j0, p);
  dynb__tensor b = control_row(dcontrols, has_b ? j0 + 1 : j0, p);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "param", "dynb_interp_backward", dt));
  dynb__arg_int(&l, (int)p);
  dynb__arg_tensor(&l, dout);
  dynb__arg_tensor(&l, &a);
  dynb__arg_tensor(&l, &b);
  dynb__arg_real(&l, 1 - w);
  dynb__arg_real(&l, w);
  dynb__arg_int(&l, has_b);
  return dynb__launch_1d(&l, p);
}
