/* Softmax cross-entropy over logits [N, K] with int labels [N]. One item
 * per row: K (the number of classes) is small, and a row's passes stay in
 * cache. */

/* Largest logit of a row and its first index (ties go to the lowest
 * index). NaN logits never compare greater, so they do not win here but
 * still poison the sum of exponentials, and with it the loss. */
static real row_max(__global const real *z, const int k, int *arg) {
  real m = z[0];
  int a = 0;
  for (int j = 1; j < k; j++)
    if (z[j] > m) {
      m = z[j];
      a = j;
    }
  *arg = a;
  return m;
}

/* Σ_j exp(z_j - m): with m the row's maximum every term is at most 1, so
 * nothing overflows however large the logits. */
static real row_sum_exp(__global const real *z, const int k, const real m) {
  real s = 0;
  for (int j = 0; j < k; j++) s += exp(z[j] - m);
  return s;
}

/* work[r] = -log softmax(z_r)[label_r] = log Σ exp(z - m) - (z_label - m),
 * work[n + r] = 1 if row r's arg-max is its label, else 0. An out-of-range
 * label makes the row's loss NaN (and counts as wrong). */
__kernel void dynb_xent_rows(const int n, const int k, DYNB_CTENSOR(logits),
                             __global const int *labels_base, const ulong labels_off,
                             DYNB_TENSOR(work)) {
  const int r = (int)get_global_id(0);
  if (r >= n) return;
  __global const real *z = DYNB_AT(logits) + (size_t)r * k;
  const int label = (labels_base + labels_off)[r];
  int arg = 0;
  const real m = row_max(z, k, &arg);
  const bool valid = label >= 0 && label < k;
  const real loss = valid ? log(row_sum_exp(z, k, m)) - (z[valid ? label : 0] - m) : (real)NAN;
  DYNB_AT(work)[r] = loss;
  DYNB_AT(work)[n + r] = (valid && arg == label) ? (real)1 : (real)0;
}

/* One work-group: out = {mean of work[0..n), sum of work[n..2n)}, each a
 * fixed tree, so the loss is the same on every run. */
__kernel void dynb_xent_reduce(const int n, DYNB_CTENSOR(work), DYNB_TENSOR(out),
                               __local real *scratch) {
  const int lid = (int)get_local_id(0), ls = (int)get_local_size(0);
  __global const real *w = DYNB_AT(work);
  real loss = 0, correct = 0;
  for (int i = lid; i < n; i += ls) {
    loss += w[i];
    correct += w[n + i];
  }
  loss = dynb_group_sum(scratch, loss);
  correct = dynb_group_sum(scratch, correct);
  if (lid == 0) {
    DYNB_AT(out)[0] = loss / (real)n;
    DYNB_AT(out)[1] = correct;
  }
}

/* dlogits (+)= scale · (softmax(z) - onehot(label)) / N, one item per row;
 * an out-of-range label gives the row a NaN gradient, like its loss. */
__kernel void dynb_xent_backward(const int n, const int k, DYNB_CTENSOR(logits),
                                 __global const int *labels_base, const ulong labels_off,
                                 const real scale, DYNB_TENSOR(dlogits), const int acc) {
  const int r = (int)get_global_id(0);
  if (r >= n) return;
  __global const real *z = DYNB_AT(logits) + (size_t)r * k;
  __global real *d = DYNB_AT(dlogits) + (size_t)r * k;
  const int label = (labels_base + labels_off)[r];
  int arg = 0;
  const real m = row_max(z, k, &arg);
  const real c = scale / (real)n;
  const real cs = label >= 0 && label < k ? c / row_sum_exp(z, k, m) : (real)NAN;
  for (int j = 0; j < k; j++) {
    const real g = cs * exp(z[j] - m) - (j == label ? c : (real)0);
    d[j] = acc ? d[j] + g : g;
  }
}
