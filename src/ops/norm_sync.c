/* Batch norm in training on one replica of a data-parallel group (SPEC
 * §2.1): the statistics and the backward sums are those of the global
 * batch, merged over the replicas with their counts as PyTorch's
 * SyncBatchNorm does. Each op is three phases: a per-channel reduction of
 * this replica's shard (kernels/normsync.cl), a merge on the host through
 * the context's replica link (every replica merges the same gathered values
 * in the same replica order, so all get the same bits), and an elementwise
 * apply. The merge reads results back, so these ops wait for the queue,
 * unlike every other op; a context without a link never comes here
 * (src/ops/norm.c keeps its one-kernel path, bit for bit). */
#include <math.h>
#include <stdio.h>

#include "ops/ops.h"

/* A [C] vector of x's dtype, named for the message. */
static dynb_status check_vec(dynb_ctx *ctx, const char *op, const char *arg, const dynb__tensor *t,
                             const dynb__tensor *x, int64_t c) {
  char name[64];
  snprintf(name, sizeof name, "%s: %s", op, arg);
  DYNB_TRY(dynb__tensor_check(ctx, t, name, x->dtype, 1));
  DYNB_CHECK(ctx, t->dims[0] == c, DYNB_STATUS_SHAPE_MISMATCH,
             "%s has %lld entries for %lld channels", name, (long long)t->dims[0], (long long)c);
  return DYNB_OK;
}

/* One work-group per channel, sized within the kernel's and the device's
 * limits (llvmpipe's kernels take 32 items where the device says 1024). */
static dynb_status run_per_channel(dynb__launch *l, int c) {
  size_t wg = dynb__launch_reduce_wg(l, dynb__dtype_size(l->real));
  dynb__arg_local(l, wg * dynb__dtype_size(l->real));
  size_t global = (size_t)c * wg;
  return dynb__launch_run(l, 1, &global, &wg);
}

static void arg_sizes(dynb__launch *l, int n, int c, int s) {
  dynb__arg_int(l, n);
  dynb__arg_int(l, c);
  dynb__arg_int(l, s);
}

/* Gathers `per` doubles from every replica: returns the host block holding
 * this replica's values at [0, per) and everyone's after them. */
static dynb_status gather(dynb_ctx *ctx, const char *op, size_t per, double **block) {
  dynb__replica_link *link = ctx->link;
  *block = dynb__calloc(ctx, (size_t)(link->replicas + 1) * per, sizeof **block);
  DYNB_CHECK(ctx, *block, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: no host memory for the merge", op);
  return DYNB_OK;
}

void dynb__bn_merge_moments(int replicas, int c, const double *all, double *mean, double *m2,
                            double *count) {
  const size_t per = 2 * (size_t)c + 1;
  for (int ch = 0; ch < c; ch++) {
    double n = 0, mu = 0, sq = 0;
    for (int k = 0; k < replicas; k++) {
      const double *r = all + (size_t)k * per;
      const double nb = r[2 * (size_t)c], mb = r[ch], qb = r[(size_t)c + (size_t)ch];
      const double tot = n + nb, delta = mb - mu;
      /* Chan, Golub and LeVeque's pairwise update; with n = 0 it takes
       * the first replica's values exactly. */
      mu += delta * (nb / tot);
      sq += qb + delta * delta * (n * nb / tot);
      n = tot;
    }
    mean[ch] = mu, m2[ch] = sq, *count = n;
  }
}

dynb_status dynb__bn_sync_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *gamma,
                                  const dynb__tensor *beta, const dynb__tensor *y,
                                  const dynb__tensor *save_mean, const dynb__tensor *save_invstd,
                                  const dynb__tensor *running_mean,
                                  const dynb__tensor *running_var, double momentum, double eps,
                                  dynb_act act) {
  const char *op = "bn_train_forward";
  /* x, gamma, beta, y, save_mean and save_invstd were checked by the
   * caller, dynb__bn_train_forward. */
  const int n = (int)x->dims[0], c = (int)x->dims[1], s = (int)(x->dims[2] * x->dims[3]);
  const bool update = running_mean != NULL;
  if (update) {
    DYNB_TRY(check_vec(ctx, op, "running_mean", running_mean, x, c));
    DYNB_TRY(check_vec(ctx, op, "running_var", running_var, x, c));
    DYNB_CHECK(ctx, momentum >= 0 && momentum <= 1, DYNB_STATUS_INVALID_ARGUMENT,
               "%s: momentum %g outside [0, 1]", op, momentum);
  }
  DYNB_CHECK(ctx, isfinite(eps) && eps > 0, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: eps %g must be positive and finite", op, eps);
  DYNB_CHECK(ctx, act >= DYNB_ACT_IDENTITY && act <= DYNB_ACT_LEAKY_RELU,
             DYNB_STATUS_INVALID_ARGUMENT, "%s: unknown activation %d", op, (int)act);
  /* Phase 1: this shard's mean and M2, parked in save_mean and save_invstd. */
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "normsync", "dynb_bn_partial_stats", x->dtype));
  arg_sizes(&l, n, c, s);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, save_mean);
  dynb__arg_tensor(&l, save_invstd);
  DYNB_TRY(run_per_channel(&l, c));
  /* Phase 2: gathered as [mean (C), M2 (C), count] per replica, merged in
   * replica order; every replica writes the same global values. */
  const size_t per = 2 * (size_t)c + 1;
  double *block;
  DYNB_TRY(gather(ctx, op, per, &block));
  double *mine = block, *all = block + per;
  double *mean = dynb__calloc(ctx, 4 * (size_t)c, sizeof *mean);
  dynb_status st = mean ? DYNB_OK
                        : dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: no host memory", op);
  double *m2 = mean ? mean + c : NULL, *rm = mean ? mean + 2 * c : NULL;
  double *rv = mean ? mean + 3 * c : NULL, count = 0;
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, save_mean, mine);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, save_invstd, mine + c);
  mine[2 * (size_t)c] = (double)n * (double)s;
  if (st == DYNB_OK) st = ctx->link->allgather(ctx->link, ctx, mine, per, all);
  if (st == DYNB_OK) {
    dynb__bn_merge_moments(ctx->link->replicas, c, all, mean, m2, &count);
    if (update && count <= 1)
      st = dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT,
                      "%s: updating running statistics needs more than one value per channel "
                      "(global N·H·W = %.0f)",
                      op, count);
  }
  /* The running statistics, once per global batch with the unbiased
   * variance; every replica's copy gets the same values. */
  if (st == DYNB_OK && update) {
    st = dynb__tensor_read_f64(ctx, running_mean, rm);
    if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, running_var, rv);
    for (int ch = 0; st == DYNB_OK && ch < c; ch++) {
      rm[ch] = (1 - momentum) * rm[ch] + momentum * mean[ch];
      rv[ch] = (1 - momentum) * rv[ch] + momentum * (m2[ch] / (count - 1));
    }
    if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, running_mean, rm);
    if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, running_var, rv);
  }
  /* The saved statistics: mean, and 1/sqrt(biased variance + eps). */
  if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, save_mean, mean);
  for (int ch = 0; st == DYNB_OK && ch < c; ch++) m2[ch] = 1 / sqrt(m2[ch] / count + eps);
  if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, save_invstd, m2);
  dynb__free(ctx, block);
  dynb__free(ctx, mean);
  if (st != DYNB_OK) return st;
  /* Phase 3: y from the global statistics. */
  DYNB_TRY(dynb__launch_begin(&l, ctx, "normsync", "dynb_bn_apply_forward", x->dtype));
  arg_sizes(&l, n, c, s);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, gamma);
  dynb__arg_tensor(&l, beta);
  dynb__arg_tensor(&l, save_mean);
  dynb__arg_tensor(&l, save_invstd);
  dynb__arg_tensor(&l, y);
  dynb__arg_int(&l, (int)act);
  dynb__arg_real(&l, DYNB_LEAKY_SLOPE);
  return dynb__launch_1d(&l, dynb__tensor_numel(x));
}

dynb_status dynb__bn_sync_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                                   const dynb__tensor *gamma, const dynb__tensor *save_mean,
                                   const dynb__tensor *save_invstd, const dynb__tensor *dx,
                                   const dynb__tensor *dgamma, const dynb__tensor *dbeta,
                                   bool acc_dx, bool acc_params) {
  const char *op = "bn_train_backward";
  /* Every argument was checked by the caller, dynb__bn_train_backward. */
  const int n = (int)x->dims[0], c = (int)x->dims[1], s = (int)(x->dims[2] * x->dims[3]);
  /* Phase 1: this shard's Σdy and Σdy·xhat, into a [2C] buffer for the
   * merge, and its share of dgamma and dbeta. */
  int64_t two_c = 2 * (int64_t)c;
  const dynb__tensor *staging = &ctx->link->staging;
  DYNB_CHECK(ctx, staging->mem && staging->dtype == x->dtype &&
                      dynb__tensor_numel(staging) >= (size_t)two_c,
             DYNB_STATUS_MISUSE, "%s: the replica link stages fewer than %lld values", op,
             (long long)two_c);
  dynb__tensor sums = dynb__tensor_view(staging->mem, 0, x->dtype, 1, &two_c);
  dynb__launch l;
  dynb_status st = dynb__launch_begin(&l, ctx, "normsync", "dynb_bn_partial_grad", x->dtype);
  if (st == DYNB_OK) {
    arg_sizes(&l, n, c, s);
    dynb__arg_tensor(&l, x);
    dynb__arg_tensor(&l, dy);
    dynb__arg_tensor(&l, save_mean);
    dynb__arg_tensor(&l, save_invstd);
    dynb__arg_tensor(&l, &sums);
    dynb__arg_tensor(&l, dgamma);
    dynb__arg_tensor(&l, dbeta);
    dynb__arg_int(&l, acc_params);
    st = run_per_channel(&l, c);
  }
  /* Phase 2: gathered as [Σdy (C), Σdy·xhat (C), count] per replica and
   * summed in replica order. */
  const size_t per = 2 * (size_t)c + 1;
  double *block = NULL, count = 0;
  if (st == DYNB_OK) st = gather(ctx, op, per, &block);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &sums, block);
  if (st == DYNB_OK) {
    block[2 * (size_t)c] = (double)n * (double)s;
    st = ctx->link->allgather(ctx->link, ctx, block, per, block + per);
  }
  if (st == DYNB_OK) {
    const double *all = block + per;
    for (size_t j = 0; j < per; j++) {
      double t = 0;
      for (int k = 0; k < ctx->link->replicas; k++) t += all[(size_t)k * per + j];
      block[j] = t;
    }
    count = block[2 * (size_t)c];
    st = dynb__tensor_write_f64(ctx, &sums, block);
  }
  dynb__free(ctx, block);
  /* Phase 3: dx from the global sums and count. */
  if (st == DYNB_OK) st = dynb__launch_begin(&l, ctx, "normsync", "dynb_bn_apply_backward", x->dtype);
  if (st == DYNB_OK) {
    arg_sizes(&l, n, c, s);
    dynb__arg_tensor(&l, x);
    dynb__arg_tensor(&l, dy);
    dynb__arg_tensor(&l, gamma);
    dynb__arg_tensor(&l, save_mean);
    dynb__arg_tensor(&l, save_invstd);
    dynb__arg_tensor(&l, &sums);
    dynb__arg_real(&l, count);
    dynb__arg_tensor(&l, dx);
    dynb__arg_int(&l, acc_dx);
    st = dynb__launch_1d(&l, dynb__tensor_numel(x));
  }
  /* Commands in flight keep the buffer alive (OpenCL reference counts). */
  return st;
}
