/* Parameter interpolation between control points: the host-side weights on
 * hand-made grids, the kernels against the reference, the adjoint against
 * finite differences, argument checks. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

/* out = (1 - w) a + w b: in float, the two products and the sum round once
 * each, and (1 - w), w are rounded to float on the host, so the error is at
 * most ~5 · 2^-24 · max(|a|, |b|) ≈ 3e-7 for data in [-1, 1]; 1e-6 absolute
 * and relative bounds it. In double the same count gives ~6e-16: 1e-14. */
static double tol_for(dynb_dtype dt) { return dt == DYNB_F32 ? 1e-6 : 1e-14; }

static void expect_point(const double *grid, int J, double t, int want_j0, double want_w) {
  int j0 = -1, rj0 = -1;
  double w = -1, rw = -1;
  dynb__interp_weights(grid, J, t, &j0, &w);
  ref_interp_weights(grid, J, t, &rj0, &rw);
  if (j0 != want_j0 || w != want_w || rj0 != want_j0 || rw != want_w)
    fail_msg("t = %g on a %d-point grid: op (%d, %g), ref (%d, %g), expected (%d, %g)", t, J, j0,
             w, rj0, rw, want_j0, want_w);
}

/* Expected values worked out by hand; the grids are dyadic so every w below
 * is exact in binary. Exact hits give (k, 0), never (k - 1, 1). */
static void weights_hand_checked(void **state) {
  (void)state;
  const double uniform[5] = {0, 1, 2, 3, 4};
  expect_point(uniform, 5, -1, 0, 0);   /* below: first point */
  expect_point(uniform, 5, 0, 0, 0);    /* at t0 */
  expect_point(uniform, 5, 0.5, 0, 0.5);
  expect_point(uniform, 5, 1, 1, 0);    /* interior hit */
  expect_point(uniform, 5, 2.25, 2, 0.25);
  expect_point(uniform, 5, 3, 3, 0);
  expect_point(uniform, 5, 4, 4, 0);    /* at t_end: the last point, w = 0 */
  expect_point(uniform, 5, 7, 4, 0);    /* above: last point */
  /* Non-uniform: steps 0.25, 0.75, 2. */
  const double grid[4] = {0, 0.25, 1, 3};
  expect_point(grid, 4, -1e300, 0, 0);
  expect_point(grid, 4, 0.125, 0, 0.5);           /* 0.125 / 0.25 */
  expect_point(grid, 4, 0.25, 1, 0);
  expect_point(grid, 4, 0.625, 1, 0.5);           /* (0.625 - 0.25) / 0.75 */
  expect_point(grid, 4, 1, 2, 0);
  expect_point(grid, 4, 2.5, 2, 0.75);            /* (2.5 - 1) / 2 */
  expect_point(grid, 4, 3, 3, 0);
  expect_point(grid, 4, INFINITY, 3, 0);
  expect_point(grid, 4, -INFINITY, 0, 0);
  /* Two points, negative times. */
  const double two[2] = {-1, 1};
  expect_point(two, 2, -1, 0, 0);
  expect_point(two, 2, 0, 0, 0.5);
  expect_point(two, 2, 0.5, 0, 0.75);
  expect_point(two, 2, 1, 1, 0);
  /* One control point: always (0, 0). */
  const double one[1] = {3};
  expect_point(one, 1, -5, 0, 0);
  expect_point(one, 1, 3, 0, 0);
  expect_point(one, 1, 10, 0, 0);
  /* NaN is not pinned to an end: w = NaN, which the ops reject. */
  int j0 = -1;
  double w = 0;
  dynb__interp_weights(grid, 4, NAN, &j0, &w);
  assert_int_equal(j0, 0);
  assert_true(isnan(w));
}

/* Binary search (op) against linear scan (ref) on random non-uniform grids,
 * at random times and at every grid point and its neighbours. */
static void weights_match_reference(void **state) {
  (void)state;
  tu_rng r = tu_rng_seed(11);
  double grid[9];
  for (int J = 1; J <= 9; J++)
    for (int trial = 0; trial < 20; trial++) {
      grid[0] = tu_uniform(&r, -2, 2);
      for (int j = 1; j < J; j++) grid[j] = grid[j - 1] + tu_uniform(&r, 0.01, 3);
      for (int k = 0; k < 40; k++) {
        double t = tu_uniform(&r, grid[0] - 1, grid[J - 1] + 1);
        if (k < J) t = grid[k];
        if (k >= J && k < 2 * J) t = nextafter(grid[k - J], INFINITY);
        if (k >= 2 * J && k < 3 * J) t = nextafter(grid[k - 2 * J], -INFINITY);
        int j0, rj0;
        double w, rw;
        dynb__interp_weights(grid, J, t, &j0, &w);
        ref_interp_weights(grid, J, t, &rj0, &rw);
        if (j0 != rj0 || w != rw)
          fail_msg("J=%d t=%.17g: op (%d, %.17g), ref (%d, %.17g)", J, t, j0, w, rj0, rw);
        assert_true(j0 >= 0 && j0 < J && w >= 0 && w <= 1 && (w == 0 || j0 + 1 < J));
      }
    }
}

static void ref_hand_checked(void **state) {
  (void)state;
  /* controls [[1, 2], [3, 6]], w = 0.25: 0.75·[1, 2] + 0.25·[3, 6] = [1.5, 3]. */
  const double c[4] = {1, 2, 3, 6};
  double out[2];
  ref_interp_forward(2, c, 0, 0.25, out);
  assert_true(out[0] == 1.5 && out[1] == 3);
  /* j0 = 1, w = 0 reads row 1 only (there is no row 2). */
  ref_interp_forward(2, c, 1, 0, out);
  assert_true(out[0] == 3 && out[1] == 6);
  /* dout [4, 8]: row 0 gets 0.75·dout = [3, 6], row 1 gets 0.25·dout = [1, 2], added to 1s. */
  const double dout[2] = {4, 8};
  double dc[4] = {1, 1, 1, 1};
  ref_interp_backward(2, dout, 0, 0.25, dc);
  assert_true(dc[0] == 4 && dc[1] == 7 && dc[2] == 2 && dc[3] == 3);
}

/* Device buffers hold a view at offset `pad` followed by `tail` guard
 * elements, so the tests see reads and writes outside the view. */
typedef struct padded {
  dynb__tensor buf, view;
  size_t pad, n, total;
} padded;

static padded padded_upload(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims,
                            size_t pad, size_t tail, const double *host) {
  padded p;
  p.pad = pad;
  p.n = 1;
  for (int i = 0; i < ndim; i++) p.n *= (size_t)dims[i];
  p.total = pad + p.n + tail;
  int64_t td = (int64_t)p.total;
  p.buf = tu_upload(ctx, dt, 1, &td, host);
  p.view = dynb__tensor_view(p.buf.mem, pad, dt, ndim, dims);
  return p;
}

/* Guard values: NaN right after controls, so a read of a control that the
 * weights exclude poisons the result. */
static double *with_guards(const double *x, size_t pad, size_t n, size_t tail, double fill) {
  double *b = malloc((pad + n + tail) * sizeof *b);
  for (size_t i = 0; i < pad + n + tail; i++) b[i] = fill;
  memcpy(b + pad, x, n * sizeof *x);
  return b;
}

static void forward_case(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims, int j0,
                         double w) {
  int J = (int)dims[0];
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
  size_t p = n / (size_t)J;
  tu_rng r = tu_rng_seed(n * 31 + (size_t)j0);
  double *c = tu_random(&r, n, -1, 1);
  tu_round_to(dt, c, n);
  double *cb = with_guards(c, 3, n, p, NAN);
  padded tc = padded_upload(ctx, dt, ndim, dims, 3, p, cb);
  double *ob0 = tu_random(&r, p + 7, -1, 1);
  tu_round_to(dt, ob0, p + 7);
  int64_t pd = (int64_t)p;
  padded to = padded_upload(ctx, dt, 1, &pd, 5, 2, ob0);
  TU_OK(ctx, dynb__interp_forward(ctx, &tc.view, j0, w, &to.view));
  double *got = malloc(to.total * sizeof *got), *want = malloc(p * sizeof *want);
  tu_download(ctx, &to.buf, got);
  ref_interp_forward(p, c, j0, w, want);
  char what[96];
  snprintf(what, sizeof what, "interp_forward %s J=%d p=%zu j0=%d w=%g", dynb__dtype_name(dt), J,
           p, j0, w);
  tu_assert_close(what, got + 5, want, p, tol_for(dt), tol_for(dt));
  for (size_t i = 0; i < to.total; i++)
    if (i < 5 || i >= 5 + p) assert_true(got[i] == ob0[i]); /* outside out: untouched */
  dynb__tensor_release(&tc.buf), dynb__tensor_release(&to.buf);
  free(c), free(cb), free(ob0), free(got), free(want);
}

static void forward_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    const int64_t one[2] = {1, 1}, small[3] = {2, 7, 5}, mid[3] = {5, 13, 9}, flat[2] = {3, 1989};
    const int64_t nchw[5] = {4, 1, 3, 13, 9};
    forward_case(ctx, dt, 2, one, 0, 0);      /* J = 1, P = 1 */
    forward_case(ctx, dt, 3, small, 0, 0.3);
    forward_case(ctx, dt, 3, small, 0, 1);    /* w = 1: all of the next point */
    forward_case(ctx, dt, 3, small, 1, 0);    /* last point, w = 0: the NaN guard is not read */
    forward_case(ctx, dt, 3, mid, 0, 0);
    forward_case(ctx, dt, 3, mid, 2, 0.625);
    forward_case(ctx, dt, 3, mid, 3, 0.1);
    forward_case(ctx, dt, 3, mid, 4, 0);
    forward_case(ctx, dt, 2, flat, 1, 0.75);  /* 1989: not a multiple of any work-group */
    forward_case(ctx, dt, 4, nchw, 2, 0.5);   /* controls [J, C=1, H, W] */
  }
  dynb_ctx_free(ctx);
}

/* Finite differences of L = Σ wout ⊙ interp(controls) in double. */
typedef struct fd_ctx {
  size_t p;
  int j0;
  double w, *c, *wout, *tmp;
} fd_ctx;

static double fd_loss(void *user) {
  fd_ctx *f = user;
  ref_interp_forward(f->p, f->c, f->j0, f->w, f->tmp);
  return tu_dot(f->wout, f->tmp, f->p);
}

static void backward_case(dynb_ctx *ctx, dynb_dtype dt, int J, size_t p, int j0, double w) {
  tu_rng r = tu_rng_seed((uint64_t)J * 1000 + p + (uint64_t)j0);
  size_t n = (size_t)J * p, tail = p;
  double *dout = tu_random(&r, p, -1, 1);
  tu_round_to(dt, dout, p);
  /* Accumulates onto random values, with a finite guard row after the view:
   * at j0 = J - 1 and w = 0, a write to "row J" would change it. */
  double *dc0 = tu_random(&r, 2 + n + tail, -1, 1);
  tu_round_to(dt, dc0, 2 + n + tail);
  int64_t pd = (int64_t)p, cd[2] = {J, (int64_t)p};
  dynb__tensor tdout = tu_upload(ctx, dt, 1, &pd, dout);
  padded tdc = padded_upload(ctx, dt, 2, cd, 2, tail, dc0);
  TU_OK(ctx, dynb__interp_backward(ctx, &tdout, j0, w, &tdc.view));
  double *got = malloc(tdc.total * sizeof *got), *want = malloc(tdc.total * sizeof *want);
  tu_download(ctx, &tdc.buf, got);
  memcpy(want, dc0, tdc.total * sizeof *want);
  ref_interp_backward(p, dout, j0, w, want + 2);
  char what[96];
  snprintf(what, sizeof what, "interp_backward %s J=%d p=%zu j0=%d w=%g", dynb__dtype_name(dt),
           J, p, j0, w);
  tu_assert_close(what, got + 2, want + 2, n, tol_for(dt), tol_for(dt));
  for (size_t i = 0; i < tdc.total; i++)
    if (i < 2 || i >= 2 + n) assert_true(got[i] == dc0[i]);
  if (dt == DYNB_F64) {
    /* The op is linear, so central differences are exact up to the rounding
     * of L, a sum of p terms of order 1: ~p · 2^-53 / step ≈ 2e-10 for
     * p = 1989 at step 1e-3; 1e-8 bounds it. */
    double *analytic = malloc(n * sizeof *analytic);
    for (size_t i = 0; i < n; i++) analytic[i] = got[2 + i] - dc0[2 + i];
    fd_ctx f = {p, j0, w, tu_random(&r, n, -1, 1), dout, malloc(p * sizeof(double))};
    snprintf(what, sizeof what, "interp d/dcontrols J=%d j0=%d w=%g", J, j0, w);
    tu_check_gradient(what, fd_loss, &f, f.c, n, analytic, 1e-3, 1e-8, 300);
    free(analytic), free(f.c), free(f.tmp);
  }
  dynb__tensor_release(&tdout), dynb__tensor_release(&tdc.buf);
  free(dout), free(dc0), free(got), free(want);
}

static void backward_matches_reference_and_fd(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    backward_case(ctx, dt, 1, 1, 0, 0);
    backward_case(ctx, dt, 2, 35, 0, 0.3);
    backward_case(ctx, dt, 2, 35, 1, 0);      /* last point: the guard row stays */
    backward_case(ctx, dt, 5, 117, 3, 1);     /* w = 1 still adds 0 · dout to row 3 */
    backward_case(ctx, dt, 5, 117, 2, 0);
    backward_case(ctx, dt, 3, 1989, 1, 0.4);
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t cd[2] = {3, 10}, p = 10, p9 = 9, flat = 30;
  double *c0 = tu_random(&(tu_rng){5}, 30, -1, 1);
  dynb__tensor c = tu_upload(ctx, DYNB_F32, 2, cd, c0), out = tu_upload(ctx, DYNB_F32, 1, &p, NULL);
  dynb__tensor out9 = tu_upload(ctx, DYNB_F32, 1, &p9, NULL);
  dynb__tensor out64 = tu_upload(ctx, DYNB_F64, 1, &p, NULL);
  dynb__tensor ci = tu_upload(ctx, DYNB_I32, 2, cd, NULL);
  dynb__tensor c1 = tu_upload(ctx, DYNB_F32, 1, &flat, NULL);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, NULL, 0, 0, &out), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 0, 0, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 0, 0, &out64), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &ci, 0, 0, &out), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 0, 0, &out9), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c1, 0, 0, &out), DYNB_STATUS_SHAPE_MISMATCH);
  dynb__tensor over = c;
  over.offset = 1;
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &over, 0, 0, &out), DYNB_STATUS_BUFFER_TOO_SMALL);
  over = out;
  over.offset = 11; /* past the end */
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 0, 0, &over), DYNB_STATUS_BUFFER_TOO_SMALL);
  /* Interpolation points that interp_weights never makes. */
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, -1, 0, &out), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 3, 0, &out), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 2, 0.5, &out), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 0, -0.1, &out), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 0, 1.5, &out), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_forward(ctx, &c, 0, NAN, &out), DYNB_STATUS_INVALID_ARGUMENT);
  /* The same checks guard the adjoint. */
  TU_EXPECT_STATUS(ctx, dynb__interp_backward(ctx, NULL, 0, 0, &c), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_backward(ctx, &out, 0, 0, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_backward(ctx, &out64, 0, 0, &c), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_backward(ctx, &out9, 0, 0, &c), DYNB_STATUS_SHAPE_MISMATCH);
  TU_EXPECT_STATUS(ctx, dynb__interp_backward(ctx, &out, 2, 0.5, &c), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__interp_backward(ctx, &out, 4, 0, &c), DYNB_STATUS_INVALID_ARGUMENT);
  over = c;
  over.offset = 40;
  TU_EXPECT_STATUS(ctx, dynb__interp_backward(ctx, &out, 0, 0, &over), DYNB_STATUS_BUFFER_TOO_SMALL);
  /* Nothing ran: the controls are as uploaded. */
  double got[30];
  tu_download(ctx, &c, got);
  for (int i = 0; i < 30; i++) assert_true(got[i] == (float)c0[i]);
  dynb__tensor_release(&c), dynb__tensor_release(&out), dynb__tensor_release(&out9);
  dynb__tensor_release(&out64), dynb__tensor_release(&ci), dynb__tensor_release(&c1);
  free(c0);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(weights_hand_checked),
      cmocka_unit_test(weights_match_reference),
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(forward_matches_reference),
      cmocka_unit_test(backward_matches_reference_and_fd),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
