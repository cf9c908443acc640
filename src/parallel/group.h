/* Private header of src/parallel: a replica group, the layer above the plan
 * that trains one network on several devices (SPEC §2.1). */
#ifndef DYNB_PARALLEL_GROUP_H
#define DYNB_PARALLEL_GROUP_H

#include "parallel/balance.h"
#include "parallel/transport.h"
#include "train/train.h"

/* Shard sizes of a global batch: "equal" (sizes differ by at most one, the
 * larger first) or an explicit "N,N,..." that must sum to the batch; the
 * error names the problem. "auto" and NULL (the default) give the equal
 * split, from which the balancer starts (dynb__split_is_auto). */
dynb_status dynb__split_parse(const char *text, int replicas, int64_t batch, int64_t *shard,
                              char *err, size_t errlen);

/* Whether --split asks for the balancer: "auto", or not given. */
bool dynb__split_is_auto(const char *text);

typedef struct dynb__group dynb__group;

/* What one replica did in the last epoch, for the epoch output. */
typedef struct dynb__replica_stats {
  int64_t shard;
  double compute_seconds; /* forward and backward, summed over the epoch's steps */
  double step_seconds;    /* whole steps (with waits and the gradient sum) */
  double busy_seconds;    /* compute minus the waits for others in synced batch norm */
} dynb__replica_stats;

/* A group over nets[0..replicas) (each on its own context, the same spec
 * and, from nets[0], the same parameters: they are copied over), one plan
 * of shard[r] samples per replica, an optimiser each and a divergence
 * check each. Warms every replica once, one after another, so that no two
 * threads compile the same CLBlast kernel at once (CLBlast#486 in Debian's
 * 1.5.3), leaving every tensor as it was. The nets stay the caller's. */
/* Across MPI ranks (nets[0]'s context joined a communicator,
 * dynb_mpi_join): replicas is the number of ranks, shard[] holds every
 * rank's shard, and nets[0] is this rank's only replica; rank 0's
 * parameters are broadcast. */
dynb_status dynb__group_create(dynb__net *const *nets, int replicas, const int64_t *shard,
                               dynb_memory_mode mode, const dynb__optim_desc *optim,
                               dynb__group **out);
void dynb__group_free(dynb__group *g);
/* Where this process's replicas sit: global replicas [first, first +
 * local) of total (0, n, n in one process; rank, 1, ranks under MPI). The
 * r of the functions below is local, 0 <= r < local. */
void dynb__group_place(const dynb__group *g, int *first, int *local, int *total);
/* Replica r's optimiser (for checkpoints: replica 0's, equal to all). */
dynb__optimizer *dynb__group_optimizer(dynb__group *g, int r);
/* Loads every replica's optimiser state from a checkpoint. */
dynb_status dynb__group_load_optimizer(dynb__group *g, const char *path);

/* One training step on the global batch: x [batch][per] in the nets' real
 * type and labels y [batch], row r of the global sample order. Replica r
 * takes rows [offset_r, offset_r + shard_r), runs forward and backward
 * concurrently with the others (batch norm merged through the transport),
 * with the time regularisation `reg` (may be NULL; its value into
 * reg_value) on replica 0 only; then the gradients are summed over the
 * replicas in replica order, checked finite, and every replica applies the
 * same optimiser step. out = {mean loss over the global batch, correct
 * count}. A failing replica ends the step on every replica; the status and
 * message (naming the replica's device) land on nets[0]'s context. */
dynb_status dynb__group_step(dynb__group *g, const void *x, const int32_t *y, double lr,
                             dynb__timereg *reg, const dynb__tensor *reg_value, int epoch,
                             int64_t step, double out[2]);
/* Evaluation split across replicas in proportion to their shards, each on
 * a contiguous part of d; loss and accuracy summed over all samples. */
dynb_status dynb__group_evaluate(dynb__group *g, const dynb__dataset *d, double *loss,
                                 double *acc);
/* The same split evaluation outside a group (the test set after
 * training): nets[1..] take nets[0]'s tensors, each gets a plan of shard[r]
 * samples for the call. */
dynb_status dynb__evaluate_split(dynb__net *const *nets, int replicas, const int64_t *shard,
                                 const dynb__dataset *d, double *loss, double *acc);
/* Every tensor of every replica compared bit for bit with replica 0's; a
 * difference is an error naming the tensor, the replica and the epoch. */
dynb_status dynb__group_check_equal(dynb__group *g, int epoch);
/* Shard and times of replica r since the last call with reset. */
void dynb__group_stats(dynb__group *g, int r, dynb__replica_stats *out, bool reset);

/* The balancer's measurement window: steps measured since the last
 * re-balance (the first step after the group starts or re-splits is not
 * measured: it may build kernels for the new shard sizes). */
int64_t dynb__group_window(const dynb__group *g);
/* Tests: busy seconds from fn(user, replica, shard, measured) instead of
 * the clock (NULL: the clock). */
void dynb__group_set_busy(dynb__group *g, dynb__busy_fn fn, void *user);
/* --split auto: every replica contributes its (shard, busy seconds per
 * step over the window, last re-split's seconds) by an all-gather in
 * global replica order, and every replica computes the same new split from
 * the same numbers (dynb__balance_propose with opts, steps_left and the
 * slowest replica's re-split cost). When it changes, each replica of this
 * process rebuilds its plan for its new shard, one after another (CLBlast
 * kernels are not built by two threads at once), keeping every tensor and
 * the optimiser state. Starts a new window; *changed tells whether the
 * split moved. */
dynb_status dynb__group_rebalance(dynb__group *g, const dynb__balance_opts *opts, int64_t steps_left,
                                  bool *changed);
/* The end of a run across MPI ranks (ctx joined a communicator): a failure
 * here (st) is passed to the other ranks, which then fail in whichever
 * collective they wait in, naming this rank; success waits until every
 * rank got here (and fails if one failed instead). Returns st, or the other
 * rank's failure. Without a communicator: st. */
dynb_status dynb__world_settle(dynb_ctx *ctx, dynb_status st);

#endif
