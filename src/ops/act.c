/* Elementwise activations: forward, backward, and the spec names. */
#include <stdio.h>
#include <string.h>

#include "ops/ops.h"

/* kernels/act.cl repeats these values as macros (a kernel cannot include
 * ops.h); this keeps the two lists from drifting apart. */
_Static_assert(DYNB_ACT_IDENTITY == 0 && DYNB_ACT_RELU == 1 && DYNB_ACT_TANH == 2 &&
                   DYNB_ACT_LEAKY_RELU == 3,
               "kernels/act.cl hard-codes the dynb_act values");

const char *dynb__act_name(dynb_act act) {
  switch (act) {
#define DYNB__ACT_NAME(name, value, str) \
  case DYNB_ACT_##name: return str;
    DYNB_ACT_MAP(DYNB__ACT_NAME)
#undef DYNB__ACT_NAME
  }
  return "?";
}

bool dynb__act_parse(const char *name, dynb_act *out) {
  if (!name || !out) return false;
#define DYNB__ACT_PARSE(id, value, str) \
  if (strcmp(name, str) == 0) {         \
    *out = DYNB_ACT_##id;               \
    return true;                        \
  }
  DYNB_ACT_MAP(DYNB__ACT_PARSE)
#undef DYNB__ACT_PARSE
  return false;
}

/* The dtype of an op's first input picks the kernel build: f32 or f64. */
static dynb_status check_real(dynb_ctx *ctx, const char *op, const char *name, dynb_dtype dt) {
  DYNB_CHECK(ctx, dt == DYNB_F32 || dt == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: %s has dtype %s; expected f32 or f64", op, name, dynb__dtype_name(dt));
  return DYNB_OK;
}

static bool act_known(dynb_act act) {
  switch (act) {
#define DYNB__ACT_CASE(name, value, str) case DYNB_ACT_##name:
    DYNB_ACT_MAP(DYNB__ACT_CASE)
#undef DYNB__ACT_CASE
    return true;
  }
  return false;
}

/* Elementwise kernels may run in place on one view, but two views of one
 * buffer that overlap without coinciding would race. */
static bool overlap_partly(const dynb__tensor *a, const dynb__tensor *b, size_t n) {
  if (a->mem != b->mem || a->offset == b->offset) return false;
  return a->offset < b->offset + n && b->offset < a->offset + n;
}

static bool same_view(const dynb__tensor *a, const dynb__tensor *b) {
  return a->mem == b->mem && a->offset == b->offset;
}

/* Checks `t` as the argument `name` of `op`: dtype dt and n elements. */
static dynb_status check_like(dynb_ctx *ctx, const char *op, const dynb__tensor *t,
                              const char *name, dynb_dtype dt, size_t n) {
  DYNB_CHECK(ctx, t != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, name);
  char what[64];
  snprintf(what, sizeof what, "%s: %s", op, name);
  DYNB_TRY(dynb__tensor_check(ctx, t, what, dt, -1));
  DYNB_CHECK(ctx, dynb__tensor_numel(t) == n, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: %s has %zu elements, x has %zu", op, name, dynb__tensor_numel(t), n);
  return DYNB_OK;
}

dynb_status dynb__act_forward(dynb_ctx *ctx, dynb_act act, const dynb__tensor *x,
                              const dynb__tensor *y) {
  const char *op = "act_forward";
  DYNB_CHECK(ctx, act_known(act), DYNB_STATUS_INVALID_ARGUMENT, "%s: unknown activation %d", op,
             (int)act);
  DYNB_CHECK(ctx, x != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: x is NULL", op);
  dynb_dtype dt = x->dtype;
  DYNB_TRY(check_real(ctx, op, "x", dt));
  DYNB_TRY(dynb__tensor_check(ctx, x, "act_forward: x", dt, -1));
  size_t n = dynb__tensor_numel(x);
  DYNB_TRY(check_like(ctx, op, y, "y", dt, n));
  DYNB_CHECK(ctx, !overlap_partly(x, y, n), DYNB_STATUS_INVALID_ARGUMENT,
             "%s: y overlaps x without coinciding with it", op);
  if (act == DYNB_ACT_IDENTITY && same_view(x, y)) return DYNB_OK; /* nothing to do */
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "act", "dynb_act_forward", dt));
  dynb__arg_int(&l, (int)n);
  dynb__arg_int(&l, (int)act);
  dynb__arg_real(&l, DYNB_LEAKY_SLOPE);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, y);
  return dynb__launch_1d(&l, n);
}

bool dynb__act_slope_from_output(dynb_act act) {
  return act == DYNB_ACT_IDENTITY || act == DYNB_ACT_RELU || act == DYNB_ACT_LEAKY_RELU;
}

dynb_status dynb__act_backward(dynb_ctx *ctx, dynb_act act, const dynb__tensor *x,
                               const dynb__tensor *dy, const dynb__tensor *dx, bool acc) {
  const char *op = "act_backward";
  DYNB_CHECK(ctx, act_known(act), DYNB_STATUS_INVALID_ARGUMENT, "%s: unknown activation %d", op,
             (int)act);
  DYNB_CHECK(ctx, x != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: x is NULL", op);
  dynb_dtype dt = x->dtype;
  DYNB_TRY(check_real(ctx, op, "x", dt));
  DYNB_TRY(dynb__tensor_check(ctx, x, "act_backward: x", dt, -1));
  size_t n = dynb__tensor_numel(x);
  DYNB_TRY(check_like(ctx, op, dy, "dy", dt, n));
  DYNB_TRY(check_like(ctx, op, dx, "dx", dt, n));
  DYNB_CHECK(ctx, !overlap_partly(dx, dy, n) && !overlap_partly(dx, x, n),
             DYNB_STATUS_INVALID_ARGUMENT, "%s: dx overlaps dy or x without coinciding", op);
  DYNB_CHECK(ctx, !(acc && same_view(dx, dy)), DYNB_STATUS_INVALID_ARGUMENT,
             "%s: dx may alias dy only when overwriting (acc = false)", op);
  if (act == DYNB_ACT_IDENTITY && !acc && same_view(dx, dy)) return DYNB_OK;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "act", "dynb_act_backward", dt));
  dynb__arg_int(&l, (int)n);
  dynb__arg_int(&l, (int)act);
  dynb__arg_real(&l, DYNB_LEAKY_SLOPE);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, dy);
  dynb__arg_tensor(&l, dx);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, n);
}
