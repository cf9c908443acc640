/* Softmax cross-entropy: loss, accuracy count and gradient against the
 * reference (K = 1 and 10, N = 1 and 125, logits of ±1000, ties,
 * out-of-range labels), gradient against central differences, argument
 * checks. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

/* Labels at element offset 2 of their buffer (returned in *base). */
static dynb__tensor labels_at(dynb_ctx *ctx, int n, const int32_t *labels, dynb__tensor *base) {
  int32_t *padded = calloc((size_t)n + 2, sizeof *padded);
  memcpy(padded + 2, labels, (size_t)n * sizeof *labels);
  *base = tu_upload_i32(ctx, n + 2, padded);
  free(padded);
  int64_t d = n;
  return dynb__tensor_view(base->mem, 2, DYNB_I32, 1, &d);
}

static void ref_hand_checked(void **state) {
  (void)state;
  /* Row 0: logits [0 0], label 0: softmax [1/2 1/2], loss ln 2; arg-max
   * tie → index 0 = label: correct. Row 1: logits [0 ln 3], label 1:
   * softmax [1/4 3/4], loss ln(4/3); correct. Mean loss ln(8/3)/2.
   * Gradient (scale 1, N = 2): row 0 [(1/2 - 1)/2, 1/4] = [-1/4 1/4],
   * row 1 [1/8, (3/4 - 1)/2] = [1/8 -1/8]. */
  const double z[4] = {0, 0, 0, log(3.0)};
  const int32_t labels[2] = {0, 1};
  double out[2], d[4];
  ref_xent_forward(2, 2, z, labels, out);
  assert_true(fabs(out[0] - log(8.0 / 3.0) / 2) < 1e-15 && out[1] == 2);
  ref_xent_backward(2, 2, z, labels, 1.0, d);
  assert_true(fabs(d[0] + 0.25) < 1e-16 && fabs(d[1] - 0.25) < 1e-16);
  assert_true(fabs(d[2] - 0.125) < 1e-16 && fabs(d[3] + 0.125) < 1e-16);
  /* Labels 1 and 0 instead: both rows wrong (row 0's tie goes to index 0). */
  const int32_t wrong[2] = {1, 0};
  ref_xent_forward(2, 2, z, wrong, out);
  assert_true(out[1] == 0);
}

typedef struct xent_case {
  dynb_dtype dt;
  int n, k;
  double spread; /* logits are ±spread + U(-3, 3); 0: just U(-3, 3) */
} xent_case;

static double *case_logits(tu_rng *r, xent_case xc) {
  size_t p = (size_t)xc.n * xc.k;
  double *z = tu_random(r, p, -3, 3);
  for (size_t i = 0; i < p; i++) z[i] += tu_uniform(r, 0, 1) < 0.5 ? -xc.spread : xc.spread;
  /* Every fifth row gets a tie for its maximum between two classes. */
  for (int row = 0; xc.k > 2 && row < xc.n; row += 5) {
    double *zr = z + (size_t)row * xc.k, m = zr[0];
    for (int j = 1; j < xc.k; j++) m = fmax(m, zr[j]);
    zr[1] = zr[xc.k - 1] = m + 1;
  }
  return z;
}

/* Loss bound. A row's loss log Σ exp(z - m) - (z_l - m) errs by at most
 * (K + 6)u from the sum of K positive terms each within 3 ulp (OpenCL's
 * exp), plus up to ~24u from rounding the arguments of the terms that
 * matter, plus 6u·ln K from log (3 ulp), plus 2u·|loss| from the last
 * subtractions. The mean adds a tree of depth d = ceil(N/wg) + log2(wg)
 * (wg = the reduction size) and a division: (d + 1)u·mean|loss|. Doubled
 * for the double reference. */
static double loss_tol(dynb_ctx *ctx, xent_case xc, double mean_abs) {
  size_t wg = dynb__reduce_wg(ctx), d = ((size_t)xc.n + wg - 1) / wg;
  for (size_t k = wg; k > 1; k /= 2) d++;
  return 2 * tu_unit(xc.dt) * (xc.k + 30 + 6 * log((double)xc.k) + ((double)d + 3) * mean_abs);
}

static void forward_case(dynb_ctx *ctx, xent_case xc) {
  tu_rng r = tu_rng_seed((uint64_t)(xc.n * 1000 + xc.k + (int)xc.spread));
  size_t p = (size_t)xc.n * xc.k;
  double *z = case_logits(&r, xc), want[2], got[2], again[2];
  tu_round_to(xc.dt, z, p);
  int32_t *labels = malloc((size_t)xc.n * sizeof *labels);
  for (int i = 0; i < xc.n; i++) labels[i] = (int32_t)(tu_uniform(&r, 0, 1) * xc.k) % xc.k;
  for (int row = 0; xc.k > 2 && row < xc.n; row += 10) labels[row] = 1; /* a tie won */
  int64_t zd[2] = {xc.n, xc.k}, od = 2, wd = (int64_t)dynb__xent_workspace(xc.n);
  dynb__tensor bz, bo, bw, bl;
  dynb__tensor tz = tu_upload_at(ctx, xc.dt, 2, zd, z, 3, &bz),
               to = tu_upload_at(ctx, xc.dt, 1, &od, NULL, 1, &bo);
  dynb__tensor tw = tu_upload_at(ctx, xc.dt, 1, &wd, NULL, 5, &bw),
               tl = labels_at(ctx, xc.n, labels, &bl);
  TU_OK(ctx, dynb__xent_forward(ctx, &tz, &tl, &to, &tw));
  tu_download(ctx, &to, got);
  TU_OK(ctx, dynb__xent_forward(ctx, &tz, &tl, &to, &tw));
  tu_download(ctx, &to, again);
  ref_xent_forward(xc.n, xc.k, z, labels, want);
  char what[96];
  snprintf(what, sizeof what, "xent_forward %s N=%d K=%d spread=%g", dynb__dtype_name(xc.dt), xc.n,
           xc.k, xc.spread);
  tu_assert_close(what, got, want, 1, 0, loss_tol(ctx, xc, want[0]));
  assert_true(got[1] == want[1]); /* the count is exact */
  assert_true(got[0] == again[0] && got[1] == again[1]); /* and every run alike */
  if (xc.k == 1) assert_true(got[0] == 0 && got[1] == xc.n);
  dynb__tensor_release(&bz), dynb__tensor_release(&bo), dynb__tensor_release(&bw);
  dynb__tensor_release(&bl);
  free(z), free(labels);
}

/* Gradient bound: softmax_j = exp(z_j - m)·(c / s) errs by (K + 40)u
 * relative (the sum as above, exp, a division of 2.5 ulp, the rounded
 * c = scale/N), so the element errs by |c|(K + 42)u absolute with the
 * one-hot subtraction; accumulation adds u relative. Doubled for the
 * double reference. */
static void backward_case(dynb_ctx *ctx, xent_case xc, double scale) {
  tu_rng r = tu_rng_seed((uint64_t)(xc.n * 1000 + xc.k + (int)xc.spread + 3));
  size_t p = (size_t)xc.n * xc.k;
  double *z = case_logits(&r, xc), *d0 = tu_random(&r, p, -1, 1);
  double *want = malloc(p * sizeof *want), *got = malloc(p * sizeof *got);
  tu_round_to(xc.dt, z, p), tu_round_to(xc.dt, d0, p);
  int32_t *labels = malloc((size_t)xc.n * sizeof *labels);
  for (int i = 0; i < xc.n; i++) labels[i] = (int32_t)(tu_uniform(&r, 0, 1) * xc.k) % xc.k;
  int64_t zd[2] = {xc.n, xc.k};
  dynb__tensor bz, bd, bl;
  dynb__tensor tz = tu_upload_at(ctx, xc.dt, 2, zd, z, 1, &bz),
               td = tu_upload_at(ctx, xc.dt, 2, zd, d0, 4, &bd);
  dynb__tensor tl = labels_at(ctx, xc.n, labels, &bl);
  /* Checked as 2(K + 42)u·(|c| + |want|), which also covers the
   * accumulation and prints errors relative to max(|want|, |c|). */
  double c = fabs(scale) / xc.n, rtol = 2 * (xc.k + 42) * tu_unit(xc.dt), atol = c * rtol;
  ref_xent_backward(xc.n, xc.k, z, labels, scale, want);
  char what[128];
  for (int acc = 0; acc < 2; acc++) {
    TU_OK(ctx, dynb__xent_backward(ctx, &tz, &tl, scale, &td, acc));
    tu_download(ctx, &td, got);
    for (size_t i = 0; acc && i < p; i++) want[i] += d0[i];
    snprintf(what, sizeof what, "xent_backward %s N=%d K=%d spread=%g scale=%g%s",
             dynb__dtype_name(xc.dt), xc.n, xc.k, xc.spread, scale, acc ? " acc" : "");
    tu_assert_close(what, got, want, p, rtol, atol);
    tu_write(ctx, &td, d0);
  }
  dynb__tensor_release(&bz), dynb__tensor_release(&bd), dynb__tensor_release(&bl);
  free(z), free(d0), free(want), free(got), free(labels);
}

static void matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    const xent_case cases[] = {
        {dt, 1, 1, 0},       /* K = 1: loss 0, every row correct */
        {dt, 125, 1, 0},     /* the same over many rows */
        {dt, 1, 10, 0},      /* N = 1 */
        {dt, 125, 10, 0},    /* N not a multiple of 64 */
        {dt, 300, 10, 0},    /* more rows than the reducing group */
        {dt, 125, 10, 1000}, /* logits of ±1000 */
        {dt, 7, 1000, 0},    /* many classes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
      forward_case(ctx, cases[i]);
      backward_case(ctx, cases[i], 1.0);
    }
    backward_case(ctx, cases[3], -2.5);
  }
  dynb_ctx_free(ctx);
}

/* A label outside 0..K-1 makes the loss NaN and the row's gradient NaN;
 * other rows are unaffected and the count covers the valid rows. */
static void bad_labels_give_nan(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    const double z[9] = {3, 0, 0, 0, 3, 0, 0, 0, 3};
    const int32_t labels[3] = {0, 3, -1}; /* row 0 valid and correct */
    int64_t zd[2] = {3, 3}, od = 2, wd = (int64_t)dynb__xent_workspace(3);
    dynb__tensor tz = tu_upload(ctx, dt, 2, zd, z), to = tu_upload(ctx, dt, 1, &od, NULL);
    dynb__tensor tw = tu_upload(ctx, dt, 1, &wd, NULL), tl = tu_upload_i32(ctx, 3, labels);
    dynb__tensor td = tu_upload(ctx, dt, 2, zd, NULL);
    double out[2], g[9], want[3];
    TU_OK(ctx, dynb__xent_forward(ctx, &tz, &tl, &to, &tw));
    tu_download(ctx, &to, out);
    assert_true(isnan(out[0]) && out[1] == 1);
    TU_OK(ctx, dynb__xent_backward(ctx, &tz, &tl, 1.0, &td, false));
    tu_download(ctx, &td, g);
    double ref[9];
    ref_xent_backward(3, 3, z, labels, 1.0, ref);
    memcpy(want, ref, sizeof want);
    tu_assert_close(d ? "xent_backward f64 valid row" : "xent_backward f32 valid row", g, want, 3,
                    2 * 45 * tu_unit(dt), 2 * 45 * tu_unit(dt) / 3);
    for (int i = 3; i < 9; i++) assert_true(isnan(g[i]) && isnan(ref[i]));
    dynb__tensor_release(&tz), dynb__tensor_release(&to), dynb__tensor_release(&tw);
    dynb__tensor_release(&tl), dynb__tensor_release(&td);
  }
  dynb_ctx_free(ctx);
}

/* L(z) = mean cross-entropy through the reference; the device's f64
 * gradient with scale 1 against central differences. log-sum-exp is
 * smooth with third derivatives below 1/N: truncation h²/6N ~ 1e-11 at
 * h = 1e-5, rounding of L (~1e-15) over 2h ~ 1e-10: tolerance 1e-8. */
typedef struct fd_ctx {
  int n, k;
  double *z;
  const int32_t *labels;
} fd_ctx;

static double fd_loss(void *user) {
  fd_ctx *f = user;
  double out[2];
  ref_xent_forward(f->n, f->k, f->z, f->labels, out);
  return out[0];
}

static void backward_matches_fd(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  const int shapes[3][2] = {{1, 1}, {1, 10}, {6, 10}};
  for (int s = 0; s < 3; s++) {
    tu_rng r = tu_rng_seed(500 + s);
    int n = shapes[s][0], k = shapes[s][1];
    size_t p = (size_t)n * k;
    int32_t labels[6];
    for (int i = 0; i < n; i++) labels[i] = (int32_t)(tu_uniform(&r, 0, 1) * k) % k;
    fd_ctx f = {.n = n, .k = k, .z = tu_random(&r, p, -3, 3), .labels = labels};
    int64_t zd[2] = {n, k};
    dynb__tensor tz = tu_upload(ctx, DYNB_F64, 2, zd, f.z), tl = tu_upload_i32(ctx, n, labels);
    dynb__tensor td = tu_upload(ctx, DYNB_F64, 2, zd, NULL);
    TU_OK(ctx, dynb__xent_backward(ctx, &tz, &tl, 1.0, &td, false));
    double *an = malloc(p * sizeof *an);
    tu_download(ctx, &td, an);
    char what[64];
    snprintf(what, sizeof what, "xent d/dlogits N=%d K=%d", n, k);
    tu_check_gradient(what, fd_loss, &f, f.z, p, an, 1e-5, 1e-8, p);
    dynb__tensor_release(&tz), dynb__tensor_release(&tl), dynb__tensor_release(&td);
    free(f.z), free(an);
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  assert_int_equal(dynb__xent_workspace(125), 250);
  int64_t zd[2] = {4, 3}, z5[2] = {5, 3}, od = 2, o3 = 3, wd = 8, w7 = 7, flat = 12;
  const int32_t lab[5] = {0, 1, 2, 0, 1};
  dynb__tensor z = tu_upload(ctx, DYNB_F32, 2, zd, NULL),
               zb = tu_upload(ctx, DYNB_F32, 2, z5, NULL);
  dynb__tensor zi = tu_upload(ctx, DYNB_I32, 2, zd, NULL),
               zf = tu_upload(ctx, DYNB_F32, 1, &flat, NULL);
  dynb__tensor o = tu_upload(ctx, DYNB_F32, 1, &od, NULL),
               ob = tu_upload(ctx, DYNB_F32, 1, &o3, NULL);
  dynb__tensor o64 = tu_upload(ctx, DYNB_F64, 1, &od, NULL),
               w = tu_upload(ctx, DYNB_F32, 1, &wd, NULL);
  dynb__tensor wsmall = tu_upload(ctx, DYNB_F32, 1, &w7, NULL);
  dynb__tensor l = tu_upload_i32(ctx, 4, lab), l5 = tu_upload_i32(ctx, 5, lab);
  dynb__tensor lf = tu_upload(ctx, DYNB_F32, 1, &zd[0], NULL);
  const dynb_status inval = DYNB_STATUS_INVALID_ARGUMENT, shape = DYNB_STATUS_SHAPE_MISMATCH;
  const dynb_status small = DYNB_STATUS_BUFFER_TOO_SMALL;
  dynb__tensor over = z, lover = l;
  over.offset = 1;
  lover.offset = 1;
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, NULL, &l, &o, &w), inval);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, NULL, &o, &w), inval);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &l, NULL, &w), inval);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &l, &o, NULL), inval);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &zi, &l, &o, &w), inval);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &lf, &o, &w), inval); /* labels must be i32 */
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &l, &o64, &w), inval);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &zf, &l, &o, &w), shape);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &l5, &o, &w), shape);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &l, &ob, &w), shape);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &l, &o, &wsmall), small);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &over, &l, &o, &w), small);
  TU_EXPECT_STATUS(ctx, dynb__xent_forward(ctx, &z, &lover, &o, &w), small);
  TU_EXPECT_STATUS(ctx, dynb__xent_backward(ctx, &z, &l, 1.0, NULL, false), inval);
  TU_EXPECT_STATUS(ctx, dynb__xent_backward(ctx, &z, &l, 1.0, &zb, false), shape);
  TU_EXPECT_STATUS(ctx, dynb__xent_backward(ctx, &z, &l5, 1.0, &z, false), shape);
  TU_EXPECT_STATUS(ctx, dynb__xent_backward(ctx, &z, &l, 1.0, &over, true), small);
  TU_EXPECT_STATUS(ctx, dynb__xent_backward(ctx, &z, &lf, 1.0, &z, false), inval);
  dynb__tensor_release(&z), dynb__tensor_release(&zb), dynb__tensor_release(&zi);
  dynb__tensor_release(&zf), dynb__tensor_release(&o), dynb__tensor_release(&ob);
  dynb__tensor_release(&o64), dynb__tensor_release(&w), dynb__tensor_release(&wsmall);
  dynb__tensor_release(&l), dynb__tensor_release(&l5), dynb__tensor_release(&lf);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(matches_reference),
      cmocka_unit_test(bad_labels_give_nan),
      cmocka_unit_test(backward_matches_fd),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
