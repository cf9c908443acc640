/* Data-parallel training across MPI ranks (dynblocks/mpi.h, libdynblocks_mpi),
 * run under `mpirun -np 2`: the small network of test_parallel.c (batch norm
 * in the opening layer, inside the blocks and in the connectors), 20 steps
 * (2 epochs of 10, augmentation on, validation split across the ranks), on
 * one replica (rank 0 alone, no communicator) and on the two ranks with an
 * equal (6,6) and an unequal (9,3) split, in f64 and f32. Checks:
 *  - losses, validation losses and every final tensor against one replica,
 *    within the bounds test_parallel.c justifies (the same sums in the same
 *    orders: the transport changes where values travel, not the arithmetic);
 *  - the same bits as the same split on two contexts in one process
 *    (in-process transport), run by rank 0: the MPI transport adds nothing;
 *  - rank 1 starts from other initial values, so the broadcast of rank 0's
 *    is what makes the model one.
 * Not cmocka: a failed assertion on one rank would leave the other waiting
 * in a collective, so a failure prints and ends the job with MPI_Abort. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynblocks/mpi.h"
#include "parallel/group.h"
#include "testutil.h"

#define STEPS_PER_EPOCH 10
#define EPOCHS 2
#define BATCH 12

static int rank;

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", rank, __FILE__,   \
              __LINE__, #cond);                                               \
      fprintf(stderr, __VA_ARGS__);                                           \
      fprintf(stderr, "\n");                                                  \
      MPI_Abort(MPI_COMM_WORLD, 1);                                           \
    }                                                                         \
  } while (0)
#define OK(ctx, call)                                                          \
  do {                                                                         \
    dynb_status s_ = (call);                                                   \
    CHECK(s_ == DYNB_OK, "%s: %s", dynb_status_name(s_), dynb_ctx_last_error(ctx)); \
  } while (0)

typedef struct result {
  double loss[EPOCHS * STEPS_PER_EPOCH];
  double val[EPOCHS];
  double *tensors;
  size_t total;
} result;

static void spec(dynb__net_spec *s) {
  memset(s, 0, sizeof *s);
  s->in_channels = 2, s->in_height = 6, s->in_width = 5, s->classes = 3;
  s->open_width = 3, s->open_kernel = 3, s->open_norm = DYNB_NORM_BATCH, s->open_act = DYNB_ACT_RELU;
  s->nblocks = 2;
  for (int b = 0; b < 2; b++) {
    dynb__block_spec *bs = &s->blocks[b];
    bs->width = 3 + b;
    bs->layer = (dynb__layer){DYNB_LAYER_DOUBLE, DYNB_NORM_BATCH, DYNB_ACT_TANH, bs->width, 3};
    CHECK(dynb__tableau_builtin("heun", &bs->tableau), "heun");
    bs->nstates = 3;
    bs->t_states[0] = 0, bs->t_states[1] = 0.5, bs->t_states[2] = 1.0;
    bs->ncontrols = 2;
    bs->t_controls[0] = 0, bs->t_controls[1] = 1.0;
  }
  s->connect_norm = DYNB_NORM_BATCH, s->connect_act = DYNB_ACT_RELU;
  s->head_width = 4;
}

static void make_data(dynb__dataset *d, int64_t n, uint64_t seed) {
  memset(d, 0, sizeof *d);
  d->n = n, d->c = 2, d->h = 6, d->w = 5, d->classes = 3;
  size_t per = 60;
  d->images = malloc((size_t)n * per * sizeof *d->images);
  d->labels = malloc((size_t)n * sizeof *d->labels);
  CHECK(d->images && d->labels, "no memory");
  tu_rng rng = tu_rng_seed(seed);
  for (size_t i = 0; i < (size_t)n * per; i++) d->images[i] = (float)tu_uniform(&rng, -1.5, 2.0);
  for (int64_t i = 0; i < n; i++) d->labels[i] = (int32_t)(tu_uniform(&rng, 0, 3) * 0.999);
}

static void on_progress(void *user, int epoch, int64_t done, int64_t total, double loss,
                        double acc) {
  (void)total, (void)acc;
  result *r = user;
  r->loss[epoch * STEPS_PER_EPOCH + (done - 1)] = loss;
}

static void on_row(void *user, const dynb__epoch_row *row) {
  result *r = user;
  r->val[row->epoch] = row->val_loss;
}

/* Trains a fresh network on ctxs[0..nctx) (one context: alone, or one rank
 * of a communicator it joined) with `replicas` replicas and shards. */
static void train(dynb_ctx **ctxs, int nctx, dynb_dtype real, int replicas, const int64_t *shard,
                  uint64_t init_seed, result *out) {
  dynb__net_spec s;
  spec(&s);
  dynb__net *nets[2] = {NULL, NULL};
  for (int r = 0; r < nctx; r++) {
    OK(ctxs[r], dynb__net_create(ctxs[r], &s, real, &nets[r]));
    OK(ctxs[r], dynb__net_init(nets[r], r == 0 ? init_seed : 1000 + (uint64_t)r));
  }
  dynb__dataset tr, val;
  make_data(&tr, BATCH * STEPS_PER_EPOCH, 11);
  make_data(&val, 17, 12); /* not a multiple of any shard: padded last batches */
  dynb__train_desc d;
  memset(&d, 0, sizeof d);
  d.epochs = EPOCHS;
  d.batch = BATCH;
  char err[256];
  CHECK(dynb__schedule_parse("0.05", &d.lr, err, sizeof err) == DYNB_OK, "%s", err);
  d.optim = dynb__optim_desc_default();
  d.seed = 3;
  d.augment = true;
  d.memory = DYNB_MEMORY_STORE;
  d.on_row = on_row;
  d.on_progress = on_progress;
  d.user = out;
  d.replicas = replicas;
  d.nets = nets;
  d.shard = shard;
  OK(ctxs[0], dynb__train(nets[0], &tr, &val, &d));
  out->total = 0;
  for (size_t i = 0; i < nets[0]->ntensors; i++)
    out->total += dynb__tensor_numel(&nets[0]->tensors[i].value);
  out->tensors = malloc(out->total * sizeof *out->tensors);
  CHECK(out->tensors, "no memory");
  for (size_t i = 0, at = 0; i < nets[0]->ntensors; i++) {
    OK(ctxs[0], dynb__tensor_read_f64(ctxs[0], &nets[0]->tensors[i].value, out->tensors + at));
    at += dynb__tensor_numel(&nets[0]->tensors[i].value);
  }
  for (int r = 0; r < nctx; r++) {
    CHECK(ctxs[r]->link == NULL, "the group kept a link");
    dynb__net_free(nets[r]);
  }
  dynb__dataset_release(&tr);
  dynb__dataset_release(&val);
}

/* Norm-wise differences as in test_parallel.c (tensor_err there says why). */
static double tensor_err(const dynb__net *shape, const result *a, const result *b) {
  double big[2] = {0, 0}, diff[2] = {0, 0};
  for (size_t i = 0, at = 0; i < shape->ntensors; i++) {
    size_t n = dynb__tensor_numel(&shape->tensors[i].value);
    int k = shape->tensors[i].trainable ? 0 : 1;
    for (size_t j = 0; j < n; j++) {
      big[k] = fmax(big[k], fabs(b->tensors[at + j]));
      diff[k] = fmax(diff[k], fabs(a->tensors[at + j] - b->tensors[at + j]));
    }
    at += n;
  }
  return fmax(diff[0] / big[0], diff[1] / big[1]);
}

static double loss_err(const result *a, const result *b) {
  double worst = 0;
  for (int k = 0; k < EPOCHS * STEPS_PER_EPOCH; k++)
    worst = fmax(worst, fabs(a->loss[k] - b->loss[k]) / fabs(b->loss[k]));
  for (int e = 0; e < EPOCHS; e++) worst = fmax(worst, fabs(a->val[e] - b->val[e]) / fabs(b->val[e]));
  return worst;
}

static dynb_ctx *open_ctx(void) {
  dynb_ctx_desc d = tu_ctx_desc();
  dynb_ctx *ctx = NULL;
  dynb_status st = dynb_ctx_create(&d, &ctx);
  CHECK(st == DYNB_OK, "dynb_ctx_create: %s", dynb_ctx_last_error(ctx));
  /* One convolution route everywhere: timed routes may differ between
   * contexts (and so round differently), which would void the bitwise
   * comparison with the in-process group. */
  OK(ctx, dynb_ctx_set_param(ctx, DYNB_PARAM_CONV_ROUTE, DYNB_CONV_GEMM));
  return ctx;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(size == 2, "run under mpirun -np 2, not %d ranks", size);
  /* The ranks' own communicator, not MPI_COMM_WORLD: the library must take
   * whatever the host gives it. */
  MPI_Comm comm;
  MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &comm);
  dynb_ctx *joined = open_ctx();
  OK(joined, dynb_mpi_join(joined, comm));
  CHECK(dynb_mpi_join(joined, comm) == DYNB_STATUS_MISUSE, "a second join is refused");
  dynb_ctx *alone[2] = {NULL, NULL};
  if (rank == 0) alone[0] = open_ctx(), alone[1] = open_ctx();
  static const int64_t shards[][2] = {{6, 6}, {9, 3}};
  /* The bounds of test_parallel.c (equivalent_f64/f32 there justify them). */
  const dynb_dtype reals[2] = {DYNB_F64, DYNB_F32};
  const double bound[2] = {1e-12, 1e-4};
  int checked = 0;
  for (int t = 0; t < 2; t++) {
    int fp64 = joined->info.has_fp64, all64 = 0;
    MPI_Allreduce(&fp64, &all64, 1, MPI_INT, MPI_MIN, comm);
    if (reals[t] == DYNB_F64 && !all64) {
      if (rank == 0) printf("skipping f64: a rank's device has no fp64\n");
      continue;
    }
    result one = {0};
    if (rank == 0) train(alone, 1, reals[t], 1, NULL, 7, &one);
    for (int k = 0; k < 2; k++) {
      result many = {0};
      train(&joined, 1, reals[t], 2, shards[k], rank == 0 ? 7 : 99, &many);
      if (rank == 0) {
        result local = {0};
        train(alone, 2, reals[t], 2, shards[k], 7, &local);
        dynb__net_spec s;
        spec(&s);
        dynb__net *shape;
        OK(alone[0], dynb__net_create(alone[0], &s, reals[t], &shape));
        double le = loss_err(&many, &one), te = tensor_err(shape, &many, &one);
        printf("maxerr %s mpirun -np 2 shards %lld,%lld losses: %.3g\n", dynb__dtype_name(reals[t]),
               (long long)shards[k][0], (long long)shards[k][1], le);
        printf("maxerr %s mpirun -np 2 shards %lld,%lld tensors: %.3g\n",
               dynb__dtype_name(reals[t]), (long long)shards[k][0], (long long)shards[k][1], te);
        fflush(stdout);
        CHECK(le <= bound[t], "losses differ by %.3g", le);
        CHECK(te <= bound[t], "tensors differ by %.3g", te);
        CHECK(memcmp(local.tensors, many.tensors, many.total * sizeof *many.tensors) == 0 &&
                  memcmp(local.loss, many.loss, sizeof many.loss) == 0,
              "two ranks and two contexts in one process give other bits");
        dynb__net_free(shape);
        free(local.tensors);
        checked++;
      }
      free(many.tensors);
    }
    free(one.tensors);
  }
  dynb_ctx_free(alone[0]);
  dynb_ctx_free(alone[1]);
  dynb_ctx_free(joined);
  MPI_Comm_free(&comm);
  if (rank == 0) printf("test_mpi: %d comparisons passed\n", checked);
  CHECK(rank != 0 || checked >= 2, "nothing was compared");
  MPI_Finalize();
  return 0;
}
