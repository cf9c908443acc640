/* GEMM through CLBlast (src/runtime/gemm.c, gemm_bench.c): the row-major
 * call and the swapped column-major call give the same product for every
 * transpose, odd sizes, offsets and padded leading dimensions, f32 and f64;
 * dynb__gemm takes the formulation set for a shape; recording counts the
 * shapes a run issues; the tuner's verification accepts correct products
 * exactly and rejects wrong ones. */
#include <math.h>

#include "testutil.h"

static const dynb_dtype f32 = DYNB_F32, f64 = DYNB_F64;

typedef struct gcase {
  size_t m, n, k;
} gcase;
/* 1×1×1, odd sizes below and across CLBlast's tile sizes (8, 16, 32, 64),
 * k = 72 (the strided-batched failure of the notes) and a long k. The
 * last two, long sums the simulator is slowest at, are left out of small
 * runs (tu_small), which keep sizes below and across every tile size. */
static const gcase cases[] = {{1, 1, 1},  {7, 5, 3},   {13, 9, 17}, {33, 65, 72},
                              {8, 70, 9}, {65, 3, 144}, {5, 17, 600}};
static size_t cases_to_run(void) {
  return sizeof cases / sizeof *cases - (tu_small() ? 2 : 0);
}

/* C = alpha·op(A)·op(B) + beta·C in double, and the magnitude of the same
 * sum over absolute values, for the error bound: src/ref's GEMM, which
 * `dynblocks selftest` checks the wrapper against too. */
static void host_gemm(const dynb__gemm_shape *s, const double *a, const double *b, double alpha,
                      double beta, double *c, double *mag) {
  ref_gemm(s->trans_a, s->trans_b, s->m, s->n, s->k, alpha, a, s->lda, b, s->ldb, beta, c, s->ldc,
           mag);
}

static size_t rows_a(const dynb__gemm_shape *s) { return s->trans_a ? s->k : s->m; }
static size_t rows_b(const dynb__gemm_shape *s) { return s->trans_b ? s->n : s->k; }

/* One shape in one formulation against the host product. Bound: whatever
 * order CLBlast sums in, a dot product of length k is off by at most
 * γ_k·Σ|a||b| (Higham §3.1); scaling by alpha, adding beta·C and the final
 * rounding add three more roundings, so γ_{k+3}·(|α|Σ|a||b| + |β||c|)
 * with γ_n = n·u/(1 - n·u); the double reference adds nothing visible in
 * f32 and at most the same again in f64 (hence the factor 2). Entries
 * beyond n in a padded row of C must keep their old value exactly. */
static void check_form(dynb_ctx *ctx, const dynb__gemm_shape *s, dynb__gemm_form form,
                       tu_rng *r) {
  size_t na = rows_a(s) * s->lda, nb = rows_b(s) * s->ldb, nc = s->m * s->ldc;
  double *a = tu_random(r, na, -1, 1), *b = tu_random(r, nb, -1, 1), *c = tu_random(r, nc, -1, 1);
  double *want = malloc(nc * sizeof *want), *mag = calloc(nc, sizeof *mag);
  double *got = malloc(nc * sizeof *got);
  tu_round_to(s->dtype, a, na), tu_round_to(s->dtype, b, nb), tu_round_to(s->dtype, c, nc);
  memcpy(want, c, nc * sizeof *c);
  double alpha = s->k % 2 ? 0.75 : 1, beta = s->m % 2 ? -0.5 : 0;
  host_gemm(s, a, b, alpha, beta, want, mag);
  int64_t da = (int64_t)na, db = (int64_t)nb, dc = (int64_t)nc;
  dynb__tensor ba, bb, bc;
  dynb__tensor ta = tu_upload_at(ctx, s->dtype, 1, &da, a, 5, &ba);
  dynb__tensor tb = tu_upload_at(ctx, s->dtype, 1, &db, b, 3, &bb);
  dynb__tensor tc = tu_upload_at(ctx, s->dtype, 1, &dc, c, 7, &bc);
  dynb__gemm_args g = {.trans_a = s->trans_a, .trans_b = s->trans_b, .m = s->m, .n = s->n,
                       .k = s->k, .alpha = alpha, .beta = beta, .a = &ta, .lda = s->lda,
                       .b = &tb, .ldb = s->ldb, .c = &tc, .ldc = s->ldc};
  TU_OK(ctx, dynb__gemm_issue(ctx, &g, form));
  tu_download(ctx, &tc, got);
  double u = tu_unit(s->dtype), gamma = (double)(s->k + 3) * u / (1 - (double)(s->k + 3) * u);
  for (size_t i = 0; i < s->m; i++)
    for (size_t j = 0; j < s->ldc; j++) {
      size_t x = i * s->ldc + j;
      bool in = j < s->n;
      double err = fabs(got[x] - (in ? want[x] : c[x]));
      if (in ? !(err <= 2 * gamma * mag[x]) : err != 0)
        fail_msg("%s %zux%zux%zu trans %d%d form %s: C[%zu][%zu] = %.17g, want %.17g",
                 dynb__dtype_name(s->dtype), s->m, s->n, s->k, s->trans_a, s->trans_b,
                 form == DYNB__GEMM_COL ? "col" : "row", i, j, got[x], in ? want[x] : c[x]);
    }
  dynb__tensor_release(&ba), dynb__tensor_release(&bb), dynb__tensor_release(&bc);
  free(a), free(b), free(c), free(want), free(mag), free(got);
}

static dynb__gemm_shape shape_of(dynb_dtype dt, gcase gc, bool ta, bool tb, size_t pad) {
  dynb__gemm_shape s = {.dtype = dt, .trans_a = ta, .trans_b = tb, .m = gc.m, .n = gc.n, .k = gc.k};
  s.lda = (ta ? s.m : s.k) + pad;
  s.ldb = (tb ? s.k : s.n) + 2 * pad;
  s.ldc = s.n + pad;
  return s;
}

static void formulations_give_the_same_product(void **state) {
  dynb_dtype dt = *(const dynb_dtype *)*state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, dt);
  tu_rng r = tu_rng_seed(7);
  for (size_t c = 0; c < cases_to_run(); c++)
    for (int t = 0; t < 4; t++)
      for (size_t pad = 0; pad < 2; pad++) {
        dynb__gemm_shape s = shape_of(dt, cases[c], t & 1, t & 2, pad);
        check_form(ctx, &s, DYNB__GEMM_ROW, &r);
        check_form(ctx, &s, DYNB__GEMM_COL, &r);
      }
  dynb_ctx_free(ctx);
}

/* dynb__gemm issues each shape in the formulation set for it; the integer
 * data of the bench make both exact, so the check has no tolerance. */
static void tuned_formulation_is_used(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb__gemm_shape s = shape_of(DYNB_F32, cases[3], false, true, 1);
  TU_OK(ctx, dynb__gemm_set_form(ctx, &s, DYNB__GEMM_ROW));
  TU_OK(ctx, dynb__gemm_set_form(ctx, &s, DYNB__GEMM_COL));
  assert_int_equal(ctx->ngemm_forms, 1);
  assert_int_equal(ctx->gemm_forms[0].form, DYNB__GEMM_COL);
  dynb__gemm_bench b;
  TU_OK(ctx, dynb__gemm_bench_init(ctx, &s, 3, &b));
  dynb__gemm_args g = {.trans_a = s.trans_a, .trans_b = s.trans_b, .m = s.m, .n = s.n, .k = s.k,
                       .alpha = 1, .a = &b.ta, .lda = s.lda, .b = &b.tb, .ldb = s.ldb,
                       .c = &b.tc, .ldc = s.ldc};
  TU_OK(ctx, dynb__gemm(ctx, &g));
  double *c = malloc(s.m * s.ldc * sizeof *c);
  tu_download(ctx, &b.tc, c);
  size_t checked = 0;
  double max_err = 1;
  assert_int_equal(dynb__gemm_check(&s, b.a, b.b, c, &checked, &max_err), 0);
  assert_int_equal(checked, s.m * s.n);
  assert_true(max_err == 0);
  free(c);
  dynb__gemm_bench_free(ctx, &b);
  dynb_ctx_free(ctx);
}

static void shapes_are_recorded(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb__gemm_shape s = shape_of(DYNB_F32, cases[2], true, false, 0);
  dynb__gemm_bench b;
  TU_OK(ctx, dynb__gemm_bench_init(ctx, &s, 1, &b));
  dynb__gemm_args g = {.trans_a = true, .m = s.m, .n = s.n, .k = s.k, .alpha = 1, .a = &b.ta,
                       .lda = s.lda, .b = &b.tb, .ldb = s.ldb, .c = &b.tc, .ldc = s.ldc};
  TU_OK(ctx, dynb__gemm(ctx, &g)); /* not recording yet */
  dynb__gemm_record(ctx, true);
  TU_OK(ctx, dynb__gemm(ctx, &g));
  TU_OK(ctx, dynb__gemm(ctx, &g));
  g.n = s.n - 1; /* same leading dimensions, another product */
  TU_OK(ctx, dynb__gemm(ctx, &g));
  TU_OK(ctx, dynb__gemm_bench_run(ctx, &b, DYNB__GEMM_ROW, 1)); /* the tuner's own calls */
  dynb__gemm_record(ctx, false);
  TU_OK(ctx, dynb__gemm(ctx, &g));
  assert_int_equal(ctx->ngemm_rec, 2);
  const dynb__gemm_shape *r0 = &ctx->gemm_rec[0], *r1 = &ctx->gemm_rec[1];
  assert_true(r0->dtype == DYNB_F32 && r0->trans_a && !r0->trans_b && r0->m == s.m &&
              r0->n == s.n && r0->k == s.k && r0->lda == s.lda && r0->ldb == s.ldb &&
              r0->ldc == s.ldc && r0->calls == 2);
  assert_true(r1->n == s.n - 1 && r1->calls == 1);
  dynb__gemm_record(ctx, true); /* starting again forgets */
  assert_int_equal(ctx->ngemm_rec, 0);
  dynb__gemm_bench_free(ctx, &b);
  dynb_ctx_free(ctx);
}

/* The host check itself: exact on a correct product, and a wrong entry is
 * found whether the product is checked whole or sampled (every row and
 * column is visited). */
static void check_finds_wrong_entries(void **state) {
  (void)state;
  const gcase sizes[2] = {{13, 9, 17}, {64, 600, 1000}}; /* whole, then sampled */
  for (int t = 0; t < 2; t++) {
    dynb__gemm_shape s = shape_of(DYNB_F32, sizes[t], false, true, 1);
    tu_rng r = tu_rng_seed(11);
    size_t na = s.m * s.lda, nb = s.n * s.ldb, nc = s.m * s.ldc;
    double *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b);
    double *c = calloc(nc, sizeof *c), *mag = calloc(nc, sizeof *mag);
    for (size_t i = 0; i < na; i++) a[i] = floor(tu_uniform(&r, -4, 5));
    for (size_t i = 0; i < nb; i++) b[i] = floor(tu_uniform(&r, -4, 5));
    host_gemm(&s, a, b, 1, 0, c, mag);
    size_t checked = 0;
    double max_err = 1;
    assert_int_equal(dynb__gemm_check(&s, a, b, c, &checked, &max_err), 0);
    assert_true(max_err == 0);
    assert_true(checked == (t == 0 ? s.m * s.n : 3 * (s.m + s.n) + 4096));
    c[(s.m - 1) * s.ldc + 5] += 1;
    size_t bad = dynb__gemm_check(&s, a, b, c, &checked, &max_err);
    assert_true(t == 0 ? bad == 1 : bad >= 1); /* sampling may visit it twice */
    assert_true(max_err == 1);
    c[(s.m - 1) * s.ldc + 5] = NAN;
    assert_true(dynb__gemm_check(&s, a, b, c, &checked, &max_err) >= 1);
    assert_true(isinf(max_err));
    free(a), free(b), free(c), free(mag);
  }
}

/* On the device: a correct product passes in both formulations; a
 * deliberately wrong reference (the host copy of B no longer matching the
 * device's) is rejected; timing gives a positive median. */
static void verification_rejects_a_wrong_reference(void **state) {
  dynb_dtype dt = *(const dynb_dtype *)*state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, dt);
  dynb__gemm_shape s = shape_of(dt, cases[3], true, true, 1);
  dynb__gemm_bench b;
  TU_OK(ctx, dynb__gemm_bench_init(ctx, &s, 5, &b));
  size_t checked = 0, bad = 9;
  double max_err = 1, secs = 0;
  for (int f = 0; f < 2; f++) {
    TU_OK(ctx, dynb__gemm_bench_verify(ctx, &b, (dynb__gemm_form)f, &checked, &bad, &max_err));
    assert_int_equal(bad, 0);
    assert_int_equal(checked, s.m * s.n);
    TU_OK(ctx, dynb__gemm_bench_time(ctx, &b, (dynb__gemm_form)f, 3, &secs));
    assert_true(secs > 0);
  }
  /* op(B)[0][n-1] (B is stored transposed) feeds column n-1 of C, in
   * every row whose op(A)[i][0] (stored at A[0][i]) is not zero. */
  b.b[(s.n - 1) * s.ldb] += 1;
  size_t want = 0;
  for (size_t i = 0; i < s.m; i++) want += b.a[i] != 0;
  TU_OK(ctx, dynb__gemm_bench_verify(ctx, &b, DYNB__GEMM_ROW, &checked, &bad, &max_err));
  assert_true(want > 0);
  assert_int_equal(bad, want);
  TU_EXPECT_STATUS(ctx, dynb__gemm_bench_time(ctx, &b, DYNB__GEMM_ROW, 17, &secs),
                   DYNB_STATUS_INVALID_ARGUMENT);
  dynb__gemm_bench_free(ctx, &b);
  s.lda = s.m - 1;
  TU_EXPECT_STATUS(ctx, dynb__gemm_bench_init(ctx, &s, 5, &b), DYNB_STATUS_INVALID_ARGUMENT);
  dynb__gemm_bench_free(ctx, &b);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_prestate(formulations_give_the_same_product, (void *)&f32),
      cmocka_unit_test_prestate(formulations_give_the_same_product, (void *)&f64),
      cmocka_unit_test(tuned_formulation_is_used),
      cmocka_unit_test(shapes_are_recorded),
      cmocka_unit_test(check_finds_wrong_entries),
      cmocka_unit_test_prestate(verification_rejects_a_wrong_reference, (void *)&f32),
      cmocka_unit_test_prestate(verification_rejects_a_wrong_reference, (void *)&f64),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
