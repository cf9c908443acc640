/* Runge–Kutta stage combinations. One pass over memory whatever the number
 * of stages: the fused RK4 update moves half the bytes of four axpys
 * (measured 2x faster on PoCL, see notes/clblast-on-pocl.md). */

/* Each work-item handles RK_CHUNK consecutive elements with explicit
 * vectors (the coefficient loop is uniform, so PoCL's vectoriser across
 * work-items did poorly with it: this was ~10% of a reference-network step
 * element by element); the last, partial chunk goes element by element. */
#define RK_CHUNK 16

/* out = y + sum_j coef[j] * k[j] (y taken as 0 unless has_y); k holds S
 * stages of n elements each. */
__kernel void dynb_rk_combine(const int n, const int S, DYNB_CTENSOR(y), const int has_y,
                              DYNB_CTENSOR(k),
                              DYNB_CTENSOR(coef), DYNB_TENSOR(out)) {
  const int i0 = (int)get_global_id(0) * RK_CHUNK;
  if (i0 >= n) return;
  __global const real *k = DYNB_AT(k);
  __global const real *coef = DYNB_AT(coef);
  if (i0 + RK_CHUNK <= n) {
    real16 acc = has_y ? vload16(0, DYNB_AT(y) + i0) : (real16)(0);
    for (int j = 0; j < S; j++) {
      const real c = coef[j];
      if (c != 0) acc += c * vload16(0, k + (size_t)j * n + i0);
    }
    vstore16(acc, 0, DYNB_AT(out) + i0);
    return;
  }
  for (int i = i0; i < n; i++) {
    real acc = has_y ? DYNB_AT(y)[i] : (real)0;
    for (int j = 0; j < S; j++) {
      const real c = coef[j];
      if (c != 0) acc += c * k[(size_t)j * n + i];
    }
    DYNB_AT(out)[i] = acc;
  }
}

/* dy (+)= dout; dk[j] (+)= coef[j] * dout. */
__kernel void dynb_rk_combine_backward(const int n, const int S, DYNB_CTENSOR(dout),
                                       DYNB_CTENSOR(coef), DYNB_TENSOR(dy), const int has_dy,
                                       const int acc_dy, DYNB_TENSOR(dk), const int acc_k) {
  const int i0 = (int)get_global_id(0) * RK_CHUNK;
  if (i0 >= n) return;
  __global real *dk = DYNB_AT(dk);
  __global const real *coef = DYNB_AT(coef);
  if (i0 + RK_CHUNK <= n) {
    const real16 g = vload16(0, DYNB_AT(dout) + i0);
    if (has_dy) {
      __global real *dy = DYNB_AT(dy) + i0;
      vstore16(acc_dy ? vload16(0, dy) + g : g, 0, dy);
    }
    for (int j = 0; j < S; j++) {
      __global real *at = dk + (size_t)j * n + i0;
      const real16 v = coef[j] * g;
      vstore16(acc_k ? vload16(0, at) + v : v, 0, at);
    }
    return;
  }
  for (int i = i0; i < n; i++) {
    const real g = DYNB_AT(dout)[i];
    if (has_dy) {
      __global real *dy = DYNB_AT(dy);
      dy[i] = acc_dy ? dy[i] + g : g;
    }
    for (int j = 0; j < S; j++) {
      const size_t at = (size_t)j * n + i;
      const real v = coef[j] * g;
      dk[at] = acc_k ? dk[at] + v : v;
    }
  }
}

/* out = a x + b y + c z over n elements (terms with has_* 0 left out).
 * The states of two-step schemes (leapfrog, verlet) are separate buffers,
 * so they cannot be the stacked stages rk_combine reads; out may alias any
 * input (each element reads its own index only). */
__kernel void dynb_lincomb(const int n, const real a, DYNB_CTENSOR(x), const real b,
                           DYNB_CTENSOR(y), const int has_y, const real c, DYNB_CTENSOR(z),
                           const int has_z, DYNB_TENSOR(out)) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  real v = a * DYNB_AT(x)[i];
  if (has_y) v += b * DYNB_AT(y)[i];
  if (has_z) v += c * DYNB_AT(z)[i];
  DYNB_AT(out)[i] = v;
}
