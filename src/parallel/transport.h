/* Private header of src/parallel: data-parallel training over a replica
 * group (SPEC §2.1, docs/ARCHITECTURE.md). A transport moves host values
 * between the replicas; a group cuts the global batch into shards, runs
 * one plan per replica concurrently and keeps the replicas equal. */
#ifndef DYNB_PARALLEL_TRANSPORT_H
#define DYNB_PARALLEL_TRANSPORT_H

#include "runtime/runtime.h"

/* How replicas exchange values: one collective, an all-gather of host
 * doubles in replica order, from which every replica computes every merge
 * itself in the same fixed order (so all get the same bits, whatever the
 * transport). The in-process transport (transport_local.c) serves replicas
 * on threads of one process; the MPI transport (transport_mpi.c, in the
 * separate library dynblocks_mpi) implements the same functions over a
 * communicator, one replica per rank, replica index = rank. */
typedef struct dynb__transport dynb__transport;
struct dynb__transport {
  int replicas;
  /* Replica `replica` contributes mine[n]; on return all[replicas · n]
   * holds every replica's values in replica order. Blocks until every
   * replica has called it; fails (recorded on ctx) when another replica
   * aborted or contributed another n. */
  dynb_status (*allgather)(dynb__transport *t, int replica, dynb_ctx *ctx, const double *mine,
                           size_t n, double *all);
  /* Replica `root`'s buf[n] into every replica's buf[n]; blocks and fails
   * as allgather (every replica passes the same root and n). */
  dynb_status (*broadcast)(dynb__transport *t, int replica, int root, dynb_ctx *ctx,
                           double *buf, size_t n);
  /* Replica `replica` gives up (its status and message): every replica
   * blocked in or later entering allgather fails with that status and a
   * message naming the replica, so that one failure ends the step
   * everywhere instead of hanging it. */
  void (*abort)(dynb__transport *t, int replica, dynb_status status, const char *why);
  void (*destroy)(dynb__transport *t);
};

/* Replicas on threads of this process; staging through host memory. */
dynb_status dynb__transport_local_create(int replicas, dynb__transport **out);

#endif
