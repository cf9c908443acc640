/* Elementwise activations and their derivatives. The kind arrives as an int
 * argument (a dynb_act value) rather than as one kernel per kind: the branch
 * is uniform across the launch, so it costs nothing next to the memory
 * traffic, and one entry point per direction keeps the host dispatch and
 * the program build small. */

#define DYNB_ACT_IDENTITY 0
#define DYNB_ACT_RELU 1
#define DYNB_ACT_TANH 2
#define DYNB_ACT_LEAKY_RELU 3

static real act_value(const int act, const real v, const real slope) {
  switch (act) {
    case DYNB_ACT_RELU: return v > 0 ? v : (real)0;
    case DYNB_ACT_TANH: return tanh(v);
    case DYNB_ACT_LEAKY_RELU: return v > 0 ? v : slope * v;
    default: return v;
  }
}

/* σ'(v). At v == 0 relu' is 0 and leaky_relu' is the slope, as PyTorch's
 * threshold_backward and leaky_relu_backward give. tanh' is 1/cosh² rather
 * than 1 - tanh², which loses its relative accuracy where tanh → ±1; cosh
 * overflowing for large |v| gives the correct limit 0. */
static real act_slope(const int act, const real v, const real slope) {
  switch (act) {
    case DYNB_ACT_RELU: return v > 0 ? (real)1 : (real)0;
    case DYNB_ACT_TANH: {
      const real c = cosh(v);
      return (real)1 / (c * c);
    }
    case DYNB_ACT_LEAKY_RELU: return v > 0 ? (real)1 : slope;
    default: return 1;
  }
}

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
