/* 2-D convolution (square odd k, stride 1, zero padding k/2) and its
 * transpose, as im2col + one CLBlast GEMM over the whole batch.
 *
 * Every op is one of three paths over the same weights K:
 *   apply    y (+)= K x (+ b)   im2col(x), GEMM W·col, rows → NCHW (+ b)
 *   adjoint  x (+)= Kᵀ y (+ b)  NCHW → rows, GEMM Wᵀ·rows, col2im (+ b)
 *   weights  dw (+)= ∂<dy, K x>/∂W   im2col(x), NCHW → rows, GEMM rows·colᵀ
 * Conv forward is apply, its backward-data the adjoint; the transposed conv
 * is the adjoint and its backward-data the apply; both backward-weights are
 * the weights path with the roles of the two activations swapped.
 * With N = 1 the [C][H*W] GEMM operands are NCHW tensors as they are, so
 * the layout passes (NCHW ↔ rows) are skipped. */
#include <stdio.h>
#include <string.h>

#include "ops/ops.h"

/* A validated call: sizes, the real type and the two scratch views. */
typedef struct conv_geom {
  dynb_dtype dt;
  int n, cin, cout, h, w, k;
  dynb__tensor col;  /* [Cin*k*k][N*H*W] */
  dynb__tensor rows; /* [Cout][N*H*W] */
} conv_geom;

/* ---- Workspace ----------------------------------------------------------- */

/* The direct weight gradient sums each split of the batch separately, then
 * the splits in order: enough work-items for every core without atomics.
 * A function of N only, so the summation order never depends on the device. */
static int direct_splits(int n) { return n < 16 ? n : 16; }
static int pad16(int c) { return (c + 15) / 16 * 16; }
static int pad32(int c) { return (c + 31) / 32 * 32; }

/* The three directions of a convolution, and the routes that compute them:
 * the GEMM one (any k), "row" (vectors along an image row; k = 3), "wide"
 * (vectors across 16 output channels, the best almost everywhere on CPUs;
 * k = 1 and 3) and, for forward and adjoint, "wide2" (two such vectors per
 * work-item). A shape's choice packs one route per direction, two bits each. */
enum { KIND_APPLY = 0, KIND_ADJOINT = 1, KIND_WEIGHTS = 2, KINDS = 3 };
typedef enum conv_route { ROUTE_GEMM = 0, ROUTE_ROW = 1, ROUTE_WIDE = 2, ROUTE_WIDE2 = 3 } conv_route;
static const char *const route_names[] = {"gemm", "row", "wide", "wide2"};
#define ROUTES 4

static conv_route route_of(int choice, int kind) { return (conv_route)((choice >> (2 * kind)) & 3); }

/* Whether this kernel size has kernels for the route in this direction. */
static bool route_exists(int k, int kind, conv_route r) {
  switch (r) {
    case ROUTE_GEMM: return true;
    case ROUTE_ROW: return k == 3;
    case ROUTE_WIDE: return k == 1 || k == 3;
    case ROUTE_WIDE2: return (k == 1 || k == 3) && kind != KIND_WEIGHTS;
  }
  return false;
}

static size_t pixels(const conv_geom *g) { return (size_t)g->n * (size_t)g->h * (size_t)g->w; }

/* The work one direction takes by one route, in elements (sizes already
 * bounded by dynb__conv2d_workspace):
 *   gemm     the col matrix plus one channel-major copy of the Cout side;
 *   row      nothing to apply; per-split partial sums for the weights;
 *   wide(2)  the packed weights (transposed, flipped for Kᵀ, channels
 *            padded to 16 or 32); for the weights, the partial sums and a
 *            channel-minor copy of dy. */
static size_t route_workspace(const conv_geom *g, int kind, conv_route r) {
  const size_t pix = pixels(g), kk = (size_t)g->k * (size_t)g->k;
  if (r == ROUTE_GEMM) return pix * ((size_t)g->cin * kk + (size_t)g->cout);
  if (kind == KIND_WEIGHTS) {
    size_t part = (size_t)direct_splits(g->n) * (size_t)g->cout * (size_t)g->cin * kk;
    return r == ROUTE_ROW ? part : part + pix * (size_t)pad16(g->cout);
  }
  if (r == ROUTE_ROW) return 0;
  const int ci = kind == KIND_ADJOINT ? g->cout : g->cin;
  const int co = kind == KIND_ADJOINT ? g->cin : g->cout;
  return (size_t)ci * kk * (size_t)(r == ROUTE_WIDE2 ? pad32(co) : pad16(co));
}

/* The work of a choice: the most any of its three directions takes. */
static size_t choice_workspace(const conv_geom *g, int choice) {
  size_t need = 0;
  for (int kind = 0; kind < KINDS; kind++) {
    size_t w = route_workspace(g, kind, route_of(choice, kind));
    need = w > need ? w : need;
  }
  return need;
}

/* The work that any route of any direction may take. SIZE_MAX for sizes no
 * tensor could have (every tensor stays under 2^31 elements), so that
 * sizing an arena from it fails instead of wrapping around. */
size_t dynb__conv2d_workspace(int64_t n, int64_t cin, int64_t cout, int64_t h, int64_t w,
                              int64_t k) {
  const int64_t lim = INT32_MAX;
  if (n < 1 || cin < 1 || cout < 1 || h < 1 || w < 1 || k < 1) return SIZE_MAX;
  if (n > lim || cin > lim || cout > lim || h > lim || w > lim || k > lim) return SIZE_MAX;
  /* Each factor is below 2^31, so a product of two fits in 62 bits; every
   * product is checked before it takes part in the next one. The GEMM
   * route's pix·rows is the only product that can grow past them. */
  uint64_t pix = (uint64_t)n * (uint64_t)h;
  if (pix > lim) return SIZE_MAX;
  pix *= (uint64_t)w;
  uint64_t kk = (uint64_t)k * (uint64_t)k;
  if (pix > lim || kk > lim) return SIZE_MAX;
  uint64_t rows = (uint64_t)cin * kk;
  if (rows > lim) return SIZE_MAX;
  rows += (uint64_t)cout;
  if (rows > lim || pix * rows > (uint64_t)(SIZE_MAX / 2)) return SIZE_MAX;
  if ((uint64_t)cout * (uint64_t)cin > lim) return SIZE_MAX;
  const conv_geom g = {.n = (int)n, .cin = (int)cin, .cout = (int)cout, .h = (int)h,
                       .w = (int)w, .k = (int)k};
  size_t need = 0;
  for (int kind = 0; kind < KINDS; kind++)
    for (int r = 0; r < ROUTES; r++)
      if (route_exists(g.k, kind, (conv_route)r)) {
        size_t rw = route_workspace(&g, kind, (conv_route)r);
        need = rw > need ? rw : need;
      }
  return need;
}

/* The most work one buffer of the device holds, in elements: a route
 * needing more (im2col's col matrix grows with the batch) is not taken
 * while one that fits exists. */
static size_t work_cap(const dynb_ctx *ctx, dynb_dtype dt) {
  uint64_t cap = ctx->limits.max_alloc / dynb__dtype_size(dt);
  return cap < (uint64_t)SIZE_MAX ? (size_t)cap : SIZE_MAX;
}

/* Whether the route exists for the shape and its work fits one buffer. */
static bool route_usable(const dynb_ctx *ctx, const conv_geom *g, int kind, conv_route r) {
  return route_exists(g->k, kind, r) && route_workspace(g, kind, r) <= work_cap(ctx, g->dt);
}

/* ---- Argument checks ----------------------------------------------------- */

static dynb_status check_named(dynb_ctx *ctx, const char *op, const char *name,
                               const dynb__tensor *t, dynb_dtype dt, int ndim) {
  char full[96];
  snprintf(full, sizeof full, "%s: %s", op, name);
  return dynb__tensor_check(ctx, t, full, dt, ndim);
}

/* The real type of a call: that of its first input, which must be F32 or F64. */
static dynb_status call_real(dynb_ctx *ctx, const char *op, const char *name,
                             const dynb__tensor *first, dynb_dtype *dt) {
  *dt = first->dtype;
  DYNB_CHECK(ctx, *dt == DYNB_F32 || *dt == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: %s has dtype %s; convolutions take f32 or f64", op, name,
             dynb__dtype_name(*dt));
  return dynb__check_real(ctx, *dt);
}

/* w: [Cout, Cin, k, k] with k odd. */
static dynb_status check_weights(dynb_ctx *ctx, const char *op, const char *name,
                                 const dynb__tensor *w, conv_geom *g) {
  DYNB_TRY(check_named(ctx, op, name, w, g->dt, 4));
  DYNB_CHECK(ctx, w->dims[2] == w->dims[3], DYNB_STATUS_SHAPE_MISMATCH,
             "%s: %s is %lldx%lld; the kernel must be square", op, name,
             (long long)w->dims[2], (long long)w->dims[3]);
  DYNB_CHECK(ctx, w->dims[2] % 2 == 1, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: %s has even kernel size %lld; only odd sizes keep H and W", op, name,
             (long long)w->dims[2]);
  g->cout = (int)w->dims[0];
  g->cin = (int)w->dims[1];
  g->k = (int)w->dims[2];
  return DYNB_OK;
}

/* t: [N, C, H, W] with the call's N, H, W and the given channel count. */
static dynb_status check_act(dynb_ctx *ctx, const char *op, const char *name,
                             const dynb__tensor *t, int c, const char *cname,
                             const conv_geom *g) {
  DYNB_TRY(check_named(ctx, op, name, t, g->dt, 4));
  DYNB_CHECK(ctx,
             t->dims[0] == g->n && t->dims[1] == c && t->dims[2] == g->h && t->dims[3] == g->w,
             DYNB_STATUS_SHAPE_MISMATCH,
             "%s: %s is [%lld, %lld, %lld, %lld], expected [%d, %d (%s), %d, %d]", op, name,
             (long long)t->dims[0], (long long)t->dims[1], (long long)t->dims[2],
             (long long)t->dims[3], g->n, c, cname, g->h, g->w);
  return DYNB_OK;
}

/* b: [C] or NULL. */
static dynb_status check_bias(dynb_ctx *ctx, const char *op, const dynb__tensor *b, int c,
                              const char *cname, const conv_geom *g) {
  if (!b) return DYNB_OK;
  DYNB_TRY(check_named(ctx, op, "b", b, g->dt, 1));
  DYNB_CHECK(ctx, b->dims[0] == c, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: b has %lld entries for %d channels (%s)", op, (long long)b->dims[0], c, cname);
  return DYNB_OK;
}

/* g->col and g->rows: the two GEMM scratch matrices at the start of work. */
static void carve_work(conv_geom *g, const dynb__tensor *work) {
  size_t pix = (size_t)g->n * (size_t)g->h * (size_t)g->w;
  size_t ncol = (size_t)g->cin * (size_t)g->k * (size_t)g->k * pix;
  g->col = *work;
  g->col.ndim = 1;
  g->col.dims[0] = (int64_t)ncol;
  g->rows = g->col;
  g->rows.offset = work->offset + ncol;
  g->rows.dims[0] = (int64_t)((size_t)g->cout * pix);
}

/* The checks every op shares: `w` gives Cout, Cin and k; `in` is the
 * Cin-side activation, which gives N, H, W; `out` the Cout-side one. */
static dynb_status check_conv(dynb_ctx *ctx, const char *op, const dynb__tensor *w,
                              const char *wname, const dynb__tensor *in, const char *in_name,
                              const dynb__tensor *out, const char *out_name,
                              const dynb__tensor *work, conv_geom *g) {
  DYNB_TRY(check_weights(ctx, op, wname, w, g));
  DYNB_TRY(check_named(ctx, op, in_name, in, g->dt, 4));
  g->n = (int)in->dims[0];
  g->h = (int)in->dims[2];
  g->w = (int)in->dims[3];
  DYNB_TRY(check_act(ctx, op, in_name, in, g->cin, "Cin", g));
  DYNB_TRY(check_act(ctx, op, out_name, out, g->cout, "Cout", g));
  /* Its size depends on the route, checked once that is chosen. */
  return check_named(ctx, op, "work", work, g->dt, -1);
}

/* ---- Launches -------------------------------------------------------------- */

/* g->col = im2col(x), x with Cin channels. */
static dynb_status im2col(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *x) {
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "conv", "dynb_conv_im2col", g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, g->cin);
  dynb__arg_int(&l, g->h);
  dynb__arg_int(&l, g->w);
  dynb__arg_int(&l, g->k);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, &g->col);
  size_t global[2] = {(size_t)g->n * (size_t)g->h, (size_t)g->cin * (size_t)g->k * (size_t)g->k};
  return dynb__launch_run(&l, 2, global, NULL);
}

/* x (+)= col2im(g->col) (+ b), x with Cin channels. */
static dynb_status col2im(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *b,
                          const dynb__tensor *x, bool acc) {
  dynb__tensor none = {0};
  none.dtype = g->dt;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "conv", "dynb_conv_col2im", g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, g->cin);
  dynb__arg_int(&l, g->h);
  dynb__arg_int(&l, g->w);
  dynb__arg_int(&l, g->k);
  dynb__arg_tensor(&l, &g->col);
  dynb__arg_tensor(&l, b ? b : &none);
  dynb__arg_int(&l, b != NULL);
  dynb__arg_tensor(&l, x);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, (size_t)g->n * (size_t)g->cin * (size_t)g->h);
}

/* The Cout-side tensor t as the GEMM's [Cout][N*H*W] operand: t itself
 * when N = 1, where the two layouts coincide, else its copy in g->rows. */
static dynb_status as_rows(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *t,
                           const dynb__tensor **rows) {
  *rows = t;
  if (g->n == 1) return DYNB_OK;
  *rows = &g->rows;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "conv", "dynb_conv_to_rows", g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, g->cout);
  dynb__arg_int(&l, g->h * g->w);
  dynb__arg_tensor(&l, t);
  dynb__arg_tensor(&l, &g->rows);
  return dynb__launch_1d(&l, dynb__tensor_numel(t));
}

/* t (+)= g->rows in NCHW (+ b), t with Cout channels; for N > 1. */
static dynb_status from_rows(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *b,
                             const dynb__tensor *t, bool acc) {
  dynb__tensor none = {0};
  none.dtype = g->dt;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "conv", "dynb_conv_from_rows", g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, g->cout);
  dynb__arg_int(&l, g->h * g->w);
  dynb__arg_tensor(&l, &g->rows);
  dynb__arg_tensor(&l, b ? b : &none);
  dynb__arg_int(&l, b != NULL);
  dynb__arg_tensor(&l, t);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, dynb__tensor_numel(t));
}

/* ---- The three paths ------------------------------------------------------- */

/* y (+)= K x (+ b): x Cin-side, y Cout-side. */
static dynb_status conv_apply(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *x,
                              const dynb__tensor *w, const dynb__tensor *b,
                              const dynb__tensor *y, bool acc) {
  size_t ckk = (size_t)g->cin * (size_t)g->k * (size_t)g->k, pix = pixels(g);
  /* With N = 1 the GEMM's [Cout][H*W] result is y's layout: it writes y
   * itself, accumulating through beta. */
  bool direct = g->n == 1;
  DYNB_TRY(im2col(ctx, g, x));
  dynb__gemm_args mm = {.m = (size_t)g->cout, .n = pix, .k = ckk, .alpha = 1,
                        .beta = direct && acc ? 1 : 0, .a = w, .lda = ckk, .b = &g->col,
                        .ldb = pix, .c = direct ? y : &g->rows, .ldc = pix};
  DYNB_TRY(dynb__gemm(ctx, &mm));
  if (!direct) return from_rows(ctx, g, b, y, acc);
  return b ? dynb__bias_add(ctx, y, b) : DYNB_OK;
}

/* x (+)= Kᵀ y (+ b): y Cout-side, x Cin-side. */
static dynb_status conv_adjoint(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *y,
                                const dynb__tensor *w, const dynb__tensor *b,
                                const dynb__tensor *x, bool acc) {
  size_t ckk = (size_t)g->cin * (size_t)g->k * (size_t)g->k, pix = pixels(g);
  const dynb__tensor *rows = NULL;
  DYNB_TRY(as_rows(ctx, g, y, &rows));
  dynb__gemm_args mm = {.trans_a = true, .m = ckk, .n = pix, .k = (size_t)g->cout, .alpha = 1,
                        .beta = 0, .a = w, .lda = ckk, .b = rows, .ldb = pix,
                        .c = &g->col, .ldc = pix};
  DYNB_TRY(dynb__gemm(ctx, &mm));
  return col2im(ctx, g, b, x, acc);
}

/* dw (+)= ∂<dy, K x>/∂W: x Cin-side, dy Cout-side. The GEMM accumulates
 * through beta, so no extra pass; with beta = 0 CLBlast's kernels do not
 * read C, so whatever dw held (NaN included) is overwritten. */
static dynb_status conv_weights(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *x,
                                const dynb__tensor *dy, const dynb__tensor *dw, bool acc) {
  size_t ckk = (size_t)g->cin * (size_t)g->k * (size_t)g->k, pix = pixels(g);
  const dynb__tensor *rows = NULL;
  DYNB_TRY(im2col(ctx, g, x));
  DYNB_TRY(as_rows(ctx, g, dy, &rows));
  dynb__gemm_args mm = {.trans_b = true, .m = (size_t)g->cout, .n = ckk, .k = pix, .alpha = 1,
                        .beta = acc ? 1 : 0, .a = rows, .lda = pix, .b = &g->col,
                        .ldb = pix, .c = dw, .ldc = ckk};
  return dynb__gemm(ctx, &mm);
}

/* ---- The direct routes (kernels/convd.cl, k = 3) --------------------------- */

/* The row-chunk width of the row kernels: the smallest that covers a row
 * (wider rows are split into chunks of 32). The wide kernels stop at 16:
 * their accumulators are 16-lane vectors, one per pixel of the chunk. */
static int row_tw(int w) { return w <= 8 ? 8 : w <= 16 ? 16 : 32; }
static int wide_tw(int w) {
  /* The chunk width with the fewest idle lanes over the row (ties: the
   * wider chunk, fewer work-items). */
  static const int tws[] = {16, 14, 8, 7};
  int best = 16, best_lanes = INT32_MAX;
  for (size_t i = 0; i < sizeof tws / sizeof *tws; i++) {
    int lanes = (w + tws[i] - 1) / tws[i] * tws[i];
    if (lanes < best_lanes) best = tws[i], best_lanes = lanes;
  }
  return best;
}

/* One work-item per work-group: each already holds a row's worth of
 * vector work, and a driver-chosen group (PoCL picked 32×16×8) multiplies
 * the private accumulators by its size, which overflowed PoCL's worker
 * stack for the weight gradient. */
static const size_t direct_local[3] = {1, 1, 1};

/* out (+)= K in (+ b) or, with tr, out (+)= Kᵀ in (+ b), by the row kernels. */
static dynb_status row_apply(dynb_ctx *ctx, const conv_geom *g, bool tr, const dynb__tensor *in,
                             const dynb__tensor *w, const dynb__tensor *b,
                             const dynb__tensor *out, bool acc) {
  const int ci = tr ? g->cout : g->cin, co = tr ? g->cin : g->cout;
  const int tw = row_tw(g->w), cob = co >= 8 ? 8 : 4;
  char name[48];
  snprintf(name, sizeof name, "dynb_convd_%s_w%d_c%d", tr ? "adjoint" : "apply", tw, cob);
  dynb__tensor none = {0};
  none.dtype = g->dt;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", name, g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, ci);
  dynb__arg_int(&l, co);
  dynb__arg_int(&l, g->h);
  dynb__arg_int(&l, g->w);
  dynb__arg_tensor(&l, in);
  dynb__arg_tensor(&l, w);
  dynb__arg_tensor(&l, b ? b : &none);
  dynb__arg_int(&l, b != NULL);
  dynb__arg_tensor(&l, out);
  dynb__arg_int(&l, acc);
  size_t chunks = (size_t)(g->w + tw - 1) / (size_t)tw;
  size_t global[3] = {(size_t)g->h * chunks, (size_t)(co + cob - 1) / (size_t)cob, (size_t)g->n};
  return dynb__launch_run(&l, 3, global, direct_local);
}

/* The same by the wide kernels (nv 16-channel vectors per work-item): the
 * weights are first packed (transposed, flipped for Kᵀ, channels padded to
 * 16·nv) into the workspace. */
static dynb_status wide_apply(dynb_ctx *ctx, const conv_geom *g, int nv, bool tr,
                              const dynb__tensor *in, const dynb__tensor *w,
                              const dynb__tensor *b, const dynb__tensor *out, bool acc) {
  const int ci = tr ? g->cout : g->cin, co = tr ? g->cin : g->cout;
  const int cp = nv == 2 ? pad32(co) : pad16(co);
  const size_t npacked = (size_t)ci * (size_t)(g->k * g->k) * (size_t)cp;
  dynb__tensor packed = g->col;
  packed.dims[0] = (int64_t)npacked;
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", "dynb_convd_pack_weights", g->dt));
  dynb__arg_int(&l, ci);
  dynb__arg_int(&l, co);
  dynb__arg_int(&l, cp);
  dynb__arg_int(&l, g->k);
  dynb__arg_int(&l, tr);
  dynb__arg_tensor(&l, w);
  dynb__arg_tensor(&l, &packed);
  DYNB_TRY(dynb__launch_1d(&l, npacked));
  const int tw = nv == 2 ? (g->w % 7 == 0 ? 7 : 8) : wide_tw(g->w);
  char name[48];
  snprintf(name, sizeof name, "dynb_convd_wide%s_k%d_w%d", nv == 2 ? "2" : "", g->k, tw);
  dynb__tensor none = {0};
  none.dtype = g->dt;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", name, g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, ci);
  dynb__arg_int(&l, co);
  dynb__arg_int(&l, cp);
  dynb__arg_int(&l, g->h);
  dynb__arg_int(&l, g->w);
  dynb__arg_tensor(&l, in);
  dynb__arg_tensor(&l, &packed);
  dynb__arg_tensor(&l, b ? b : &none);
  dynb__arg_int(&l, b != NULL);
  dynb__arg_tensor(&l, out);
  dynb__arg_int(&l, acc);
  size_t chunks = (size_t)(g->w + tw - 1) / (size_t)tw;
  size_t global[3] = {(size_t)g->h * chunks, (size_t)cp / (16 * (size_t)nv), (size_t)g->n};
  return dynb__launch_run(&l, 3, global, direct_local);
}

/* dw (+)= ∂<dy, K x>/∂W by the row or wide kernels: per-split partial sums
 * in the workspace, then their ordered sum. */
static dynb_status direct_weights(dynb_ctx *ctx, const conv_geom *g, bool wide,
                                  const dynb__tensor *x, const dynb__tensor *dy,
                                  const dynb__tensor *dw, bool acc) {
  const int ns = direct_splits(g->n), per = g->cout * g->cin * g->k * g->k;
  const int cp = pad16(g->cout), hw = g->h * g->w;
  dynb__tensor part = g->col, dyt = g->col;
  part.dims[0] = (int64_t)ns * per;
  dyt.offset += (size_t)ns * (size_t)per;
  dyt.dims[0] = (int64_t)g->n * hw * cp;
  dynb__launch l;
  if (wide) {
    DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", "dynb_convd_to_nhwc", g->dt));
    dynb__arg_int(&l, g->n);
    dynb__arg_int(&l, g->cout);
    dynb__arg_int(&l, cp);
    dynb__arg_int(&l, hw);
    dynb__arg_tensor(&l, dy);
    dynb__arg_tensor(&l, &dyt);
    size_t tiles[3] = {(size_t)(hw + 15) / 16, (size_t)cp / 16, (size_t)g->n};
    DYNB_TRY(dynb__launch_run(&l, 3, tiles, direct_local));
  }
  char name[48];
  if (wide)
    snprintf(name, sizeof name, "dynb_convd_weights_wide_k%d_w%d", g->k, row_tw(g->w));
  else
    snprintf(name, sizeof name, "dynb_convd_weights_w%d", row_tw(g->w));
  DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", name, g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, g->cin);
  dynb__arg_int(&l, g->cout);
  dynb__arg_int(&l, g->h);
  dynb__arg_int(&l, g->w);
  dynb__arg_int(&l, ns);
  if (wide) dynb__arg_int(&l, cp);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, wide ? &dyt : dy);
  dynb__arg_tensor(&l, &part);
  const int ob = wide ? 16 : 2;
  size_t global[3] = {(size_t)(g->cout + ob - 1) / (size_t)ob, (size_t)(g->cin + 1) / 2,
                      (size_t)ns};
  DYNB_TRY(dynb__launch_run(&l, 3, global, direct_local));
  DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", "dynb_convd_weights_sum", g->dt));
  dynb__arg_int(&l, per);
  dynb__arg_int(&l, ns);
  dynb__arg_tensor(&l, &part);
  dynb__arg_tensor(&l, dw);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, (size_t)per);
}

/* ---- Choosing a route per layer shape -------------------------------------- */

static uint64_t shape_key(const conv_geom *g) {
  const int v[8] = {0x636f6e76 /* "conv" */, (int)g->dt, g->n, g->cin, g->cout, g->h, g->w, g->k};
  return dynb__fnv1a(DYNB__FNV_SEED, v, sizeof v);
}

/* One direction by one route. For the adjoint, `out` is its input (the
 * Cout side) and `in` its output. */
static dynb_status run_route(dynb_ctx *ctx, const conv_geom *g, int kind, conv_route r,
                             const dynb__tensor *in, const dynb__tensor *w,
                             const dynb__tensor *b, const dynb__tensor *out, bool acc) {
  if (kind == KIND_WEIGHTS)
    return r == ROUTE_GEMM ? conv_weights(ctx, g, in, out, w, acc)
                           : direct_weights(ctx, g, r != ROUTE_ROW, in, out, w, acc);
  bool tr = kind == KIND_ADJOINT;
  const dynb__tensor *src = tr ? out : in, *dst = tr ? in : out;
  if (r == ROUTE_ROW) return row_apply(ctx, g, tr, src, w, b, dst, acc);
  if (r == ROUTE_WIDE || r == ROUTE_WIDE2)
    return wide_apply(ctx, g, r == ROUTE_WIDE2 ? 2 : 1, tr, src, w, b, dst, acc);
  return tr ? conv_adjoint(ctx, g, src, w, b, dst, acc) : conv_apply(ctx, g, src, w, b, dst, acc);
}

/* Seconds of one call of one direction and route, finished. */
static dynb_status run_timed(dynb_ctx *ctx, const conv_geom *g, int kind, conv_route r,
                             const dynb__tensor *t, double *secs) {
  double t0 = dynb__now();
  DYNB_TRY(run_route(ctx, g, kind, r, &t[0], &t[2], NULL, &t[1], false));
  DYNB_TRY(dynb__finish(ctx));
  *secs = dynb__now() - t0;
  return DYNB_OK;
}

/* Each route's best of TIMING_ROUNDS runs, the rounds interleaved (every
 * route once per round, after an untimed round that builds the kernels): a
 * burst of other load on a shared machine then slows one run of every
 * route, not every run of one route, and cannot make the choice by itself.
 * A route the shape lacks keeps 1e30. */
enum { TIMING_ROUNDS = 5 };

static dynb_status time_routes(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *t,
                               double secs[KINDS][ROUTES]) {
  for (int kind = 0; kind < KINDS; kind++)
    for (int r = 0; r < ROUTES; r++) secs[kind][r] = 1e30;
  for (int round = -1; round < TIMING_ROUNDS; round++)
    for (int kind = 0; kind < KINDS; kind++)
      for (int r = 0; r < ROUTES; r++) {
        if (!route_usable(ctx, g, kind, (conv_route)r)) continue;
        double dt;
        DYNB_TRY(run_timed(ctx, g, kind, (conv_route)r, t, &dt));
        if (round >= 0 && dt < secs[kind][r]) secs[kind][r] = dt;
      }
  return DYNB_OK;
}

/* The most work any usable route of any direction takes (at least 1). */
static size_t usable_workspace(const dynb_ctx *ctx, const conv_geom *g) {
  size_t need = 1;
  for (int kind = 0; kind < KINDS; kind++)
    for (int r = 0; r < ROUTES; r++)
      if (route_usable(ctx, g, kind, (conv_route)r)) {
        size_t rw = route_workspace(g, kind, (conv_route)r);
        need = rw > need ? rw : need;
      }
  return need;
}

/* Times every usable route of every direction on zero-filled scratch
 * tensors of the shape (allocated here, once per shape and context: the
 * plan calls this through dynb__conv2d_prepare before any step). Where no
 * route of a direction fits the device's largest allocation, the GEMM one
 * stays chosen, and laying out its work fails naming it. */
static dynb_status measure(dynb_ctx *ctx, conv_geom *g, int *choice) {
  const int64_t din[4] = {g->n, g->cin, g->h, g->w}, dout[4] = {g->n, g->cout, g->h, g->w};
  const int64_t dw[4] = {g->cout, g->cin, g->k, g->k};
  const int64_t dwork = (int64_t)usable_workspace(ctx, g);
  dynb__tensor t[4] = {{0}};
  dynb_status st = dynb__tensor_alloc(ctx, g->dt, 4, din, &t[0]);
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, g->dt, 4, dout, &t[1]);
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, g->dt, 4, dw, &t[2]);
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, g->dt, 1, &dwork, &t[3]);
  for (int i = 0; i < 4 && st == DYNB_OK; i++) st = dynb__tensor_zero(ctx, &t[i]);
  *choice = 0;
  if (st == DYNB_OK) carve_work(g, &t[3]);
  double secs[KINDS][ROUTES];
  if (st == DYNB_OK) st = time_routes(ctx, g, t, secs);
  static const char *const kinds[] = {"forward", "adjoint", "weights"};
  for (int kind = 0; kind < KINDS && st == DYNB_OK; kind++) {
    int best = 0;
    for (int r = 1; r < ROUTES; r++)
      if (secs[kind][r] < secs[kind][best]) best = r;
    *choice |= best << (2 * kind);
    char ms[ROUTES][32];
    for (int r = 0; r < ROUTES; r++)
      snprintf(ms[r], sizeof ms[r], secs[kind][r] < 1e29 ? "%.3f" : "-", 1e3 * secs[kind][r]);
    dynb__log(ctx, DYNB_LOG_INFO,
              "conv %s n%d c%d->%d k%d %dx%d ms: gemm %s, row %s, wide %s, wide2 %s: %s",
              kinds[kind], g->n, g->cin, g->cout, g->k, g->h, g->w, ms[0], ms[1], ms[2], ms[3],
              route_names[best]);
  }
  for (int i = 0; i < 4; i++) dynb__tensor_release(&t[i]);
  return st;
}

/* Whether every direction of `choice` is a route this shape has, with
 * work that fits one buffer. Choices can come from a file (a checkpoint's
 * routes, a tuning cache written under other limits), so they are checked
 * before use; one that does not fit is timed afresh. */
static bool choice_fits(const dynb_ctx *ctx, const conv_geom *g, int choice) {
  if (choice < 0 || choice >= 1 << (2 * KINDS)) return false;
  for (int kind = 0; kind < KINDS; kind++) {
    conv_route r = route_of(choice, kind);
    if (!route_usable(ctx, g, kind, r)) return false;
  }
  return true;
}

/* ---- Choices kept in the tuning cache --------------------------------------
 * A timed choice is stored in the context's tuning cache (src/runtime/
 * tune.c) as "conv.<dtype>.n<N>.c<Cin>x<Cout>.k<k>.<H>x<W> = <forward>,<adjoint>,
 * <weights>", so that later processes on the same device take the same
 * routes (and compute bit for bit the same) without timing again. The
 * cache is a file: its routes are checked like any input. */
static void cached_name(const conv_geom *g, char *buf, size_t cap) {
  snprintf(buf, cap, "conv.%s.n%d.c%dx%d.k%d.%dx%d", dynb__dtype_name(g->dt), g->n, g->cin,
           g->cout, g->k, g->h, g->w);
}

static bool cached_choice(const dynb_ctx *ctx, const conv_geom *g, const char *name,
                          int *choice) {
  char val[64];
  if (!dynb__tune_get(ctx, name, val, sizeof val)) return false;
  int c = 0, kind = 0;
  for (char *tok = val; kind < KINDS; kind++) {
    char *end = strchr(tok, ',');
    if (end) *end = 0;
    int r = -1;
    for (int i = 0; i < ROUTES; i++)
      if (strcmp(tok, route_names[i]) == 0) r = i;
    if (r < 0 || (kind < KINDS - 1) != (end != NULL)) return false;
    c |= r << (2 * kind);
    if (end) tok = end + 1;
  }
  if (!choice_fits(ctx, g, c)) return false;
  *choice = c;
  return true;
}

/* Best effort: a cache that cannot be written costs a re-timing later,
 * never a failed call. */
static void cache_choice(dynb_ctx *ctx, const char *name, int choice) {
  if (!ctx->tune_path) return;
  char val[64];
  snprintf(val, sizeof val, "%s,%s,%s", route_names[route_of(choice, KIND_APPLY)],
           route_names[route_of(choice, KIND_ADJOINT)], route_names[route_of(choice, KIND_WEIGHTS)]);
  /* The call itself succeeds: a failure here must not become the
   * context's last error. */
  dynb_status last = ctx->last_status;
  dynb_status st = dynb__tune_put(ctx, name, val);
  if (st == DYNB_OK) st = dynb__tune_save(ctx);
  if (st != DYNB_OK) {
    dynb__log(ctx, DYNB_LOG_WARN, "convolution routes not cached: %s", ctx->last_error);
    ctx->last_status = last;
  }
}

/* Which route each direction of this shape takes: fixed by the context's
 * policy where the shape has that route, else timed once and remembered.
 * Direct routes exist for k = 3 (row, wide) and k = 1 (wide). */
static dynb_status choose(dynb_ctx *ctx, const conv_geom *g, int *choice) {
  *choice = 0;
  if ((g->k != 1 && g->k != 3) || ctx->conv_policy == DYNB__CONV_GEMM) return DYNB_OK;
  if (ctx->conv_policy != DYNB__CONV_AUTO) {
    /* Forced: where the shape lacks the route, the GEMM (row, k = 1) or
     * the one-vector kernels (wide2's weight gradient) stand in. */
    int r = ctx->conv_policy == DYNB__CONV_ROW    ? (g->k == 3 ? ROUTE_ROW : ROUTE_GEMM)
            : ctx->conv_policy == DYNB__CONV_WIDE ? ROUTE_WIDE
                                                  : ROUTE_WIDE2;
    *choice = r | r << 2 | (r == ROUTE_WIDE2 ? ROUTE_WIDE : r) << 4;
    return DYNB_OK;
  }
  uint64_t key = shape_key(g);
  int known = dynb__choice_get(ctx, key);
  if (known >= 0 && choice_fits(ctx, g, known)) {
    *choice = known;
    return DYNB_OK;
  }
  char name[96];
  cached_name(g, name, sizeof name);
  if (cached_choice(ctx, g, name, &known)) {
    *choice = known;
    return dynb__choice_put(ctx, key, known);
  }
  conv_geom scratch = *g;
  DYNB_TRY(measure(ctx, &scratch, choice));
  DYNB_TRY(dynb__choice_put(ctx, key, *choice));
  cache_choice(ctx, name, *choice);
  return DYNB_OK;
}

dynb_status dynb__conv2d_prepare(dynb_ctx *ctx, dynb_dtype dt, int64_t n, int64_t cin,
                                 int64_t cout, int64_t h, int64_t w, int64_t k, size_t *work) {
  if (work) *work = 0;
  DYNB_CHECK(ctx, dynb__conv2d_workspace(n, cin, cout, h, w, k) != SIZE_MAX,
             DYNB_STATUS_INVALID_ARGUMENT, "conv2d_prepare: impossible shape");
  DYNB_TRY(dynb__check_real(ctx, dt));
  conv_geom g = {.dt = dt, .n = (int)n, .cin = (int)cin, .cout = (int)cout, .h = (int)h,
                 .w = (int)w, .k = (int)k};
  int choice = 0;
  DYNB_TRY(choose(ctx, &g, &choice));
  if (work) *work = choice_workspace(&g, choice);
  return DYNB_OK;
}

/* One direction of an op by the route chosen for its shape, once `work`
 * is known to hold what that route takes. */
static dynb_status route(dynb_ctx *ctx, const char *op, conv_geom *g, int kind,
                         const dynb__tensor *in, const dynb__tensor *w, const dynb__tensor *b,
                         const dynb__tensor *out, bool acc, const dynb__tensor *work) {
  int choice = 0;
  DYNB_TRY(choose(ctx, g, &choice));
  conv_route r = route_of(choice, kind);
  size_t need = route_workspace(g, kind, r), have = dynb__tensor_numel(work);
  DYNB_CHECK(ctx, have >= need, DYNB_STATUS_BUFFER_TOO_SMALL,
             "%s: work holds %zu elements, the %s route needs %zu", op, have, route_names[r],
             need);
  carve_work(g, work);
  return run_route(ctx, g, kind, r, in, w, b, out, acc);
}

/* ---- Ops ------------------------------------------------------------------- */

dynb_status dynb__conv2d_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *w,
                                 const dynb__tensor *b, const dynb__tensor *y,
                                 const dynb__tensor *work) {
  const char *op = "conv2d_forward";
  DYNB_CHECK(ctx, x && w && y && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "x", x, &g.dt));
  DYNB_TRY(check_conv(ctx, op, w, "w", x, "x", y, "y", work, &g));
  DYNB_TRY(check_bias(ctx, op, b, g.cout, "Cout", &g));
  return route(ctx, op, &g, KIND_APPLY, x, w, b, y, false, work);
}

dynb_status dynb__conv2d_backward_data(dynb_ctx *ctx, const dynb__tensor *dy,
                                       const dynb__tensor *w, const dynb__tensor *dx, bool acc,
                                       const dynb__tensor *work) {
  const char *op = "conv2d_backward_data";
  DYNB_CHECK(ctx, dy && w && dx && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "dy", dy, &g.dt));
  DYNB_TRY(check_conv(ctx, op, w, "w", dx, "dx", dy, "dy", work, &g));
  return route(ctx, op, &g, KIND_ADJOINT, dx, w, NULL, dy, acc, work);
}

dynb_status dynb__conv2d_backward_weights(dynb_ctx *ctx, const dynb__tensor *x,
                                          const dynb__tensor *dy, const dynb__tensor *dw,
                                          bool acc, const dynb__tensor *work) {
  const char *op = "conv2d_backward_weights";
  DYNB_CHECK(ctx, x && dy && dw && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "x", x, &g.dt));
  DYNB_TRY(check_conv(ctx, op, dw, "dw", x, "x", dy, "dy", work, &g));
  return route(ctx, op, &g, KIND_WEIGHTS, x, dw, NULL, dy, acc, work);
}

dynb_status dynb__conv2d_transpose_forward(dynb_ctx *ctx, const dynb__tensor *z,
                                           const dynb__tensor *w, const dynb__tensor *b,
                                           const dynb__tensor *y, const dynb__tensor *work) {
  const char *op = "conv2d_transpose_forward";
  DYNB_CHECK(ctx, z && w && y && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "z", z, &g.dt));
  DYNB_TRY(check_conv(ctx, op, w, "w", y, "y", z, "z", work, &g));
  DYNB_TRY(check_bias(ctx, op, b, g.cin, "Cin", &g));
  return route(ctx, op, &g, KIND_ADJOINT, y, w, b, z, false, work);
}

dynb_status dynb__conv2d_transpose_backward_data(dynb_ctx *ctx, const dynb__tensor *dy,
                                                 const dynb__tensor *w, const dynb__tensor *dz,
                                                 bool acc, const dynb__tensor *work) {
  const char *op = "conv2d_transpose_backward_data";
  DYNB_CHECK(ctx, dy && w && dz && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "dy", dy, &g.dt));
  DYNB_TRY(check_conv(ctx, op, w, "w", dy, "dy", dz, "dz", work, &g));
  return route(ctx, op, &g, KIND_APPLY, dy, w, NULL, dz, acc, work);
}

dynb_status dynb__conv2d_transpose_backward_weights(dynb_ctx *ctx, const dynb__tensor *z,
                                                    const dynb__tensor *dy, const dynb__tensor *dw,
                                                    bool acc, const dynb__tensor *work) {
  const char *op = "conv2d_transpose_backward_weights";
  DYNB_CHECK(ctx, z && dy && dw && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "z", z, &g.dt));
  DYNB_TRY(check_conv(ctx, op, dw, "dw", dy, "dy", z, "z", work, &g));
  /* <dy, Kᵀ z> = <K dy, z>: the conv weight gradient with input dy and output gradient z. */
  return route(ctx, op, &g, KIND_WEIGHTS, dy, dw, NULL, z, acc, work);
}
