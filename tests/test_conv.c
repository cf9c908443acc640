/* Convolution and transposed convolution: every op against the reference in
 * f32 and f64 (with offsets, guard elements, accumulation and bias on and
 * off), the adjoint identity <K x, z> = <x, Kᵀ z>, gradients against central
 * differences in f64, and argument checks. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "ref/ref.h"

typedef struct shape {
  int n, cin, cout, h, w, k;
} shape;

static size_t in_numel(const shape *s) { return (size_t)s->n * s->cin * s->h * s->w; }
static size_t out_numel(const shape *s) { return (size_t)s->n * s->cout * s->h * s->w; }
static size_t w_numel(const shape *s) { return (size_t)s->cout * s->cin * s->k * s->k; }

/* ---- Tolerances -------------------------------------------------------------
 * Every output element is a sum of `terms` products (plus at most one bias
 * or accumulated value). Rounding both factors to the device type, each
 * product and each addition costs at most one unit roundoff u, so by the
 * classical dot-product bound (Higham's γ_n) the error is at most
 * (terms + 3)·u·Σ|products| — the GEMM's blocking only reorders the sum,
 * and col2im's second stage of k² additions after Cout-term GEMM sums has
 * depth Cout + k² - 1 <= Cout·k², so the same count covers it. Elements are
 * compared against that bound individually, with Σ|products| computed by the
 * reference on absolute values. In f64 the reference itself rounds as much
 * as the device, hence the factor 2. This is a worst case, not an estimate:
 * it does not widen with the data and is met with ample margin in practice. */
static double bound_for(dynb_dtype dt, size_t terms) {
  double u = dt == DYNB_F32 ? 0x1p-24 : 0x1p-53;
  return (double)(terms + 3) * u * (dt == DYNB_F32 ? 1.0 : 2.0) + (double)(terms + 3) * 0x1p-53;
}

/* Fails unless |got - want| <= bound · mag elementwise; prints the worst
 * |got - want| / mag as "maxerr". */
static void expect_close(const char *what, const double *got, const double *want,
                         const double *mag, size_t n, double bound) {
  /* src/ref's measure; mag + 1e-300 keeps a zero magnitude demanding
   * exactness. */
  double *scale = malloc((n ? n : 1) * sizeof *scale);
  for (size_t i = 0; i < n; i++) scale[i] = mag[i] + 1e-300;
  size_t at = 0;
  double worst = ref_max_scaled_err(got, want, scale, n, &at);
  free(scale);
  printf("maxerr %s: %.3g (bound %.3g, n=%zu)\n", what, worst, bound, n);
  if (!(worst <= bound))
    fail_msg("%s: element %zu is %.17g, expected %.17g (|terms| %.3g, bound %.3g)", what, at,
             got[at], want[at], mag[at], bound);
}

/* ---- Device tensors with guards --------------------------------------------
 * Each tensor is a view at element offset `off` of a buffer with GUARD
 * sentinel elements after it (and `off` before), so that an op that ignores
 * an offset or writes past a view is caught. */
#define GUARD 7
#define SENTINEL 777.0

typedef struct dev {
  dynb__tensor buf, t;
  size_t off, n;
} dev;

static dev dev_put(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims,
                   const double *host, size_t off) {
  dev d = {.off = off, .n = 1};
  for (int i = 0; i < ndim; i++) d.n *= (size_t)dims[i];
  int64_t total = (int64_t)(off + d.n + GUARD);
  double *h = malloc((size_t)total * sizeof *h);
  for (int64_t i = 0; i < total; i++) h[i] = SENTINEL;
  for (size_t i = 0; i < d.n; i++) h[off + i] = host ? host[i] : NAN;
  d.buf = tu_upload(ctx, dt, 1, &total, h);
  free(h);
  d.t = d.buf;
  d.t.offset = off;
  d.t.ndim = ndim;
  for (int i = 0; i < ndim; i++) d.t.dims[i] = dims[i];
  return d;
}

/* Reads the view into `host` and checks that the guards are untouched. */
static void dev_get(dynb_ctx *ctx, const dev *d, double *host) {
  size_t total = d->off + d->n + GUARD;
  double *h = malloc(total * sizeof *h);
  tu_download(ctx, &d->buf, h);
  for (size_t i = 0; i < total; i++)
    if ((i < d->off || i >= d->off + d->n) && h[i] != SENTINEL)
      fail_msg("element %zu outside a view of %zu at offset %zu was written", i, d->n, d->off);
  memcpy(host, h + d->off, d->n * sizeof *h);
  free(h);
}

static void dev_set(dynb_ctx *ctx, const dev *d, const double *host) {
  tu_write(ctx, &d->t, host);
}

static void dev_free(dev *d) { dynb__tensor_release(&d->buf); }

static double *abs_copy(const double *x, size_t n) {
  double *a = malloc((n ? n : 1) * sizeof *a);
  for (size_t i = 0; i < n; i++) a[i] = fabs(x[i]);
  return a;
}

/* ---- The reference, hand-checked --------------------------------------------- */

static void ref_hand_checked(void **state) {
  (void)state;
  /* 1 channel, 2×2 image, 3×3 kernel with taps at (1,1)=1, (1,2)=2, (2,1)=3:
   * y[i][j] = x[i][j] + 2 x[i][j+1] + 3 x[i+1][j] (zero outside), so with
   * x = [1 2; 3 4]: y00 = 1+4+9 = 14, y01 = 2+0+12 = 14, y10 = 3+8 = 11,
   * y11 = 4; bias 0.5 is added to each. */
  const double x[4] = {1, 2, 3, 4}, w[9] = {0, 0, 0, 0, 1, 2, 0, 3, 0}, b = 0.5;
  double y[4], dx[4], dw[9];
  ref_conv2d_forward(1, 1, 1, 2, 2, 3, x, w, &b, y);
  assert_true(y[0] == 14.5 && y[1] == 14.5 && y[2] == 11.5 && y[3] == 4.5);
  /* dy = [1 0; 0 1]: y00 read x00, x01, x10 with weights 1, 2, 3 and y11
   * read x11 with weight 1, so dx = [1 2; 3 1]. */
  const double dy[4] = {1, 0, 0, 1};
  ref_conv2d_backward_data(1, 1, 1, 2, 2, 3, dy, w, dx);
  assert_true(dx[0] == 1 && dx[1] == 2 && dx[2] == 3 && dx[3] == 1);
  /* dy = [1 0; 0 0]: dw[a][c] = x[a-1][c-1], i.e. [0 0 0; 0 1 2; 0 3 4]. */
  const double dy0[4] = {1, 0, 0, 0}, want_dw[9] = {0, 0, 0, 0, 1, 2, 0, 3, 4};
  ref_conv2d_backward_weights(1, 1, 1, 2, 2, 3, x, dy0, dw);
  for (int i = 0; i < 9; i++) assert_true(dw[i] == want_dw[i]);
  /* Channel order, k = 1: x channels [1 2] and [3 5] (1×2 images),
   * w[0] = {2, -1}: y = 2 x0 - x1 = [-1 -1]. The transpose with z = [1 2]
   * and b = {10, 20}: y0 = 2 z + 10 = [12 14], y1 = -z + 20 = [19 18]. */
  const double x2[4] = {1, 2, 3, 5}, w2[2] = {2, -1}, z[2] = {1, 2}, bt[2] = {10, 20};
  double y2[4];
  ref_conv2d_forward(1, 2, 1, 1, 2, 1, x2, w2, NULL, y2);
  assert_true(y2[0] == -1 && y2[1] == -1);
  ref_conv2d_transpose_forward(1, 2, 1, 1, 2, 1, z, w2, bt, y2);
  assert_true(y2[0] == 12 && y2[1] == 14 && y2[2] == 19 && y2[3] == 18);
}

/* ---- Every op against the reference ------------------------------------------ */

/* Host data of one case: Cin-side x and g (a gradient or transposed-conv
 * input), Cout-side d and z, weights, both biases, and their |.|. */
typedef struct conv_data {
  shape s;
  size_t nin, nout, nw;
  double *x, *g, *d, *z, *w, *b, *bt;
  double *ax, *ag, *ad, *az, *aw, *ab, *abt;
} conv_data;

static conv_data data_make(const shape *s, uint64_t seed) {
  tu_rng r = tu_rng_seed(seed);
  conv_data c = {.s = *s, .nin = in_numel(s), .nout = out_numel(s), .nw = w_numel(s)};
  c.x = tu_random(&r, c.nin, -1, 1), c.g = tu_random(&r, c.nin, -1, 1);
  c.d = tu_random(&r, c.nout, -1, 1), c.z = tu_random(&r, c.nout, -1, 1);
  c.w = tu_random(&r, c.nw, -1, 1);
  c.b = tu_random(&r, (size_t)s->cout, -1, 1), c.bt = tu_random(&r, (size_t)s->cin, -1, 1);
  c.ax = abs_copy(c.x, c.nin), c.ag = abs_copy(c.g, c.nin);
  c.ad = abs_copy(c.d, c.nout), c.az = abs_copy(c.z, c.nout);
  c.aw = abs_copy(c.w, c.nw);
  c.ab = abs_copy(c.b, (size_t)s->cout), c.abt = abs_copy(c.bt, (size_t)s->cin);
  return c;
}

static void data_free(conv_data *c) {
  double *all[] = {c->x, c->g, c->d, c->z, c->w, c->b, c->bt,
                   c->ax, c->ag, c->ad, c->az, c->aw, c->ab, c->abt};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
}

/* Device copies of a case, all at the same offset. */
typedef struct conv_dev {
  dev x, g, d, z, w, b, bt, work, out_in, out_out, out_w;
} conv_dev;

static conv_dev dev_make(dynb_ctx *ctx, dynb_dtype dt, const conv_data *c, size_t off) {
  const shape *s = &c->s;
  int64_t di[4] = {s->n, s->cin, s->h, s->w}, dout[4] = {s->n, s->cout, s->h, s->w};
  int64_t dw[4] = {s->cout, s->cin, s->k, s->k}, cb = s->cout, cbt = s->cin;
  /* Work of exactly what the chosen routes take (as a plan sizes it), in
   * guards that dev_get checks after the ops: a route that used more than
   * it declared would write into them. */
  size_t need = 0;
  TU_OK(ctx, dynb__conv2d_prepare(ctx, dt, s->n, s->cin, s->cout, s->h, s->w, s->k, &need));
  assert_true(need <= dynb__conv2d_workspace(s->n, s->cin, s->cout, s->h, s->w, s->k));
  int64_t ws = need ? (int64_t)need : 1;
  conv_dev v;
  v.x = dev_put(ctx, dt, 4, di, c->x, off), v.g = dev_put(ctx, dt, 4, di, c->g, off);
  v.d = dev_put(ctx, dt, 4, dout, c->d, off), v.z = dev_put(ctx, dt, 4, dout, c->z, off);
  v.w = dev_put(ctx, dt, 4, dw, c->w, off);
  v.b = dev_put(ctx, dt, 1, &cb, c->b, off), v.bt = dev_put(ctx, dt, 1, &cbt, c->bt, off);
  /* Scratch starts as NaN: no op may depend on what it held. */
  v.work = dev_put(ctx, dt, 1, &ws, NULL, off);
  v.out_in = dev_put(ctx, dt, 4, di, NULL, off), v.out_out = dev_put(ctx, dt, 4, dout, NULL, off);
  v.out_w = dev_put(ctx, dt, 4, dw, NULL, off);
  return v;
}

static void devs_free(conv_dev *v) {
  dev *all[] = {&v->x, &v->g, &v->d, &v->z, &v->w, &v->b, &v->bt,
                &v->work, &v->out_in, &v->out_out, &v->out_w};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) dev_free(all[i]);
}

/* Prepares an output for a call: NaN for overwrite (so that a read of the
 * old value shows), random values for accumulation, which are returned in
 * `init` and added to `want` and `mag` after the call. */
static void prime(dynb_ctx *ctx, const dev *out, bool acc, tu_rng *r, double *init) {
  if (acc)
    tu_fill(r, init, out->n, -1, 1);
  else
    for (size_t i = 0; i < out->n; i++) init[i] = NAN;
  dev_set(ctx, out, init);
}

static void add_init(bool acc, const double *init, double *want, double *mag, size_t n) {
  for (size_t i = 0; acc && i < n; i++) want[i] += init[i], mag[i] += fabs(init[i]);
}

static void label(char *buf, size_t cap, const char *op, dynb_dtype dt, const shape *s,
                  const char *variant) {
  snprintf(buf, cap, "%s %s N%d %d->%d %dx%d k%d %s", op, dynb__dtype_name(dt), s->n, s->cin,
           s->cout, s->h, s->w, s->k, variant);
}

/* conv forward and transposed forward, with bias and without. */
static void check_forwards(dynb_ctx *ctx, dynb_dtype dt, const conv_data *c, conv_dev *v) {
  const shape *s = &c->s;
  size_t m = c->nin + c->nout;
  double *got = malloc(m * sizeof *got), *want = malloc(m * sizeof *got);
  double *mag = malloc(m * sizeof *mag);
  char what[128];
  for (int hb = 0; hb < 2; hb++) {
    prime(ctx, &v->out_out, false, NULL, got);
    TU_OK(ctx, dynb__conv2d_forward(ctx, &v->x.t, &v->w.t, hb ? &v->b.t : NULL, &v->out_out.t,
                                    &v->work.t));
    dev_get(ctx, &v->out_out, got);
    ref_conv2d_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->x, c->w, hb ? c->b : NULL, want);
    ref_conv2d_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->ax, c->aw, hb ? c->ab : NULL,
                       mag);
    label(what, sizeof what, "conv2d_forward", dt, s, hb ? "bias" : "no-bias");
    expect_close(what, got, want, mag, c->nout, bound_for(dt, (size_t)s->cin * s->k * s->k));

    prime(ctx, &v->out_in, false, NULL, got);
    TU_OK(ctx, dynb__conv2d_transpose_forward(ctx, &v->z.t, &v->w.t, hb ? &v->bt.t : NULL,
                                              &v->out_in.t, &v->work.t));
    dev_get(ctx, &v->out_in, got);
    ref_conv2d_transpose_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->z, c->w,
                                 hb ? c->bt : NULL, want);
    ref_conv2d_transpose_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->az, c->aw,
                                 hb ? c->abt : NULL, mag);
    label(what, sizeof what, "conv2d_transpose_forward", dt, s, hb ? "bias" : "no-bias");
    expect_close(what, got, want, mag, c->nin, bound_for(dt, (size_t)s->cout * s->k * s->k));
  }
  free(got), free(want), free(mag);
}

/* The two data gradients, overwriting and accumulating. */
static void check_data_grads(dynb_ctx *ctx, dynb_dtype dt, const conv_data *c, conv_dev *v,
                             tu_rng *r) {
  const shape *s = &c->s;
  size_t m = c->nin + c->nout;
  double *got = malloc(m * sizeof *got), *want = malloc(m * sizeof *got);
  double *mag = malloc(m * sizeof *got), *init = malloc(m * sizeof *got);
  char what[128];
  for (int acc = 0; acc < 2; acc++) {
    prime(ctx, &v->out_in, acc, r, init);
    TU_OK(ctx, dynb__conv2d_backward_data(ctx, &v->d.t, &v->w.t, &v->out_in.t, acc, &v->work.t));
    dev_get(ctx, &v->out_in, got);
    ref_conv2d_backward_data(s->n, s->cin, s->cout, s->h, s->w, s->k, c->d, c->w, want);
    ref_conv2d_backward_data(s->n, s->cin, s->cout, s->h, s->w, s->k, c->ad, c->aw, mag);
    add_init(acc, init, want, mag, c->nin);
    label(what, sizeof what, "conv2d_backward_data", dt, s, acc ? "acc" : "overwrite");
    expect_close(what, got, want, mag, c->nin, bound_for(dt, (size_t)s->cout * s->k * s->k));
    if (!acc) {
      /* The gather has a fixed order: a second run gives the same bits. */
      double *again = malloc(c->nin * sizeof *again);
      TU_OK(ctx,
            dynb__conv2d_backward_data(ctx, &v->d.t, &v->w.t, &v->out_in.t, false, &v->work.t));
      dev_get(ctx, &v->out_in, again);
      assert_memory_equal(got, again, c->nin * sizeof *got);
      free(again);
    }

    prime(ctx, &v->out_out, acc, r, init);
    TU_OK(ctx, dynb__conv2d_transpose_backward_data(ctx, &v->g.t, &v->w.t, &v->out_out.t, acc,
                                                    &v->work.t));
    dev_get(ctx, &v->out_out, got);
    ref_conv2d_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->g, c->w, NULL, want);
    ref_conv2d_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->ag, c->aw, NULL, mag);
    add_init(acc, init, want, mag, c->nout);
    label(what, sizeof what, "conv2d_transpose_backward_data", dt, s, acc ? "acc" : "overwrite");
    expect_close(what, got, want, mag, c->nout, bound_for(dt, (size_t)s->cin * s->k * s->k));
  }
  free(got), free(want), free(mag), free(init);
}

/* The two weight gradients, overwriting and accumulating. */
static void check_weight_grads(dynb_ctx *ctx, dynb_dtype dt, const conv_data *c, conv_dev *v,
                               tu_rng *r) {
  const shape *s = &c->s;
  double *got = malloc(c->nw * sizeof *got), *want = malloc(c->nw * sizeof *got);
  double *mag = malloc(c->nw * sizeof *got), *init = malloc(c->nw * sizeof *got);
  size_t terms = (size_t)s->n * s->h * s->w;
  char what[128];
  for (int acc = 0; acc < 2; acc++) {
    prime(ctx, &v->out_w, acc, r, init);
    TU_OK(ctx, dynb__conv2d_backward_weights(ctx, &v->x.t, &v->d.t, &v->out_w.t, acc, &v->work.t));
    dev_get(ctx, &v->out_w, got);
    ref_conv2d_backward_weights(s->n, s->cin, s->cout, s->h, s->w, s->k, c->x, c->d, want);
    ref_conv2d_backward_weights(s->n, s->cin, s->cout, s->h, s->w, s->k, c->ax, c->ad, mag);
    add_init(acc, init, want, mag, c->nw);
    label(what, sizeof what, "conv2d_backward_weights", dt, s, acc ? "acc" : "overwrite");
    expect_close(what, got, want, mag, c->nw, bound_for(dt, terms));

    prime(ctx, &v->out_w, acc, r, init);
    TU_OK(ctx, dynb__conv2d_transpose_backward_weights(ctx, &v->z.t, &v->g.t, &v->out_w.t, acc,
                                                       &v->work.t));
    dev_get(ctx, &v->out_w, got);
    /* y = Kᵀ z: dw[co][ci] pairs z's channel co with dy's channel ci. */
    ref_conv2d_backward_weights(s->n, s->cin, s->cout, s->h, s->w, s->k, c->g, c->z, want);
    ref_conv2d_backward_weights(s->n, s->cin, s->cout, s->h, s->w, s->k, c->ag, c->az, mag);
    add_init(acc, init, want, mag, c->nw);
    label(what, sizeof what, "conv2d_transpose_backward_weights", dt, s, acc ? "acc" : "overwrite");
    expect_close(what, got, want, mag, c->nw, bound_for(dt, terms));
  }
  free(got), free(want), free(mag), free(init);
}

/* Shapes: the all-ones edge (also with k larger than the image), odd
 * spatial sizes, Cin != Cout both ways, every k, a batch. 17·13·9 = 1989
 * elements and the other sizes are not multiples of any work-group size. */
static const shape shapes[] = {
    {1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 3},  {1, 1, 1, 1, 1, 5}, {2, 3, 17, 7, 5, 3},
    {1, 17, 3, 13, 9, 3}, {2, 3, 4, 7, 5, 5}, {3, 2, 5, 13, 9, 1}, {1, 1, 1, 7, 5, 5},
    /* For the direct kernels: rows of exactly one chunk (8, 16), of two
     * chunks with a one-column tail (33), more images than batch splits
     * (17 > 16), channel counts at and off their blocking (8, 9, 1, 3). */
    {2, 8, 8, 5, 16, 3}, {1, 2, 9, 3, 33, 3}, {17, 3, 1, 4, 8, 3}, {2, 1, 3, 6, 11, 3},
    /* A layer of the reference network's size: work-group choices that
     * only show at this scale (a driver-chosen group once overflowed PoCL's
     * stack here). Last: tu_small() leaves it out. */
    {32, 64, 64, 7, 7, 3},
};
static size_t shapes_to_run(void) {
  return sizeof shapes / sizeof *shapes - (tu_small() ? 1 : 0);
}

/* The convolution route each test runs under (prestate of the cmocka
 * tests): both routes are always tested, and the timed choice once. */
static const dynb__conv_policy route_gemm = DYNB__CONV_GEMM, route_row = DYNB__CONV_ROW,
                               route_wide = DYNB__CONV_WIDE, route_wide2 = DYNB__CONV_WIDE2,
                               route_auto = DYNB__CONV_AUTO;

static dynb_ctx *ctx_with_route(void **state) {
  dynb_ctx *ctx = tu_ctx();
  ctx->conv_policy = *(const dynb__conv_policy *)*state;
  return ctx;
}

/* Whether a forced route runs its own kernels for kernel size k, rather
 * than the GEMM standing in (choose() in src/ops/conv.c). */
static bool route_has_k(dynb__conv_policy p, int k) {
  if (p == DYNB__CONV_ROW) return k == 3;
  if (p == DYNB__CONV_WIDE || p == DYNB__CONV_WIDE2) return k == 1 || k == 3;
  return true;
}

static void ops_match_reference(void **state) {
  dynb__conv_policy policy = *(const dynb__conv_policy *)*state;
  /* Small runs (tu_small) leave out what the forced routes already ran:
   * the timed choice picks among them, and spends most of its time timing
   * them five times over. */
  if (tu_small() && policy == DYNB__CONV_AUTO) skip();
  dynb_ctx *ctx = ctx_with_route(state);
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (size_t i = 0; i < shapes_to_run(); i++) {
      /* ... and, for a direct route, the shapes where the GEMM stands in. */
      if (tu_small() && !route_has_k(policy, shapes[i].k)) continue;
      /* Odd cases put every tensor at a non-zero offset in its buffer. */
      size_t off = (i % 2) ? 3 + i : 0;
      tu_rng r = tu_rng_seed(100 + i);
      conv_data c = data_make(&shapes[i], 1 + i);
      conv_dev v = dev_make(ctx, dt, &c, off);
      check_forwards(ctx, dt, &c, &v);
      check_data_grads(ctx, dt, &c, &v, &r);
      check_weight_grads(ctx, dt, &c, &v, &r);
      double *work = malloc(v.work.n * sizeof *work);
      dev_get(ctx, &v.work, work); /* checks its guards */
      free(work);
      devs_free(&v);
      data_free(&c);
    }
  }
  dynb_ctx_free(ctx);
}

/* ---- <K x, z> = <x, Kᵀ z> ------------------------------------------------------
 * An independent check that the transposed conv is the adjoint of the
 * forward, device against device, on inputs exactly representable in the
 * device type. K x is within bound_fwd·(|K||x|) of exact elementwise, so
 * <K x, z> is within bound_fwd·<|K||x|, |z|>; likewise <x, Kᵀ z> within
 * bound_t·<|x|, |Kᵀ||z|>, the same scale. The host's double dot products of
 * a few hundred terms add under 1e-12 of it. */
static void transpose_is_adjoint(void **state) {
  dynb_ctx *ctx = ctx_with_route(state);
  const shape s = {2, 3, 5, 7, 5, 3};
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    conv_data c = data_make(&s, 77);
    if (dt == DYNB_F32) { /* The identity holds for the float-rounded inputs. */
      double *arrs[] = {c.x, c.z, c.w};
      size_t ns[] = {c.nin, c.nout, c.nw};
      for (int a = 0; a < 3; a++)
        for (size_t i = 0; i < ns[a]; i++) arrs[a][i] = (float)arrs[a][i];
    }
    conv_dev v = dev_make(ctx, dt, &c, 0);
    double *kx = malloc(c.nout * sizeof *kx), *ktz = malloc(c.nin * sizeof *ktz);
    double *mag = malloc(c.nout * sizeof *mag);
    TU_OK(ctx, dynb__conv2d_forward(ctx, &v.x.t, &v.w.t, NULL, &v.out_out.t, &v.work.t));
    TU_OK(ctx, dynb__conv2d_transpose_forward(ctx, &v.z.t, &v.w.t, NULL, &v.out_in.t, &v.work.t));
    dev_get(ctx, &v.out_out, kx);
    dev_get(ctx, &v.out_in, ktz);
    double lhs = tu_dot(kx, c.z, c.nout), rhs = tu_dot(c.x, ktz, c.nin);
    ref_conv2d_forward(s.n, s.cin, s.cout, s.h, s.w, s.k, c.ax, c.aw, NULL, mag);
    double scale = tu_dot(mag, c.az, c.nout);
    double bound = bound_for(dt, (size_t)s.cin * s.k * s.k) +
                   bound_for(dt, (size_t)s.cout * s.k * s.k) + 1e-12;
    double err = fabs(lhs - rhs) / scale;
    printf("maxerr adjoint %s <Kx,z> vs <x,K^T z>: %.3g (bound %.3g)\n", dynb__dtype_name(dt),
           err, bound);
    assert_true(err <= bound);
    free(kx), free(ktz), free(mag);
    devs_free(&v);
    data_free(&c);
  }
  dynb_ctx_free(ctx);
}

/* ---- Finite differences --------------------------------------------------------
 * L = Σ r ⊙ f(...) with f the reference forward, in double; the analytic
 * gradients come from the device backward ops (and dynb__channel_sum for
 * the bias, as the layers use it). Every f here is linear in the argument
 * varied, so central differences are exact but for rounding: |L| is of
 * order 10, so the cancellation costs about 1e-15·10 / 1e-3 = 1e-11, and
 * 1e-8 leaves a wide margin while any indexing error gives O(1). */
typedef struct fd_case {
  shape s;
  bool transpose;
  double *in, *w, *b, *r, *tmp;
  size_t nout;
} fd_case;

static double fd_loss(void *user) {
  fd_case *c = user;
  const shape *s = &c->s;
  if (c->transpose)
    ref_conv2d_transpose_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->in, c->w, c->b,
                                 c->tmp);
  else
    ref_conv2d_forward(s->n, s->cin, s->cout, s->h, s->w, s->k, c->in, c->w, c->b, c->tmp);
  return tu_dot(c->r, c->tmp, c->nout);
}

static void gradients_match_fd(void **state) {
  dynb_ctx *ctx = ctx_with_route(state);
  tu_require_real(ctx, DYNB_F64);
  const shape s = {2, 3, 4, 5, 4, 3};
  conv_data c = data_make(&s, 5);
  conv_dev v = dev_make(ctx, DYNB_F64, &c, 1);
  int64_t cb = s.cout, cbt = s.cin;
  dev db = dev_put(ctx, DYNB_F64, 1, &cb, NULL, 0), dbt = dev_put(ctx, DYNB_F64, 1, &cbt, NULL, 0);
  double *gin = malloc(c.nin * sizeof *gin), *gout = malloc(c.nout * sizeof *gout);
  double *gw = malloc(c.nw * sizeof *gw), gb[17];
  double *tmp = malloc((c.nin + c.nout) * sizeof *tmp);

  /* Conv: y = K x + b, r = d (Cout side). */
  TU_OK(ctx, dynb__conv2d_backward_data(ctx, &v.d.t, &v.w.t, &v.out_in.t, false, &v.work.t));
  TU_OK(ctx, dynb__conv2d_backward_weights(ctx, &v.x.t, &v.d.t, &v.out_w.t, false, &v.work.t));
  TU_OK(ctx, dynb__channel_sum(ctx, &v.d.t, &db.t, false));
  dev_get(ctx, &v.out_in, gin), dev_get(ctx, &v.out_w, gw), dev_get(ctx, &db, gb);
  fd_case f = {s, false, c.x, c.w, c.b, c.d, tmp, c.nout};
  tu_check_gradient("conv2d d/dx", fd_loss, &f, c.x, c.nin, gin, 1e-3, 1e-8, 200);
  tu_check_gradient("conv2d d/dw", fd_loss, &f, c.w, c.nw, gw, 1e-3, 1e-8, 200);
  tu_check_gradient("conv2d d/db", fd_loss, &f, c.b, (size_t)s.cout, gb, 1e-3, 1e-8, 200);

  /* Transposed conv: y = Kᵀ z + bt, r = g (Cin side). */
  TU_OK(ctx, dynb__conv2d_transpose_backward_data(ctx, &v.g.t, &v.w.t, &v.out_out.t, false,
                                                  &v.work.t));
  TU_OK(ctx, dynb__conv2d_transpose_backward_weights(ctx, &v.z.t, &v.g.t, &v.out_w.t, false,
                                                     &v.work.t));
  TU_OK(ctx, dynb__channel_sum(ctx, &v.g.t, &dbt.t, false));
  dev_get(ctx, &v.out_out, gout), dev_get(ctx, &v.out_w, gw), dev_get(ctx, &dbt, gb);
  fd_case t = {s, true, c.z, c.w, c.bt, c.g, tmp, c.nin};
  tu_check_gradient("conv2d_transpose d/dz", fd_loss, &t, c.z, c.nout, gout, 1e-3, 1e-8, 200);
  tu_check_gradient("conv2d_transpose d/dw", fd_loss, &t, c.w, c.nw, gw, 1e-3, 1e-8, 200);
  tu_check_gradient("conv2d_transpose d/db", fd_loss, &t, c.bt, (size_t)s.cin, gb, 1e-3, 1e-8,
                    200);

  free(gin), free(gout), free(gw), free(tmp);
  dev_free(&db), dev_free(&dbt);
  devs_free(&v);
  data_free(&c);
  dynb_ctx_free(ctx);
}

/* ---- Timed choices kept in the tuning cache --------------------------------------
 * A context times a shape's routes once and writes them to its tuning
 * cache; a second context on the same file takes them without timing (no
 * "conv ..." timing message), and a damaged entry is timed afresh. */
static int timings_logged;
static void count_timings(void *user, dynb_log_level level, const char *msg) {
  (void)user, (void)level;
  if (strncmp(msg, "conv ", 5) == 0) timings_logged++;
}

static dynb_ctx *ctx_with_cache(const char *path) {
  dynb_ctx_desc d = tu_ctx_desc();
  d.tune_cache = path;
  d.log_fn = count_timings;
  return tu_ctx_create(&d);
}

static void choices_are_cached(void **state) {
  (void)state;
  char path[] = "/tmp/dynb-conv-cache-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  dynb_ctx *ctx = ctx_with_cache(path);
  timings_logged = 0;
  TU_OK(ctx, dynb__conv2d_prepare(ctx, DYNB_F32, 2, 3, 5, 7, 9, 3, NULL));
  assert_int_equal(timings_logged, 3); /* forward, adjoint, weights */
  dynb_ctx_free(ctx);
  FILE *f = fopen(path, "r");
  char text[4096] = {0};
  assert_true(fread(text, 1, sizeof text - 1, f) > 0);
  fclose(f);
  assert_non_null(strstr(text, "conv.f32.n2.c3x5.k3.7x9 = "));

  ctx = ctx_with_cache(path);
  timings_logged = 0;
  TU_OK(ctx, dynb__conv2d_prepare(ctx, DYNB_F32, 2, 3, 5, 7, 9, 3, NULL));
  assert_int_equal(timings_logged, 0);
  dynb_ctx_free(ctx);

  /* wide2 has no weight-gradient kernels: such an entry is not trusted. */
  f = fopen(path, "w");
  fputs("conv.f32.n2.c3x5.k3.7x9 = wide,wide,wide2\n", f);
  fclose(f);
  ctx = ctx_with_cache(path);
  timings_logged = 0;
  TU_OK(ctx, dynb__conv2d_prepare(ctx, DYNB_F32, 2, 3, 5, 7, 9, 3, NULL));
  assert_int_equal(timings_logged, 3);
  dynb_ctx_free(ctx);
  remove(path);
}

/* ---- Argument checks ------------------------------------------------------------ */

static void workspace_size(void **state) {
  (void)state;
  /* col: Cin·k²·N·H·W = 3·9·2·5·6 = 1620; rows: Cout·N·H·W = 4·60 = 240. */
  assert_int_equal(dynb__conv2d_workspace(2, 3, 4, 5, 6, 3), 1620 + 240);
  /* A 1×1 image: col + rows = 2·(27 + 4) = 62 is outgrown by the direct
   * weight gradient's two splits of Cout·Cin·9 = 2·4·3·9 = 216 plus dy
   * padded to 16 channels (2·16), and more by the wide kernels' packed
   * weights, max(Cin·9·32, Cout·9·32) = 1152 (channels padded to 32). */
  assert_int_equal(dynb__conv2d_workspace(2, 3, 4, 1, 1, 3), 1152);
  /* Many images of one pixel: the splits (16·5·6·9 = 4320) and the
   * channel-minor dy (40 pixels · 16 lanes) win. */
  assert_int_equal(dynb__conv2d_workspace(40, 6, 5, 1, 1, 3), 4320 + 640);
  /* k = 1, one channel: the packed weights, padded to 32 channels. */
  assert_int_equal(dynb__conv2d_workspace(1, 1, 1, 1, 1, 1), 32);
  /* k = 5 has only the GEMM route: col + rows = 1·25 + 1. */
  assert_int_equal(dynb__conv2d_workspace(1, 1, 1, 1, 1, 5), 26);
  assert_true(dynb__conv2d_workspace(0, 3, 4, 5, 6, 3) == SIZE_MAX);
  assert_true(dynb__conv2d_workspace(2, 3, 4, 5, -6, 3) == SIZE_MAX);
  assert_true(dynb__conv2d_workspace(1 << 20, 1 << 20, 4, 1 << 20, 1 << 20, 3) == SIZE_MAX);
}

/* The six ops through one work tensor; how many returned `st`, and
 * whether every other one succeeded. */
static int ops_returning(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *y,
                         const dynb__tensor *w, const dynb__tensor *work, dynb_status st,
                         bool *others_ok) {
  dynb_status got[6] = {
      dynb__conv2d_forward(ctx, x, w, NULL, y, work),
      dynb__conv2d_backward_data(ctx, y, w, x, false, work),
      dynb__conv2d_backward_weights(ctx, x, y, w, false, work),
      dynb__conv2d_transpose_forward(ctx, y, w, NULL, x, work),
      dynb__conv2d_transpose_backward_data(ctx, x, w, y, false, work),
      dynb__conv2d_transpose_backward_weights(ctx, y, x, w, false, work)};
  int n = 0;
  *others_ok = true;
  for (int i = 0; i < 6; i++) {
    n += got[i] == st;
    if (got[i] != st && got[i] != DYNB_OK) *others_ok = false;
  }
  return n;
}

/* A plan sizes work by the routes it will take (dynb__conv2d_prepare), not
 * by the worst one: that much runs every op, one element less is refused
 * by the direction that needs it all, and never by more than the ops of
 * the directions whose routes take it. */
static void work_follows_routes(void **state) {
  dynb_ctx *ctx = ctx_with_route(state);
  int64_t dx[4] = {2, 3, 5, 4}, dy[4] = {2, 4, 5, 4}, dw[4] = {4, 3, 3, 3};
  size_t need = 0;
  TU_OK(ctx, dynb__conv2d_prepare(ctx, DYNB_F32, 2, 3, 4, 5, 4, 3, &need));
  assert_true(need <= dynb__conv2d_workspace(2, 3, 4, 5, 4, 3));
  int64_t full = (int64_t)need, less = full - 1;
  dynb__tensor x = tu_upload(ctx, DYNB_F32, 4, dx, NULL), y = tu_upload(ctx, DYNB_F32, 4, dy, NULL);
  dynb__tensor w = tu_upload(ctx, DYNB_F32, 4, dw, NULL);
  dynb__tensor work = tu_upload(ctx, DYNB_F32, 1, &full, NULL);
  bool others_ok = false;
  assert_int_equal(ops_returning(ctx, &x, &y, &w, &work, DYNB_OK, &others_ok), 6);
  /* Every policy here takes some work in some direction: the weight
   * gradients' partial sums at least (the row route applies without any). */
  assert_true(less >= 0);
  dynb__tensor shorter = tu_upload(ctx, DYNB_F32, 1, less ? &less : &full, NULL);
  if (less) {
    int refused = ops_returning(ctx, &x, &y, &w, &shorter, DYNB_STATUS_BUFFER_TOO_SMALL, &others_ok);
    assert_true(refused >= 1);
    assert_true(others_ok);
    assert_non_null(strstr(dynb_ctx_last_error(ctx), "route needs"));
  }
  dynb__tensor *all[] = {&x, &y, &w, &work, &shorter};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) dynb__tensor_release(all[i]);
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  /* The GEMM route, whose work (col + rows = 40·31 = 1240) is the most any
   * route takes here, so that one element less is too little. */
  ctx->conv_policy = DYNB__CONV_GEMM;
  const dynb_dtype F = DYNB_F32;
  int64_t dx[4] = {2, 3, 5, 4}, dy[4] = {2, 4, 5, 4}, dw[4] = {4, 3, 3, 3}, cb = 4, cbt = 3;
  int64_t dw_even[4] = {4, 3, 2, 2}, dw_rect[4] = {4, 3, 3, 1}, dx_c[4] = {2, 2, 5, 4};
  int64_t dy_h[4] = {2, 4, 6, 4}, dy_n[4] = {1, 4, 5, 4}, cb_bad = 3, dx3[3] = {2, 3, 20};
  int64_t ws = (int64_t)dynb__conv2d_workspace(2, 3, 4, 5, 4, 3), ws_short = ws - 1;
  double *sent = malloc(160 * sizeof *sent), *back = malloc(160 * sizeof *back);
  for (int i = 0; i < 160; i++) sent[i] = 0.25 * i; /* y, the largest, has 160 */
  dynb__tensor x = tu_upload(ctx, F, 4, dx, NULL), y = tu_upload(ctx, F, 4, dy, NULL);
  dynb__tensor w = tu_upload(ctx, F, 4, dw, NULL), b = tu_upload(ctx, F, 1, &cb, NULL);
  dynb__tensor bt = tu_upload(ctx, F, 1, &cbt, NULL), work = tu_upload(ctx, F, 1, &ws, NULL);
  dynb__tensor we = tu_upload(ctx, F, 4, dw_even, NULL), wr = tu_upload(ctx, F, 4, dw_rect, NULL);
  dynb__tensor xc = tu_upload(ctx, F, 4, dx_c, NULL), yh = tu_upload(ctx, F, 4, dy_h, NULL);
  dynb__tensor yn = tu_upload(ctx, F, 4, dy_n, NULL), bbad = tu_upload(ctx, F, 1, &cb_bad, NULL);
  dynb__tensor x3 = tu_upload(ctx, F, 3, dx3, NULL), wshort = tu_upload(ctx, F, 1, &ws_short, NULL);
  dynb__tensor x64 = tu_upload(ctx, DYNB_F64, 4, dx, NULL);
  dynb__tensor w64 = tu_upload(ctx, DYNB_F64, 4, dw, NULL);
  dynb__tensor work64 = tu_upload(ctx, DYNB_F64, 1, &ws, NULL);
  dynb__tensor xi = tu_upload(ctx, DYNB_I32, 4, dx, NULL);
  dynb__tensor wi = tu_upload(ctx, DYNB_I32, 4, dw, NULL);
  dynb__tensor yi = tu_upload(ctx, DYNB_I32, 4, dy, NULL);
  dynb__tensor worki = tu_upload(ctx, DYNB_I32, 1, &ws, NULL);
  /* Every output holds known values: a failed call must leave them as they are. */
  tu_write(ctx, &x, sent), tu_write(ctx, &y, sent), tu_write(ctx, &w, sent);
  dynb__tensor over = x, nobuf = w;
  over.offset = 1; /* one element past the end of its buffer */
  nobuf.mem = NULL;
  const dynb_status INV = DYNB_STATUS_INVALID_ARGUMENT, SHAPE = DYNB_STATUS_SHAPE_MISMATCH;
  const dynb_status SMALL = DYNB_STATUS_BUFFER_TOO_SMALL;
  /* An f64 call with an f32 output is refused for the mix; on a device
   * without fp64 (rusticl's llvmpipe) for its real type, checked first. */
  const dynb_status MIX64 = ctx->info.has_fp64 ? INV : DYNB_STATUS_UNSUPPORTED;

  /* forward */
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, NULL, &w, &b, &y, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w, &b, &y, NULL), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &nobuf, &b, &y, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w64, &b, &y, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x64, &w64, NULL, &y, &work64), MIX64);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w, &b, &y, &work64), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &xi, &wi, NULL, &yi, &worki), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &we, &b, &y, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &wr, &b, &y, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &xc, &w, &b, &y, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x3, &w, &b, &y, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w, &b, &yh, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w, &b, &yn, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w, &bbad, &y, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w, &x, &y, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &x, &w, &b, &y, &wshort), SMALL);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_forward(ctx, &over, &w, &b, &y, &work), SMALL);
  /* backward data and weights */
  TU_EXPECT_STATUS(ctx, dynb__conv2d_backward_data(ctx, &y, NULL, &x, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_backward_data(ctx, &y, &w, &xc, true, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_backward_data(ctx, &y, &w, &x, false, &wshort), SMALL);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_backward_weights(ctx, &x, &y, NULL, true, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_backward_weights(ctx, &x, &y, &we, true, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_backward_weights(ctx, &x, &yh, &w, true, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_backward_weights(ctx, &x, &y, &w64, true, &work), INV);
  /* transposed: z is Cout-side, y Cin-side, its bias has Cin entries */
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_forward(ctx, &y, &w, &b, &x, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_forward(ctx, &x, &w, &bt, &y, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_forward(ctx, &y, &wr, &bt, &x, &work), SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_forward(ctx, &y, &w, &bt, &x, &wshort), SMALL);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_backward_data(ctx, &x, &w, NULL, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_backward_data(ctx, &x, &we, &y, false, &work), INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_backward_data(ctx, &over, &w, &y, false, &work),
                   SMALL);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_backward_weights(ctx, NULL, &x, &w, true, &work),
                   INV);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_backward_weights(ctx, &x, &y, &w, true, &work),
                   SHAPE);
  TU_EXPECT_STATUS(ctx, dynb__conv2d_transpose_backward_weights(ctx, &y, &x, &w, true, &wshort),
                   SMALL);
  /* The failed calls wrote nothing: the outputs still hold their values.
   * Then a correct call succeeds with the same tensors. */
  TU_OK(ctx, dynb__finish(ctx));
  const dynb__tensor *outs[] = {&x, &y, &w};
  for (int t = 0; t < 3; t++) {
    tu_download(ctx, outs[t], back);
    for (size_t i = 0; i < dynb__tensor_numel(outs[t]); i++) assert_true(back[i] == sent[i]);
  }
  TU_OK(ctx, dynb__conv2d_forward(ctx, &x, &w, &b, &y, &work));
  TU_OK(ctx, dynb__conv2d_transpose_forward(ctx, &y, &w, &bt, &x, &work));

  dynb__tensor *all[] = {&x, &y, &w, &b, &bt, &work, &we, &wr, &xc, &yh, &yn, &bbad,
                         &x3, &wshort, &x64, &w64, &work64, &xi, &wi, &yi, &worki};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) dynb__tensor_release(all[i]);
  free(sent), free(back);
  dynb_ctx_free(ctx);
}

/* A test of one route: its name ends in "/<route>", so that a filter
 * (the first argument, cmocka's pattern with * and ?) picks one route's
 * tests, as the Oclgrind targets do to run routes in parallel. */
#define ROUTE_TEST(f, route) \
  { #f "/" #route, f, NULL, NULL, (void *)&route_##route }
#define PLAIN_TEST(f, route) \
  { #f "/" #route, f, NULL, NULL, NULL }

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      PLAIN_TEST(ref_hand_checked, host),
      PLAIN_TEST(workspace_size, host),
      ROUTE_TEST(ops_match_reference, gemm),
      ROUTE_TEST(ops_match_reference, row),
      ROUTE_TEST(ops_match_reference, wide),
      ROUTE_TEST(ops_match_reference, wide2),
      ROUTE_TEST(ops_match_reference, auto),
      ROUTE_TEST(transpose_is_adjoint, gemm),
      ROUTE_TEST(transpose_is_adjoint, row),
      ROUTE_TEST(transpose_is_adjoint, wide),
      ROUTE_TEST(transpose_is_adjoint, wide2),
      ROUTE_TEST(gradients_match_fd, gemm),
      ROUTE_TEST(gradients_match_fd, row),
      ROUTE_TEST(gradients_match_fd, wide),
      ROUTE_TEST(gradients_match_fd, wide2),
      PLAIN_TEST(choices_are_cached, auto),
      ROUTE_TEST(work_follows_routes, gemm),
      ROUTE_TEST(work_follows_routes, row),
      ROUTE_TEST(work_follows_routes, wide),
      ROUTE_TEST(work_follows_routes, wide2),
      ROUTE_TEST(work_follows_routes, auto),
      PLAIN_TEST(bad_arguments_are_reported, gemm), /* it forces the GEMM route */
  };
  if (argc > 1) cmocka_set_test_filter(argv[1]);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
