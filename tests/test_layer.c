/* Layer functions (SPEC §1.2): θ's layout and names, forward passes
 * against the reference in float and double for every kind, norm and mode,
 * backward passes against central differences, argument checks. */
#include <math.h>

#include "testutil.h"
#include "model/model.h"
#include "ref/ref.h"

static const dynb_layer_kind kinds[] = {DYNB_LAYER_DOUBLESYM, DYNB_LAYER_DOUBLE,
                                        DYNB_LAYER_PREACT};
static const dynb_norm_kind norms[] = {DYNB_NORM_NONE, DYNB_NORM_TV, DYNB_NORM_BATCH};

static size_t param_count(const dynb__layer *l) {
  size_t p = 0;
  dynb__layer_params(l, NULL, &p);
  return p;
}

static size_t running_count(const dynb__layer *l) {
  return (size_t)dynb__layer_batch_norms(l) * 2 * (size_t)l->channels;
}

/* Writes `values` into θ's tensor `name`. */
static void set_param(const dynb__layer *l, double *theta, const char *name, const double *values) {
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  int count = dynb__layer_params(l, e, NULL);
  for (int i = 0; i < count; i++) {
    if (strcmp(e[i].name, name) != 0) continue;
    size_t n = 1;
    for (int d = 0; d < e[i].ndim; d++) n *= (size_t)e[i].dims[d];
    memcpy(theta + e[i].offset, values, n * sizeof *values);
    return;
  }
  fail_msg("no parameter %s", name);
}

/* ---- The reference on hand-computed cases -------------------------------- */

static void ref_hand_checked(void **state) {
  (void)state;
  double f[4], run[4], theta[16];
  /* doublesym, no norm, relu, C = 1, k = 1, K = 2, b₁ = -1, b₂ = 0.5, on a
   * 1×2 map y = (3, 0): z = 2y - 1 = (5, -1), σ(z) = (5, 0), Kᵀσ + b₂ =
   * (10.5, 0.5), f = (-10.5, -0.5). */
  dynb__layer l = {DYNB_LAYER_DOUBLESYM, DYNB_NORM_NONE, DYNB_ACT_RELU, 1, 1};
  set_param(&l, theta, "conv.weight", (double[]){2});
  set_param(&l, theta, "conv.bias", (double[]){-1});
  set_param(&l, theta, "convt.bias", (double[]){0.5});
  ref_layer_f(&l, 1, 1, 2, theta, (double[]){3, 0}, 1, NULL, f, NULL);
  assert_true(f[0] == -10.5 && f[1] == -0.5);

  /* double, tv, identity, C = 2, k = 1, y = (1, 1): K₁ = 100 I, b₁ =
   * (200, 300) give z₁ = (300, 400), whose tv norm is (0.6, 0.8)·(1 -
   * 2e-10) (β₁ = 0); K₂ = 5 I, b₂ = 0 give z₂ ≈ (3, 4), normalised
   * (0.6, 0.8)/sqrt(1 + 4e-6) = (0.5999988, 0.7999984) to 1e-11; with β₂ =
   * (1, -1), f = (1.5999988, -0.2000016). */
  l = (dynb__layer){DYNB_LAYER_DOUBLE, DYNB_NORM_TV, DYNB_ACT_IDENTITY, 2, 1};
  set_param(&l, theta, "conv1.weight", (double[]){100, 0, 0, 100});
  set_param(&l, theta, "conv1.bias", (double[]){200, 300});
  set_param(&l, theta, "conv2.weight", (double[]){5, 0, 0, 5});
  set_param(&l, theta, "conv2.bias", (double[]){0, 0});
  set_param(&l, theta, "norm1.bias", (double[]){0, 0});
  set_param(&l, theta, "norm2.bias", (double[]){1, -1});
  ref_layer_f(&l, 1, 1, 1, theta, (double[]){1, 1}, 1, NULL, f, NULL);
  assert_true(fabs(f[0] - 1.5999988) < 1e-9 && fabs(f[1] + 0.2000016) < 1e-9);

  /* preact, batch (training), relu, C = 1, k = 1, N = 2, y = (-1, 2):
   * σ(y) = (0, 2); K₁ = 1, b₁ = 1: z₁ = (1, 3), mean 2, variance 1
   * (unbiased 2); γ₁ = 2, β₁ = 0.5: a₁ = ±2/sqrt(1.00001) + 0.5 =
   * (-1.49999, 2.49999) to 1e-10; σ(a₁) = (0, 2.49999); K₂ = 2, b₂ = 0:
   * z₂ = (0, 4.99998), mean 2.49999, variance 2.49999² (unbiased twice
   * that, 12.4999); normalised ±(1 - 1e-5 / (2 · 2.49999²)) = ±(1 -
   * 8.000064e-7); γ₂ = 1, β₂ = -1: f = (-1.9999992, -8.000064e-7).
   * Running statistics from (0, 1): norm1 (0.2, 0.9 + 0.2 = 1.1), norm2
   * (0.249999, 0.9 + 1.24999 = 2.14999). */
  l = (dynb__layer){DYNB_LAYER_PREACT, DYNB_NORM_BATCH, DYNB_ACT_RELU, 1, 1};
  set_param(&l, theta, "conv1.weight", (double[]){1});
  set_param(&l, theta, "conv1.bias", (double[]){1});
  set_param(&l, theta, "conv2.weight", (double[]){2});
  set_param(&l, theta, "conv2.bias", (double[]){0});
  set_param(&l, theta, "norm1.weight", (double[]){2});
  set_param(&l, theta, "norm1.bias", (double[]){0.5});
  set_param(&l, theta, "norm2.weight", (double[]){1});
  set_param(&l, theta, "norm2.bias", (double[]){-1});
  run[0] = 0, run[1] = 1, run[2] = 0, run[3] = 1;
  ref_layer_f(&l, 2, 1, 1, theta, (double[]){-1, 2}, 1, run, f, NULL);
  assert_true(fabs(f[0] + 1.9999992) < 1e-10 && fabs(f[1] + 8.000064e-7) < 1e-10);
  assert_true(fabs(run[0] - 0.2) < 1e-12 && fabs(run[1] - 1.1) < 1e-12);
  assert_true(fabs(run[2] - 0.249999) < 1e-10 && fabs(run[3] - 2.14999) < 1e-9);

  /* doublesym, batch (evaluation), identity, C = 1, k = 1, y = 1: K = 2,
   * b₁ = 1: z = 3; running mean 1, variance 3.99999 (+ ε = 4): (3 - 1)/2
   * = 1; γ = 3, β = 0.5: 3.5; Kᵀ · 3.5 + b₂ (-1) = 6; f = -6. Evaluation
   * leaves the running statistics alone. */
  l = (dynb__layer){DYNB_LAYER_DOUBLESYM, DYNB_NORM_BATCH, DYNB_ACT_IDENTITY, 1, 1};
  set_param(&l, theta, "conv.weight", (double[]){2});
  set_param(&l, theta, "conv.bias", (double[]){1});
  set_param(&l, theta, "convt.bias", (double[]){-1});
  set_param(&l, theta, "norm.weight", (double[]){3});
  set_param(&l, theta, "norm.bias", (double[]){0.5});
  run[0] = 1, run[1] = 3.99999;
  ref_layer_f(&l, 1, 1, 1, theta, (double[]){1}, 0, run, f, NULL);
  assert_true(fabs(f[0] + 6) < 1e-12 && run[0] == 1 && run[1] == 3.99999);
}

/* ---- θ's layout -------------------------------------------------------------- */

/* The names of SPEC §3 for one kind and norm, in any order. */
static int spec_names(const dynb__layer *l, const char *names[DYNB_LAYER_MAX_PARAMS]) {
  int n = 0;
  bool batch = l->norm == DYNB_NORM_BATCH, any = l->norm != DYNB_NORM_NONE;
  if (l->kind == DYNB_LAYER_DOUBLESYM) {
    names[n++] = "conv.weight", names[n++] = "conv.bias", names[n++] = "convt.bias";
    if (batch) names[n++] = "norm.weight";
    if (any) names[n++] = "norm.bias";
    return n;
  }
  if (l->kind == DYNB_LAYER_HAMILTONIAN) { /* SPEC §3: one K, two biases, two norms */
    names[n++] = "conv.weight", names[n++] = "convt.bias", names[n++] = "conv.bias";
    if (batch) names[n++] = "norm1.weight", names[n++] = "norm2.weight";
    if (any) names[n++] = "norm1.bias", names[n++] = "norm2.bias";
    return n;
  }
  names[n++] = "conv1.weight", names[n++] = "conv1.bias";
  names[n++] = "conv2.weight", names[n++] = "conv2.bias";
  if (batch) names[n++] = "norm1.weight", names[n++] = "norm2.weight";
  if (any) names[n++] = "norm1.bias", names[n++] = "norm2.bias";
  return n;
}

static void check_layout(const dynb__layer *l) {
  const char *want[DYNB_LAYER_MAX_PARAMS];
  int nwant = spec_names(l, want);
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  size_t total = 0, again = 0, sum = 0;
  int count = dynb__layer_params(l, e, &total);
  assert_int_equal(count, nwant);
  assert_int_equal(dynb__layer_params(l, NULL, &again), count);
  assert_int_equal(again, total);
  int64_t c = l->channels, k = l->kernel;
  for (int i = 0; i < count; i++) {
    int found = 0;
    for (int j = 0; j < nwant; j++) found += strcmp(e[i].name, want[j]) == 0;
    if (found != 1) fail_msg("%s/%s: unexpected parameter %s", dynb__layer_name(l->kind),
                             dynb__norm_name(l->norm), e[i].name);
    bool weight = strstr(e[i].name, "conv") && strstr(e[i].name, ".weight");
    assert_int_equal(e[i].is_norm, strncmp(e[i].name, "norm", 4) == 0);
    /* Convolution weights are [out, in, kh, kw]; everything else [C]. */
    assert_int_equal(e[i].ndim, weight ? 4 : 1);
    assert_int_equal(e[i].dims[0], c);
    if (weight) assert_true(e[i].dims[1] == c && e[i].dims[2] == k && e[i].dims[3] == k);
    /* Stored back to back in listing order. */
    assert_int_equal(e[i].offset, sum);
    sum += weight ? (size_t)(c * c * k * k) : (size_t)c;
  }
  assert_int_equal(total, sum);
  /* By hand: the convolutions, two biases, and C (tv) or 2C (batch) per norm. */
  size_t per_norm = (size_t)c * (size_t)l->norm;
  size_t want_total = l->kind == DYNB_LAYER_DOUBLESYM
                          ? (size_t)(c * c * k * k + 2 * c) + per_norm
                      : l->kind == DYNB_LAYER_HAMILTONIAN
                          ? (size_t)(c * c * k * k + 2 * c) + 2 * per_norm
                          : (size_t)(2 * c * c * k * k + 2 * c) + 2 * per_norm;
  assert_int_equal(total, want_total);
  int nbn = l->norm != DYNB_NORM_BATCH ? 0 : l->kind == DYNB_LAYER_DOUBLESYM ? 1 : 2;
  assert_int_equal(dynb__layer_batch_norms(l), nbn);
  assert_true(dynb__layer_sign(l) == (l->kind == DYNB_LAYER_DOUBLESYM ? -1.0 : 1.0));
}

static void params_follow_spec_names(void **state) {
  (void)state;
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++)
      for (int c = 1; c <= 5; c += 2)
        for (int k = 1; k <= 3; k += 2) {
          dynb__layer l = {kinds[a], norms[b], DYNB_ACT_RELU, c, k};
          check_layout(&l);
          l.kind = DYNB_LAYER_HAMILTONIAN;
          check_layout(&l);
        }
  /* Names round-trip; unknown names are refused. */
  for (int a = 0; a < 3; a++) {
    dynb_layer_kind k;
    dynb_norm_kind n;
    assert_true(dynb__layer_parse(dynb__layer_name(kinds[a]), &k) && k == kinds[a]);
    assert_true(dynb__norm_parse(dynb__norm_name(norms[a]), &n) && n == norms[a]);
  }
  dynb_layer_kind k;
  dynb_norm_kind n;
  assert_false(dynb__layer_parse("Doublesym", &k));
  assert_false(dynb__norm_parse("instance", &n));
  assert_string_equal(dynb__layer_name(DYNB_LAYER_PREACT), "preact");
  assert_true(dynb__layer_parse("hamiltonian", &k) && k == DYNB_LAYER_HAMILTONIAN);
  assert_string_equal(dynb__norm_name(DYNB_NORM_TV), "tv");
}

static void validate_refuses_bad_layers(void **state) {
  (void)state;
  char err[128];
  const dynb__layer bad[] = {
      {DYNB_LAYER_DOUBLE, DYNB_NORM_TV, DYNB_ACT_RELU, 3, 2},     /* even kernel */
      {DYNB_LAYER_DOUBLE, DYNB_NORM_TV, DYNB_ACT_RELU, 3, 0},     /* no kernel */
      {DYNB_LAYER_DOUBLE, DYNB_NORM_TV, DYNB_ACT_RELU, 0, 3},     /* no channels */
      {DYNB_LAYER_DOUBLE, DYNB_NORM_TV, DYNB_ACT_RELU, -2, 3},    /* negative channels */
      {(dynb_layer_kind)4, DYNB_NORM_TV, DYNB_ACT_RELU, 3, 3},    /* unknown kind (3 is hamiltonian) */
      {DYNB_LAYER_DOUBLE, (dynb_norm_kind)3, DYNB_ACT_RELU, 3, 3}, /* unknown norm */
      {DYNB_LAYER_DOUBLE, DYNB_NORM_TV, (dynb_act)4, 3, 3},       /* unknown activation */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    assert_int_equal(dynb__layer_validate(&bad[i], err, sizeof err), DYNB_STATUS_SPEC_ERROR);
    assert_true(strlen(err) > 0);
  }
  dynb__layer good = {DYNB_LAYER_PREACT, DYNB_NORM_BATCH, DYNB_ACT_LEAKY_RELU, 1, 15};
  assert_int_equal(dynb__layer_validate(&good, err, sizeof err), DYNB_OK);
}

/* ---- Device buffers of one evaluation --------------------------------------- */

/* θ and the cache sit at offsets inside larger buffers (as a block's
 * interpolated θ and its per-stage caches do); the cache, scratch and
 * output start as NaN, so that reading anything before writing it shows. */
typedef struct bufs {
  dynb__tensor theta, theta_base, x, cache, cache_base, work, out, running;
  dynb__layer_eval e;
} bufs;

static double *nans(size_t n) {
  double *x = malloc((n ? n : 1) * sizeof *x);
  for (size_t i = 0; i < n; i++) x[i] = NAN;
  return x;
}

static void bufs_make(dynb_ctx *ctx, dynb_dtype dt, const dynb__layer *l, int64_t n, int64_t h,
                      int64_t w, const double *theta, const double *x, const double *running,
                      bool train, bufs *b) {
  memset(b, 0, sizeof *b);
  int64_t dims[4] = {n, l->channels, h, w}, p = (int64_t)param_count(l);
  int64_t cs = (int64_t)dynb__layer_cache_size(l, n, h, w);
  int64_t ws = (int64_t)dynb__layer_work_size(l, n, h, w), rn = (int64_t)running_count(l);
  double *fill = nans((size_t)(cs > ws ? cs : ws) + (size_t)(n * l->channels * h * w));
  b->theta = tu_upload_at(ctx, dt, 1, &p, theta, 5, &b->theta_base);
  b->x = tu_upload(ctx, dt, 4, dims, x);
  b->cache = tu_upload_at(ctx, dt, 1, &cs, fill, 3, &b->cache_base);
  b->work = tu_upload(ctx, dt, 1, &ws, fill);
  b->out = tu_upload(ctx, dt, 4, dims, fill);
  if (running) b->running = tu_upload(ctx, dt, 1, &rn, running);
  b->e = (dynb__layer_eval){&b->theta, &b->x, &b->cache, running ? &b->running : NULL, train};
  free(fill);
}

static void bufs_free(bufs *b) {
  dynb__tensor_release(&b->theta_base);
  dynb__tensor_release(&b->x);
  dynb__tensor_release(&b->cache_base);
  dynb__tensor_release(&b->work);
  dynb__tensor_release(&b->out);
  if (b->running.mem) dynb__tensor_release(&b->running);
}

/* Random θ: weights and biases in [-0.6, 0.6], batch-norm scales in
 * [0.5, 1.5] (as trained ones are, around their initial 1), rounded to dt. */
static double *random_theta(tu_rng *r, dynb_dtype dt, const dynb__layer *l) {
  size_t p = param_count(l);
  double *theta = tu_random(r, p, -0.6, 0.6);
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  int count = dynb__layer_params(l, e, NULL);
  for (int i = 0; i < count; i++)
    if (strstr(e[i].name, "norm") && strstr(e[i].name, ".weight"))
      tu_fill(r, theta + e[i].offset, (size_t)l->channels, 0.5, 1.5);
  tu_round_to(dt, theta, p);
  return theta;
}

/* Running statistics: means in [-0.5, 0.5], variances in [0.5, 2]. */
static double *random_running(tu_rng *r, dynb_dtype dt, const dynb__layer *l) {
  size_t c = (size_t)l->channels, nbn = (size_t)dynb__layer_batch_norms(l);
  double *run = malloc((nbn * 2 * c + 1) * sizeof *run);
  for (size_t j = 0; j < nbn; j++) {
    tu_fill(r, run + 2 * j * c, c, -0.5, 0.5);
    tu_fill(r, run + (2 * j + 1) * c, c, 0.5, 2);
  }
  tu_round_to(dt, run, nbn * 2 * c);
  return run;
}

/* |got - want| <= tol (1 + |want|) everywhere; returns the largest
 * |got - want| / (1 + |want|). */
static double check_close(const char *what, const double *got, const double *want, size_t n,
                          double tol) {
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    double err = fabs(got[i] - want[i]) / (1 + fabs(want[i]));
    if (!(err <= tol))
      fail_msg("%s: element %zu is %.17g, expected %.17g (tol %g)", what, i, got[i], want[i],
               tol);
    if (err > worst) worst = err;
  }
  return worst;
}

/* ---- Forward against the reference -------------------------------------------
 * Error bound, relative to 1 + |value| (the values are of order 1): each
 * convolution sums K = C·k² ≤ 45 products of magnitude ≤ 0.6 plus a bias,
 * so Σ|terms| ≤ 27. Its rounding errors have random signs and grow like
 * √K: about √45 · u · 27 ≈ 180u per convolution, the worst-case K · u ·
 * 27 ≈ 1200u being out of reach in practice. Batch norm scales an error by
 * γ/σ_batch (γ ≤ 1.5 and σ_batch of order 1 on these data), tv by at most
 * 1/sqrt(Σ_c z²), of order 1 here, activations by at most 1, and the
 * second convolution adds its own 180u. 2e-5 in float (≈ 340u) covers that
 * with the norms' factor of about 2; in double the same count gives 1e-13.
 * A wrong term (a missed bias, a wrong tap, a swapped norm) moves values by
 * O(0.1), far above either. The running statistics are means and
 * variances of such values: the same bounds. */
static double fwd_tol(dynb_dtype dt) { return dt == DYNB_F32 ? 2e-5 : 1e-13; }

typedef struct fwd_shape {
  int c, k, n, h, w;
} fwd_shape;

/* C = 1, 3, 5; k = 1, 3; N = 1, 2; 7×5 maps and 1×1 maps (batch norm over
 * N·H·W = 1 and 2 values); 13×9 for a longer reduction. */
static const fwd_shape fwd_shapes[] = {
    {1, 1, 1, 7, 5}, {3, 3, 2, 7, 5}, {5, 3, 1, 1, 1}, {5, 1, 2, 1, 1}, {3, 3, 2, 13, 9}};
#define NFWD (sizeof fwd_shapes / sizeof fwd_shapes[0])

typedef enum mode { TRAIN_NO_RUNNING, TRAIN_RUNNING, EVAL } mode;
static const char *mode_name[] = {"train", "train+running", "eval"};

typedef struct fwd_worst {
  double out[2][3][3], run[2][3];
} fwd_worst;

static void forward_case(dynb_ctx *ctx, dynb_dtype dt, const dynb__layer *l, const fwd_shape *s,
                         mode md, fwd_worst *wr) {
  uint64_t seed = (uint64_t)(l->kind * 1000 + l->norm * 100 + l->act * 10 + md) * 31 +
                  (uint64_t)(s->c * 100 + s->k * 10 + s->n + s->h * 7);
  tu_rng r = tu_rng_seed(seed);
  size_t m = (size_t)s->n * s->c * s->h * s->w, nrun = running_count(l);
  bool batch = l->norm == DYNB_NORM_BATCH, train = md != EVAL;
  bool with_running = batch && md != TRAIN_NO_RUNNING;
  double *theta = random_theta(&r, dt, l), *x = tu_random(&r, m, -1, 1);
  tu_round_to(dt, x, m);
  double *run = random_running(&r, dt, l), *run0 = random_running(&r, dt, l);
  memcpy(run0, run, nrun * sizeof *run);
  bufs b;
  bufs_make(ctx, dt, l, s->n, s->h, s->w, theta, x, with_running ? run : NULL, train, &b);
  TU_OK(ctx, dynb__layer_forward(ctx, l, &b.e, &b.out, &b.work));
  double *got = malloc(m * sizeof *got), *want = malloc(m * sizeof *want);
  tu_download(ctx, &b.out, got);
  /* The device computes g with f = sign · g. */
  double sign = dynb__layer_sign(l);
  for (size_t i = 0; i < m; i++) got[i] *= sign;
  ref_layer_f(l, s->n, s->h, s->w, theta, x, train, with_running ? run : NULL, want, NULL);
  char what[160];
  snprintf(what, sizeof what, "layer %s %s/%s/%s C=%d k=%d %dx%dx%d %s", dynb__dtype_name(dt),
           dynb__layer_name(l->kind), dynb__norm_name(l->norm), dynb__act_name(l->act), s->c,
           s->k, s->n, s->h, s->w, mode_name[md]);
  double e = check_close(what, got, want, m, fwd_tol(dt));
  double *we = &wr->out[dt == DYNB_F64][l->kind][l->norm];
  *we = fmax(*we, e);
  if (with_running) {
    /* Updated in training (run holds the reference's update), untouched in
     * evaluation (the reference leaves run as it was). */
    double *got_run = malloc(nrun * sizeof *got_run);
    tu_download(ctx, &b.running, got_run);
    strcat(what, " running");
    e = check_close(what, got_run, run, nrun, fwd_tol(dt));
    if (md == EVAL)
      for (size_t i = 0; i < nrun; i++) assert_true(got_run[i] == run0[i]);
    double *wre = &wr->run[dt == DYNB_F64][l->kind];
    *wre = fmax(*wre, e);
    free(got_run);
  }
  bufs_free(&b);
  free(theta), free(x), free(run), free(run0), free(got), free(want);
}

static void forward_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  fwd_worst wr = {0};
  static const dynb_act acts[] = {DYNB_ACT_RELU, DYNB_ACT_TANH, DYNB_ACT_LEAKY_RELU,
                                  DYNB_ACT_IDENTITY};
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (int a = 0; a < 3; a++)
      for (int b = 0; b < 3; b++)
        for (size_t si = 0; si < NFWD; si++) {
          const fwd_shape *s = &fwd_shapes[si];
          /* Every activation meets every kind and norm over the shapes. */
          dynb__layer l = {kinds[a], norms[b], acts[(si + (size_t)a + (size_t)b) % 4], s->c,
                           s->k};
          bool single = s->n * s->h * s->w == 1;
          for (int md = 0; md < 3; md++) {
            /* Without batch norm there are no running statistics. Updating
             * them from one value per channel is an error (tested below). */
            if (md == TRAIN_RUNNING && (norms[b] != DYNB_NORM_BATCH || single)) continue;
            forward_case(ctx, dt, &l, s, (mode)md, &wr);
          }
        }
  }
  for (int d = 0; d < 2; d++)
    for (int a = 0; a < 3; a++) {
      for (int b = 0; b < 3; b++)
        printf("maxerr layer %s %s/%s: %.3g\n", d ? "f64" : "f32", dynb__layer_name(kinds[a]),
               dynb__norm_name(norms[b]), wr.out[d][a][b]);
      printf("maxerr layer %s %s/batch running: %.3g\n", d ? "f64" : "f32",
             dynb__layer_name(kinds[a]), wr.run[d][a]);
    }
  dynb_ctx_free(ctx);
}

/* ---- Backward against central differences ------------------------------------ */

typedef struct fd_user {
  const dynb__layer *l;
  int n, h, w;
  double *theta, *x, *running;
  int train;
  const double *wgt;
  double sign, *g;
  size_t m;
} fd_user;

/* L = Σ w ⊙ g with g = sign · f, the function the device differentiates. */
static double fd_loss(void *user) {
  fd_user *u = user;
  ref_layer_f(u->l, u->n, u->h, u->w, u->theta, u->x, u->train, u->train ? NULL : u->running,
              u->g, NULL);
  return u->sign * tu_dot(u->wgt, u->g, u->m);
}

/* Runs forward and backward on the device: dx (acc_dx = false, over NaN)
 * and ∂L/∂θ (onto random values, then subtracted). Then runs backward
 * again with acc_dx = true onto other random values and checks that both
 * dx and dtheta received exactly one more copy of the gradient. */
static void device_grads(dynb_ctx *ctx, dynb_dtype dt, const fd_user *u, double *dx,
                         double *dtheta) {
  const dynb__layer *l = u->l;
  size_t p = param_count(l), m = u->m;
  int64_t dims[4] = {u->n, l->channels, u->h, u->w}, pd = (int64_t)p;
  bufs b;
  bufs_make(ctx, dt, l, u->n, u->h, u->w, u->theta, u->x, u->train ? NULL : u->running,
            u->train, &b);
  TU_OK(ctx, dynb__layer_forward(ctx, l, &b.e, &b.out, &b.work));
  tu_rng r = tu_rng_seed(99);
  double *r_th = tu_random(&r, p, -1, 1), *r_dx = tu_random(&r, m, -1, 1), *fill = nans(m);
  tu_round_to(dt, r_th, p);
  tu_round_to(dt, r_dx, m);
  dynb__tensor tdout = tu_upload(ctx, dt, 4, dims, u->wgt);
  dynb__tensor tdx = tu_upload(ctx, dt, 4, dims, fill), tdth = tu_upload(ctx, dt, 1, &pd, r_th);
  TU_OK(ctx, dynb__layer_backward(ctx, l, &b.e, &tdout, &tdx, false, &tdth, &b.work));
  double *t1 = malloc(p * sizeof *t1), *t2 = malloc(p * sizeof *t2);
  double *want = malloc(p * sizeof *want), *dx2 = malloc(m * sizeof *dx2);
  double *want_dx = malloc(m * sizeof *want_dx);
  tu_download(ctx, &tdx, dx);
  tu_download(ctx, &tdth, t1);
  for (size_t i = 0; i < p; i++) dtheta[i] = t1[i] - r_th[i];
  /* Second call: the same (deterministic) gradients once more. Each sum
   * below rounds once in the device type: |error| <= u |result|, and
   * dtheta's extra error from forming t1 - r is u |t1|, so 4u relative to
   * 1 + |value| bounds both (|r| <= 1). */
  tu_write(ctx, &tdx, r_dx);
  TU_OK(ctx, dynb__layer_backward(ctx, l, &b.e, &tdout, &tdx, true, &tdth, &b.work));
  tu_download(ctx, &tdx, dx2);
  tu_download(ctx, &tdth, t2);
  for (size_t i = 0; i < m; i++) want_dx[i] = r_dx[i] + dx[i];
  for (size_t i = 0; i < p; i++) want[i] = t1[i] + dtheta[i];
  check_close("layer backward acc_dx", dx2, want_dx, m, 4 * tu_unit(dt));
  check_close("layer backward dtheta accumulates", t2, want, p, 4 * tu_unit(dt));
  dynb__tensor_release(&tdout), dynb__tensor_release(&tdx), dynb__tensor_release(&tdth);
  bufs_free(&b);
  free(r_th), free(r_dx), free(fill), free(t1), free(t2), free(want), free(dx2), free(want_dx);
}

static double max_abs(const double *x, size_t n) {
  double v = 0;
  for (size_t i = 0; i < n; i++) v = fmax(v, fabs(x[i]));
  return v;
}

/* Float gradients against the double ones (which the finite differences
 * check), relative to the largest gradient: backward chains about ten ops
 * (convolutions, norms, activations, channel sums), and a sum of K terms
 * errs by about √K · u · Σ|terms| with random signs; the longest are the
 * weight gradients' K = N·H·W = 40 per tap and the convolutions' C·k² =
 * 27, whose Σ|terms| is of the order of max|gradient|, so about 6u each
 * and ~20u over the chain (√10 growth). 2e-5 (≈ 340u) keeps a factor ~15
 * for the norms' amplification; a wrong term moves a gradient by a good
 * part of max|gradient|. */
static double compare_f32(const char *what, const double *g32, const double *g64, size_t n) {
  double scale = fmax(max_abs(g64, n), 1e-30), worst = 0;
  for (size_t i = 0; i < n; i++) {
    double err = fabs(g32[i] - g64[i]) / scale;
    if (!(err <= 2e-5))
      fail_msg("%s: element %zu is %.9g in f32, %.17g in f64", what, i, g32[i], g64[i]);
    worst = fmax(worst, err);
  }
  return worst;
}

/* One case: N = 2, C = 3, 3×3 kernels, 5×4 maps, all of x and θ. Data
 * are floats, so that the float run sees exactly the same numbers. With a
 * kinked activation (relu, leaky relu) the seed is chosen so that no
 * activation input lies within 1e-3 of 0: a step of 1e-6 moves them by at
 * most a few 1e-6, so no difference quotient straddles a kink. */
static void fd_case(dynb_ctx *ctx, const dynb__layer *l, bool train, double worst[2]) {
  enum { N = 2, H = 5, W = 4 };
  size_t m = (size_t)N * l->channels * H * W, p = param_count(l);
  bool kinked = l->act == DYNB_ACT_RELU || l->act == DYNB_ACT_LEAKY_RELU;
  fd_user u = {l, N, H, W, NULL, NULL, NULL, train, NULL, dynb__layer_sign(l), NULL, m};
  double margin = 0;
  for (uint64_t seed = 1; seed < 100; seed++) {
    free(u.theta), free(u.x), free(u.running);
    tu_rng r = tu_rng_seed(seed * 7919 + (uint64_t)(l->kind * 10 + l->norm) * 3 + train);
    u.theta = random_theta(&r, DYNB_F32, l);
    u.x = tu_random(&r, m, -1, 1);
    tu_round_to(DYNB_F32, u.x, m);
    u.running = random_running(&r, DYNB_F32, l);
    double *g = malloc(m * sizeof *g);
    ref_layer_f(l, N, H, W, u.theta, u.x, train, train ? NULL : u.running, g, &margin);
    free(g);
    if (!kinked || margin >= 1e-3) break;
  }
  assert_true(!kinked || margin >= 1e-3);
  tu_rng r = tu_rng_seed(5);
  double *wgt = tu_random(&r, m, -1, 1);
  tu_round_to(DYNB_F32, wgt, m);
  u.wgt = wgt;
  u.g = malloc(m * sizeof *u.g);
  double *dx = malloc(m * sizeof *dx), *dth = malloc(p * sizeof *dth);
  double *dx32 = malloc(m * sizeof *dx32), *dth32 = malloc(p * sizeof *dth32);
  device_grads(ctx, DYNB_F64, &u, dx, dth);
  device_grads(ctx, DYNB_F32, &u, dx32, dth32);
  char what[128];
  int len = snprintf(what, sizeof what, "layer %s/%s/%s %s", dynb__layer_name(l->kind),
                     dynb__norm_name(l->norm), dynb__act_name(l->act), train ? "train" : "eval");
  /* Central differences at step 1e-6: the truncation error h²·L‴/6 is
   * ~1e-12; rounding of L (Σ|w g| ≲ 200, so ~2e-14) over 2h is ~1e-8;
   * 1e-6 relative to max(1, |gradient|) leaves a factor 100 for both. */
  snprintf(what + len, sizeof what - (size_t)len, " d/dx");
  tu_check_gradient(what, fd_loss, &u, u.x, m, dx, 1e-6, 1e-6, 1000);
  worst[0] = fmax(worst[0], compare_f32(what, dx32, dx, m));
  snprintf(what + len, sizeof what - (size_t)len, " d/dtheta");
  tu_check_gradient(what, fd_loss, &u, u.theta, p, dth, 1e-6, 1e-6, 1000);
  worst[1] = fmax(worst[1], compare_f32(what, dth32, dth, p));
  free(u.theta), free(u.x), free(u.running), free(u.g), free(wgt);
  free(dx), free(dth), free(dx32), free(dth32);
}

static void gradients_match_finite_differences(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  static const dynb_act acts[] = {DYNB_ACT_TANH, DYNB_ACT_RELU, DYNB_ACT_LEAKY_RELU,
                                  DYNB_ACT_IDENTITY};
  double worst[2] = {0};
  for (int a = 0; a < 3; a++)
    /* none, tv, batch with batch statistics, batch in evaluation mode;
     * every kind meets every activation once. */
    for (int j = 0; j < 4; j++) {
      dynb__layer l = {kinds[a], norms[j < 3 ? j : 2], acts[(j - a + 4) % 4], 3, 3};
      fd_case(ctx, &l, j < 3, worst);
    }
  printf("maxerr layer backward f32 vs f64 dx: %.3g (of max |dx|)\n", worst[0]);
  printf("maxerr layer backward f32 vs f64 dtheta: %.3g (of max |dtheta|)\n", worst[1]);
  dynb_ctx_free(ctx);
}

/* ---- Argument checks -------------------------------------------------------------- */

/* Every element still NaN: nothing was enqueued that writes the tensor. */
static void assert_untouched(dynb_ctx *ctx, const dynb__tensor *t, const char *what) {
  size_t n = dynb__tensor_numel(t);
  double *v = malloc(n * sizeof *v);
  tu_download(ctx, t, v);
  for (size_t i = 0; i < n; i++)
    if (!isnan(v[i])) fail_msg("%s: element %zu was written (%g)", what, i, v[i]);
  free(v);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  /* The GEMM route takes the same work in every direction, so that one
   * element short of what the layer was prepared for fails its forward. */
  ctx->conv_policy = DYNB__CONV_GEMM;
  const dynb_dtype dt = DYNB_F32;
  const dynb__layer l = {DYNB_LAYER_DOUBLESYM, DYNB_NORM_BATCH, DYNB_ACT_RELU, 3, 3};
  const int64_t n = 2, h = 5, w = 4, p = (int64_t)param_count(&l);
  tu_rng r = tu_rng_seed(3);
  double *theta = random_theta(&r, dt, &l), *run = random_running(&r, dt, &l);
  double *x = tu_random(&r, (size_t)(n * 3 * h * w), -1, 1);
  bufs b;
  bufs_make(ctx, dt, &l, n, h, w, theta, x, run, true, &b);
  const dynb__tensor *out = &b.out, *work = &b.work;
  dynb__layer_eval e = b.e;
  const int64_t cs = (int64_t)dynb__layer_cache_size(&l, n, h, w);
  size_t prepared = 0;
  TU_OK(ctx, dynb__layer_prepare(ctx, &l, dt, n, h, w, &prepared));
  assert_true(prepared <= dynb__layer_work_size(&l, n, h, w));
  const int64_t ws = (int64_t)prepared, t12 = 2 * n * 3 * h * w - 1;
  const int64_t p_less = p - 1, p_more = p + 1, cs_less = cs - 1, ws_less = ws - 1, rn = 5;
  const int64_t xc2[4] = {n, 2, h, w}, x3[3] = {n, 3, h * w}, xh[4] = {n, 3, h + 1, w};
  dynb__tensor th_less = tu_upload(ctx, dt, 1, &p_less, NULL);
  dynb__tensor th_more = tu_upload(ctx, dt, 1, &p_more, NULL);
  dynb__tensor th_f64 = tu_upload(ctx, DYNB_F64, 1, &p, theta);
  dynb__tensor c_less = tu_upload(ctx, dt, 1, &cs_less, NULL);
  dynb__tensor w_less = tu_upload(ctx, dt, 1, &ws_less, NULL);
  dynb__tensor w_t12 = tu_upload(ctx, dt, 1, &t12, NULL);
  dynb__tensor x_c2 = tu_upload(ctx, dt, 4, xc2, NULL), x_r3 = tu_upload(ctx, dt, 3, x3, NULL);
  dynb__tensor x_h = tu_upload(ctx, dt, 4, xh, NULL), r_bad = tu_upload(ctx, dt, 1, &rn, NULL);
  dynb__tensor x_past = b.x;
  x_past.offset = 1; /* the same shape one element further: past the end */
#define FWD(ev, st) TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &l, ev, out, work), st)
#define WITH(field, value, st)          \
  do {                                  \
    dynb__layer_eval e2 = e;            \
    e2.field = value;                   \
    FWD(&e2, st);                       \
  } while (0)
  TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, NULL, &e, out, work),
                   DYNB_STATUS_INVALID_ARGUMENT);
  FWD(NULL, DYNB_STATUS_INVALID_ARGUMENT);
  WITH(x, NULL, DYNB_STATUS_INVALID_ARGUMENT);
  WITH(theta, NULL, DYNB_STATUS_INVALID_ARGUMENT);
  WITH(cache, NULL, DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &l, &e, NULL, work),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &l, &e, out, NULL),
                   DYNB_STATUS_INVALID_ARGUMENT);
  /* θ of the wrong size or dtype. */
  WITH(theta, &th_less, DYNB_STATUS_SHAPE_MISMATCH);
  WITH(theta, &th_more, DYNB_STATUS_SHAPE_MISMATCH);
  WITH(theta, &th_f64, DYNB_STATUS_INVALID_ARGUMENT);
  /* Cache or scratch one element short. */
  WITH(cache, &c_less, DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &l, &e, out, &w_less),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "layer: work holds"));
  /* Too short even for the layer's own two intermediates. */
  TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &l, &e, out, &w_t12),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "layer: work holds"));
  /* x with 2 channels for a 3-channel layer, of rank 3, past its buffer;
   * out of another shape. */
  WITH(x, &x_c2, DYNB_STATUS_SHAPE_MISMATCH);
  WITH(x, &x_r3, DYNB_STATUS_SHAPE_MISMATCH);
  WITH(x, &x_past, DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &l, &e, &x_h, work),
                   DYNB_STATUS_SHAPE_MISMATCH);
  /* Running statistics: of the wrong size; missing in evaluation mode. */
  WITH(running, &r_bad, DYNB_STATUS_SHAPE_MISMATCH);
  {
    dynb__layer_eval e2 = e;
    e2.train = false, e2.running = NULL;
    FWD(&e2, DYNB_STATUS_INVALID_ARGUMENT);
  }
  /* A layer without batch norm has no running statistics to take. */
  {
    dynb__layer tv = l;
    tv.norm = DYNB_NORM_TV;
    dynb__tensor th_tv = tu_upload(ctx, dt, 1, (int64_t[]){(int64_t)param_count(&tv)}, NULL);
    dynb__layer_eval e2 = e;
    e2.theta = &th_tv;
    TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &tv, &e2, out, work),
                     DYNB_STATUS_SHAPE_MISMATCH);
    dynb__tensor_release(&th_tv);
  }
  /* Invalid layers: an even kernel, no channels. */
  {
    dynb__layer bad = l;
    bad.kernel = 2;
    TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &bad, &e, out, work),
                     DYNB_STATUS_INVALID_ARGUMENT);
    bad = l;
    bad.channels = 0;
    TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &bad, &e, out, work),
                     DYNB_STATUS_INVALID_ARGUMENT);
  }
  assert_untouched(ctx, &b.out, "out");
  assert_untouched(ctx, &b.cache, "cache");

  /* Backward, after a valid forward: NULL gradients, wrong sizes, dtype. */
  TU_OK(ctx, dynb__layer_forward(ctx, &l, &e, out, work));
  const int64_t dims[4] = {n, 3, h, w};
  double *fill = nans((size_t)(n * 3 * h * w));
  dynb__tensor dout = tu_upload(ctx, dt, 4, dims, x), dx = tu_upload(ctx, dt, 4, dims, fill);
  dynb__tensor dth = tu_upload(ctx, dt, 1, &p, fill), dx64 = tu_upload(ctx, DYNB_F64, 4, dims, NULL);
#define BWD(ev, o, g, t, st) \
  TU_EXPECT_STATUS(ctx, dynb__layer_backward(ctx, &l, ev, o, g, false, t, work), st)
  BWD(NULL, &dout, &dx, &dth, DYNB_STATUS_INVALID_ARGUMENT);
  BWD(&e, NULL, &dx, &dth, DYNB_STATUS_INVALID_ARGUMENT);
  BWD(&e, &dout, NULL, &dth, DYNB_STATUS_INVALID_ARGUMENT);
  BWD(&e, &dout, &dx, NULL, DYNB_STATUS_INVALID_ARGUMENT);
  BWD(&e, &dout, &dx, &th_more, DYNB_STATUS_SHAPE_MISMATCH);
  BWD(&e, &x_h, &dx, &dth, DYNB_STATUS_SHAPE_MISMATCH);
  BWD(&e, &dout, &x_h, &dth, DYNB_STATUS_SHAPE_MISMATCH);
  BWD(&e, &dout, &dx64, &dth, DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__layer_backward(ctx, &l, &e, &dout, &dx, false, &dth, &w_less),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  {
    dynb__layer_eval e2 = e;
    e2.train = false, e2.running = NULL;
    BWD(&e2, &dout, &dx, &dth, DYNB_STATUS_INVALID_ARGUMENT);
  }
  assert_untouched(ctx, &dx, "dx");
  assert_untouched(ctx, &dth, "dtheta");
#undef BWD
#undef WITH
#undef FWD
  dynb__tensor_release(&th_less), dynb__tensor_release(&th_more), dynb__tensor_release(&th_f64);
  dynb__tensor_release(&c_less), dynb__tensor_release(&w_less), dynb__tensor_release(&x_c2);
  dynb__tensor_release(&w_t12);
  dynb__tensor_release(&x_r3), dynb__tensor_release(&x_h), dynb__tensor_release(&r_bad);
  dynb__tensor_release(&dout), dynb__tensor_release(&dx), dynb__tensor_release(&dth);
  dynb__tensor_release(&dx64);
  bufs_free(&b);
  free(theta), free(run), free(x), free(fill);
  dynb_ctx_free(ctx);
}

/* Batch norm cannot update running statistics (unbiased variance) from a
 * single value per channel (N·H·W = 1): an error before anything runs.
 * Without running statistics the same batch is fine (the forward test
 * covers it), and so is evaluation mode. */
static void single_value_running_update_is_refused(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int a = 0; a < 3; a++) {
    const dynb__layer l = {kinds[a], DYNB_NORM_BATCH, DYNB_ACT_TANH, 3, 1};
    tu_rng r = tu_rng_seed(11);
    double *theta = random_theta(&r, DYNB_F32, &l), *run = random_running(&r, DYNB_F32, &l);
    double x[3] = {0.5, -0.25, 1};
    bufs b;
    bufs_make(ctx, DYNB_F32, &l, 1, 1, 1, theta, x, run, true, &b);
    TU_EXPECT_STATUS(ctx, dynb__layer_forward(ctx, &l, &b.e, &b.out, &b.work),
                     DYNB_STATUS_INVALID_ARGUMENT);
    assert_untouched(ctx, &b.out, "out");
    assert_untouched(ctx, &b.cache, "cache");
    double got[12]; /* at most 2 norms · 2 · 3 channels */
    tu_download(ctx, &b.running, got);
    for (size_t i = 0; i < running_count(&l); i++) assert_true(got[i] == run[i]);
    b.e.train = false;
    TU_OK(ctx, dynb__layer_forward(ctx, &l, &b.e, &b.out, &b.work));
    bufs_free(&b);
    free(theta), free(run);
  }
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(params_follow_spec_names),
      cmocka_unit_test(validate_refuses_bad_layers),
      cmocka_unit_test(forward_matches_reference),
      cmocka_unit_test(gradients_match_finite_differences),
      cmocka_unit_test(bad_arguments_are_reported),
      cmocka_unit_test(single_value_running_update_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
