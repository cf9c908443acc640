/* The balancer of `--split auto` (src/parallel/balance.c), a pure function:
 * on synthetic throughput curves that are not linear in the shard size it
 * converges near the best integer split (found here by brute force), keeps
 * Σ = batch and every shard ≥ 1, stops moving once converged (no
 * oscillation), ignores changes below its hysteresis and re-splits only
 * when the gain pays for the re-split. No device needed. */
#include <math.h>

#include "testutil.h"
#include "parallel/balance.h"

typedef double (*curve)(int64_t n);

/* A fast device whose throughput grows with the shard (fixed launch cost,
 * sublinear compute) and a slow one that degrades (superlinear: caches). */
static double fast_dev(int64_t n) { return 0.002 + 0.001 * pow((double)n, 0.8); }
static double slow_dev(int64_t n) { return 0.010 + 0.004 * (double)n + 5e-5 * (double)n * (double)n; }
static double mid_dev(int64_t n) { return 0.004 + 0.002 * (double)n; }
static double crawl_dev(int64_t n) { return 1.0 + 1.0 * (double)n; } /* 1000x slower */

static double step_time(int n, const curve *f, const int64_t *s) {
  double t = 0.0;
  for (int r = 0; r < n; r++) t = fmax(t, f[r](s[r]));
  return t;
}

static void check_split(int n, int64_t batch, const int64_t *s) {
  int64_t sum = 0;
  for (int r = 0; r < n; r++) {
    assert_true(s[r] >= 1);
    sum += s[r];
  }
  assert_int_equal(sum, batch);
}

/* Runs the balancer `iters` times with exact measurements from equal
 * shards; returns how many calls re-split and leaves the split in s. */
static int iterate(int n, int64_t batch, const curve *f, int iters, int64_t *s) {
  dynb__balance_opts o = dynb__balance_defaults();
  for (int r = 0; r < n; r++) s[r] = batch / n + (r < batch % n);
  int moves = 0;
  for (int i = 0; i < iters; i++) {
    double busy[4];
    int64_t next[4];
    for (int r = 0; r < n; r++) busy[r] = f[r](s[r]);
    bool moved = dynb__balance_propose(n, batch, s, busy, &o, next);
    check_split(n, batch, next);
    if (moved) moves++;
    else for (int r = 0; r < n; r++) assert_int_equal(next[r], s[r]);
    for (int r = 0; r < n; r++) s[r] = next[r];
  }
  return moves;
}

static void two_nonlinear_devices_converge(void **state) {
  (void)state;
  const curve f[2] = {fast_dev, slow_dev};
  const int64_t batch = 64;
  double best = INFINITY;
  for (int64_t a = 1; a < batch; a++) {
    int64_t s[2] = {a, batch - a};
    best = fmin(best, step_time(2, f, s));
  }
  int64_t s[2];
  int moves = iterate(2, batch, f, 40, s);
  double got = step_time(2, f, s);
  int64_t eq[2] = {32, 32};
  print_message("shards %lld;%lld step %.4f s, best %.4f s, equal %.4f s, %d re-splits\n",
                (long long)s[0], (long long)s[1], got, best, step_time(2, f, eq), moves);
  /* The balancer stops once a re-split predicts less than the 5 %
   * hysteresis, and its prediction is linear in the shard where the curves
   * are not: allow one hysteresis band for each, 2 x 5 %. */
  assert_true(got <= best * 1.10);
  /* Damped steps converge geometrically: a handful of re-splits, then none
   * (the last 30 calls above would count if it kept moving). */
  assert_true(moves >= 1 && moves <= 10);
}

static void three_devices_converge(void **state) {
  (void)state;
  const curve f[3] = {fast_dev, mid_dev, slow_dev};
  const int64_t batch = 61; /* odd, not a multiple of 3 */
  double best = INFINITY;
  for (int64_t a = 1; a < batch - 1; a++)
    for (int64_t b = 1; a + b < batch; b++) {
      int64_t s[3] = {a, b, batch - a - b};
      best = fmin(best, step_time(3, f, s));
    }
  int64_t s[3];
  int moves = iterate(3, batch, f, 40, s);
  double got = step_time(3, f, s);
  print_message("shards %lld;%lld;%lld step %.4f s, best %.4f s\n", (long long)s[0],
                (long long)s[1], (long long)s[2], got, best);
  /* As above: hysteresis band + linearisation error, 2 x 5 %. */
  assert_true(got <= best * 1.10);
  assert_true(moves <= 10);
}

/* A device 1000x slower keeps one sample, never zero. */
static void every_shard_keeps_one(void **state) {
  (void)state;
  const curve f[2] = {fast_dev, crawl_dev};
  int64_t s[2];
  iterate(2, 16, f, 20, s);
  assert_int_equal(s[1], 1);
  assert_int_equal(s[0], 15);
  /* batch == replicas: nothing to move. */
  const int64_t one[2] = {1, 1};
  const double busy[2] = {0.1, 100.0};
  int64_t out[2];
  dynb__balance_opts o = dynb__balance_defaults();
  assert_false(dynb__balance_propose(2, 2, one, busy, &o, out));
  assert_int_equal(out[0], 1);
  assert_int_equal(out[1], 1);
}

/* Equal devices measured with noise below the hysteresis: no re-split. */
static void noise_below_hysteresis_changes_nothing(void **state) {
  (void)state;
  dynb__balance_opts o = dynb__balance_defaults();
  const int64_t s[2] = {32, 32};
  int64_t out[2];
  const double noisy[][2] = {{0.100, 0.103}, {0.103, 0.100}, {0.098, 0.101}};
  for (int i = 0; i < 3; i++) {
    assert_false(dynb__balance_propose(2, 64, s, noisy[i], &o, out));
    assert_int_equal(out[0], 32);
    assert_int_equal(out[1], 32);
  }
  /* 20 % apart is well above it. */
  const double apart[2] = {0.100, 0.120};
  assert_true(dynb__balance_propose(2, 64, s, apart, &o, out));
  assert_true(out[0] > 32 && out[0] + out[1] == 64);
}

/* A re-split must pay for itself over the steps left. */
static void resplit_must_pay(void **state) {
  (void)state;
  dynb__balance_opts o = dynb__balance_defaults();
  const int64_t s[2] = {32, 32};
  const double busy[2] = {0.1, 0.3};
  int64_t out[2];
  o.resplit_seconds = 5.0;
  o.steps_left = 10; /* gain < 0.2 s/step x 10 < 5 s */
  assert_false(dynb__balance_propose(2, 64, s, busy, &o, out));
  assert_int_equal(out[0], 32);
  o.steps_left = 1000;
  assert_true(dynb__balance_propose(2, 64, s, busy, &o, out));
  assert_true(out[0] > 32);
}

/* Bad measurements leave the split as it is. */
static void bad_measurements_change_nothing(void **state) {
  (void)state;
  dynb__balance_opts o = dynb__balance_defaults();
  const int64_t s[2] = {40, 24};
  int64_t out[2];
  const double bad[][2] = {{0.0, 0.1}, {-1.0, 0.1}, {NAN, 0.1}, {INFINITY, 0.1}};
  for (int i = 0; i < 4; i++) {
    assert_false(dynb__balance_propose(2, 64, s, bad[i], &o, out));
    assert_int_equal(out[0], 40);
    assert_int_equal(out[1], 24);
  }
  /* One replica: a no-op. */
  const int64_t all[1] = {64};
  const double b1[1] = {0.5};
  int64_t o1[1];
  assert_false(dynb__balance_propose(1, 64, all, b1, &o, o1));
  assert_int_equal(o1[0], 64);
}

/* Converged, then measured with ±2 % noise (a fixed pseudo-random
 * sequence), well inside the 5 % hysteresis: the split must not move back
 * and forth. */
static void converged_split_ignores_noise(void **state) {
  (void)state;
  const curve f[2] = {fast_dev, slow_dev};
  int64_t s[2];
  iterate(2, 64, f, 40, s);
  const int64_t at[2] = {s[0], s[1]};
  dynb__balance_opts o = dynb__balance_defaults();
  uint32_t lcg = 12345u;
  for (int i = 0; i < 200; i++) {
    double busy[2];
    for (int r = 0; r < 2; r++) {
      lcg = lcg * 1664525u + 1013904223u;
      busy[r] = f[r](s[r]) * (0.98 + 0.04 * (double)(lcg >> 8) / 16777216.0);
    }
    int64_t next[2];
    assert_false(dynb__balance_propose(2, 64, s, busy, &o, next));
    assert_int_equal(next[0], at[0]);
    assert_int_equal(next[1], at[1]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(two_nonlinear_devices_converge),
      cmocka_unit_test(three_devices_converge),
      cmocka_unit_test(every_shard_keeps_one),
      cmocka_unit_test(noise_below_hysteresis_changes_nothing),
      cmocka_unit_test(resplit_must_pay),
      cmocka_unit_test(bad_measurements_change_nothing),
      cmocka_unit_test(converged_split_ignores_noise),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
