/* The public API (include/dynblocks): every call, its misuse (NULL handles,
 * wrong shapes and types, unknown names, wrong call order) with a status and
 * a message, a training loop on synthetic data whose loss falls, save/load
 * giving bit-identical logits, the caller's own OpenCL objects, and results
 * bitwise equal to the internal modules driven directly. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <unistd.h>

#include "api_fixture.h"
#include "dynblocks/cl.h"
#include "testutil.h"
#include "train/train.h"

#define SPEC AF_SPEC
#define B AF_BATCH
#define PIX AF_PIXELS

static dynb_ctx *api_ctx(void) {
  dynb_ctx *ctx = tu_ctx();
  /* One route everywhere: the timed choice could differ between contexts. */
  TU_OK(ctx, dynb_ctx_set_param(ctx, DYNB_PARAM_CONV_ROUTE, DYNB_CONV_GEMM));
  return ctx;
}

typedef struct rig {
  dynb_ctx *ctx;
  dynb_net *net;
  dynb_plan *plan;
  dynb_tensor *x, *y, *logits;
} rig;

static void rig_open(rig *g, dynb_ctx *ctx, uint64_t seed) {
  memset(g, 0, sizeof *g);
  g->ctx = ctx;
  int64_t xd[4] = {B, 1, 8, 8}, yd[1] = {B}, zd[2] = {B, 2};
  TU_OK(ctx, dynb_net_create(ctx, SPEC, DYNB_F32, seed, &g->net));
  TU_OK(ctx, dynb_plan_build(g->net, B, DYNB_MEMORY_STORE, &g->plan));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F32, 4, xd, &g->x));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_I32, 1, yd, &g->y));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F32, 2, zd, &g->logits));
}

static void rig_upload(rig *g, uint64_t seed) {
  float x[B * PIX];
  int32_t y[B];
  af_make_batch(seed, x, y);
  TU_OK(g->ctx, dynb_tensor_write(g->x, x, sizeof x));
  TU_OK(g->ctx, dynb_tensor_write(g->y, y, sizeof y));
}

/* One training step on batch `seed`; the loss of its forward pass. */
static double rig_step(rig *g, dynb_optimizer *opt, uint64_t seed) {
  double loss;
  rig_upload(g, seed);
  TU_OK(g->ctx, dynb_plan_forward(g->plan, g->x, g->y, DYNB_PASS_TRAIN));
  TU_OK(g->ctx, dynb_plan_loss(g->plan, &loss, NULL));
  TU_OK(g->ctx, dynb_plan_backward(g->plan, NULL));
  TU_OK(g->ctx, dynb_optimizer_step(opt));
  return loss;
}

static void rig_close(rig *g) {
  dynb_tensor_free(g->x);
  dynb_tensor_free(g->y);
  dynb_tensor_free(g->logits);
  dynb_plan_free(g->plan);
  dynb_net_free(g->net);
}

static void version_matches_header(void **state) {
  (void)state;
  assert_int_equal(dynb_version_number(), DYNB_VERSION_NUMBER);
  assert_string_equal(dynb_version_string(), DYNB_VERSION_STRING);
}

/* Every call refuses NULL handles with MISUSE; every free accepts NULL. */
static void null_handles_are_misuse(void **state) {
  (void)state;
  double d;
  int64_t v, dims[4];
  size_t n;
  const char *name;
  float f[1];
  assert_int_equal(dynb_ctx_finish(NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_ctx_set_param(NULL, DYNB_PARAM_CONV_ROUTE, 0), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_ctx_get_param(NULL, DYNB_PARAM_CONV_ROUTE, &v), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_ctx_last_status(NULL), DYNB_STATUS_MISUSE);
  assert_non_null(dynb_ctx_last_error(NULL));
  assert_int_equal(dynb_tensor_create(NULL, DYNB_F32, 1, dims, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_tensor_wrap_cl(NULL, NULL, 0, DYNB_F32, 1, dims, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_tensor_shape(NULL, NULL, NULL, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_tensor_cl_mem(NULL, NULL, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_tensor_write(NULL, f, 4), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_tensor_read(NULL, f, 4), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_create(NULL, SPEC, DYNB_F32, 1, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_create_from_file(NULL, "x", DYNB_F32, 1, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_load(NULL, "x", DYNB_F32, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_save(NULL, "x"), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_init(NULL, 1), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_shape(NULL, NULL, NULL, NULL, NULL, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_param_count(NULL, &n), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_param_name(NULL, 0, &name), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_param_info(NULL, "a", NULL, NULL, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_param_get(NULL, "a", DYNB_F32, f, 1), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_param_set(NULL, "a", DYNB_F32, f, 1), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_net_grad_get(NULL, "a", DYNB_F32, f, 1), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_plan_build(NULL, 1, DYNB_MEMORY_STORE, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_plan_forward(NULL, NULL, NULL, DYNB_PASS_EVAL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_plan_logits(NULL, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_plan_loss(NULL, &d, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_plan_backward(NULL, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_plan_bytes(NULL, &n), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_optimizer_create(NULL, DYNB_OPTIM_SGD, NULL), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_optimizer_set(NULL, DYNB_OPTIM_LR, 1), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_optimizer_get(NULL, DYNB_OPTIM_LR, &d), DYNB_STATUS_MISUSE);
  assert_int_equal(dynb_optimizer_step(NULL), DYNB_STATUS_MISUSE);
  assert_null(dynb_ctx_cl_queue(NULL));
  assert_null(dynb_ctx_cl_context(NULL));
  dynb_tensor_free(NULL);
  dynb_net_free(NULL);
  dynb_plan_free(NULL);
  dynb_optimizer_free(NULL);
  dynb_ctx_free(NULL);
}

static void context_params_and_log(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t v, lo, hi;
  TU_OK(ctx, dynb_ctx_get_param(ctx, DYNB_PARAM_CONV_ROUTE, &v));
  assert_int_equal(v, DYNB_CONV_AUTO);
  TU_OK(ctx, dynb_param_bounds(DYNB_PARAM_CONV_ROUTE, &lo, &hi));
  assert_int_equal(lo, DYNB_CONV_AUTO);
  assert_int_equal(hi, DYNB_CONV_WIDE2);
  TU_OK(ctx, dynb_ctx_set_param(ctx, DYNB_PARAM_CONV_ROUTE, DYNB_CONV_ROW));
  TU_OK(ctx, dynb_ctx_get_param(ctx, DYNB_PARAM_CONV_ROUTE, &v));
  assert_int_equal(v, DYNB_CONV_ROW);
  TU_EXPECT_STATUS(ctx, dynb_ctx_set_param(ctx, DYNB_PARAM_CONV_ROUTE, 5),
                   DYNB_STATUS_PARAM_OUT_OF_BOUND);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "outside [0, 4]"));
  TU_EXPECT_STATUS(ctx, dynb_ctx_set_param(ctx, (dynb_param)12345, 0),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(dynb_param_bounds((dynb_param)12345, &lo, &hi), DYNB_STATUS_INVALID_ARGUMENT);
  /* A refused value leaves the parameter as it was. */
  TU_OK(ctx, dynb_ctx_get_param(ctx, DYNB_PARAM_CONV_ROUTE, &v));
  assert_int_equal(v, DYNB_CONV_ROW);
  TU_OK(ctx, dynb_ctx_finish(ctx));
  dynb_ctx_free(ctx);
}

/* The log callback sees failures; nothing is printed by the library. */
typedef struct log_seen {
  int calls;
  char last[512];
} log_seen;
static void on_log(void *user, dynb_log_level level, const char *msg) {
  log_seen *s = user;
  (void)level;
  s->calls++;
  snprintf(s->last, sizeof s->last, "%s", msg);
}

static void log_callback_receives_failures(void **state) {
  (void)state;
  log_seen seen = {0, ""};
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.device = getenv("DYNB_TEST_DEVICE");
  d.cache_dir = getenv("DYNB_TEST_CACHE_DIR") ? getenv("DYNB_TEST_CACHE_DIR") : "";
  d.log_fn = on_log;
  d.log_user = &seen;
  dynb_ctx *ctx = NULL;
  if (dynb_ctx_create(&d, &ctx) == DYNB_STATUS_NO_DEVICE) {
    dynb_ctx_free(ctx);
    skip();
  }
  int before = seen.calls;
  dynb_net *net = NULL;
  TU_EXPECT_STATUS(ctx, dynb_net_create(ctx, "{\"classes\": 2}", DYNB_F32, 1, &net),
                   DYNB_STATUS_SPEC_ERROR);
  assert_null(net);
  assert_true(seen.calls > before);
  assert_non_null(strstr(seen.last, "DYNB_STATUS_SPEC_ERROR"));
  dynb_ctx_free(ctx);
}

static void tensors_create_read_write(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t dims[3] = {2, 3, 5}, got[4];
  dynb_tensor *t = NULL;
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F64, 3, dims, &t));
  dynb_dtype dt;
  int nd;
  TU_OK(ctx, dynb_tensor_shape(t, &dt, &nd, got));
  assert_int_equal(dt, DYNB_F64);
  assert_int_equal(nd, 3);
  assert_true(got[0] == 2 && got[1] == 3 && got[2] == 5 && got[3] == 0);
  double in[30], out[30];
  TU_OK(ctx, dynb_tensor_read(t, out, sizeof out));
  for (int i = 0; i < 30; i++) assert_true(out[i] == 0.0); /* created zero */
  for (int i = 0; i < 30; i++) in[i] = i * 0.25 - 3;
  TU_OK(ctx, dynb_tensor_write(t, in, sizeof in));
  TU_OK(ctx, dynb_tensor_read(t, out, sizeof out));
  assert_memory_equal(in, out, sizeof in);
  /* A float-sized buffer for a double tensor is caught by the byte count. */
  float small[30];
  TU_EXPECT_STATUS(ctx, dynb_tensor_write(t, small, sizeof small), DYNB_STATUS_SHAPE_MISMATCH);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "120 bytes given"));
  TU_EXPECT_STATUS(ctx, dynb_tensor_read(t, NULL, sizeof out), DYNB_STATUS_INVALID_ARGUMENT);
  dynb_tensor_free(t);
  dynb_tensor *bad = (dynb_tensor *)1;
  int64_t zero[2] = {3, 0};
  TU_EXPECT_STATUS(ctx, dynb_tensor_create(ctx, DYNB_F32, 2, zero, &bad),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_null(bad);
  TU_EXPECT_STATUS(ctx, dynb_tensor_create(ctx, DYNB_F32, 5, dims, &bad),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_tensor_create(ctx, (dynb_dtype)7, 1, dims, &bad),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_tensor_create(ctx, DYNB_F32, 1, NULL, &bad),
                   DYNB_STATUS_INVALID_ARGUMENT);
  dynb_ctx_free(ctx);
}

/* Wrapping: the caller's buffer at an element offset, size and context
 * checks, and the buffer surviving the caller's release. */
static void tensors_wrap_caller_buffers(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  cl_int e;
  cl_mem mem = clCreateBuffer(dynb_ctx_cl_context(ctx), CL_MEM_READ_WRITE, 40 * sizeof(float),
                              NULL, &e);
  assert_int_equal(e, CL_SUCCESS);
  float host[40];
  for (int i = 0; i < 40; i++) host[i] = (float)i;
  assert_int_equal(clEnqueueWriteBuffer(dynb_ctx_cl_queue(ctx), mem, CL_TRUE, 0, sizeof host,
                                        host, 0, NULL, NULL), CL_SUCCESS);
  int64_t dims[2] = {3, 4};
  dynb_tensor *t = NULL;
  TU_OK(ctx, dynb_tensor_wrap_cl(ctx, mem, 28, DYNB_F32, 2, dims, &t));
  clReleaseMemObject(mem); /* the tensor keeps its own reference */
  float got[12];
  TU_OK(ctx, dynb_tensor_read(t, got, sizeof got));
  for (int i = 0; i < 12; i++) assert_true(got[i] == (float)(28 + i));
  cl_mem back;
  size_t off;
  TU_OK(ctx, dynb_tensor_cl_mem(t, &back, &off));
  assert_ptr_equal(back, mem);
  assert_int_equal(off, 28);
  dynb_tensor *bad = NULL;
  TU_EXPECT_STATUS(ctx, dynb_tensor_wrap_cl(ctx, mem, 29, DYNB_F32, 2, dims, &bad),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_OK(ctx, dynb_tensor_wrap_cl(ctx, mem, 0, DYNB_F64, 2, dims, &bad)); /* 96 of 160 bytes */
  dynb_tensor_free(bad);
  int64_t big[2] = {6, 4};
  TU_EXPECT_STATUS(ctx, dynb_tensor_wrap_cl(ctx, mem, 0, DYNB_F64, 2, big, &bad),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb_tensor_wrap_cl(ctx, NULL, 0, DYNB_F32, 2, dims, &bad),
                   DYNB_STATUS_INVALID_ARGUMENT);
  /* A buffer of another OpenCL context is refused by name. */
  dynb_ctx *other = tu_ctx();
  cl_mem foreign = clCreateBuffer(dynb_ctx_cl_context(other), CL_MEM_READ_WRITE, 64, NULL, &e);
  TU_EXPECT_STATUS(ctx, dynb_tensor_wrap_cl(ctx, foreign, 0, DYNB_F32, 2, dims, &bad),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "another cl_context"));
  assert_null(bad);
  clReleaseMemObject(foreign);
  dynb_ctx_free(other);
  dynb_tensor_free(t);
  dynb_ctx_free(ctx);
}

static void networks_from_specs_and_files(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb_net *net = NULL;
  TU_OK(ctx, dynb_net_create(ctx, SPEC, DYNB_F32, 3, &net));
  int64_t c, h, w, k;
  dynb_dtype real;
  TU_OK(ctx, dynb_net_shape(net, &c, &h, &w, &k, &real));
  assert_true(c == 1 && h == 8 && w == 8 && k == 2 && real == DYNB_F32);
  dynb_net_free(net);
  /* Spec errors name the key. */
  net = (dynb_net *)1;
  TU_EXPECT_STATUS(ctx, dynb_net_create(ctx, "{\"input\": {\"channels\": 1, \"height\": 8, "
                                             "\"width\": 8}, \"classes\": 2, \"blocks\": "
                                             "[{\"width\": 4, \"t_states\": [0, 1], \"bogus\": 1}]}",
                                        DYNB_F32, 1, &net),
                   DYNB_STATUS_SPEC_ERROR);
  assert_null(net);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "blocks[0].bogus"));
  TU_EXPECT_STATUS(ctx, dynb_net_create(ctx, NULL, DYNB_F32, 1, &net), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_net_create(ctx, SPEC, DYNB_I32, 1, &net), DYNB_STATUS_INVALID_ARGUMENT);
  /* From a file: the same network as from the string; the file is named in errors. */
  char path[] = "/tmp/dynb_api_specXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, SPEC, strlen(SPEC)), (ssize_t)strlen(SPEC));
  close(fd);
  dynb_net *a = NULL, *b = NULL;
  TU_OK(ctx, dynb_net_create_from_file(ctx, path, DYNB_F32, 9, &a));
  TU_OK(ctx, dynb_net_create(ctx, SPEC, DYNB_F32, 9, &b));
  float wa[4 * 4 * 9], wb[4 * 4 * 9];
  TU_OK(ctx, dynb_net_param_get(a, "blocks.0.controls.1.conv.weight", DYNB_F32, wa, 144));
  TU_OK(ctx, dynb_net_param_get(b, "blocks.0.controls.1.conv.weight", DYNB_F32, wb, 144));
  assert_memory_equal(wa, wb, sizeof wa);
  dynb_net_free(a);
  dynb_net_free(b);
  unlink(path);
  TU_EXPECT_STATUS(ctx, dynb_net_create_from_file(ctx, path, DYNB_F32, 1, &a), DYNB_STATUS_IO_ERROR);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), path));
  TU_EXPECT_STATUS(ctx, dynb_net_load(ctx, path, DYNB_F32, &a), DYNB_STATUS_IO_ERROR);
  dynb_ctx_free(ctx);
}

static void parameters_by_name(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb_net *net = NULL;
  TU_OK(ctx, dynb_net_create(ctx, SPEC, DYNB_F32, 5, &net));
  size_t count = 0;
  TU_OK(ctx, dynb_net_param_count(net, &count));
  bool seen_lin = false, seen_running = false;
  for (size_t i = 0; i < count; i++) {
    const char *name;
    int nd, tr;
    int64_t dims[4];
    TU_OK(ctx, dynb_net_param_name(net, i, &name));
    TU_OK(ctx, dynb_net_param_info(net, name, &nd, dims, &tr));
    if (strcmp(name, "linear.weight") == 0) {
      seen_lin = true;
      assert_true(nd == 2 && dims[0] == 2 && dims[1] == 6 && dims[2] == 0 && tr == 1);
    }
    if (strcmp(name, "blocks.1.steps.0.stages.1.norm2.running_var") == 0) {
      seen_running = true;
      assert_true(nd == 1 && dims[0] == 6 && tr == 0);
    }
  }
  assert_true(seen_lin && seen_running);
  const char *name = NULL;
  TU_EXPECT_STATUS(ctx, dynb_net_param_name(net, count, &name), DYNB_STATUS_INVALID_ARGUMENT);
  /* get/set round trips in both host types; f64 host values round to f32. */
  double w[12], back[12];
  float wf[12];
  for (int i = 0; i < 12; i++) w[i] = 0.1 * i - 0.55;
  TU_OK(ctx, dynb_net_param_set(net, "linear.weight", DYNB_F64, w, 12));
  TU_OK(ctx, dynb_net_param_get(net, "linear.weight", DYNB_F64, back, 12));
  TU_OK(ctx, dynb_net_param_get(net, "linear.weight", DYNB_F32, wf, 12));
  for (int i = 0; i < 12; i++) {
    assert_true(back[i] == (double)(float)w[i]);
    assert_true(wf[i] == (float)w[i]);
  }
  for (int i = 0; i < 12; i++) wf[i] = (float)i;
  TU_OK(ctx, dynb_net_param_set(net, "linear.weight", DYNB_F32, wf, 12));
  TU_OK(ctx, dynb_net_param_get(net, "linear.weight", DYNB_F64, back, 12));
  for (int i = 0; i < 12; i++) assert_true(back[i] == i);
  /* Misuse: unknown name (named in the message), wrong count, bad host type,
   * gradient of a running statistic. */
  TU_EXPECT_STATUS(ctx, dynb_net_param_get(net, "linear.wieght", DYNB_F64, back, 12),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "no tensor named 'linear.wieght'"));
  TU_EXPECT_STATUS(ctx, dynb_net_param_set(net, "nope", DYNB_F64, w, 12), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_net_param_info(net, "nope", NULL, NULL, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_net_param_get(net, NULL, DYNB_F64, back, 12), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_net_param_get(net, "linear.weight", DYNB_F64, back, 11),
                   DYNB_STATUS_SHAPE_MISMATCH);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "has 12 elements; 11 given"));
  TU_EXPECT_STATUS(ctx, dynb_net_param_set(net, "linear.weight", DYNB_I32, w, 12),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_net_param_get(net, "linear.weight", DYNB_F64, NULL, 12),
                   DYNB_STATUS_INVALID_ARGUMENT);
  double rv[6];
  TU_EXPECT_STATUS(ctx, dynb_net_grad_get(net, "blocks.1.steps.0.stages.1.norm2.running_var",
                                          DYNB_F64, rv, 6),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "no gradient"));
  /* dynb_net_init restores the seeded values. */
  TU_OK(ctx, dynb_net_init(net, 5));
  dynb_net *fresh = NULL;
  TU_OK(ctx, dynb_net_create(ctx, SPEC, DYNB_F32, 5, &fresh));
  float a[12], b[12];
  TU_OK(ctx, dynb_net_param_get(net, "linear.weight", DYNB_F32, a, 12));
  TU_OK(ctx, dynb_net_param_get(fresh, "linear.weight", DYNB_F32, b, 12));
  assert_memory_equal(a, b, sizeof a);
  dynb_net_free(fresh);
  dynb_net_free(net);
  dynb_ctx_free(ctx);
}

/* Call order and argument checks of plans and optimisers. */
static void plan_and_optimizer_misuse(void **state) {
  (void)state;
  dynb_ctx *ctx = api_ctx();
  rig g;
  rig_open(&g, ctx, 1);
  rig_upload(&g, 2);
  dynb_plan *second = NULL;
  TU_EXPECT_STATUS(ctx, dynb_plan_build(g.net, B, DYNB_MEMORY_STORE, &second), DYNB_STATUS_MISUSE);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "already has a plan"));
  double loss;
  TU_EXPECT_STATUS(ctx, dynb_plan_loss(g.plan, &loss, NULL), DYNB_STATUS_MISUSE);
  TU_EXPECT_STATUS(ctx, dynb_plan_logits(g.plan, g.logits), DYNB_STATUS_MISUSE);
  TU_EXPECT_STATUS(ctx, dynb_plan_backward(g.plan, NULL), DYNB_STATUS_MISUSE);
  dynb_optimizer *opt = NULL;
  TU_OK(ctx, dynb_optimizer_create(g.net, DYNB_OPTIM_SGD, &opt));
  TU_EXPECT_STATUS(ctx, dynb_optimizer_step(opt), DYNB_STATUS_MISUSE);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "no backward pass"));
  /* Wrong shapes and types name the argument and both shapes. */
  int64_t xd[4] = {B, 1, 8, 7}, yd[1] = {B - 1};
  dynb_tensor *x7 = NULL, *y15 = NULL, *x64 = NULL;
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F32, 4, xd, &x7));
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_I32, 1, yd, &y15));
  xd[3] = 8;
  TU_OK(ctx, dynb_tensor_create(ctx, DYNB_F64, 4, xd, &x64));
  TU_EXPECT_STATUS(ctx, dynb_plan_forward(g.plan, x7, g.y, DYNB_PASS_TRAIN), DYNB_STATUS_SHAPE_MISMATCH);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "x has shape [16, 1, 8, 7]; expected [16, 1, 8, 8]"));
  TU_EXPECT_STATUS(ctx, dynb_plan_forward(g.plan, g.x, y15, DYNB_PASS_TRAIN), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb_plan_forward(g.plan, x64, g.y, DYNB_PASS_TRAIN), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_plan_forward(g.plan, g.y, g.y, DYNB_PASS_TRAIN), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_plan_forward(g.plan, NULL, g.y, DYNB_PASS_TRAIN), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_plan_forward(g.plan, g.x, g.y, (dynb_pass)9), DYNB_STATUS_INVALID_ARGUMENT);
  /* A tensor of another context. */
  dynb_ctx *other = tu_ctx();
  dynb_tensor *foreign = NULL;
  TU_OK(other, dynb_tensor_create(other, DYNB_F32, 4, xd, &foreign));
  TU_EXPECT_STATUS(ctx, dynb_plan_forward(g.plan, foreign, g.y, DYNB_PASS_TRAIN),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "another context"));
  /* Without labels: logits yes, loss and backward no. */
  TU_OK(ctx, dynb_plan_forward(g.plan, g.x, NULL, DYNB_PASS_EVAL));
  TU_OK(ctx, dynb_plan_logits(g.plan, g.logits));
  TU_EXPECT_STATUS(ctx, dynb_plan_loss(g.plan, &loss, NULL), DYNB_STATUS_MISUSE);
  TU_EXPECT_STATUS(ctx, dynb_plan_backward(g.plan, NULL), DYNB_STATUS_MISUSE);
  TU_EXPECT_STATUS(ctx, dynb_plan_logits(g.plan, g.x), DYNB_STATUS_SHAPE_MISMATCH);
  TU_OK(ctx, dynb_plan_forward(g.plan, g.x, g.y, DYNB_PASS_TRAIN));
  TU_EXPECT_STATUS(ctx, dynb_plan_loss(g.plan, NULL, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_plan_backward(g.plan, x7), DYNB_STATUS_SHAPE_MISMATCH);
  TU_OK(ctx, dynb_plan_backward(g.plan, NULL));
  size_t bytes = 0;
  TU_OK(ctx, dynb_plan_bytes(g.plan, &bytes));
  assert_true(bytes > 0);
  /* Optimiser parameters: bounds, kind, and the first-step freeze. */
  double v;
  TU_OK(ctx, dynb_optimizer_get(opt, DYNB_OPTIM_LR, &v));
  assert_true(v == 0.01);
  TU_OK(ctx, dynb_optimizer_get(opt, DYNB_OPTIM_MOMENTUM, &v));
  assert_true(v == 0.9);
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_MOMENTUM, 1.0), DYNB_STATUS_PARAM_OUT_OF_BOUND);
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_LR, -1), DYNB_STATUS_PARAM_OUT_OF_BOUND);
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_LR, NAN), DYNB_STATUS_PARAM_OUT_OF_BOUND);
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_NESTEROV, 0.5), DYNB_STATUS_PARAM_OUT_OF_BOUND);
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_BETA1, 0.5), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(opt, (dynb_optim_param)1, 0.5), DYNB_STATUS_INVALID_ARGUMENT);
  TU_OK(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_NESTEROV, 1));
  TU_OK(ctx, dynb_optimizer_get(opt, DYNB_OPTIM_NESTEROV, &v));
  assert_true(v == 1);
  TU_OK(ctx, dynb_optimizer_step(opt));
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_MOMENTUM, 0.5), DYNB_STATUS_MISUSE);
  TU_OK(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_LR, 0.5));
  dynb_optimizer *adam = NULL;
  TU_EXPECT_STATUS(ctx, dynb_optimizer_create(g.net, (dynb_optim_kind)5, &adam),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_OK(ctx, dynb_optimizer_create(g.net, DYNB_OPTIM_ADAM, &adam));
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(adam, DYNB_OPTIM_EPS, 0), DYNB_STATUS_PARAM_OUT_OF_BOUND);
  TU_EXPECT_STATUS(ctx, dynb_optimizer_set(adam, DYNB_OPTIM_MOMENTUM, 0.5), DYNB_STATUS_INVALID_ARGUMENT);
  dynb_optimizer_free(adam);
  dynb_optimizer_free(opt);
  dynb_tensor_free(foreign);
  dynb_ctx_free(other);
  dynb_tensor_free(x7);
  dynb_tensor_free(y15);
  dynb_tensor_free(x64);
  rig_close(&g);
  dynb_ctx_free(ctx);
}

/* A training loop through the API alone: the loss falls and a fresh batch
 * is then classified. */
static void training_reduces_the_loss(void **state) {
  (void)state;
  dynb_ctx *ctx = api_ctx();
  rig g;
  rig_open(&g, ctx, 11);
  dynb_optimizer *opt = NULL;
  TU_OK(ctx, dynb_optimizer_create(g.net, DYNB_OPTIM_ADAM, &opt));
  TU_OK(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_LR, 0.01));
  enum { STEPS = 40, AVG = 5 };
  double first = 0, last = 0, loss, acc;
  for (int s = 0; s < STEPS; s++) {
    loss = rig_step(&g, opt, 100 + (uint64_t)s);
    if (s == 0) first = loss;
    if (s >= STEPS - AVG) last += loss / AVG;
  }
  printf("api training: loss of the first step %.4f, mean of the last %d %.4f\n", first, AVG,
         last);
  /* Two classes start near log 2 = 0.69; the rule (one bright half) is
   * easy, so the loss must fall by far more than batch-to-batch noise. */
  assert_true(first > 0.5);
  assert_true(last < 0.25 * first);
  rig_upload(&g, 999);
  TU_OK(ctx, dynb_plan_forward(g.plan, g.x, g.y, DYNB_PASS_EVAL));
  TU_OK(ctx, dynb_plan_loss(g.plan, &loss, &acc));
  printf("api training: held-out batch loss %.4f accuracy %.3f\n", loss, acc);
  assert_true(acc >= 0.9);
  dynb_optimizer_free(opt);
  rig_close(&g);
  dynb_ctx_free(ctx);
}

/* Save, load into a new network: the same eval logits, bit for bit, and
 * every tensor the same. */
static void save_load_round_trip(void **state) {
  (void)state;
  dynb_ctx *ctx = api_ctx();
  rig g;
  rig_open(&g, ctx, 21);
  dynb_optimizer *opt = NULL;
  TU_OK(ctx, dynb_optimizer_create(g.net, DYNB_OPTIM_SGD, &opt));
  for (int s = 0; s < 3; s++) rig_step(&g, opt, 200 + (uint64_t)s); /* moves every tensor */
  dynb_optimizer_free(opt);
  char path[] = "/tmp/dynb_api_modelXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  TU_OK(ctx, dynb_net_save(g.net, path));
  TU_EXPECT_STATUS(ctx, dynb_net_save(g.net, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  rig_upload(&g, 300);
  float before[B * 2], after[B * 2];
  TU_OK(ctx, dynb_plan_forward(g.plan, g.x, NULL, DYNB_PASS_EVAL));
  TU_OK(ctx, dynb_plan_logits(g.plan, g.logits));
  TU_OK(ctx, dynb_tensor_read(g.logits, before, sizeof before));
  dynb_net *loaded = NULL;
  TU_OK(ctx, dynb_net_load(ctx, path, DYNB_F32, &loaded));
  size_t n1, n2;
  TU_OK(ctx, dynb_net_param_count(g.net, &n1));
  TU_OK(ctx, dynb_net_param_count(loaded, &n2));
  assert_int_equal(n1, n2);
  for (size_t i = 0; i < n1; i++) {
    const char *name;
    int64_t dims[4];
    int nd;
    TU_OK(ctx, dynb_net_param_name(g.net, i, &name));
    TU_OK(ctx, dynb_net_param_info(g.net, name, &nd, dims, NULL));
    size_t n = 1;
    for (int d = 0; d < nd; d++) n *= (size_t)dims[d];
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    TU_OK(ctx, dynb_net_param_get(g.net, name, DYNB_F32, a, n));
    TU_OK(ctx, dynb_net_param_get(loaded, name, DYNB_F32, b, n));
    if (memcmp(a, b, n * sizeof *a) != 0) fail_msg("tensor %s differs after save/load", name);
    free(a), free(b);
  }
  dynb_plan *plan2 = NULL;
  TU_OK(ctx, dynb_plan_build(loaded, B, DYNB_MEMORY_CHECKPOINT, &plan2));
  TU_OK(ctx, dynb_plan_forward(plan2, g.x, NULL, DYNB_PASS_EVAL));
  TU_OK(ctx, dynb_plan_logits(plan2, g.logits));
  TU_OK(ctx, dynb_tensor_read(g.logits, after, sizeof after));
  assert_memory_equal(before, after, sizeof before);
  /* A network takes a new plan once the old one is freed. */
  dynb_plan_free(plan2);
  TU_OK(ctx, dynb_plan_build(loaded, 3, DYNB_MEMORY_STORE, &plan2));
  dynb_plan_free(plan2);
  dynb_net_free(loaded);
  /* A damaged file is refused with its name. */
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  fputs("garbage!", f);
  fclose(f);
  TU_EXPECT_STATUS(ctx, dynb_net_load(ctx, path, DYNB_F32, &loaded), DYNB_STATUS_BAD_FORMAT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), path));
  assert_null(loaded);
  unlink(path);
  rig_close(&g);
  dynb_ctx_free(ctx);
}

/* The API adds nothing to the numbers: the same steps through the internal
 * modules (as the trainer drives them) give bitwise the same tensors. */
static void api_equals_the_internal_path(void **state) {
  (void)state;
  dynb_ctx *ctx = api_ctx();
  enum { STEPS = 3 };
  rig g;
  rig_open(&g, ctx, 31);
  dynb_optimizer *opt = NULL;
  TU_OK(ctx, dynb_optimizer_create(g.net, DYNB_OPTIM_SGD, &opt));
  TU_OK(ctx, dynb_optimizer_set(opt, DYNB_OPTIM_LR, 0.05));
  for (int s = 0; s < STEPS; s++) rig_step(&g, opt, 400 + (uint64_t)s);
  dynb__net_spec *spec = malloc(sizeof *spec);
  char err[512];
  TU_OK(ctx, dynb__spec_parse(SPEC, strlen(SPEC), "spec", spec, err, sizeof err));
  dynb__net *net;
  dynb__plan *plan;
  dynb__optimizer *iopt;
  dynb__timereg *reg;
  dynb__optim_desc od = dynb__optim_desc_default();
  TU_OK(ctx, dynb__net_create(ctx, spec, DYNB_F32, &net));
  TU_OK(ctx, dynb__net_init(net, 31));
  TU_OK(ctx, dynb__plan_build(net, B, DYNB_MEMORY_STORE, &plan));
  TU_OK(ctx, dynb__optimizer_create(net, &od, &iopt));
  TU_OK(ctx, dynb__timereg_create(net, &reg));
  int64_t one = 1;
  dynb__tensor reg_value;
  TU_OK(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 1, &one, &reg_value));
  for (int s = 0; s < STEPS; s++) {
    float x[B * PIX];
    int32_t y[B];
    af_make_batch(400 + (uint64_t)s, x, y);
    TU_OK(ctx, dynb__tensor_write(ctx, dynb__plan_input(plan), x));
    TU_OK(ctx, dynb__tensor_write(ctx, dynb__plan_labels(plan), y));
    TU_OK(ctx, dynb__net_zero_grads(net));
    TU_OK(ctx, dynb__plan_forward(plan, true));
    TU_OK(ctx, dynb__timereg_apply(reg, &reg_value));
    TU_OK(ctx, dynb__plan_backward(plan, false));
    TU_OK(ctx, dynb__optimizer_step(iopt, 0.05));
  }
  size_t count;
  TU_OK(ctx, dynb_net_param_count(g.net, &count));
  assert_int_equal(count, net->ntensors);
  for (size_t i = 0; i < count; i++) {
    const dynb__net_tensor *t = &net->tensors[i];
    size_t n = dynb__tensor_numel(&t->value);
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    TU_OK(ctx, dynb_net_param_get(g.net, t->name, DYNB_F64, a, n));
    tu_download(ctx, &t->value, b);
    if (memcmp(a, b, n * sizeof *a) != 0) fail_msg("%s differs from the internal path", t->name);
    if (t->trainable) {
      TU_OK(ctx, dynb_net_grad_get(g.net, t->name, DYNB_F64, a, n));
      tu_download(ctx, &t->grad, b);
      if (memcmp(a, b, n * sizeof *a) != 0) fail_msg("gradient of %s differs", t->name);
    }
    free(a), free(b);
  }
  dynb__tensor_release(&reg_value);
  dynb__timereg_free(reg);
  dynb__optimizer_free(iopt);
  dynb__plan_free(plan);
  dynb__net_free(net);
  free(spec);
  dynb_optimizer_free(opt);
  rig_close(&g);
  dynb_ctx_free(ctx);
}

/* A context on the caller's own OpenCL context and queue, with the caller's
 * buffers: the same logits as a library-made context on the same device. */
static void callers_own_opencl_objects(void **state) {
  (void)state;
  dynb_ctx *lib = api_ctx();
  cl_device_id dev;
  assert_int_equal(clGetContextInfo(dynb_ctx_cl_context(lib), CL_CONTEXT_DEVICES, sizeof dev, &dev,
                                    NULL), CL_SUCCESS);
  cl_int e;
  cl_context cl = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
  assert_int_equal(e, CL_SUCCESS);
  cl_command_queue q = clCreateCommandQueue(cl, dev, 0, &e);
  assert_int_equal(e, CL_SUCCESS);
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.cache_dir = getenv("DYNB_TEST_CACHE_DIR") ? getenv("DYNB_TEST_CACHE_DIR") : "";
  dynb_ctx *own = NULL;
  /* A queue of another context is refused. */
  TU_EXPECT_STATUS(own, dynb_ctx_create_cl(&d, cl, dynb_ctx_cl_queue(lib), &own),
                   DYNB_STATUS_INVALID_ARGUMENT);
  dynb_ctx_free(own);
  TU_OK(own, dynb_ctx_create_cl(&d, cl, q, &own));
  assert_ptr_equal(dynb_ctx_cl_queue(own), q);
  TU_OK(own, dynb_ctx_set_param(own, DYNB_PARAM_CONV_ROUTE, DYNB_CONV_GEMM));
  float x[B * PIX], want[B * 2], got[B * 2];
  int32_t y[B];
  af_make_batch(500, x, y);
  /* Library-made context and tensors. */
  rig g;
  rig_open(&g, lib, 41);
  TU_OK(lib, dynb_tensor_write(g.x, x, sizeof x));
  TU_OK(lib, dynb_plan_forward(g.plan, g.x, NULL, DYNB_PASS_EVAL));
  TU_OK(lib, dynb_plan_logits(g.plan, g.logits));
  TU_OK(lib, dynb_tensor_read(g.logits, want, sizeof want));
  rig_close(&g);
  /* The caller's: buffers written and read with the caller's own calls. */
  cl_mem xm = clCreateBuffer(cl, CL_MEM_READ_WRITE, sizeof x, NULL, &e);
  cl_mem zm = clCreateBuffer(cl, CL_MEM_READ_WRITE, sizeof got, NULL, &e);
  assert_int_equal(clEnqueueWriteBuffer(q, xm, CL_FALSE, 0, sizeof x, x, 0, NULL, NULL), CL_SUCCESS);
  int64_t xd[4] = {B, 1, 8, 8}, zd[2] = {B, 2};
  dynb_tensor *xt = NULL, *zt = NULL;
  TU_OK(own, dynb_tensor_wrap_cl(own, xm, 0, DYNB_F32, 4, xd, &xt));
  TU_OK(own, dynb_tensor_wrap_cl(own, zm, 0, DYNB_F32, 2, zd, &zt));
  dynb_net *net = NULL;
  dynb_plan *plan = NULL;
  TU_OK(own, dynb_net_create(own, SPEC, DYNB_F32, 41, &net));
  TU_OK(own, dynb_plan_build(net, B, DYNB_MEMORY_STORE, &plan));
  TU_OK(own, dynb_plan_forward(plan, xt, NULL, DYNB_PASS_EVAL));
  TU_OK(own, dynb_plan_logits(plan, zt));
  /* In-order queue: the caller's read follows the library's work. */
  assert_int_equal(clEnqueueReadBuffer(q, zm, CL_TRUE, 0, sizeof got, got, 0, NULL, NULL), CL_SUCCESS);
  assert_memory_equal(want, got, sizeof got);
  dynb_plan_free(plan);
  dynb_net_free(net);
  dynb_tensor_free(xt);
  dynb_tensor_free(zt);
  dynb_ctx_free(own);
  /* The caller's objects outlive the context. */
  assert_int_equal(clFinish(q), CL_SUCCESS);
  clReleaseMemObject(xm);
  clReleaseMemObject(zm);
  clReleaseCommandQueue(q);
  clReleaseContext(cl);
  dynb_ctx_free(lib);
}

/* ---- injected faults through the API ------------------------------------ */

/* Everything an embedding code makes, then one training step; on a failure
 * whatever was made is freed by the caller (the NULL outs make that safe). */
typedef struct api_world {
  rig g;
  dynb_optimizer *opt;
} api_world;

static dynb_status api_build_and_step(api_world *w, dynb_ctx *ctx) {
  int64_t xd[4] = {B, 1, 8, 8}, yd[1] = {B}, zd[2] = {B, 2};
  float x[B * PIX];
  int32_t y[B];
  memset(w, 0, sizeof *w);
  w->g.ctx = ctx;
  af_make_batch(7, x, y);
  dynb_status st = dynb_net_create(ctx, SPEC, DYNB_F32, 3, &w->g.net);
  if (!st) st = dynb_plan_build(w->g.net, B, DYNB_MEMORY_STORE, &w->g.plan);
  if (!st) st = dynb_optimizer_create(w->g.net, DYNB_OPTIM_ADAM, &w->opt);
  if (!st) st = dynb_tensor_create(ctx, DYNB_F32, 4, xd, &w->g.x);
  if (!st) st = dynb_tensor_create(ctx, DYNB_I32, 1, yd, &w->g.y);
  if (!st) st = dynb_tensor_create(ctx, DYNB_F32, 2, zd, &w->g.logits);
  if (!st) st = dynb_tensor_write(w->g.x, x, sizeof x);
  if (!st) st = dynb_tensor_write(w->g.y, y, sizeof y);
  if (!st) st = dynb_plan_forward(w->g.plan, w->g.x, w->g.y, DYNB_PASS_TRAIN);
  if (!st) st = dynb_plan_backward(w->g.plan, NULL);
  if (!st) st = dynb_optimizer_step(w->opt);
  return st;
}

/* Fails the k-th host allocation, then the k-th device buffer, k = 1, 2, ...
 * of building and stepping through the API, until nothing fails: every
 * failure returns its status with a message, and freeing what was made
 * leaves no host block and no device buffer behind. */
static void injected_faults_leave_nothing_behind(void **state) {
  (void)state;
  static const dynb__fault_kind kinds[2] = {DYNB__FAULT_ALLOC, DYNB__FAULT_BUFFER};
  static const dynb_status expect[2] = {DYNB_STATUS_OUT_OF_HOST_MEMORY,
                                        DYNB_STATUS_OUT_OF_DEVICE_MEMORY};
  size_t blocks = 0;
  dynb_ctx_desc d = tu_ctx_desc();
  d.allocator = (dynb_allocator){tu_count_alloc, tu_count_free, &blocks};
  dynb_ctx *ctx = tu_ctx_create(&d);
  TU_OK(ctx, dynb_ctx_set_param(ctx, DYNB_PARAM_CONV_ROUTE, DYNB_CONV_GEMM));
  api_world w;
  TU_OK(ctx, api_build_and_step(&w, ctx)); /* programs built, routes chosen */
  dynb_optimizer_free(w.opt), rig_close(&w.g);
  TU_OK(ctx, dynb_ctx_finish(ctx));
  size_t base_blocks = blocks;
  dynb__ctx_inject_fault(ctx, DYNB__FAULT_ALLOC, 0); /* counts buffers from here */
  for (int i = 0; i < 2; i++) {
    uint64_t k = 1;
    for (;; k++) {
      dynb__ctx_inject_fault(ctx, kinds[i], k);
      dynb_status st = api_build_and_step(&w, ctx);
      bool fired = dynb__ctx_fault_fired(ctx, kinds[i]);
      dynb__ctx_inject_fault(ctx, kinds[i], 0);
      if (fired && st != expect[i])
        fail_msg("fault %d at event %llu: %s, expected %s (%s)", i, (unsigned long long)k,
                 dynb_status_name(st), dynb_status_name(expect[i]), dynb_ctx_last_error(ctx));
      if (fired) assert_int_equal(dynb_ctx_last_status(ctx), expect[i]); /* and explained */
      if (!fired) TU_OK(ctx, st);
      dynb_optimizer_free(w.opt), rig_close(&w.g);
      size_t live = tu_live_buffers_settled(ctx);
      if (blocks != base_blocks || live != 0)
        fail_msg("fault %d at event %llu (%s): %zu host blocks and %zu buffers left", i,
                 (unsigned long long)k, fired ? dynb_ctx_last_error(ctx) : "no fault",
                 blocks - base_blocks, live);
      if (!fired) break;
    }
    printf("api fault sweep: %llu %s events failed one at a time\n", (unsigned long long)(k - 1),
           i ? "device buffer" : "host allocation");
    assert_true(k > 10);
  }
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(version_matches_header),
      cmocka_unit_test(null_handles_are_misuse),
      cmocka_unit_test(context_params_and_log),
      cmocka_unit_test(log_callback_receives_failures),
      cmocka_unit_test(tensors_create_read_write),
      cmocka_unit_test(tensors_wrap_caller_buffers),
      cmocka_unit_test(networks_from_specs_and_files),
      cmocka_unit_test(parameters_by_name),
      cmocka_unit_test(plan_and_optimizer_misuse),
      cmocka_unit_test(training_reduces_the_loss),
      cmocka_unit_test(save_load_round_trip),
      cmocka_unit_test(api_equals_the_internal_path),
      cmocka_unit_test(callers_own_opencl_objects),
      cmocka_unit_test(injected_faults_leave_nothing_behind),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
