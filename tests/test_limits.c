/* Device limits: the kernels and plans run, and give the same results, on
 * a context whose limits are lowered to what small GPUs have (work-groups
 * of 64, 16 KiB of local memory, 64 MiB allocations), through the test
 * hook dynb__ctx_clamp_limits; launches and allocations beyond a limit fail
 * with messages that name it; a plan whose arenas exceed the largest
 * allocation splits them and trains bit for bit as the unsplit plan. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>

#include "testutil.h"
#include "plan/plan.h"
#include "ref/ref.h"
#include "train/train.h"

#define KIB ((uint64_t)1024)
#define MIB (KIB * KIB)

/* A context on the test device with its limits lowered to these (0 leaves
 * one alone); the work-group cap applies to each dimension too. */
static dynb_ctx *limited_ctx(size_t wg, size_t local, uint64_t alloc) {
  dynb_ctx *ctx = tu_ctx();
  dynb__limits cap = {wg, {wg, wg, wg}, local, alloc};
  dynb__ctx_clamp_limits(ctx, &cap);
  return ctx;
}

/* The GPU-like clamps of this file. */
static dynb_ctx *gpu_like_ctx(void) { return limited_ctx(64, 16 * KIB, 64 * MIB); }

/* Double where the device has it (tight bounds), else float. */
static dynb_dtype test_real(dynb_ctx *ctx) { return ctx->info.has_fp64 ? DYNB_F64 : DYNB_F32; }

/* ---- the clamps reach the kernels ------------------------------------------------------ */

/* Every reduction kernel launched under the clamps gets a work-group within
 * them: 64 items by the work-group cap, fewer where local memory is
 * tighter, and any limit is only ever lowered. */
static void clamps_reach_the_reduction_sizes(void **state) {
  (void)state;
  dynb_ctx *plain = tu_ctx();
  size_t before = dynb__reduce_wg(plain);
  assert_true(before >= 1 && before <= DYNB__REDUCE_MAX);
  dynb_ctx *ctx = gpu_like_ctx();
  assert_true(dynb__reduce_wg(ctx) <= 64);
  dynb__launch l;
  TU_OK(ctx, dynb__launch_begin(&l, ctx, "channel", "dynb_channel_sum", DYNB_F32));
  assert_true(dynb__launch_reduce_wg(&l, 4) <= 64);
  /* 256 bytes of local memory hold 64 floats but 32 doubles; the kernel's
   * own local memory (none on PoCL) comes off first. */
  dynb__limits tight = {0, {0, 0, 0}, 256, 0};
  dynb__ctx_clamp_limits(ctx, &tight);
  TU_OK(ctx, dynb__launch_begin(&l, ctx, "channel", "dynb_channel_sum", DYNB_F32));
  size_t room = 256 > l.limits.local_bytes ? 256 - l.limits.local_bytes : 0;
  size_t wg4 = dynb__launch_reduce_wg(&l, 4), wg8 = dynb__launch_reduce_wg(&l, 8);
  assert_true(wg4 * 4 <= room || wg4 == 1);
  assert_true(wg8 * 8 <= room || wg8 == 1);
  assert_true(wg8 <= 32);
  /* Raising is ignored: the limits stay as lowered. */
  dynb__limits raise = {1 << 20, {1 << 20, 1 << 20, 1 << 20}, 1 << 30, (uint64_t)1 << 40};
  dynb__ctx_clamp_limits(ctx, &raise);
  assert_int_equal(ctx->limits.local_mem, 256);
  assert_true(ctx->limits.max_work_group <= 64);
  assert_true(ctx->limits.max_alloc <= 64 * MIB);
  /* The first dimension's item limit caps reductions by itself. */
  dynb__limits items = {0, {32, 0, 0}, 0, 0};
  dynb__ctx_clamp_limits(plain, &items);
  assert_true(dynb__reduce_wg(plain) <= 32);
  dynb_ctx_free(ctx);
  dynb_ctx_free(plain);
}

/* CLBlast parameter sets whose work-groups exceed the device's are not
 * offered to the tuner: with groups of at most 2 items, only those of
 * at most 2 threads (and CLBlast's own) remain of the CPU candidates. */
static void gemm_candidates_fit_the_limits(void **state) {
  (void)state;
  dynb_ctx *plain = tu_ctx(), *ctx = limited_ctx(2, 0, 0);
  const char *all[32], *some[32];
  size_t n_all = dynb__gemm_candidates(plain, all, 32);
  size_t n_some = dynb__gemm_candidates(ctx, some, 32);
  assert_true(n_some >= 1 && n_some <= n_all);
  assert_string_equal(some[0], "clblast");
  for (size_t i = 0; i < n_some; i++) {
    dynb__gemm_config c;
    TU_OK(ctx, dynb__gemm_config_find(ctx, some[i], &c));
    if (c.has_xgemm) assert_true(c.xgemm[5] * c.xgemm[8] <= 2);  /* MDIMC·NDIMC */
    if (c.has_direct) assert_true(c.direct[2] * c.direct[4] <= 2); /* MDIMCD·NDIMCD */
  }
  /* PoCL's list has 4-thread sets (i_m64n32: MDIMC 4 × NDIMC 2 = 8). */
  if (!plain->info.is_gpu && strstr(plain->info.platform_name, "Portable"))
    assert_true(n_some < n_all);
  dynb_ctx_free(ctx), dynb_ctx_free(plain);
}

/* ---- every reduction under the clamps ----------------------------------------------------- */

enum { RN = 3, RC = 5, RH = 13, RW = 11, RS = RH * RW, RK = 7, RJ = 4, RP = 300 };

/* Inputs of every reduction, fixed by a seed (rounded to the real type, so
 * that the references see exactly the kernels' inputs). */
typedef struct red_inputs {
  double x[RN * RC * RS], dy[RN * RC * RS], gamma[RC], beta[RC];
  double logits[RN * RK];
  int32_t labels[RN];
  double controls[RJ * RP], h[RJ - 1];
} red_inputs;

/* Outputs, one array per op. */
typedef struct red_outputs {
  double chan[RC], sum, xent[2], pool[RN * RC], timereg;
  double bn_y[RN * RC * RS], bn_mean[RC], bn_invstd[RC];
  double bn_dx[RN * RC * RS], bn_dgamma[RC], bn_dbeta[RC];
} red_outputs;

static void red_fill(red_inputs *in, dynb_dtype dt) {
  tu_rng r = tu_rng_seed(41);
  tu_fill(&r, in->x, RN * RC * RS, -1, 1);
  tu_fill(&r, in->dy, RN * RC * RS, -1, 1);
  tu_fill(&r, in->gamma, RC, 0.5, 1.5);
  tu_fill(&r, in->beta, RC, -0.5, 0.5);
  tu_fill(&r, in->logits, RN * RK, -2, 2);
  tu_fill(&r, in->controls, RJ * RP, -1, 1);
  tu_fill(&r, in->h, RJ - 1, 0.2, 0.6);
  for (int i = 0; i < RN; i++) in->labels[i] = (i * 3 + 1) % RK;
  tu_round_to(dt, in->x, RN * RC * RS);
  tu_round_to(dt, in->dy, RN * RC * RS);
  tu_round_to(dt, in->gamma, RC);
  tu_round_to(dt, in->beta, RC);
  tu_round_to(dt, in->logits, RN * RK);
  tu_round_to(dt, in->controls, RJ * RP);
  tu_round_to(dt, in->h, RJ - 1);
}

/* Runs every op with an explicit work-group (channel sums, whole sums, the
 * loss, global pooling, time regularisation, batch norm forward and
 * backward) on ctx, over sizes that are no multiple of any work-group. */
static void red_run(dynb_ctx *ctx, dynb_dtype dt, const red_inputs *in, red_outputs *out) {
  const int64_t d4[4] = {RN, RC, RH, RW}, c1 = RC, nc[2] = {RN, RC}, nk[2] = {RN, RK};
  const int64_t cp[2] = {RJ, RP}, hj = RJ - 1, one = 1, two = 2;
  const int64_t sw = (int64_t)dynb__sum_workspace(ctx, RN * RC * RS);
  const int64_t tw = (int64_t)dynb__timereg_workspace(ctx, RP), xw = 2 * RN;
  dynb__tensor x = tu_upload(ctx, dt, 4, d4, in->x), dy = tu_upload(ctx, dt, 4, d4, in->dy);
  dynb__tensor gamma = tu_upload(ctx, dt, 1, &c1, in->gamma);
  dynb__tensor beta = tu_upload(ctx, dt, 1, &c1, in->beta);
  dynb__tensor chan = tu_upload(ctx, dt, 1, &c1, NULL), sum = tu_upload(ctx, dt, 1, &one, NULL);
  dynb__tensor swork = tu_upload(ctx, dt, 1, &sw, NULL), pool = tu_upload(ctx, dt, 2, nc, NULL);
  dynb__tensor logits = tu_upload(ctx, dt, 2, nk, in->logits);
  dynb__tensor labels = tu_upload_i32(ctx, RN, in->labels);
  dynb__tensor xent = tu_upload(ctx, dt, 1, &two, NULL), xwork = tu_upload(ctx, dt, 1, &xw, NULL);
  dynb__tensor controls = tu_upload(ctx, dt, 2, cp, in->controls);
  dynb__tensor h = tu_upload(ctx, dt, 1, &hj, in->h), reg = tu_upload(ctx, dt, 1, &one, NULL);
  dynb__tensor twork = tu_upload(ctx, dt, 1, &tw, NULL);
  dynb__tensor y = tu_upload(ctx, dt, 4, d4, NULL), dx = tu_upload(ctx, dt, 4, d4, NULL);
  dynb__tensor mean = tu_upload(ctx, dt, 1, &c1, NULL), invstd = tu_upload(ctx, dt, 1, &c1, NULL);
  dynb__tensor dgamma = tu_upload(ctx, dt, 1, &c1, NULL), dbeta = tu_upload(ctx, dt, 1, &c1, NULL);
  TU_OK(ctx, dynb__channel_sum(ctx, &x, &chan, false));
  TU_OK(ctx, dynb__sum(ctx, &x, &sum, false, &swork));
  TU_OK(ctx, dynb__xent_forward(ctx, &logits, &labels, &xent, &xwork));
  TU_OK(ctx, dynb__global_avgpool_forward(ctx, &x, &pool));
  TU_OK(ctx, dynb__timereg_forward(ctx, &controls, &h, 0.5, &reg, false, &twork));
  TU_OK(ctx, dynb__bn_train_forward(ctx, &x, &gamma, &beta, &y, &mean, &invstd, NULL, NULL,
                                    DYNB_BN_MOMENTUM, DYNB_BN_EPS, DYNB_ACT_IDENTITY));
  TU_OK(ctx, dynb__bn_train_backward(ctx, &x, &dy, &gamma, &mean, &invstd, &dx, &dgamma, &dbeta,
                                     false, false));
  tu_download(ctx, &chan, out->chan);
  tu_download(ctx, &sum, &out->sum);
  tu_download(ctx, &xent, out->xent);
  tu_download(ctx, &pool, out->pool);
  tu_download(ctx, &reg, &out->timereg);
  tu_download(ctx, &y, out->bn_y);
  tu_download(ctx, &mean, out->bn_mean);
  tu_download(ctx, &invstd, out->bn_invstd);
  tu_download(ctx, &dx, out->bn_dx);
  tu_download(ctx, &dgamma, out->bn_dgamma);
  tu_download(ctx, &dbeta, out->bn_dbeta);
  dynb__tensor *all[] = {&x,     &dy,     &gamma,  &beta,  &chan, &sum,   &swork,  &pool,
                         &logits, &labels, &xent,  &xwork, &controls, &h, &reg, &twork,
                         &y,     &dx,     &mean,   &invstd, &dgamma, &dbeta};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) dynb__tensor_release(all[i]);
}

static void red_reference(const red_inputs *in, red_outputs *out) {
  ref_channel_sum(RN, RC, RS, in->x, out->chan);
  out->sum = 0;
  for (int i = 0; i < RN * RC * RS; i++) out->sum += in->x[i];
  ref_xent_forward(RN, RK, in->logits, in->labels, out->xent);
  ref_global_avgpool_forward(RN, RC, RS, in->x, out->pool);
  out->timereg = ref_timereg(RJ, RP, in->controls, in->h, 0.5);
  ref_bn_train_forward(RN, RC, RS, in->x, in->gamma, in->beta, DYNB_BN_MOMENTUM, DYNB_BN_EPS,
                       out->bn_y, out->bn_mean, out->bn_invstd, NULL, NULL);
  ref_bn_train_backward(RN, RC, RS, in->x, in->dy, in->gamma, out->bn_mean, out->bn_invstd,
                        out->bn_dx, out->bn_dgamma, out->bn_dbeta);
}

/* Compares two output sets. Every output is a sum of at most
 * RN·RC·RS = 2145 terms of magnitude <= 1 (time regularisation: 900 terms
 * <= 1.2), or a function of such sums with condition number of a few
 * units (batch norm divides by a standard deviation of ~0.58); in any
 * summation order the rounding error of n such terms is below n·u·Σ|x|
 * <= 2145·u·2145 ≈ 4.6e6·u (5e-10 in double, 0.27 in float: a float bound
 * that only rules out gross errors, which is what a wrong work-group
 * stride gives: whole elements missing or counted twice, 1e-3 and up).
 * The normalised outputs get 16 times that for the division. */
static void red_compare(const char *what, dynb_dtype dt, const red_outputs *got,
                        const red_outputs *want) {
  const double u = tu_unit(dt), sums = 2145.0 * 2145.0 * u, norm = 16 * sums;
  char name[96];
#define RED_CHECK(field, n, tol)                                         \
  snprintf(name, sizeof name, "%s %s", what, #field);                    \
  tu_assert_close(name, (const double *)&got->field, (const double *)&want->field, n, 0, tol)
  RED_CHECK(chan, RC, sums);
  RED_CHECK(sum, 1, sums);
  RED_CHECK(xent, 2, sums);
  RED_CHECK(pool, RN * RC, sums);
  RED_CHECK(timereg, 1, sums);
  RED_CHECK(bn_mean, RC, sums);
  RED_CHECK(bn_invstd, RC, norm);
  RED_CHECK(bn_y, RN * RC * RS, norm);
  RED_CHECK(bn_dx, RN * RC * RS, norm);
  RED_CHECK(bn_dgamma, RC, norm);
  RED_CHECK(bn_dbeta, RC, sums);
#undef RED_CHECK
}

/* The reductions under the GPU-like clamps match the plain-C references as
 * they do under the device's own limits, match those results, and repeat
 * bit for bit (a fixed tree for the clamped work-group size too). Then
 * with only 256 bytes of local memory (32 doubles), and with work-groups
 * of one item, the smallest any device has. */
static void reductions_match_under_clamps(void **state) {
  (void)state;
  dynb_ctx *plain = tu_ctx();
  dynb_dtype dt = test_real(plain);
  red_inputs *in = calloc(1, sizeof *in);
  red_outputs *want = calloc(1, sizeof *want), *base = calloc(1, sizeof *base);
  red_outputs *got = calloc(1, sizeof *got), *again = calloc(1, sizeof *again);
  red_fill(in, dt);
  red_reference(in, want);
  red_run(plain, dt, in, base);
  red_compare("device limits vs reference", dt, base, want);
  const struct {
    const char *what;
    size_t wg, local;
  } cases[] = {{"wg 64, 16 KiB", 64, 16 * KIB}, {"256 B local", 0, 256}, {"wg 1", 1, 0}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    dynb_ctx *ctx = limited_ctx(cases[i].wg, cases[i].local, 64 * MIB);
    red_run(ctx, dt, in, got);
    red_run(ctx, dt, in, again);
    char what[96];
    snprintf(what, sizeof what, "%s vs reference", cases[i].what);
    red_compare(what, dt, got, want);
    snprintf(what, sizeof what, "%s vs device limits", cases[i].what);
    red_compare(what, dt, got, base);
    assert_memory_equal(got, again, sizeof *got);
    dynb_ctx_free(ctx);
  }
  free(in), free(want), free(base), free(got), free(again);
  dynb_ctx_free(plain);
}

/* ---- launches and allocations beyond a limit ---------------------------------------------- */

static void assert_error_mentions(dynb_ctx *ctx, const char *text) {
  const char *msg = dynb_ctx_last_error(ctx);
  if (!strstr(msg, text)) fail_msg("error \"%s\" does not mention \"%s\"", msg, text);
}

/* An explicit work-group over the cap, a dimension over its item limit,
 * local memory that cannot hold even one item's scratch and a tensor over
 * the largest allocation each fail before anything runs, saying which
 * limit and by how much. */
static void beyond_a_limit_fails_clearly(void **state) {
  (void)state;
  dynb_ctx *ctx = gpu_like_ctx();
  const int64_t d4[4] = {2, 3, 5, 7}, c1 = 3;
  dynb__tensor x = tu_upload(ctx, DYNB_F32, 4, d4, NULL);
  dynb__tensor out = tu_upload(ctx, DYNB_F32, 1, &c1, NULL);
  dynb__launch l;
  TU_OK(ctx, dynb__launch_begin(&l, ctx, "channel", "dynb_channel_sum", DYNB_F32));
  dynb__arg_int(&l, 2), dynb__arg_int(&l, 3), dynb__arg_int(&l, 35);
  dynb__arg_tensor(&l, &x), dynb__arg_tensor(&l, &out), dynb__arg_int(&l, 0);
  dynb__arg_local(&l, 128 * 4);
  size_t global = 3 * 128, local = 128;
  TU_EXPECT_STATUS(ctx, dynb__launch_run(&l, 1, &global, &local), DYNB_STATUS_UNSUPPORTED);
  assert_error_mentions(ctx, "dynb_channel_sum");
  assert_error_mentions(ctx, "CL_DEVICE_MAX_WORK_ITEM_SIZES");
  /* Within the per-dimension limit but over the group limit: 2-D 32×4. */
  size_t g2[2] = {32, 4}, l2[2] = {32, 4};
  TU_EXPECT_STATUS(ctx, dynb__launch_run(&l, 2, g2, l2), DYNB_STATUS_UNSUPPORTED);
  assert_error_mentions(ctx, "CL_KERNEL_WORK_GROUP_SIZE");
  /* Two bytes of local memory hold not even one float of scratch: the
   * reduction says so instead of failing in the driver. */
  dynb__limits tiny = {0, {0, 0, 0}, 2, 0};
  dynb__ctx_clamp_limits(ctx, &tiny);
  TU_EXPECT_STATUS(ctx, dynb__channel_sum(ctx, &x, &out, false), DYNB_STATUS_UNSUPPORTED);
  assert_error_mentions(ctx, "CL_DEVICE_LOCAL_MEM_SIZE");
  /* Allocations: 64 MiB is allowed, one float more is not. */
  dynb__tensor big;
  const int64_t fits = (int64_t)(64 * MIB / 4), over = fits + 1;
  TU_OK(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 1, &fits, &big));
  dynb__tensor_release(&big);
  TU_EXPECT_STATUS(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 1, &over, &big),
                   DYNB_STATUS_OUT_OF_DEVICE_MEMORY);
  assert_error_mentions(ctx, "67108868 bytes");
  assert_error_mentions(ctx, "CL_DEVICE_MAX_MEM_ALLOC_SIZE");
  dynb__tensor_release(&x), dynb__tensor_release(&out);
  dynb_ctx_free(ctx);
}

/* Convolution routes whose work exceeds the largest allocation are neither
 * timed nor chosen: at this shape im2col's work (pixels × (Cin·9 + Cout))
 * is 92160 elements, over the 65536 floats of the cap, the direct routes'
 * at most 23040. (Timing every route would allocate im2col's work and
 * fail; choosing im2col would return work over the cap.) */
static void conv_routes_fit_the_allocation_cap(void **state) {
  (void)state;
  dynb_ctx *ctx = limited_ctx(0, 0, 64 * KIB * 4);
  ctx->conv_policy = DYNB__CONV_AUTO;
  size_t work = 0;
  TU_OK(ctx, dynb__conv2d_prepare(ctx, DYNB_F32, 8, 8, 8, 12, 12, 3, &work));
  assert_true(work > 0 && work * 4 <= 64 * KIB * 4);
  dynb_ctx_free(ctx);
}

/* ---- whole networks ------------------------------------------------------------------------- */

/* A small network over 12×12 inputs whose reductions span more than one
 * clamped work-group (batch norms over 8·12·12 values), with both norms,
 * two schemes and time regularisation. */
static void limits_spec(dynb__net_spec *s, int width, double time_reg) {
  memset(s, 0, sizeof *s);
  s->in_channels = 1, s->in_height = 12, s->in_width = 12, s->classes = 3;
  s->open_width = width, s->open_kernel = 3, s->open_norm = DYNB_NORM_BATCH;
  s->open_act = DYNB_ACT_RELU;
  s->nblocks = 2;
  for (int b = 0; b < 2; b++) {
    dynb__block_spec *bs = &s->blocks[b];
    bs->width = width;
    bs->layer = (dynb__layer){b ? DYNB_LAYER_DOUBLESYM : DYNB_LAYER_DOUBLE,
                              b ? DYNB_NORM_TV : DYNB_NORM_BATCH, DYNB_ACT_TANH, width, 3};
    assert_true(dynb__tableau_builtin("rk4", &bs->tableau));
    bs->nstates = 3;
    bs->t_states[0] = 0, bs->t_states[1] = 0.5, bs->t_states[2] = 1;
    bs->ncontrols = 2;
    bs->t_controls[0] = 0, bs->t_controls[1] = 1;
  }
  s->connect_norm = DYNB_NORM_BATCH, s->connect_act = DYNB_ACT_RELU;
  s->head_width = width;
  s->time_reg = time_reg;
}

enum { BATCH = 8, STEPS = 3 };

/* Trains a fresh network (seed 7) for STEPS steps of forward, time
 * regularisation, backward and SGD on one fixed batch; returns each step's
 * loss followed by every trainable tensor's final value. */
static double *train_run(dynb_ctx *ctx, dynb_dtype dt, dynb_memory_mode mode, double time_reg,
                         size_t *count, size_t *buffers) {
  static dynb__net_spec spec;
  limits_spec(&spec, 8, time_reg);
  dynb__net *net;
  dynb__plan *plan;
  dynb__optimizer *opt;
  dynb__timereg *reg;
  const int64_t one = 1;
  dynb__optim_desc od = dynb__optim_desc_default();
  TU_OK(ctx, dynb__net_create(ctx, &spec, dt, &net));
  TU_OK(ctx, dynb__net_init(net, 7));
  TU_OK(ctx, dynb__plan_build(net, BATCH, mode, &plan));
  TU_OK(ctx, dynb__optimizer_create(net, &od, &opt));
  TU_OK(ctx, dynb__timereg_create(net, &reg));
  dynb__tensor reg_value = tu_upload(ctx, dt, 1, &one, NULL);
  if (buffers) *buffers = dynb__plan_buffers(plan);
  tu_rng r = tu_rng_seed(19);
  double *x = tu_random(&r, BATCH * 144, -1, 1);
  int32_t labels[BATCH];
  for (int i = 0; i < BATCH; i++) labels[i] = i % 3;
  tu_write(ctx, dynb__plan_input(plan), x);
  TU_OK(ctx, dynb__tensor_write(ctx, dynb__plan_labels(plan), labels));
  size_t total = STEPS;
  for (size_t i = 0; i < net->ntensors; i++)
    if (net->tensors[i].trainable) total += dynb__tensor_numel(&net->tensors[i].value);
  double *out = malloc(total * sizeof *out);
  for (int s = 0; s < STEPS; s++) {
    double loss[2];
    TU_OK(ctx, dynb__net_zero_grads(net));
    TU_OK(ctx, dynb__plan_forward(plan, true));
    TU_OK(ctx, dynb__timereg_apply(reg, &reg_value));
    TU_OK(ctx, dynb__plan_backward(plan, false));
    TU_OK(ctx, dynb__optimizer_step(opt, 0.05));
    tu_download(ctx, dynb__plan_loss(plan), loss);
    out[s] = loss[0];
  }
  size_t at = STEPS;
  for (size_t i = 0; i < net->ntensors; i++)
    if (net->tensors[i].trainable) {
      tu_download(ctx, &net->tensors[i].value, out + at);
      at += dynb__tensor_numel(&net->tensors[i].value);
    }
  *count = total;
  free(x);
  dynb__tensor_release(&reg_value);
  dynb__timereg_free(reg);
  dynb__optimizer_free(opt);
  dynb__plan_free(plan);
  dynb__net_free(net);
  return out;
}

/* Three training steps under the GPU-like clamps against the same steps
 * under the device's limits. The routes are fixed (wide kernels) so that
 * only the reduction trees differ: every reduction of 8·12·12 = 1152
 * values now runs in groups of 64 rather than 256. Bound: as for
 * red_compare, each sum's rounding is below n·u·Σ|x| ≈ 1152²·u relative to
 * values of order 1 (1.5e-10 in double); three steps of SGD at rate 0.05
 * pass it on with a gain of a few units; 1e3·1152²·u leaves room for that
 * (1.5e-7 in double) and is far below what a dropped or doubled element
 * gives (order 1e-3). The clamped run also repeats bit for bit. Without
 * time regularisation: its subgradient jumps by α·h·lr where two control
 * points are equal (they start so), and rounding-level differences in
 * them pick either side of the jump. */
static void training_matches_under_clamps(void **state) {
  (void)state;
  dynb_ctx *plain = tu_ctx(), *ctx = gpu_like_ctx(), *ctx2 = gpu_like_ctx();
  plain->conv_policy = ctx->conv_policy = ctx2->conv_policy = DYNB__CONV_WIDE;
  dynb_dtype dt = test_real(plain);
  size_t n0, n1, n2;
  double *base = train_run(plain, dt, DYNB_MEMORY_CHECKPOINT, 0, &n0, NULL);
  double *got = train_run(ctx, dt, DYNB_MEMORY_CHECKPOINT, 0, &n1, NULL);
  double *again = train_run(ctx2, dt, DYNB_MEMORY_CHECKPOINT, 0, &n2, NULL);
  assert_int_equal(n0, n1);
  assert_int_equal(n1, n2);
  for (int s = 0; s < STEPS; s++) assert_true(isfinite(base[s]) && base[s] > 0);
  const double tol = 1e3 * 1152.0 * 1152.0 * tu_unit(dt);
  tu_assert_close("clamped training losses", got, base, STEPS, tol, tol);
  tu_assert_close("clamped training parameters", got + STEPS, base + STEPS, n0 - STEPS, tol, tol);
  assert_memory_equal(got, again, n1 * sizeof *got);
  free(base), free(got), free(again);
  dynb_ctx_free(plain), dynb_ctx_free(ctx), dynb_ctx_free(ctx2);
}

/* A plan whose arenas exceed the largest allocation splits them into
 * several buffers and trains to the same bits as the unsplit plan (the
 * split moves tensors, not arithmetic). The cap is 65536 elements rather
 * than 64 MiB so that the network stays small enough to train in a second:
 * splitting depends on the ratio of arena to cap, not on their size. Here
 * a state is 8·8·12·12 = 9216 elements; the first block's store-mode keep
 * arena (two steps of rk4: stage inputs and caches) is over 290000
 * elements, and no single tensor is over the cap. Both memory modes. */
static void split_plan_trains_bitwise(void **state) {
  (void)state;
  dynb_ctx *plain = tu_ctx();
  dynb_dtype dt = test_real(plain);
  /* 65536 elements: 512 KiB in double, 256 KiB in float. */
  dynb_ctx *split = limited_ctx(0, 0, 64 * KIB * dynb__dtype_size(dt));
  plain->conv_policy = split->conv_policy = DYNB__CONV_WIDE;
  for (int m = 0; m < 2; m++) {
    dynb_memory_mode mode = m ? DYNB_MEMORY_CHECKPOINT : DYNB_MEMORY_STORE;
    size_t n0, n1, b0, b1;
    double *base = train_run(plain, dt, mode, 0.01, &n0, &b0);
    double *got = train_run(split, dt, mode, 0.01, &n1, &b1);
    print_message("mode %d: %zu buffers unsplit, %zu split\n", m, b0, b1);
    assert_true(b1 > b0 + 2);
    assert_int_equal(n0, n1);
    assert_true(isfinite(base[STEPS - 1]));
    assert_memory_equal(got, base, n0 * sizeof *got);
    free(base), free(got);
  }
  dynb_ctx_free(plain), dynb_ctx_free(split);
}

/* A block that allocates its own arenas splits them too: the first block
 * of the network, prepared alone in store mode for a batch of 8 at 12×12
 * (keep arena over 290000 elements, cap 65536), runs forward and backward
 * to the same bits as in one buffer each, and holds more buffers. */
static double *block_run(dynb_ctx *ctx, dynb_dtype dt, size_t *count, size_t *bytes) {
  static dynb__net_spec spec;
  limits_spec(&spec, 8, 0);
  dynb__net *net;
  TU_OK(ctx, dynb__net_create(ctx, &spec, dt, &net));
  TU_OK(ctx, dynb__net_init(net, 7));
  dynb__block *b = net->blocks[0];
  TU_OK(ctx, dynb__block_prepare(b, BATCH, 12, 12, DYNB_MEMORY_STORE, NULL, NULL));
  *bytes = dynb__block_buffer_bytes(b);
  const int64_t d[4] = {BATCH, 8, 12, 12};
  size_t n = (size_t)BATCH * 8 * 144;
  tu_rng r = tu_rng_seed(23);
  double *x = tu_random(&r, n, -1, 1), *dout = tu_random(&r, n, -1, 1);
  dynb__tensor tx = tu_upload(ctx, dt, 4, d, x), ty = tu_upload(ctx, dt, 4, d, NULL);
  dynb__tensor tdo = tu_upload(ctx, dt, 4, d, dout), tdx = tu_upload(ctx, dt, 4, d, NULL);
  TU_OK(ctx, dynb__block_forward(b, &tx, &ty, true));
  TU_OK(ctx, dynb__block_backward(b, &tx, &tdo, &tdx));
  size_t np = dynb__tensor_numel(dynb__block_grads(b));
  double *out = malloc((2 * n + np) * sizeof *out);
  tu_download(ctx, &ty, out);
  tu_download(ctx, &tdx, out + n);
  tu_download(ctx, dynb__block_grads(b), out + 2 * n);
  *count = 2 * n + np;
  dynb__tensor_release(&tx), dynb__tensor_release(&ty);
  dynb__tensor_release(&tdo), dynb__tensor_release(&tdx);
  free(x), free(dout);
  dynb__net_free(net);
  return out;
}

static void block_own_arenas_split_bitwise(void **state) {
  (void)state;
  dynb_ctx *plain = tu_ctx();
  dynb_dtype dt = test_real(plain);
  dynb_ctx *split = limited_ctx(0, 0, 64 * KIB * dynb__dtype_size(dt));
  dynb__ctx_inject_fault(split, DYNB__FAULT_BUFFER, 0); /* counts live buffers, fails none */
  plain->conv_policy = split->conv_policy = DYNB__CONV_WIDE;
  size_t n0, n1, bytes0, bytes1;
  double *base = block_run(plain, dt, &n0, &bytes0);
  double *got = block_run(split, dt, &n1, &bytes1);
  assert_int_equal(n0, n1);
  assert_memory_equal(got, base, n0 * sizeof *got);
  /* Each page is at most the cap; the keep arena alone is several caps. */
  assert_true(bytes1 > 4 * 64 * KIB * dynb__dtype_size(dt));
  assert_int_equal(tu_live_buffers_settled(split), 0);
  free(base), free(got);
  dynb_ctx_free(plain), dynb_ctx_free(split);
}

/* A tensor larger than the largest allocation cannot be split: the plan
 * fails naming it, with both sizes. At a 128 KiB cap every activation of
 * the network (72 KiB in double, 36 KiB in float) fits, but a block's stage
 * cache (three states) does not; at 32 KiB the first activation does not. */
static void plan_names_a_tensor_too_large(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb_dtype dt = test_real(ctx);
  size_t es = dynb__dtype_size(dt);
  dynb_ctx_free(ctx);
  static dynb__net_spec spec;
  limits_spec(&spec, 8, 0.01);
  const struct {
    uint64_t cap;
    const char *names;
  } cases[] = {{16 * KIB * es, "block 0: block stage cache"}, {4 * KIB * es, "plan (batch 8): "}};
  for (size_t i = 0; i < 2; i++) {
    ctx = limited_ctx(0, 0, cases[i].cap);
    ctx->conv_policy = DYNB__CONV_WIDE;
    dynb__ctx_inject_fault(ctx, DYNB__FAULT_BUFFER, 0); /* counts live buffers, fails none */
    dynb__net *net;
    dynb__plan *plan = NULL;
    TU_OK(ctx, dynb__net_create(ctx, &spec, dt, &net));
    TU_EXPECT_STATUS(ctx, dynb__plan_build(net, BATCH, DYNB_MEMORY_STORE, &plan),
                     DYNB_STATUS_OUT_OF_DEVICE_MEMORY);
    assert_null(plan);
    print_message("%s\n", dynb_ctx_last_error(ctx));
    assert_error_mentions(ctx, cases[i].names);
    assert_error_mentions(ctx, "CL_DEVICE_MAX_MEM_ALLOC_SIZE");
    char cap[32];
    snprintf(cap, sizeof cap, "%llu bytes", (unsigned long long)cases[i].cap);
    assert_error_mentions(ctx, cap);
    dynb__net_free(net);
    assert_int_equal(tu_live_buffers_settled(ctx), 0);
    dynb_ctx_free(ctx);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(clamps_reach_the_reduction_sizes),
      cmocka_unit_test(gemm_candidates_fit_the_limits),
      cmocka_unit_test(reductions_match_under_clamps),
      cmocka_unit_test(beyond_a_limit_fails_clearly),
      cmocka_unit_test(conv_routes_fit_the_allocation_cap),
      cmocka_unit_test(training_matches_under_clamps),
      cmocka_unit_test(split_plan_trains_bitwise),
      cmocka_unit_test(block_own_arenas_split_bitwise),
      cmocka_unit_test(plan_names_a_tensor_too_large),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
