/* Elementwise ops and plain reductions: activations, per-channel bias and
 * sums, pooling, Runge–Kutta stage combinations, parameter interpolation.
 *
 * Bounds. Inputs are rounded to the device type before the reference sees
 * them, so only the op's own roundings count. An op of k roundings (each
 * within the unit roundoff u of its type, OpenCL's correctly rounded +, -, ·)
 * is within dynb__stest_gamma(k) of exact relative to the magnitudes it combines,
 * which `scale` holds per element (the same op on absolute values). A sum
 * of m terms, whatever its order or tree, errs by at most (m - 1)·u·Σ|x|
 * (Higham, Accuracy and Stability, §4.2), hence γ(m) for every reduction. */
#include <math.h>

#include "ops/ops.h"
#include "selftest.h"

/* ---- activations ------------------------------------------------------------- */

/* identity, relu, leaky_relu: the product slope·x (slope rounded to the
 * type), dy·σ' and the accumulation: 4 roundings. tanh: OpenCL allows 5 ulp
 * (10u) for tanh; the backward's 1/cosh² (cosh 4 ulp, squared, divided at
 * 2.5 ulp) times dy and the accumulation: about 24u; the double
 * reference's 1 - tanh² cancels by 2u/sech²(x) <= 29u for |x| <= 2. 64u
 * covers it. Data lie in [-2, 2], so scale = 1 + |want| makes the bound
 * relative and, near zero, absolute. */
static double act_bound(const dynb__stest_run *r, dynb_act a) {
  return dynb__stest_gamma(r, a == DYNB_ACT_TANH ? 64 : 4);
}

static void check_act(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "act_backward" : "act_forward", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  static const dynb_act acts[] = {DYNB_ACT_IDENTITY, DYNB_ACT_RELU, DYNB_ACT_TANH,
                                  DYNB_ACT_LEAKY_RELU};
  for (int i = 0; i < ns && r->status == DYNB_OK; i++)
    for (int a = 0; a < 4 && r->status == DYNB_OK; a++) {
      ref_rng g = ref_rng_seed(100 + (uint64_t)(i * 4 + a));
      size_t p = dynb__stest_numel(&sh[i]);
      int64_t dims[4] = {sh[i].n, sh[i].c, sh[i].h, sh[i].w};
      double *x = dynb__stest_data(r, &g, p, -2, 2), *dy = dynb__stest_data(r, &g, p, -1, 1);
      double *d0 = dynb__stest_data(r, &g, p, -1, 1), *want = dynb__stest_zeros(r, p),
             *got = dynb__stest_zeros(r, p);
      double *scale = dynb__stest_zeros(r, p);
      dynb__tensor tx = dynb__stest_put(r, 4, dims, x, dynb__stest_offset(i)),
                   tdy = dynb__stest_put(r, 4, dims, dy, 0);
      dynb__tensor out =
          dynb__stest_put(r, 4, dims, backward ? d0 : NULL, dynb__stest_offset(i + 1));
      if (r->status != DYNB_OK) break;
      bool acc = backward && (i + a) % 2;
      if (backward) {
        dynb__stest_ok(r, dynb__act_backward(r->ctx, acts[a], &tx, &tdy, &out, acc));
        ref_act_backward(acts[a], p, x, dy, want);
        for (size_t j = 0; acc && j < p; j++) want[j] += d0[j];
      } else {
        dynb__stest_ok(r, dynb__act_forward(r->ctx, acts[a], &tx, &out));
        ref_act_forward(acts[a], p, x, want);
      }
      dynb__stest_read(r, &out, got);
      dynb__stest_scale_abs(scale, want, p, 1, 1);
      dynb__stest_compare(r, got, want, scale, p, act_bound(r, acts[a]));
      dynb__stest_release(r);
    }
  dynb__stest_end(r);
}

/* ---- per-channel bias and sums ---------------------------------------------- */

static void check_channel(dynb__stest_run *r, dynb_dtype dt) {
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  /* bias_add: one addition, γ(1) on |y| + |b|. */
  dynb__stest_begin(r, "bias_add", NULL, dt);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
    ref_rng g = ref_rng_seed(200 + (uint64_t)i);
    size_t p = dynb__stest_numel(&sh[i]), c = (size_t)sh[i].c;
    int s = sh[i].h * sh[i].w;
    int64_t dims[4] = {sh[i].n, sh[i].c, sh[i].h, sh[i].w}, dc = sh[i].c;
    double *y = dynb__stest_data(r, &g, p, -1, 1), *b = dynb__stest_data(r, &g, c, -1, 1);
    double *want = dynb__stest_zeros(r, p), *got = dynb__stest_zeros(r, p),
           *scale = dynb__stest_zeros(r, p);
    dynb__tensor ty = dynb__stest_put(r, 4, dims, y, dynb__stest_offset(i)),
                 tb = dynb__stest_put(r, 1, &dc, b, 0);
    if (r->status != DYNB_OK) break;
    dynb__stest_ok(r, dynb__bias_add(r->ctx, &ty, &tb));
    dynb__stest_read(r, &ty, got);
    for (size_t j = 0; j < p; j++) want[j] = y[j], scale[j] = fabs(y[j]);
    ref_bias_add(sh[i].n, sh[i].c, s, want, b);
    for (size_t j = 0; j < p; j++) scale[j] += fabs(b[(j / (size_t)s) % c]);
    dynb__stest_compare(r, got, want, scale, p, dynb__stest_gamma(r, 1));
    dynb__stest_release(r);
  }
  dynb__stest_end(r);

  /* channel_sum: a sum of N·H·W terms (+ the accumulated value): γ(m + 1)
   * on Σ|x| + |old|. */
  dynb__stest_begin(r, "channel_sum", NULL, dt);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++)
    for (int acc = 0; acc < 2 && r->status == DYNB_OK; acc++) {
      ref_rng g = ref_rng_seed(210 + (uint64_t)(2 * i + acc));
      size_t p = dynb__stest_numel(&sh[i]), c = (size_t)sh[i].c, m = p / c;
      int s = sh[i].h * sh[i].w;
      int64_t dims[4] = {sh[i].n, sh[i].c, sh[i].h, sh[i].w}, dc = sh[i].c;
      double *x = dynb__stest_data(r, &g, p, -1, 1), *ax = dynb__stest_zeros(r, p),
             *o0 = dynb__stest_data(r, &g, c, -1, 1);
      double *want = dynb__stest_zeros(r, c), *got = dynb__stest_zeros(r, c),
             *scale = dynb__stest_zeros(r, c);
      dynb__tensor tx = dynb__stest_put(r, 4, dims, x, dynb__stest_offset(i)),
                   to = dynb__stest_put(r, 1, &dc, o0, 1);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__channel_sum(r->ctx, &tx, &to, acc));
      dynb__stest_read(r, &to, got);
      dynb__stest_scale_abs(ax, x, p, 1, 0);
      ref_channel_sum(sh[i].n, sh[i].c, s, x, want);
      ref_channel_sum(sh[i].n, sh[i].c, s, ax, scale);
      for (size_t j = 0; acc && j < c; j++) want[j] += o0[j], scale[j] += fabs(o0[j]);
      dynb__stest_compare(r, got, want, scale, c, dynb__stest_gamma(r, (double)m + 1));
      dynb__stest_release(r);
    }
  dynb__stest_end(r);

  /* sum: the whole tensor, γ(p + 1) on Σ|x| + |old|. */
  dynb__stest_begin(r, "sum", NULL, dt);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
    ref_rng g = ref_rng_seed(220 + (uint64_t)i);
    size_t p = dynb__stest_numel(&sh[i]);
    int64_t dp = (int64_t)p, one = 1, dw = (int64_t)dynb__sum_workspace(r->ctx, p);
    double *x = dynb__stest_data(r, &g, p, -1, 1), *o0 = dynb__stest_data(r, &g, 1, -1, 1);
    dynb__tensor tx = dynb__stest_put(r, 1, &dp, x, dynb__stest_offset(i)),
                 to = dynb__stest_put(r, 1, &one, o0, 2);
    dynb__tensor tw = dynb__stest_put(r, 1, &dw, NULL, 0);
    if (r->status != DYNB_OK) break;
    dynb__stest_ok(r, dynb__sum(r->ctx, &tx, &to, true, &tw));
    double got = 0, want = o0[0], scale = fabs(o0[0]);
    dynb__stest_read(r, &to, &got);
    for (size_t j = 0; j < p; j++) want += x[j], scale += fabs(x[j]);
    dynb__stest_compare(r, &got, &want, &scale, 1, dynb__stest_gamma(r, (double)p + 1));
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

/* ---- pooling ------------------------------------------------------------------ */

/* avgpool2 forward: 3 additions of 4 terms and the exact ·¼: γ(3) on the
 * mean of |x|. Backward: dy·¼ is exact, accumulation one rounding: γ(1) on
 * |dy|/4 + |old|. Global forward: a sum of H·W terms and a division:
 * γ(H·W + 1) on the mean |x|; backward: one division and the accumulation,
 * γ(2). */
static void check_pool(dynb__stest_run *r, dynb_dtype dt, bool global, bool backward) {
  const char *op = global ? (backward ? "global_avgpool_backward" : "global_avgpool_forward")
                          : (backward ? "avgpool2_backward" : "avgpool2_forward");
  dynb__stest_begin(r, op, NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
    ref_rng g = ref_rng_seed(300 + (uint64_t)i);
    int n = sh[i].n, c = sh[i].c, h = sh[i].h, w = sh[i].w;
    if (!global && (h < 2 || w < 2)) continue; /* nothing to pool */
    size_t px = dynb__stest_numel(&sh[i]);
    size_t py = global ? (size_t)n * c : (size_t)n * c * (h / 2) * (w / 2);
    int64_t dx4[4] = {n, c, h, w}, dy4[4] = {n, c, h / 2, w / 2}, dy2[2] = {n, c};
    const int64_t *ydims = global ? dy2 : dy4;
    int yrank = global ? 2 : 4;
    bool acc = backward && i % 2;
    double *x = dynb__stest_data(r, &g, px, -1, 1), *dy = dynb__stest_data(r, &g, py, -1, 1);
    double *d0 = dynb__stest_data(r, &g, px, -1, 1);
    size_t nout = backward ? px : py;
    double *want = dynb__stest_zeros(r, nout), *got = dynb__stest_zeros(r, nout),
           *scale = dynb__stest_zeros(r, nout);
    double *abs_in = dynb__stest_zeros(r, backward ? py : px);
    if (r->status != DYNB_OK) break;
    double bound;
    if (!backward) {
      dynb__tensor tx = dynb__stest_put(r, 4, dx4, x, dynb__stest_offset(i)),
                   ty = dynb__stest_put(r, yrank, ydims, NULL, 1);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, global ? dynb__global_avgpool_forward(r->ctx, &tx, &ty)
                               : dynb__avgpool2_forward(r->ctx, &tx, &ty));
      dynb__stest_read(r, &ty, got);
      dynb__stest_scale_abs(abs_in, x, px, 1, 0);
      if (global) {
        ref_global_avgpool_forward(n, c, h * w, x, want);
        ref_global_avgpool_forward(n, c, h * w, abs_in, scale);
      } else {
        ref_avgpool2_forward(n, c, h, w, x, want);
        ref_avgpool2_forward(n, c, h, w, abs_in, scale);
      }
      bound = dynb__stest_gamma(r, global ? h * w + 1 : 3);
    } else {
      dynb__tensor tdy = dynb__stest_put(r, yrank, ydims, dy, dynb__stest_offset(i));
      dynb__tensor tdx = dynb__stest_put(r, 4, dx4, acc ? d0 : NULL, 2);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, global ? dynb__global_avgpool_backward(r->ctx, &tdy, &tdx, acc)
                               : dynb__avgpool2_backward(r->ctx, &tdy, &tdx, acc));
      dynb__stest_read(r, &tdx, got);
      dynb__stest_scale_abs(abs_in, dy, py, 1, 0);
      if (global) {
        ref_global_avgpool_backward(n, c, h * w, dy, want);
        ref_global_avgpool_backward(n, c, h * w, abs_in, scale);
      } else {
        ref_avgpool2_backward(n, c, h, w, dy, want);
        ref_avgpool2_backward(n, c, h, w, abs_in, scale);
      }
      for (size_t j = 0; acc && j < px; j++) want[j] += d0[j], scale[j] += fabs(d0[j]);
      bound = dynb__stest_gamma(r, 2);
    }
    /* An element that gets no gradient (an odd last row) must be exactly 0
     * or its old value: a floor of 1e-300 on its zero scale demands that. */
    for (size_t j = 0; j < nout; j++) scale[j] = fmax(scale[j], 1e-300);
    dynb__stest_compare(r, got, want, scale, nout, bound);
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

/* ---- Runge–Kutta stage combinations ----------------------------------------- */

/* out = y + Σ_j a_j k_j over S stages: S products and S additions, γ(2S)
 * on |y| + Σ|a_j k_j|. The adjoint: dk_j = a_j·dout (+ old): γ(2) on
 * |a_j dout| + |old|; dy = dout (+ old): γ(1). The coefficient rows are
 * those of the built-in tableaux (rk4's ½, ½, 1 and b; rk38's ⅓, -⅓, 1),
 * times a non-uniform step, zeros included (skipped by the kernel). */
static const double rk_rows[][4] = {{0.7, 0, 0, 0},
                                    {0.35, 0.35, 0, 0},
                                    {0, 0.7, 0, 0},
                                    {0.7 / 3, -0.7 / 3, 0.7, 0},
                                    {0.7 / 6, 0.7 / 3, 0.7 / 3, 0.7 / 6},
                                    {0.7 / 8, 0.7 * 3 / 8, 0.7 * 3 / 8, 0.7 / 8}};

static void check_rk(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "rk_combine_backward" : "rk_combine", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  int nrows = (int)(sizeof rk_rows / sizeof *rk_rows);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++)
    for (int row = 0; row < nrows && r->status == DYNB_OK; row++) {
      ref_rng g = ref_rng_seed(400 + (uint64_t)(i * nrows + row));
      int S = row < 3 ? row + 1 : 4;
      size_t p = dynb__stest_numel(&sh[i]);
      int64_t dp = (int64_t)p, dk[2] = {S, (int64_t)p}, ds = S;
      double coef[4];
      for (int j = 0; j < S; j++) coef[j] = r->f64 ? rk_rows[row][j] : (float)rk_rows[row][j];
      double *y = dynb__stest_data(r, &g, p, -1, 1), *k = dynb__stest_data(r, &g, p * S, -1, 1);
      double *old = dynb__stest_data(r, &g, p * S, -1, 1),
             *oldy = dynb__stest_data(r, &g, p, -1, 1);
      dynb__tensor tc = dynb__stest_put(r, 1, &ds, coef, 1);
      bool no_y = row % 2 == 1, acc = row % 3 == 0;
      if (r->status != DYNB_OK) break;
      if (!backward) {
        double *want = dynb__stest_zeros(r, p), *got = dynb__stest_zeros(r, p),
               *scale = dynb__stest_zeros(r, p);
        double *zero = dynb__stest_zeros(r, p);
        dynb__tensor ty = dynb__stest_put(r, 1, &dp, y, dynb__stest_offset(i)),
                     tk = dynb__stest_put(r, 2, dk, k, 3);
        dynb__tensor to = dynb__stest_put(r, 1, &dp, NULL, 0);
        if (r->status != DYNB_OK) break;
        dynb__stest_ok(r, dynb__rk_combine(r->ctx, no_y ? NULL : &ty, &tk, &tc, &to));
        dynb__stest_read(r, &to, got);
        ref_rk_combine(p, S, no_y ? zero : y, k, coef, want);
        for (size_t e = 0; e < p; e++) {
          scale[e] = no_y ? 0 : fabs(y[e]);
          for (int j = 0; j < S; j++) scale[e] += fabs(coef[j] * k[(size_t)j * p + e]);
          scale[e] = fmax(scale[e], 1e-300);
        }
        dynb__stest_compare(r, got, want, scale, p, dynb__stest_gamma(r, 2.0 * S));
      } else {
        double *dy = dynb__stest_zeros(r, p), *dks = dynb__stest_zeros(r, p * S),
               *got = dynb__stest_zeros(r, p * S);
        double *scale = dynb__stest_zeros(r, p * S);
        dynb__tensor tdout = dynb__stest_put(r, 1, &dp, y, dynb__stest_offset(i));
        dynb__tensor tdy = dynb__stest_put(r, 1, &dp, acc ? oldy : NULL, 1);
        dynb__tensor tdk = dynb__stest_put(r, 2, dk, acc ? old : NULL, 2);
        if (r->status != DYNB_OK) break;
        dynb__stest_ok(
            r, dynb__rk_combine_backward(r->ctx, &tdout, &tc, no_y ? NULL : &tdy, &tdk, acc, acc));
        ref_rk_combine_backward(p, S, y, coef, dy, dks);
        dynb__stest_read(r, &tdk, got);
        for (size_t e = 0; e < p * S; e++) {
          if (acc) dks[e] += old[e];
          scale[e] = fmax(fabs(coef[e / p] * y[e % p]) + (acc ? fabs(old[e]) : 0), 1e-300);
        }
        dynb__stest_compare(r, got, dks, scale, p * S, dynb__stest_gamma(r, 2));
        if (!no_y) {
          dynb__stest_read(r, &tdy, got);
          for (size_t e = 0; e < p; e++) {
            if (acc) dy[e] += oldy[e];
            scale[e] = fmax(fabs(y[e]) + (acc ? fabs(oldy[e]) : 0), 1e-300);
          }
          dynb__stest_compare(r, got, dy, scale, p, dynb__stest_gamma(r, 1));
        }
      }
      dynb__stest_release(r);
    }
  dynb__stest_end(r);
}

/* ---- parameter interpolation ------------------------------------------------- */

/* out = (1 - w)·c0 + w·c1 with 1 - w and w rounded to the type: 2 roundings
 * of the weights, 2 products, 1 sum: γ(5) on |(1-w) c0| + |w c1|. The
 * adjoint adds (1 - w)·dout into one control and w·dout into the next:
 * rounded weight, product, sum: γ(3) on |weight·dout| + |old|. */
static void check_interp(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "interp_backward" : "interp_forward", NULL, dt);
  static const double grid[4] = {0, 0.4, 1.0, 2.5};
  static const double times[] = {-1, 0, 0.1, 0.4, 0.77, 2.5, 3};
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  int nt = (int)(sizeof times / sizeof *times);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++)
    for (int t = 0; t < nt && r->status == DYNB_OK; t++) {
      ref_rng g = ref_rng_seed(500 + (uint64_t)(i * nt + t));
      int J = t == 2 ? 1 : 4; /* one control point: θ constant */
      size_t p = dynb__stest_numel(&sh[i]), n = (size_t)J * p;
      int64_t dc[2] = {J, (int64_t)p}, dp = (int64_t)p;
      int j0;
      double w;
      dynb__interp_weights(grid, J, times[t], &j0, &w);
      double *c = dynb__stest_data(r, &g, n, -1, 1), *d = dynb__stest_data(r, &g, p, -1, 1);
      double *got = dynb__stest_zeros(r, n), *want = dynb__stest_zeros(r, n),
             *scale = dynb__stest_zeros(r, n);
      if (r->status != DYNB_OK) break;
      if (!backward) {
        dynb__tensor tc = dynb__stest_put(r, 2, dc, c, dynb__stest_offset(i)),
                     to = dynb__stest_put(r, 1, &dp, NULL, 1);
        if (r->status != DYNB_OK) break;
        dynb__stest_ok(r, dynb__interp_forward(r->ctx, &tc, j0, w, &to));
        dynb__stest_read(r, &to, got);
        ref_interp_forward(p, c, j0, w, want);
        for (size_t e = 0; e < p; e++)
          scale[e] = fmax(fabs((1 - w) * c[(size_t)j0 * p + e]) +
                              (w != 0 ? fabs(w * c[(size_t)(j0 + 1) * p + e]) : 0),
                          1e-300);
        dynb__stest_compare(r, got, want, scale, p, dynb__stest_gamma(r, 5));
      } else {
        dynb__tensor td = dynb__stest_put(r, 1, &dp, d, dynb__stest_offset(i)),
                     tc = dynb__stest_put(r, 2, dc, c, 2);
        if (r->status != DYNB_OK) break;
        dynb__stest_ok(r, dynb__interp_backward(r->ctx, &td, j0, w, &tc));
        dynb__stest_read(r, &tc, got);
        for (size_t e = 0; e < n; e++) want[e] = c[e];
        ref_interp_backward(p, d, j0, w, want);
        for (size_t e = 0; e < n; e++) {
          size_t j = e / p;
          double wt = j == (size_t)j0 ? 1 - w : (j == (size_t)j0 + 1 ? w : 0);
          scale[e] = fmax(fabs(wt * d[e % p]) + fabs(c[e]), 1e-300);
        }
        dynb__stest_compare(r, got, want, scale, n, dynb__stest_gamma(r, 3));
      }
      dynb__stest_release(r);
    }
  dynb__stest_end(r);
}

void dynb__stest_check_elementwise(dynb__stest_run *r) {
  dynb_dtype dts[2];
  int nd = dynb__stest_dtypes(r, dts);
  for (int d = 0; d < nd; d++) {
    check_act(r, dts[d], false);
    check_act(r, dts[d], true);
    check_channel(r, dts[d]);
    for (int global = 0; global < 2; global++) {
      check_pool(r, dts[d], global, false);
      check_pool(r, dts[d], global, true);
    }
    check_rk(r, dts[d], false);
    check_rk(r, dts[d], true);
    check_interp(r, dts[d], false);
    check_interp(r, dts[d], true);
  }
}
