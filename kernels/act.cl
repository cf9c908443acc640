/* Elementwise activations and their derivatives. The kind arrives as an int
 * argument (a dynb_act value) rather than as one kernel per kind: the branch
 * is uniform across the launch, so it costs nothing next to the memory
 * traffic, and one entry point per direction keeps the host dispatch and
 * the program build small. */

/* act_value and act_slope are in prelude.clh: the norms apply σ too. */

/* y = σ(x); y may be x itself (each item reads its element before writing). */
__kernel void dynb_act_forward(const int n, const int act, const real slope, DYNB_CTENSOR(x),
                               DYNB_TENSOR(y)) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  DYNB_AT(y)[i] = act_value(act, DYNB_AT(x)[i], slope);
}

/* dx (+)= dy ⊙ σ'(x); dx may be dy itself when !acc. */
__kernel void dynb_act_backward(const int n, const int act, const real slope, DYNB_CTENSOR(x),
                                DYNB_CTENSOR(dy), DYNB_TENSOR(dx), const int acc) {
  const int i = (int)get_global_id(0);
  if (i >= n) return;
  const real g = DYNB_AT(dy)[i] * act_slope(act, DYNB_AT(x)[i], slope);
  __global real *dx = DYNB_AT(dx);
  dx[i] = acc ? dx[i] + g : g;
}
