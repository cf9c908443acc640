/* The divergence check of a training step (src/train/health.c): finite
 * steps pass and report the loss; a NaN or Inf loss or gradient stops with
 * a message naming it (by SPEC name, element, epoch and step), the first
 * in the network's tensor order; a sum that overflows from finite values
 * is no divergence. */
#include <math.h>

#include "testutil.h"
#include "plan/plan.h"
#include "train/train.h"

typedef struct fixture {
  dynb_ctx *ctx;
  dynb__net *net;
  dynb__plan *plan;
  dynb__health *health;
} fixture;

static void setup(fixture *f) {
  static dynb__net_spec s;
  memset(f, 0, sizeof *f);
  f->ctx = tu_ctx();
  memset(&s, 0, sizeof s);
  s.in_channels = 1, s.in_height = 5, s.in_width = 4, s.classes = 3;
  s.open_width = 2, s.open_kernel = 3, s.open_norm = DYNB_NORM_BATCH, s.open_act = DYNB_ACT_RELU;
  s.nblocks = 2;
  for (int b = 0; b < 2; b++) {
    dynb__block_spec *bs = &s.blocks[b];
    bs->width = 2;
    bs->layer = (dynb__layer){DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, DYNB_ACT_RELU, 2, 3};
    assert_true(dynb__tableau_builtin("euler", &bs->tableau));
    bs->nstates = 3, bs->t_states[1] = 1, bs->t_states[2] = 2;
    bs->ncontrols = 3, bs->t_controls[1] = 1, bs->t_controls[2] = 2;
  }
  s.connect_norm = DYNB_NORM_BATCH, s.connect_act = DYNB_ACT_RELU;
  s.head_width = 2;
  TU_OK(f->ctx, dynb__net_create(f->ctx, &s, DYNB_F32, &f->net));
  TU_OK(f->ctx, dynb__net_init(f->net, 3));
  TU_OK(f->ctx, dynb__plan_build(f->net, 2, DYNB_MEMORY_STORE, &f->plan));
  TU_OK(f->ctx, dynb__health_create(f->net, dynb__plan_loss(f->plan), &f->health));
  tu_rng r = tu_rng_seed(5);
  double x[2 * 20];
  tu_fill(&r, x, 40, -1, 1);
  tu_write(f->ctx, dynb__plan_input(f->plan), x);
  int32_t y[2] = {1, 2};
  TU_OK(f->ctx, dynb__tensor_write(f->ctx, dynb__plan_labels(f->plan), y));
  TU_OK(f->ctx, dynb__net_zero_grads(f->net));
  TU_OK(f->ctx, dynb__plan_forward(f->plan, true));
  TU_OK(f->ctx, dynb__plan_backward(f->plan, false));
}

static void teardown(fixture *f) {
  dynb__health_free(f->health);
  dynb__plan_free(f->plan);
  dynb__net_free(f->net);
  dynb_ctx_free(f->ctx);
}

/* Sets element i of a tensor (a view, possibly) to v. */
static void poke(fixture *f, const dynb__tensor *t, size_t i, double v) {
  size_t n = dynb__tensor_numel(t);
  double *h = malloc(n * sizeof *h);
  assert_non_null(h);
  tu_download(f->ctx, t, h);
  h[i] = v;
  tu_write(f->ctx, t, h);
  free(h);
}

static const dynb__tensor *grad(fixture *f, const char *name) {
  const dynb__net_tensor *t = dynb__net_find(f->net, name);
  if (!t) fail_msg("no tensor %s", name);
  return &t->grad;
}

static void expect_divergence(fixture *f, const char *needle) {
  double out[2];
  TU_EXPECT_STATUS(f->ctx, dynb__health_check(f->health, 4, 17, out), DYNB_STATUS_NON_FINITE);
  const char *msg = dynb_ctx_last_error(f->ctx);
  if (!strstr(msg, needle)) fail_msg("message '%s' lacks '%s'", msg, needle);
  assert_non_null(strstr(msg, "epoch 4, step 17"));
}

static void finite_step_passes_and_reports_the_loss(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  double out[2], want[2];
  TU_OK(f.ctx, dynb__health_check(f.health, 0, 0, out));
  tu_download(f.ctx, dynb__plan_loss(f.plan), want);
  assert_true(out[0] == want[0] && out[1] == want[1]);
  assert_true(isfinite(out[0]) && out[0] > 0);
  teardown(&f);
}

static void nan_in_a_control_gradient_is_named(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  poke(&f, grad(&f, "blocks.1.controls.2.conv.weight"), 3, NAN);
  expect_divergence(&f, "grad.blocks.1.controls.2.conv.weight[3] is nan");
  teardown(&f);
}

/* Every trainable tensor's gradient is watched: NaN in each, in turn. */
static void every_gradient_is_checked(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  int checked = 0;
  for (size_t i = 0; i < f.net->ntensors; i++) {
    const dynb__net_tensor *t = &f.net->tensors[i];
    if (!t->trainable) continue;
    size_t last = dynb__tensor_numel(&t->grad) - 1;
    double keep;
    dynb__tensor one = dynb__tensor_sub(&t->grad, last, 1, (int64_t[]){1});
    tu_download(f.ctx, &one, &keep);
    poke(&f, &t->grad, last, NAN);
    char needle[160];
    snprintf(needle, sizeof needle, "grad.%s[%zu] is nan", t->name, last);
    expect_divergence(&f, needle);
    poke(&f, &t->grad, last, keep);
    checked++;
  }
  double out[2];
  TU_OK(f.ctx, dynb__health_check(f.health, 0, 0, out));
  assert_true(checked > 20);
  teardown(&f);
}

static void the_first_bad_tensor_in_order_is_named(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  poke(&f, grad(&f, "linear.bias"), 1, NAN);
  poke(&f, grad(&f, "connect.0.norm.weight"), 0, -INFINITY);
  expect_divergence(&f, "grad.connect.0.norm.weight[0] is -inf");
  teardown(&f);
}

static void nan_loss_is_named(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  poke(&f, dynb__plan_loss(f.plan), 0, NAN);
  expect_divergence(&f, "the loss is nan");
  teardown(&f);
}

/* Two finite f32 values whose sum overflows: the device sum says Inf, the
 * host finds every element finite, and the step goes on. */
static void overflowing_sum_of_finite_values_passes(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  const dynb__tensor *g = grad(&f, "linear.weight");
  poke(&f, g, 0, 3e38);
  poke(&f, g, 1, 3e38);
  double out[2], want[2];
  /* Each value is finite, so the check passes although its sum overflows,
   * and it still reports the step's loss. */
  TU_OK(f.ctx, dynb__health_check(f.health, 0, 0, out));
  tu_download(f.ctx, dynb__plan_loss(f.plan), want);
  assert_true(out[0] == want[0] && out[1] == want[1]);
  teardown(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(finite_step_passes_and_reports_the_loss),
      cmocka_unit_test(nan_in_a_control_gradient_is_named),
      cmocka_unit_test(every_gradient_is_checked),
      cmocka_unit_test(the_first_bad_tensor_in_order_is_named),
      cmocka_unit_test(nan_loss_is_named),
      cmocka_unit_test(overflowing_sum_of_finite_values_passes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
