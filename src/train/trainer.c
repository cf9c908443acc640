/* The training loop of SPEC §2: epochs of shuffled mini-batches through a
 * plan, optimiser steps, validation, and one reported row per epoch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parallel/group.h"
#include "train/train.h"

static double now_seconds(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Host staging for one batch, in the plan's real type. */
typedef struct batch {
  int64_t n;
  size_t per;
  float *x;
  double *xd; /* only for F64 networks */
  int32_t *y;
} batch;

static dynb_status batch_init(dynb_ctx *ctx, batch *b, const dynb__dataset *d, int64_t n,
                              dynb_dtype real) {
  memset(b, 0, sizeof *b);
  b->n = n;
  b->per = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  b->x = calloc((size_t)n * b->per, sizeof *b->x);
  b->y = calloc((size_t)n, sizeof *b->y);
  if (real == DYNB_F64) b->xd = calloc((size_t)n * b->per, sizeof *b->xd);
  DYNB_CHECK(ctx, b->x && b->y && (real != DYNB_F64 || b->xd), DYNB_STATUS_OUT_OF_HOST_MEMORY,
             "no host memory for a batch of %lld", (long long)n);
  return DYNB_OK;
}

static void batch_release(batch *b) {
  free(b->x), free(b->xd), free(b->y);
  memset(b, 0, sizeof *b);
}

/* Copies sample `src` into row `row`; with augmentation, shifted by up to
 * two pixels (zero fill) and mirrored with probability 1/2. */
static void gather(batch *b, const dynb__dataset *d, int64_t row, int64_t src, bool augment,
                   uint64_t *rng) {
  float *dst = b->x + (size_t)row * b->per;
  const float *s = d->images + (size_t)src * b->per;
  b->y[row] = d->labels[src];
  if (!augment) {
    memcpy(dst, s, b->per * sizeof *dst);
    return;
  }
  uint64_t r = next_u64(rng);
  int dy = (int)(r % 5) - 2, dx = (int)((r >> 8) % 5) - 2, flip = (int)((r >> 16) & 1);
  for (int c = 0; c < d->c; c++)
    for (int y = 0; y < d->h; y++)
      for (int x = 0; x < d->w; x++) {
        int sy = y + dy, sx = (flip ? d->w - 1 - x : x) + dx;
        float v = (sy >= 0 && sy < d->h && sx >= 0 && sx < d->w)
                      ? s[((size_t)c * (size_t)d->h + (size_t)sy) * (size_t)d->w + (size_t)sx]
                      : 0.0f;
        dst[((size_t)c * (size_t)d->h + (size_t)y) * (size_t)d->w + (size_t)x] = v;
      }
}

/* The batch's images in the network's real type. */
static const void *batch_real(batch *b) {
  if (!b->xd) return b->x;
  for (size_t i = 0; i < (size_t)b->n * b->per; i++) b->xd[i] = b->x[i];
  return b->xd;
}

static dynb_status batch_upload(dynb__plan *plan, dynb_ctx *ctx, batch *b) {
  DYNB_TRY(dynb__tensor_write(ctx, dynb__plan_input(plan), batch_real(b)));
  return dynb__tensor_write(ctx, dynb__plan_labels(plan), b->y);
}

/* Adds the loss and correct count of the first `valid` rows of logits. */
static void score_rows(const double *logits, const int32_t *labels, int64_t valid, int classes,
                       double *loss, double *correct) {
  for (int64_t r = 0; r < valid; r++) {
    const double *z = logits + (size_t)r * (size_t)classes;
    int arg = 0;
    for (int k = 1; k < classes; k++)
      if (z[k] > z[arg]) arg = k;
    double sum = 0;
    for (int k = 0; k < classes; k++) sum += exp(z[k] - z[arg]);
    *loss += log(sum) - (z[labels[r]] - z[arg]);
    *correct += arg == labels[r];
  }
}

dynb_status dynb__evaluate(dynb__plan *plan, const dynb__dataset *d, double *loss, double *acc) {
  dynb__net *net = dynb__plan_net(plan);
  dynb_ctx *ctx = net->ctx;
  int64_t B = dynb__plan_batch(plan);
  int classes = net->spec.classes;
  *loss = *acc = 0;
  if (d->n == 0) return DYNB_OK;
  batch b;
  double *logits = malloc((size_t)B * (size_t)classes * sizeof *logits);
  dynb_status st = logits ? batch_init(ctx, &b, d, B, net->real) : DYNB_STATUS_OUT_OF_HOST_MEMORY;
  double sum = 0, correct = 0;
  for (int64_t at = 0; st == DYNB_OK && at < d->n; at += B) {
    int64_t valid = d->n - at < B ? d->n - at : B;
    memset(b.x, 0, (size_t)B * b.per * sizeof *b.x);
    memset(b.y, 0, (size_t)B * sizeof *b.y);
    for (int64_t r = 0; r < valid; r++) gather(&b, d, r, at + r, false, NULL);
    st = batch_upload(plan, ctx, &b);
    if (st == DYNB_OK) st = dynb__plan_forward(plan, false);
    if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, dynb__plan_logits(plan), logits);
    if (st == DYNB_OK) score_rows(logits, b.y, valid, classes, &sum, &correct);
  }
  if (logits) batch_release(&b);
  free(logits);
  *loss = sum / (double)d->n;
  *acc = correct / (double)d->n;
  return st;
}

/* ---- change of tensors over an epoch ----------------------------------------------- */

/* Host copies of every tensor, to report how much an epoch moved them. */
typedef struct snapshot {
  size_t total;
  double *values;
} snapshot;

static dynb_status snapshot_take(dynb__net *net, snapshot *s) {
  size_t total = 0;
  for (size_t i = 0; i < net->ntensors; i++) total += dynb__tensor_numel(&net->tensors[i].value);
  if (!s->values) {
    s->values = malloc(total * sizeof *s->values);
    s->total = total;
  }
  DYNB_CHECK(net->ctx, s->values, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for a snapshot");
  size_t at = 0;
  for (size_t i = 0; i < net->ntensors; i++) {
    DYNB_TRY(dynb__tensor_read_f64(net->ctx, &net->tensors[i].value, s->values + at));
    at += dynb__tensor_numel(&net->tensors[i].value);
  }
  return DYNB_OK;
}

/* RMS differences between two snapshots over trainable tensors, running
 * means and running variances. */
static void snapshot_diff(const dynb__net *net, const snapshot *a, const snapshot *b,
                          double *params, double *rmean, double *rvar) {
  double acc[3] = {0, 0, 0};
  size_t cnt[3] = {0, 0, 0}, at = 0;
  for (size_t i = 0; i < net->ntensors; i++) {
    const dynb__net_tensor *t = &net->tensors[i];
    size_t n = dynb__tensor_numel(&t->value);
    int k = t->trainable ? 0 : strstr(t->name, "running_mean") ? 1 : 2;
    for (size_t j = 0; j < n; j++) {
      double d = a->values[at + j] - b->values[at + j];
      acc[k] += d * d;
    }
    cnt[k] += n;
    at += n;
  }
  *params = cnt[0] ? sqrt(acc[0] / (double)cnt[0]) : 0;
  *rmean = cnt[1] ? sqrt(acc[1] / (double)cnt[1]) : 0;
  *rvar = cnt[2] ? sqrt(acc[2] / (double)cnt[2]) : 0;
}

/* ---- training ------------------------------------------------------------------------- */

typedef struct session {
  dynb__net *net;
  dynb_ctx *ctx;
  const dynb__train_desc *desc;
  dynb__plan *plan;   /* one device; NULL with a group */
  dynb__group *group; /* several devices (desc->replicas > 1) */
  dynb__optimizer *opt;
  dynb__timereg *reg;
  dynb__tensor reg_value;
  dynb__health *health;
  batch b;
  int64_t *perm;
  uint64_t rng;
  snapshot before, after;
  /* --split auto: calibration re-balances still to do in this run's first
   * epoch, each after CALIBRATION_STEPS measured steps. */
  int calibrations;
  dynb__balance_opts balance;
} session;

/* Steps per calibration window: few, so that a bad starting split costs
 * little, but more than one, so that one noisy step does not decide. */
#define CALIBRATION_STEPS 3

static dynb_status run_epoch(session *s, dynb__dataset *train, int epoch, dynb__epoch_row *row) {
  const dynb__train_desc *d = s->desc;
  int64_t B = d->batch, nb = train->n / B;
  /* Each epoch's order depends on the random state alone (not on the
   * previous epoch's order), so a resumed run shuffles as the original. */
  for (int64_t i = 0; i < train->n; i++) s->perm[i] = i;
  for (int64_t i = train->n - 1; i > 0; i--) {
    int64_t j = (int64_t)(next_u64(&s->rng) % (uint64_t)(i + 1)), t = s->perm[i];
    s->perm[i] = s->perm[j], s->perm[j] = t;
  }
  double lr = dynb__schedule_lr(&d->lr, epoch), sum = 0, correct = 0, reg = 0, busy = 0, nfe = 0;
  for (int64_t bi = 0; bi < nb; bi++) {
    /* The whole global batch is drawn here, in its sample order, so that
     * each sample's shift and flip do not depend on the split. */
    for (int64_t r = 0; r < B; r++)
      gather(&s->b, train, r, s->perm[bi * B + r], d->augment, &s->rng);
    double out[2];
    if (s->group) {
      DYNB_TRY(dynb__group_step(s->group, batch_real(&s->b), s->b.y, lr, s->reg, &s->reg_value,
                                epoch, bi, out));
      sum += out[0], correct += out[1];
      if (d->on_progress)
        d->on_progress(d->user, epoch, bi + 1, nb, sum / (double)(bi + 1),
                       correct / (double)((bi + 1) * B));
      /* Calibration: re-balance from the first measured steps (the epoch's
       * end re-balances anyway). */
      if (s->calibrations > 0 && bi + 1 < nb &&
          dynb__group_window(s->group) >= CALIBRATION_STEPS) {
        bool changed;
        int64_t left = (nb - bi - 1) + (int64_t)(d->epochs - epoch - 1) * nb;
        DYNB_TRY(dynb__group_rebalance(s->group, &s->balance, left, &changed));
        s->calibrations--;
      }
      continue;
    }
    double t0 = now_seconds();
    DYNB_TRY(batch_upload(s->plan, s->ctx, &s->b));
    DYNB_TRY(dynb__net_zero_grads(s->net));
    DYNB_TRY(dynb__plan_forward(s->plan, true));
    if (s->reg) DYNB_TRY(dynb__timereg_apply(s->reg, &s->reg_value));
    DYNB_TRY(dynb__plan_backward(s->plan, false));
    nfe += dynb__net_nfe(s->net);
    /* The step's one wait: loss and gradients checked before they move the
     * parameters, so a diverged step never reaches them. */
    DYNB_TRY(dynb__health_check(s->health, epoch, bi, out));
    DYNB_TRY(dynb__optimizer_step(s->opt, lr));
    busy += now_seconds() - t0;
    sum += out[0], correct += out[1];
    if (d->on_progress)
      d->on_progress(d->user, epoch, bi + 1, nb, sum / (double)(bi + 1),
                     correct / (double)((bi + 1) * B));
  }
  if (s->reg) {
    double v;
    DYNB_TRY(dynb__tensor_read_f64(s->ctx, &s->reg_value, &v));
    reg = v;
  }
  /* After the last batch's backward, whose rebuilt states the optimiser
   * step left alone. */
  if ((d->log_reconstruction || d->warn_reconstruction > 0) && s->plan) {
    DYNB_TRY(dynb__plan_reconstruction_error(s->plan, &row->rec_err));
    /* Written so that a NaN error warns too. */
    row->rec_warn = d->warn_reconstruction > 0 && !(row->rec_err <= d->warn_reconstruction);
  }
  row->lr = lr;
  row->train_loss = sum / (double)nb;
  row->train_acc = correct / (double)(nb * B);
  row->time_reg = reg;
  row->shard[0] = B;
  row->busy_seconds[0] = busy;
  /* Data-parallel steps go through the group: replica 0's network (each
   * replica evaluates as often on its shard). */
  row->nfe = s->group ? dynb__net_nfe(s->net) : nfe / (double)nb;
  return DYNB_OK;
}

static dynb_status session_open(session *s, dynb__net *net, const dynb__dataset *train,
                                const dynb__train_desc *d) {
  memset(s, 0, sizeof *s);
  s->net = net, s->ctx = net->ctx, s->desc = d, s->rng = d->seed;
  DYNB_CHECK(s->ctx, d->batch >= 1 && train->n >= d->batch, DYNB_STATUS_INVALID_ARGUMENT,
             "the training set (%lld samples) is smaller than one batch (%lld)",
             (long long)train->n, (long long)d->batch);
  DYNB_CHECK(s->ctx, train->c == net->spec.in_channels && train->h == net->spec.in_height &&
                         train->w == net->spec.in_width,
             DYNB_STATUS_SHAPE_MISMATCH,
             "data of %dx%dx%d does not fit the network's input %dx%dx%d", train->c, train->h,
             train->w, net->spec.in_channels, net->spec.in_height, net->spec.in_width);
  /* Across MPI ranks this process holds one replica, the network given. */
  dynb__net *const self[1] = {net};
  if (d->replicas > 1) {
    DYNB_CHECK(s->ctx, (s->ctx->world || (d->nets && d->nets[0] == net)) && d->shard,
               DYNB_STATUS_INVALID_ARGUMENT,
               "a data-parallel run needs its networks and shards, the first being the one trained");
    int64_t sum = 0;
    for (int r = 0; r < d->replicas && r < DYNB_MAX_REPLICAS; r++) {
      DYNB_CHECK(s->ctx, d->shard[r] >= 1, DYNB_STATUS_INVALID_ARGUMENT,
                 "replica %d has an empty shard (%lld samples)", r, (long long)d->shard[r]);
      sum += d->shard[r];
    }
    DYNB_CHECK(s->ctx, sum == d->batch, DYNB_STATUS_INVALID_ARGUMENT,
               "the shards sum to %lld samples, not the batch %lld", (long long)sum,
               (long long)d->batch);
    DYNB_TRY(dynb__group_create(s->ctx->world ? self : d->nets, d->replicas, d->shard, d->memory,
                                &d->optim, &s->group));
    s->opt = dynb__group_optimizer(s->group, 0);
    if (d->balance) {
      dynb__group_set_busy(s->group, d->busy, d->user);
      s->balance = dynb__balance_defaults();
      s->calibrations = 2;
    }
  } else {
    DYNB_TRY(dynb__plan_build(net, d->batch, d->memory, &s->plan));
    DYNB_TRY(dynb__optimizer_create(net, &d->optim, &s->opt));
    DYNB_TRY(dynb__health_create(net, dynb__plan_loss(s->plan), &s->health));
  }
  if (net->spec.time_reg > 0) {
    int64_t one = 1;
    DYNB_TRY(dynb__timereg_create(net, &s->reg));
    DYNB_TRY(dynb__tensor_alloc(s->ctx, net->real, 1, &one, &s->reg_value));
  }
  if (d->resume_path)
    DYNB_TRY(s->group ? dynb__group_load_optimizer(s->group, d->resume_path)
                      : dynb__model_load_optimizer(net, d->resume_path, s->opt));
  if (d->state && d->resume_path) s->rng = d->state->rng;
  DYNB_TRY(batch_init(s->ctx, &s->b, train, d->batch, net->real));
  s->perm = malloc((size_t)train->n * sizeof *s->perm);
  DYNB_CHECK(s->ctx, s->perm, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  return DYNB_OK;
}

static void session_close(session *s) {
  batch_release(&s->b);
  free(s->perm);
  free(s->before.values);
  free(s->after.values);
  dynb__tensor_release(&s->reg_value);
  dynb__timereg_free(s->reg);
  dynb__health_free(s->health);
  if (!s->group) dynb__optimizer_free(s->opt);
  dynb__group_free(s->group);
  dynb__plan_free(s->plan);
}

/* Multilevel training: halves every block's grids (on every replica alike)
 * and rebuilds what held views of the old tensors, the optimiser state
 * carried over (refine.c says how and why). */
static dynb_status session_refine(session *s) {
  const dynb__train_desc *d = s->desc;
  dynb__optim_saved *saved = NULL;
  DYNB_TRY(dynb__optim_save(s->opt, s->net, &saved));
  dynb__health_free(s->health);
  if (!s->group) dynb__optimizer_free(s->opt);
  dynb__group_free(s->group);
  dynb__plan_free(s->plan);
  dynb__timereg_free(s->reg);
  s->health = NULL, s->opt = NULL, s->group = NULL, s->plan = NULL, s->reg = NULL;
  char err[512];
  int n = d->replicas > 1 ? d->replicas : 1;
  dynb_status st = DYNB_OK;
  for (int r = 0; st == DYNB_OK && r < n; r++)
    st = dynb__net_refine(n > 1 ? d->nets[r] : s->net, 2, err, sizeof err);
  if (st == DYNB_OK && n > 1) {
    st = dynb__group_create(d->nets, d->replicas, d->shard, d->memory, &d->optim, &s->group);
    for (int r = 0; st == DYNB_OK && r < n; r++)
      st = dynb__optim_restore(dynb__group_optimizer(s->group, r), d->nets[r], saved);
    if (st == DYNB_OK) s->opt = dynb__group_optimizer(s->group, 0);
  } else if (st == DYNB_OK) {
    st = dynb__plan_build(s->net, d->batch, d->memory, &s->plan);
    if (st == DYNB_OK) st = dynb__optimizer_create(s->net, &d->optim, &s->opt);
    if (st == DYNB_OK) st = dynb__optim_restore(s->opt, s->net, saved);
    if (st == DYNB_OK) st = dynb__health_create(s->net, dynb__plan_loss(s->plan), &s->health);
  }
  if (st == DYNB_OK && s->net->spec.time_reg > 0) st = dynb__timereg_create(s->net, &s->reg);
  dynb__optim_saved_free(saved);
  /* The epoch's change is measured from the refined tensors. */
  free(s->before.values), free(s->after.values);
  memset(&s->before, 0, sizeof s->before), memset(&s->after, 0, sizeof s->after);
  if (st == DYNB_OK) st = snapshot_take(s->net, &s->before);
  return st;
}

dynb_status dynb__train(dynb__net *net, dynb__dataset *train, const dynb__dataset *val,
                        const dynb__train_desc *d) {
  session s;
  dynb_status st = session_open(&s, net, train, d);
  if (st == DYNB_OK) st = snapshot_take(net, &s.before);
  /* A resumed run continues its epoch count (and schedule) up to d->epochs. */
  int first = d->resume_path && d->state ? (int)d->state->epoch : 0;
  for (int e = first; st == DYNB_OK && e < d->epochs; e++) {
    dynb__epoch_row row;
    memset(&row, 0, sizeof row);
    row.epoch = e;
    double t0 = now_seconds();
    row.refined = dynb__refine_due(d->refine_epochs, d->nrefine, e);
    if (row.refined && (st = session_refine(&s)) != DYNB_OK) break;
    st = run_epoch(&s, train, e, &row);
    if (st == DYNB_OK)
      st = s.group ? dynb__group_evaluate(s.group, val, &row.val_loss, &row.val_acc)
                   : dynb__evaluate(s.plan, val, &row.val_loss, &row.val_acc);
    /* The replicas must still be one model (SPEC §2.1). */
    if (st == DYNB_OK && s.group) st = dynb__group_check_equal(s.group, e);
    int rfirst = 0, local = 0, total = 0;
    if (s.group) dynb__group_place(s.group, &rfirst, &local, &total);
    for (int r = 0; s.group && r < local; r++) {
      dynb__replica_stats rs;
      dynb__group_stats(s.group, r, &rs, true);
      row.shard[r] = rs.shard;
      row.compute_seconds[r] = rs.compute_seconds;
      row.step_seconds[r] = rs.step_seconds;
      row.busy_seconds[r] = rs.busy_seconds;
    }
    /* --split auto: re-balance from the epoch's measurements for the
     * epochs left (the row shows the split the epoch ran with). */
    if (st == DYNB_OK && s.group && d->balance && e + 1 < d->epochs) {
      bool changed;
      int64_t left = (int64_t)(d->epochs - e - 1) * (train->n / d->batch);
      st = dynb__group_rebalance(s.group, &s.balance, left, &changed);
    }
    row.replicas = s.group ? local : 1;
    if (st == DYNB_OK) st = snapshot_take(net, &s.after);
    if (st != DYNB_OK) break;
    snapshot_diff(net, &s.after, &s.before, &row.d_params, &row.d_running_mean,
                  &row.d_running_var);
    snapshot tmp = s.before;
    s.before = s.after, s.after = tmp;
    row.seconds = now_seconds() - t0;
    if (d->state) d->state->epoch++, d->state->rng = s.rng;
    /* The row first: its handler may save the best model and note its score
     * in the state. Then the checkpoint, which thus never claims an epoch
     * whose best model was not yet written; a run killed in between redoes
     * that epoch, identically. */
    if (d->on_row) d->on_row(d->user, &row);
    if (d->checkpoint_path && d->state)
      st = dynb__model_save(net, d->checkpoint_path, s.opt, d->state);
  }
  session_close(&s);
  return dynb__world_settle(net->ctx, st);
}
