/* Private header of src/parallel: the load balancer of `--split auto`
 * (SPEC §2.1, docs/distributed.md "Balancer"). A pure function, no device
 * and no group: the caller gathers every replica's measurement (global
 * replica indices, identical on all replicas) and every replica calls it
 * with the same numbers, so every replica computes the same split. */
#ifndef DYNB_PARALLEL_BALANCE_H
#define DYNB_PARALLEL_BALANCE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct dynb__balance_opts {
  /* Fraction of the way from the current shard to the proposed one (0, 1]:
   * below 1 so that one noisy measurement cannot swing the split. */
  double damping;
  /* A re-split is made only when it predicts a step at least this fraction
   * faster than the current one (hysteresis: noise below it changes
   * nothing, so the split does not oscillate). */
  double hysteresis;
  /* What one re-split costs in seconds (new plans), and how many steps it
   * has to pay for itself: predicted gain per step x steps_left must
   * exceed the cost. */
  double resplit_seconds;
  int64_t steps_left;
} dynb__balance_opts;

/* Defaults: damping 0.75, hysteresis 0.05, no cost, one step. */
dynb__balance_opts dynb__balance_defaults(void);

/* From shard[r] (samples of replica r, Σ = batch) and busy[r] (its busy
 * seconds at that shard: compute minus the time waiting for the others)
 * for r in [0, replicas), writes a new split to out (Σ = batch, each ≥ 1)
 * and returns true when a re-split pays, else copies shard to out and
 * returns false. Throughput is not linear in the shard size: each call
 * linearises at the measured shards, so calling it again with the
 * measurements at the new shards iterates towards equal busy times.
 * Invalid measurements (≤ 0, not finite) or batch < replicas: no change. */
bool dynb__balance_propose(int replicas, int64_t batch, const int64_t *shard, const double *busy,
                           const dynb__balance_opts *opts, int64_t *out);

#endif
