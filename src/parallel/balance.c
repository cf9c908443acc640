/* The load balancer of `--split auto`: see balance.h. */
#include "parallel/balance.h"

#include <math.h>
#include <stdlib.h>

dynb__balance_opts dynb__balance_defaults(void) {
  return (dynb__balance_opts){.damping = 0.75, .hysteresis = 0.05, .resplit_seconds = 0.0,
                              .steps_left = 1};
}

/* Rounds want[0..n) (Σ = batch, each ≥ 1 before rounding) to integers with
 * Σ = batch and each ≥ 1: floors, then hands the missing samples to the
 * largest remainders (ties to the lower index, so that every replica
 * rounds alike). */
static void round_split(int n, int64_t batch, const double *want, int64_t *out) {
  int64_t sum = 0;
  for (int r = 0; r < n; r++) {
    double w = want[r] < 1.0 ? 1.0 : want[r];
    out[r] = (int64_t)floor(w);
    sum += out[r];
  }
  while (sum < batch) {
    int best = 0;
    double bestrem = -1.0;
    for (int r = 0; r < n; r++) {
      double rem = want[r] - (double)out[r];
      if (rem > bestrem) bestrem = rem, best = r;
    }
    out[best]++, sum++;
  }
  while (sum > batch) { /* only when clamping to 1 added samples */
    int best = -1;
    double bestrem = 0.0;
    for (int r = 0; r < n; r++) {
      double rem = want[r] - (double)out[r];
      if (out[r] > 1 && (best < 0 || rem < bestrem)) bestrem = rem, best = r;
    }
    out[best]--, sum--;
  }
}

/* Rounding to the nearest integers need not minimise the slowest
 * replica's time when shards are small (one sample is a large part of a
 * shard of 4): move single samples from the slowest replica to the one
 * that would be fastest with one more, while that lowers the maximum. */
static void minmax_refine(int n, const double *rate, int64_t *s) {
  for (;;) {
    int slow = 0, fast = -1;
    for (int r = 1; r < n; r++)
      if ((double)s[r] / rate[r] > (double)s[slow] / rate[slow]) slow = r;
    for (int r = 0; r < n; r++)
      if (r != slow && (fast < 0 || (double)(s[r] + 1) / rate[r] < (double)(s[fast] + 1) / rate[fast]))
        fast = r;
    double top = (double)s[slow] / rate[slow];
    if (s[slow] <= 1 || (double)(s[fast] + 1) / rate[fast] >= top) return;
    s[slow]--, s[fast]++;
  }
}

bool dynb__balance_propose(int replicas, int64_t batch, const int64_t *shard, const double *busy,
                           const dynb__balance_opts *opts, int64_t *out) {
  for (int r = 0; r < replicas; r++) out[r] = shard[r];
  if (replicas < 2 || batch < replicas) return false;
  double *rate = malloc(2 * (size_t)replicas * sizeof *rate);
  if (!rate) return false;
  double *want = rate + replicas;
  double rsum = 0.0, now = 0.0;
  bool ok = true;
  for (int r = 0; r < replicas; r++) {
    if (!(busy[r] > 0.0) || !isfinite(busy[r]) || shard[r] < 1) ok = false;
    rate[r] = (double)shard[r] / busy[r]; /* samples per second at this shard */
    rsum += rate[r];
    if (busy[r] > now) now = busy[r];
  }
  bool resplit = false;
  if (ok) {
    /* Equal busy time t for all: shard_r = rate_r t with Σ = batch. The
     * rules judge the full move (damping must not hide a gain worth taking
     * behind the hysteresis); the move made is damped, but at least the
     * full move where damping rounds to no change. */
    int64_t *ideal = malloc((size_t)replicas * sizeof *ideal);
    if (!ideal) {
      free(rate);
      return false;
    }
    for (int r = 0; r < replicas; r++) want[r] = (double)batch * rate[r] / rsum;
    round_split(replicas, batch, want, ideal);
    minmax_refine(replicas, rate, ideal);
    /* The step waits for the slowest replica: predict it at the new split
     * with the rates measured at the current one. */
    double next = 0.0;
    bool same = true;
    for (int r = 0; r < replicas; r++) {
      next = fmax(next, (double)ideal[r] / rate[r]);
      if (ideal[r] != shard[r]) same = false;
    }
    double gain = now - next;
    resplit = !same && gain > opts->hysteresis * now &&
              gain * (double)opts->steps_left > opts->resplit_seconds;
    if (resplit) {
      for (int r = 0; r < replicas; r++)
        want[r] = (double)shard[r] + opts->damping * (want[r] - (double)shard[r]);
      round_split(replicas, batch, want, out);
      bool moved = false;
      for (int r = 0; r < replicas; r++) moved |= out[r] != shard[r];
      if (!moved)
        for (int r = 0; r < replicas; r++) out[r] = ideal[r];
    }
    free(ideal);
  }
  free(rate);
  if (!resplit)
    for (int r = 0; r < replicas; r++) out[r] = shard[r];
  return resplit;
}
