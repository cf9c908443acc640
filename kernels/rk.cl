/* Runge–Kutta stage combinations. One pass over memory whatever the number
 * of stages: the fused RK4 update moves half the bytes of four axpys
 * (measured 2x faster on PoCL, see notes/clblast-on-pocl.md). */

/* out = y + sum_j coef[j] * k[j] (y taken as 0 unless has_y); k holds S
 * stages of n elements each. */
__kernel void dynb_rk_combine(const int n, const int S, DYNB_CTENSOR(y), const int has_y,
                              DYNB_CTENSOR(k),
                              DYNB_CTENSOR(coef), DYNB_TENSOR(out)) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  __global const real *k = DYNB_AT(k);
  __global const real *coef = DYNB_AT(coef);
  real acc = has_y ? DYNB_AT(y)[i] : (real)0;
  for (int j = 0; j < S; j++) {
    const real c = coef[j];
    if (c != 0) acc += c * k[(size_t)j * n + i];
  }
  DYNB_AT(out)[i] = acc;
}

/* dy (+)= dout; dk[j] (+)= coef[j] * dout. */
__kernel void dynb_rk_combine_backward(const int n, const int S, DYNB_CTENSOR(dout),
                                       DYNB_CTENSOR(coef), DYNB_TENSOR(dy), const int has_dy,
                                       const int acc_dy, DYNB_TENSOR(dk), const int acc_k) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  const real g = DYNB_AT(dout)[i];
  if (has_dy) {
    __global real *dy = DYNB_AT(dy);
    dy[i] = acc_dy ? dy[i] + g : g;
  }
  __global real *dk = DYNB_AT(dk);
  __global const real *coef = DYNB_AT(coef);
  for (int j = 0; j < S; j++) {
    const size_t at = (size_t)j * n + i;
    const real v = coef[j] * g;
    dk[at] = acc_k ? dk[at] + v : v;
  }
}
