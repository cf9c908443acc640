/* Parameter updates: SGD (plain, momentum, Nesterov, weight decay), Adam,
 * box clipping, and the regularisation in time with its subgradient.
 * Counting conventions as in check_elementwise.c. */
#include <math.h>

#include "ops/ops.h"
#include "selftest.h"

/* Parameters, gradients and velocities lie in [-1, 1], hyper-parameters
 * are at most 1 (lr <= 0.1), so every intermediate of a step is at most 4
 * in magnitude.
 * - SGD: g = grad + wd·θ, v = m·v + g, u = g + m·v (Nesterov), θ - lr·u:
 *   8 roundings, and lr, m, wd rounded to the type: 11 roundings of values
 *   up to 4, i.e. 44u absolute; scale 1 + |want| makes that relative
 *   (and absolute near zero): γ(44).
 * - Adam: m and v take 5 roundings each (1 - β rounded, two products, g²,
 *   the sum); the step divides by the bias corrections (2.5 ulp = 5u each),
 *   takes a square root (3 ulp = 6u), adds eps, divides (5u), scales by lr
 *   and subtracts: about 30u relative on an update lr·m̂/(√v̂ + eps) whose
 *   ratio is at most ~3 here, plus 11u for v's and m's own errors through
 *   the ratio: γ(64) on 1 + |want| covers it. */
static void check_sgd(dynb__stest_run *r, dynb_dtype dt) {
  dynb__stest_begin(r, "sgd_step", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  static const dynb__sgd_hyper hs[] = {
      {0.1, 0, 0, false}, {0.05, 0.9, 4e-4, false}, {0.1, 0.9, 0.1, true}, {0.01, 0.5, 0, true}};
  for (int i = 0; i < ns && r->status == DYNB_OK; i++)
    for (int k = 0; k < 4 && r->status == DYNB_OK; k++) {
      ref_rng g = ref_rng_seed(600 + (uint64_t)(4 * i + k));
      size_t p = dynb__stest_numel(&sh[i]);
      int64_t dp = (int64_t)p;
      const dynb__sgd_hyper *h = &hs[k];
      double *th = dynb__stest_data(r, &g, p, -1, 1), *gr = dynb__stest_data(r, &g, p, -1, 1);
      double *v = dynb__stest_data(r, &g, p, -1, 1), *got = dynb__stest_zeros(r, p),
             *scale = dynb__stest_zeros(r, p);
      dynb__tensor tt = dynb__stest_put(r, 1, &dp, th, dynb__stest_offset(i)),
                   tg = dynb__stest_put(r, 1, &dp, gr, 1);
      dynb__tensor tv = dynb__stest_put(r, 1, &dp, v, 2);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__sgd_step(r->ctx, &tt, &tg, h->momentum != 0 ? &tv : NULL, h));
      ref_sgd_step(p, th, gr, v, h->lr, h->momentum, h->weight_decay, h->nesterov);
      dynb__stest_read(r, &tt, got);
      dynb__stest_scale_abs(scale, th, p, 1, 1);
      dynb__stest_compare(r, got, th, scale, p, dynb__stest_gamma(r, 44));
      if (h->momentum != 0) {
        dynb__stest_read(r, &tv, got);
        dynb__stest_scale_abs(scale, v, p, 1, 1);
        dynb__stest_compare(r, got, v, scale, p, dynb__stest_gamma(r, 44));
      }
      dynb__stest_release(r);
    }
  dynb__stest_end(r);
}

static void check_adam(dynb__stest_run *r, dynb_dtype dt) {
  dynb__stest_begin(r, "adam_step", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  static const dynb__adam_hyper hs[] = {{1e-3, 0.9, 0.999, 1e-8, 0, 1},
                                        {0.01, 0.8, 0.99, 1e-6, 1e-2, 3}};
  for (int i = 0; i < ns && r->status == DYNB_OK; i++)
    for (int k = 0; k < 2 && r->status == DYNB_OK; k++) {
      ref_rng g = ref_rng_seed(620 + (uint64_t)(2 * i + k));
      size_t p = dynb__stest_numel(&sh[i]);
      int64_t dp = (int64_t)p;
      const dynb__adam_hyper *h = &hs[k];
      /* Step 1 starts from zero moments, as an optimiser does; later steps
       * from moments consistent with gradients of size <= 1. */
      double *th = dynb__stest_data(r, &g, p, -1, 1), *gr = dynb__stest_data(r, &g, p, -1, 1);
      double *m = dynb__stest_data(r, &g, p, -0.5, 0.5), *v = dynb__stest_data(r, &g, p, 0.05, 0.5);
      double *got = dynb__stest_zeros(r, p), *scale = dynb__stest_zeros(r, p);
      if (r->status != DYNB_OK) break;
      for (size_t e = 0; h->step == 1 && e < p; e++) m[e] = v[e] = 0;
      dynb__tensor tt = dynb__stest_put(r, 1, &dp, th, dynb__stest_offset(i)),
                   tg = dynb__stest_put(r, 1, &dp, gr, 1);
      dynb__tensor tm = dynb__stest_put(r, 1, &dp, m, 2), tv = dynb__stest_put(r, 1, &dp, v, 3);
      if (r->status != DYNB_OK) break;
      dynb__stest_ok(r, dynb__adam_step(r->ctx, &tt, &tg, &tm, &tv, h));
      ref_adam_step(p, th, gr, m, v, h->lr, h->beta1, h->beta2, h->eps, h->weight_decay, h->step);
      const dynb__tensor *outs[3] = {&tt, &tm, &tv};
      double *wants[3] = {th, m, v};
      for (int o = 0; o < 3; o++) {
        dynb__stest_read(r, outs[o], got);
        dynb__stest_scale_abs(scale, wants[o], p, 1, 1);
        dynb__stest_compare(r, got, wants[o], scale, p, dynb__stest_gamma(r, 64));
      }
      dynb__stest_release(r);
    }
  dynb__stest_end(r);
}

/* Clipping selects a value or a bound: exact (bound 0), with the bounds
 * as the kernel sees them, rounded to the type. */
static void check_clip(dynb__stest_run *r, dynb_dtype dt) {
  dynb__stest_begin(r, "clip", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
    ref_rng g = ref_rng_seed(640 + (uint64_t)i);
    size_t p = dynb__stest_numel(&sh[i]);
    int64_t dp = (int64_t)p;
    double lo = -0.3, hi = 0.45;
    if (!r->f64) lo = (float)lo, hi = (float)hi;
    double *th = dynb__stest_data(r, &g, p, -1, 1), *got = dynb__stest_zeros(r, p);
    dynb__tensor tt = dynb__stest_put(r, 1, &dp, th, dynb__stest_offset(i));
    if (r->status != DYNB_OK) break;
    dynb__stest_ok(r, dynb__clip(r->ctx, &tt, lo, hi));
    ref_clip(p, th, lo, hi);
    dynb__stest_read(r, &tt, got);
    dynb__stest_compare(r, got, th, NULL, p, 0);
    dynb__stest_release(r);
  }
  dynb__stest_end(r);
}

/* R = α Σ_j h_j Σ_p |θ_{j+1} - θ_j|: K = (J-1)·P non-negative terms of a
 * difference and a product each, their sum (γ(K)), α and the accumulation:
 * γ(K + 4) relative to R + |old| (all terms have one sign, so Σ|terms| is
 * R itself). The subgradient α(h_{j-1} s - h_j s') with signs s: two
 * products, a difference, α, the accumulation: γ(5) on
 * α(h_{j-1} + h_j) + |old|. */
static void check_timereg(dynb__stest_run *r, dynb_dtype dt, bool backward) {
  dynb__stest_begin(r, backward ? "timereg_backward" : "timereg_forward", NULL, dt);
  int ns;
  const dynb__stest_shape *sh = dynb__stest_shapes(r, &ns);
  static const int Js[] = {1, 2, 4};
  for (int i = 0; i < ns && r->status == DYNB_OK; i++)
    for (int k = 0; k < 3 && r->status == DYNB_OK; k++) {
      ref_rng g = ref_rng_seed(660 + (uint64_t)(3 * i + k));
      int J = Js[k];
      size_t p = dynb__stest_numel(&sh[i]), n = (size_t)J * p;
      int64_t dc[2] = {J, (int64_t)p}, dh = J > 1 ? J - 1 : 1, one = 1;
      int64_t dw = (int64_t)dynb__timereg_workspace(r->ctx, (int64_t)p);
      double alpha = r->f64 ? 0.3 : (float)0.3;
      double *c = dynb__stest_data(r, &g, n, -1, 1),
             *h = dynb__stest_data(r, &g, (size_t)dh, 0.2, 1.5);
      double *old = dynb__stest_data(r, &g, n, -1, 1), *got = dynb__stest_zeros(r, n),
             *scale = dynb__stest_zeros(r, n);
      dynb__tensor tc = dynb__stest_put(r, 2, dc, c, dynb__stest_offset(i)),
                   th = dynb__stest_put(r, 1, &dh, h, 1);
      if (r->status != DYNB_OK) break;
      if (!backward) {
        dynb__tensor to = dynb__stest_put(r, 1, &one, old, 2),
                     tw = dynb__stest_put(r, 1, &dw, NULL, 0);
        if (r->status != DYNB_OK) break;
        dynb__stest_ok(
            r, dynb__timereg_forward(r->ctx, &tc, J > 1 ? &th : NULL, alpha, &to, true, &tw));
        dynb__stest_read(r, &to, got);
        double R = ref_timereg(J, p, c, h, alpha), want = old[0] + R;
        double s = fmax(R + fabs(old[0]), 1e-300);
        dynb__stest_compare(r, got, &want, &s, 1,
                            dynb__stest_gamma(r, (double)(J - 1) * (double)p + 4));
      } else {
        dynb__tensor td = dynb__stest_put(r, 2, dc, old, 2);
        if (r->status != DYNB_OK) break;
        dynb__stest_ok(r, dynb__timereg_backward(r->ctx, &tc, J > 1 ? &th : NULL, alpha, &td));
        dynb__stest_read(r, &td, got);
        for (size_t e = 0; e < n; e++) {
          int j = (int)(e / p);
          double hs = (j > 0 ? h[j - 1] : 0) + (j + 1 < J ? h[j] : 0);
          scale[e] = alpha * hs + fabs(old[e]) + 1e-300;
        }
        ref_timereg_backward(J, p, c, h, alpha, old); /* old becomes the expected value */
        dynb__stest_compare(r, got, old, scale, n, dynb__stest_gamma(r, 5));
      }
      dynb__stest_release(r);
    }
  dynb__stest_end(r);
}

void dynb__stest_check_params(dynb__stest_run *r) {
  dynb_dtype dts[2];
  int nd = dynb__stest_dtypes(r, dts);
  for (int d = 0; d < nd; d++) {
    check_sgd(r, dts[d]);
    check_adam(r, dts[d]);
    check_clip(r, dts[d]);
    check_timereg(r, dts[d], false);
    check_timereg(r, dts[d], true);
  }
}
