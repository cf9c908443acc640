/* One dispatcher over the normalisations, shared by layer functions and by
 * the opening and connecting layers of a network. */
#include "model/model.h"

dynb_status dynb__norm_forward(dynb_ctx *ctx, const dynb__norm_args *n, const dynb__tensor *z,
                               const dynb__tensor *a) {
  switch (n->kind) {
    case DYNB_NORM_NONE:
      return DYNB_OK;
    case DYNB_NORM_TV:
      return dynb__tv_forward(ctx, z, n->bias, a, DYNB_TV_EPS, n->act);
    case DYNB_NORM_BATCH:
      if (!n->train)
        return dynb__bn_eval_forward(ctx, z, n->weight, n->bias, n->running_mean, n->running_var,
                                     a, DYNB_BN_EPS, n->act);
      return dynb__bn_train_forward(ctx, z, n->weight, n->bias, a, n->save_mean, n->save_invstd,
                                    n->running_mean, n->running_var, DYNB_BN_MOMENTUM,
                                    DYNB_BN_EPS, n->act);
  }
  return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT, "unknown norm kind %d", (int)n->kind);
}

bool dynb__norm_output_kept(dynb_norm_kind norm, dynb_act act) {
  return norm != DYNB_NORM_NONE && !dynb__act_slope_from_output(act);
}

dynb_status dynb__norm_act_forward(dynb_ctx *ctx, dynb__norm_args n, dynb_act act,
                                   const dynb__tensor *z, const dynb__tensor *a,
                                   const dynb__tensor *s) {
  bool fused = n.kind != DYNB_NORM_NONE && a->mem == s->mem && a->offset == s->offset;
  n.act = fused ? act : DYNB_ACT_IDENTITY;
  DYNB_TRY(dynb__norm_forward(ctx, &n, z, a));
  return fused ? DYNB_OK : dynb__act_forward(ctx, act, a, s);
}

dynb_status dynb__norm_backward(dynb_ctx *ctx, const dynb__norm_args *n, const dynb__tensor *z,
                                const dynb__tensor *da, const dynb__tensor *dz,
                                const dynb__tensor *dweight, const dynb__tensor *dbias,
                                const dynb__tensor **dz_out) {
  *dz_out = n->kind == DYNB_NORM_NONE ? da : dz;
  switch (n->kind) {
    case DYNB_NORM_NONE:
      return DYNB_OK;
    case DYNB_NORM_TV:
      return dynb__tv_backward(ctx, z, da, dz, dbias, DYNB_TV_EPS, false, true);
    case DYNB_NORM_BATCH:
      if (!n->train)
        return dynb__bn_eval_backward(ctx, z, da, n->weight, n->running_mean, n->running_var, dz,
                                      dweight, dbias, DYNB_BN_EPS, false, true);
      return dynb__bn_train_backward(ctx, z, da, n->weight, n->save_mean, n->save_invstd, dz,
                                     dweight, dbias, false, true);
  }
  return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT, "unknown norm kind %d", (int)n->kind);
}
