/* Adaptive steps (SPEC §1.5), on the host: the controller's formulas by hand
 * values, its stepping (forced stops, rejections, max_steps, non-finite
 * errors), Hairer's first step, and the reference adaptive solver: its
 * error follows the tolerance on a linear ODE with a known solution (the
 * slope of log(error) against log(rtol) is printed), its evaluations are
 * counted, and an adaptive block at a tight tolerance agrees with a fine
 * fixed-step solve. No device needed. */
#include <math.h>

#include "testutil.h"
#include "model/model.h"

/* Every hand value below is one pow() and a product away from its formula:
 * a few roundings of 2^-53 relative, so 1e-15 relative bounds them. */
#define HAND_TOL 1e-15

static void close_to(double got, double want, const char *what) {
  if (!(fabs(got - want) <= HAND_TOL * fabs(want)))
    fail_msg("%s: got %.17g, want %.17g", what, got, want);
}

static void factor_follows_the_formula(void **state) {
  (void)state;
  /* r = 1 is accepted, 0.9 would shrink, so it stays 1. */
  close_to(dynb__ctrl_factor(1, 5, true), 1.0, "r=1 accepted");
  close_to(dynb__ctrl_factor(1, 5, false), 0.9, "r=1 as if rejected");
  close_to(dynb__ctrl_factor(0, 5, true), 10.0, "r=0");
  close_to(dynb__ctrl_factor(0.5, 5, true), 0.9 * pow(2.0, 0.2), "r=0.5, q=5");
  close_to(dynb__ctrl_factor(1e-10, 5, true), 10.0, "tiny r is capped at 10");
  close_to(dynb__ctrl_factor(4, 5, false), 0.9 * pow(0.25, 0.2), "r=4, q=5");
  close_to(dynb__ctrl_factor(1e6, 2, false), 0.2, "huge r is floored at 0.2");
  close_to(dynb__ctrl_factor(4, 3, false), 0.9 * pow(0.25, 1.0 / 3), "r=4, q=3");
}

/* RMS of err / (atol + rtol·max(|y0|, |y1|)), by hand; and partial sums add
 * up, which is what a reduction across devices or replicas relies on. */
static void error_ratio_is_rms_over_the_batch(void **state) {
  (void)state;
  const double err[3] = {0.1, -0.2, 0}, y0[3] = {1, -3, 5}, y1[3] = {2, 1, -7};
  /* tol = 0.05 + 0.1·{2, 3, 7} = {0.25, 0.35, 0.75} */
  double want = 0.4 * 0.4 + (0.2 / 0.35) * (0.2 / 0.35);
  double s = dynb__ctrl_sumsq(3, err, y0, y1, 0.1, 0.05);
  close_to(s, want, "sumsq");
  close_to(dynb__ctrl_ratio(s, 3), sqrt(want / 3), "ratio");
  double parts = dynb__ctrl_sumsq(1, err, y0, y1, 0.1, 0.05) +
                 dynb__ctrl_sumsq(2, err + 1, y0 + 1, y1 + 1, 0.1, 0.05);
  close_to(parts, s, "partial sums");
  assert_true(dynb__ctrl_ratio(0, 0) == 0);
}

static void stops_merge_states_and_interior_controls(void **state) {
  (void)state;
  double out[16];
  const double ts[3] = {0, 1, 2}, tc[5] = {-1, 0.5, 1, 1.5, 3};
  int n = dynb__ctrl_stops(3, ts, 5, tc, out);
  const double want[5] = {0, 0.5, 1, 1.5, 2};
  assert_int_equal(n, 5);
  for (int i = 0; i < n; i++) assert_true(out[i] == want[i]);
  n = dynb__ctrl_stops(3, ts, 3, ts, out); /* t_controls defaults to t_states */
  assert_int_equal(n, 3);
  const double one[1] = {7}; /* a single control point outside: no stop */
  n = dynb__ctrl_stops(2, ts, 1, one, out);
  assert_int_equal(n, 2);
  assert_true(out[0] == 0 && out[1] == 1);
}

/* Drives the controller with a given error ratio per attempt and checks
 * each proposed (t, h) against values worked out by hand. */
static void stepping_ends_on_every_stop(void **state) {
  (void)state;
  const double stops[3] = {0, 0.5, 1};
  dynb__ctrl c;
  char err[256];
  double t, h;
  bool ok;
  /* r = 0 always: each step grows tenfold until cut to a stop. */
  dynb__ctrl_start(&c, stops, 3, 5, 100, 0.01);
  const double want[4][2] = {{0, 0.01}, {0.01, 0.1}, {0.11, 0.39}, {0.5, 0.5}};
  for (int k = 0; k < 4; k++) {
    assert_false(dynb__ctrl_done(&c));
    assert_int_equal(dynb__ctrl_propose(&c, &t, &h, err, sizeof err), DYNB_OK);
    /* t accumulates 0.01 + 0.1 in double; h of the cut step is 0.5 - 0.11. */
    if (fabs(t - want[k][0]) > 1e-15 || fabs(h - want[k][1]) > 1e-15)
      fail_msg("step %d: (t, h) = (%.17g, %.17g), want (%g, %g)", k, t, h, want[k][0],
               want[k][1]);
    assert_int_equal(dynb__ctrl_judge(&c, 0, &ok, err, sizeof err), DYNB_OK);
    assert_true(ok);
    if (k == 2) assert_true(c.t == 0.5); /* exactly on the stop */
  }
  assert_true(dynb__ctrl_done(&c));
  assert_true(c.t == 1);
  assert_int_equal(c.accepted, 4);
  assert_int_equal(c.rejected, 0);

  /* A rejection shrinks by 0.9·r^(-1/q) and leaves t; an accepted r = 0.5
   * grows by 0.9·2^(1/5) ≈ 1.034; an accepted r = 0.99 does not shrink. */
  dynb__ctrl_start(&c, stops, 3, 5, 100, 0.2);
  dynb__ctrl_propose(&c, &t, &h, err, sizeof err);
  assert_int_equal(dynb__ctrl_judge(&c, 4, &ok, err, sizeof err), DYNB_OK);
  assert_false(ok);
  assert_true(c.t == 0 && c.rejected == 1);
  close_to(c.h, 0.2 * 0.9 * pow(0.25, 0.2), "h after rejection");
  double h1 = c.h;
  dynb__ctrl_propose(&c, &t, &h, err, sizeof err);
  assert_true(t == 0 && h == h1);
  dynb__ctrl_judge(&c, 0.5, &ok, err, sizeof err);
  assert_true(ok);
  close_to(c.h, h1 * 0.9 * pow(2.0, 0.2), "h after r=0.5");
  double h2 = c.h;
  dynb__ctrl_propose(&c, &t, &h, err, sizeof err);
  dynb__ctrl_judge(&c, 0.99, &ok, err, sizeof err);
  assert_true(ok && c.h == h2);
}

static void max_steps_and_non_finite_errors(void **state) {
  (void)state;
  const double stops[2] = {0, 1};
  dynb__ctrl c;
  char err[256] = "";
  double t, h;
  bool ok;
  dynb__ctrl_start(&c, stops, 2, 3, 5, 0.5);
  for (int k = 0; k < 5; k++) {
    assert_int_equal(dynb__ctrl_propose(&c, &t, &h, err, sizeof err), DYNB_OK);
    assert_int_equal(dynb__ctrl_judge(&c, 2, &ok, err, sizeof err), DYNB_OK);
    assert_false(ok);
  }
  assert_int_equal(dynb__ctrl_propose(&c, &t, &h, err, sizeof err),
                   DYNB_STATUS_PARAM_OUT_OF_BOUND);
  if (!strstr(err, "max_steps (5) reached at t = 0 before t = 1 (0 steps accepted, 5 rejected)"))
    fail_msg("message: %s", err);
  dynb__ctrl_start(&c, stops, 2, 3, 5, 0.5);
  dynb__ctrl_propose(&c, &t, &h, err, sizeof err);
  assert_int_equal(dynb__ctrl_judge(&c, NAN, &ok, err, sizeof err), DYNB_STATUS_NON_FINITE);
  assert_non_null(strstr(err, "error estimate is not finite"));
  dynb__ctrl_propose(&c, &t, &h, err, sizeof err);
  assert_int_equal(dynb__ctrl_judge(&c, INFINITY, &ok, err, sizeof err), DYNB_STATUS_NON_FINITE);
  /* A step that shrank to nothing is an error, not an endless loop. */
  dynb__ctrl_start(&c, stops, 2, 3, 100, 0);
  assert_int_equal(dynb__ctrl_propose(&c, &t, &h, err, sizeof err), DYNB_STATUS_NON_FINITE);
  assert_non_null(strstr(err, "step size underflow"));
}

/* Hairer's rule (Solving ODEs I, §II.4), by hand. */
static void first_step_is_hairers(void **state) {
  (void)state;
  close_to(dynb__ctrl_first_guess(1, 2), 0.005, "h0 = 0.01·d0/d1");
  close_to(dynb__ctrl_first_guess(1e-6, 2), 1e-6, "tiny d0");
  close_to(dynb__ctrl_first_guess(1, 1e-6), 1e-6, "tiny d1");
  /* h1 = (0.01 / max(d1, d2))^(1/q) = 0.0025^0.2 ≈ 0.3017 < 100·h0 = 0.5 */
  close_to(dynb__ctrl_first_step(0.005, 2, 4, 5, 10), pow(0.0025, 0.2), "h1");
  close_to(dynb__ctrl_first_step(0.001, 2, 4, 5, 10), 0.1, "capped at 100·h0");
  close_to(dynb__ctrl_first_step(0.005, 2, 4, 5, 0.25), 0.25, "capped at the span");
  close_to(dynb__ctrl_first_step(0.005, 0, 0, 5, 10), 5e-6, "flat f: max(1e-6, h0·1e-3)");
  close_to(dynb__ctrl_first_step(1e-4, 0, 0, 5, 10), 1e-6, "flat f, tiny h0");
}

/* ---- the reference solver ------------------------------------------------------- */

/* y' = A y, A = [[-0.5, 2], [-2, -0.5]] (a decaying rotation), y(0) = (1, 0):
 * y(t) = e^(-t/2) (cos 2t, -sin 2t). Counts its evaluations. */
typedef struct spiral {
  int calls;
} spiral;

static void spiral_f(void *user, double t, const double *y, double *f) {
  (void)t;
  ((spiral *)user)->calls++;
  f[0] = -0.5 * y[0] + 2 * y[1];
  f[1] = -2 * y[0] - 0.5 * y[1];
}

static double spiral_error(const dynb__tableau *tab, double rtol, ref_adaptive_stats *st) {
  const double y0[2] = {1, 0}, stops[3] = {0, 2.5, 5};
  double y[2];
  char err[256];
  spiral s = {0};
  if (ref_adaptive_solve(tab, spiral_f, &s, 2, y0, 3, stops, rtol, rtol * 1e-3, 4096, y, st, err,
                         sizeof err) != 0)
    fail_msg("%s rtol %g: %s", tab->name, rtol, err);
  /* Counted independently of the solver: 2 for the first step, s per attempt. */
  assert_int_equal(s.calls, st->nfe);
  assert_int_equal(st->nfe, 2 + tab->stages * (st->accepted + st->rejected));
  double e = exp(-2.5);
  return fmax(fabs(y[0] - e * cos(10.0)), fabs(y[1] + e * sin(10.0)));
}

/* Error per unit step controlled with local extrapolation (the pair
 * propagates its higher-order solution b): h ∝ tol^(1/q) from the order
 * q-1 estimate, local error ∝ h^(q+1) = tol^((q+1)/q), steps ∝ tol^(-1/q),
 * so the global error ∝ tol: slope 1 for every pair. The controller's
 * clamps, the forced stops and the integer number of steps bend the line;
 * ±0.25 around 1 admits that and still tells slope 1 from the slope q of
 * a fixed-step error or the slope (q+1)/q ≥ 1.2 of a solver that returned
 * its embedded solution. Errors are also at most 30·rtol: the proportionality
 * constant of per-step control on this problem (|y| <= 1, span 5). */
static void error_follows_the_tolerance(void **state) {
  (void)state;
  static const char *const names[] = {"dopri5", "bosh3", "heun_euler"};
  for (int k = 0; k < 3; k++) {
    dynb__tableau tab;
    assert_true(dynb__tableau_builtin(names[k], &tab));
    /* Steps grow as tol^(-1/q): bosh3 stops at rtol 1e-8 (~1900 steps),
     * heun_euler at 1e-5 (~3500), to stay fast. */
    int nt = k == 0 ? 7 : k == 1 ? 6 : 3;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < nt; i++) {
      double rtol = pow(10.0, -3 - i);
      ref_adaptive_stats st = {0};
      double e = spiral_error(&tab, rtol, &st);
      printf("maxerr %s rtol %.0e: error %.3e (%.2f rtol), %d accepted, %d rejected, nfe %d\n",
             names[k], rtol, e, e / rtol, st.accepted, st.rejected, st.nfe);
      if (!(e <= 30 * rtol)) fail_msg("%s: error %g at rtol %g", names[k], e, rtol);
      double x = log10(rtol), y = log10(e);
      sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    double slope = (nt * sxy - sx * sy) / (nt * sxx - sx * sx);
    printf("maxerr %s slope of log(error) vs log(rtol): %.3f\n", names[k], slope);
    if (fabs(slope - 1) > 0.25) fail_msg("%s: slope %.3f", names[k], slope);
  }
}

/* An adaptive block at rtol 1e-10 against the fixed-step reference with
 * 256 RK4 steps per stop interval on the same block: both approximate the
 * exact flow, dopri5 to ~rtol (previous test: error <= 30·rtol ≈ 3e-9), RK4
 * to C·h^4 with h = 1/256 (~1e-10 for a field of Lipschitz constant ~1), so
 * they agree to 1e-7 of max|y|; a wrong stage time, a missed stop or a
 * wrong interpolation weight moves the result by far more (O(h) = 1e-2 for
 * a misplaced control kink). Edge sizes: N = 1, C = 1, a 1×1 map, and an
 * odd 3×5 map with two channels; tanh, so f is smooth. */
static void adaptive_block_matches_fine_fixed_steps(void **state) {
  (void)state;
  static const struct {
    int n, c, h, w, kernel;
  } cases[] = {{1, 1, 1, 1, 1}, {2, 2, 3, 5, 3}};
  for (size_t q = 0; q < sizeof cases / sizeof *cases; q++) {
    dynb__layer l = {DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, DYNB_ACT_TANH, cases[q].c,
                     cases[q].kernel};
    size_t P;
    dynb__layer_params(&l, NULL, &P);
    const double ts[3] = {0, 0.7, 1.5}, tc[3] = {0, 0.4, 1.5};
    size_t m = (size_t)cases[q].n * (size_t)cases[q].c * (size_t)cases[q].h * (size_t)cases[q].w;
    double *controls = malloc(3 * P * sizeof *controls), *x = malloc(m * sizeof *x);
    double *got = malloc(m * sizeof *got), *want = malloc(m * sizeof *want);
    ref_rng r = ref_rng_seed(15 + q);
    /* Small weights keep the field's Lipschitz constant near 1 (‖KᵀK‖ of a
     * 3×3 kernel over 2 channels grows with the square of the entries), so
     * the fine RK4 grid resolves it and dopri5 needs few steps. */
    ref_fill(&r, controls, 3 * P, -0.3, 0.3);
    ref_fill(&r, x, m, -1, 1);
    dynb__tableau tab, rk4;
    assert_true(dynb__tableau_builtin("dopri5", &tab));
    assert_true(dynb__tableau_builtin("rk4", &rk4));
    char err[256];
    ref_adaptive_stats st = {0};
    double steps[1001];
    st.steps = steps;
    if (ref_block_adaptive_forward(&l, cases[q].n, cases[q].h, cases[q].w, &tab, 3, ts, 3, tc,
                                   controls, 1e-10, 1e-12, 1000, x, got, &st, err, sizeof err))
      fail_msg("%s", err);
    /* The accepted steps end on every stop: 0.4 (a control time), 0.7, 1.5. */
    const double must[3] = {0.4, 0.7, 1.5};
    for (int i = 0, k = 0; i < 3; i++) {
      while (k <= st.accepted && steps[k] != must[i]) k++;
      if (k > st.accepted) fail_msg("no step ends on %g", must[i]);
    }
    /* The fixed-step grid: 256 steps in each interval between stops. */
    const double stops[4] = {0, 0.4, 0.7, 1.5};
    double grid[3 * 256 + 1];
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 256; j++)
        grid[i * 256 + j] = stops[i] + (stops[i + 1] - stops[i]) * j / 256.0;
    grid[3 * 256] = 1.5;
    double a[16];
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 4; j++) a[i * 4 + j] = rk4.a[i][j];
    ref_block_forward(&l, cases[q].n, cases[q].h, cases[q].w, 4, rk4.c, a, rk4.b, 3 * 256 + 1,
                      grid, 3, tc, controls, x, 1, NULL, want);
    double scale = 0;
    for (size_t e = 0; e < m; e++) scale = fmax(scale, fabs(want[e]));
    double d = ref_max_scaled_err(got, want, NULL, m, NULL) / scale;
    printf("maxerr block %zu: dopri5 rtol 1e-10 vs rk4 h=1/256: %.3e (%d accepted, %d "
           "rejected, nfe %d)\n",
           q, d, st.accepted, st.rejected, st.nfe);
    if (!(d <= 1e-7)) fail_msg("case %zu: differs by %g", q, d);
    free(controls), free(x), free(got), free(want);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(factor_follows_the_formula),
      cmocka_unit_test(error_ratio_is_rms_over_the_batch),
      cmocka_unit_test(stops_merge_states_and_interior_controls),
      cmocka_unit_test(stepping_ends_on_every_stop),
      cmocka_unit_test(max_steps_and_non_finite_errors),
      cmocka_unit_test(first_step_is_hairers),
      cmocka_unit_test(error_follows_the_tolerance),
      cmocka_unit_test(adaptive_block_matches_fine_fixed_steps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
