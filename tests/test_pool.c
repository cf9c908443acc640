/* Average pooling (2x2 stride 2, and global): kernels against the
 * reference with odd sizes, accumulation and buffer offsets, backward
 * against central differences, argument checks. */
#include <math.h>

#include "testutil.h"
#include "ref/ref.h"

static void ref_hand_checked(void **state) {
  (void)state;
  /* [1 2 3; 4 5 6] pools to (1+2+4+5)/4 = 3; the odd last column is dropped.
   * dy = 8 spreads 8/4 = 2 over the window and 0 on the dropped column. */
  const double x[6] = {1, 2, 3, 4, 5, 6}, dy = 8;
  double y = 0, dx[6];
  ref_avgpool2_forward(1, 1, 2, 3, x, &y);
  assert_true(y == 3);
  ref_avgpool2_backward(1, 1, 2, 3, &dy, dx);
  assert_true(dx[0] == 2 && dx[1] == 2 && dx[2] == 0 && dx[3] == 2 && dx[4] == 2 && dx[5] == 0);
  /* Global: two planes {1,2,3,6} → 3 and {0,0,0,-4} → -1; dy {8, 4} → 2s and 1s. */
  const double g[8] = {1, 2, 3, 6, 0, 0, 0, -4}, gdy[2] = {8, 4};
  double gy[2], gdx[8];
  ref_global_avgpool_forward(1, 2, 4, g, gy);
  assert_true(gy[0] == 3 && gy[1] == -1);
  ref_global_avgpool_backward(1, 2, 4, gdy, gdx);
  assert_true(gdx[0] == 2 && gdx[3] == 2 && gdx[4] == 1 && gdx[7] == 1);
}

/* 2x2 pooling: forward, then backward with acc = false and acc = true. The
 * forward adds 4 inputs in [-1, 1] (3 roundings of sums <= 4) and scales by
 * 0.25 exactly: |err| <= 3u absolute (checked as 3u·(1 + |y|), which
 * also prints the error relative to max(|y|, 1)). The backward scales by 0.25 exactly
 * and accumulation rounds once: u relative. Bounds are doubled for the
 * double reference, which rounds likewise. */
static void avgpool2_case(dynb_ctx *ctx, dynb_dtype dt, int64_t n, int64_t c, int64_t h,
                          int64_t w) {
  tu_rng r = tu_rng_seed((uint64_t)(n * 1000 + c * 100 + h * 10 + w));
  int64_t ho = h / 2, wo = w / 2, xd[4] = {n, c, h, w}, yd[4] = {n, c, ho, wo};
  size_t px = (size_t)(n * c * h * w), py = (size_t)(n * c * ho * wo);
  double *x = tu_random(&r, px, -1, 1), *dy = tu_random(&r, py, -1, 1);
  double *dx0 = tu_random(&r, px, -1, 1), *want = malloc(px * sizeof *want);
  double *got = malloc(px * sizeof *got);
  tu_round_to(dt, x, px), tu_round_to(dt, dy, py), tu_round_to(dt, dx0, px);
  dynb__tensor bx, by, bdy, bdx;
  dynb__tensor tx = tu_upload_at(ctx, dt, 4, xd, x, 3, &bx),
               ty = tu_upload_at(ctx, dt, 4, yd, NULL, 1, &by);
  dynb__tensor tdy = tu_upload_at(ctx, dt, 4, yd, dy, 0, &bdy),
               tdx = tu_upload_at(ctx, dt, 4, xd, dx0, 6, &bdx);
  char what[96];
  const char *dn = dynb__dtype_name(dt);
  TU_OK(ctx, dynb__avgpool2_forward(ctx, &tx, &ty));
  tu_download(ctx, &ty, got);
  ref_avgpool2_forward((int)n, (int)c, (int)h, (int)w, x, want);
  snprintf(what, sizeof what, "avgpool2_forward %s %lldx%lldx%lldx%lld", dn, (long long)n,
           (long long)c, (long long)h, (long long)w);
  tu_assert_close(what, got, want, py, 6 * tu_unit(dt), 6 * tu_unit(dt));
  TU_OK(ctx, dynb__avgpool2_backward(ctx, &tdy, &tdx, false));
  tu_download(ctx, &tdx, got);
  ref_avgpool2_backward((int)n, (int)c, (int)h, (int)w, dy, want);
  snprintf(what, sizeof what, "avgpool2_backward %s %lldx%lldx%lldx%lld", dn, (long long)n,
           (long long)c, (long long)h, (long long)w);
  tu_assert_close(what, got, want, px, 2 * tu_unit(dt), 2 * tu_unit(dt));
  tu_write(ctx, &tdx, dx0);
  TU_OK(ctx, dynb__avgpool2_backward(ctx, &tdy, &tdx, true));
  tu_download(ctx, &tdx, got);
  for (size_t i = 0; i < px; i++) want[i] += dx0[i];
  snprintf(what, sizeof what, "avgpool2_backward %s %lldx%lldx%lldx%lld acc", dn, (long long)n,
           (long long)c, (long long)h, (long long)w);
  tu_assert_close(what, got, want, px, 2 * tu_unit(dt), 2 * tu_unit(dt));
  dynb__tensor_release(&bx), dynb__tensor_release(&by);
  dynb__tensor_release(&bdy), dynb__tensor_release(&bdx);
  free(x), free(dy), free(dx0), free(want), free(got);
}

static void avgpool2_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    avgpool2_case(ctx, dt, 1, 1, 2, 2); /* pools to 1x1 */
    avgpool2_case(ctx, dt, 1, 1, 2, 3); /* odd width only */
    avgpool2_case(ctx, dt, 2, 3, 7, 5); /* odd both ways: last row and column dropped */
    avgpool2_case(ctx, dt, 1, 17, 13, 9); /* 1989 inputs */
    avgpool2_case(ctx, dt, 5, 16, 32, 32);
  }
  dynb_ctx_free(ctx);
}

/* Global pooling. Each plane is summed along a path of at most
 * ceil(s/wg) + log2(wg) additions (wg <= the reduction size), so with
 * inputs in [-1, 1] the mean is off by at most (that + 1)·u; the backward
 * divides once and accumulates once: 2u relative. Doubled for the double
 * reference. */
static void global_case(dynb_ctx *ctx, dynb_dtype dt, int64_t n, int64_t c, int64_t h, int64_t w) {
  tu_rng r = tu_rng_seed((uint64_t)(n * 1000 + c * 100 + h * 10 + w + 1));
  int64_t xd[4] = {n, c, h, w}, yd[2] = {n, c};
  size_t px = (size_t)(n * c * h * w), py = (size_t)(n * c), s = (size_t)(h * w);
  double *x = tu_random(&r, px, -1, 1), *dy = tu_random(&r, py, -1, 1);
  double *dx0 = tu_random(&r, px, -1, 1), *want = malloc(px * sizeof *want);
  double *got = malloc(px * sizeof *got);
  tu_round_to(dt, x, px), tu_round_to(dt, dy, py), tu_round_to(dt, dx0, px);
  size_t wg = dynb__reduce_wg(ctx), depth = (s + wg - 1) / wg + 1;
  for (size_t k = wg; k > 1; k /= 2) depth++;
  dynb__tensor bx, by, bdy, bdx;
  dynb__tensor tx = tu_upload_at(ctx, dt, 4, xd, x, 2, &bx),
               ty = tu_upload_at(ctx, dt, 2, yd, NULL, 5, &by);
  dynb__tensor tdy = tu_upload_at(ctx, dt, 2, yd, dy, 1, &bdy),
               tdx = tu_upload_at(ctx, dt, 4, xd, dx0, 0, &bdx);
  char what[96];
  const char *dn = dynb__dtype_name(dt);
  TU_OK(ctx, dynb__global_avgpool_forward(ctx, &tx, &ty));
  tu_download(ctx, &ty, got);
  ref_global_avgpool_forward((int)n, (int)c, (int)s, x, want);
  snprintf(what, sizeof what, "global_avgpool_forward %s %lldx%lldx%lldx%lld", dn, (long long)n,
           (long long)c, (long long)h, (long long)w);
  tu_assert_close(what, got, want, py, 2 * (double)depth * tu_unit(dt), 2 * (double)depth * tu_unit(dt));
  TU_OK(ctx, dynb__global_avgpool_backward(ctx, &tdy, &tdx, false));
  tu_download(ctx, &tdx, got);
  ref_global_avgpool_backward((int)n, (int)c, (int)s, dy, want);
  snprintf(what, sizeof what, "global_avgpool_backward %s %lldx%lldx%lldx%lld", dn, (long long)n,
           (long long)c, (long long)h, (long long)w);
  tu_assert_close(what, got, want, px, 4 * tu_unit(dt), 4 * tu_unit(dt));
  tu_write(ctx, &tdx, dx0);
  TU_OK(ctx, dynb__global_avgpool_backward(ctx, &tdy, &tdx, true));
  tu_download(ctx, &tdx, got);
  for (size_t i = 0; i < px; i++) want[i] += dx0[i];
  snprintf(what, sizeof what, "global_avgpool_backward %s %lldx%lldx%lldx%lld acc", dn,
           (long long)n, (long long)c, (long long)h, (long long)w);
  tu_assert_close(what, got, want, px, 4 * tu_unit(dt), 4 * tu_unit(dt));
  dynb__tensor_release(&bx), dynb__tensor_release(&by);
  dynb__tensor_release(&bdy), dynb__tensor_release(&bdx);
  free(x), free(dy), free(dx0), free(want), free(got);
}

static void global_matches_reference(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  for (int d = 0; d < 2; d++) {
    dynb_dtype dt = d ? DYNB_F64 : DYNB_F32;
    if (dt == DYNB_F64 && !ctx->info.has_fp64) continue;
    global_case(ctx, dt, 1, 1, 1, 1);
    global_case(ctx, dt, 2, 3, 7, 5);
    global_case(ctx, dt, 1, 17, 13, 9);
    global_case(ctx, dt, 5, 16, 8, 8); /* a network head */
    global_case(ctx, dt, 2, 3, 32, 33); /* planes larger than a work-group */
  }
  dynb_ctx_free(ctx);
}

/* L(x) = Σ w ⊙ pool(x) through the reference; both pools are linear, so
 * central differences are exact up to the rounding of L (~1e-14 over
 * 2h = 2e-3): tolerance 1e-9. */
typedef struct fd_ctx {
  bool global;
  int n, c, h, w;
  double *x, *wt, *tmp;
} fd_ctx;

static double fd_loss(void *user) {
  fd_ctx *f = user;
  if (f->global) {
    ref_global_avgpool_forward(f->n, f->c, f->h * f->w, f->x, f->tmp);
    return tu_dot(f->wt, f->tmp, (size_t)(f->n * f->c));
  }
  ref_avgpool2_forward(f->n, f->c, f->h, f->w, f->x, f->tmp);
  return tu_dot(f->wt, f->tmp, (size_t)(f->n * f->c * (f->h / 2) * (f->w / 2)));
}

static void backward_matches_fd(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  for (int global = 0; global < 2; global++) {
    tu_rng r = tu_rng_seed(90 + global);
    const int n = 2, c = 3, h = 7, w = 5;
    size_t px = (size_t)(n * c * h * w), py = global ? (size_t)(n * c) : (size_t)(n * c * 3 * 2);
    int64_t xd[4] = {n, c, h, w}, yd[4] = {n, c, h / 2, w / 2};
    fd_ctx f = {.global = global, .n = n, .c = c, .h = h, .w = w,
                .x = tu_random(&r, px, -1, 1), .wt = tu_random(&r, py, -1, 1),
                .tmp = malloc(py * sizeof(double))};
    dynb__tensor tdy = tu_upload(ctx, DYNB_F64, global ? 2 : 4, yd, f.wt);
    dynb__tensor tdx = tu_upload(ctx, DYNB_F64, 4, xd, NULL);
    if (global)
      TU_OK(ctx, dynb__global_avgpool_backward(ctx, &tdy, &tdx, false));
    else
      TU_OK(ctx, dynb__avgpool2_backward(ctx, &tdy, &tdx, false));
    double *an = malloc(px * sizeof *an);
    tu_download(ctx, &tdx, an);
    tu_check_gradient(global ? "global_avgpool d/dx" : "avgpool2 d/dx", fd_loss, &f, f.x, px, an,
                      1e-3, 1e-9, px);
    dynb__tensor_release(&tdy), dynb__tensor_release(&tdx);
    free(f.x), free(f.wt), free(f.tmp), free(an);
  }
  dynb_ctx_free(ctx);
}

static void bad_arguments_are_reported(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  int64_t xd[4] = {2, 3, 7, 5}, yd[4] = {2, 3, 3, 2}, ybad[4] = {2, 3, 3, 3};
  int64_t one[4] = {1, 1, 1, 1}, row[4] = {1, 1, 1, 4}, col[4] = {1, 1, 4, 1}, gd[2] = {2, 3};
  int64_t gbad[2] = {3, 2};
  dynb__tensor x = tu_upload(ctx, DYNB_F32, 4, xd, NULL), y = tu_upload(ctx, DYNB_F32, 4, yd, NULL);
  dynb__tensor yb = tu_upload(ctx, DYNB_F32, 4, ybad, NULL),
               y64 = tu_upload(ctx, DYNB_F64, 4, yd, NULL);
  dynb__tensor xi = tu_upload(ctx, DYNB_I32, 4, xd, NULL),
               x1 = tu_upload(ctx, DYNB_F32, 4, one, NULL);
  dynb__tensor xr = tu_upload(ctx, DYNB_F32, 4, row, NULL),
               xc = tu_upload(ctx, DYNB_F32, 4, col, NULL);
  dynb__tensor g = tu_upload(ctx, DYNB_F32, 2, gd, NULL),
               gb = tu_upload(ctx, DYNB_F32, 2, gbad, NULL);
  const dynb_status inval = DYNB_STATUS_INVALID_ARGUMENT, shape = DYNB_STATUS_SHAPE_MISMATCH;
  dynb__tensor over = x, nobuf = y, flat = x;
  over.offset = 1;
  nobuf.mem = NULL;
  flat.ndim = 2;
  flat.dims[1] = 3 * 7 * 5;
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, NULL, &y), inval);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &x, NULL), inval);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &x, &nobuf), inval);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &x, &y64), inval);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &xi, &y), inval);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &x, &yb), shape);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &flat, &y), shape);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &over, &y), DYNB_STATUS_BUFFER_TOO_SMALL);
  /* An input under 2x2 pools to nothing: rejected, whatever y is. */
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &x1, &x1), shape);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &xr, &x1), shape);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_forward(ctx, &xc, &x1), shape);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_backward(ctx, &x1, &x1, false), shape);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_backward(ctx, NULL, &x, false), inval);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_backward(ctx, &y, &y64, false), inval);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_backward(ctx, &yb, &x, true), shape);
  TU_EXPECT_STATUS(ctx, dynb__avgpool2_backward(ctx, &y, &over, false),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_forward(ctx, &x, NULL), inval);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_forward(ctx, &xi, &g), inval);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_forward(ctx, &x, &gb), shape);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_forward(ctx, &x, &y), shape); /* rank 4 out */
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_forward(ctx, &over, &g), DYNB_STATUS_BUFFER_TOO_SMALL);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_backward(ctx, NULL, &x, false), inval);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_backward(ctx, &gb, &x, false), shape);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_backward(ctx, &g, &flat, false), shape);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_backward(ctx, &g, &y64, false), inval);
  TU_EXPECT_STATUS(ctx, dynb__global_avgpool_backward(ctx, &g, &over, false),
                   DYNB_STATUS_BUFFER_TOO_SMALL);
  dynb__tensor_release(&x), dynb__tensor_release(&y), dynb__tensor_release(&yb);
  dynb__tensor_release(&y64), dynb__tensor_release(&xi), dynb__tensor_release(&x1);
  dynb__tensor_release(&xr), dynb__tensor_release(&xc), dynb__tensor_release(&g);
  dynb__tensor_release(&gb);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ref_hand_checked),
      cmocka_unit_test(avgpool2_matches_reference),
      cmocka_unit_test(global_matches_reference),
      cmocka_unit_test(backward_matches_fd),
      cmocka_unit_test(bad_arguments_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
