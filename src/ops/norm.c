/* Normalisations: the TV norm (per pixel, across channels) and batch norm
 * (per channel, across the batch and the pixels), training and evaluation. */
#include <limits.h>
#include <math.h>
#include <stdio.h>

#include "ops/ops.h"

/* The sizes of an [N, C, H, W] input, as the kernels take them. */
typedef struct nchw {
  int n, c, s;
} nchw;

/* Checks the first input x: a real dtype the device runs, rank 4, inside
 * its buffer, and small enough for the kernels' int indices. */
static dynb_status check_x(dynb_ctx *ctx, const char *op, const dynb__tensor *x, nchw *d) {
  char name[64];
  snprintf(name, sizeof name, "%s: x", op);
  DYNB_CHECK(ctx, x != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", name);
  DYNB_TRY(dynb__check_real(ctx, x->dtype));
  DYNB_TRY(dynb__tensor_check(ctx, x, name, x->dtype, 4));
  DYNB_CHECK(ctx, dynb__tensor_numel(x) <= INT_MAX, DYNB_STATUS_SIZE_OVERFLOW,
             "%s: %zu elements exceed the kernels' int range", name, dynb__tensor_numel(x));
  d->n = (int)x->dims[0];
  d->c = (int)x->dims[1];
  d->s = (int)(x->dims[2] * x->dims[3]);
  return DYNB_OK;
}

/* Checks that t (named `arg`) has x's dtype and shape. */
static dynb_status check_like_x(dynb_ctx *ctx, const char *op, const char *arg,
                                const dynb__tensor *t, const dynb__tensor *x) {
  char name[64], xname[64];
  snprintf(name, sizeof name, "%s: %s", op, arg);
  snprintf(xname, sizeof xname, "%s: x", op);
  DYNB_TRY(dynb__tensor_check(ctx, t, name, x->dtype, 4));
  return dynb__tensor_check_same(ctx, t, name, x, xname);
}

/* Checks that t (named `arg`) is a [C] vector of x's dtype. */
static dynb_status check_chan(dynb_ctx *ctx, const char *op, const char *arg, const dynb__tensor *t,
                              const dynb__tensor *x, int c) {
  char name[64];
  snprintf(name, sizeof name, "%s: %s", op, arg);
  DYNB_TRY(dynb__tensor_check(ctx, t, name, x->dtype, 1));
  DYNB_CHECK(ctx, t->dims[0] == c, DYNB_STATUS_SHAPE_MISMATCH,
             "%s has %lld entries for %d channels", name, (long long)t->dims[0], c);
  return DYNB_OK;
}

/* eps keeps the square roots away from zero, so it must be positive. */
static dynb_status check_eps(dynb_ctx *ctx, const char *op, double eps) {
  DYNB_CHECK(ctx, isfinite(eps) && eps > 0, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: eps %g must be positive and finite", op, eps);
  return DYNB_OK;
}

/* Enqueues a kernel with one work-group of dynb__launch_reduce_wg per
 * channel and its scratch memory as the last argument. */
static dynb_status run_per_channel(dynb__launch *l, const nchw *d) {
  size_t wg = dynb__launch_reduce_wg(l, dynb__dtype_size(l->real));
  dynb__arg_local(l, wg * dynb__dtype_size(l->real));
  size_t global = (size_t)d->c * wg;
  return dynb__launch_run(l, 1, &global, &wg);
}

static void arg_sizes(dynb__launch *l, const nchw *d) {
  dynb__arg_int(l, d->n);
  dynb__arg_int(l, d->c);
  dynb__arg_int(l, d->s);
}

/* ---- TV norm ------------------------------------------------------------- */

/* The activation a forward norm applies to its output. */
static void arg_act(dynb__launch *l, dynb_act act) {
  dynb__arg_int(l, (int)act);
  dynb__arg_real(l, DYNB_LEAKY_SLOPE);
}

static dynb_status check_act(dynb_ctx *ctx, const char *op, dynb_act act) {
  DYNB_CHECK(ctx, act >= DYNB_ACT_IDENTITY && act <= DYNB_ACT_LEAKY_RELU,
             DYNB_STATUS_INVALID_ARGUMENT, "%s: unknown activation %d", op, (int)act);
  return DYNB_OK;
}

dynb_status dynb__tv_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *beta,
                             const dynb__tensor *y, double eps, dynb_act act) {
  const char *op = "tv_forward";
  DYNB_CHECK(ctx, x && beta && y, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  nchw d;
  DYNB_TRY(check_x(ctx, op, x, &d));
  DYNB_TRY(check_chan(ctx, op, "beta", beta, x, d.c));
  DYNB_TRY(check_like_x(ctx, op, "y", y, x));
  DYNB_TRY(check_eps(ctx, op, eps));
  DYNB_TRY(check_act(ctx, op, act));
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "norm", "dynb_tv_forward", x->dtype));
  arg_sizes(&l, &d);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, beta);
  dynb__arg_tensor(&l, y);
  dynb__arg_real(&l, eps);
  arg_act(&l, act);
  return dynb__launch_1d(&l, (size_t)d.n * (size_t)d.s);
}

dynb_status dynb__tv_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                              const dynb__tensor *dx, const dynb__tensor *dbeta, double eps,
                              bool acc_dx, bool acc_params) {
  const char *op = "tv_backward";
  DYNB_CHECK(ctx, x && dy && dx, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  nchw d;
  DYNB_TRY(check_x(ctx, op, x, &d));
  DYNB_TRY(check_like_x(ctx, op, "dy", dy, x));
  DYNB_TRY(check_like_x(ctx, op, "dx", dx, x));
  if (dbeta) DYNB_TRY(check_chan(ctx, op, "dbeta", dbeta, x, d.c));
  DYNB_TRY(check_eps(ctx, op, eps));
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "norm", "dynb_tv_backward", x->dtype));
  arg_sizes(&l, &d);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, dy);
  dynb__arg_tensor(&l, dx);
  dynb__arg_real(&l, eps);
  dynb__arg_int(&l, acc_dx);
  DYNB_TRY(dynb__launch_1d(&l, (size_t)d.n * (size_t)d.s));
  /* beta enters as a plain per-channel bias. */
  return dbeta ? dynb__channel_sum(ctx, dy, dbeta, acc_params) : DYNB_OK;
}

/* ---- Batch norm, training ------------------------------------------------ */

dynb_status dynb__bn_train_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *gamma,
                                   const dynb__tensor *beta, const dynb__tensor *y,
                                   const dynb__tensor *save_mean, const dynb__tensor *save_invstd,
                                   const dynb__tensor *running_mean,
                                   const dynb__tensor *running_var, double momentum, double eps,
                                   dynb_act act) {
  const char *op = "bn_train_forward";
  DYNB_CHECK(ctx, x && gamma && beta && y && save_mean && save_invstd, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: NULL tensor", op);
  DYNB_CHECK(ctx, (running_mean == NULL) == (running_var == NULL), DYNB_STATUS_INVALID_ARGUMENT,
             "%s: running_mean and running_var must be both given or both NULL", op);
  nchw d;
  DYNB_TRY(check_x(ctx, op, x, &d));
  DYNB_TRY(check_chan(ctx, op, "gamma", gamma, x, d.c));
  DYNB_TRY(check_chan(ctx, op, "beta", beta, x, d.c));
  DYNB_TRY(check_like_x(ctx, op, "y", y, x));
  DYNB_TRY(check_chan(ctx, op, "save_mean", save_mean, x, d.c));
  DYNB_TRY(check_chan(ctx, op, "save_invstd", save_invstd, x, d.c));
  /* One replica of several: the global batch's statistics (norm_sync.c). */
  if (ctx->link)
    return dynb__bn_sync_forward(ctx, x, gamma, beta, y, save_mean, save_invstd, running_mean,
                                 running_var, momentum, eps, act);
  bool update = running_mean != NULL;
  if (update) {
    DYNB_TRY(check_chan(ctx, op, "running_mean", running_mean, x, d.c));
    DYNB_TRY(check_chan(ctx, op, "running_var", running_var, x, d.c));
    /* The unbiased variance divides by M - 1. */
    DYNB_CHECK(ctx, (int64_t)d.n * d.s > 1, DYNB_STATUS_INVALID_ARGUMENT,
               "%s: updating running statistics needs more than one value per channel "
               "(N·H·W = %lld)",
               op, (long long)d.n * d.s);
    DYNB_CHECK(ctx, momentum >= 0 && momentum <= 1, DYNB_STATUS_INVALID_ARGUMENT,
               "%s: momentum %g outside [0, 1]", op, momentum);
  }
  DYNB_TRY(check_eps(ctx, op, eps));
  DYNB_TRY(check_act(ctx, op, act));
  dynb__tensor none = {0};
  none.dtype = x->dtype;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "norm", "dynb_bn_train_forward", x->dtype));
  arg_sizes(&l, &d);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, gamma);
  dynb__arg_tensor(&l, beta);
  dynb__arg_tensor(&l, y);
  dynb__arg_tensor(&l, save_mean);
  dynb__arg_tensor(&l, save_invstd);
  dynb__arg_tensor(&l, update ? running_mean : &none);
  dynb__arg_tensor(&l, update ? running_var : &none);
  dynb__arg_int(&l, update);
  dynb__arg_real(&l, momentum);
  dynb__arg_real(&l, eps);
  arg_act(&l, act);
  return run_per_channel(&l, &d);
}

dynb_status dynb__bn_train_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                                    const dynb__tensor *gamma, const dynb__tensor *save_mean,
                                    const dynb__tensor *save_invstd, const dynb__tensor *dx,
                                    const dynb__tensor *dgamma, const dynb__tensor *dbeta,
                                    bool acc_dx, bool acc_params) {
  const char *op = "bn_train_backward";
  DYNB_CHECK(ctx, x && dy && gamma && save_mean && save_invstd && dx && dgamma && dbeta,
             DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  nchw d;
  DYNB_TRY(check_x(ctx, op, x, &d));
  DYNB_TRY(check_like_x(ctx, op, "dy", dy, x));
  DYNB_TRY(check_chan(ctx, op, "gamma", gamma, x, d.c));
  DYNB_TRY(check_chan(ctx, op, "save_mean", save_mean, x, d.c));
  DYNB_TRY(check_chan(ctx, op, "save_invstd", save_invstd, x, d.c));
  DYNB_TRY(check_like_x(ctx, op, "dx", dx, x));
  DYNB_TRY(check_chan(ctx, op, "dgamma", dgamma, x, d.c));
  DYNB_TRY(check_chan(ctx, op, "dbeta", dbeta, x, d.c));
  if (ctx->link)
    return dynb__bn_sync_backward(ctx, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta,
                                  acc_dx, acc_params);
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "norm", "dynb_bn_train_backward", x->dtype));
  arg_sizes(&l, &d);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, dy);
  dynb__arg_tensor(&l, gamma);
  dynb__arg_tensor(&l, save_mean);
  dynb__arg_tensor(&l, save_invstd);
  dynb__arg_tensor(&l, dx);
  dynb__arg_tensor(&l, dgamma);
  dynb__arg_tensor(&l, dbeta);
  dynb__arg_int(&l, acc_dx);
  dynb__arg_int(&l, acc_params);
  return run_per_channel(&l, &d);
}

/* ---- Batch norm, evaluation ---------------------------------------------- */

/* The four per-channel vectors that evaluation reads. */
static dynb_status check_eval_params(dynb_ctx *ctx, const char *op, const dynb__tensor *x,
                                     const dynb__tensor *gamma, const dynb__tensor *beta,
                                     const dynb__tensor *running_mean,
                                     const dynb__tensor *running_var, int c) {
  DYNB_TRY(check_chan(ctx, op, "gamma", gamma, x, c));
  if (beta) DYNB_TRY(check_chan(ctx, op, "beta", beta, x, c));
  DYNB_TRY(check_chan(ctx, op, "running_mean", running_mean, x, c));
  return check_chan(ctx, op, "running_var", running_var, x, c);
}

dynb_status dynb__bn_eval_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *gamma,
                                  const dynb__tensor *beta, const dynb__tensor *running_mean,
                                  const dynb__tensor *running_var, const dynb__tensor *y,
                                  double eps, dynb_act act) {
  const char *op = "bn_eval_forward";
  DYNB_CHECK(ctx, x && gamma && beta && running_mean && running_var && y,
             DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  nchw d;
  DYNB_TRY(check_x(ctx, op, x, &d));
  DYNB_TRY(check_eval_params(ctx, op, x, gamma, beta, running_mean, running_var, d.c));
  DYNB_TRY(check_like_x(ctx, op, "y", y, x));
  DYNB_TRY(check_eps(ctx, op, eps));
  DYNB_TRY(check_act(ctx, op, act));
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "norm", "dynb_bn_eval_forward", x->dtype));
  arg_sizes(&l, &d);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, gamma);
  dynb__arg_tensor(&l, beta);
  dynb__arg_tensor(&l, running_mean);
  dynb__arg_tensor(&l, running_var);
  dynb__arg_tensor(&l, y);
  dynb__arg_real(&l, eps);
  arg_act(&l, act);
  return dynb__launch_1d(&l, dynb__tensor_numel(x));
}

dynb_status dynb__bn_eval_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                                   const dynb__tensor *gamma, const dynb__tensor *running_mean,
                                   const dynb__tensor *running_var, const dynb__tensor *dx,
                                   const dynb__tensor *dgamma, const dynb__tensor *dbeta,
                                   double eps, bool acc_dx, bool acc_params) {
  const char *op = "bn_eval_backward";
  DYNB_CHECK(ctx, x && dy && gamma && running_mean && running_var && dx && dgamma && dbeta,
             DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  nchw d;
  DYNB_TRY(check_x(ctx, op, x, &d));
  DYNB_TRY(check_like_x(ctx, op, "dy", dy, x));
  DYNB_TRY(check_eval_params(ctx, op, x, gamma, NULL, running_mean, running_var, d.c));
  DYNB_TRY(check_like_x(ctx, op, "dx", dx, x));
  DYNB_TRY(check_chan(ctx, op, "dgamma", dgamma, x, d.c));
  DYNB_TRY(check_chan(ctx, op, "dbeta", dbeta, x, d.c));
  DYNB_TRY(check_eps(ctx, op, eps));
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "norm", "dynb_bn_eval_backward", x->dtype));
  arg_sizes(&l, &d);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, dy);
  dynb__arg_tensor(&l, gamma);
  dynb__arg_tensor(&l, running_mean);
  dynb__arg_tensor(&l, running_var);
  dynb__arg_tensor(&l, dx);
  dynb__arg_tensor(&l, dgamma);
  dynb__arg_tensor(&l, dbeta);
  dynb__arg_real(&l, eps);
  dynb__arg_int(&l, acc_dx);
  dynb__arg_int(&l, acc_params);
  return run_per_channel(&l, &d);
}
