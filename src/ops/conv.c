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

/* The col matrix plus one channel-major copy of the Cout side. SIZE_MAX for
 * sizes no tensor could have (every tensor stays under 2^31 elements), so
 * that sizing an arena from it fails instead of wrapping around. */
size_t dynb__conv2d_workspace(int64_t n, int64_t cin, int64_t cout, int64_t h, int64_t w,
                              int64_t k) {
  const int64_t lim = INT32_MAX;
  if (n < 1 || cin < 1 || cout < 1 || h < 1 || w < 1 || k < 1) return SIZE_MAX;
  if (n > lim || cin > lim || cout > lim || h > lim || w > lim || k > lim) return SIZE_MAX;
  /* Each factor is below 2^31, so a product of two fits in 62 bits; every
   * product is checked before it takes part in the next one. */
  uint64_t pix = (uint64_t)n * (uint64_t)h;
  if (pix > lim) return SIZE_MAX;
  pix *= (uint64_t)w;
  uint64_t kk = (uint64_t)k * (uint64_t)k;
  if (pix > lim || kk > lim) return SIZE_MAX;
  uint64_t rows = (uint64_t)cin * kk;
  if (rows > lim) return SIZE_MAX;
  rows += (uint64_t)cout;
  /* pix * rows < 2^62 fits size_t where it has 64 bits; checked for 32. */
  if (rows > lim || pix * rows > (uint64_t)(SIZE_MAX / 2)) return SIZE_MAX;
  /* The direct weight gradient's per-split partial sums (k = 3 only). */
  uint64_t part = 0;
  if (k == 3) {
    uint64_t wsz = (uint64_t)cout * (uint64_t)cin;
    if (wsz > lim) return SIZE_MAX;
    part = (uint64_t)direct_splits((int)n) * wsz * 9;
  }
  return (size_t)(pix * rows > part ? pix * rows : part);
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

/* work: at least dynb__conv2d_workspace elements; carved into col and rows. */
static dynb_status check_work(dynb_ctx *ctx, const char *op, const dynb__tensor *work,
                              conv_geom *g) {
  DYNB_TRY(check_named(ctx, op, "work", work, g->dt, -1));
  size_t need = dynb__conv2d_workspace(g->n, g->cin, g->cout, g->h, g->w, g->k);
  size_t have = dynb__tensor_numel(work);
  DYNB_CHECK(ctx, have >= need, DYNB_STATUS_BUFFER_TOO_SMALL,
             "%s: work holds %zu elements, needs %zu", op, have, need);
  carve_work(g, work);
  return DYNB_OK;
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
  return check_work(ctx, op, work, g);
}

/* ---- Launches -------------------------------------------------------------- */

static size_t pixels(const conv_geom *g) { return (size_t)g->n * (size_t)g->h * (size_t)g->w; }

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

/* ---- The direct path (kernels/convd.cl, k = 3) ----------------------------- */

/* The row-chunk width of the direct kernels: the smallest that covers a row
 * (wider rows are split into chunks of 32). */
static int direct_tw(int w) { return w <= 8 ? 8 : w <= 16 ? 16 : 32; }

/* One work-item per work-group: each already holds a row's worth of
 * vector work, and a driver-chosen group (PoCL picked 32×16×8) multiplies
 * the private accumulators by its size, which overflowed PoCL's worker
 * stack for the weight gradient. */
static const size_t direct_local[3] = {1, 1, 1};

/* out (+)= K in (+ b) or, with tr, out (+)= Kᵀ in (+ b). */
static dynb_status direct_apply(dynb_ctx *ctx, const conv_geom *g, bool tr,
                                const dynb__tensor *in, const dynb__tensor *w,
                                const dynb__tensor *b, const dynb__tensor *out, bool acc) {
  const int ci = tr ? g->cout : g->cin, co = tr ? g->cin : g->cout;
  const int tw = direct_tw(g->w), cob = co >= 8 ? 8 : 4;
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

/* dw (+)= ∂<dy, K x>/∂W: per-split partial sums in the workspace, then
 * their ordered sum. */
static dynb_status direct_weights(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *x,
                                  const dynb__tensor *dy, const dynb__tensor *dw, bool acc) {
  const int ns = direct_splits(g->n), per = g->cout * g->cin * 9;
  dynb__tensor part = g->col;
  part.dims[0] = (int64_t)ns * per;
  char name[48];
  snprintf(name, sizeof name, "dynb_convd_weights_w%d", direct_tw(g->w));
  dynb__launch l;
  DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", name, g->dt));
  dynb__arg_int(&l, g->n);
  dynb__arg_int(&l, g->cin);
  dynb__arg_int(&l, g->cout);
  dynb__arg_int(&l, g->h);
  dynb__arg_int(&l, g->w);
  dynb__arg_int(&l, ns);
  dynb__arg_tensor(&l, x);
  dynb__arg_tensor(&l, dy);
  dynb__arg_tensor(&l, &part);
  size_t global[3] = {(size_t)(g->cout + 1) / 2, (size_t)(g->cin + 1) / 2, (size_t)ns};
  DYNB_TRY(dynb__launch_run(&l, 3, global, direct_local));
  DYNB_TRY(dynb__launch_begin(&l, ctx, "convd", "dynb_convd_weights_sum", g->dt));
  dynb__arg_int(&l, per);
  dynb__arg_int(&l, ns);
  dynb__arg_tensor(&l, &part);
  dynb__arg_tensor(&l, dw);
  dynb__arg_int(&l, acc);
  return dynb__launch_1d(&l, (size_t)per);
}

/* ---- Choosing a path per layer shape --------------------------------------- */

/* Bits of a shape's choice: which of the three paths run direct. */
enum { DIRECT_APPLY = 1, DIRECT_ADJOINT = 2, DIRECT_WEIGHTS = 4, DIRECT_ALL = 7 };

static uint64_t shape_key(const conv_geom *g) {
  const int v[8] = {0x636f6e76 /* "conv" */, (int)g->dt, g->n, g->cin, g->cout, g->h, g->w, g->k};
  return dynb__fnv1a(DYNB__FNV_SEED, v, sizeof v);
}

/* The three paths, by kind (0 apply, 1 adjoint, 2 weights) and route, on
 * the scratch tensors of a timing run. */
static dynb_status run_kind(dynb_ctx *ctx, const conv_geom *g, int kind, bool direct,
                            const dynb__tensor *in, const dynb__tensor *w,
                            const dynb__tensor *out) {
  if (kind == 0)
    return direct ? direct_apply(ctx, g, false, in, w, NULL, out, false)
                  : conv_apply(ctx, g, in, w, NULL, out, false);
  if (kind == 1)
    return direct ? direct_apply(ctx, g, true, out, w, NULL, in, false)
                  : conv_adjoint(ctx, g, out, w, NULL, in, false);
  return direct ? direct_weights(ctx, g, in, out, w, false)
                : conv_weights(ctx, g, in, out, w, false);
}

/* Seconds per call of one kind and route: one untimed call (it builds the
 * kernels), then the best of three. */
static dynb_status time_kind(dynb_ctx *ctx, const conv_geom *g, int kind, bool direct,
                             const dynb__tensor *in, const dynb__tensor *w,
                             const dynb__tensor *out, double *secs) {
  DYNB_TRY(run_kind(ctx, g, kind, direct, in, w, out));
  DYNB_TRY(dynb__finish(ctx));
  *secs = 1e30;
  for (int r = 0; r < 3; r++) {
    double t0 = dynb__now();
    DYNB_TRY(run_kind(ctx, g, kind, direct, in, w, out));
    DYNB_TRY(dynb__finish(ctx));
    double t = dynb__now() - t0;
    if (t < *secs) *secs = t;
  }
  return DYNB_OK;
}

/* Times both routes of all three kinds on zero-filled scratch tensors of
 * the shape (allocated here, once per shape and context: the plan calls
 * this through dynb__conv2d_prepare before any step). */
static dynb_status measure(dynb_ctx *ctx, conv_geom *g, int *bits) {
  const int64_t din[4] = {g->n, g->cin, g->h, g->w}, dout[4] = {g->n, g->cout, g->h, g->w};
  const int64_t dw[4] = {g->cout, g->cin, g->k, g->k};
  const int64_t dwork = (int64_t)dynb__conv2d_workspace(g->n, g->cin, g->cout, g->h, g->w, g->k);
  dynb__tensor t[4] = {{0}};
  dynb_status st = dynb__tensor_alloc(ctx, g->dt, 4, din, &t[0]);
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, g->dt, 4, dout, &t[1]);
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, g->dt, 4, dw, &t[2]);
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, g->dt, 1, &dwork, &t[3]);
  for (int i = 0; i < 4 && st == DYNB_OK; i++) st = dynb__tensor_zero(ctx, &t[i]);
  *bits = 0;
  if (st == DYNB_OK) carve_work(g, &t[3]);
  for (int kind = 0; kind < 3 && st == DYNB_OK; kind++) {
    double tg = 0, td = 0;
    st = time_kind(ctx, g, kind, false, &t[0], &t[2], &t[1], &tg);
    if (st == DYNB_OK) st = time_kind(ctx, g, kind, true, &t[0], &t[2], &t[1], &td);
    if (st == DYNB_OK && td < tg) *bits |= 1 << kind;
    static const char *const kinds[] = {"forward", "adjoint", "weights"};
    if (st == DYNB_OK)
      dynb__log(ctx, DYNB_LOG_INFO, "conv %s n%d c%d->%d %dx%d: gemm %.3f ms, direct %.3f ms",
                kinds[kind], g->n, g->cin, g->cout, g->h, g->w, 1e3 * tg, 1e3 * td);
  }
  for (int i = 0; i < 4; i++) dynb__tensor_release(&t[i]);
  return st;
}

/* Which routes this shape takes: fixed by the context's policy, else timed
 * once and remembered. Only 3×3 kernels have a direct route. */
static dynb_status choose(dynb_ctx *ctx, const conv_geom *g, int *bits) {
  *bits = 0;
  if (g->k != 3 || ctx->conv_policy == DYNB__CONV_GEMM) return DYNB_OK;
  if (ctx->conv_policy == DYNB__CONV_DIRECT) {
    *bits = DIRECT_ALL;
    return DYNB_OK;
  }
  uint64_t key = shape_key(g);
  int known = dynb__choice_get(ctx, key);
  if (known >= 0) {
    *bits = known;
    return DYNB_OK;
  }
  conv_geom scratch = *g;
  DYNB_TRY(measure(ctx, &scratch, bits));
  return dynb__choice_put(ctx, key, *bits);
}

dynb_status dynb__conv2d_prepare(dynb_ctx *ctx, dynb_dtype dt, int64_t n, int64_t cin,
                                 int64_t cout, int64_t h, int64_t w, int64_t k) {
  DYNB_CHECK(ctx, dynb__conv2d_workspace(n, cin, cout, h, w, k) != SIZE_MAX,
             DYNB_STATUS_INVALID_ARGUMENT, "conv2d_prepare: impossible shape");
  DYNB_TRY(dynb__check_real(ctx, dt));
  conv_geom g = {.dt = dt, .n = (int)n, .cin = (int)cin, .cout = (int)cout, .h = (int)h,
                 .w = (int)w, .k = (int)k};
  int bits = 0;
  return choose(ctx, &g, &bits);
}

/* The three paths of an op, each by the route chosen for its shape. */
static dynb_status route_apply(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *x,
                               const dynb__tensor *w, const dynb__tensor *b,
                               const dynb__tensor *y, bool acc) {
  int bits = 0;
  DYNB_TRY(choose(ctx, g, &bits));
  return bits & DIRECT_APPLY ? direct_apply(ctx, g, false, x, w, b, y, acc)
                             : conv_apply(ctx, g, x, w, b, y, acc);
}

static dynb_status route_adjoint(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *y,
                                 const dynb__tensor *w, const dynb__tensor *b,
                                 const dynb__tensor *x, bool acc) {
  int bits = 0;
  DYNB_TRY(choose(ctx, g, &bits));
  return bits & DIRECT_ADJOINT ? direct_apply(ctx, g, true, y, w, b, x, acc)
                               : conv_adjoint(ctx, g, y, w, b, x, acc);
}

static dynb_status route_weights(dynb_ctx *ctx, const conv_geom *g, const dynb__tensor *x,
                                 const dynb__tensor *dy, const dynb__tensor *dw, bool acc) {
  int bits = 0;
  DYNB_TRY(choose(ctx, g, &bits));
  return bits & DIRECT_WEIGHTS ? direct_weights(ctx, g, x, dy, dw, acc)
                               : conv_weights(ctx, g, x, dy, dw, acc);
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
  return route_apply(ctx, &g, x, w, b, y, false);
}

dynb_status dynb__conv2d_backward_data(dynb_ctx *ctx, const dynb__tensor *dy,
                                       const dynb__tensor *w, const dynb__tensor *dx, bool acc,
                                       const dynb__tensor *work) {
  const char *op = "conv2d_backward_data";
  DYNB_CHECK(ctx, dy && w && dx && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "dy", dy, &g.dt));
  DYNB_TRY(check_conv(ctx, op, w, "w", dx, "dx", dy, "dy", work, &g));
  return route_adjoint(ctx, &g, dy, w, NULL, dx, acc);
}

dynb_status dynb__conv2d_backward_weights(dynb_ctx *ctx, const dynb__tensor *x,
                                          const dynb__tensor *dy, const dynb__tensor *dw,
                                          bool acc, const dynb__tensor *work) {
  const char *op = "conv2d_backward_weights";
  DYNB_CHECK(ctx, x && dy && dw && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "x", x, &g.dt));
  DYNB_TRY(check_conv(ctx, op, dw, "dw", x, "x", dy, "dy", work, &g));
  return route_weights(ctx, &g, x, dy, dw, acc);
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
  return route_adjoint(ctx, &g, z, w, b, y, false);
}

dynb_status dynb__conv2d_transpose_backward_data(dynb_ctx *ctx, const dynb__tensor *dy,
                                                 const dynb__tensor *w, const dynb__tensor *dz,
                                                 bool acc, const dynb__tensor *work) {
  const char *op = "conv2d_transpose_backward_data";
  DYNB_CHECK(ctx, dy && w && dz && work, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", op);
  conv_geom g = {0};
  DYNB_TRY(call_real(ctx, op, "dy", dy, &g.dt));
  DYNB_TRY(check_conv(ctx, op, w, "w", dy, "dy", dz, "dz", work, &g));
  return route_apply(ctx, &g, dy, w, NULL, dz, acc);
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
  return route_weights(ctx, &g, dy, z, dw, acc);
}
