/* Adaptive blocks on the device (SPEC §1.5, integrator_adaptive.c): the
 * forward takes the same steps as the host reference solver and gives the
 * same output; the "discrete" gradient matches central differences of the
 * reference with the accepted step sequence frozen (f64, tanh); the counts
 * of steps and evaluations agree with the reference's; max_steps fails
 * with a message. Edge sizes: N = 1, C = 1, a 1×1 map; an odd 3×5 map. */
#include <math.h>

#include "testutil.h"
#include "model/integrator.h"

typedef struct bcase {
  int n, c, h, w, kernel;
  dynb_layer_kind kind;
  dynb_norm_kind norm;
  const char *scheme;
} bcase;

static const bcase cases[] = {
    {1, 1, 1, 1, 1, DYNB_LAYER_DOUBLESYM, DYNB_NORM_NONE, "dopri5"},
    {2, 2, 3, 5, 3, DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, "dopri5"},
    {2, 2, 3, 5, 3, DYNB_LAYER_DOUBLE, DYNB_NORM_NONE, "bosh3"},
};
#define NCASES (sizeof cases / sizeof *cases)

static const double ts[3] = {0, 0.7, 1.5}, tc[3] = {0, 0.4, 1.5};

typedef struct setup {
  dynb__layer l;
  dynb__tableau tab;
  size_t P, m;
  double *controls, *x, *w;
  dynb__block *b;
  dynb__tensor tx, tout;
} setup;

static void make(dynb_ctx *ctx, dynb_dtype dt, const bcase *k, double rtol, int max_steps,
                 uint64_t seed, setup *s) {
  s->l = (dynb__layer){k->kind, k->norm, DYNB_ACT_TANH, k->c, k->kernel};
  assert_true(dynb__tableau_builtin(k->scheme, &s->tab));
  s->tab.rtol = rtol, s->tab.atol = rtol * 1e-2, s->tab.max_steps = max_steps;
  dynb__layer_params(&s->l, NULL, &s->P);
  s->m = (size_t)k->n * (size_t)k->c * (size_t)k->h * (size_t)k->w;
  tu_rng r = tu_rng_seed(seed);
  /* Weights in ±0.3 keep the field's Lipschitz constant near 1 (as in
   * test_adaptive), so a few dozen steps cover the interval. */
  s->controls = tu_random(&r, 3 * s->P, -0.3, 0.3);
  s->x = tu_random(&r, s->m, -1, 1);
  s->w = tu_random(&r, s->m, -1, 1);
  dynb__block_desc d = {.layer = s->l, .tableau = s->tab, .nstates = 3, .t_states = ts,
                        .ncontrols = 3, .t_controls = tc};
  char err[256] = "";
  dynb_status st = dynb__block_create(ctx, &d, dt, &s->b, err, sizeof err);
  if (st != DYNB_OK) fail_msg("dynb__block_create: %s (%s)", dynb_status_name(st), err);
  int64_t dims[4] = {k->n, k->c, k->h, k->w};
  s->tx = tu_upload(ctx, dt, 4, dims, s->x);
  s->tout = tu_upload(ctx, dt, 4, dims, NULL);
  TU_OK(ctx, dynb__block_prepare(s->b, k->n, k->h, k->w, DYNB_MEMORY_STORE, NULL, NULL));
  tu_write(ctx, dynb__block_controls(s->b), s->controls);
}

static void drop(setup *s) {
  dynb__tensor_release(&s->tx), dynb__tensor_release(&s->tout);
  dynb__block_free(s->b);
  free(s->controls), free(s->x), free(s->w);
}

/* The reference on the frozen grid t[0..n]: dopri5's (c, A, b) as a fixed
 * tableau over the accepted steps. */
static void frozen_forward(const setup *s, const bcase *k, int n, const double *t,
                           const double *controls, const double *x, double *out) {
  double a[DYNB_MAX_STAGES * DYNB_MAX_STAGES];
  int st = s->tab.stages;
  for (int i = 0; i < st; i++)
    for (int j = 0; j < st; j++) a[i * st + j] = s->tab.a[i][j];
  ref_block_forward(&s->l, k->n, k->h, k->w, st, s->tab.c, a, s->tab.b, n + 1, t, 3, tc, controls,
                    x, 1, NULL, out);
}

/* F64: the device's error ratios differ from the reference's by rounding
 * only, so unless one sits at 1 the two accept and reject the same steps
 * (checked exactly). The error estimate is a difference of O(|y|) stage
 * sums of size ~rtol·r, so its relative rounding is ~1e-16/1e-6 = 1e-10,
 * and the step sizes, scaled by r^(-1/q), inherit ~2e-11 of it per step:
 * step ends agree to 1e-9 over ~100 steps. Outputs agree to rounding over
 * ~100 steps of a Lipschitz ~1 flow plus the effect of those shifts on a
 * local error of ~rtol (1e-10·1e-6): 1e-11 of max|y| holds both. */
static void forward_takes_the_reference_steps(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  for (size_t q = 0; q < NCASES; q++) {
    setup s;
    make(ctx, DYNB_F64, &cases[q], 1e-6, 500, 100 + q, &s);
    double *got = malloc(s.m * sizeof *got), *want = malloc(s.m * sizeof *want);
    TU_OK(ctx, dynb__block_forward(s.b, &s.tx, &s.tout, true));
    tu_download(ctx, &s.tout, got);
    dynb__step_counts cnt;
    dynb__adaptive_counts(s.b, &cnt);
    assert_true(cnt.adaptive);
    double steps[501];
    ref_adaptive_stats st = {.steps = steps};
    char err[256];
    if (ref_block_adaptive_forward(&s.l, cases[q].n, cases[q].h, cases[q].w, &s.tab, 3, ts, 3, tc,
                                   s.controls, s.tab.rtol, s.tab.atol, 500, s.x, want, &st, err,
                                   sizeof err))
      fail_msg("reference: %s", err);
    printf("maxerr case %zu %s: device %d accepted %d rejected nfe %g; reference %d %d %d\n", q,
           cases[q].scheme, cnt.accepted, cnt.rejected, cnt.nfe_forward, st.accepted,
           st.rejected, st.nfe);
    assert_int_equal(cnt.accepted, st.accepted);
    assert_int_equal(cnt.rejected, st.rejected);
    assert_true(cnt.nfe_forward == st.nfe);
    for (int i = 0; i <= st.accepted; i++)
      if (fabs(cnt.t[i] - steps[i]) > 1e-9)
        fail_msg("step %d ends at %.17g, reference %.17g", i, cnt.t[i], steps[i]);
    double scale = 0;
    for (size_t e = 0; e < s.m; e++) scale = fmax(scale, fabs(want[e]));
    tu_assert_close("adaptive forward vs reference", got, want, s.m, 0, 1e-11 * scale);
    /* The same numbers as the fixed-step reference over the accepted grid. */
    frozen_forward(&s, &cases[q], cnt.accepted, cnt.t, s.controls, s.x, want);
    tu_assert_close("adaptive forward vs frozen grid", got, want, s.m, 0, 1e-11 * scale);
    free(got), free(want);
    drop(&s);
  }
  dynb_ctx_free(ctx);
}

/* F32 runs too; its own rounding (~1e-7 per operation) moves the error
 * ratios, so the step sequence may differ from the F64 reference's; both
 * solve to rtol 1e-5 (error <= 30·rtol on test_adaptive's problem), so
 * they agree to 1e-3 of max|y| with room for ~100 steps of f32 rounding. */
static void forward_f32(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  setup s;
  make(ctx, DYNB_F32, &cases[1], 1e-5, 500, 7, &s);
  double *got = malloc(s.m * sizeof *got), *want = malloc(s.m * sizeof *want);
  TU_OK(ctx, dynb__block_forward(s.b, &s.tx, &s.tout, true));
  tu_download(ctx, &s.tout, got);
  ref_adaptive_stats st = {0};
  char err[256];
  tu_round_to(DYNB_F32, s.x, s.m);
  tu_round_to(DYNB_F32, s.controls, 3 * s.P);
  if (ref_block_adaptive_forward(&s.l, 2, 3, 5, &s.tab, 3, ts, 3, tc, s.controls, 1e-5, 1e-7, 500,
                                 s.x, want, &st, err, sizeof err))
    fail_msg("reference: %s", err);
  double scale = 0;
  for (size_t e = 0; e < s.m; e++) scale = fmax(scale, fabs(want[e]));
  tu_assert_close("adaptive forward f32", got, want, s.m, 0, 1e-3 * scale);
  free(got), free(want);
  drop(&s);
  dynb_ctx_free(ctx);
}

/* L = Σ w ⊙ out. The gradient of the computation that ran: central
 * differences of the host reference with the accepted steps frozen, with
 * Richardson extrapolation as in test_block (step 1e-5: truncation ≲ 1e-10,
 * cancellation ~3·1e-14/1e-5 = 3e-9), so 1e-6 leaves a wide margin; a
 * missing stage, a wrong step size or a θ gradient sent to the wrong
 * control point is off by far more (>= 1e-3). */
static void discrete_gradient_matches_frozen_differences(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  tu_require_real(ctx, DYNB_F64);
  for (size_t q = 0; q < NCASES; q++) {
    setup s;
    make(ctx, DYNB_F64, &cases[q], 1e-4, 500, 200 + q, &s);
    const bcase *k = &cases[q];
    int64_t dims[4] = {k->n, k->c, k->h, k->w};
    dynb__tensor tw = tu_upload(ctx, DYNB_F64, 4, dims, s.w);
    dynb__tensor tdx = tu_upload(ctx, DYNB_F64, 4, dims, NULL);
    TU_OK(ctx, dynb__block_forward(s.b, &s.tx, &s.tout, true));
    TU_OK(ctx, dynb__tensor_zero(ctx, dynb__block_grads(s.b)));
    TU_OK(ctx, dynb__block_backward(s.b, &s.tx, &tw, &tdx));
    dynb__step_counts cnt;
    dynb__adaptive_counts(s.b, &cnt);
    int n = cnt.accepted;
    double *t = malloc((size_t)(n + 1) * sizeof *t);
    memcpy(t, cnt.t, (size_t)(n + 1) * sizeof *t);
    assert_true(cnt.nfe_backward == 2.0 * s.tab.stages * n);
    double *dx = malloc(s.m * sizeof *dx), *dc = malloc(3 * s.P * sizeof *dc);
    double *out = malloc(s.m * sizeof *out);
    tu_download(ctx, &tdx, dx);
    tu_download(ctx, dynb__block_grads(s.b), dc);
    double worst = 0;
    /* Every element of x and of the controls for the small cases; 40 spread
     * points of the controls for the larger. */
    size_t nx = s.m, ncp = 3 * s.P, stride = ncp > 40 ? ncp / 40 : 1;
    for (int which = 0; which < 2; which++) {
      double *arr = which ? s.controls : s.x, *an = which ? dc : dx;
      size_t len = which ? ncp : nx, st = which ? stride : 1;
      for (size_t i = 0; i < len; i += st) {
        double keep = arr[i], d[2];
        for (int half = 0; half < 2; half++) {
          double hs = half ? 0.5e-5 : 1e-5, l[2];
          for (int sg = 0; sg < 2; sg++) {
            arr[i] = keep + (sg ? -hs : hs);
            frozen_forward(&s, k, n, t, s.controls, s.x, out);
            l[sg] = 0;
            for (size_t e = 0; e < s.m; e++) l[sg] += s.w[e] * out[e];
          }
          d[half] = (l[0] - l[1]) / (2 * hs);
        }
        arr[i] = keep;
        double fd = (4 * d[1] - d[0]) / 3, e = fabs(fd - an[i]) / fmax(1, fabs(an[i]));
        worst = fmax(worst, e);
        if (!(e <= 1e-6))
          fail_msg("case %zu d/d%s[%zu]: finite difference %.12g, discrete %.12g", q,
                   which ? "controls" : "x", i, fd, an[i]);
      }
    }
    printf("maxerr case %zu %s discrete gradient vs frozen differences: %.3g (%d steps)\n", q,
           k->scheme, worst, n);
    dynb__tensor_release(&tw), dynb__tensor_release(&tdx);
    free(t), free(dx), free(dc), free(out);
    drop(&s);
  }
  dynb_ctx_free(ctx);
}

static void max_steps_is_an_error(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  setup s;
  make(ctx, DYNB_F32, &cases[1], 1e-6, 3, 9, &s);
  assert_int_equal(dynb__block_forward(s.b, &s.tx, &s.tout, true),
                   DYNB_STATUS_PARAM_OUT_OF_BOUND);
  const char *msg = dynb_ctx_last_error(ctx);
  if (!strstr(msg, "adaptive block (dopri5): max_steps (3) reached at t = "))
    fail_msg("message: %s", msg);
  drop(&s);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(forward_takes_the_reference_steps),
      cmocka_unit_test(forward_f32),
      cmocka_unit_test(discrete_gradient_matches_frozen_differences),
      cmocka_unit_test(max_steps_is_an_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
