/* Fault injection (SQLite's anomaly loops): the k-th host allocation, device
 * buffer creation or program build fails, for k = 1, 2, ... until a run
 * meets no fault, over (a) building a small network, its plan, optimiser
 * and time regularisation, and (b) one training step on a fresh context
 * (so the step's kernels are built then). Every failure must return the
 * fault's status with a message, leave no host block and no device buffer
 * behind (counted here; LeakSanitizer checks the rest in the ASan suite),
 * and leave the context usable: the same work then succeeds.
 *
 * Program builds are counted where a build is requested
 * (dynb__program_build), before the on-disk binary cache is consulted, so
 * the test's shared cache keeps the sweep fast without skipping builds. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>

#include "testutil.h"
#include "plan/plan.h"
#include "train/train.h"

static dynb_ctx *fresh_ctx(size_t *blocks) {
  /* No tuning cache (tu_ctx_desc): every world times its convolution
   * routes (and so builds their kernels) while building, as a first run does. */
  dynb_ctx_desc d = tu_ctx_desc();
  d.allocator = (dynb_allocator){tu_count_alloc, tu_count_free, blocks};
  dynb_ctx *ctx = tu_ctx_create(&d);
  /* Tracking starts here, before any buffer: a disarmed fault. */
  dynb__ctx_inject_fault(ctx, DYNB__FAULT_ALLOC, 0);
  return ctx;
}

/* A small network with every kind of tensor: batch norms outside blocks,
 * batch norms inside a block, time-dependent controls and a time
 * regulariser. */
static void tiny_spec(dynb__net_spec *s) {
  memset(s, 0, sizeof *s);
  s->in_channels = 1, s->in_height = 6, s->in_width = 5, s->classes = 3;
  s->open_width = 2, s->open_kernel = 3, s->open_norm = DYNB_NORM_BATCH, s->open_act = DYNB_ACT_RELU;
  s->nblocks = 2;
  for (int b = 0; b < 2; b++) {
    dynb__block_spec *bs = &s->blocks[b];
    bs->width = 2 + b;
    bs->layer = (dynb__layer){b ? DYNB_LAYER_DOUBLESYM : DYNB_LAYER_PREACT,
                              b ? DYNB_NORM_TV : DYNB_NORM_BATCH, DYNB_ACT_RELU, bs->width, 3};
    assert_true(dynb__tableau_builtin(b ? "rk4" : "euler", &bs->tableau));
    bs->nstates = 3;
    bs->t_states[0] = 0, bs->t_states[1] = 0.5, bs->t_states[2] = 1;
    bs->ncontrols = 2;
    bs->t_controls[0] = 0, bs->t_controls[1] = 1;
  }
  s->connect_norm = DYNB_NORM_BATCH, s->connect_act = DYNB_ACT_RELU;
  s->head_width = 3;
  s->time_reg = 0.01;
}

typedef struct world {
  dynb_ctx *ctx;
  size_t blocks; /* live host blocks of ctx's allocator */
  dynb__net *net;
  dynb__plan *plan;
  dynb__optimizer *opt;
  dynb__timereg *reg;
  dynb__tensor reg_value;
} world;

enum { BATCH = 2 };

static dynb_status build(world *w) {
  static dynb__net_spec spec;
  tiny_spec(&spec);
  dynb__optim_desc od = dynb__optim_desc_default();
  int64_t one = 1;
  DYNB_TRY(dynb__net_create(w->ctx, &spec, DYNB_F32, &w->net));
  DYNB_TRY(dynb__net_init(w->net, 7));
  DYNB_TRY(dynb__plan_build(w->net, BATCH, DYNB_MEMORY_CHECKPOINT, &w->plan));
  DYNB_TRY(dynb__optimizer_create(w->net, &od, &w->opt));
  DYNB_TRY(dynb__timereg_create(w->net, &w->reg));
  DYNB_TRY(dynb__tensor_alloc(w->ctx, DYNB_F32, 1, &one, &w->reg_value));
  float x[BATCH * 30];
  int32_t y[BATCH] = {0, 2};
  for (int i = 0; i < BATCH * 30; i++) x[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
  DYNB_TRY(dynb__tensor_write(w->ctx, dynb__plan_input(w->plan), x));
  return dynb__tensor_write(w->ctx, dynb__plan_labels(w->plan), y);
}

/* Forward, time regularisation, backward, optimiser step, loss read back. */
static dynb_status step(world *w) {
  double loss[2];
  DYNB_TRY(dynb__net_zero_grads(w->net));
  DYNB_TRY(dynb__plan_forward(w->plan, true));
  DYNB_TRY(dynb__timereg_apply(w->reg, &w->reg_value));
  DYNB_TRY(dynb__plan_backward(w->plan, false));
  DYNB_TRY(dynb__optimizer_step(w->opt, 0.05));
  DYNB_TRY(dynb__tensor_read_f64(w->ctx, dynb__plan_loss(w->plan), loss));
  return isfinite(loss[0]) ? DYNB_OK : dynb__fail(w->ctx, DYNB_STATUS_NON_FINITE, "loss %g", loss[0]);
}

/* Frees everything made from the context, checks that nothing is left. */
static void release(world *w) {
  dynb__tensor_release(&w->reg_value);
  dynb__timereg_free(w->reg);
  dynb__optimizer_free(w->opt);
  dynb__plan_free(w->plan);
  dynb__net_free(w->net);
  w->reg = NULL, w->opt = NULL, w->plan = NULL, w->net = NULL;
  size_t live = tu_live_buffers_settled(w->ctx);
  if (live != 0) fail_msg("%zu device buffers leaked", live);
}

static void open_world(world *w) {
  memset(w, 0, sizeof *w);
  w->ctx = fresh_ctx(&w->blocks);
}

static void close_world(world *w) {
  release(w);
  dynb_ctx_free(w->ctx);
  if (w->blocks != 0) fail_msg("%zu host blocks leaked", w->blocks);
}

static const dynb_status expected[DYNB__FAULT_KINDS] = {
    DYNB_STATUS_OUT_OF_HOST_MEMORY, DYNB_STATUS_OUT_OF_DEVICE_MEMORY, DYNB_STATUS_BUILD_FAILED};
static const char *const kind_names[DYNB__FAULT_KINDS] = {"host allocation", "device buffer",
                                                          "program build"};

/* Faults that a best-effort path absorbed: the program binary cache reads
 * and writes through host buffers, and a failure there means building from
 * source or not caching, not failing the run. */
static uint64_t absorbed;

/* A run that met the fault: either it failed with the fault's status and a
 * message, or a best-effort path absorbed it and the run succeeded. (Then,
 * with the fault disarmed, the context does the same work again.) */
static void check_failure(world *w, dynb__fault_kind kind, uint64_t k, dynb_status st,
                          const char *phase) {
  if (st == DYNB_OK) {
    absorbed++;
  } else if (st != expected[kind]) {
    fail_msg("%s: %s %llu: status %s, expected %s (%s)", phase, kind_names[kind],
             (unsigned long long)k, dynb_status_name(st), dynb_status_name(expected[kind]),
             dynb_ctx_last_error(w->ctx));
  } else {
    assert_true(strlen(dynb_ctx_last_error(w->ctx)) > 0);
  }
}

/* Fails event k = 1, 2, ... of `kind` while building (in_step false) or in
 * the first step after an unarmed build, until a run meets no fault;
 * returns how many events there were. */
static uint64_t sweep(dynb__fault_kind kind, bool in_step) {
  const char *phase = in_step ? "training step" : "building";
  for (uint64_t k = 1; k < 100000; k++) {
    world w;
    open_world(&w);
    if (in_step) TU_OK(w.ctx, build(&w));
    dynb__ctx_inject_fault(w.ctx, kind, k);
    dynb_status st = in_step ? step(&w) : build(&w);
    bool fired = dynb__ctx_fault_fired(w.ctx, kind);
    dynb__ctx_inject_fault(w.ctx, kind, 0);
    if (fired) {
      check_failure(&w, kind, k, st, phase);
      if (!in_step) {
        release(&w);
        TU_OK(w.ctx, build(&w));
      }
    } else {
      TU_OK(w.ctx, st);
    }
    TU_OK(w.ctx, step(&w));
    close_world(&w);
    if (!fired) {
      printf("fault sweep: %s: %llu %s events failed one at a time (%llu absorbed)\n", phase,
             (unsigned long long)(k - 1), kind_names[kind], (unsigned long long)absorbed);
      return k - 1;
    }
  }
  fail_msg("sweep did not end");
  return 0;
}

static void faults_while_building(void **state) {
  (void)state;
  for (int kind = 0; kind < DYNB__FAULT_KINDS; kind++) {
    absorbed = 0;
    /* Building allocates host blocks and buffers and builds the
     * convolution kernels (timed routes), so every kind occurs. */
    assert_true(sweep((dynb__fault_kind)kind, false) > 0);
  }
}

static void faults_in_a_training_step(void **state) {
  (void)state;
  for (int kind = 0; kind < DYNB__FAULT_KINDS; kind++) {
    absorbed = 0;
    uint64_t n = sweep((dynb__fault_kind)kind, true);
    /* A step allocates no buffer; its first run builds the kernels the
     * plan did not (and their kernel tables). */
    if (kind == DYNB__FAULT_BUFFER)
      assert_int_equal(n, 0);
    else
      assert_true(n > 0);
  }
}

/* The hook itself: exactly the k-th event fails, once. */
static void hook_fails_the_kth_event_once(void **state) {
  (void)state;
  size_t blocks = 0;
  dynb_ctx *ctx = fresh_ctx(&blocks);
  dynb__ctx_inject_fault(ctx, DYNB__FAULT_ALLOC, 3);
  void *p[5];
  for (int i = 0; i < 5; i++) p[i] = dynb__alloc(ctx, 8);
  assert_non_null(p[0]), assert_non_null(p[1]), assert_null(p[2]);
  assert_non_null(p[3]), assert_non_null(p[4]);
  assert_true(dynb__ctx_fault_fired(ctx, DYNB__FAULT_ALLOC));
  for (int i = 0; i < 5; i++) dynb__free(ctx, p[i]);
  dynb__ctx_inject_fault(ctx, DYNB__FAULT_BUFFER, 1);
  int64_t four = 4;
  dynb__tensor t;
  TU_EXPECT_STATUS(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 1, &four, &t),
                   DYNB_STATUS_OUT_OF_DEVICE_MEMORY);
  assert_null(t.mem);
  TU_OK(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 1, &four, &t));
  assert_int_equal(dynb__ctx_live_buffers(ctx), 1);
  dynb__tensor_release(&t);
  TU_OK(ctx, dynb__finish(ctx));
  assert_int_equal(dynb__ctx_live_buffers(ctx), 0);
  dynb_ctx_free(ctx);
  assert_int_equal(blocks, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hook_fails_the_kth_event_once),
      cmocka_unit_test(faults_while_building),
      cmocka_unit_test(faults_in_a_training_step),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
