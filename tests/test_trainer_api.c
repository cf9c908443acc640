/* The public trainer (include/dynblocks/trainer.h): data sets from host
 * arrays, two epochs of training on a tiny synthetic set with the row and
 * progress callbacks checked, a checkpoint resumed, evaluation, and bad
 * arguments (NULL data, epochs 0, device counts and splits that do not
 * match) refused with a status and a message naming the field. Only the
 * public headers are used, as a client would. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api_fixture.h"
#include "testutil.h"

/* Four batches of training data and one of validation (AF_BATCH each). */
enum { NB_TRAIN = 4, NB_VAL = 1, N = (NB_TRAIN + NB_VAL) * AF_BATCH };

typedef struct seen {
  dynb_epoch_row rows[8];
  int nrows;
  int64_t progress_calls, last_done, last_total;
  dynb_train_state *state; /* the run's, as given in the desc */
  uint64_t rng[8];         /* its random state at each row */
} seen;

static void on_epoch(void *user, const dynb_epoch_row *row) {
  seen *s = user;
  if (s->nrows < 8) s->rows[s->nrows] = *row;
  /* The state is the trainer's at the row, and what the callback sets goes
   * into the checkpoint (the tool keeps its best score there). */
  if (s->state && s->nrows < 8) {
    s->rng[s->nrows] = s->state->rng;
    s->state->best = 0.5 + row->epoch;
  }
  s->nrows++;
}

static void on_progress(void *user, int epoch, int64_t done, int64_t total, double loss,
                        double acc) {
  seen *s = user;
  (void)epoch;
  assert_true(isfinite(loss) && loss >= 0);
  assert_true(acc >= 0 && acc <= 1);
  s->progress_calls++;
  s->last_done = done, s->last_total = total;
}

/* The synthetic set: af_make_batch's rule (a bright top or bottom half). */
static void make_sets(dynb_ctx *ctx, dynb_dataset **train, dynb_dataset **val) {
  static float x[N * AF_PIXELS];
  static int32_t y[N];
  for (int b = 0; b < N / AF_BATCH; b++)
    af_make_batch(500 + (uint64_t)b, x + (size_t)b * AF_BATCH * AF_PIXELS, y + b * AF_BATCH);
  TU_OK(ctx, dynb_dataset_from_host(ctx, N, 1, 8, 8, 2, x, y, train));
  TU_OK(ctx, dynb_dataset_shuffle(*train, 7));
  TU_OK(ctx, dynb_dataset_split(*train, NB_VAL * AF_BATCH, val));
  int64_t n = 0, c = 0, h = 0, w = 0, k = 0;
  TU_OK(ctx, dynb_dataset_shape(*train, &n, &c, &h, &w, &k));
  assert_int_equal(n, NB_TRAIN * AF_BATCH);
  assert_true(c == 1 && h == 8 && w == 8 && k == 2);
  TU_OK(ctx, dynb_dataset_shape(*val, &n, NULL, NULL, NULL, NULL));
  assert_int_equal(n, NB_VAL * AF_BATCH);
  double mean[1], std[1];
  TU_OK(ctx, dynb_dataset_stats(*train, mean, std));
  assert_true(std[0] > 0);
  TU_OK(ctx, dynb_dataset_normalise(*train, mean, std));
  TU_OK(ctx, dynb_dataset_normalise(*val, mean, std));
}

/* What every training test starts from: a context, the synthetic sets and
 * a fresh network of AF_SPEC (seed 3). */
static dynb_net *fresh_run(dynb_ctx **ctx, dynb_dataset **train, dynb_dataset **val) {
  char err[512];
  if (af_ctx(ctx, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  make_sets(*ctx, train, val);
  dynb_net *net = NULL;
  TU_OK(*ctx, dynb_net_create(*ctx, AF_SPEC, DYNB_F32, 3, &net));
  return net;
}

static void two_epochs_with_rows_and_resume(void **state) {
  (void)state;
  dynb_ctx *ctx = NULL;
  dynb_dataset *train = NULL, *val = NULL;
  dynb_net *net = fresh_run(&ctx, &train, &val);
  char ckpt[] = "/tmp/dynb_trainer_api_XXXXXX";
  int fd = mkstemp(ckpt);
  assert_true(fd >= 0);
  close(fd);
  seen s;
  memset(&s, 0, sizeof s);
  dynb_train_desc d = dynb_train_desc_default();
  assert_int_equal(d.struct_size, sizeof d);
  d.epochs = 2;
  d.batch = AF_BATCH;
  d.lr = "0.05@0,0.02@1";
  d.seed = 5;
  d.on_epoch = on_epoch;
  d.on_progress = on_progress;
  d.user = &s;
  d.checkpoint_path = ckpt;
  dynb_train_state ts;
  memset(&ts, 0, sizeof ts);
  ts.best = INFINITY;
  d.state = &ts;
  s.state = &ts;
  TU_OK(ctx, dynb_train(net, train, val, &d));
  /* Each epoch shuffles: the random state moved between the rows. */
  assert_true(s.rng[0] != s.rng[1]);
  assert_true(ts.rng == s.rng[1]);
  assert_int_equal(s.nrows, 2);
  assert_int_equal(ts.epoch, 2);
  /* One progress call per batch: NB_TRAIN batches in each of 2 epochs. */
  assert_int_equal(s.progress_calls, 2 * NB_TRAIN);
  assert_true(s.last_done == NB_TRAIN && s.last_total == NB_TRAIN);
  for (int e = 0; e < 2; e++) {
    const dynb_epoch_row *r = &s.rows[e];
    printf("epoch %d: %.3f s, lr %g, train %.4f/%.3f, val %.4f/%.3f, nfe %g\n", r->epoch,
           r->seconds, r->lr, r->train_loss, r->train_acc, r->val_loss, r->val_acc, r->nfe);
    assert_int_equal(r->struct_size, sizeof *r);
    assert_int_equal(r->epoch, e);
    assert_true(r->seconds >= 0 && isfinite(r->seconds));
    /* The schedule given above, exactly. */
    assert_true(r->lr == (e == 0 ? 0.05 : 0.02));
    assert_true(isfinite(r->train_loss) && r->train_loss > 0);
    assert_true(isfinite(r->val_loss) && r->val_loss > 0);
    assert_true(r->train_acc >= 0 && r->train_acc <= 1 && r->val_acc >= 0 && r->val_acc <= 1);
    /* One device: its shard is the batch; parameters moved (lr > 0). */
    assert_int_equal(r->replicas, 1);
    assert_int_equal(r->shard[0], AF_BATCH);
    assert_true(r->d_params > 0);
    assert_true(r->nfe > 0);
    assert_false(r->refined);
    /* AF_SPEC has time_reg 0.01 > 0: the term is reported. */
    assert_true(isfinite(r->time_reg) && r->time_reg >= 0);
  }
  double loss, acc;
  TU_OK(ctx, dynb_evaluate(&net, 1, NULL, AF_BATCH, val, &loss, &acc));
  /* The trainer's last validation ran the same network on the same set. */
  assert_true(fabs(loss - s.rows[1].val_loss) <= 1e-6 * fabs(loss));
  /* Resume from the checkpoint to 3 epochs: only epoch 2 runs. */
  dynb_net *again = NULL;
  dynb_train_state ts2;
  TU_OK(ctx, dynb_net_load_state(ctx, ckpt, DYNB_F32, &again, &ts2));
  assert_int_equal(ts2.epoch, 2);
  assert_true(ts2.rng == ts.rng);
  assert_true(ts2.best == 1.5); /* set by on_epoch at epoch 1, exact in binary */
  memset(&s, 0, sizeof s);
  d.epochs = 3;
  d.checkpoint_path = NULL;
  d.resume_path = ckpt;
  d.state = &ts2;
  TU_OK(ctx, dynb_train(again, train, val, &d));
  assert_int_equal(s.nrows, 1);
  assert_int_equal(s.rows[0].epoch, 2);
  assert_int_equal(ts2.epoch, 3);
  unlink(ckpt);
  dynb_net_free(again);
  dynb_net_free(net);
  dynb_dataset_free(val);
  dynb_dataset_free(train);
  dynb_ctx_free(ctx);
}

/* Each refusal: the status, and a message naming what is wrong. */
#define EXPECT_REFUSED(ctx, call, status, words)                                          \
  do {                                                                                    \
    TU_EXPECT_STATUS(ctx, call, status);                                                  \
    if (!strstr(dynb_ctx_last_error(ctx), words))                                         \
      fail_msg("%s: message '%s' does not name '%s'", #call, dynb_ctx_last_error(ctx), words); \
  } while (0)

static void bad_arguments_are_refused(void **state) {
  (void)state;
  dynb_ctx *ctx = NULL;
  dynb_dataset *train = NULL, *val = NULL;
  dynb_net *net = fresh_run(&ctx, &train, &val);
  int calls = 0;
  dynb_train_desc d = dynb_train_desc_default();
  d.batch = AF_BATCH;
  d.on_epoch = (dynb_epoch_fn)NULL;
  d.user = &calls;
  assert_int_equal(dynb_train(NULL, train, val, &d), DYNB_STATUS_MISUSE);
  EXPECT_REFUSED(ctx, dynb_train(net, NULL, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "training set is NULL");
  d.epochs = 0;
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "desc->epochs is 0");
  d.epochs = 1;
  d.struct_size = 8;
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "struct_size");
  d.struct_size = sizeof d;
  d.warn_reconstruction = -1;
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "desc->warn_reconstruction is -1");
  d.warn_reconstruction = 0;
  /* Two devices but one network, three shards for two devices, too many. */
  d.devices = 2;
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "desc->nets is NULL");
  dynb_net *const two[2] = {net, net};
  d.nets = two;
  d.split = "5,5,6";
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "desc->split");
  d.devices = DYNB_TRAIN_MAX_DEVICES + 1;
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "desc->devices is 17");
  d.devices = 0, d.nets = NULL, d.split = NULL;
  d.lr = "fast";
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT, "desc->lr");
  d.lr = NULL;
  /* A batch larger than the set. */
  d.batch = 1000;
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_INVALID_ARGUMENT,
                 "smaller than one batch");
  d.batch = AF_BATCH;
  /* Data the network cannot take: labels of 3 classes for its 2 (the first
   * label 2 is sample 2), 4x4 images for its 8x8. */
  {
    static float x3[AF_BATCH * AF_PIXELS];
    static int32_t y3[AF_BATCH], y2[4 * AF_BATCH]; /* y2: 64 images of 4x4 in x3's floats */
    for (int i = 0; i < AF_BATCH; i++) y3[i] = i % 3;
    for (int i = 0; i < 4 * AF_BATCH; i++) y2[i] = i % 2;
    dynb_dataset *three = NULL, *small = NULL;
    TU_OK(ctx, dynb_dataset_from_host(ctx, AF_BATCH, 1, 8, 8, 3, x3, y3, &three));
    EXPECT_REFUSED(ctx, dynb_train(net, three, val, &d), DYNB_STATUS_SHAPE_MISMATCH,
                   "the training set has label 2 at sample 2, the network 2 classes");
    TU_OK(ctx, dynb_dataset_from_host(ctx, 4 * AF_BATCH, 1, 4, 4, 2, x3, y2, &small));
    double l, a;
    EXPECT_REFUSED(ctx, dynb_evaluate(&net, 1, NULL, AF_BATCH, small, &l, &a),
                   DYNB_STATUS_SHAPE_MISMATCH, "images of 1x4x4, the network takes 1x8x8");
    EXPECT_REFUSED(ctx, dynb_train(net, train, small, &d), DYNB_STATUS_SHAPE_MISMATCH,
                   "the validation set");
    dynb_dataset_free(small);
    dynb_dataset_free(three);
  }
  /* A live plan on the network. */
  dynb_plan *plan = NULL;
  TU_OK(ctx, dynb_plan_build(net, AF_BATCH, DYNB_MEMORY_STORE, &plan));
  EXPECT_REFUSED(ctx, dynb_train(net, train, val, &d), DYNB_STATUS_MISUSE, "alive");
  dynb_plan_free(plan);
  assert_int_equal(calls, 0);
  /* Data sets. */
  dynb_dataset *bad = NULL;
  float x[4] = {0};
  int32_t y[1] = {2};
  EXPECT_REFUSED(ctx, dynb_dataset_from_host(ctx, 1, 1, 2, 2, 2, x, y, &bad),
                 DYNB_STATUS_INVALID_ARGUMENT, "labels[0] = 2");
  assert_null(bad);
  EXPECT_REFUSED(ctx, dynb_dataset_from_host(ctx, 1, 1, 2, 2, 2, NULL, y, &bad),
                 DYNB_STATUS_INVALID_ARGUMENT, "images is NULL");
  int64_t n = 0;
  TU_OK(ctx, dynb_dataset_shape(train, &n, NULL, NULL, NULL, NULL));
  EXPECT_REFUSED(ctx, dynb_dataset_split(train, n, &bad), DYNB_STATUS_INVALID_ARGUMENT,
                 "leaves none");
  EXPECT_REFUSED(ctx, dynb_dataset_open(ctx, "/nonexistent/dynb-data", NULL, 0, &bad),
                 dynb_ctx_last_status(ctx), "/nonexistent/dynb-data");
  assert_null(bad);
  /* The split parser needs no context. */
  int64_t shard[2];
  int is_auto = -1;
  char err[512];
  assert_int_equal(dynb_split_parse("5,4", 2, 8, shard, &is_auto, err, sizeof err),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "sums to 9, not the batch 8"));
  assert_int_equal(dynb_split_parse(NULL, 2, 9, shard, &is_auto, err, sizeof err), DYNB_OK);
  assert_true(is_auto == 1 && shard[0] == 5 && shard[1] == 4);
  dynb_net_free(net);
  dynb_dataset_free(val);
  dynb_dataset_free(train);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(two_epochs_with_rows_and_resume),
      cmocka_unit_test(bad_arguments_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
