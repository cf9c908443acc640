/** @file dynblocks/trainer.h
 * The trainer: data sets in host memory, and training a network for a
 * number of epochs with validation, a learning-rate schedule, an optimiser,
 * checkpoints and resume, multilevel refinement, and several devices (a
 * network per device, each on its own context, or one per MPI rank on a
 * context joined with dynb_mpi_join). This is what the `dynblocks train`
 * command runs; its epoch table is dynb_epoch_row. */
#ifndef DYNBLOCKS_TRAINER_H
#define DYNBLOCKS_TRAINER_H

#include "dynblocks/optimizer.h"
#include "dynblocks/plan.h"

#ifdef __cplusplus
extern "C" {
#endif

/** At most this many devices (replicas) in one data-parallel run. */
#define DYNB_TRAIN_MAX_DEVICES 16
/** Input normalisation is kept for up to this many channels. */
#define DYNB_TRAIN_MAX_CHANNELS 4

/** A labelled image set in host memory: float NCHW images and int32 labels. */
typedef struct dynb_dataset dynb_dataset;

/** Loads a data set: `name` is "fashion-mnist" (Debian's files; NULL means
 * it), "mnist" or "cifar10" (files in data_dir), or a folder holding IDX or
 * CIFAR-10 files. Pixels are scaled to [0, 1].
 * @param ctx the context (messages and host memory).
 * @param name (borrowed) the set, or NULL.
 * @param data_dir (borrowed) where "mnist" and "cifar10" live; may be NULL.
 * @param test 1 for the test split, 0 for the training split.
 * @param out (out) the data set; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL ctx), DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_IO_ERROR or DYNB_STATUS_BAD_FORMAT (the message names the
 *         file), DYNB_STATUS_OUT_OF_HOST_MEMORY. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_open(dynb_ctx *ctx, const char *name, const char *data_dir,
                                       int test, dynb_dataset **out);
/** A data set copied from host arrays.
 * @param ctx the context.
 * @param n samples (>= 1).
 * @param channels,height,width one image is channels×height×width (each >= 1).
 * @param classes labels per sample are in [0, classes) (>= 2).
 * @param images (borrowed) n·channels·height·width floats, NCHW.
 * @param labels (borrowed) n labels in [0, classes).
 * @param out (out) the data set; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT (the
 *         message names the argument or the first bad label),
 *         DYNB_STATUS_OUT_OF_HOST_MEMORY. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_from_host(dynb_ctx *ctx, int64_t n, int64_t channels,
                                            int64_t height, int64_t width, int64_t classes,
                                            const float *images, const int32_t *labels,
                                            dynb_dataset **out);
/** Releases a data set. Accepts NULL. Since: 0.2 */
DYNB_API void dynb_dataset_free(dynb_dataset *d);
/** Size and shape; each output may be NULL.
 * @param d the data set.
 * @param n (out) samples.
 * @param channels,height,width (out) the image shape.
 * @param classes (out) number of classes.
 * @return DYNB_OK, DYNB_STATUS_MISUSE. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_shape(const dynb_dataset *d, int64_t *n, int64_t *channels,
                                        int64_t *height, int64_t *width, int64_t *classes);
/** A seeded shuffle of the samples (the same seed, the same order on every host).
 * @param d the data set.
 * @param seed the shuffle's seed.
 * @return DYNB_OK, DYNB_STATUS_MISUSE. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_shuffle(dynb_dataset *d, uint64_t seed);
/** Moves the last `count` samples into a new set (a validation split).
 * @param d the set; it keeps n - count samples.
 * @param count 0 .. n - 1 (the set keeps at least one sample).
 * @param tail (out) the new set (count may be 0: an empty set); NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_OUT_OF_HOST_MEMORY. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_split(dynb_dataset *d, int64_t count, dynb_dataset **tail);
/** Keeps the first n samples.
 * @param d the data set.
 * @param n samples to keep (>= 1; more than the set holds keeps all).
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_truncate(dynb_dataset *d, int64_t n);
/** Per-channel mean and standard deviation over samples and pixels.
 * @param d the data set.
 * @param mean,std (out) `channels` values each.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_stats(const dynb_dataset *d, double *mean, double *std);
/** x = (x - mean[c]) / std[c] in place.
 * @param d the data set.
 * @param mean,std (borrowed) `channels` values each; std > 0.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.2 */
DYNB_API dynb_status dynb_dataset_normalise(dynb_dataset *d, const double *mean,
                                            const double *std);

/** The state a checkpoint carries besides the network and the optimiser. */
typedef struct dynb_train_state {
  int64_t epoch;                              /**< epochs completed */
  uint64_t rng;                               /**< the trainer's random state */
  double norm_mean[DYNB_TRAIN_MAX_CHANNELS];  /**< input normalisation, per channel */
  double norm_std[DYNB_TRAIN_MAX_CHANNELS];   /**< input standard deviation, per channel */
  double best;                                /**< best validation score (INFINITY: none) */
} dynb_train_state;

/** Loads a model or checkpoint file as dynb_net_load does, with its training
 * state (zeroed, best INFINITY, when the file has none); the file's
 * convolution routes become the context's choices for shapes not chosen yet.
 * @param ctx the context.
 * @param path (borrowed) the file.
 * @param real DYNB_F32 or DYNB_F64.
 * @param out (out) the network; NULL on failure.
 * @param state (out) the training state.
 * @return as dynb_net_load. Since: 0.2 */
DYNB_API dynb_status dynb_net_load_state(dynb_ctx *ctx, const char *path, dynb_dtype real,
                                         dynb_net **out, dynb_train_state *state);
/** Writes the network as dynb_net_save does, with a training state (for
 * the input normalisation a model file needs).
 * @param net the network.
 * @param path (borrowed) the file, replaced atomically.
 * @param state (borrowed) the training state written with it.
 * @return as dynb_net_save, and DYNB_STATUS_NON_FINITE (nothing written). Since: 0.2 */
DYNB_API dynb_status dynb_net_save_state(dynb_net *net, const char *path,
                                         const dynb_train_state *state);

/** One epoch's results (the rows of `dynblocks train`'s table and CSV log). */
typedef struct dynb_epoch_row {
  uint32_t struct_size;   /**< sizeof(dynb_epoch_row) of the library: fields past it are absent */
  int epoch;              /**< 0-based */
  double seconds;         /**< wall seconds of the epoch */
  double d_running_mean;  /**< RMS change of batch-norm running means */
  double d_running_var;   /**< RMS change of batch-norm running variances */
  double lr;              /**< learning rate */
  double d_params;        /**< RMS change of trainable tensors */
  double train_loss;      /**< mean training loss over the epoch */
  double train_acc;       /**< training accuracy over the epoch */
  double val_loss;        /**< validation loss after the epoch (0 without validation) */
  double val_acc;         /**< validation accuracy after the epoch */
  double time_reg;        /**< time regularisation term (last batch) */
  int replicas;           /**< devices (or MPI ranks) whose figures follow; 1 for one device */
  int64_t shard[DYNB_TRAIN_MAX_DEVICES];         /**< samples per device in each batch */
  double compute_seconds[DYNB_TRAIN_MAX_DEVICES]; /**< forward + backward seconds */
  double step_seconds[DYNB_TRAIN_MAX_DEVICES];   /**< whole-step seconds */
  double busy_seconds[DYNB_TRAIN_MAX_DEVICES];   /**< compute minus waits for other devices */
  int refined;            /**< 1: the grids were refined at the start of this epoch */
  double nfe;             /**< layer evaluations per batch (forward + backward), epoch mean */
  double rec_err;         /**< reconstruction error (log_reconstruction), else 0 */
  int rec_warn;           /**< 1: rec_err is above warn_reconstruction (or not a number) */
} dynb_epoch_row;

/** Called after each epoch (before its checkpoint is written). */
typedef void (*dynb_epoch_fn)(void *user, const dynb_epoch_row *row);
/** Called after each training batch: batches done of total, running mean
 * loss and accuracy of the epoch. */
typedef void (*dynb_progress_fn)(void *user, int epoch, int64_t done, int64_t total,
                                 double loss, double accuracy);

/** How to train. Start from dynb_train_desc_default() so that fields added
 * later keep their defaults. Pointers are borrowed for the call. */
typedef struct dynb_train_desc {
  uint32_t struct_size;    /**< sizeof(dynb_train_desc); dynb_train_desc_default sets it */
  int epochs;              /**< epochs to run in all (a resumed run continues to it); >= 1 */
  int64_t batch;           /**< global batch size; default 128 */
  const char *lr;          /**< schedule "0.1@0,0.01@60" or a bare rate; default "0.05@0,0.01@2" */
  dynb_optim_kind optim;   /**< default SGD */
  double momentum;         /**< SGD momentum; default 0.9 */
  double weight_decay;     /**< weight decay (SGD and Adam); default 4e-4 */
  int nesterov;            /**< SGD: 1 for Nesterov momentum */
  double beta1;            /**< Adam β₁; default 0.9 */
  double beta2;            /**< Adam β₂; default 0.999 */
  double eps;              /**< Adam ε; default 1e-8 */
  uint64_t seed;           /**< the trainer's shuffle and augmentation */
  int augment;             /**< 1: random crop (pad 2) and horizontal flip */
  dynb_memory_mode memory; /**< default DYNB_MEMORY_STORE */
  dynb_epoch_fn on_epoch;  /**< may be NULL */
  dynb_progress_fn on_progress; /**< may be NULL */
  void *user;              /**< passed to the callbacks */
  const char *checkpoint_path; /**< written after every epoch (optimiser and random state); NULL: none */
  const char *resume_path; /**< a checkpoint to continue from (with `state`); NULL: a new run */
  /** In/out: the state of the run (dynb_net_load_state of resume_path); may
   * be NULL for a new run. It is current when on_epoch runs (e.g. to save
   * the best model with dynb_net_save_state), and what on_epoch changes in
   * it (best) goes into that epoch's checkpoint. */
  dynb_train_state *state;
  /** Several devices in one process: nets[0..devices) are the same spec on
   * their own contexts, nets[0] the network given to dynb_train. 0 or 1:
   * one device. Under MPI (the network's context joined a communicator)
   * leave it 0: each rank is one device. */
  int devices;
  dynb_net *const *nets;   /**< (borrowed) `devices` networks, nets[0] the one trained */
  /** Samples per device: "equal", "N,N,..." summing to batch, or "auto"
   * (NULL: auto), the balancer moving the split by measured speed. */
  const char *split;
  const int *refine_epochs; /**< halve every block's grids at the start of these epochs */
  int nrefine;              /**< entries of refine_epochs (strictly increasing) */
  int log_reconstruction;   /**< 1: rec_err once an epoch (reconstruct mode, one device) */
  /** > 0: measure rec_err as log_reconstruction does and set the row's
   * rec_warn when it is above this bound (0: off). */
  double warn_reconstruction;
} dynb_train_desc;

/** A description with every field at its default (epochs 1). Since: 0.2 */
DYNB_API dynb_train_desc dynb_train_desc_default(void);

/** Splits a global batch over `devices` as dynb_train_desc.split does.
 * Needs no context: the message goes to err.
 * @param text (borrowed) "equal", "auto", NULL (auto) or "N,N,...".
 * @param devices 1 .. DYNB_TRAIN_MAX_DEVICES.
 * @param batch the global batch.
 * @param shard (out) `devices` sizes (auto: the equal split it starts from).
 * @param is_auto (out, may be NULL) 1 when the balancer moves the split.
 * @param err (out, may be NULL) the message on failure.
 * @param errlen bytes of err.
 * @return DYNB_OK, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.2 */
DYNB_API dynb_status dynb_split_parse(const char *text, int devices, int64_t batch,
                                      int64_t *shard, int *is_auto, char *err, size_t errlen);

/** Trains `net` on `train` for desc->epochs, validating on `val` after each
 * epoch. The rows go to desc->on_epoch; nothing is printed. Under MPI
 * every rank makes the same call on its own context and data.
 * @param net the network (nets[0] with several devices).
 * @param train the training set (reordered during training).
 * @param val the validation set, or NULL.
 * @param desc (borrowed) how; NULL for the defaults.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL net, or a plan or optimiser
 *         alive on a network), DYNB_STATUS_INVALID_ARGUMENT (the message
 *         names the field), DYNB_STATUS_SHAPE_MISMATCH (data and network
 *         disagree), DYNB_STATUS_NON_FINITE (divergence: the message names
 *         the epoch and step), DYNB_STATUS_IO_ERROR (checkpoint), and the
 *         device errors. Since: 0.2 */
DYNB_API dynb_status dynb_train(dynb_net *net, dynb_dataset *train, const dynb_dataset *val,
                                const dynb_train_desc *desc);

/** Loss and accuracy of nets[0] on `d` in evaluation mode. With several
 * devices (count > 1) the set is split over nets[0..count) by `shard`
 * (NULL: equal), each taking nets[0]'s parameters.
 * @param nets (borrowed) count networks, nets[0] the one evaluated.
 * @param count 1 .. DYNB_TRAIN_MAX_DEVICES.
 * @param shard (borrowed) count samples per device, or NULL.
 * @param batch samples per evaluation batch (one device).
 * @param d the data set.
 * @param loss,accuracy (out).
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_SHAPE_MISMATCH, and the device errors. Since: 0.2 */
DYNB_API dynb_status dynb_evaluate(dynb_net *const *nets, int count, const int64_t *shard,
                                   int64_t batch, const dynb_dataset *d, double *loss,
                                   double *accuracy);

#ifdef __cplusplus
}
#endif

#endif
