/* Normalisations: TV and batch norm (training and evaluation), forward
 * (plain and with σ fused) and backward. Counting conventions as in
 * check_elementwise.c; in addition OpenCL allows float sqrt 3 ulp and
 * division 2.5 ulp (6u and 5u), so a 1/sqrt(...) costs at most 11u. Every
 * per-channel sum of M = N·H·W terms is held to the order-independent
 * worst case γ(M) (tests/test_norm.c derives tighter, tree-specific
 * counts; the selftest must hold on any device's reduction). The bounds
 * are those of tests/test_norm.c with that sum count, and γ in place of
 * its doubled u (dynb__stest_gamma covers the double reference). */
#include <math.h>

#include "ops/ops.h"
#include "selftest.h"

/* Per channel: max |x - mean|·invstd and the range of x. */
static void spread(const dynb__stest_shape *sh, const double *x, const double *mean,
                   const double *invstd, double *xhat_max, double *range_max) {
  size_t s = (size_t)sh->h * sh->w;
  *xhat_max = 0, *range_max = 0;
  for (int ch = 0; ch < sh->c; ch++) {
    double lo = INFINITY, hi = -INFINITY;
    for (int n = 0; n < sh->n; n++)
      for (size_t i = 0; i < s; i++) {
        double v = x[((size_t)n * sh->c + ch) * s + i];
        lo = fmin(lo, v), hi = fmax(hi, v);
        *xhat_max = fmax(*xhat_max, fabs(v - mean[ch]) * invstd[ch]);
      }
    *range_max = fmax(*range_max, hi - lo);
  }
}

/* The reference output with σ applied, as the fused kernels do. */
static void fused(dynb_act act, size_t p, double *y) {
  if (act != DYNB_ACT_IDENTITY) ref_act_forward(act, p, y, y);
}

/* Compares against want (+ old when acc) with scale 1 + |want|, as the
 * bounds below are absolute-and-relative. */
static void compare(dynb__stest_run *r, const dynb__tensor *t, double *want, const double *old,
                    bool acc, double bound, size_t n) {
  double *got = dynb__stest_zeros(r, n), *scale = dynb__stest_zeros(r, n);
  if (r->status != DYNB_OK) return;
  dynb__stest_read(r, t, got);
  for (size_t i = 0; i < n; i++) {
    if (acc) want[i] += old[i];
    scale[i] = 1 + fabs(want[i]);
  }
  dynb__stest_compare(r, got, want, scale, n, bound);
}

/* ---- TV ------------------------------------------------------------------------ */

/* Forward: y = x/r + β with |x/r|, |β| <= 1: C squares summed (C/2·u on r),
 * 11u for 1/sqrt, 2u for the product and sum: γ(C + 16) absolute.
 * Backward: dx = dy/r - x (dy·x)/r³: C more roundings for dy·x and 3u for
 * r³ on top of the forward's, per element on |dy|/r + |x| Σ|dy x|/r³ (the
 * terms may cancel): γ(C + 24) on that; dβ = Σ dy: γ(M + 1) on M. */
static void check_tv(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "tv_backward" : "tv_forward", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
    ref_rng g = ref_rng_seed(800 + (uint64_t)i);
    size_t p = dynb__stest_numel(&sh[i]), c = (size_t)sh[i].c, m = p / c, s = m / (size_t)sh[i].n;
    int64_t d4[4] = {sh[i].n, sh[i].c, sh[i].h, sh[i].w}, dc = sh[i].c;
    double *x = dynb__stest_data(r, &g, p, -1, 1), *beta = dynb__stest_data(r, &g, c, -1, 1);
    double *dy = dynb__stest_data(r, &g, p, -1, 1), *dx0 = dynb__stest_data(r, &g, p, -1, 1);
    double *db0 = dynb__stest_data(r, &g, c, -1, 1), *want = dynb__stest_zeros(r, p),
           *wdb = dynb__stest_zeros(r, c);
    dynb__tensor tx = dynb__stest_put(r, 4, d4, x, dynb__stest_offset(i)),
                 tb = dynb__stest_put(r, 1, &dc, beta, 1);
    if (r->status != DYNB_OK) break;
    if (!backward) {
      dynb_act act = i % 2 ? DYNB_ACT_RELU : DYNB_ACT_IDENTITY;
      dynb__tensor ty = dynb__stest_put(r, 4, d4, NULL, 2);
      dynb__stest_ok(r, dynb__tv_forward(r->ctx, &tx, &tb, &ty, DYNB_TV_EPS, act));
      ref_tv_forward(sh[i].n, sh[i].c, (int)s, x, beta, DYNB_TV_EPS, want);
      fused(act, p, want);
      compare(r, &ty, want, NULL, false, dynb__stest_gamma(r, (double)c + 16), p);
    } else {
      bool acc = i % 2 == 1;
      dynb__tensor tdy = dynb__stest_put(r, 4, d4, dy, 2),
                   tdx = dynb__stest_put(r, 4, d4, acc ? dx0 : NULL, 3);
      dynb__tensor tdb = dynb__stest_put(r, 1, &dc, acc ? db0 : NULL, 0);
      double *got = dynb__stest_zeros(r, p), *scale = dynb__stest_zeros(r, p);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__tv_backward(r->ctx, &tx, &tdy, &tdx, &tdb, DYNB_TV_EPS, acc, acc));
      ref_tv_backward(sh[i].n, sh[i].c, (int)s, x, dy, DYNB_TV_EPS, want, wdb);
      for (int n = 0; n < sh[i].n; n++)
        for (size_t px = 0; px < s; px++) {
          size_t at0 = (size_t)n * c * s + px;
          double ss = DYNB_TV_EPS, dot = 0;
          for (size_t k = 0; k < c; k++) {
            double xv = x[at0 + k * s];
            ss += xv * xv, dot += fabs(dy[at0 + k * s] * xv);
          }
          double rr = sqrt(ss);
          for (size_t k = 0; k < c; k++) {
            size_t e = at0 + k * s;
            scale[e] = (fabs(dy[e]) + fabs(x[e]) * dot / ss) / rr + (acc ? fabs(dx0[e]) : 0);
            if (acc) want[e] += dx0[e];
          }
        }
      dynb__stest_read(r, &tdx, got);
      dynb__stest_compare(r, got, want, scale, p, dynb__stest_gamma(r, (double)c + 24));
      compare(r, &tdb, wdb, db0, acc, dynb__stest_gamma(r, (double)m + 1) * (double)m, c);
    }
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

/* ---- batch norm, training ---------------------------------------------------- */

/* x is uniform on offset ± √3 (standard deviation 1), γ in [0.5, 1.5].
 * Forward (k = M + 16): the mean errs by γ(M) on the range R of the
 * channel (the kernel sums x - shift), the variance by γ(M + 2) relative,
 * invstd by half that plus 11u; y gathers k u (γ (R invstd + x̂) + 1)
 * and, from the double reference's mean, 2^-53 |mean| invstd γ.
 * Running statistics add 3 roundings for the blend. Backward (from the
 * device's saved statistics, so that it is measured alone), with |dy| <=
 * 1: dx within (M + 8)u·kmax·(2 + x̂²) (kmax = max γ·invstd), dγ within
 * (M + 8)u·M·x̂max, dβ within (M + 1)u·M. */
static void check_bn_train(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "bn_train_backward" : "bn_train_forward", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
    ref_rng g = ref_rng_seed(820 + (uint64_t)i);
    size_t p = dynb__stest_numel(&sh[i]), c = (size_t)sh[i].c, m = p / c, s = m / (size_t)sh[i].n;
    int64_t d4[4] = {sh[i].n, sh[i].c, sh[i].h, sh[i].w}, dc = sh[i].c;
    double offset = i % 2 ? 3 : 0;
    bool running = m > 1; /* the unbiased variance needs two values */
    double *x = dynb__stest_data(r, &g, p, offset - sqrt(3), offset + sqrt(3));
    double *ga = dynb__stest_data(r, &g, c, 0.5, 1.5), *be = dynb__stest_data(r, &g, c, -1, 1);
    double *rm = dynb__stest_data(r, &g, c, -1, 1), *rv = dynb__stest_data(r, &g, c, 0.5, 2);
    double *dy = dynb__stest_data(r, &g, p, -1, 1),
           *old = dynb__stest_data(r, &g, p + 2 * c, -1, 1);
    double *y = dynb__stest_zeros(r, p), *mean = dynb__stest_zeros(r, c),
           *invstd = dynb__stest_zeros(r, c);
    double *dx = dynb__stest_zeros(r, p), *dg = dynb__stest_zeros(r, c),
           *db = dynb__stest_zeros(r, c);
    dynb__tensor tx = dynb__stest_put(r, 4, d4, x, dynb__stest_offset(i)),
                 tg = dynb__stest_put(r, 1, &dc, ga, 1);
    dynb__tensor tb = dynb__stest_put(r, 1, &dc, be, 2), ty = dynb__stest_put(r, 4, d4, NULL, 0);
    dynb__tensor tm = dynb__stest_put(r, 1, &dc, NULL, 3), ti = dynb__stest_put(r, 1, &dc, NULL, 0);
    dynb__tensor trm = dynb__stest_put(r, 1, &dc, rm, 1), trv = dynb__stest_put(r, 1, &dc, rv, 2);
    if (r->status != DYNB_OK) break;
    dynb_act act = !backward && i == 1 ? DYNB_ACT_RELU : DYNB_ACT_IDENTITY;
    dynb__stest_ok(
        r, dynb__bn_train_forward(r->ctx, &tx, &tg, &tb, &ty, &tm, &ti, running ? &trm : NULL,
                                  running ? &trv : NULL, DYNB_BN_MOMENTUM, DYNB_BN_EPS, act));
    double k = (double)m + 16;
    if (!backward) {
      ref_bn_train_forward(sh[i].n, sh[i].c, (int)s, x, ga, be, DYNB_BN_MOMENTUM, DYNB_BN_EPS, y,
                           mean, invstd, running ? rm : NULL, running ? rv : NULL);
      double xhat = 0, range = 0, gmax = dynb__stest_max_abs(ga, c),
             imax = dynb__stest_max_abs(invstd, c);
      spread(&sh[i], x, mean, invstd, &xhat, &range);
      double tol_y = dynb__stest_gamma(r, k) * (gmax * (range * imax + xhat) + 1) +
                     0x1p-53 * dynb__stest_max_abs(mean, c) * imax * gmax;
      fused(act, p, y);
      compare(r, &ty, y, NULL, false, tol_y, p);
      compare(r, &tm, mean, NULL, false, dynb__stest_gamma(r, k) * (range + 1), c);
      compare(r, &ti, invstd, NULL, false, dynb__stest_gamma(r, k), c);
      compare(r, &trm, rm, NULL, false, dynb__stest_gamma(r, k + 3) * (range + 1), c);
      compare(r, &trv, rv, NULL, false, dynb__stest_gamma(r, k + 3), c);
    } else {
      bool acc = i % 2 == 0;
      /* The statistics as the device saved them: the backward is measured
       * alone. */
      dynb__stest_fetch(r, &tm, mean), dynb__stest_fetch(r, &ti, invstd);
      if (r->status != DYNB_OK) break;
      dynb__tensor tdy = dynb__stest_put(r, 4, d4, dy, 2),
                   tdx = dynb__stest_put(r, 4, d4, acc ? old : NULL, 1);
      dynb__tensor tdg = dynb__stest_put(r, 1, &dc, acc ? old + p : NULL, 0);
      dynb__tensor tdb = dynb__stest_put(r, 1, &dc, acc ? old + p + c : NULL, 3);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(
          r, dynb__bn_train_backward(r->ctx, &tx, &tdy, &tg, &tm, &ti, &tdx, &tdg, &tdb, acc, acc));
      ref_bn_train_backward(sh[i].n, sh[i].c, (int)s, x, dy, ga, mean, invstd, dx, dg, db);
      double xhat = 0, range = 0, kmax = 0;
      spread(&sh[i], x, mean, invstd, &xhat, &range);
      for (size_t ch = 0; ch < c; ch++) kmax = fmax(kmax, ga[ch] * invstd[ch]);
      compare(r, &tdx, dx, old, acc, dynb__stest_gamma(r, (double)m + 8) * kmax * (2 + xhat * xhat),
              p);
      compare(r, &tdg, dg, old + p, acc, dynb__stest_gamma(r, (double)m + 8) * (double)m * xhat, c);
      compare(r, &tdb, db, old + p + c, acc, dynb__stest_gamma(r, (double)m + 1) * (double)m, c);
    }
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

/* ---- batch norm, evaluation ------------------------------------------------------ */

/* y = (x - μ)·γ/sqrt(σ² + ε) + β: the subtraction, ε, 1/sqrt (11u), two
 * products and the sum: γ(16) on |x - μ|·|γ|·invstd + |β|. Backward:
 * dx = dy·γ·invstd (γ(14) on its size plus |old|), dγ = Σ dy·x̂ over M
 * terms each within 14u: γ(M + 16) on Σ|dy x̂| + |old|, dβ = Σ dy: γ(M + 1)
 * on Σ|dy| + |old|. Scales are floored at 1e-300 (exactness where zero). */
static void check_bn_eval(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "bn_eval_backward" : "bn_eval_forward", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
    ref_rng g = ref_rng_seed(840 + (uint64_t)i);
    size_t p = dynb__stest_numel(&sh[i]), c = (size_t)sh[i].c, m = p / c, s = m / (size_t)sh[i].n;
    int64_t d4[4] = {sh[i].n, sh[i].c, sh[i].h, sh[i].w}, dc = sh[i].c;
    double *x = dynb__stest_data(r, &g, p, -2, 2), *ga = dynb__stest_data(r, &g, c, 0.5, 1.5);
    double *be = dynb__stest_data(r, &g, c, -1, 1), *rm = dynb__stest_data(r, &g, c, -1, 1);
    double *rv = dynb__stest_data(r, &g, c, 0.5, 2), *dy = dynb__stest_data(r, &g, p, -1, 1);
    double *old = dynb__stest_data(r, &g, p + 2 * c, -1, 1), *got = dynb__stest_zeros(r, p + 2 * c);
    double *want = dynb__stest_zeros(r, p + 2 * c), *scale = dynb__stest_zeros(r, p + 2 * c);
    dynb__tensor tx = dynb__stest_put(r, 4, d4, x, dynb__stest_offset(i)),
                 tg = dynb__stest_put(r, 1, &dc, ga, 1);
    dynb__tensor trm = dynb__stest_put(r, 1, &dc, rm, 2), trv = dynb__stest_put(r, 1, &dc, rv, 3);
    if (r->status != DYNB_OK) break;
    for (size_t e = 0; e < p; e++) {
      size_t ch = (e / s) % c;
      double is = 1 / sqrt(rv[ch] + DYNB_BN_EPS), xh = (x[e] - rm[ch]) * is;
      scale[e] = backward ? fabs(dy[e] * ga[ch]) * is : fabs(xh * ga[ch]) + fabs(be[ch]);
      scale[p + ch] += fabs(dy[e] * xh), scale[p + c + ch] += fabs(dy[e]);
    }
    if (!backward) {
      dynb_act act = i % 2 ? DYNB_ACT_TANH : DYNB_ACT_IDENTITY;
      dynb__tensor tb = dynb__stest_put(r, 1, &dc, be, 0), ty = dynb__stest_put(r, 4, d4, NULL, 1);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(
          r, dynb__bn_eval_forward(r->ctx, &tx, &tg, &tb, &trm, &trv, &ty, DYNB_BN_EPS, act));
      dynb__stest_read(r, &ty, got);
      ref_bn_eval_forward(sh[i].n, sh[i].c, (int)s, x, ga, be, rm, rv, DYNB_BN_EPS, want);
      fused(act, p, want);
      /* tanh is 1-Lipschitz: the argument's error passes through, and tanh
       * itself adds 64u (check_elementwise.c) on 1 + |y|, within the
       * scale's 1 added here. */
      for (size_t e = 0; e < p; e++)
        scale[e] = fmax(scale[e] + (act == DYNB_ACT_TANH ? 1 : 0), 1e-300);
      dynb__stest_compare(r, got, want, scale, p,
                          dynb__stest_gamma(r, act == DYNB_ACT_TANH ? 80 : 16));
    } else {
      bool acc = i % 2 == 1;
      dynb__tensor tdy = dynb__stest_put(r, 4, d4, dy, 0),
                   tdx = dynb__stest_put(r, 4, d4, acc ? old : NULL, 1);
      dynb__tensor tdg = dynb__stest_put(r, 1, &dc, acc ? old + p : NULL, 2);
      dynb__tensor tdb = dynb__stest_put(r, 1, &dc, acc ? old + p + c : NULL, 3);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__bn_eval_backward(r->ctx, &tx, &tdy, &tg, &trm, &trv, &tdx, &tdg, &tdb,
                                               DYNB_BN_EPS, acc, acc));
      ref_bn_eval_backward(sh[i].n, sh[i].c, (int)s, x, dy, ga, rm, rv, DYNB_BN_EPS, want, want + p,
                           want + p + c);
      dynb__stest_read(r, &tdx, got), dynb__stest_read(r, &tdg, got + p),
          dynb__stest_read(r, &tdb, got + p + c);
      for (size_t e = 0; e < p + 2 * c; e++) {
        if (acc) want[e] += old[e], scale[e] += fabs(old[e]);
        scale[e] = fmax(scale[e], 1e-300);
      }
      dynb__stest_compare(r, got, want, scale, p, dynb__stest_gamma(r, 14));
      dynb__stest_compare(r, got + p, want + p, scale + p, c, dynb__stest_gamma(r, (double)m + 16));
      dynb__stest_compare(r, got + p + c, want + p + c, scale + p + c, c,
                          dynb__stest_gamma(r, (double)m + 1));
    }
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

void dynb__stest_check_norm(dynb__stest_run *r) {
  dynb_dtype dts[2];
  int nd = dynb__stest_dtypes(r, dts);
  for (int d = 0; d < nd; d++) {
    check_tv(r, dts[d], false);
    check_tv(r, dts[d], true);
    check_bn_train(r, dts[d], false);
    check_bn_train(r, dts[d], true);
    check_bn_eval(r, dts[d], false);
    check_bn_eval(r, dts[d], true);
  }
}
