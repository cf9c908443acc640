/* Layout moves around the one CLBlast GEMM of a convolution (square odd k,
 * stride 1, zero padding k/2, so H and W are kept).
 *
 * The GEMM sees the whole batch at once: its pixel dimension is N*H*W, so
 * columns are ordered (n, y, x) and rows of `col` are (ci, kh, kw):
 *   col[(ci*k + kh)*k + kw][(n*H + y)*W + x] = x[n][ci][y + kh - k/2][x + kw - k/2]
 * (zero outside the image). Channel-major "rows" tensors [C][N*H*W] are the
 * GEMM's view of an NCHW tensor. Sizes are ints: the host checks that every
 * tensor, the workspace included, stays under 2^31 elements. */

/* col = im2col(x); x: [N][C][H][W]. One work-item per (col row, image row)
 * writes that row's W contiguous columns: the index arithmetic (divisions)
 * is paid once per W elements instead of per element, which made the
 * per-element version the most expensive kernel of a training step. */
__kernel void dynb_conv_im2col(const int n, const int c, const int h, const int w, const int k,
                               DYNB_CTENSOR(x), DYNB_TENSOR(col)) {
  const int by = (int)get_global_id(0), r = (int)get_global_id(1);
  if (by >= n * h || r >= c * k * k) return;
  const int kw = r % k, kh = (r / k) % k, ci = r / (k * k);
  const int b = by / h, y = by - b * h, sy = y + kh - k / 2, dx = kw - k / 2;
  __global real *out = DYNB_AT(col) + (size_t)r * (size_t)(n * h * w) + (size_t)by * w;
  if (sy < 0 || sy >= h) {
    for (int xx = 0; xx < w; xx++) out[xx] = 0;
    return;
  }
  __global const real *in = DYNB_AT(x) + ((size_t)(b * c + ci) * h + sy) * w;
  for (int xx = 0; xx < w; xx++) {
    const int sx = xx + dx;
    out[xx] = sx >= 0 && sx < w ? in[sx] : (real)0;
  }
}

/* rows[c][b*S + p] = t[b][c][p]: an NCHW tensor as the GEMM's [C][N*S] operand. */
__kernel void dynb_conv_to_rows(const int n, const int c, const int s, DYNB_CTENSOR(t),
                                DYNB_TENSOR(rows)) {
  const int i = (int)get_global_id(0);
  const int cols = n * s;
  if (i >= c * cols) return;
  const int ch = i / cols, j = i - ch * cols;
  const int b = j / s, p = j - b * s;
  DYNB_AT(rows)[i] = DYNB_AT(t)[(b * c + ch) * s + p];
}

/* t[b][c][p] (+)= rows[c][b*S + p] (+ bias[c] when has_b): the GEMM's result
 * back to NCHW, with the bias fused into the same pass. */
__kernel void dynb_conv_from_rows(const int n, const int c, const int s, DYNB_CTENSOR(rows),
                                  DYNB_CTENSOR(bias), const int has_b, DYNB_TENSOR(t),
                                  const int acc) {
  const int i = (int)get_global_id(0);
  if (i >= n * c * s) return;
  const int p = i % s, ch = (i / s) % c, b = i / (s * c);
  real v = DYNB_AT(rows)[ch * (n * s) + b * s + p];
  if (has_b) v += DYNB_AT(bias)[ch];
  __global real *t = DYNB_AT(t);
  t[i] = acc ? t[i] + v : v;
}

/* x (+)= col2im(col) (+ bias): each x element gathers the k*k col entries
 * that im2col made from it and adds them to x once (no atomics, a fixed
 * order, one rounding onto an accumulated x). One work-item per image row
 * (n, ci, y) handles the row's W outputs, so the divisions are paid once
 * per row rather than per element. */
__kernel void dynb_conv_col2im(const int n, const int c, const int h, const int w, const int k,
                               DYNB_CTENSOR(col), DYNB_CTENSOR(bias), const int has_b,
                               DYNB_TENSOR(x), const int acc) {
  const int row = (int)get_global_id(0);
  if (row >= n * c * h) return;
  const int y = row % h, ci = (row / h) % c, b = row / (c * h);
  const int cols = n * h * w, pad = k / 2;
  __global const real *img = DYNB_AT(col) + (size_t)ci * k * k * cols + (size_t)b * h * w;
  __global real *out = DYNB_AT(x) + (size_t)row * w;
  const real b0 = has_b ? DYNB_AT(bias)[ci] : (real)0;
  for (int xx = 0; xx < w; xx++) {
    real v = 0;
    for (int kh = 0; kh < k; kh++) {
      const int oy = y + pad - kh;
      if (oy < 0 || oy >= h) continue;
      __global const real *tap = img + (size_t)(kh * k) * cols + oy * w;
      for (int kw = 0; kw < k; kw++) {
        const int ox = xx + pad - kw;
        if (ox >= 0 && ox < w) v += tap[(size_t)kw * cols + ox];
      }
    }
    v += b0;
    out[xx] = acc ? out[xx] + v : v;
  }
}
