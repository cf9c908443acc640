/* The public trainer: checks a dynb_train_desc, turns it into the internal
 * dynb__train_desc and hands over to dynb__train (src/train/trainer.c);
 * rows are copied into the public dynb_epoch_row on the way out. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "parallel/group.h"

_Static_assert(DYNB_TRAIN_MAX_DEVICES == DYNB_MAX_REPLICAS, "one device limit");
_Static_assert(sizeof(dynb_train_state) == sizeof(dynb__train_state) &&
                   sizeof(((dynb_train_state *)0)->norm_mean) ==
                       sizeof(((dynb__train_state *)0)->norm_mean),
               "the public training state mirrors the internal one");

dynb_train_desc dynb_train_desc_default(void) {
  dynb__optim_desc o = dynb__optim_desc_default();
  dynb_train_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.epochs = 1;
  d.batch = 128;
  d.lr = NULL;
  d.optim = o.kind;
  d.momentum = o.momentum, d.weight_decay = o.weight_decay, d.nesterov = o.nesterov;
  d.beta1 = o.beta1, d.beta2 = o.beta2, d.eps = o.eps;
  d.memory = DYNB_MEMORY_STORE;
  return d;
}

static void state_in(dynb__train_state *to, const dynb_train_state *from) {
  to->epoch = from->epoch, to->rng = from->rng, to->best = from->best;
  memcpy(to->norm_mean, from->norm_mean, sizeof to->norm_mean);
  memcpy(to->norm_std, from->norm_std, sizeof to->norm_std);
}

static void state_out(dynb_train_state *to, const dynb__train_state *from) {
  to->epoch = from->epoch, to->rng = from->rng, to->best = from->best;
  memcpy(to->norm_mean, from->norm_mean, sizeof to->norm_mean);
  memcpy(to->norm_std, from->norm_std, sizeof to->norm_std);
}

dynb_status dynb_net_load_state(dynb_ctx *ctx, const char *path, dynb_dtype real, dynb_net **out,
                                dynb_train_state *state) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out && path && state, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_load_state: %s is NULL", !out ? "out" : !path ? "path" : "state");
  *out = NULL;
  DYNB_CHECK(ctx, real == DYNB_F32 || real == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_load_state: real must be DYNB_F32 or DYNB_F64");
  dynb__train_state ts;
  dynb__net *inner;
  DYNB_TRY(dynb__model_load(ctx, path, real, &inner, &ts));
  state_out(state, &ts);
  return dynb__api_net_wrap(ctx, inner, out);
}

dynb_status dynb_net_save_state(dynb_net *net, const char *path, const dynb_train_state *state) {
  DYNB__API_HANDLE(net);
  DYNB_CHECK(net->ctx, path && state, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_save_state: %s is NULL", path ? "state" : "path");
  dynb__train_state ts;
  state_in(&ts, state);
  return dynb__model_save(net->net, path, NULL, &ts);
}

dynb_status dynb_split_parse(const char *text, int devices, int64_t batch, int64_t *shard,
                             int *is_auto, char *err, size_t errlen) {
  char buf[512];
  if (!err || errlen == 0) err = buf, errlen = sizeof buf;
  err[0] = '\0';
  if (devices < 1 || devices > DYNB_MAX_REPLICAS || !shard || batch < 1) {
    snprintf(err, errlen, "dynb_split_parse: %s",
             !shard ? "shard is NULL"
                    : batch < 1 ? "the batch must be positive" : "devices must be 1 .. 16");
    return DYNB_STATUS_INVALID_ARGUMENT;
  }
  if (is_auto) *is_auto = dynb__split_is_auto(text);
  return dynb__split_parse(text, devices, batch, shard, err, errlen);
}

/* The caller's callbacks and user pointer, behind the internal ones. */
typedef struct relay {
  dynb_epoch_fn fn;
  dynb_progress_fn progress;
  void *user;
  /* The caller's state and the trainer's, one state: the callback sees the
   * trainer's (it may save a model with it) and what it changes (the best
   * score) goes into the checkpoint written after it. */
  dynb_train_state *state;
  dynb__train_state *inner;
} relay;

static void progress_out(void *user, int epoch, int64_t done, int64_t total, double loss,
                         double acc) {
  relay *r = user;
  r->progress(r->user, epoch, done, total, loss, acc);
}

static void row_out(void *user, const dynb__epoch_row *in) {
  relay *r = user;
  dynb_epoch_row row;
  memset(&row, 0, sizeof row);
  row.struct_size = sizeof row;
  row.epoch = in->epoch, row.seconds = in->seconds;
  row.d_running_mean = in->d_running_mean, row.d_running_var = in->d_running_var;
  row.lr = in->lr, row.d_params = in->d_params;
  row.train_loss = in->train_loss, row.train_acc = in->train_acc;
  row.val_loss = in->val_loss, row.val_acc = in->val_acc, row.time_reg = in->time_reg;
  row.replicas = in->replicas;
  for (int k = 0; k < DYNB_MAX_REPLICAS; k++) {
    row.shard[k] = in->shard[k];
    row.compute_seconds[k] = in->compute_seconds[k];
    row.step_seconds[k] = in->step_seconds[k];
    row.busy_seconds[k] = in->busy_seconds[k];
  }
  row.refined = in->refined, row.nfe = in->nfe, row.rec_err = in->rec_err;
  row.rec_warn = in->rec_warn;
  if (r->state) state_out(r->state, r->inner);
  if (r->fn) r->fn(r->user, &row);
  if (r->state) state_in(r->inner, r->state);
}

/* Whether a data set fits a network: its image shape, and labels the loss
 * can index (every label below the network's classes). */
static dynb_status check_fits(dynb_ctx *ctx, const char *call, const char *what,
                              const dynb_net *net, const dynb_dataset *d, bool shape) {
  const dynb__net_spec *sp = &net->net->spec;
  DYNB_CHECK(ctx, !shape || d->d.n == 0 || (d->d.c == sp->in_channels && d->d.h == sp->in_height &&
                                  d->d.w == sp->in_width),
             DYNB_STATUS_SHAPE_MISMATCH, "%s: %s has images of %dx%dx%d, the network takes %dx%dx%d",
             call, what, d->d.c, d->d.h, d->d.w, sp->in_channels, sp->in_height, sp->in_width);
  /* The labels present, not the set's nominal classes: an IDX set names no
   * class count (10 is assumed), and a set of 4 classes in IDX files is a
   * valid input for a 4-class network. */
  for (int64_t i = 0; i < d->d.n; i++)
    DYNB_CHECK(ctx, d->d.labels[i] >= 0 && d->d.labels[i] < sp->classes,
               DYNB_STATUS_SHAPE_MISMATCH, "%s: %s has label %d at sample %lld, the network %d classes",
               call, what, (int)d->d.labels[i], (long long)i, sp->classes);
  return DYNB_OK;
}

/* The whole description checked before anything runs; each message names the field. */
static dynb_status check_desc(dynb_ctx *ctx, const dynb_train_desc *d, int *replicas) {
  DYNB_CHECK(ctx, d->struct_size == sizeof *d, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_train: desc->struct_size is %u, not %zu (start from dynb_train_desc_default)",
             (unsigned)d->struct_size, sizeof *d);
  DYNB_CHECK(ctx, d->epochs >= 1, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_train: desc->epochs is %d (expected >= 1)", d->epochs);
  DYNB_CHECK(ctx, d->batch >= 1, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_train: desc->batch is %lld (expected >= 1)", (long long)d->batch);
  DYNB_CHECK(ctx, d->optim == DYNB_OPTIM_SGD || d->optim == DYNB_OPTIM_ADAM,
             DYNB_STATUS_INVALID_ARGUMENT, "dynb_train: desc->optim %d is no optimiser",
             (int)d->optim);
  DYNB_CHECK(ctx, d->memory == DYNB_MEMORY_STORE || d->memory == DYNB_MEMORY_CHECKPOINT ||
                      d->memory == DYNB_MEMORY_RECONSTRUCT,
             DYNB_STATUS_INVALID_ARGUMENT, "dynb_train: desc->memory %d is no memory mode",
             (int)d->memory);
  DYNB_CHECK(ctx, d->warn_reconstruction >= 0 && d->warn_reconstruction <= 1e300,
             DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_train: desc->warn_reconstruction is %g (expected 0, off, or a positive bound)",
             d->warn_reconstruction);
  DYNB_CHECK(ctx, !d->resume_path || d->state, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_train: desc->resume_path needs desc->state (from dynb_net_load_state)");
  DYNB_CHECK(ctx, d->nrefine >= 0 && d->nrefine <= DYNB_MAX_REFINE &&
                      (d->nrefine == 0 || d->refine_epochs),
             DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_train: desc->nrefine is %d (0 .. %d, with refine_epochs)", d->nrefine,
             DYNB_MAX_REFINE);
  for (int i = 1; i < d->nrefine; i++)
    DYNB_CHECK(ctx, d->refine_epochs[i] > d->refine_epochs[i - 1], DYNB_STATUS_INVALID_ARGUMENT,
               "dynb_train: desc->refine_epochs must increase strictly (%d after %d)",
               d->refine_epochs[i], d->refine_epochs[i - 1]);
  if (ctx->world) {
    DYNB_CHECK(ctx, d->devices <= 1, DYNB_STATUS_INVALID_ARGUMENT,
               "dynb_train: desc->devices is %d, but the context joined an MPI communicator "
               "(one device per rank: leave it 0)", d->devices);
    *replicas = ctx->world->replicas;
  } else {
    DYNB_CHECK(ctx, d->devices >= 0 && d->devices <= DYNB_MAX_REPLICAS,
               DYNB_STATUS_INVALID_ARGUMENT, "dynb_train: desc->devices is %d (0 .. %d)",
               d->devices, DYNB_MAX_REPLICAS);
    DYNB_CHECK(ctx, d->devices <= 1 || d->nets, DYNB_STATUS_INVALID_ARGUMENT,
               "dynb_train: desc->devices is %d but desc->nets is NULL", d->devices);
    *replicas = d->devices > 1 ? d->devices : 1;
  }
  return DYNB_OK;
}

dynb_status dynb_train(dynb_net *net, dynb_dataset *train, const dynb_dataset *val,
                       const dynb_train_desc *desc) {
  DYNB__API_HANDLE(net);
  dynb_ctx *ctx = net->ctx;
  DYNB_CHECK(ctx, train, DYNB_STATUS_INVALID_ARGUMENT, "dynb_train: the training set is NULL");
  dynb_train_desc def = dynb_train_desc_default();
  const dynb_train_desc *d = desc ? desc : &def;
  int replicas = 1;
  DYNB_TRY(check_desc(ctx, d, &replicas));
  /* The training set's shape the trainer checks, in the words of the tool's messages. */
  DYNB_TRY(check_fits(ctx, "dynb_train", "the training set", net, train, false));
  if (val) DYNB_TRY(check_fits(ctx, "dynb_train", "the validation set", net, val, true));
  dynb__net *inner[DYNB_MAX_REPLICAS] = {NULL};
  inner[0] = net->net;
  if (!ctx->world && replicas > 1) {
    DYNB_CHECK(ctx, d->nets[0] == net, DYNB_STATUS_INVALID_ARGUMENT,
               "dynb_train: desc->nets[0] must be the network trained");
    for (int k = 0; k < replicas; k++) {
      DYNB_CHECK(ctx, d->nets[k], DYNB_STATUS_INVALID_ARGUMENT, "dynb_train: desc->nets[%d] is NULL",
                 k);
      inner[k] = d->nets[k]->net;
    }
  }
  for (int k = 0; k < (ctx->world ? 1 : replicas); k++) {
    const dynb_net *n = k ? d->nets[k] : net;
    DYNB_CHECK(ctx, n->children == 0, DYNB_STATUS_MISUSE,
               "dynb_train: network %d has %d plans or optimisers alive; free them first", k,
               n->children);
  }
  dynb__train_desc in;
  memset(&in, 0, sizeof in);
  char err[1024];
  if (dynb__schedule_parse(d->lr ? d->lr : "0.05@0,0.01@2", &in.lr, err, sizeof err) != DYNB_OK)
    return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT, "dynb_train: desc->lr: %s", err);
  int64_t shard[DYNB_MAX_REPLICAS];
  if (replicas > 1) {
    if (dynb__split_parse(d->split, replicas, d->batch, shard, err, sizeof err) != DYNB_OK)
      return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT, "dynb_train: desc->split: %s", err);
    in.replicas = replicas;
    in.nets = ctx->world ? NULL : inner;
    in.shard = shard;
    in.balance = dynb__split_is_auto(d->split);
  }
  in.epochs = d->epochs;
  in.batch = d->batch;
  in.optim = dynb__optim_desc_default();
  in.optim.kind = d->optim;
  in.optim.momentum = d->momentum, in.optim.weight_decay = d->weight_decay;
  in.optim.nesterov = d->nesterov != 0;
  in.optim.beta1 = d->beta1, in.optim.beta2 = d->beta2, in.optim.eps = d->eps;
  in.seed = d->seed;
  in.augment = d->augment != 0;
  in.memory = d->memory;
  dynb__train_state ts = {.best = INFINITY};
  if (d->state) state_in(&ts, d->state);
  relay r = {d->on_epoch, d->on_progress, d->user, d->state, &ts};
  in.on_row = row_out;
  in.on_progress = d->on_progress ? progress_out : NULL;
  in.user = &r;
  in.checkpoint_path = d->checkpoint_path;
  in.resume_path = d->resume_path;
  in.state = &ts;
  in.refine_epochs = d->refine_epochs;
  in.nrefine = d->nrefine;
  in.log_reconstruction = d->log_reconstruction != 0;
  in.warn_reconstruction = d->warn_reconstruction;
  const dynb__dataset empty = {0};
  dynb_status st = dynb__train(net->net, &train->d, val ? &val->d : &empty, &in);
  if (d->state) state_out(d->state, &ts);
  return st;
}

dynb_status dynb_evaluate(dynb_net *const *nets, int count, const int64_t *shard, int64_t batch,
                          const dynb_dataset *d, double *loss, double *accuracy) {
  if (!nets || !nets[0]) return DYNB_STATUS_MISUSE;
  dynb_ctx *ctx = nets[0]->ctx;
  DYNB_CHECK(ctx, d && loss && accuracy, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_evaluate: %s is NULL", !d ? "the data set" : !loss ? "loss" : "accuracy");
  DYNB_CHECK(ctx, count >= 1 && count <= DYNB_MAX_REPLICAS, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_evaluate: count is %d (1 .. %d)", count, DYNB_MAX_REPLICAS);
  DYNB_CHECK(ctx, batch >= 1, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_evaluate: batch is %lld (expected >= 1)", (long long)batch);
  DYNB_TRY(check_fits(ctx, "dynb_evaluate", "the data set", nets[0], d, true));
  if (count > 1) {
    dynb__net *inner[DYNB_MAX_REPLICAS];
    int64_t eq[DYNB_MAX_REPLICAS];
    for (int k = 0; k < count; k++) {
      DYNB_CHECK(ctx, nets[k], DYNB_STATUS_INVALID_ARGUMENT, "dynb_evaluate: nets[%d] is NULL", k);
      inner[k] = nets[k]->net;
    }
    if (!shard) {
      char err[512];
      if (dynb__split_parse("equal", count, batch < count ? count : batch, eq, err, sizeof err) !=
          DYNB_OK)
        return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT, "dynb_evaluate: %s", err);
      shard = eq;
    }
    return dynb__evaluate_split(inner, count, shard, &d->d, loss, accuracy);
  }
  DYNB_CHECK(ctx, nets[0]->children == 0, DYNB_STATUS_MISUSE,
             "dynb_evaluate: the network has %d plans or optimisers alive; free them first",
             nets[0]->children);
  dynb__plan *plan = NULL;
  DYNB_TRY(dynb__plan_build(nets[0]->net, batch, DYNB_MEMORY_STORE, &plan));
  dynb_status st = dynb__evaluate(plan, &d->d, loss, accuracy);
  dynb__plan_free(plan);
  return st;
}
