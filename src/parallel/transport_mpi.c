/* The MPI transport (library dynblocks_mpi; the core library calls no MPI):
 * the collectives of transport.h over a communicator, one replica per rank,
 * replica index = rank. Every collective is two steps on a duplicate of the
 * host's communicator (so that it never matches the host's own messages):
 * first an all-gather of a fixed-size header from every rank (its status,
 * its value count and, on failure, its message), then, only when every
 * header says OK and the counts agree, the values themselves: MPI_Allgather
 * into rank order (every rank then sums in that order itself, never
 * MPI_Allreduce, whose order is the library's) or MPI_Bcast.
 *
 * A rank that fails outside a collective calls abort, which takes part in
 * exactly one header step, with its failure: the other ranks are blocked in
 * (or will reach) that step, since training keeps every rank in lockstep,
 * and all of them then fail with a message naming the rank. After a failure
 * the transport is spent: later collectives fail at once, without MPI. A
 * rank that dies (SIGKILL) cannot say so: mpirun notices the lost process
 * and ends the job. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynblocks/mpi.h"
#include "parallel/transport.h"
#include "train/train.h"

enum { WHY = 480 };

typedef struct header {
  int32_t status; /* dynb_status of the sender, DYNB_OK to go on */
  int32_t root;   /* broadcast root, -1 for an all-gather */
  uint64_t n;     /* values it sends */
  char why[WHY];  /* its failure */
} header;

typedef struct mpi_transport {
  dynb__transport base;
  MPI_Comm comm;
  int rank;
  header *headers; /* [replicas] */
  int failed;      /* the rank that failed (learned or own), else -1 */
  dynb_status status;
  char why[WHY + 64];
} mpi_transport;

static dynb_status spent(mpi_transport *t, dynb_ctx *ctx) {
  return dynb__fail(ctx, t->status, "%s", t->why);
}

/* The header step; false (t->failed set) when a rank failed or the ranks
 * disagree on the collective. */
static bool headers_ok(mpi_transport *t, dynb_status mine, int root, size_t n, const char *why) {
  header h;
  memset(&h, 0, sizeof h);
  h.status = (int32_t)mine, h.root = root, h.n = n;
  if (why) snprintf(h.why, sizeof h.why, "%s", why);
  MPI_Allgather(&h, (int)sizeof h, MPI_BYTE, t->headers, (int)sizeof h, MPI_BYTE, t->comm);
  for (int k = 0; k < t->base.replicas; k++) {
    const header *o = &t->headers[k];
    if (o->status != DYNB_OK) {
      t->failed = k, t->status = (dynb_status)o->status;
      snprintf(t->why, sizeof t->why, "rank %d failed: %.*s", k, WHY - 1, o->why);
      return false;
    }
  }
  for (int k = 0; k < t->base.replicas; k++) {
    const header *o = &t->headers[k];
    if (o->n != t->headers[0].n || o->root != t->headers[0].root) {
      t->failed = k, t->status = DYNB_STATUS_INVALID_ARGUMENT;
      snprintf(t->why, sizeof t->why,
               "ranks disagree on a collective: rank 0 sends %llu values (root %d), rank %d "
               "%llu (root %d)",
               (unsigned long long)t->headers[0].n, (int)t->headers[0].root, k,
               (unsigned long long)o->n, (int)o->root);
      return false;
    }
  }
  return true;
}

static dynb_status mpi_allgather(dynb__transport *base, int replica, dynb_ctx *ctx,
                                 const double *mine, size_t n, double *all) {
  mpi_transport *t = (mpi_transport *)base;
  (void)replica;
  if (t->failed >= 0) return spent(t, ctx);
  DYNB_CHECK(ctx, n <= (size_t)INT32_MAX, DYNB_STATUS_SIZE_OVERFLOW,
             "an MPI collective of %zu values is too large", n);
  if (!headers_ok(t, DYNB_OK, -1, n, NULL)) return spent(t, ctx);
  MPI_Allgather(mine, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, t->comm);
  return DYNB_OK;
}

static dynb_status mpi_broadcast(dynb__transport *base, int replica, int root, dynb_ctx *ctx,
                                 double *buf, size_t n) {
  mpi_transport *t = (mpi_transport *)base;
  (void)replica;
  if (t->failed >= 0) return spent(t, ctx);
  DYNB_CHECK(ctx, n <= (size_t)INT32_MAX, DYNB_STATUS_SIZE_OVERFLOW,
             "an MPI collective of %zu values is too large", n);
  if (!headers_ok(t, DYNB_OK, root, n, NULL)) return spent(t, ctx);
  if (n) MPI_Bcast(buf, (int)n, MPI_DOUBLE, root, t->comm);
  return DYNB_OK;
}

static void mpi_abort(dynb__transport *base, int replica, dynb_status status, const char *why) {
  mpi_transport *t = (mpi_transport *)base;
  (void)replica;
  if (t->failed >= 0) return; /* learned from a collective: the others know */
  headers_ok(t, status == DYNB_OK ? DYNB_STATUS_MISUSE : status, -1, 0, why ? why : "unknown error");
}

static void mpi_destroy(dynb__transport *base) {
  mpi_transport *t = (mpi_transport *)base;
  if (!t) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&t->comm);
  free(t->headers);
  free(t);
}

dynb_status dynb_mpi_join(dynb_ctx *ctx, MPI_Comm comm) {
  if (!ctx) return DYNB_STATUS_INVALID_ARGUMENT;
  int init = 0, size = 0, rank = 0;
  MPI_Initialized(&init);
  DYNB_CHECK(ctx, init, DYNB_STATUS_MISUSE, "dynb_mpi_join: MPI is not initialised (MPI_Init)");
  DYNB_CHECK(ctx, ctx->world == NULL, DYNB_STATUS_MISUSE,
             "dynb_mpi_join: the context has already joined a communicator");
  DYNB_CHECK(ctx, comm != MPI_COMM_NULL, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_mpi_join: the communicator is MPI_COMM_NULL");
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  DYNB_CHECK(ctx, size >= 1 && size <= DYNB_MAX_REPLICAS, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_mpi_join: %d ranks; at most %d replicas train one model", size,
             DYNB_MAX_REPLICAS);
  mpi_transport *t = calloc(1, sizeof *t);
  header *h = calloc((size_t)size, sizeof *h);
  if (!t || !h) {
    free(t), free(h);
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_mpi_join: no host memory");
  }
  /* Collective over comm: every rank joins at the same point. */
  MPI_Comm_dup(comm, &t->comm);
  t->rank = rank;
  t->headers = h;
  t->failed = -1;
  t->base.replicas = size;
  t->base.allgather = mpi_allgather;
  t->base.broadcast = mpi_broadcast;
  t->base.abort = mpi_abort;
  t->base.destroy = mpi_destroy;
  ctx->world = &t->base;
  ctx->world_rank = rank;
  return DYNB_OK;
}
