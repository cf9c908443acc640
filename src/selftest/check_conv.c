/* Convolutions: every route (gemm, row, wide, wide2) forced in turn, every
 * direction that route implements — the forward K·x (also the transposed
 * convolution's data gradient), the adjoint Kᵀ·z (the data gradient and
 * the transposed forward) and the weight gradients — against src/ref.
 *
 * Bound: each output element is a sum of `terms` products (Cin·k² for K·x,
 * Cout·k² for Kᵀ·z, N·H·W for weight gradients) plus at most one bias or
 * accumulated value. Whatever order a route sums in (GEMM blocking, col2im
 * gather, direct kernels' vectors and partial sums), the classical
 * dot-product bound gives γ(terms + 3) on Σ|products| + |bias| + |old|,
 * which the reference computes on absolute values (tests/test_conv.c uses
 * the same count). */
#include <math.h>

#include "ops/ops.h"
#include "selftest.h"

typedef struct conv_shape {
  int n, cin, cout, h, w, k;
} conv_shape;

/* 1×1 maps with k larger than the image; odd maps; Cin != Cout both ways;
 * every k; more output channels than wide2's 32 (33, a tail of 1); a
 * batch. Widths 5, 7, 9, 16 and 33 (with 8 below) pick every chunk width of
 * the direct kernels (row: 8, 16, 32; wide: 7, 8, 14, 16; wide2: 7, 8), and
 * output channels below and from 8 both of row's channel blockings.
 * 3·17·7·5 = 1785 and the other sizes are multiples of no work-group
 * size. */
static const conv_shape quick_shapes[] = {
    {1, 1, 1, 1, 1, 1},  {1, 1, 1, 1, 1, 3},   {1, 1, 1, 1, 1, 5},  {2, 3, 17, 7, 5, 3},
    {1, 17, 3, 13, 9, 3}, {3, 2, 5, 13, 9, 1},  {2, 3, 4, 7, 5, 5},  {1, 2, 33, 5, 7, 3},
    {1, 3, 9, 4, 33, 3},  {2, 2, 8, 3, 16, 3},  {1, 4, 2, 3, 8, 1}};
/* The full mode adds the direct kernels' blocking edges (rows of one and
 * two chunks with a one-column tail, more images than batch splits,
 * channel counts at and off their blocking) and layers of the reference
 * network's size. */
static const conv_shape full_shapes[] = {
    {1, 1, 1, 1, 1, 1},   {1, 1, 1, 1, 1, 3},  {1, 1, 1, 1, 1, 5},  {2, 3, 17, 7, 5, 3},
    {1, 17, 3, 13, 9, 3}, {3, 2, 5, 13, 9, 1}, {2, 3, 4, 7, 5, 5},  {1, 2, 33, 5, 7, 3},
    {1, 3, 9, 4, 33, 3},  {2, 2, 8, 3, 16, 3}, {1, 4, 2, 3, 8, 1},  {2, 8, 8, 5, 16, 3},
    {1, 2, 9, 3, 33, 3},  {17, 3, 1, 4, 8, 3}, {2, 1, 3, 6, 11, 3}, {8, 64, 64, 7, 7, 3},
    {4, 16, 48, 9, 9, 1}};

enum { FWD, T_FWD, BWD_DATA, T_BWD_DATA, BWD_W, T_BWD_W, NOPS };
static const char *const op_names[NOPS] = {
    "conv2d_forward",          "conv2d_transpose_forward",
    "conv2d_backward_data",    "conv2d_transpose_backward_data",
    "conv2d_backward_weights", "conv2d_transpose_backward_weights"};

typedef struct route {
  const char *name;
  dynb__conv_policy policy;
  bool k1, k3, k5, weights; /* the kernel sizes it has; whether it has weight gradients */
} route;

/* Forcing a route where a shape lacks it makes another stand in (the GEMM
 * for row at k = 1, wide's weight gradients for wide2): those pairs are
 * left out, so that each row measures its own route. */
static const route routes[] = {{"gemm", DYNB__CONV_GEMM, true, true, true, true},
                               {"row", DYNB__CONV_ROW, false, true, false, true},
                               {"wide", DYNB__CONV_WIDE, true, true, false, true},
                               {"wide2", DYNB__CONV_WIDE2, true, true, false, false}};

static bool route_has(const route *ro, const conv_shape *s) {
  return s->k == 1 ? ro->k1 : s->k == 3 ? ro->k3 : ro->k5;
}

static void check_case(dynb__stest_run *r, int op, const conv_shape *s, int i) {
  ref_rng g = ref_rng_seed(900 + (uint64_t)(i * NOPS + op));
  size_t nin = (size_t)s->n * s->cin * s->h * s->w, nout = (size_t)s->n * s->cout * s->h * s->w;
  size_t nw = (size_t)s->cout * s->cin * s->k * s->k;
  int64_t di[4] = {s->n, s->cin, s->h, s->w}, dout[4] = {s->n, s->cout, s->h, s->w};
  int64_t dw[4] = {s->cout, s->cin, s->k, s->k}, db = op == FWD ? s->cout : s->cin;
  size_t need = 0;
  if (!dynb__stest_ok(r, dynb__conv2d_prepare(r->ctx, r->row.dtype, s->n, s->cin, s->cout, s->h,
                                              s->w, s->k, &need)))
    return;
  int64_t ws = need ? (int64_t)need : 1;
  /* Inputs: the Cin side (x), the Cout side (z), weights, a bias. */
  double *x = dynb__stest_data(r, &g, nin, -1, 1), *z = dynb__stest_data(r, &g, nout, -1, 1);
  double *w = dynb__stest_data(r, &g, nw, -1, 1), *b = dynb__stest_data(r, &g, (size_t)db, -1, 1);
  bool acc = (op >= BWD_DATA) && i % 2 == 1, bias = op <= T_FWD && i % 2 == 0;
  size_t nres = op == FWD || op == T_BWD_DATA ? nout : op == BWD_W || op == T_BWD_W ? nw : nin;
  double *old = dynb__stest_data(r, &g, nres, -1, 1), *want = dynb__stest_zeros(r, nres),
         *mag = dynb__stest_zeros(r, nres);
  double *got = dynb__stest_zeros(r, nres), *ax = dynb__stest_zeros(r, nin),
         *az = dynb__stest_zeros(r, nout);
  double *aw = dynb__stest_zeros(r, nw), *ab = dynb__stest_zeros(r, (size_t)db);
  if (r->status != DYNB_OK) return;
  dynb__stest_scale_abs(ax, x, nin, 1, 0), dynb__stest_scale_abs(az, z, nout, 1, 0);
  dynb__stest_scale_abs(aw, w, nw, 1, 0), dynb__stest_scale_abs(ab, b, (size_t)db, 1, 0);
  size_t off = dynb__stest_offset(i);
  dynb__tensor tx = dynb__stest_put(r, 4, di, x, off), tz = dynb__stest_put(r, 4, dout, z, 1);
  dynb__tensor tw = dynb__stest_put(r, 4, dw, w, off), tb = dynb__stest_put(r, 1, &db, b, 2);
  dynb__tensor work = dynb__stest_put(r, 1, &ws, NULL, off);
  const int64_t *rd = nres == nout ? dout : nres == nw ? dw : di;
  dynb__tensor out = dynb__stest_put(r, 4, rd, acc ? old : NULL, 3);
  if (r->status != DYNB_OK) return;
  dynb_ctx *c = r->ctx;
  size_t terms = 0;
  int n = s->n, ci = s->cin, co = s->cout, h = s->h, wd = s->w, k = s->k;
  switch (op) {
    case FWD:
      dynb__stest_ok(r, dynb__conv2d_forward(c, &tx, &tw, bias ? &tb : NULL, &out, &work));
      ref_conv2d_forward(n, ci, co, h, wd, k, x, w, bias ? b : NULL, want);
      ref_conv2d_forward(n, ci, co, h, wd, k, ax, aw, bias ? ab : NULL, mag);
      terms = (size_t)ci * k * k;
      break;
    case T_FWD:
      dynb__stest_ok(r,
                     dynb__conv2d_transpose_forward(c, &tz, &tw, bias ? &tb : NULL, &out, &work));
      ref_conv2d_transpose_forward(n, ci, co, h, wd, k, z, w, bias ? b : NULL, want);
      ref_conv2d_transpose_forward(n, ci, co, h, wd, k, az, aw, bias ? ab : NULL, mag);
      terms = (size_t)co * k * k;
      break;
    case BWD_DATA:
      dynb__stest_ok(r, dynb__conv2d_backward_data(c, &tz, &tw, &out, acc, &work));
      ref_conv2d_backward_data(n, ci, co, h, wd, k, z, w, want);
      ref_conv2d_backward_data(n, ci, co, h, wd, k, az, aw, mag);
      terms = (size_t)co * k * k;
      break;
    case T_BWD_DATA: /* dz = K dy, dy on the Cin side */
      dynb__stest_ok(r, dynb__conv2d_transpose_backward_data(c, &tx, &tw, &out, acc, &work));
      ref_conv2d_forward(n, ci, co, h, wd, k, x, w, NULL, want);
      ref_conv2d_forward(n, ci, co, h, wd, k, ax, aw, NULL, mag);
      terms = (size_t)ci * k * k;
      break;
    case BWD_W:
      dynb__stest_ok(r, dynb__conv2d_backward_weights(c, &tx, &tz, &out, acc, &work));
      ref_conv2d_backward_weights(n, ci, co, h, wd, k, x, z, want);
      ref_conv2d_backward_weights(n, ci, co, h, wd, k, ax, az, mag);
      terms = (size_t)n * h * wd;
      break;
    default: /* T_BWD_W: y = Kᵀ z, dy on the Cin side; dw[co][ci] pairs z with dy */
      dynb__stest_ok(r, dynb__conv2d_transpose_backward_weights(c, &tz, &tx, &out, acc, &work));
      ref_conv2d_backward_weights(n, ci, co, h, wd, k, x, z, want);
      ref_conv2d_backward_weights(n, ci, co, h, wd, k, ax, az, mag);
      terms = (size_t)n * h * wd;
      break;
  }
  dynb__stest_read(r, &out, got);
  for (size_t e = 0; e < nres; e++) {
    if (acc) want[e] += old[e], mag[e] += fabs(old[e]);
    mag[e] = fmax(mag[e], 1e-300);
  }
  dynb__stest_compare(r, got, want, mag, nres, dynb__stest_gamma(r, (double)terms + 3));
}

void dynb__stest_check_conv(dynb__stest_run *r) {
  dynb_dtype dts[2];
  int nd = dynb__stest_dtypes(r, dts);
  const conv_shape *shapes = r->d->quick ? quick_shapes : full_shapes;
  int ns = r->d->quick ? (int)(sizeof quick_shapes / sizeof *quick_shapes)
                       : (int)(sizeof full_shapes / sizeof *full_shapes);
  for (int d = 0; d < nd; d++)
    for (size_t ro = 0; ro < sizeof routes / sizeof *routes; ro++)
      for (int op = 0; op < NOPS; op++) {
        if (!routes[ro].weights && (op == BWD_W || op == T_BWD_W)) continue;
        r->ctx->conv_policy = routes[ro].policy;
        dynb__stest_begin(r, op_names[op], routes[ro].name, dts[d]);
        for (int i = 0; i < ns && r->status == DYNB_OK; i++) {
          if (!route_has(&routes[ro], &shapes[i])) continue;
          check_case(r, op, &shapes[i], i);
          dynb__stest_release(r);
        }
        dynb__stest_end(r);
      }
}
