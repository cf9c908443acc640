/* Private header of src/train: learning-rate schedules, optimisers over a
 * network's tensors, the time regularisation of blocks, data sets and the
 * training loop. */
#ifndef DYNB_TRAIN_TRAIN_H
#define DYNB_TRAIN_TRAIN_H

#include "plan/plan.h"

/* ---- Learning-rate schedule (schedule.c) -------------------------------------- */

#define DYNB_MAX_SCHEDULE 64
/* Piecewise constant per epoch: "0.1@0,0.01@60,0.001@80" (a bare "0.1"
 * means 0.1 from epoch 0). */
typedef struct dynb__schedule {
  int n;
  int epoch[DYNB_MAX_SCHEDULE];
  double lr[DYNB_MAX_SCHEDULE];
} dynb__schedule;

dynb_status dynb__schedule_parse(const char *text, dynb__schedule *out, char *err, size_t errlen);
double dynb__schedule_lr(const dynb__schedule *s, int epoch);

/* ---- Optimiser (optimizer.c) ----------------------------------------------------- */

/* dynb_optim_kind is public (dynblocks/optimizer.h). */
typedef struct dynb__optim_desc {
  dynb_optim_kind kind;
  double momentum, weight_decay; /* SGD; weight decay also for Adam */
  bool nesterov;
  double beta1, beta2, eps;      /* Adam */
} dynb__optim_desc;

/* SGD, momentum 0.9, weight decay 4e-4, no Nesterov; Adam's usual betas. */
dynb__optim_desc dynb__optim_desc_default(void);

/* Optimiser state for every trainable tensor of a network. */
typedef struct dynb__optimizer dynb__optimizer;
dynb_status dynb__optimizer_create(dynb__net *net, const dynb__optim_desc *desc,
                                   dynb__optimizer **out);
void dynb__optimizer_free(dynb__optimizer *opt);
/* One update of every trainable tensor from its gradient at rate lr; norm
 * parameters skip weight decay; then the spec's box constraint, if any, on
 * every trainable tensor that is not a norm parameter. */
dynb_status dynb__optimizer_step(dynb__optimizer *opt, double lr);
/* The state tensors, named "optim.<tensor>.<slot>" (slot: velocity, m, v),
 * for checkpoints; and the step counter. */
size_t dynb__optimizer_state_count(const dynb__optimizer *opt);
const dynb__net_tensor *dynb__optimizer_state_at(const dynb__optimizer *opt, size_t i);
int64_t *dynb__optimizer_step_counter(dynb__optimizer *opt);

/* ---- Time regularisation (optimizer.c) ------------------------------------------ */

/* α Σ_b Σ_j h_j ‖θ_{j+1} − θ_j‖₁ over every block's controls (the spec's
 * time_reg α): value added to out[0], subgradient to the block gradients. */
typedef struct dynb__timereg dynb__timereg;
dynb_status dynb__timereg_create(dynb__net *net, dynb__timereg **out);
void dynb__timereg_free(dynb__timereg *tr);
/* value = R (out: [1]), and gradients += ∂R/∂controls. */
dynb_status dynb__timereg_apply(dynb__timereg *tr, const dynb__tensor *value);

/* ---- Data sets in host memory (dataset.c) --------------------------------------- */

/* Images as float NCHW, normalised per channel, and int32 labels. */
typedef struct dynb__dataset {
  int64_t n;
  int c, h, w, classes;
  float *images;
  int32_t *labels;
} dynb__dataset;

/* Per-channel mean and standard deviation of a data set (over n, h, w). */
void dynb__dataset_stats(const dynb__dataset *d, double *mean, double *std);
/* x = (x - mean[c]) / std[c] in place. */
void dynb__dataset_normalise(dynb__dataset *d, const double *mean, const double *std);
/* Splits off the last `count` samples of a (shuffled) set as a new set. */
dynb_status dynb__dataset_split(dynb__dataset *d, int64_t count, dynb__dataset *tail);
/* A seeded Fisher–Yates shuffle of both arrays together. */
void dynb__dataset_shuffle(dynb__dataset *d, uint64_t *rng);
void dynb__dataset_release(dynb__dataset *d);

struct dynb__train_state;
/* ---- The training loop (trainer.c) ------------------------------------------------ */

/* At most this many replicas (devices) in one data-parallel run. */
#define DYNB_MAX_REPLICAS 16

/* One epoch's row of SPEC §2. */
typedef struct dynb__epoch_row {
  int epoch;
  double seconds;
  double d_running_mean, d_running_var; /* RMS change of running statistics */
  double lr;
  double d_params;                      /* RMS change of trainable tensors */
  double train_loss, train_acc, val_loss, val_acc;
  double time_reg;                      /* regularisation term (last batch) */
  /* Data-parallel runs (replicas > 1): each replica's shard, and its
   * forward+backward seconds and whole-step seconds over the epoch. */
  int replicas;
  int64_t shard[DYNB_MAX_REPLICAS];
  double compute_seconds[DYNB_MAX_REPLICAS], step_seconds[DYNB_MAX_REPLICAS];
  /* Busy seconds over the epoch: forward+backward minus the time waiting
   * for the other replicas inside synced batch norm (one device: the
   * training steps' seconds; then replicas is 1 and shard[0] the batch). */
  double busy_seconds[DYNB_MAX_REPLICAS];
  bool refined; /* the grids were refined at the start of this epoch (--refine) */
  /* Layer evaluations per training batch (forward + backward, every block),
   * the mean over the epoch: grows when adaptive blocks take more steps. */
  double nfe;
  /* With log_reconstruction: the plan's reconstruction error after the
   * epoch's last backward (dynb__plan_reconstruction_error; 0 otherwise). */
  double rec_err;
  /* rec_err is above the desc's warn_reconstruction bound (or not finite). */
  bool rec_warn;
} dynb__epoch_row;

typedef void (*dynb__row_fn)(void *user, const dynb__epoch_row *row);
/* Busy seconds of replica r's steps at shard samples, given the measured
 * ones: tests put a synthetic throughput curve in place of the clock. */
typedef double (*dynb__busy_fn)(void *user, int replica, int64_t shard, double measured);
/* Progress inside an epoch: batches done of total, running mean loss. */
typedef void (*dynb__progress_fn)(void *user, int epoch, int64_t done, int64_t total,
                                  double loss, double acc);

typedef struct dynb__train_desc {
  int epochs;
  int64_t batch;
  dynb__schedule lr;
  dynb__optim_desc optim;
  uint64_t seed;
  bool augment;               /* random crop (pad 2) and horizontal flip */
  dynb_memory_mode memory;
  dynb__row_fn on_row;
  dynb__progress_fn on_progress;
  void *user;
  /* Checkpoint after every epoch (NULL: none), with the optimiser state and
   * the random state, so that a resumed run continues exactly; written
   * after the epoch's on_row. */
  const char *checkpoint_path;
  /* Resume: optimiser state from this checkpoint, and the trainer's random
   * state and epoch count from *state (as loaded by dynb__model_load). */
  const char *resume_path;
  struct dynb__train_state *state;
  /* Data-parallel training on several devices (SPEC §2.1, src/parallel):
   * with replicas > 1, nets[0] is the network given to dynb__train and
   * nets[1..] the same network built on the other devices' contexts;
   * shard[r] samples of each global batch go to replica r (Σ = batch).
   * The model, log and checkpoints come from nets[0]. 0 or 1: one device. */
  int replicas;
  dynb__net *const *nets;
  const int64_t *shard;
  /* Multilevel training (refine.c): at the start of each of these epochs
   * (strictly increasing) every block's grids are halved, on every replica,
   * with the optimiser state carried over. A resumed run refines only at
   * the epochs it has still to run (its checkpoint holds the grids). */
  const int *refine_epochs;
  int nrefine;
  /* --split auto (docs/distributed.md "Balancer"): shard is the starting
   * split; the first epoch of the run re-balances after two short
   * calibration windows, and every epoch after its end. busy (NULL: the
   * clock) replaces the measured busy seconds (tests). */
  bool balance;
  dynb__busy_fn busy;
  /* Measure the rebuilt states' error once an epoch (reconstruct mode, one
   * device): a read of each reversible block's Y_0 and input. */
  bool log_reconstruction;
  /* > 0: measure it as log_reconstruction does, and mark the row rec_warn
   * when it exceeds this bound (0: no check). */
  double warn_reconstruction;
} dynb__train_desc;

/* Loss and accuracy of `net` on a data set in evaluation mode, through
 * `plan` (its batch size; a last partial batch is padded and the padding
 * ignored). */
dynb_status dynb__evaluate(dynb__plan *plan, const dynb__dataset *d, double *loss, double *acc);

/* Trains `net` on `train` for desc->epochs, reporting a row per epoch; the
 * validation set may be empty (n == 0). */
dynb_status dynb__train(dynb__net *net, dynb__dataset *train, const dynb__dataset *val,
                        const dynb__train_desc *desc);

/* ---- Divergence check (health.c) ------------------------------------------------- */

/* Whether a step's loss and gradients are finite, checked on the device: one
 * deterministic sum per gradient buffer, read back with the loss in one
 * transfer; no per-tensor wait unless the check fires. */
typedef struct dynb__health dynb__health;
/* A check of net's gradients and the plan's loss tensor `loss` ([2]: mean
 * loss, correct count; borrowed). */
dynb_status dynb__health_create(dynb__net *net, const dynb__tensor *loss, dynb__health **out);
void dynb__health_free(dynb__health *h);
/* After a backward pass: writes loss and correct count to out. A
 * non-finite loss, or a gradient holding NaN or Inf, is
 * DYNB_STATUS_NON_FINITE with a message naming the loss or the first such
 * gradient in the network's tensor order (grad.<SPEC name>[element]) and
 * the epoch and step. */
dynb_status dynb__health_check(dynb__health *h, int epoch, int64_t step, double out[2]);

/* ---- Model and checkpoint files (modelfile.c) ---------------------------------------- */

/* Loads a data set: `name` is "fashion-mnist" (Debian's files), "mnist" or
 * "cifar10" (files in data_dir), or a folder holding IDX or CIFAR-10
 * files. `test` picks the test split. Pixels are scaled to [0, 1]. */
dynb_status dynb__dataset_load(const char *name, const char *data_dir, bool test,
                               dynb__dataset *out, char *err, size_t errlen);

/* Extra state a checkpoint carries besides the network. */
typedef struct dynb__train_state dynb__train_state;
struct dynb__train_state {
  int64_t epoch;        /* epochs completed */
  uint64_t rng;         /* the trainer's random state */
  double norm_mean[4], norm_std[4]; /* input normalisation (per channel, up to 4) */
  double best;          /* best validation score so far (INFINITY: none yet) */
};

/* Writes the network (every named tensor, in its dtype), its spec under
 * __metadata__["dynblocks.spec"], and, when given, the optimiser state and
 * the training state with the context's convolution routes, atomically.
 * A tensor holding NaN or Inf is DYNB_STATUS_NON_FINITE and nothing is
 * written. */
dynb_status dynb__model_save(dynb__net *net, const char *path, dynb__optimizer *opt,
                             const dynb__train_state *ts);
/* Reads a model or checkpoint file into a new network over `real`; every
 * tensor of the spec must be present with its shape. When opt is given, its
 * state is restored from the file (which must hold it). ts, when given,
 * receives the training state (zeroed, best INFINITY, if absent) and the
 * file's convolution routes become ctx's choices for the shapes ctx has not
 * chosen yet (plans already built keep theirs). */
dynb_status dynb__model_load(dynb_ctx *ctx, const char *path, dynb_dtype real, dynb__net **out,
                             dynb__train_state *ts);
dynb_status dynb__model_load_optimizer(dynb__net *net, const char *path, dynb__optimizer *opt);

/* ---- Multilevel training (refine.c) ------------------------------------------------ */

#define DYNB_MAX_REFINE 32
/* "10,20": strictly increasing epoch numbers, at most DYNB_MAX_REFINE. */
dynb_status dynb__refine_parse(const char *text, int *epochs, int *n, char *err, size_t errlen);
bool dynb__refine_due(const int *epochs, int n, int epoch);
/* An optimiser's state in host memory with the control grids it was on,
 * taken before a refinement and put into the new network's optimiser
 * after: by name, block controls interpolated in time (refine.c says why). */
typedef struct dynb__optim_saved dynb__optim_saved;
dynb_status dynb__optim_save(dynb__optimizer *opt, dynb__net *net, dynb__optim_saved **out);
dynb_status dynb__optim_restore(dynb__optimizer *opt, dynb__net *net, const dynb__optim_saved *s);
void dynb__optim_saved_free(dynb__optim_saved *s);

#endif
