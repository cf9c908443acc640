/* Dense ops: the GEMM wrapper (CLBlast in both formulations), the fully
 * connected layer, and softmax cross-entropy. Counting conventions as in
 * check_elementwise.c; a dot product of length k is within γ(k)·Σ|a||b| of
 * exact in any summation order (Higham §3.1), which is what CLBlast's
 * blocking and the references' loops both satisfy. */
#include <math.h>

#include "ops/ops.h"
#include "selftest.h"

/* ---- GEMM ------------------------------------------------------------------ */

typedef struct gemm_case {
  bool ta, tb;
  size_t m, n, k, pad; /* pad: extra columns in every leading dimension */
} gemm_case;

/* C = α op(A) op(B) + β C: the dot product (γ(k)), α, β·C and the final
 * addition: γ(k + 3) on |α|Σ|a||b| + |β C| (ref_gemm's mag). Padding
 * columns of C outside the product must keep their value exactly, which
 * the same comparison demands (their scale is |β C|·0 + floor). */
static void check_gemm(dynb__stest_run *r, dynb_dtype dt) {
  dynb__stest_begin(r, "gemm", NULL, dt);
  static const gemm_case quick[] = {{false, false, 1, 1, 1, 0},
                                    {false, true, 7, 5, 3, 2},
                                    {true, false, 17, 13, 9, 0},
                                    {true, true, 5, 33, 65, 1}};
  static const gemm_case full[] = {{false, false, 1, 1, 1, 0},      {false, true, 7, 5, 3, 2},
                                   {true, false, 17, 13, 9, 0},     {true, true, 5, 33, 65, 1},
                                   {false, false, 129, 67, 257, 3}, {true, true, 64, 64, 64, 0}};
  const gemm_case *cs = r->d->quick ? quick : full;
  int nc = r->d->quick ? 4 : 6;
  for (int i = 0; i < nc && r->status == DYNB_OK; i++)
    for (int form = 0; form < 2 && r->status == DYNB_OK; form++) {
      const gemm_case *c = &cs[i];
      ref_rng g = ref_rng_seed(700 + (uint64_t)(2 * i + form));
      size_t ra = c->ta ? c->k : c->m, ca = c->ta ? c->m : c->k;
      size_t rb = c->tb ? c->n : c->k, cb = c->tb ? c->k : c->n;
      size_t lda = ca + c->pad, ldb = cb + c->pad, ldc = c->n + c->pad;
      size_t na = ra * lda, nb = rb * ldb, nc_ = c->m * ldc;
      int64_t da = (int64_t)na, db = (int64_t)nb, dc = (int64_t)nc_;
      double alpha = i % 2 ? 0.75 : 1, beta = i % 2 ? -0.5 : (i == 2 ? 1 : 0);
      double *a = dynb__stest_data(r, &g, na, -1, 1), *b = dynb__stest_data(r, &g, nb, -1, 1);
      double *want = dynb__stest_data(r, &g, nc_, -1, 1), *mag = dynb__stest_zeros(r, nc_),
             *got = dynb__stest_zeros(r, nc_);
      dynb__tensor tc = dynb__stest_put(r, 1, &dc, want, 7);
      dynb__tensor ta = dynb__stest_put(r, 1, &da, a, dynb__stest_offset(i)),
                   tb = dynb__stest_put(r, 1, &db, b, 3);
      if (r->status != DYNB_OK) break;
      dynb__gemm_args args = {.trans_a = c->ta,
                              .trans_b = c->tb,
                              .m = c->m,
                              .n = c->n,
                              .k = c->k,
                              .alpha = alpha,
                              .beta = beta,
                              .a = &ta,
                              .lda = lda,
                              .b = &tb,
                              .ldb = ldb,
                              .c = &tc,
                              .ldc = ldc};
      dynb__stest_ok(r, dynb__gemm_issue(r->ctx, &args, form ? DYNB__GEMM_COL : DYNB__GEMM_ROW));
      dynb__stest_read(r, &tc, got);
      /* Padding entries keep their old value (mag 0 there: exactness). */
      ref_gemm(c->ta, c->tb, c->m, c->n, c->k, alpha, a, lda, b, ldb, beta, want, ldc, mag);
      for (size_t e = 0; e < nc_; e++) mag[e] = fmax(mag[e], 1e-300);
      dynb__stest_compare(r, got, want, mag, nc_, dynb__stest_gamma(r, (double)c->k + 3));
      dynb__stest_release(r);
    }
  dynb__stest_end(r);
}

/* ---- linear ------------------------------------------------------------------ */

typedef struct lin_case {
  int n, in, out;
} lin_case;

static const lin_case lin_cases[] = {{1, 1, 1}, {2, 17, 3}, {5, 33, 10}, {3, 7, 65}};

/* Forward: a dot product of I terms and the bias: γ(I + 1) on
 * Σ|x||w| + |b|. Backward: dx sums O terms, dw and db sum N, each plus the
 * accumulated value: γ(K + 1) on the sum of |terms| + |old|. */
static void check_linear(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "linear_backward" : "linear_forward", NULL, dt);
  int nl = (int)(sizeof lin_cases / sizeof *lin_cases);
  for (int i = 0; i < nl && r->status == DYNB_OK; i++) {
    const lin_case *l = &lin_cases[i];
    ref_rng g = ref_rng_seed(720 + (uint64_t)i);
    size_t nx = (size_t)l->n * l->in, nw = (size_t)l->out * l->in, ny = (size_t)l->n * l->out;
    int64_t dx[2] = {l->n, l->in}, dw[2] = {l->out, l->in}, dy[2] = {l->n, l->out}, db = l->out;
    double *x = dynb__stest_data(r, &g, nx, -1, 1), *w = dynb__stest_data(r, &g, nw, -1, 1);
    double *b = dynb__stest_data(r, &g, (size_t)l->out, -1, 1),
           *d = dynb__stest_data(r, &g, ny, -1, 1);
    double *ax = dynb__stest_zeros(r, nx), *aw = dynb__stest_zeros(r, nw),
           *ab = dynb__stest_zeros(r, (size_t)l->out);
    double *ad = dynb__stest_zeros(r, ny);
    size_t most = nx + nw + ny;
    double *want = dynb__stest_zeros(r, most), *mag = dynb__stest_zeros(r, most),
           *got = dynb__stest_zeros(r, most);
    double *old = dynb__stest_data(r, &g, most, -1, 1);
    if (r->status != DYNB_OK) break;
    dynb__stest_scale_abs(ax, x, nx, 1, 0), dynb__stest_scale_abs(aw, w, nw, 1, 0);
    dynb__stest_scale_abs(ab, b, (size_t)l->out, 1, 0), dynb__stest_scale_abs(ad, d, ny, 1, 0);
    dynb__tensor tx = dynb__stest_put(r, 2, dx, x, dynb__stest_offset(i)),
                 tw = dynb__stest_put(r, 2, dw, w, 1);
    if (!backward) {
      dynb__tensor tb = dynb__stest_put(r, 1, &db, b, 2), ty = dynb__stest_put(r, 2, dy, NULL, 3);
      if (r->status != DYNB_OK) break;
      bool bias = i % 2 == 0;
      dynb__stest_ok(r, dynb__linear_forward(r->ctx, &tx, &tw, bias ? &tb : NULL, &ty));
      dynb__stest_read(r, &ty, got);
      ref_linear_forward(l->n, l->in, l->out, x, w, bias ? b : NULL, want);
      ref_linear_forward(l->n, l->in, l->out, ax, aw, bias ? ab : NULL, mag);
      for (size_t e = 0; e < ny; e++) mag[e] = fmax(mag[e], 1e-300);
      dynb__stest_compare(r, got, want, mag, ny, dynb__stest_gamma(r, l->in + 1));
    } else {
      bool acc = i % 2 == 1;
      dynb__tensor td = dynb__stest_put(r, 2, dy, d, 2);
      dynb__tensor tdx = dynb__stest_put(r, 2, dx, acc ? old : NULL, 3);
      dynb__tensor tdw = dynb__stest_put(r, 2, dw, acc ? old + nx : NULL, 0);
      dynb__tensor tdb = dynb__stest_put(r, 1, &db, acc ? old + nx + nw : NULL, 1);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__linear_backward(r->ctx, &tx, &tw, &td, &tdx, &tdw, &tdb, acc, acc));
      ref_linear_backward(l->n, l->in, l->out, x, w, d, want, want + nx, want + nx + nw);
      ref_linear_backward(l->n, l->in, l->out, ax, aw, ad, mag, mag + nx, mag + nx + nw);
      size_t sizes[3] = {nx, nw, (size_t)l->out}, at = 0;
      int terms[3] = {l->out, l->n, l->n};
      const dynb__tensor *outs[3] = {&tdx, &tdw, &tdb};
      for (int o = 0; o < 3; o++) {
        dynb__stest_read(r, outs[o], got + at);
        for (size_t e = at; e < at + sizes[o]; e++) {
          if (acc) want[e] += old[e], mag[e] += fabs(old[e]);
          mag[e] = fmax(mag[e], 1e-300);
        }
        dynb__stest_compare(r, got + at, want + at, mag + at, sizes[o],
                            dynb__stest_gamma(r, terms[o] + 1));
        at += sizes[o];
      }
    }
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

/* ---- softmax cross-entropy ------------------------------------------------- */

/* Loss: a row's log Σ exp(z - m) - (z_l - m) errs by (K + 6)u from a sum of
 * K positive terms each within 3 ulp (OpenCL's exp), ~24u from rounding
 * the terms' arguments, 6u·ln K from log (3 ulp) and 2u|loss| from the
 * subtractions; the mean over N rows adds γ(N + 1) on the mean |loss|
 * (the loss is positive, so that is the loss itself): absolute bound
 * γ(K + 30 + 6 ln K + (N + 3)·loss). The count of correct rows is exact.
 * Gradient: softmax_j = exp(z_j - m)·(c / s) errs by (K + 40)u relative
 * (the sum, exp, a division of 2.5 ulp, c = scale/N rounded), the one-hot
 * subtraction and accumulation add 2u: γ(K + 42) on |c| + |want| + |old|. */
static void check_xent(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "xent_backward" : "xent_forward", NULL, dt);
  static const int cases[][2] = {{1, 1}, {1, 10}, {7, 3}, {33, 17}, {130, 10}};
  for (int i = 0; i < 5 && r->status == DYNB_OK; i++) {
    int n = cases[i][0], k = cases[i][1];
    ref_rng g = ref_rng_seed(740 + (uint64_t)i);
    size_t p = (size_t)n * k;
    int64_t dz[2] = {n, k}, two = 2, dw = (int64_t)dynb__xent_workspace(n);
    double *z = dynb__stest_data(r, &g, p, -3, 3), *old = dynb__stest_data(r, &g, p, -1, 1);
    /* The forward's output has 2 elements, more than p when N = K = 1. */
    size_t nout = p > 2 ? p : 2;
    double *want = dynb__stest_zeros(r, nout), *got = dynb__stest_zeros(r, nout),
           *scale = dynb__stest_zeros(r, nout);
    if (r->status != DYNB_OK) break;
    int32_t labels[130];
    for (int j = 0; j < n; j++) labels[j] = (int32_t)(ref_uniform(&g, 0, 1) * k) % k;
    dynb__tensor tz = dynb__stest_put(r, 2, dz, z, dynb__stest_offset(i)),
                 tl = dynb__stest_put_i32(r, n, labels);
    if (!backward) {
      dynb__tensor to = dynb__stest_put(r, 1, &two, NULL, 1),
                   tw = dynb__stest_put(r, 1, &dw, NULL, 0);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__xent_forward(r->ctx, &tz, &tl, &to, &tw));
      dynb__stest_read(r, &to, got);
      ref_xent_forward(n, k, z, labels, want);
      double loss_bound =
          dynb__stest_gamma(r, k + 30 + 6 * log((double)k) + (n + 3) * fabs(want[0]));
      dynb__stest_compare(r, got, want, NULL, 1, loss_bound);
      dynb__stest_compare(r, got + 1, want + 1, NULL, 1, 0);
    } else {
      bool acc = i % 2 == 1;
      double sc = i == 3 ? -0.5 : 1;
      dynb__tensor td = dynb__stest_put(r, 2, dz, acc ? old : NULL, 2);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__xent_backward(r->ctx, &tz, &tl, sc, &td, acc));
      dynb__stest_read(r, &td, got);
      ref_xent_backward(n, k, z, labels, sc, want);
      for (size_t e = 0; e < p; e++) {
        scale[e] = fabs(sc) / n + fabs(want[e]) + (acc ? fabs(old[e]) : 0);
        if (acc) want[e] += old[e];
      }
      dynb__stest_compare(r, got, want, scale, p, dynb__stest_gamma(r, k + 42));
    }
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

void dynb__stest_check_dense(dynb__stest_run *r) {
  dynb_dtype dts[2];
  int nd = dynb__stest_dtypes(r, dts);
  for (int d = 0; d < nd; d++) {
    check_gemm(r, dts[d]);
    check_linear(r, dts[d], false);
    check_linear(r, dts[d], true);
    check_xent(r, dts[d], false);
    check_xent(r, dts[d], true);
  }
}
