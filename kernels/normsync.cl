/* Batch norm in training split across the replicas of a data-parallel
 * group (src/ops/norm_sync.c): each replica reduces its own shard per
 * channel, the host merges the partial results over the replicas in a fixed
 * order, and an apply kernel uses the global statistics. Tensors are
 * [N][C][S] (S = H·W); one work-group per channel for the reductions, whose
 * sums are fixed trees (dynb_group_sum), so the results are deterministic. */

/* Where element m of channel ch lies (as chan_at in norm.cl). */
size_t sync_at(const int m, const int c, const int s, const int ch) {
  const int b = m / s;
  return ((size_t)b * c + ch) * s + (size_t)(m - b * s);
}

/* The shard's mean and its sum of squared deviations M2 = Σ(x - mean)²
 * per channel, two passes over x - shift (shift: the channel's first
 * element) as in dynb_bn_train_forward, so that data on a large offset
 * keep their low bits. The host merges (mean, M2, count) over replicas as
 * Chan et al.'s pairwise update, as PyTorch's SyncBatchNorm does. */
__kernel void dynb_bn_partial_stats(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                    DYNB_TENSOR(mean), DYNB_TENSOR(m2), __local real *scratch) {
  const int ch = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  const int m_all = n * s;
  __global const real *x = DYNB_AT(x);
  const real shift = x[(size_t)ch * s];
  real acc = 0;
  for (int m = lid; m < m_all; m += ls) acc += x[sync_at(m, c, s, ch)] - shift;
  const real dmean = dynb_group_sum(scratch, acc) / m_all;
  acc = 0;
  for (int m = lid; m < m_all; m += ls) {
    const real d = (x[sync_at(m, c, s, ch)] - shift) - dmean;
    acc += d * d;
  }
  const real sq = dynb_group_sum(scratch, acc);
  if (lid != 0) return;
  DYNB_AT(mean)[ch] = shift + dmean;
  DYNB_AT(m2)[ch] = sq;
}

/* y = σ((x - mean) · invstd · gamma + beta) with the global statistics:
 * elementwise, one work-item per element. */
__kernel void dynb_bn_apply_forward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                    DYNB_CTENSOR(gamma), DYNB_CTENSOR(beta),
                                    DYNB_CTENSOR(mean), DYNB_CTENSOR(invstd), DYNB_TENSOR(y),
                                    const int act, const real slope) {
  const int i = (int)get_global_id(0);
  if (i >= n * c * s) return;
  const int ch = (i / s) % c;
  const real scale = DYNB_AT(invstd)[ch] * DYNB_AT(gamma)[ch];
  const real v = (DYNB_AT(x)[i] - DYNB_AT(mean)[ch]) * scale + DYNB_AT(beta)[ch];
  DYNB_AT(y)[i] = act_value(act, v, slope);
}

/* The shard's Σdy and Σ dy·xhat per channel (xhat with the global
 * statistics), written to sums[ch] and sums[c + ch] for the merge, and
 * added to (or written into) dbeta and dgamma: they are this replica's
 * share of the parameter gradients, which the group sums over replicas
 * with every other gradient. */
__kernel void dynb_bn_partial_grad(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                   DYNB_CTENSOR(dy), DYNB_CTENSOR(mean), DYNB_CTENSOR(invstd),
                                   DYNB_TENSOR(sums), DYNB_TENSOR(dgamma), DYNB_TENSOR(dbeta),
                                   const int acc_params, __local real *scratch) {
  const int ch = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  const int m_all = n * s;
  __global const real *x = DYNB_AT(x);
  __global const real *dy = DYNB_AT(dy);
  const real mu = DYNB_AT(mean)[ch], inv = DYNB_AT(invstd)[ch];
  real sum_dy = 0, sum_dyx = 0;
  for (int m = lid; m < m_all; m += ls) {
    const size_t at = sync_at(m, c, s, ch);
    const real g = dy[at];
    sum_dy += g;
    sum_dyx += g * ((x[at] - mu) * inv);
  }
  sum_dy = dynb_group_sum(scratch, sum_dy);
  sum_dyx = dynb_group_sum(scratch, sum_dyx);
  if (lid != 0) return;
  DYNB_AT(sums)[ch] = sum_dy;
  DYNB_AT(sums)[c + ch] = sum_dyx;
  __global real *dg = DYNB_AT(dgamma), *db = DYNB_AT(dbeta);
  dg[ch] = acc_params ? dg[ch] + sum_dyx : sum_dyx;
  db[ch] = acc_params ? db[ch] + sum_dy : sum_dy;
}

/* dx = gamma invstd (dy - Σdy / M - xhat Σ(dy xhat) / M) with the sums
 * and the count M of the global batch (sums as the host merged them):
 * elementwise. */
__kernel void dynb_bn_apply_backward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                     DYNB_CTENSOR(dy), DYNB_CTENSOR(gamma), DYNB_CTENSOR(mean),
                                     DYNB_CTENSOR(invstd), DYNB_CTENSOR(sums), const real count,
                                     DYNB_TENSOR(dx), const int acc_dx) {
  const int i = (int)get_global_id(0);
  if (i >= n * c * s) return;
  const int ch = (i / s) % c;
  const real inv = DYNB_AT(invstd)[ch];
  const real a = DYNB_AT(sums)[ch] / count, bcoef = DYNB_AT(sums)[c + ch] / count;
  const real xhat = (DYNB_AT(x)[i] - DYNB_AT(mean)[ch]) * inv;
  const real v = DYNB_AT(gamma)[ch] * inv * (DYNB_AT(dy)[i] - a - xhat * bcoef);
  __global real *dx = DYNB_AT(dx);
  dx[i] = acc_dx ? dx[i] + v : v;
}
