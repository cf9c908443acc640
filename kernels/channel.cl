/* Per-channel and whole-tensor helpers over tensors laid out [N][C][S]. */

__kernel void dynb_bias_add(const int n, const int c, const int s, DYNB_TENSOR(y),
                            DYNB_CTENSOR(b)) {
  const int i = (int)get_global_id(0);
  if (i >= n * c * s) return;
  DYNB_AT(y)[i] += DYNB_AT(b)[(i / s) % c];
}

/* One work-group per channel; each work-item strides over (n, s). */
__kernel void dynb_channel_sum(const int n, const int c, const int s, DYNB_CTENSOR(x),
                               DYNB_TENSOR(out), const int acc, __local real *scratch) {
  const int ch = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  __global const real *x = DYNB_AT(x);
  real v = 0;
  for (int b = 0; b < n; b++) {
    __global const real *row = x + ((size_t)b * c + ch) * s;
    for (int j = lid; j < s; j += ls) v += row[j];
  }
  v = dynb_group_sum(scratch, v);
  if (lid == 0) DYNB_AT(out)[ch] = acc ? DYNB_AT(out)[ch] + v : v;
}

/* First pass of a whole-tensor sum: work-group g sums elements
 * g*L + lid + k*G*L into partial[g]. */
__kernel void dynb_sum_partial(const int n, DYNB_CTENSOR(x), DYNB_TENSOR(partial),
                               __local real *scratch) {
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  const int g = (int)get_group_id(0), ng = (int)get_num_groups(0);
  __global const real *x = DYNB_AT(x);
  real v = 0;
  for (int i = g * ls + lid; i < n; i += ng * ls) v += x[i];
  v = dynb_group_sum(scratch, v);
  if (lid == 0) DYNB_AT(partial)[g] = v;
}

/* Second pass: one work-group sums the partials into out[0]. */
__kernel void dynb_sum_final(const int n, DYNB_CTENSOR(partial), DYNB_TENSOR(out), const int acc,
                             __local real *scratch) {
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  __global const real *p = DYNB_AT(partial);
  real v = 0;
  for (int i = lid; i < n; i += ls) v += p[i];
  v = dynb_group_sum(scratch, v);
  if (lid == 0) DYNB_AT(out)[0] = acc ? DYNB_AT(out)[0] + v : v;
}
