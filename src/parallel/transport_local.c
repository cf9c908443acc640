/* The in-process transport: replicas are threads of one process, and an
 * all-gather is two barriers around a copy. Every replica posts a pointer to
 * its values and waits until all have posted (first barrier); each then
 * copies everyone's values in replica order into its own result, and waits
 * until all have copied (second barrier), so that no replica returns and
 * reuses its buffer while another still reads it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parallel/transport.h"

typedef struct local {
  dynb__transport base;
  pthread_mutex_t lock;
  pthread_cond_t turn;
  int arrived;
  unsigned long generation; /* barriers passed */
  const double **posted;    /* [replicas] */
  size_t *sizes;            /* [replicas] */
  int failed;               /* the replica that aborted, else -1 */
  dynb_status status;       /* its status */
  char why[512];
} local;

/* Waits until every replica arrives; false when a replica aborted. */
static bool barrier(local *t) {
  pthread_mutex_lock(&t->lock);
  unsigned long gen = t->generation;
  if (t->failed < 0 && ++t->arrived == t->base.replicas) {
    t->arrived = 0;
    t->generation++;
    pthread_cond_broadcast(&t->turn);
  } else {
    while (t->failed < 0 && t->generation == gen) pthread_cond_wait(&t->turn, &t->lock);
  }
  bool ok = t->failed < 0;
  pthread_mutex_unlock(&t->lock);
  return ok;
}

static dynb_status aborted(local *t, dynb_ctx *ctx) {
  pthread_mutex_lock(&t->lock);
  char why[sizeof t->why];
  int who = t->failed;
  dynb_status st = t->status;
  memcpy(why, t->why, sizeof why);
  pthread_mutex_unlock(&t->lock);
  return dynb__fail(ctx, st, "replica %d failed: %s", who, why);
}

static void local_abort(dynb__transport *base, int replica, dynb_status status,
                        const char *why) {
  local *t = (local *)base;
  pthread_mutex_lock(&t->lock);
  if (t->failed < 0) {
    t->failed = replica;
    t->status = status;
    snprintf(t->why, sizeof t->why, "%s", why ? why : "unknown error");
  }
  pthread_cond_broadcast(&t->turn);
  pthread_mutex_unlock(&t->lock);
}

/* The shape of both collectives: post, first barrier, check that every
 * replica posted n values, copy (root < 0: everyone's into out in replica
 * order; else root's into out), second barrier. */
static dynb_status exchange(local *t, int replica, int root, dynb_ctx *ctx, const double *mine,
                            size_t n, double *out) {
  const int r = t->base.replicas;
  pthread_mutex_lock(&t->lock);
  t->posted[replica] = mine;
  t->sizes[replica] = n;
  pthread_mutex_unlock(&t->lock);
  if (!barrier(t)) return aborted(t, ctx);
  /* Posted pointers stay fixed until the second barrier. */
  for (int k = 0; k < r; k++)
    if (t->sizes[k] != n) {
      char why[160];
      snprintf(why, sizeof why,
               "replicas disagree on a collective: replica %d sends %zu values, replica %d %zu",
               replica, n, k, t->sizes[k]);
      local_abort(&t->base, replica, DYNB_STATUS_INVALID_ARGUMENT, why);
      return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT, "%s", why);
    }
  if (root < 0)
    for (int k = 0; k < r; k++) memcpy(out + (size_t)k * n, t->posted[k], n * sizeof *out);
  else if (root != replica)
    memcpy(out, t->posted[root], n * sizeof *out);
  if (!barrier(t)) return aborted(t, ctx);
  return DYNB_OK;
}

static dynb_status local_allgather(dynb__transport *base, int replica, dynb_ctx *ctx,
                                   const double *mine, size_t n, double *all) {
  return exchange((local *)base, replica, -1, ctx, mine, n, all);
}

static dynb_status local_broadcast(dynb__transport *base, int replica, int root, dynb_ctx *ctx,
                                   double *buf, size_t n) {
  return exchange((local *)base, replica, root, ctx, buf, n, buf);
}

static void local_destroy(dynb__transport *base) {
  local *t = (local *)base;
  if (!t) return;
  pthread_mutex_destroy(&t->lock);
  pthread_cond_destroy(&t->turn);
  free(t->posted);
  free(t->sizes);
  free(t);
}

dynb_status dynb__transport_local_create(int replicas, dynb__transport **out) {
  *out = NULL;
  local *t = calloc(1, sizeof *t);
  if (!t) return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  t->posted = calloc((size_t)replicas, sizeof *t->posted);
  t->sizes = calloc((size_t)replicas, sizeof *t->sizes);
  if (!t->posted || !t->sizes) {
    free(t->posted), free(t->sizes), free(t);
    return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  }
  pthread_mutex_init(&t->lock, NULL);
  pthread_cond_init(&t->turn, NULL);
  t->failed = -1;
  t->base.replicas = replicas;
  t->base.allgather = local_allgather;
  t->base.broadcast = local_broadcast;
  t->base.abort = local_abort;
  t->base.destroy = local_destroy;
  *out = &t->base;
  return DYNB_OK;
}
