/* The fully connected layer: forward and backward against the reference
 * (with and without bias, NULL gradients, accumulation, buffer offsets),
 * backward against central differences, argument checks. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

static double *fabs_of(const double *x, size_t n) {
  double *a = malloc((n ? n : 1) * sizeof *a);
  for (size_t i = 0; i < n; i++) a[i] = fabs(x[i]);
  return a;
}

static double max_of(const double *x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, x[i]);
  return m;
}

/* Bound for a product of inner dimension k, whatever order CLBlast sums
 * in: |err| <= (k + 2)·u·Σ|a||b| (the classic γ_k dot-product bound, plus
 * one rounding for the bias or the accumulated old value, which are
 * included in the magnitude), doubled for the double reference. The
 * magnitude is the same product over absolute values. */
static double gemm_atol(dynb_dtype dt, int k, const double *mag, size_t n) {
  return 2 * (k + 2) * tu_unit(dt) * max_of(mag, n);
}

static void ref_hand_checked(void **state) {
  (void)state;
  /* x = [1 2], w = [[1 0], [0 1], [1 1]], b = [0.5 0 -1]:
   * y = [1 + 0.5, 2 + 0, 3 - 1] = [1.5 2 2]. With dy = [1 2 3]:
   * dx = dy w = [1 + 3, 2 + 3] = [4 5]; dw = dyᵀ x = [[1 2] [2 4] [3 6]];
   * db = dy = [1 2 3]. */
  const double x[2] = {1, 2}, w[6] = {1, 0, 0, 1, 1, 1}, b[3] = {0.5, 0, -1}, dy[3] = {1, 2, 3};
  double y[3], dx[2], dw[6], db[3];
  ref_linear_forward(1, 2, 3, x, w, b, y);
  assert_true(y[0] == 1.5 && y[1] == 2 && y[2] == 2);
  ref_linear_backward(1, 2, 3, x, w, dy, dx, dw, db);
  assert_true(dx[0] == 4 && dx[1] == 5);
  assert_true(dw[0] == 1 && dw[1] == 2 && dw[2] == 2 && dw[3] == 4 && dw[4] == 3 && dw[5] == 6);
  assert_true(db[0] == 1 && db[1] == 2 && db[2] == 3);
}

typedef struct lin_case {
  dynb_dtype dt;
  int n, in, out;
  bool bias;
} lin_case;

static void forward_case(dynb_ctx *ctx, lin_case lc) {
  tu_rng r = tu_rng_seed((uint64_t)(lc.n * 10000 + lc.in * 100 + lc.out + lc.bias));
  size_t px = (size_t)lc.n * lc.in, pw = (size_t)lc.out * lc.in, py = (size_t)lc.n * lc.out;
  double *x = tu_random(&r, px, -1, 1), *w = tu_random(&r, pw, -1, 1);
  double *b = tu_random(&r, (size_t)lc.out, -1, 1), *want = malloc(py * sizeof *want);
  double *got = malloc(py * sizeof *got);
  tu_round_to(lc.dt, x, px), tu_round_to(lc.dt, w, pw), tu_round_to(lc.dt, b, (size_t)lc.out);
  int64_t xd[2] = {lc.n, lc.in}, wd[2] = {lc.out, lc.in}, bd = lc.out, yd[2] = {lc.n, lc.out};
  dynb__tensor bx, bw, bb, by;
  dynb__tensor tx = tu_upload_at(ctx, lc.dt, 2, xd, x, 3, &bx),
               tw = tu_upload_at(ctx, lc.dt, 2, wd, w, 0, &bw);
  dynb__tensor tb = tu_upload_at(ctx, lc.dt, 1, &bd, b, 1, &bb);
  /* y starts as NaN: the forward must overwrite, not scale, what was there. */
  double *nan = malloc(py * sizeof *nan);
  for (size_t i = 0; i < py; i++) nan[i] = NAN;
  dynb__tensor ty = tu_upload_at(ctx, lc.dt, 2, yd, nan, 7, &by);
  TU_OK(ctx, dynb__linear_forward(ctx, &tx, &tw, lc.bias ? &tb : NULL, &ty));
  tu_download(ctx, &ty, got);
  ref_linear_forward(lc.n, lc.in, lc.out, x, w, lc.bias ? b : NULL, want);
  double *ax = fabs_of(x, px), *aw = fabs_of(w, pw), *ab = fabs_of(b, (size_t)lc.out);
  double *mag = malloc(py * sizeof *mag);
  ref_linear_forward(lc.n, lc.in, lc.out, ax, aw, lc.bias ? ab : NULL, mag);
  double atol = gemm_atol(lc.dt, lc.in, mag, py);
  char what[96];
  snprintf(what, sizeof what, "linear_forward %s N=%d I=%d O=%d%s", dynb__dtype_name(lc.dt), lc.n,
           lc.in, lc.out, lc.bias ? " bias" : "");
  tu_assert_close(what, got, want, py, atol, atol);
  dynb__tensor_release(&bx), dynb__tensor_release(&bw), dynb__tensor_release(&bb);
  dynb__tensor_release(&by);
  free(x), free(w), free(b), free(want), free(got), free(nan), free(ax), free(aw), free(ab);
  free(mag);
}

static void forward_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    for (int bias = 0; bias < 2; bias++) {
      forward_case(ctx, (lin_case){dt, 1, 1, 1, bias});
      forward_case(ctx, (lin_case){dt, 1, 7, 10, bias});
      forward_case(ctx, (lin_case){dt, 125, 17, 10, bias});
      forward_case(ctx, (lin_case){dt, 128, 64, 10, bias});
      forward_case(ctx, (lin_case){dt, 13, 300, 9, bias}); /* inner dimension > 256 */
    }
  }
  dynb_ctx_free(ctx);
}

/* Checks one gradient: got against want (+ old when acc), with the bound
 * of a product of inner dimension k over the magnitudes mag (+ |old|). */
static void check_grad(const char *what, lin_case lc, dynb_ctx *ctx, const dynb__tensor *t,
                       double *want, double *mag, const double *old, bool acc, int k, size_t n) {
  double *got = malloc(n * sizeof *got);
  tu_download(ctx, t, got);
  for (size_t i = 0; acc && i < n; i++) want[i] += old[i], mag[i] += fabs(old[i]);
  char full[128];
  snprintf(full, sizeof full, "linear_backward %s %s N=%d I=%d O=%d%s", what,
           dynb__dtype_name(lc.dt), lc.n, lc.in, lc.out, acc ? " acc" : "");
  double atol = gemm_atol(lc.dt, k, mag, n);
  tu_assert_close(full, got, want, n, atol, atol);
  free(got);
}

/* Backward with every gradient, overwriting NaN, then accumulating onto
 * random values, then with some gradients NULL. */
static void backward_case(dynb_ctx *ctx, lin_case lc) {
  tu_rng r = tu_rng_seed((uint64_t)(lc.n * 10000 + lc.in * 100 + lc.out + 5));
  size_t px = (size_t)lc.n * lc.in, pw = (size_t)lc.out * lc.in, py = (size_t)lc.n * lc.out;
  size_t po = (size_t)lc.out;
  double *x = tu_random(&r, px, -1, 1), *w = tu_random(&r, pw, -1, 1),
         *dy = tu_random(&r, py, -1, 1);
  double *dx0 = tu_random(&r, px, -1, 1), *dw0 = tu_random(&r, pw, -1, 1),
         *db0 = tu_random(&r, po, -1, 1);
  double *nan = malloc((px + pw + po) * sizeof *nan);
  for (size_t i = 0; i < px + pw + po; i++) nan[i] = NAN;
  tu_round_to(lc.dt, x, px), tu_round_to(lc.dt, w, pw), tu_round_to(lc.dt, dy, py);
  tu_round_to(lc.dt, dx0, px), tu_round_to(lc.dt, dw0, pw), tu_round_to(lc.dt, db0, po);
  int64_t xd[2] = {lc.n, lc.in}, wd[2] = {lc.out, lc.in}, bd = lc.out, yd[2] = {lc.n, lc.out};
  dynb__tensor bx, bw, bdy, bdx, bdw, bdb;
  dynb__tensor tx = tu_upload_at(ctx, lc.dt, 2, xd, x, 2, &bx),
               tw = tu_upload_at(ctx, lc.dt, 2, wd, w, 1, &bw);
  dynb__tensor tdy = tu_upload_at(ctx, lc.dt, 2, yd, dy, 5, &bdy);
  dynb__tensor tdx = tu_upload_at(ctx, lc.dt, 2, xd, nan, 3, &bdx);
  dynb__tensor tdw = tu_upload_at(ctx, lc.dt, 2, wd, nan, 0, &bdw);
  dynb__tensor tdb = tu_upload_at(ctx, lc.dt, 1, &bd, nan, 4, &bdb);
  double *wdx = malloc(px * sizeof *wdx), *wdw = malloc(pw * sizeof *wdw),
         *wdb = malloc(po * sizeof *wdb);
  double *mdx = malloc(px * sizeof *mdx), *mdw = malloc(pw * sizeof *mdw),
         *mdb = malloc(po * sizeof *mdb);
  double *ax = fabs_of(x, px), *aw = fabs_of(w, pw), *ady = fabs_of(dy, py);
  for (int pass = 0; pass < 3; pass++) {
    bool acc = pass == 1, partial = pass == 2;
    if (acc) tu_write(ctx, &tdx, dx0), tu_write(ctx, &tdw, dw0), tu_write(ctx, &tdb, db0);
    if (partial) tu_write(ctx, &tdx, nan), tu_write(ctx, &tdw, nan), tu_write(ctx, &tdb, db0);
    /* The partial pass asks for dw alone: dx stays NaN and db keeps db0. */
    TU_OK(ctx, dynb__linear_backward(ctx, &tx, &tw, &tdy, partial ? NULL : &tdx, &tdw,
                                     partial ? NULL : &tdb, acc, acc));
    ref_linear_backward(lc.n, lc.in, lc.out, x, w, dy, wdx, wdw, wdb);
    ref_linear_backward(lc.n, lc.in, lc.out, ax, aw, ady, mdx, mdw, mdb);
    check_grad("dw", lc, ctx, &tdw, wdw, mdw, dw0, acc, lc.n, pw);
    if (partial) {
      double *got = malloc((px + po) * sizeof *got);
      tu_download(ctx, &tdx, got);
      for (size_t i = 0; i < px; i++) assert_true(isnan(got[i]));
      tu_download(ctx, &tdb, got);
      for (size_t i = 0; i < po; i++) assert_true(got[i] == db0[i]);
      free(got);
      continue;
    }
    check_grad("dx", lc, ctx, &tdx, wdx, mdx, dx0, acc, lc.out, px);
    check_grad("db", lc, ctx, &tdb, wdb, mdb, db0, acc, lc.n, po);
  }
  dynb__tensor_release(&bx), dynb__tensor_release(&bw), dynb__tensor_release(&bdy);
  dynb__tensor_release(&bdx), dynb__tensor_release(&bdw), dynb__tensor_release(&bdb);
  free(x), free(w), free(dy), free(dx0), free(dw0), free(db0), free(nan);
  free(wdx), free(wdw), free(wdb), free(mdx), free(mdw), free(mdb), free(ax), free(aw), free(ady);
}

static void backward_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    backward_case(ctx, (lin_case){dt, 1, 1, 1, true});
    backward_case(ctx, (lin_case){dt, 1, 7, 10, true});
    backward_case(ctx, (lin_case){dt, 125, 17, 10, true});
    backward_case(ctx, (lin_case){dt, 300, 64, 10, true}); /* batch > 256 */
  }
  dynb_ctx_free(ctx);
}

/* L = Σ wt ⊙ linear(x, w, b) through the reference, differentiated with
 * respect to x, w and b. L is bilinear in (x, w) and linear in b, so
 * central differences are exact up to the rounding of L (~1e-14 over
 * 2h = 2e-3): tolerance 1e-9. */
typedef struct fd_ctx {
  int n, in, out;
  double *x, *w, *b, *wt, *tmp;
} fd_ctx;

static double fd_loss(void *user) {
  fd_ctx *f = user;
  ref_linear_forward(f->n, f->in, f->out, f->x, f->w, f->b, f->tmp);
  return tu_dot(f->wt, f->tmp, (size_t)f->n * f->out);
}

static void backward_matches_fd(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  tu_rng r = tu_rng_seed(77);
  const int n = 5, in = 7, out = 3;
  size_t px = n * in, pw = out * in, py = n * out;
  fd_ctx f = {.n = n, .in = in, .out = out, .x = tu_random(&r, px, -1, 1),
              .w = tu_random(&r, pw, -1, 1), .b = tu_random(&r, out, -1, 1),
              .wt = tu_random(&r, py, -1, 1), .tmp = malloc(py * sizeof(double))};
  int64_t xd[2] = {n, in}, wd[2] = {out, in}, bd = out, yd[2] = {n, out};
  dynb__tensor tx = tu_upload(ctx, DYNB_F64, 2, xd, f.x), tw = tu_upload(ctx, DYNB_F64, 2, wd, f.w);
  dynb__tensor tdy = tu_upload(ctx, DYNB_F64, 2, yd, f.wt),
               tdx = tu_upload(ctx, DYNB_F64, 2, xd, NULL);
  dynb__tensor tdw = tu_upload(ctx, DYNB_F64, 2, wd, NULL),
               tdb = tu_upload(ctx, DYNB_F64, 1, &bd, NULL);
  TU_OK(ctx, dynb__linear_backward(ctx, &tx, &tw, &tdy, &tdx, &tdw, &tdb, false, false));
  double *gx = malloc(px * sizeof *gx), *gw = malloc(pw * sizeof *gw), gb[3];
  tu_download(ctx, &tdx, gx), tu_download(ctx, &tdw, gw), tu_download(ctx, &tdb, gb);
  tu_check_gradient("linear d/dx", fd_loss, &f, f.x, px, gx, 1e-3, 1e-9, px);
  tu_check_gradient("linear d/dw", fd_loss, &f, f.w, pw, gw, 1e-3, 1e-9, pw);
  tu_check_gradient("linear d/db", fd_loss, &f, f.b, (size_t)out, gb, 1e-3, 1e-9, (size_t)out);
  dynb__tensor_release(&tx), dynb__tensor_release(&tw), dynb__tensor_release(&tdy);
  dynb__tensor_release(&tdx), dynb__tensor_release(&tdw), dynb__tensor_release(&tdb);
  free(f.x), free(f.w), free(f.b), free(f.wt), free(f.tmp), free(gx), free(gw);
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t xd[2] = {4, 3}, wd[2] = {2, 3}, yd[2] = {4, 2}, bd = 2, b3 = 3, w4[2] = {2, 4};
  int64_t y3[2] = {4, 3}, x1 = 12;
  dynb__tensor x = tu_upload(ctx, DYNB_F32, 2, xd, NULL), w = tu_upload(ctx, DYNB_F32, 2, wd, NULL);
  dynb__tensor y = tu_upload(ctx, DYNB_F32, 2, yd, NULL),
               b = tu_upload(ctx, DYNB_F32, 1, &bd, NULL);
  dynb__tensor bb = tu_upload(ctx, DYNB_F32, 1, &b3, NULL),
               wb = tu_upload(ctx, DYNB_F32, 2, w4, NULL);
  dynb__tensor yb = tu_upload(ctx, DYNB_F32, 2, y3, NULL),
               xf = tu_upload(ctx, DYNB_F32, 1, &x1, NULL);
  dynb__tensor w64 = tu_upload(ctx, DYNB_F64, 2, wd, NULL),
               xi = tu_upload(ctx, DYNB_I32, 2, xd, NULL);
  const dynb_status inval = DYNB_STATUS_INVALID_ARGUMENT, shape = DYNB_STATUS_SHAPE_MISMATCH;
  dynb__tensor over = y, overb = b, nobuf = w;
  over.offset = 1;
  overb.offset = 1;
  nobuf.mem = NULL;
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, NULL, &w, &b, &y), inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, NULL, &b, &y), inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, &w, &b, NULL), inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, &nobuf, &b, &y), inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, &w64, &b, &y), inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &xi, &w, &b, &y), inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &xf, &w, &b, &y), shape);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, &wb, &b, &y), shape);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, &w, &bb, &y), shape);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, &w, &b, &yb), shape);
  TU_EXPECT_STATUS(ctx, dynb__linear_forward(ctx, &x, &w, &b, &over), DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__linear_backward(ctx, &x, &w, NULL, &x, &w, &b, false, false), inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_backward(ctx, &x, &w, &yb, &x, NULL, NULL, false, false),
                   shape);
  TU_EXPECT_STATUS(ctx, dynb__linear_backward(ctx, &x, &w, &y, &y, NULL, NULL, false, false),
                   shape);
  TU_EXPECT_STATUS(ctx, dynb__linear_backward(ctx, &x, &w, &y, NULL, &w64, NULL, false, true),
                   inval);
  TU_EXPECT_STATUS(ctx, dynb__linear_backward(ctx, &x, &w, &y, NULL, NULL, &overb, false, true),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  /* A bad db is found before dx and dw are written: nothing is enqueued. */
  double ones[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, got[12];
  dynb__tensor dx = tu_upload(ctx, DYNB_F32, 2, xd, ones),
               dw = tu_upload(ctx, DYNB_F32, 2, wd, ones);
  TU_EXPECT_STATUS(ctx, dynb__linear_backward(ctx, &x, &w, &y, &dx, &dw, &bb, false, false), shape);
  tu_download(ctx, &dx, got);
  for (int i = 0; i < 12; i++) assert_true(got[i] == 1);
  tu_download(ctx, &dw, got);
  for (int i = 0; i < 6; i++) assert_true(got[i] == 1);
  dynb__tensor_release(&x), dynb__tensor_release(&w), dynb__tensor_release(&y);
  dynb__tensor_release(&b), dynb__tensor_release(&bb), dynb__tensor_release(&wb);
  dynb__tensor_release(&yb), dynb__tensor_release(&xf), dynb__tensor_release(&w64);
  dynb__tensor_release(&xi), dynb__tensor_release(&dx), dynb__tensor_release(&dw);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(forward_matches_reference),
      cmocka_unit_test(backward_matches_reference),
      cmocka_unit_test(backward_matches_fd),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
