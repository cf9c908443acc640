/* Normalisations over tensors laid out [N][C][S] (S = H·W): the TV norm
 * works per pixel across channels, batch norm per channel across (N, S).
 * Batch-norm statistics come from one work-group per channel, so every sum
 * is a fixed tree (dynb_group_sum) and the results are deterministic. */

/* Where element m of channel ch lies, counting the channel's M = N·S
 * elements in memory order. Counting over (n, s) jointly keeps every
 * work-item busy even when S is smaller than the work-group (1×1 maps). */
size_t chan_at(const int m, const int c, const int s, const int ch) {
  const int b = m / s;
  return ((size_t)b * c + ch) * s + (size_t)(m - b * s);
}

/* ---- TV norm --------------------------------------------------------------
 * One work-item per pixel (n, p); it loops over the C channels of its pixel,
 * so neighbouring work-items read neighbouring addresses. */

/* y_c = σ(x_c / sqrt(Σ_c' x_c'² + eps) + beta_c): every forward norm applies
 * an activation (act, slope as in act.cl; DYNB_ACT_IDENTITY for none), which
 * saves σ's own pass over memory. */
__kernel void dynb_tv_forward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                              DYNB_CTENSOR(beta), DYNB_TENSOR(y), const real eps, const int act,
                              const real slope) {
  const int i = (int)get_global_id(0);
  if (i >= n * s) return;
  const int b = i / s;
  const size_t base = (size_t)b * c * s + (size_t)(i - b * s);
  __global const real *x = DYNB_AT(x) + base;
  __global const real *beta = DYNB_AT(beta);
  __global real *y = DYNB_AT(y) + base;
  real ss = 0;
  for (int k = 0; k < c; k++) {
    const real v = x[(size_t)k * s];
    ss += v * v;
  }
  const real inv = 1 / sqrt(ss + eps);
  for (int k = 0; k < c; k++)
    y[(size_t)k * s] = act_value(act, x[(size_t)k * s] * inv + beta[k], slope);
}

/* With r = sqrt(Σ x² + eps), ∂y_c/∂x_k = δ_ck / r - x_c x_k / r³, hence
 * dx_k = dy_k / r - x_k (Σ_c dy_c x_c) / r³. */
__kernel void dynb_tv_backward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                               DYNB_CTENSOR(dy), DYNB_TENSOR(dx), const real eps,
                               const int acc) {
  const int i = (int)get_global_id(0);
  if (i >= n * s) return;
  const int b = i / s;
  const size_t base = (size_t)b * c * s + (size_t)(i - b * s);
  __global const real *x = DYNB_AT(x) + base;
  __global const real *dy = DYNB_AT(dy) + base;
  __global real *dx = DYNB_AT(dx) + base;
  real ss = 0, dot = 0;
  for (int k = 0; k < c; k++) {
    const real v = x[(size_t)k * s];
    ss += v * v;
    dot += dy[(size_t)k * s] * v;
  }
  const real inv = 1 / sqrt(ss + eps);
  const real coef = dot * inv * inv * inv;
  for (int k = 0; k < c; k++) {
    const size_t at = (size_t)k * s;
    const real v = dy[at] * inv - x[at] * coef;
    dx[at] = acc ? dx[at] + v : v;
  }
}

/* ---- Batch norm, training ------------------------------------------------
 * One work-group per channel. */

/* Mean and biased variance in two passes (the variance from Σ(x - mean)²,
 * not from E[x²] - mean², which cancels catastrophically in float when the
 * data sit on a large offset). The sums run over x - shift, with shift the
 * channel's first element: x - shift is exact for values within a factor
 * of two of each other, so the mean keeps its low bits even for data like
 * 1000 ± 1. Then y, the saved statistics and the running averages (with
 * the unbiased variance, as PyTorch). */
__kernel void dynb_bn_train_forward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                    DYNB_CTENSOR(gamma), DYNB_CTENSOR(beta), DYNB_TENSOR(y),
                                    DYNB_TENSOR(save_mean), DYNB_TENSOR(save_invstd),
                                    DYNB_TENSOR(running_mean), DYNB_TENSOR(running_var),
                                    const int update, const real momentum, const real eps,
                                    const int act, const real slope, __local real *scratch) {
  const int ch = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  const int m_all = n * s;
  __global const real *x = DYNB_AT(x);
  __global real *y = DYNB_AT(y);
  const real shift = x[(size_t)ch * s];
  real acc = 0;
  for (int m = lid; m < m_all; m += ls) acc += x[chan_at(m, c, s, ch)] - shift;
  const real dmean = dynb_group_sum(scratch, acc) / m_all;
  acc = 0;
  for (int m = lid; m < m_all; m += ls) {
    const real d = (x[chan_at(m, c, s, ch)] - shift) - dmean;
    acc += d * d;
  }
  const real var = dynb_group_sum(scratch, acc) / m_all;
  const real invstd = 1 / sqrt(var + eps);
  const real scale = invstd * DYNB_AT(gamma)[ch], bias = DYNB_AT(beta)[ch];
  for (int m = lid; m < m_all; m += ls) {
    const size_t at = chan_at(m, c, s, ch);
    y[at] = act_value(act, ((x[at] - shift) - dmean) * scale + bias, slope);
  }
  if (lid != 0) return;
  const real mean = shift + dmean;
  DYNB_AT(save_mean)[ch] = mean;
  DYNB_AT(save_invstd)[ch] = invstd;
  if (update) {
    __global real *rm = DYNB_AT(running_mean), *rv = DYNB_AT(running_var);
    const real unbiased = var * (real)m_all / (real)(m_all - 1);
    rm[ch] = (1 - momentum) * rm[ch] + momentum * mean;
    rv[ch] = (1 - momentum) * rv[ch] + momentum * unbiased;
  }
}

/* With xhat = (x - mean) invstd, the batch statistics' own dependence on x
 * gives dx = gamma invstd (dy - Σdy / M - xhat Σ(dy xhat) / M). Two passes:
 * both sums at once, then dx; the sums are also dbeta and dgamma. */
__kernel void dynb_bn_train_backward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                     DYNB_CTENSOR(dy), DYNB_CTENSOR(gamma),
                                     DYNB_CTENSOR(save_mean), DYNB_CTENSOR(save_invstd),
                                     DYNB_TENSOR(dx), DYNB_TENSOR(dgamma), DYNB_TENSOR(dbeta),
                                     const int acc_dx, const int acc_params,
                                     __local real *scratch) {
  const int ch = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  const int m_all = n * s;
  __global const real *x = DYNB_AT(x);
  __global const real *dy = DYNB_AT(dy);
  __global real *dx = DYNB_AT(dx);
  const real mean = DYNB_AT(save_mean)[ch], invstd = DYNB_AT(save_invstd)[ch];
  real sum_dy = 0, sum_dyx = 0;
  for (int m = lid; m < m_all; m += ls) {
    const size_t at = chan_at(m, c, s, ch);
    const real g = dy[at];
    sum_dy += g;
    sum_dyx += g * ((x[at] - mean) * invstd);
  }
  sum_dy = dynb_group_sum(scratch, sum_dy);
  sum_dyx = dynb_group_sum(scratch, sum_dyx);
  const real k = DYNB_AT(gamma)[ch] * invstd;
  const real a = sum_dy / m_all, bcoef = sum_dyx / m_all;
  for (int m = lid; m < m_all; m += ls) {
    const size_t at = chan_at(m, c, s, ch);
    const real xhat = (x[at] - mean) * invstd;
    const real v = k * (dy[at] - a - xhat * bcoef);
    dx[at] = acc_dx ? dx[at] + v : v;
  }
  if (lid != 0) return;
  __global real *dg = DYNB_AT(dgamma), *db = DYNB_AT(dbeta);
  dg[ch] = acc_params ? dg[ch] + sum_dyx : sum_dyx;
  db[ch] = acc_params ? db[ch] + sum_dy : sum_dy;
}

/* ---- Batch norm, evaluation ---------------------------------------------- */

/* y = (x - rm) gamma / sqrt(rv + eps) + beta: elementwise. */
__kernel void dynb_bn_eval_forward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                   DYNB_CTENSOR(gamma), DYNB_CTENSOR(beta),
                                   DYNB_CTENSOR(running_mean), DYNB_CTENSOR(running_var),
                                   DYNB_TENSOR(y), const real eps, const int act,
                                   const real slope) {
  const int i = (int)get_global_id(0);
  if (i >= n * c * s) return;
  const int ch = (i / s) % c;
  const real scale = DYNB_AT(gamma)[ch] / sqrt(DYNB_AT(running_var)[ch] + eps);
  const real v = (DYNB_AT(x)[i] - DYNB_AT(running_mean)[ch]) * scale + DYNB_AT(beta)[ch];
  DYNB_AT(y)[i] = act_value(act, v, slope);
}

/* One pass over memory, one work-group per channel: each element's dx is
 * written as its dy is read for the dgamma and dbeta sums. */
__kernel void dynb_bn_eval_backward(const int n, const int c, const int s, DYNB_CTENSOR(x),
                                    DYNB_CTENSOR(dy), DYNB_CTENSOR(gamma),
                                    DYNB_CTENSOR(running_mean), DYNB_CTENSOR(running_var),
                                    DYNB_TENSOR(dx), DYNB_TENSOR(dgamma), DYNB_TENSOR(dbeta),
                                    const real eps, const int acc_dx, const int acc_params,
                                    __local real *scratch) {
  const int ch = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  const int m_all = n * s;
  __global const real *x = DYNB_AT(x);
  __global const real *dy = DYNB_AT(dy);
  __global real *dx = DYNB_AT(dx);
  const real mean = DYNB_AT(running_mean)[ch];
  const real inv = 1 / sqrt(DYNB_AT(running_var)[ch] + eps);
  const real k = DYNB_AT(gamma)[ch] * inv;
  real sum_dy = 0, sum_dyx = 0;
  for (int m = lid; m < m_all; m += ls) {
    const size_t at = chan_at(m, c, s, ch);
    const real g = dy[at];
    sum_dy += g;
    sum_dyx += g * (x[at] - mean);
    dx[at] = acc_dx ? dx[at] + g * k : g * k;
  }
  sum_dy = dynb_group_sum(scratch, sum_dy);
  sum_dyx = dynb_group_sum(scratch, sum_dyx) * inv;
  if (lid != 0) return;
  __global real *dg = DYNB_AT(dgamma), *db = DYNB_AT(dbeta);
  dg[ch] = acc_params ? dg[ch] + sum_dyx : sum_dyx;
  db[ch] = acc_params ? db[ch] + sum_dy : sum_dy;
}
