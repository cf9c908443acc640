/* Verifying and timing one GEMM shape under the CLBlast parameters in
 * force: what `dynblocks tune` does for every candidate, shape and
 * formulation before a candidate may be chosen.
 *
 * Verification is exact. A and B hold integers in [-q, q] with
 * q·q·k <= 2^p (p = 24 significand bits for float, 53 for double; q <= 4):
 * every product and every partial sum is then an integer of magnitude at
 * most 2^p, which the type holds exactly, so any summation order, with or
 * without fused multiply-adds, gives exactly the host's product and the
 * error bound is zero. A wrong kernel (notes/clblast-on-pocl.md: GEMMK=1
 * with relative errors of 0.03-7 on PoCL, strided-batched K=72 garbage) is
 * off by at least 1 somewhere. Only when k > 2^p does q = 1 no longer keep
 * sums exact; the bound is then the worst case of any summation order,
 * γ_k·Σ|a||b| with γ_k = k·u/(1 - k·u) (Higham, Accuracy and Stability,
 * §3.1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

/* Products up to this many multiply-adds are checked entry by entry. */
#define CHECK_ALL_FLOPS ((size_t)1 << 25)
/* Otherwise: every row and column at three places, plus this many more. */
#define CHECK_SAMPLES 4096
/* A timed batch lasts at least this long, in at most this many calls. */
#define BATCH_SECONDS 0.01
#define BATCH_MAX_CALLS 64

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static int significand_bits(dynb_dtype dt) { return dt == DYNB_F64 ? 53 : 24; }

/* The largest q <= 4 with q·q·k <= 2^p; 0 when even q = 1 is too large. */
static int int_range(const dynb__gemm_shape *s) {
  double limit = ldexp(1.0, significand_bits(s->dtype));
  int q = 4;
  while (q > 0 && (double)q * q * (double)s->k > limit) q--;
  return q;
}

static double op_a(const dynb__gemm_shape *s, const double *a, size_t i, size_t l) {
  return s->trans_a ? a[l * s->lda + i] : a[i * s->lda + l];
}
static double op_b(const dynb__gemm_shape *s, const double *b, size_t l, size_t j) {
  return s->trans_b ? b[j * s->ldb + l] : b[l * s->ldb + j];
}

/* Checks one entry; returns whether it is wrong. */
static bool entry_wrong(const dynb__gemm_shape *s, const double *a, const double *b,
                        const double *c, size_t i, size_t j, double gamma, double *max_err) {
  double sum = 0, mag = 0;
  for (size_t l = 0; l < s->k; l++) {
    double p = op_a(s, a, i, l) * op_b(s, b, l, j);
    sum += p;
    mag += fabs(p);
  }
  double err = fabs(c[i * s->ldc + j] - sum);
  if (!(err <= *max_err)) *max_err = isnan(err) ? INFINITY : err;
  return !(err <= gamma * mag);
}

size_t dynb__gemm_check(const dynb__gemm_shape *s, const double *a, const double *b,
                        const double *c, size_t *checked, double *max_err) {
  double u = ldexp(1.0, -significand_bits(s->dtype)), ku = (double)s->k * u;
  double gamma = int_range(s) > 0 ? 0.0 : ku / (1 - ku);
  size_t bad = 0;
  *checked = 0;
  *max_err = 0;
  if (s->m * s->n * (s->k ? s->k : 1) <= CHECK_ALL_FLOPS) {
    for (size_t i = 0; i < s->m; i++)
      for (size_t j = 0; j < s->n; j++) bad += entry_wrong(s, a, b, c, i, j, gamma, max_err);
    *checked = s->m * s->n;
    return bad;
  }
  uint64_t seed = 42;
  for (size_t i = 0; i < s->m; i++) {
    size_t cols[3] = {0, s->n - 1, (size_t)(splitmix(&seed) % s->n)};
    for (int t = 0; t < 3; t++) bad += entry_wrong(s, a, b, c, i, cols[t], gamma, max_err);
  }
  for (size_t j = 0; j < s->n; j++) {
    size_t rows[3] = {0, s->m - 1, (size_t)(splitmix(&seed) % s->m)};
    for (int t = 0; t < 3; t++) bad += entry_wrong(s, a, b, c, rows[t], j, gamma, max_err);
  }
  for (int t = 0; t < CHECK_SAMPLES; t++) {
    size_t i = (size_t)(splitmix(&seed) % s->m), j = (size_t)(splitmix(&seed) % s->n);
    bad += entry_wrong(s, a, b, c, i, j, gamma, max_err);
  }
  *checked = 3 * (s->m + s->n) + CHECK_SAMPLES;
  return bad;
}

/* ---- Device side ---------------------------------------------------------------- */

static dynb_status upload(dynb_ctx *ctx, dynb_dtype dt, size_t n, const double *host,
                          dynb__tensor *t) {
  int64_t dim = (int64_t)n;
  DYNB_TRY(dynb__tensor_alloc(ctx, dt, 1, &dim, t));
  return host ? dynb__tensor_write_f64(ctx, t, host) : DYNB_OK;
}

static double *random_ints(dynb_ctx *ctx, size_t n, int q, uint64_t *seed) {
  double *x = dynb__calloc(ctx, n, sizeof *x);
  for (size_t i = 0; x && i < n; i++)
    x[i] = (double)((int)(splitmix(seed) % (uint64_t)(2 * q + 1)) - q);
  return x;
}

dynb_status dynb__gemm_bench_init(dynb_ctx *ctx, const dynb__gemm_shape *s, uint64_t seed,
                                  dynb__gemm_bench *out) {
  memset(out, 0, sizeof *out);
  out->shape = *s;
  DYNB_CHECK(ctx, s->m && s->n && s->k && (s->dtype == DYNB_F32 || s->dtype == DYNB_F64) &&
                      s->lda >= (s->trans_a ? s->m : s->k) &&
                      s->ldb >= (s->trans_b ? s->k : s->n) && s->ldc >= s->n,
             DYNB_STATUS_INVALID_ARGUMENT, "gemm bench: impossible shape %zux%zux%zu", s->m, s->n,
             s->k);
  size_t na = (s->trans_a ? s->k : s->m) * s->lda, nb = (s->trans_b ? s->n : s->k) * s->ldb;
  int q = int_range(s);
  out->a = random_ints(ctx, na, q ? q : 1, &seed);
  out->b = random_ints(ctx, nb, q ? q : 1, &seed);
  DYNB_CHECK(ctx, out->a && out->b, DYNB_STATUS_OUT_OF_HOST_MEMORY,
             "gemm bench: no host memory for %zux%zux%zu", s->m, s->n, s->k);
  DYNB_TRY(upload(ctx, s->dtype, na, out->a, &out->ta));
  DYNB_TRY(upload(ctx, s->dtype, nb, out->b, &out->tb));
  return upload(ctx, s->dtype, s->m * s->ldc, NULL, &out->tc);
}

void dynb__gemm_bench_free(dynb_ctx *ctx, dynb__gemm_bench *b) {
  dynb__free(ctx, b->a);
  dynb__free(ctx, b->b);
  dynb__tensor_release(&b->ta);
  dynb__tensor_release(&b->tb);
  dynb__tensor_release(&b->tc);
  memset(b, 0, sizeof *b);
}

dynb_status dynb__gemm_bench_run(dynb_ctx *ctx, dynb__gemm_bench *b, dynb__gemm_form form,
                                 int calls) {
  const dynb__gemm_shape *s = &b->shape;
  dynb__gemm_args g = {.trans_a = s->trans_a, .trans_b = s->trans_b, .m = s->m, .n = s->n,
                       .k = s->k, .alpha = 1, .beta = 0, .a = &b->ta, .lda = s->lda,
                       .b = &b->tb, .ldb = s->ldb, .c = &b->tc, .ldc = s->ldc};
  for (int i = 0; i < calls; i++) DYNB_TRY(dynb__gemm_issue(ctx, &g, form));
  return DYNB_OK;
}

dynb_status dynb__gemm_bench_verify(dynb_ctx *ctx, dynb__gemm_bench *b, dynb__gemm_form form,
                                    size_t *checked, size_t *bad, double *max_err) {
  size_t n = dynb__tensor_numel(&b->tc);
  double *c = dynb__alloc(ctx, n * sizeof *c);
  DYNB_CHECK(ctx, c, DYNB_STATUS_OUT_OF_HOST_MEMORY, "gemm bench: no host memory for C");
  /* 0.5 is no integer: an entry the kernel forgot cannot pass. */
  for (size_t i = 0; i < n; i++) c[i] = 0.5;
  dynb_status st = dynb__tensor_write_f64(ctx, &b->tc, c);
  if (st == DYNB_OK) st = dynb__gemm_bench_run(ctx, b, form, 1);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &b->tc, c);
  if (st == DYNB_OK) *bad = dynb__gemm_check(&b->shape, b->a, b->b, c, checked, max_err);
  dynb__free(ctx, c);
  return st;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

dynb_status dynb__gemm_bench_time(dynb_ctx *ctx, dynb__gemm_bench *b, dynb__gemm_form form,
                                  int reps, double *secs) {
  double t[16];
  DYNB_CHECK(ctx, reps >= 1 && reps <= 16, DYNB_STATUS_INVALID_ARGUMENT,
             "gemm bench: reps must be 1..16, got %d", reps);
  double t0 = dynb__now();
  DYNB_TRY(dynb__gemm_bench_run(ctx, b, form, 1));
  DYNB_TRY(dynb__finish(ctx));
  double one = dynb__now() - t0;
  int calls = one >= BATCH_SECONDS ? 1 : (int)ceil(BATCH_SECONDS / fmax(one, 1e-6));
  if (calls > BATCH_MAX_CALLS) calls = BATCH_MAX_CALLS;
  for (int r = 0; r < reps; r++) {
    t0 = dynb__now();
    DYNB_TRY(dynb__gemm_bench_run(ctx, b, form, calls));
    DYNB_TRY(dynb__finish(ctx));
    t[r] = (dynb__now() - t0) / calls;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  *secs = t[reps / 2];
  return DYNB_OK;
}
