/* Public context calls beyond creation (src/runtime/ctx.c): parameters and
 * waiting for the queue. */
#include "api/api.h"

dynb_status dynb_ctx_finish(dynb_ctx *ctx) {
  DYNB__API_HANDLE(ctx);
  return dynb__finish(ctx);
}

dynb_status dynb_param_bounds(dynb_param param, int64_t *lo, int64_t *hi) {
  if (!lo || !hi) return DYNB_STATUS_INVALID_ARGUMENT;
  switch (param) {
    case DYNB_PARAM_CONV_ROUTE:
      *lo = DYNB_CONV_AUTO, *hi = DYNB_CONV_WIDE2;
      return DYNB_OK;
  }
  return DYNB_STATUS_INVALID_ARGUMENT;
}

/* The public route values are the runtime's policy values. */
_Static_assert((int)DYNB_CONV_AUTO == (int)DYNB__CONV_AUTO &&
                   (int)DYNB_CONV_GEMM == (int)DYNB__CONV_GEMM &&
                   (int)DYNB_CONV_ROW == (int)DYNB__CONV_ROW &&
                   (int)DYNB_CONV_WIDE == (int)DYNB__CONV_WIDE &&
                   (int)DYNB_CONV_WIDE2 == (int)DYNB__CONV_WIDE2,
               "dynb_conv_route and dynb__conv_policy must agree");

dynb_status dynb_ctx_set_param(dynb_ctx *ctx, dynb_param param, int64_t value) {
  DYNB__API_HANDLE(ctx);
  int64_t lo, hi;
  DYNB_CHECK(ctx, dynb_param_bounds(param, &lo, &hi) == DYNB_OK, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_ctx_set_param: unknown parameter %d", (int)param);
  DYNB_CHECK(ctx, value >= lo && value <= hi, DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "dynb_ctx_set_param: parameter %d = %lld is outside [%lld, %lld]", (int)param,
             (long long)value, (long long)lo, (long long)hi);
  ctx->conv_policy = (dynb__conv_policy)value;
  return DYNB_OK;
}

dynb_status dynb_ctx_get_param(const dynb_ctx *ctx, dynb_param param, int64_t *value) {
  DYNB__API_HANDLE(ctx);
  int64_t lo, hi;
  if (!value || dynb_param_bounds(param, &lo, &hi) != DYNB_OK) return DYNB_STATUS_INVALID_ARGUMENT;
  *value = ctx->conv_policy;
  return DYNB_OK;
}
