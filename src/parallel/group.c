/* A replica group (SPEC §2.1): one plan per replica on its shard of the
 * global batch, run concurrently (one thread each), with batch norm merged
 * over the global batch through each context's replica link, gradients
 * summed on the host in replica order, and the same optimiser step on every
 * replica. The arithmetic that couples replicas happens on the host from
 * values every replica gathers in the same order, so the replicas stay
 * bitwise equal and two runs give the same bits. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parallel/group.h"

typedef struct replica {
  dynb__group *g;
  int index;
  dynb__net *net;
  dynb__plan *plan;
  dynb__optimizer *opt;
  dynb__health *health;
  dynb__replica_link link;
  int64_t offset, shard;
  double *grads; /* [2 · (ngrad + 2)]: this replica's, then the sums */
  double compute_s, step_s, busy_s; /* over the epoch (dynb__group_stats) */
  double wait_s;                     /* in synced batch norm, running total */
  double window_busy;                /* over the balancer's window */
  double rebuild_s;                  /* the last plan build and warm-up */
  int64_t split[DYNB_MAX_REPLICAS];  /* the split this replica computed */
} replica;

struct dynb__group {
  int n; /* replicas in this process: r[0..n) */
  /* Their place among all replicas: first, first + 1, ... of total. In one
   * process first = 0 and total = n; across MPI ranks (the context joined a
   * communicator, dynb_mpi_join) this process holds one, first = its rank. */
  int first, total;
  bool own_transport; /* the in-process one; else the context's world */
  int64_t steps;      /* steps taken, for the fault hook */
  long fail_replica, fail_step; /* DYNBLOCKS_TEST_FAIL_STEP, else -1 */
  bool fail_kill;
  int64_t batch;
  size_t ngrad; /* trainable elements */
  /* Devices that may round differently (another platform, device or
   * driver than replica 0's): after each step they take replica 0's
   * parameters and optimiser state, so that the replicas stay one model.
   * Identical devices compute the same bits and skip that transfer. */
  bool resync;
  dynb_memory_mode mode;
  dynb__transport *transport;
  /* The balancer's window: steps measured, and whether the next step is
   * skipped (the first after a start or re-split). */
  int64_t window;
  bool skip;
  dynb__busy_fn busy_fn;
  void *busy_user;
  int64_t lo[DYNB_MAX_REPLICAS + 1]; /* every replica's first row, then the batch */
  replica r[DYNB_MAX_REPLICAS];
};

/* FNV-1a, for the device identity and the parameter checksum across ranks. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
  return h;
}
#define FNV_START UINT64_C(0xcbf29ce484222325)

/* A hash gathered from every rank (as two exact doubles of 32 bits);
 * *same: every rank's equals rank 0's, else *who is the first that
 * differs. */
static dynb_status gather_hash(dynb__group *g, dynb_ctx *ctx, uint64_t h, bool *same, int *who) {
  double mine[2] = {(double)(h >> 32), (double)(h & 0xffffffffu)}, all[2 * DYNB_MAX_REPLICAS];
  DYNB_TRY(g->transport->allgather(g->transport, g->first, ctx, mine, 2, all));
  *same = true, *who = -1;
  for (int k = 1; k < g->total && *same; k++)
    if (all[2 * k] != all[0] || all[2 * k + 1] != all[1]) *same = false, *who = k;
  return DYNB_OK;
}

static double now_seconds(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- shards ---------------------------------------------------------------- */

bool dynb__split_is_auto(const char *text) { return !text || strcmp(text, "auto") == 0; }

dynb_status dynb__split_parse(const char *text, int replicas, int64_t batch, int64_t *shard,
                              char *err, size_t errlen) {
  if (dynb__split_is_auto(text) || strcmp(text, "equal") == 0) {
    if (batch < replicas) {
      snprintf(err, errlen, "--batch %lld is smaller than the %d devices", (long long)batch,
               replicas);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    for (int r = 0; r < replicas; r++) shard[r] = batch / replicas + (r < batch % replicas);
    return DYNB_OK;
  }
  const char *p = text;
  int64_t sum = 0;
  for (int r = 0; r < replicas; r++) {
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p || v < 1 || (*end != ',' && *end != '\0') || (*end == '\0') != (r == replicas - 1)) {
      snprintf(err, errlen,
               "--split '%s': expected equal or %d positive sizes separated by commas", text,
               replicas);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    shard[r] = v, sum += v;
    p = end + 1;
  }
  if (sum != batch) {
    snprintf(err, errlen, "--split '%s' sums to %lld, not the batch %lld", text, (long long)sum,
             (long long)batch);
    return DYNB_STATUS_INVALID_ARGUMENT;
  }
  return DYNB_OK;
}

/* ---- threads ---------------------------------------------------------------- */

typedef dynb_status (*replica_fn)(replica *rep, void *arg);

typedef struct job {
  replica *rep;
  replica_fn fn;
  void *arg;
  dynb_status st;
} job;

static void *run_job(void *p) {
  job *j = p;
  j->st = j->fn(j->rep, j->arg);
  /* A failure wakes the replicas waiting for this one. */
  if (j->st != DYNB_OK)
    j->rep->g->transport->abort(j->rep->g->transport, j->rep->index, j->st,
                                dynb_ctx_last_error(j->rep->net->ctx));
  return NULL;
}

/* Runs fn on every replica concurrently (replica 0 on this thread). A
 * failure is reported on replica 0's context as the first replica's own
 * failure (not the "replica k failed" of those it stopped). */
static dynb_status run_all(dynb__group *g, replica_fn fn, void *arg, const char *what) {
  job jobs[DYNB_MAX_REPLICAS];
  pthread_t th[DYNB_MAX_REPLICAS];
  bool started[DYNB_MAX_REPLICAS] = {false};
  for (int r = 0; r < g->n; r++) jobs[r] = (job){&g->r[r], fn, arg, DYNB_OK};
  for (int r = 1; r < g->n; r++) started[r] = pthread_create(&th[r], NULL, run_job, &jobs[r]) == 0;
  for (int r = 1; r < g->n; r++)
    if (!started[r]) {
      jobs[r].st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
      g->transport->abort(g->transport, r, jobs[r].st, "no thread for this replica");
    }
  run_job(&jobs[0]);
  for (int r = 1; r < g->n; r++)
    if (started[r]) pthread_join(th[r], NULL);
  /* The replica that failed by itself: the first whose message is not
   * another replica's failure. */
  int first = -1;
  for (int r = 0; r < g->n && first < 0; r++) {
    bool own = (r > 0 && !started[r]) ||
               strncmp(dynb_ctx_last_error(g->r[r].net->ctx), "replica ", 8) != 0;
    if (jobs[r].st != DYNB_OK && own) first = r;
  }
  for (int r = 0; r < g->n && first < 0; r++)
    if (jobs[r].st != DYNB_OK) first = r;
  if (first < 0) return DYNB_OK;
  dynb_ctx *c0 = g->r[0].net->ctx;
  if (!started[first] && first > 0)
    return dynb__fail(c0, jobs[first].st, "%s: replica %d (%s): no thread for it", what,
                      g->r[first].index,
                      g->r[first].net->ctx->info.device_name);
  char msg[sizeof c0->last_error];
  snprintf(msg, sizeof msg, "%s", dynb_ctx_last_error(g->r[first].net->ctx));
  /* Another rank's failure names that rank already. */
  if (strncmp(msg, "rank ", 5) == 0) return dynb__fail(c0, jobs[first].st, "%s: %s", what, msg);
  return dynb__fail(c0, jobs[first].st, "%s: replica %d (%s): %s", what, g->r[first].index,
                    g->r[first].net->ctx->info.device_name, msg);
}

static dynb_status link_allgather(dynb__replica_link *link, dynb_ctx *ctx, const double *mine,
                                  size_t n, double *all) {
  replica *rep = link->user;
  /* Time spent here is waiting for the slower replicas (this replica's own
   * device work for the statistics is done before the call). */
  double t0 = now_seconds();
  dynb_status st = rep->g->transport->allgather(rep->g->transport, rep->index, ctx, mine, n, all);
  rep->wait_s += now_seconds() - t0;
  return st;
}

/* ---- creation ---------------------------------------------------------------- */

static size_t all_numel(const dynb__net *net) {
  size_t total = 0;
  for (size_t i = 0; i < net->ntensors; i++) total += dynb__tensor_numel(&net->tensors[i].value);
  return total;
}

static dynb_status read_all(dynb__net *net, double *v) {
  for (size_t i = 0, at = 0; i < net->ntensors; i++) {
    DYNB_TRY(dynb__tensor_read_f64(net->ctx, &net->tensors[i].value, v + at));
    at += dynb__tensor_numel(&net->tensors[i].value);
  }
  return DYNB_OK;
}

static dynb_status write_all(dynb__net *net, const double *v) {
  for (size_t i = 0, at = 0; i < net->ntensors; i++) {
    DYNB_TRY(dynb__tensor_write_f64(net->ctx, &net->tensors[i].value, v + at));
    at += dynb__tensor_numel(&net->tensors[i].value);
  }
  return DYNB_OK;
}

/* One training and one evaluation pass alone on this replica (no link yet:
 * no merge), so that its kernels and CLBlast's are built before replicas
 * run side by side. */
static dynb_status warm(replica *rep) {
  DYNB_TRY(dynb__tensor_zero(rep->net->ctx, dynb__plan_input(rep->plan)));
  DYNB_TRY(dynb__tensor_zero(rep->net->ctx, dynb__plan_labels(rep->plan)));
  DYNB_TRY(dynb__net_zero_grads(rep->net));
  DYNB_TRY(dynb__plan_forward(rep->plan, true));
  DYNB_TRY(dynb__plan_backward(rep->plan, false));
  DYNB_TRY(dynb__plan_forward(rep->plan, false));
  DYNB_TRY(dynb__net_zero_grads(rep->net));
  return dynb__finish(rep->net->ctx);
}

dynb_status dynb__group_create(dynb__net *const *nets, int replicas, const int64_t *shard,
                               dynb_memory_mode mode, const dynb__optim_desc *optim,
                               dynb__group **out) {
  *out = NULL;
  dynb_ctx *c0 = nets[0]->ctx;
  dynb__transport *world = c0->world;
  const int local = world ? 1 : replicas;
  DYNB_CHECK(c0, replicas >= 2 && replicas <= DYNB_MAX_REPLICAS, DYNB_STATUS_INVALID_ARGUMENT,
             "a replica group needs 2 to %d replicas, not %d", DYNB_MAX_REPLICAS, replicas);
  DYNB_CHECK(c0, !world || world->replicas == replicas, DYNB_STATUS_INVALID_ARGUMENT,
             "%d replicas, but the context's MPI communicator has %d ranks", replicas,
             world ? world->replicas : 0);
  for (int r = 1; r < local; r++) {
    DYNB_CHECK(c0, nets[r]->ctx != c0 && nets[r]->ntensors == nets[0]->ntensors &&
                       nets[r]->real == nets[0]->real,
               DYNB_STATUS_INVALID_ARGUMENT,
               "replica %d: its network must be the same spec and real type on its own context",
               r);
    DYNB_CHECK(c0, nets[r]->ctx->link == NULL, DYNB_STATUS_MISUSE,
               "replica %d: its context is already in a group", r);
    for (int k = 1; k < r; k++)
      DYNB_CHECK(c0, nets[k]->ctx != nets[r]->ctx, DYNB_STATUS_INVALID_ARGUMENT,
                 "replicas %d and %d share a context; each needs its own", k, r);
  }
  dynb__group *g = calloc(1, sizeof *g);
  DYNB_CHECK(c0, g, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for a replica group");
  g->n = local;
  g->first = world ? c0->world_rank : 0;
  g->total = replicas;
  g->fail_replica = g->fail_step = -1;
  /* Test hook: DYNBLOCKS_TEST_FAIL_STEP=replica:step[:kill] fails (or
   * SIGKILLs) that replica at that step of the group (counted from 0). */
  const char *hook = getenv("DYNBLOCKS_TEST_FAIL_STEP");
  if (hook && sscanf(hook, "%ld:%ld", &g->fail_replica, &g->fail_step) == 2)
    g->fail_kill = strstr(hook, ":kill") != NULL;
  for (size_t i = 0; i < nets[0]->ntensors; i++)
    if (nets[0]->tensors[i].trainable) g->ngrad += dynb__tensor_numel(&nets[0]->tensors[i].value);
  dynb_status st = DYNB_OK;
  if (world) {
    g->transport = world;
  } else {
    g->own_transport = true;
    st = dynb__transport_local_create(replicas, &g->transport);
    if (st != DYNB_OK) st = dynb__fail(c0, st, "no host memory for the transport");
  }
  for (int k = 0; k < replicas; k++) g->lo[k + 1] = g->lo[k] + shard[k];
  g->batch = g->lo[replicas];
  /* Replica 0's tensors, everywhere (across ranks: broadcast from rank 0). */
  size_t total = all_numel(nets[0]);
  double *v = malloc(total * sizeof *v);
  if (st == DYNB_OK && !v) st = dynb__fail(c0, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  if (st == DYNB_OK && g->first == 0) st = read_all(nets[0], v);
  if (st == DYNB_OK && world) st = world->broadcast(world, g->first, 0, c0, v, total);
  for (int r = 0; st == DYNB_OK && r < local; r++) {
    replica *rep = &g->r[r];
    dynb_ctx *ctx = nets[r]->ctx;
    rep->g = g, rep->index = g->first + r, rep->net = nets[r];
    rep->offset = g->lo[rep->index], rep->shard = shard[rep->index];
    if (world || r > 0) st = write_all(nets[r], v);
    double t0 = now_seconds();
    if (st == DYNB_OK) st = dynb__plan_build(nets[r], rep->shard, mode, &rep->plan);
    if (st == DYNB_OK) st = dynb__optimizer_create(nets[r], optim, &rep->opt);
    if (st == DYNB_OK) st = dynb__health_create(nets[r], dynb__plan_loss(rep->plan), &rep->health);
    if (st == DYNB_OK) {
      rep->grads = malloc(2 * (g->ngrad + 2) * sizeof *rep->grads);
      if (!rep->grads) st = dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
    }
    /* Warm alone, then put back what the warm-up moved (running statistics). */
    if (st == DYNB_OK) st = warm(rep);
    rep->rebuild_s = now_seconds() - t0;
    if (st == DYNB_OK) st = write_all(nets[r], v);
    if (st != DYNB_OK && r > 0)
      st = dynb__fail(c0, st, "replica %d (%s): %s", r, ctx->info.device_name,
                      dynb_ctx_last_error(ctx));
  }
  free(v);
  g->mode = mode;
  g->skip = true;
  for (int r = 1; r < local; r++) {
    const dynb_device_info *a = &nets[0]->ctx->info, *b = &nets[r]->ctx->info;
    if (strcmp(a->platform_name, b->platform_name) || strcmp(a->device_name, b->device_name) ||
        strcmp(a->driver_version, b->driver_version))
      g->resync = true;
  }
  if (st == DYNB_OK && world) {
    /* The ranks' devices, compared by a hash of the same three names. */
    const dynb_device_info *a = &c0->info;
    uint64_t h = fnv(FNV_START, a->platform_name, strlen(a->platform_name) + 1);
    h = fnv(h, a->device_name, strlen(a->device_name) + 1);
    h = fnv(h, a->driver_version, strlen(a->driver_version) + 1);
    bool same;
    int who;
    st = gather_hash(g, c0, h, &same, &who);
    if (!same) g->resync = true;
  }
  /* The widest batch norm: the opening layer, the blocks, the connectors
   * (their outputs are the next block's width or the head width). */
  const dynb__net_spec *sp = &nets[0]->spec;
  int64_t widest = sp->open_width > sp->head_width ? sp->open_width : sp->head_width;
  for (int b = 0; b < sp->nblocks; b++)
    if (sp->blocks[b].width > widest) widest = sp->blocks[b].width;
  const int64_t staging = 2 * widest;
  if (st == DYNB_OK) {
    for (int r = 0; r < local; r++) {
      replica *rep = &g->r[r];
      rep->link = (dynb__replica_link){replicas, rep->index, link_allgather, rep, {0}};
      st = dynb__tensor_alloc(rep->net->ctx, nets[0]->real, 1, &staging, &rep->link.staging);
      if (st != DYNB_OK) break;
      dynb__plan_set_loss_scale(rep->plan, (double)rep->shard / (double)g->batch);
      rep->net->ctx->link = &rep->link;
    }
  }
  if (st != DYNB_OK) {
    dynb__group_free(g);
    return st;
  }
  *out = g;
  return DYNB_OK;
}

void dynb__group_place(const dynb__group *g, int *first, int *local, int *total) {
  *first = g->first, *local = g->n, *total = g->total;
}

void dynb__group_free(dynb__group *g) {
  if (!g) return;
  for (int r = 0; r < g->n; r++) {
    replica *rep = &g->r[r];
    if (rep->net && rep->net->ctx->link == &rep->link) rep->net->ctx->link = NULL;
    dynb__tensor_release(&rep->link.staging);
    dynb__health_free(rep->health);
    dynb__optimizer_free(rep->opt);
    dynb__plan_free(rep->plan);
    free(rep->grads);
  }
  if (g->transport && g->own_transport) g->transport->destroy(g->transport);
  free(g);
}

dynb__optimizer *dynb__group_optimizer(dynb__group *g, int r) { return g->r[r].opt; }

dynb_status dynb__group_load_optimizer(dynb__group *g, const char *path) {
  for (int r = 0; r < g->n; r++)
    DYNB_TRY(dynb__model_load_optimizer(g->r[r].net, path, g->r[r].opt));
  return DYNB_OK;
}

/* ---- the step ---------------------------------------------------------------- */

typedef struct step_args {
  const void *x;
  const int32_t *y;
  double lr;
  dynb__timereg *reg;
  const dynb__tensor *reg_value;
  int epoch;
  int64_t step;
  double out[2];
} step_args;

/* This replica's gradients of every trainable tensor, then {loss · b/B,
 * correct count}, gathered from every replica and summed in replica order;
 * the sums are written back as the gradients, and the loss and count of the
 * global batch returned in loss_out. */
static dynb_status sum_grads(replica *rep, double *loss_out) {
  dynb__group *g = rep->g;
  dynb__net *net = rep->net;
  dynb_ctx *ctx = net->ctx;
  const size_t per = g->ngrad + 2;
  double *mine = rep->grads, *sum = rep->grads + per;
  size_t at = 0;
  for (size_t i = 0; i < net->ntensors; i++) {
    if (!net->tensors[i].trainable) continue;
    DYNB_TRY(dynb__tensor_read_f64(ctx, &net->tensors[i].grad, mine + at));
    at += dynb__tensor_numel(&net->tensors[i].grad);
  }
  double loss[2];
  DYNB_TRY(dynb__tensor_read_f64(ctx, dynb__plan_loss(rep->plan), loss));
  mine[at] = loss[0] * ((double)rep->shard / (double)g->batch);
  mine[at + 1] = loss[1];
  double *all = malloc((size_t)g->total * per * sizeof *all);
  DYNB_CHECK(ctx, all, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for the gradient sum");
  dynb_status st = g->transport->allgather(g->transport, rep->index, ctx, mine, per, all);
  if (st == DYNB_OK) {
    for (size_t j = 0; j < per; j++) {
      double t = 0;
      for (int k = 0; k < g->total; k++) t += all[(size_t)k * per + j];
      sum[j] = t;
    }
  }
  free(all);
  DYNB_TRY(st);
  at = 0;
  for (size_t i = 0; i < net->ntensors; i++) {
    if (!net->tensors[i].trainable) continue;
    DYNB_TRY(dynb__tensor_write_f64(ctx, &net->tensors[i].grad, sum + at));
    at += dynb__tensor_numel(&net->tensors[i].grad);
  }
  loss_out[0] = sum[at], loss_out[1] = sum[at + 1];
  return DYNB_OK;
}

/* Replica 0's trainable tensors and optimiser state, on every replica. */
static dynb_status take_replica0(replica *rep) {
  dynb__net *net = rep->net;
  dynb_ctx *ctx = net->ctx;
  size_t nstate = dynb__optimizer_state_count(rep->opt), total = 0;
  for (size_t i = 0; i < net->ntensors; i++)
    if (net->tensors[i].trainable) total += dynb__tensor_numel(&net->tensors[i].value);
  for (size_t i = 0; i < nstate; i++)
    total += dynb__tensor_numel(&dynb__optimizer_state_at(rep->opt, i)->value);
  double *v = malloc((total ? total : 1) * sizeof *v);
  DYNB_CHECK(ctx, v, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for the parameters");
  dynb_status st = DYNB_OK;
  for (int pass = 0; pass < 2 && st == DYNB_OK; pass++) {
    /* pass 0: replica 0 reads; then the broadcast; pass 1: the others write. */
    if (pass == 1) st = rep->g->transport->broadcast(rep->g->transport, rep->index, 0, ctx, v, total);
    if (st != DYNB_OK || (pass == 0) != (rep->index == 0)) continue;
    size_t at = 0;
    for (size_t i = 0; st == DYNB_OK && i < net->ntensors + nstate; i++) {
      const dynb__tensor *t = i < net->ntensors ? &net->tensors[i].value
                                                : &dynb__optimizer_state_at(rep->opt, i - net->ntensors)->value;
      if (i < net->ntensors && !net->tensors[i].trainable) continue;
      st = pass == 0 ? dynb__tensor_read_f64(ctx, t, v + at) : dynb__tensor_write_f64(ctx, t, v + at);
      at += dynb__tensor_numel(t);
    }
  }
  free(v);
  return st;
}

static dynb_status replica_step(replica *rep, void *arg) {
  step_args *a = arg;
  dynb_ctx *ctx = rep->net->ctx;
  dynb__group *g = rep->g;
  if (rep->index == g->fail_replica && g->steps == g->fail_step) {
    if (g->fail_kill) raise(SIGKILL);
    return dynb__fail(ctx, DYNB_STATUS_OPENCL_ERROR,
                      "injected failure at step %lld (DYNBLOCKS_TEST_FAIL_STEP)",
                      (long long)g->steps);
  }
  double t0 = now_seconds(), wait0 = rep->wait_s;
  size_t row = dynb__tensor_numel(dynb__plan_input(rep->plan)) / (size_t)rep->shard;
  size_t esize = dynb__dtype_size(rep->net->real);
  DYNB_TRY(dynb__tensor_write(ctx, dynb__plan_input(rep->plan),
                              (const char *)a->x + (size_t)rep->offset * row * esize));
  DYNB_TRY(dynb__tensor_write(ctx, dynb__plan_labels(rep->plan), a->y + rep->offset));
  DYNB_TRY(dynb__net_zero_grads(rep->net));
  DYNB_TRY(dynb__plan_forward(rep->plan, true));
  /* The regularisation is of the parameters, not of a shard: added once. */
  if (rep->index == 0 && a->reg) DYNB_TRY(dynb__timereg_apply(a->reg, a->reg_value));
  DYNB_TRY(dynb__plan_backward(rep->plan, false));
  DYNB_TRY(dynb__finish(ctx));
  double t1 = now_seconds();
  double loss[2] = {0, 0};
  DYNB_TRY(sum_grads(rep, loss));
  double local[2];
  DYNB_TRY(dynb__health_check(rep->health, a->epoch, a->step, local));
  DYNB_TRY(dynb__optimizer_step(rep->opt, a->lr));
  if (rep->g->resync) DYNB_TRY(take_replica0(rep));
  DYNB_TRY(dynb__finish(ctx));
  double busy = (t1 - t0) - (rep->wait_s - wait0);
  rep->compute_s += t1 - t0;
  rep->busy_s += busy;
  rep->step_s += now_seconds() - t0;
  if (!g->skip)
    rep->window_busy += g->busy_fn ? g->busy_fn(g->busy_user, rep->index, rep->shard, busy) : busy;
  if (rep == &g->r[0]) a->out[0] = loss[0], a->out[1] = loss[1];
  return DYNB_OK;
}

dynb_status dynb__group_step(dynb__group *g, const void *x, const int32_t *y, double lr,
                             dynb__timereg *reg, const dynb__tensor *reg_value, int epoch,
                             int64_t step, double out[2]) {
  step_args a = {x, y, lr, reg, reg_value, epoch, step, {0, 0}};
  char what[96];
  snprintf(what, sizeof what, "epoch %d, step %lld", epoch, (long long)step);
  dynb_status st = run_all(g, replica_step, &a, what);
  g->steps++;
  DYNB_TRY(st);
  if (g->skip)
    g->skip = false;
  else
    g->window++;
  out[0] = a.out[0], out[1] = a.out[1];
  return DYNB_OK;
}

/* ---- evaluation ---------------------------------------------------------------- */

typedef struct eval_args {
  const dynb__dataset *d;
  double loss[DYNB_MAX_REPLICAS], acc[DYNB_MAX_REPLICAS];
  int64_t lo[DYNB_MAX_REPLICAS + 1];
} eval_args;

static dynb_status replica_eval(replica *rep, void *arg) {
  eval_args *a = arg;
  dynb__dataset part = *a->d;
  int64_t lo = a->lo[rep->index], hi = a->lo[rep->index + 1];
  size_t per = (size_t)part.c * (size_t)part.h * (size_t)part.w;
  part.n = hi - lo;
  part.images = a->d->images + (size_t)lo * per;
  part.labels = a->d->labels + lo;
  double mine[2], all[2 * DYNB_MAX_REPLICAS];
  DYNB_TRY(dynb__evaluate(rep->plan, &part, &mine[0], &mine[1]));
  /* Every replica's result, in replica order, kept by this process's first. */
  dynb__transport *t = rep->g->transport;
  DYNB_TRY(t->allgather(t, rep->index, rep->net->ctx, mine, 2, all));
  if (rep == &rep->g->r[0])
    for (int k = 0; k < rep->g->total; k++) a->loss[k] = all[2 * k], a->acc[k] = all[2 * k + 1];
  return DYNB_OK;
}

dynb_status dynb__group_evaluate(dynb__group *g, const dynb__dataset *d, double *loss,
                                 double *acc) {
  *loss = *acc = 0;
  if (d->n == 0) return DYNB_OK;
  eval_args a;
  memset(&a, 0, sizeof a);
  a.d = d;
  for (int r = 0; r <= g->total; r++)
    a.lo[r] = r == g->total ? d->n : (int64_t)((double)d->n * (double)g->lo[r] / (double)g->batch);
  DYNB_TRY(run_all(g, replica_eval, &a, "evaluation"));
  double sl = 0, sa = 0;
  for (int r = 0; r < g->total; r++) {
    double n = (double)(a.lo[r + 1] - a.lo[r]);
    sl += a.loss[r] * n, sa += a.acc[r] * n;
  }
  *loss = sl / (double)d->n;
  *acc = sa / (double)d->n;
  return DYNB_OK;
}

dynb_status dynb__evaluate_split(dynb__net *const *nets, int replicas, const int64_t *shard,
                                 const dynb__dataset *d, double *loss, double *acc) {
  dynb_ctx *c0 = nets[0]->ctx;
  DYNB_CHECK(c0, replicas >= 2 && replicas <= DYNB_MAX_REPLICAS, DYNB_STATUS_INVALID_ARGUMENT,
             "a split evaluation needs 2 to %d replicas, not %d", DYNB_MAX_REPLICAS, replicas);
  dynb__group *g = calloc(1, sizeof *g);
  DYNB_CHECK(c0, g, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  g->n = g->total = replicas;
  g->own_transport = true;
  dynb_status st = dynb__transport_local_create(replicas, &g->transport);
  if (st != DYNB_OK) st = dynb__fail(c0, st, "no host memory for the transport");
  size_t total = all_numel(nets[0]);
  double *v = malloc(total * sizeof *v);
  if (st == DYNB_OK && !v) st = dynb__fail(c0, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  if (st == DYNB_OK) st = read_all(nets[0], v);
  for (int r = 0; st == DYNB_OK && r < replicas; r++) {
    replica *rep = &g->r[r];
    rep->g = g, rep->index = r, rep->net = nets[r];
    rep->offset = g->batch, rep->shard = shard[r];
    g->batch += shard[r];
    g->lo[r + 1] = g->batch;
    if (r > 0) st = write_all(nets[r], v);
    if (st == DYNB_OK) st = dynb__plan_build(nets[r], shard[r], DYNB_MEMORY_STORE, &rep->plan);
    if (st != DYNB_OK && r > 0)
      st = dynb__fail(c0, st, "replica %d (%s): %s", r, nets[r]->ctx->info.device_name,
                      dynb_ctx_last_error(nets[r]->ctx));
  }
  free(v);
  if (st == DYNB_OK) st = dynb__group_evaluate(g, d, loss, acc);
  /* Not dynb__group_free: these replicas own plans only, and the nets
   * keep whatever link they had. */
  for (int r = 0; r < replicas; r++) dynb__plan_free(g->r[r].plan);
  if (g->transport) g->transport->destroy(g->transport);
  free(g);
  return st;
}

/* ---- equality ---------------------------------------------------------------- */

dynb_status dynb__group_check_equal(dynb__group *g, int epoch) {
  dynb__net *n0 = g->r[0].net;
  dynb_ctx *c0 = n0->ctx;
  size_t most = 0;
  for (size_t i = 0; i < n0->ntensors; i++) {
    size_t k = dynb__tensor_numel(&n0->tensors[i].value);
    most = k > most ? k : most;
  }
  double *a = malloc(2 * most * sizeof *a);
  DYNB_CHECK(c0, a, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for the replica check");
  double *b = a + most;
  dynb_status st = DYNB_OK;
  uint64_t h = FNV_START;
  for (size_t i = 0; st == DYNB_OK && i < n0->ntensors; i++) {
    size_t k = dynb__tensor_numel(&n0->tensors[i].value);
    st = dynb__tensor_read_f64(c0, &n0->tensors[i].value, a);
    if (st == DYNB_OK) h = fnv(h, a, k * sizeof *a);
    for (int r = 1; st == DYNB_OK && r < g->n; r++) {
      dynb__net *nr = g->r[r].net;
      st = dynb__tensor_read_f64(nr->ctx, &nr->tensors[i].value, b);
      if (st != DYNB_OK) {
        st = dynb__fail(c0, st, "replica %d (%s): %s", r, nr->ctx->info.device_name,
                        dynb_ctx_last_error(nr->ctx));
      } else if (memcmp(a, b, k * sizeof *a) != 0) {
        size_t j = 0;
        while (j < k && memcmp(a + j, b + j, sizeof *a) == 0) j++;
        st = dynb__fail(c0, DYNB_STATUS_UNSUPPORTED,
                        "after epoch %d the replicas differ: %s[%zu] is %.17g on replica 0 (%s) "
                        "but %.17g on replica %d (%s)",
                        epoch, n0->tensors[i].name, j, a[j], c0->info.device_name, b[j], r,
                        nr->ctx->info.device_name);
      }
    }
  }
  free(a);
  /* Across ranks: a checksum of every tensor, gathered and compared. */
  if (st == DYNB_OK && !g->own_transport) {
    bool same;
    int who;
    DYNB_TRY(gather_hash(g, c0, h, &same, &who));
    DYNB_CHECK(c0, same, DYNB_STATUS_UNSUPPORTED,
               "after epoch %d the replicas differ: the parameter checksum of rank %d is not "
               "rank 0's",
               epoch, who);
  }
  return st;
}

void dynb__group_stats(dynb__group *g, int r, dynb__replica_stats *out, bool reset) {
  out->shard = g->r[r].shard;
  out->compute_seconds = g->r[r].compute_s;
  out->step_seconds = g->r[r].step_s;
  out->busy_seconds = g->r[r].busy_s;
  if (reset) g->r[r].compute_s = g->r[r].step_s = g->r[r].busy_s = 0;
}

/* ---- balancing ---------------------------------------------------------------- */

int64_t dynb__group_window(const dynb__group *g) { return g->window; }

void dynb__group_set_busy(dynb__group *g, dynb__busy_fn fn, void *user) {
  g->busy_fn = fn, g->busy_user = user;
}

typedef struct balance_args {
  const dynb__balance_opts *opts;
  int64_t steps_left, window;
} balance_args;

/* Gathers every replica's {shard, busy per step, re-split seconds} in
 * global replica order and computes the new split from them alone, so
 * that every replica (in this process or another) computes the same. */
static dynb_status replica_balance(replica *rep, void *arg) {
  balance_args *a = arg;
  dynb__group *g = rep->g;
  const int n = g->total; /* every replica, in this process or another */
  double mine[3] = {(double)rep->shard, rep->window_busy / (double)a->window, rep->rebuild_s};
  double all[3 * DYNB_MAX_REPLICAS];
  DYNB_TRY(g->transport->allgather(g->transport, rep->index, rep->net->ctx, mine, 3, all));
  int64_t shard[DYNB_MAX_REPLICAS];
  double busy[DYNB_MAX_REPLICAS];
  dynb__balance_opts o = *a->opts;
  o.steps_left = a->steps_left;
  o.resplit_seconds = 0;
  for (int k = 0; k < n; k++) {
    shard[k] = (int64_t)all[3 * k];
    busy[k] = all[3 * k + 1];
    if (all[3 * k + 2] > o.resplit_seconds) o.resplit_seconds = all[3 * k + 2];
  }
  dynb__balance_propose(n, g->batch, shard, busy, &o, rep->split);
  return DYNB_OK;
}

/* Replica rep's plan rebuilt for `shard` samples at `offset`, alone (its
 * link detached, so the warm-up merges nothing), with every tensor as it
 * was before (the warm-up moves running statistics). */
static dynb_status resplit(replica *rep, int64_t shard, int64_t offset) {
  dynb__net *net = rep->net;
  dynb_ctx *ctx = net->ctx;
  double t0 = now_seconds();
  double *v = malloc(all_numel(net) * sizeof *v);
  DYNB_CHECK(ctx, v, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for a re-split");
  dynb_status st = read_all(net, v);
  dynb__health_free(rep->health), rep->health = NULL;
  dynb__plan_free(rep->plan), rep->plan = NULL;
  ctx->link = NULL;
  if (st == DYNB_OK) st = dynb__plan_build(net, shard, rep->g->mode, &rep->plan);
  if (st == DYNB_OK) st = dynb__health_create(net, dynb__plan_loss(rep->plan), &rep->health);
  if (st == DYNB_OK) st = warm(rep);
  if (st == DYNB_OK) st = write_all(net, v);
  ctx->link = &rep->link;
  free(v);
  DYNB_TRY(st);
  rep->shard = shard, rep->offset = offset;
  dynb__plan_set_loss_scale(rep->plan, (double)shard / (double)rep->g->batch);
  rep->rebuild_s = now_seconds() - t0;
  return DYNB_OK;
}

dynb_status dynb__group_rebalance(dynb__group *g, const dynb__balance_opts *opts, int64_t steps_left,
                                  bool *changed) {
  *changed = false;
  if (g->window < 1) return DYNB_OK;
  balance_args a = {opts, steps_left, g->window};
  DYNB_TRY(run_all(g, replica_balance, &a, "balancing"));
  g->window = 0;
  for (int r = 0; r < g->n; r++) g->r[r].window_busy = 0;
  for (int r = 0; r < g->n; r++) {
    replica *rep = &g->r[r];
    /* Each replica takes its part of the split it computed (the same on
     * every replica). */
    int64_t mine = rep->split[rep->index], offset = 0;
    for (int k = 0; k < rep->index; k++) offset += rep->split[k];
    if (mine != rep->shard || offset != rep->offset) {
      dynb_status st = resplit(rep, mine, offset);
      if (st != DYNB_OK)
        return r == 0 ? st
                      : dynb__fail(g->r[0].net->ctx, st, "re-split: replica %d (%s): %s", r,
                                   rep->net->ctx->info.device_name,
                                   dynb_ctx_last_error(rep->net->ctx));
      *changed = true;
    }
  }
  /* Every replica's rows, for the evaluation split (SPEC §2.1). */
  for (int k = 0; k < g->total; k++) g->lo[k + 1] = g->lo[k] + g->r[0].split[k];
  if (*changed) g->skip = true;
  return DYNB_OK;
}

/* ---- across ranks ---------------------------------------------------------------- */

dynb_status dynb__world_settle(dynb_ctx *ctx, dynb_status st) {
  dynb__transport *w = ctx->world;
  if (!w) return st;
  if (st != DYNB_OK) {
    w->abort(w, ctx->world_rank, st, dynb_ctx_last_error(ctx));
    return st;
  }
  double done = 1, all[DYNB_MAX_REPLICAS];
  return w->allgather(w, ctx->world_rank, ctx, &done, 1, all);
}
