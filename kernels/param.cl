/* Kernels over parameter sets: control-point interpolation, optimiser
 * steps, box clipping and the time regulariser. Every elementwise kernel is
 * 1-D and reads and writes each element once. Scalars that depend only on
 * hyper-parameters (1 - w, bias corrections) come from the host, computed
 * in double, so that float builds do not round intermediate powers. */

/* out = wa * a + wb * b; b (the next control) is not read when !has_b, so
 * j0 may be the last control point when its weight is zero. */
__kernel void dynb_interp_forward(const int n, DYNB_CTENSOR(a), DYNB_CTENSOR(b), const real wa,
                                  const real wb, const int has_b, DYNB_TENSOR(out)) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  real v = DYNB_AT(a)[i];
  if (has_b) v = wa * v + wb * DYNB_AT(b)[i];
  DYNB_AT(out)[i] = v;
}

/* da += wa * dout; db += wb * dout unless !has_b. */
__kernel void dynb_interp_backward(const int n, DYNB_CTENSOR(dout), DYNB_TENSOR(da),
                                   DYNB_TENSOR(db), const real wa, const real wb,
                                   const int has_b) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  const real g = DYNB_AT(dout)[i];
  DYNB_AT(da)[i] += wa * g;
  if (has_b) DYNB_AT(db)[i] += wb * g;
}

/* PyTorch's SGD: g = grad + wd θ; v = momentum v + g;
 * θ -= lr (nesterov ? g + momentum v : v). Without momentum v is not read. */
__kernel void dynb_sgd_step(const int n, DYNB_TENSOR(param), DYNB_CTENSOR(grad), DYNB_TENSOR(vel),
                            const real lr, const real momentum, const real wd,
                            const int use_vel, const int nesterov) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  __global real *param = DYNB_AT(param);
  const real p = param[i];
  real g = DYNB_AT(grad)[i];
  if (wd != 0) g += wd * p; /* skipped at 0, as PyTorch, so an inf θ stays out of g */
  if (use_vel) {
    __global real *vel = DYNB_AT(vel);
    const real v = momentum * vel[i] + g;
    vel[i] = v;
    g = nesterov ? g + momentum * v : v;
  }
  param[i] = p - lr * g;
}

/* PyTorch's Adam (single-tensor form): m = β1 m + (1-β1) g,
 * v = β2 v + (1-β2) g², θ -= step_size · m / (sqrt(v) / bc2_sqrt + eps)
 * with step_size = lr / (1 - β1^t) and bc2_sqrt = sqrt(1 - β2^t). */
__kernel void dynb_adam_step(const int n, DYNB_TENSOR(param), DYNB_CTENSOR(grad), DYNB_TENSOR(m),
                             DYNB_TENSOR(v), const real beta1, const real one_minus_beta1,
                             const real beta2, const real one_minus_beta2, const real step_size,
                             const real bc2_sqrt, const real eps, const real wd) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  __global real *param = DYNB_AT(param);
  __global real *mm = DYNB_AT(m);
  __global real *vv = DYNB_AT(v);
  const real p = param[i];
  real g = DYNB_AT(grad)[i];
  if (wd != 0) g += wd * p;
  const real mi = beta1 * mm[i] + one_minus_beta1 * g;
  const real vi = beta2 * vv[i] + one_minus_beta2 * g * g;
  mm[i] = mi;
  vv[i] = vi;
  param[i] = p - step_size * mi / (sqrt(vi) / bc2_sqrt + eps);
}

/* θ = min(max(θ, lo), hi), written with comparisons so that a NaN stays NaN
 * (as torch.clamp) instead of becoming a bound. */
__kernel void dynb_clip(const int n, DYNB_TENSOR(param), const real lo, const real hi) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  __global real *param = DYNB_AT(param);
  const real x = param[i];
  param[i] = x < lo ? lo : x > hi ? hi : x;
}

/* First pass of R = alpha Σ_j h[j] Σ_p |c[j+1][p] - c[j][p]|: work-group g
 * handles columns p = g*L + lid + k*G*L over all j (consecutive work-items
 * read consecutive p, one pass over the controls) and writes its share,
 * times alpha, to partial[g]. */
__kernel void dynb_timereg_partial(const int J, const int P, DYNB_CTENSOR(c), DYNB_CTENSOR(h),
                                   const real alpha, DYNB_TENSOR(partial),
                                   __local real *scratch) {
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  const int g = (int)get_group_id(0), ng = (int)get_num_groups(0);
  __global const real *c = DYNB_AT(c);
  __global const real *h = DYNB_AT(h);
  real v = 0;
  for (int p = g * ls + lid; p < P; p += ng * ls) {
    real prev = c[p];
    for (int j = 0; j + 1 < J; j++) {
      const real next = c[(size_t)(j + 1) * P + p];
      v += h[j] * fabs(next - prev);
      prev = next;
    }
  }
  v = dynb_group_sum(scratch, v);
  if (lid == 0) DYNB_AT(partial)[g] = alpha * v;
}

real dynb_sign(const real d) { return (real)((d > 0) - (d < 0)); }

/* dc[j][p] += alpha (h[j-1] sign(c[j] - c[j-1]) - h[j] sign(c[j+1] - c[j])),
 * the terms that exist at the ends; sign(0) = 0. */
__kernel void dynb_timereg_backward(const int J, const int P, DYNB_CTENSOR(c), DYNB_CTENSOR(h),
                                    const real alpha, DYNB_TENSOR(dc)) {
  const int i = (int)get_global_id(0);
  if (i >= J * P) return;
  const int j = i / P;
  __global const real *c = DYNB_AT(c);
  __global const real *h = DYNB_AT(h);
  const real x = c[i];
  real g = 0;
  if (j > 0) g += h[j - 1] * dynb_sign(x - c[i - P]);
  if (j + 1 < J) g -= h[j] * dynb_sign(c[i + P] - x);
  DYNB_AT(dc)[i] += alpha * g;
}
