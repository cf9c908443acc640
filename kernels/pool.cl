/* Average pooling over NCHW tensors: 2x2 windows with stride 2, and the
 * global average per (n, c). */

/* One item per output: y[p][i][j] = mean of x[p][2i..2i+1][2j..2j+1], with
 * p running over the N*C planes. Odd last rows and columns are never read. */
__kernel void dynb_avgpool2_forward(const int planes, const int h, const int w, DYNB_CTENSOR(x),
                                    DYNB_TENSOR(y)) {
  const int ho = h / 2, wo = w / 2;
  const int i = (int)get_global_id(0);
  if (i >= planes * ho * wo) return;
  const int p = i / (ho * wo), r = (i / wo) % ho, c = i % wo;
  __global const real *top = DYNB_AT(x) + ((size_t)p * h + 2 * r) * w + 2 * c;
  DYNB_AT(y)[i] = (real)0.25 * ((top[0] + top[1]) + (top[w] + top[w + 1]));
}

/* One item per input element (a gather, so no two items write one place):
 * dx = dy / 4 of the window holding it, 0 in a dropped last row or column. */
__kernel void dynb_avgpool2_backward(const int planes, const int h, const int w,
                                     DYNB_CTENSOR(dy), DYNB_TENSOR(dx), const int acc) {
  const int ho = h / 2, wo = w / 2;
  const int i = (int)get_global_id(0);
  if (i >= planes * h * w) return;
  const int p = i / (h * w), r = (i / w) % h, c = i % w;
  const bool inside = r / 2 < ho && c / 2 < wo;
  const real g =
      inside ? (real)0.25 * DYNB_AT(dy)[((size_t)p * ho + r / 2) * wo + c / 2] : (real)0;
  __global real *dx = DYNB_AT(dx);
  dx[i] = acc ? dx[i] + g : g;
}

/* One work-group per plane: y[p] = mean of its s elements, summed with a
 * fixed tree (dynb_group_sum) so that the result does not vary by run. */
__kernel void dynb_global_avgpool_forward(const int s, DYNB_CTENSOR(x), DYNB_TENSOR(y),
                                          __local real *scratch) {
  const int p = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  __global const real *plane = DYNB_AT(x) + (size_t)p * s;
  real v = 0;
  for (int j = lid; j < s; j += ls) v += plane[j];
  v = dynb_group_sum(scratch, v);
  if (lid == 0) DYNB_AT(y)[p] = v / (real)s;
}

/* dx[p][j] (+)= dy[p] / s, one item per input element. */
__kernel void dynb_global_avgpool_backward(const int planes, const int s, DYNB_CTENSOR(dy),
                                           DYNB_TENSOR(dx), const int acc) {
  const int i = (int)get_global_id(0);
  if (i >= planes * s) return;
  const real g = DYNB_AT(dy)[i / s] / (real)s;
  __global real *dx = DYNB_AT(dx);
  dx[i] = acc ? dx[i] + g : g;
}
