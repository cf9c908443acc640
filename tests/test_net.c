/* Whole networks: tensor names and initialisation, the plan's forward and
 * backward against central finite differences in double, and training
 * reducing the loss. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <unistd.h>

#include "testutil.h"
#include "plan/plan.h"
#include "train/train.h"

/* A small network: 2 blocks over 6×5 inputs, every norm kind somewhere. */
static void small_spec(dynb__net_spec *s, dynb_layer_kind kind, dynb_norm_kind norm,
                       const char *scheme) {
  memset(s, 0, sizeof *s);
  s->in_channels = 2, s->in_height = 6, s->in_width = 5, s->classes = 3;
  s->open_width = 3, s->open_kernel = 3, s->open_norm = DYNB_NORM_BATCH, s->open_act = DYNB_ACT_TANH;
  s->nblocks = 2;
  for (int b = 0; b < 2; b++) {
    dynb__block_spec *bs = &s->blocks[b];
    bs->width = 3 + b;
    bs->layer = (dynb__layer){kind, norm, DYNB_ACT_TANH, bs->width, 3};
    assert_true(dynb__tableau_builtin(scheme, &bs->tableau));
    bs->nstates = 3;
    bs->t_states[0] = 0, bs->t_states[1] = 0.4, bs->t_states[2] = 1.0;
    bs->ncontrols = 2;
    bs->t_controls[0] = 0.2, bs->t_controls[1] = 0.9;
  }
  s->connect_norm = DYNB_NORM_BATCH, s->connect_act = DYNB_ACT_LEAKY_RELU;
  s->head_width = 5;
}

/* small_spec's network with σ = `act` in its blocks, over `real`,
 * initialised from `seed`. */
static dynb__net *small_net(dynb_ctx *ctx, dynb_layer_kind kind, dynb_norm_kind norm,
                            const char *scheme, dynb_act act, dynb_dtype real, uint64_t seed) {
  dynb__net_spec s;
  small_spec(&s, kind, norm, scheme);
  for (int b = 0; b < s.nblocks; b++) s.blocks[b].layer.act = act;
  dynb__net *net;
  TU_OK(ctx, dynb__net_create(ctx, &s, real, &net));
  TU_OK(ctx, dynb__net_init(net, seed));
  return net;
}

static void names_follow_the_spec(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb__net_spec s;
  small_spec(&s, DYNB_LAYER_DOUBLE, DYNB_NORM_BATCH, "rk4");
  dynb__net *net;
  TU_OK(ctx, dynb__net_create(ctx, &s, DYNB_F32, &net));
  const char *want[] = {"open.conv.weight", "open.conv.bias", "open.norm.weight", "open.norm.bias",
                        "open.norm.running_mean", "open.norm.running_var",
                        "blocks.0.controls.0.conv1.weight", "blocks.1.controls.1.norm2.bias",
                        "blocks.1.steps.1.stages.3.norm2.running_var",
                        "blocks.0.steps.0.stages.0.norm1.running_mean", "connect.0.conv.weight",
                        "connect.1.norm.running_var", "linear.weight", "linear.bias"};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++)
    if (!dynb__net_find(net, want[i])) fail_msg("no tensor named %s", want[i]);
  assert_null(dynb__net_find(net, "blocks.0.steps.2.stages.0.norm1.running_mean"));
  const dynb__net_tensor *lw = dynb__net_find(net, "linear.weight");
  assert_int_equal(lw->value.dims[0], 3);
  assert_int_equal(lw->value.dims[1], 5);
  const dynb__net_tensor *cw = dynb__net_find(net, "connect.0.conv.weight");
  assert_int_equal(cw->value.dims[0], 4); /* to the next block's width */
  assert_int_equal(cw->value.dims[2], 1);
  /* Initialisation: seeded, weights within ±2σ, scales one, biases zero. */
  TU_OK(ctx, dynb__net_init(net, 42));
  double w[64], again[64], nw[4], rv[4];
  const dynb__net_tensor *ow = dynb__net_find(net, "open.conv.weight");
  size_t n = dynb__tensor_numel(&ow->value);
  tu_download(ctx, &ow->value, w);
  double sigma = sqrt(2.0 / (2 * 9 + 3 * 9));
  bool differ = false;
  for (size_t i = 0; i < n; i++) {
    assert_true(fabs(w[i]) <= 2 * sigma * (1 + 1e-6));
    differ = differ || w[i] != w[0];
  }
  assert_true(differ);
  TU_OK(ctx, dynb__net_init(net, 42));
  tu_download(ctx, &ow->value, again);
  assert_memory_equal(w, again, n * sizeof *w);
  tu_download(ctx, &dynb__net_find(net, "open.norm.weight")->value, nw);
  tu_download(ctx, &dynb__net_find(net, "open.norm.running_var")->value, rv);
  assert_true(nw[0] == 1 && nw[2] == 1 && rv[1] == 1);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
}

/* Loss of the whole network in double, for finite differences. */
typedef struct fd_net {
  dynb_ctx *ctx;
  dynb__net *net;
  dynb__plan *plan;
  const dynb__net_tensor *t;
  double *host;
} fd_net;

static double net_loss(void *user) {
  fd_net *f = user;
  double loss[2];
  tu_write(f->ctx, &f->t->value, f->host);
  TU_OK(f->ctx, dynb__plan_forward(f->plan, true));
  tu_download(f->ctx, dynb__plan_loss(f->plan), loss);
  return loss[0];
}

static double input_loss(void *user) {
  fd_net *f = user;
  double loss[2];
  tu_write(f->ctx, dynb__plan_input(f->plan), f->host);
  TU_OK(f->ctx, dynb__plan_forward(f->plan, true));
  tu_download(f->ctx, dynb__plan_loss(f->plan), loss);
  return loss[0];
}

/* Fills the plan's batch of 4 (random inputs from `seed`, which are
 * returned) and runs one forward and backward in training mode into zeroed
 * gradients, ∂L/∂input included. */
static double *train_step(dynb__net *net, dynb__plan *plan, uint64_t seed, const int32_t *labels) {
  dynb_ctx *ctx = net->ctx;
  tu_rng r = tu_rng_seed(seed);
  double *x = tu_random(&r, dynb__tensor_numel(dynb__plan_input(plan)), -1, 1);
  tu_write(ctx, dynb__plan_input(plan), x);
  TU_OK(ctx, dynb__tensor_write(ctx, dynb__plan_labels(plan), labels));
  TU_OK(ctx, dynb__net_zero_grads(net));
  TU_OK(ctx, dynb__plan_forward(plan, true));
  TU_OK(ctx, dynb__plan_backward(plan, true));
  return x;
}

/* Gradients of the mean loss in training mode (batch statistics) with
 * respect to a sample of every trainable tensor and to the input. Batch
 * norm running statistics change with every forward but do not enter the
 * training-mode loss, so repeated forwards are consistent. */
static void check_network_gradients(dynb_layer_kind kind, dynb_norm_kind norm, const char *scheme) {
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  dynb__net *net = small_net(ctx, kind, norm, scheme, DYNB_ACT_TANH, DYNB_F64, 7);
  dynb__plan *plan;
  TU_OK(ctx, dynb__plan_build(net, 4, DYNB_MEMORY_CHECKPOINT, &plan));
  size_t nin = dynb__tensor_numel(dynb__plan_input(plan));
  const int32_t labels[4] = {0, 2, 1, 2};
  double *x = train_step(net, plan, 11, labels);
  char what[160];
  for (size_t i = 0; i < net->ntensors; i++) {
    const dynb__net_tensor *t = &net->tensors[i];
    if (!t->trainable) continue;
    size_t n = dynb__tensor_numel(&t->value);
    double *v = malloc(n * sizeof *v), *g = malloc(n * sizeof *g);
    tu_download(ctx, &t->value, v);
    tu_download(ctx, &t->grad, g);
    fd_net f = {ctx, net, plan, t, v};
    snprintf(what, sizeof what, "net %s/%s/%s %s", dynb__layer_name(kind), dynb__norm_name(norm),
             scheme, t->name);
    /* double throughout; step 1e-5 leaves truncation ~1e-10 and rounding
     * ~1e-11 on losses of order 1, so 1e-6 is a safe bound. */
    tu_check_gradient(what, net_loss, &f, v, n, g, 1e-5, 1e-6, 6);
    tu_write(ctx, &t->value, v);
    free(v), free(g);
  }
  double *gx = malloc(nin * sizeof *gx);
  tu_download(ctx, dynb__plan_input_grad(plan), gx);
  fd_net f = {ctx, net, plan, NULL, x};
  snprintf(what, sizeof what, "net %s/%s/%s input", dynb__layer_name(kind), dynb__norm_name(norm),
           scheme);
  tu_check_gradient(what, input_loss, &f, x, nin, gx, 1e-5, 1e-6, 24);
  free(x), free(gx);
  dynb__plan_free(plan);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
}

static void gradients_doublesym_tv_rk4(void **state) {
  (void)state;
  check_network_gradients(DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, "rk4");
}
static void gradients_double_batch_euler(void **state) {
  (void)state;
  check_network_gradients(DYNB_LAYER_DOUBLE, DYNB_NORM_BATCH, "euler");
}
static void gradients_preact_none_midpoint(void **state) {
  (void)state;
  check_network_gradients(DYNB_LAYER_PREACT, DYNB_NORM_NONE, "midpoint");
}

/* One training step's loss and gradients (every trainable tensor, in
 * order, then ∂L/∂input) by a fresh plan of the given mode. */
static double *step_results(dynb__net *net, dynb_memory_mode mode, dynb__conv_policy after_build,
                            size_t *count, size_t *bytes) {
  dynb_ctx *ctx = net->ctx;
  dynb__plan *plan;
  TU_OK(ctx, dynb__plan_build(net, 4, mode, &plan));
  *bytes = dynb__plan_bytes(plan);
  dynb__conv_policy built = ctx->conv_policy;
  ctx->conv_policy = after_build;
  size_t nin = dynb__tensor_numel(dynb__plan_input(plan)), total = nin + 1;
  for (size_t i = 0; i < net->ntensors; i++)
    if (net->tensors[i].trainable) total += dynb__tensor_numel(&net->tensors[i].grad);
  double *out = malloc(total * sizeof *out);
  const int32_t labels[4] = {2, 0, 1, 1};
  double *x = train_step(net, plan, 5, labels);
  /* The pass ran by the plan's routes and left the context's policy be. */
  assert_int_equal(ctx->conv_policy, after_build);
  double loss[2];
  tu_download(ctx, dynb__plan_loss(plan), loss);
  out[0] = loss[0];
  size_t at = 1;
  for (size_t i = 0; i < net->ntensors; i++)
    if (net->tensors[i].trainable) {
      tu_download(ctx, &net->tensors[i].grad, out + at);
      at += dynb__tensor_numel(&net->tensors[i].grad);
    }
  tu_download(ctx, dynb__plan_input_grad(plan), out + at);
  *count = total;
  ctx->conv_policy = built;
  dynb__plan_free(plan);
  free(x);
  return out;
}

/* Checkpoint mode recomputes a step's stages in the scratch every block
 * shares (and its g_i in the rows of the adjoints): it must give the store
 * mode's loss and gradients bit for bit, in less memory. A plan keeps the
 * routes it was built with when the context's policy changes afterwards
 * (its scratch is sized for them): the same bits again. */
static void memory_modes_agree_bitwise(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb__net *net =
      small_net(ctx, DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, "rk4", DYNB_ACT_RELU, DYNB_F32, 3);
  ctx->conv_policy = DYNB__CONV_WIDE;
  size_t n_store, n_ckpt, n_moved, b_store, b_ckpt, b_moved;
  double *store = step_results(net, DYNB_MEMORY_STORE, DYNB__CONV_WIDE, &n_store, &b_store);
  double *ckpt = step_results(net, DYNB_MEMORY_CHECKPOINT, DYNB__CONV_WIDE, &n_ckpt, &b_ckpt);
  double *moved = step_results(net, DYNB_MEMORY_CHECKPOINT, DYNB__CONV_GEMM, &n_moved, &b_moved);
  assert_int_equal(n_store, n_ckpt);
  assert_int_equal(n_store, n_moved);
  assert_true(isfinite(store[0]) && store[0] > 0);
  assert_memory_equal(store, ckpt, n_store * sizeof *store);
  assert_memory_equal(store, moved, n_store * sizeof *store);
  assert_true(b_ckpt < b_store);
  free(store), free(ckpt), free(moved);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
}

/* A checkpoint loaded into a context that has already chosen its
 * convolution routes, and built a plan on them, leaves those choices be:
 * the plan's scratch is sized for its routes, and the checkpoint's could
 * need more. The checkpoint here says im2col + GEMM (the most work) for
 * every shape; the plan was sized for the timed routes, which on this kind
 * of device are direct kernels for some shape. */
static void loaded_routes_keep_built_plans(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  ctx->conv_policy = DYNB__CONV_AUTO;
  dynb__net *net =
      small_net(ctx, DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, "rk4", DYNB_ACT_TANH, DYNB_F32, 3);
  dynb__plan *plan;
  TU_OK(ctx, dynb__plan_build(net, 4, DYNB_MEMORY_CHECKPOINT, &plan));
  size_t n = ctx->nchoices;
  assert_true(n > 0);
  int *timed = malloc(n * sizeof *timed);
  bool direct = false;
  for (size_t i = 0; i < n; i++) timed[i] = ctx->choices[i].value, direct |= timed[i] != 0;
  const int32_t labels[4] = {2, 0, 1, 1};
  double loss[2][2];
  free(train_step(net, plan, 5, labels));
  tu_download(ctx, dynb__plan_loss(plan), loss[0]);

  char path[] = "/tmp/dynb-net-ckptXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  for (size_t i = 0; i < n; i++) ctx->choices[i].value = 0;
  dynb__train_state ts = {.epoch = 1, .rng = 9, .best = INFINITY};
  TU_OK(ctx, dynb__model_save(net, path, NULL, &ts));
  for (size_t i = 0; i < n; i++) ctx->choices[i].value = timed[i];
  dynb__net *loaded;
  dynb__train_state got;
  TU_OK(ctx, dynb__model_load(ctx, path, DYNB_F32, &loaded, &got));
  unlink(path);
  assert_int_equal(got.epoch, 1);
  assert_int_equal(ctx->nchoices, n);
  for (size_t i = 0; i < n; i++) assert_int_equal(ctx->choices[i].value, timed[i]);

  /* The plan still runs, by its routes: the same bits as before. */
  free(train_step(net, plan, 5, labels));
  tu_download(ctx, dynb__plan_loss(plan), loss[1]);
  assert_memory_equal(loss[0], loss[1], sizeof loss[0]);
  dynb__net_free(loaded);
  dynb__plan_free(plan);
  dynb__net_free(net);
  free(timed);
  dynb_ctx_free(ctx);
  /* Where timing chose GEMM everywhere the checkpoint asked for nothing
   * new and the test above could not have failed: say so. */
  if (!direct) skip();
}

/* Folding the opening and connecting batch norms into their convolutions
 * leaves the evaluation-mode logits unchanged (to rounding, in double). */
static void folding_batch_norms_keeps_eval_logits(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  dynb__net *net =
      small_net(ctx, DYNB_LAYER_DOUBLE, DYNB_NORM_BATCH, "rk4", DYNB_ACT_TANH, DYNB_F64, 5);
  dynb__plan *plan;
  TU_OK(ctx, dynb__plan_build(net, 4, DYNB_MEMORY_STORE, &plan));
  tu_rng r = tu_rng_seed(21);
  size_t nin = dynb__tensor_numel(dynb__plan_input(plan));
  double *x = tu_random(&r, nin, -1, 2), before[12], after[12];
  tu_write(ctx, dynb__plan_input(plan), x);
  /* Training-mode passes move the running statistics away from (0, 1). */
  for (int i = 0; i < 5; i++) TU_OK(ctx, dynb__plan_forward(plan, true));
  TU_OK(ctx, dynb__plan_forward(plan, false));
  tu_download(ctx, dynb__plan_logits(plan), before);
  size_t tensors = net->ntensors;
  dynb__plan_free(plan);
  TU_OK(ctx, dynb__net_fold_batch_norms(net));
  assert_int_equal(net->spec.open_norm, DYNB_NORM_NONE);
  assert_null(dynb__net_find(net, "open.norm.running_var"));
  assert_null(dynb__net_find(net, "connect.1.norm.weight"));
  assert_non_null(dynb__net_find(net, "blocks.0.steps.0.stages.0.norm1.running_mean"));
  assert_int_equal(net->ntensors, tensors - 4 * 3);
  TU_OK(ctx, dynb__plan_build(net, 4, DYNB_MEMORY_STORE, &plan));
  tu_write(ctx, dynb__plan_input(plan), x);
  TU_OK(ctx, dynb__plan_forward(plan, false));
  tu_download(ctx, dynb__plan_logits(plan), after);
  /* Folding reorders a handful of double operations per output. */
  tu_assert_close("folded eval logits", after, before, 12, 1e-11, 1e-11);
  free(x);
  dynb__plan_free(plan);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(names_follow_the_spec),
      cmocka_unit_test(gradients_doublesym_tv_rk4),
      cmocka_unit_test(gradients_double_batch_euler),
      cmocka_unit_test(gradients_preact_none_midpoint),
      cmocka_unit_test(memory_modes_agree_bitwise),
      cmocka_unit_test(loaded_routes_keep_built_plans),
      cmocka_unit_test(folding_batch_norms_keeps_eval_logits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
