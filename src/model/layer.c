/* Layer functions f(y, θ) of SPEC §1.2 — doublesym, double, preact — with
 * their backward passes, built from the op library.
 *
 * θ is one contiguous block per control point, tensors in the order that
 * layer_layout() appends them. Every evaluation keeps in its cache exactly
 * the intermediates its backward pass reads; a norm of kind `none` is the
 * identity and costs neither memory nor a pass (its output is its input). */
#include <stdio.h>
#include <string.h>

#include "model/model.h"

const char *dynb__layer_name(dynb_layer_kind k) {
  switch (k) {
#define NAME(name, value, str) \
  case DYNB_LAYER_##name:      \
    return str;
    DYNB_LAYER_MAP(NAME)
#undef NAME
  }
  return "?";
}

bool dynb__layer_parse(const char *name, dynb_layer_kind *out) {
#define PARSE(n, value, str)    \
  if (strcmp(name, str) == 0) { \
    *out = DYNB_LAYER_##n;      \
    return true;                \
  }
  DYNB_LAYER_MAP(PARSE)
#undef PARSE
  return false;
}

const char *dynb__norm_name(dynb_norm_kind k) {
  switch (k) {
#define NAME(name, value, str) \
  case DYNB_NORM_##name:       \
    return str;
    DYNB_NORM_MAP(NAME)
#undef NAME
  }
  return "?";
}

bool dynb__norm_parse(const char *name, dynb_norm_kind *out) {
#define PARSE(n, value, str)    \
  if (strcmp(name, str) == 0) { \
    *out = DYNB_NORM_##n;       \
    return true;                \
  }
  DYNB_NORM_MAP(PARSE)
#undef PARSE
  return false;
}

/* Where each tensor of θ starts. Index 0 is the first convolution (K for
 * doublesym) and its norm, index 1 the second (doublesym's transposed
 * convolution has only a bias). SIZE_MAX marks an absent tensor. */
typedef struct layout {
  size_t k[2], b[2], nw[2], nb[2];
  size_t total;
} layout;

static void append(dynb__param_entry *e, int *n, size_t *at, size_t *where, const char *name,
                   int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, bool is_norm) {
  dynb__param_entry *p = &e[*n];
  snprintf(p->name, sizeof p->name, "%s", name);
  p->offset = *at;
  p->ndim = ndim;
  p->dims[0] = d0, p->dims[1] = d1, p->dims[2] = d2, p->dims[3] = d3;
  p->is_norm = is_norm;
  *where = *at;
  size_t count = (size_t)d0;
  for (int i = 1; i < ndim; i++) count *= (size_t)(i == 1 ? d1 : i == 2 ? d2 : d3);
  *at += count;
  (*n)++;
}

static void append_norm(const dynb__layer *l, dynb__param_entry *e, int *n, size_t *at,
                        layout *lo, int j, const char *prefix) {
  char name[24];
  int64_t c = l->channels;
  if (l->norm == DYNB_NORM_BATCH) {
    snprintf(name, sizeof name, "%s.weight", prefix);
    append(e, n, at, &lo->nw[j], name, 1, c, 0, 0, 0, true);
  }
  if (l->norm != DYNB_NORM_NONE) {
    snprintf(name, sizeof name, "%s.bias", prefix);
    append(e, n, at, &lo->nb[j], name, 1, c, 0, 0, 0, true);
  }
}

/* The single place that decides θ's layout and names. */
static int layer_layout(const dynb__layer *l, dynb__param_entry *e, layout *lo) {
  int n = 0;
  size_t at = 0;
  int64_t c = l->channels, k = l->kernel;
  for (int j = 0; j < 2; j++) lo->k[j] = lo->b[j] = lo->nw[j] = lo->nb[j] = SIZE_MAX;
  if (l->kind == DYNB_LAYER_HAMILTONIAN) {
    /* One K; index 0 is the half with Kᵀ (b₁, norm1), 1 the half with K. */
    append(e, &n, &at, &lo->k[0], "conv.weight", 4, c, c, k, k, false);
    append(e, &n, &at, &lo->b[0], "convt.bias", 1, c, 0, 0, 0, false);
    append(e, &n, &at, &lo->b[1], "conv.bias", 1, c, 0, 0, 0, false);
    append_norm(l, e, &n, &at, lo, 0, "norm1");
    append_norm(l, e, &n, &at, lo, 1, "norm2");
  } else if (l->kind == DYNB_LAYER_DOUBLESYM) {
    append(e, &n, &at, &lo->k[0], "conv.weight", 4, c, c, k, k, false);
    append(e, &n, &at, &lo->b[0], "conv.bias", 1, c, 0, 0, 0, false);
    append(e, &n, &at, &lo->b[1], "convt.bias", 1, c, 0, 0, 0, false);
    append_norm(l, e, &n, &at, lo, 0, "norm");
  } else {
    append(e, &n, &at, &lo->k[0], "conv1.weight", 4, c, c, k, k, false);
    append(e, &n, &at, &lo->b[0], "conv1.bias", 1, c, 0, 0, 0, false);
    append(e, &n, &at, &lo->k[1], "conv2.weight", 4, c, c, k, k, false);
    append(e, &n, &at, &lo->b[1], "conv2.bias", 1, c, 0, 0, 0, false);
    append_norm(l, e, &n, &at, lo, 0, "norm1");
    append_norm(l, e, &n, &at, lo, 1, "norm2");
  }
  lo->total = at;
  return n;
}

dynb_status dynb__layer_validate(const dynb__layer *l, char *err, size_t errlen) {
  const char *why = NULL;
  if (l->kind < DYNB_LAYER_DOUBLESYM || l->kind > DYNB_LAYER_HAMILTONIAN)
    why = "unknown layer kind";
  else if (l->norm < DYNB_NORM_NONE || l->norm > DYNB_NORM_BATCH)
    why = "unknown norm";
  else if (l->act < DYNB_ACT_IDENTITY || l->act > DYNB_ACT_LEAKY_RELU)
    why = "unknown activation";
  else if (l->channels < 1 || l->channels > 65536)
    why = "channels must be in 1..65536";
  else if (l->kernel < 1 || l->kernel > 15 || l->kernel % 2 == 0)
    why = "kernel must be odd, 1..15";
  if (!why) return DYNB_OK;
  snprintf(err, errlen, "%s", why);
  return DYNB_STATUS_SPEC_ERROR;
}

int dynb__layer_params(const dynb__layer *l, dynb__param_entry *out, size_t *total) {
  dynb__param_entry scratch[DYNB_LAYER_MAX_PARAMS];
  layout lo;
  int n = layer_layout(l, out ? out : scratch, &lo);
  if (total) *total = lo.total;
  return n;
}

int dynb__layer_batch_norms(const dynb__layer *l) {
  if (l->norm != DYNB_NORM_BATCH) return 0;
  return l->kind == DYNB_LAYER_DOUBLESYM ? 1 : 2;
}

double dynb__layer_sign(const dynb__layer *l) {
  return l->kind == DYNB_LAYER_DOUBLESYM ? -1.0 : 1.0;
}

/* ---- the cache ------------------------------------------------------------ */

/* Views of one evaluation's intermediates, named after the formulas:
 * doublesym: z = K y + b₁, a = N(z), s = σ(a), g = Kᵀ s + b₂;
 * double:    z₁ = K₁ y + b₁, a₁ = N₁(z₁), s₁ = σ(a₁), z₂ = K₂ s₁ + b₂,
 *            a₂ = N₂(z₂), g = σ(a₂);
 * preact:    s₀ = σ(y), z₁ = K₁ s₀ + b₁, a₁ = N₁(z₁), s₁ = σ(a₁),
 *            z₂ = K₂ s₁ + b₂, g = N₂(z₂).
 * Index 0 holds the first convolution's, 1 the second's. */
typedef struct cache_views {
  dynb__tensor s0, z[2], a[2], s[2];
  dynb__tensor mean[2], invstd[2]; /* batch statistics of each batch norm */
} cache_views;

/* Lays out the cache; with base a dummy view it only counts. */
static size_t carve_cache(const dynb__layer *l, const dynb__tensor *base, int64_t n, int64_t h,
                          int64_t w, cache_views *v) {
  dynb__cursor c = {base, 0};
  int64_t d[4] = {n, l->channels, h, w}, ch = l->channels;
  bool norm = l->norm != DYNB_NORM_NONE, batch = l->norm == DYNB_NORM_BATCH;
  memset(v, 0, sizeof *v);
  /* a₁ only where σ' needs it; elsewhere it is z₁ or s₁ itself. */
  bool keep_a = dynb__norm_output_kept(l->norm, l->act);
  if (l->kind == DYNB_LAYER_PREACT) v->s0 = dynb__cursor_take(&c, 4, d);
  v->z[0] = dynb__cursor_take(&c, 4, d);
  v->a[0] = keep_a ? dynb__cursor_take(&c, 4, d) : v->z[0];
  v->s[0] = dynb__cursor_take(&c, 4, d);
  if (norm && !keep_a) v->a[0] = v->s[0];
  if (l->kind != DYNB_LAYER_DOUBLESYM && l->kind != DYNB_LAYER_HAMILTONIAN) {
    /* preact's last norm output is g itself, and with no norm z₂ is not read
     * by the backward pass: it then goes straight to the output. */
    if (l->kind == DYNB_LAYER_DOUBLE || norm) v->z[1] = dynb__cursor_take(&c, 4, d);
    if (l->kind == DYNB_LAYER_DOUBLE) v->a[1] = norm ? dynb__cursor_take(&c, 4, d) : v->z[1];
  }
  for (int j = 0; batch && j < dynb__layer_batch_norms(l); j++) {
    v->mean[j] = dynb__cursor_take(&c, 1, &ch);
    v->invstd[j] = dynb__cursor_take(&c, 1, &ch);
  }
  return c.at;
}

size_t dynb__layer_cache_size(const dynb__layer *l, int64_t n, int64_t h, int64_t w) {
  dynb__tensor dummy = {0};
  cache_views v;
  return carve_cache(l, &dummy, n, h, w, &v);
}

size_t dynb__layer_work_size(const dynb__layer *l, int64_t n, int64_t h, int64_t w) {
  int64_t c = l->channels;
  return 2 * (size_t)(n * c * h * w) + dynb__conv2d_workspace(n, c, c, h, w, l->kernel);
}

double dynb__layer_conv_flops(const dynb__layer *l, int64_t n, int64_t h, int64_t w) {
  double c = (double)l->channels, k = (double)l->kernel;
  /* Two convolutions, C -> C, k×k, for every kind (layer_layout: doublesym
   * uses K twice, double and preact K₁ and K₂). */
  return 2 * (2 * (double)n * c * c * k * k * (double)h * (double)w);
}

dynb_status dynb__layer_prepare(dynb_ctx *ctx, const dynb__layer *l, dynb_dtype dt, int64_t n,
                                int64_t h, int64_t w, size_t *work) {
  int64_t c = l->channels;
  size_t conv = 0;
  DYNB_TRY(dynb__conv2d_prepare(ctx, dt, n, c, c, h, w, l->kernel, &conv));
  *work = 2 * (size_t)(n * c * h * w) + conv;
  return DYNB_OK;
}

/* ---- shared pieces ---------------------------------------------------------- */

typedef struct parts {
  layout lo;
  cache_views cv;
  dynb__tensor k[2], b[2], nw[2], nb[2];      /* views into θ */
  dynb__tensor rmean[2], rvar[2];             /* running statistics */
  bool has_running;
  dynb__tensor conv_work, t1, t2;             /* scratch */
  int64_t dims[4];
} parts;

static dynb__tensor theta_view(const dynb__tensor *theta, size_t off, int ndim, int64_t d0,
                               int64_t d1, int64_t d2, int64_t d3) {
  int64_t d[4] = {d0, d1, d2, d3};
  dynb__tensor none = {0};
  return off == SIZE_MAX ? none : dynb__tensor_sub(theta, off, ndim, d);
}

static dynb_status prepare(dynb_ctx *ctx, const dynb__layer *l, const dynb__layer_eval *e,
                           const dynb__tensor *work, parts *p) {
  char err[128];
  DYNB_CHECK(ctx, l != NULL, DYNB_STATUS_INVALID_ARGUMENT, "layer: NULL layer");
  DYNB_CHECK(ctx, dynb__layer_validate(l, err, sizeof err) == DYNB_OK,
             DYNB_STATUS_INVALID_ARGUMENT, "layer: %s", err);
  DYNB_CHECK(ctx, e && e->x && e->theta && e->cache && work, DYNB_STATUS_INVALID_ARGUMENT,
             "layer: NULL argument");
  dynb_dtype dt = e->x->dtype;
  DYNB_TRY(dynb__tensor_check(ctx, e->x, "layer: x", dt, 4));
  int64_t n = e->x->dims[0], c = l->channels, h = e->x->dims[2], w = e->x->dims[3];
  DYNB_CHECK(ctx, e->x->dims[1] == c, DYNB_STATUS_SHAPE_MISMATCH,
             "layer: x has %lld channels, the layer %lld", (long long)e->x->dims[1], (long long)c);
  memset(p, 0, sizeof *p);
  dynb__param_entry entries[DYNB_LAYER_MAX_PARAMS];
  layer_layout(l, entries, &p->lo);
  DYNB_TRY(dynb__tensor_check(ctx, e->theta, "layer: theta", dt, -1));
  DYNB_CHECK(ctx, dynb__tensor_numel(e->theta) == p->lo.total, DYNB_STATUS_SHAPE_MISMATCH,
             "layer: theta has %zu elements, the layer needs %zu", dynb__tensor_numel(e->theta),
             p->lo.total);
  DYNB_TRY(dynb__tensor_check(ctx, e->cache, "layer: cache", dt, -1));
  DYNB_CHECK(ctx, dynb__tensor_numel(e->cache) >= dynb__layer_cache_size(l, n, h, w),
             DYNB_STATUS_BUFFER_TOO_SMALL, "layer: cache too small");
  DYNB_TRY(dynb__tensor_check(ctx, work, "layer: work", dt, -1));
  /* Checked in full before anything is enqueued: t1, t2 and what the
   * convolutions' routes take (known to the context after the first call). */
  size_t e_nchw = (size_t)(n * c * h * w), have = dynb__tensor_numel(work), need = 0;
  DYNB_TRY(dynb__layer_prepare(ctx, l, dt, n, h, w, &need));
  DYNB_CHECK(ctx, have >= need, DYNB_STATUS_BUFFER_TOO_SMALL,
             "layer: work holds %zu elements, its convolution routes need %zu", have, need);
  int nbn = dynb__layer_batch_norms(l);
  p->has_running = e->running != NULL;
  if (e->running) {
    DYNB_TRY(dynb__tensor_check(ctx, e->running, "layer: running", dt, -1));
    DYNB_CHECK(ctx, dynb__tensor_numel(e->running) == (size_t)(nbn * 2 * c),
               DYNB_STATUS_SHAPE_MISMATCH, "layer: running statistics need %d elements",
               (int)(nbn * 2 * c));
    for (int j = 0; j < nbn; j++) {
      p->rmean[j] = dynb__tensor_sub(e->running, (size_t)(2 * j) * (size_t)c, 1, &c);
      p->rvar[j] = dynb__tensor_sub(e->running, (size_t)(2 * j + 1) * (size_t)c, 1, &c);
    }
  }
  DYNB_CHECK(ctx, e->train || nbn == 0 || e->running, DYNB_STATUS_INVALID_ARGUMENT,
             "layer: evaluation mode needs running statistics");
  /* The batch norm would refuse this too, but only after the first
   * convolution had run: refuse before anything is enqueued. */
  DYNB_CHECK(ctx, !e->train || nbn == 0 || !e->running || n * h * w > 1,
             DYNB_STATUS_INVALID_ARGUMENT,
             "layer: updating running statistics needs more than one value per channel "
             "(N*H*W = %lld)", (long long)(n * h * w));
  carve_cache(l, e->cache, n, h, w, &p->cv);
  for (int j = 0; j < 2; j++) {
    p->k[j] = theta_view(e->theta, p->lo.k[j], 4, c, c, l->kernel, l->kernel);
    p->b[j] = theta_view(e->theta, p->lo.b[j], 1, c, 0, 0, 0);
    p->nw[j] = theta_view(e->theta, p->lo.nw[j], 1, c, 0, 0, 0);
    p->nb[j] = theta_view(e->theta, p->lo.nb[j], 1, c, 0, 0, 0);
  }
  p->dims[0] = n, p->dims[1] = c, p->dims[2] = h, p->dims[3] = w;
  p->t1 = dynb__tensor_sub(work, 0, 4, p->dims);
  p->t2 = dynb__tensor_sub(work, e_nchw, 4, p->dims);
  /* At least one element, so that the view is a tensor. */
  int64_t rest = (int64_t)(have - 2 * e_nchw);
  p->conv_work = have > 2 * e_nchw ? dynb__tensor_sub(work, 2 * e_nchw, 1, &rest) : p->t1;
  return DYNB_OK;
}

/* The norm of index j as the shared dispatcher sees it. */
static dynb__norm_args layer_norm(const dynb__layer *l, const parts *p, int j, bool train) {
  dynb__norm_args a = {l->norm, &p->nw[j], &p->nb[j], &p->cv.mean[j], &p->cv.invstd[j],
                       NULL, NULL, train, DYNB_ACT_IDENTITY};
  /* Evaluation always reads running statistics; training updates them only
   * when the caller passed them (not during a checkpoint recomputation). */
  if (l->norm == DYNB_NORM_BATCH && (p->has_running))
    a.running_mean = &p->rmean[j], a.running_var = &p->rvar[j];
  return a;
}

static dynb_status norm_forward(dynb_ctx *ctx, const dynb__layer *l, const parts *p, int j,
                                bool train, const dynb__tensor *z, const dynb__tensor *a) {
  dynb__norm_args n = layer_norm(l, p, j, train);
  return dynb__norm_forward(ctx, &n, z, a);
}

/* dz = N_j'(z)ᵀ da, norm parameter gradients into dtheta; *dz_out is the
 * view holding dz (da itself for no norm). */
static dynb_status norm_backward(dynb_ctx *ctx, const dynb__layer *l, const parts *p, int j,
                                 bool train, const dynb__tensor *z, const dynb__tensor *da,
                                 const dynb__tensor *dz, const dynb__tensor *dtheta,
                                 const dynb__tensor **dz_out) {
  int64_t c = l->channels;
  dynb__norm_args n = layer_norm(l, p, j, train);
  dynb__tensor none = {0}, dnw = none, dnb = none;
  if (p->lo.nw[j] != SIZE_MAX) dnw = dynb__tensor_sub(dtheta, p->lo.nw[j], 1, &c);
  if (p->lo.nb[j] != SIZE_MAX) dnb = dynb__tensor_sub(dtheta, p->lo.nb[j], 1, &c);
  return dynb__norm_backward(ctx, &n, z, da, dz, &dnw, &dnb, dz_out);
}

/* ---- forward ------------------------------------------------------------------ */

dynb_status dynb__layer_forward(dynb_ctx *ctx, const dynb__layer *l, const dynb__layer_eval *e,
                                const dynb__tensor *out, const dynb__tensor *work) {
  DYNB_CHECK(ctx, !l || l->kind != DYNB_LAYER_HAMILTONIAN, DYNB_STATUS_INVALID_ARGUMENT,
             "layer: the hamiltonian layer is evaluated in halves (verlet only)");
  parts p;
  DYNB_TRY(prepare(ctx, l, e, work, &p));
  DYNB_TRY(dynb__tensor_check(ctx, out, "layer: out", e->x->dtype, 4));
  DYNB_TRY(dynb__tensor_check_same(ctx, out, "layer: out", e->x, "layer: x"));
  const cache_views *v = &p.cv;
  const dynb__tensor *cw = &p.conv_work;
  if (l->kind == DYNB_LAYER_DOUBLESYM) {
    DYNB_TRY(dynb__conv2d_forward(ctx, e->x, &p.k[0], &p.b[0], &v->z[0], cw));
    DYNB_TRY(dynb__norm_act_forward(ctx, layer_norm(l, &p, 0, e->train), l->act, &v->z[0],
                                    &v->a[0], &v->s[0]));
    return dynb__conv2d_transpose_forward(ctx, &v->s[0], &p.k[0], &p.b[1], out, cw);
  }
  const dynb__tensor *in = e->x;
  if (l->kind == DYNB_LAYER_PREACT) {
    DYNB_TRY(dynb__act_forward(ctx, l->act, e->x, &v->s0));
    in = &v->s0;
  }
  DYNB_TRY(dynb__conv2d_forward(ctx, in, &p.k[0], &p.b[0], &v->z[0], cw));
  DYNB_TRY(dynb__norm_act_forward(ctx, layer_norm(l, &p, 0, e->train), l->act, &v->z[0], &v->a[0],
                                  &v->s[0]));
  if (l->kind == DYNB_LAYER_DOUBLE) {
    DYNB_TRY(dynb__conv2d_forward(ctx, &v->s[0], &p.k[1], &p.b[1], &v->z[1], cw));
    DYNB_TRY(norm_forward(ctx, l, &p, 1, e->train, &v->z[1], &v->a[1]));
    return dynb__act_forward(ctx, l->act, &v->a[1], out);
  }
  if (l->norm == DYNB_NORM_NONE)
    return dynb__conv2d_forward(ctx, &v->s[0], &p.k[1], &p.b[1], out, cw);
  DYNB_TRY(dynb__conv2d_forward(ctx, &v->s[0], &p.k[1], &p.b[1], &v->z[1], cw));
  return norm_forward(ctx, l, &p, 1, e->train, &v->z[1], out);
}

/* ---- the hamiltonian layer's halves --------------------------------------------- */

static dynb_status check_half(dynb_ctx *ctx, const dynb__layer *l, int half) {
  DYNB_CHECK(ctx, l && l->kind == DYNB_LAYER_HAMILTONIAN && (half == 0 || half == 1),
             DYNB_STATUS_INVALID_ARGUMENT, "layer: halves are the hamiltonian layer's (0 or 1)");
  return DYNB_OK;
}

/* z = Kᵀ y + b₁ (half 0) or K y + b₂ (half 1); a = N_half(z); s = σ(a),
 * kept in the cache for backward and copied out. */
dynb_status dynb__layer_half_forward(dynb_ctx *ctx, const dynb__layer *l, int half,
                                     const dynb__layer_eval *e, const dynb__tensor *out,
                                     const dynb__tensor *work) {
  DYNB_TRY(check_half(ctx, l, half));
  parts p;
  DYNB_TRY(prepare(ctx, l, e, work, &p));
  DYNB_TRY(dynb__tensor_check(ctx, out, "layer: out", e->x->dtype, 4));
  DYNB_TRY(dynb__tensor_check_same(ctx, out, "layer: out", e->x, "layer: x"));
  const cache_views *v = &p.cv;
  if (half == 0)
    DYNB_TRY(dynb__conv2d_transpose_forward(ctx, e->x, &p.k[0], &p.b[0], &v->z[0], &p.conv_work));
  else
    DYNB_TRY(dynb__conv2d_forward(ctx, e->x, &p.k[0], &p.b[1], &v->z[0], &p.conv_work));
  DYNB_TRY(dynb__norm_act_forward(ctx, layer_norm(l, &p, half, e->train), l->act, &v->z[0],
                                  &v->a[0], &v->s[0]));
  return dynb__tensor_copy(ctx, &v->s[0], out);
}

dynb_status dynb__layer_half_backward(dynb_ctx *ctx, const dynb__layer *l, int half,
                                      const dynb__layer_eval *e, const dynb__tensor *dout,
                                      const dynb__tensor *dx, bool acc_dx,
                                      const dynb__tensor *dtheta, const dynb__tensor *work) {
  DYNB_TRY(check_half(ctx, l, half));
  parts p;
  DYNB_TRY(prepare(ctx, l, e, work, &p));
  dynb_dtype dt = e->x->dtype;
  DYNB_CHECK(ctx, dout && dx && dtheta, DYNB_STATUS_INVALID_ARGUMENT, "layer: NULL gradient");
  DYNB_TRY(dynb__tensor_check_same(ctx, dout, "layer: dout", e->x, "layer: x"));
  DYNB_TRY(dynb__tensor_check_same(ctx, dx, "layer: dx", e->x, "layer: x"));
  DYNB_TRY(dynb__tensor_check(ctx, dtheta, "layer: dtheta", dt, -1));
  DYNB_CHECK(ctx, dynb__tensor_numel(dtheta) == p.lo.total, DYNB_STATUS_SHAPE_MISMATCH,
             "layer: dtheta has %zu elements, the layer needs %zu", dynb__tensor_numel(dtheta),
             p.lo.total);
  const cache_views *v = &p.cv;
  int64_t c = l->channels, kd[4] = {c, c, l->kernel, l->kernel};
  dynb__tensor dk = dynb__tensor_sub(dtheta, p.lo.k[0], 4, kd);
  dynb__tensor db = dynb__tensor_sub(dtheta, p.lo.b[half], 1, &c);
  const dynb__tensor *dz;
  DYNB_TRY(dynb__act_backward(ctx, l->act, &v->a[0], dout, &p.t1, false));
  DYNB_TRY(norm_backward(ctx, l, &p, half, e->train, &v->z[0], &p.t1, &p.t2, dtheta, &dz));
  DYNB_TRY(dynb__channel_sum(ctx, dz, &db, true));
  if (half == 0) {
    DYNB_TRY(dynb__conv2d_transpose_backward_weights(ctx, e->x, dz, &dk, true, &p.conv_work));
    return dynb__conv2d_transpose_backward_data(ctx, dz, &p.k[0], dx, acc_dx, &p.conv_work);
  }
  DYNB_TRY(dynb__conv2d_backward_weights(ctx, e->x, dz, &dk, true, &p.conv_work));
  return dynb__conv2d_backward_data(ctx, dz, &p.k[0], dx, acc_dx, &p.conv_work);
}

/* ---- backward ------------------------------------------------------------------ */

/* Through one convolution z = K_j x + b_j: bias and weight gradients, then
 * dx (+)= K_jᵀ dz unless dx is NULL. */
static dynb_status conv_backward(dynb_ctx *ctx, const dynb__layer *l, const parts *p, int j,
                                 const dynb__tensor *x, const dynb__tensor *dz,
                                 const dynb__tensor *dx, bool acc_dx,
                                 const dynb__tensor *dtheta) {
  int64_t c = l->channels, kd[4] = {c, c, l->kernel, l->kernel};
  dynb__tensor dk = dynb__tensor_sub(dtheta, p->lo.k[j], 4, kd);
  dynb__tensor db = dynb__tensor_sub(dtheta, p->lo.b[j], 1, &c);
  DYNB_TRY(dynb__channel_sum(ctx, dz, &db, true));
  DYNB_TRY(dynb__conv2d_backward_weights(ctx, x, dz, &dk, true, &p->conv_work));
  if (!dx) return DYNB_OK;
  return dynb__conv2d_backward_data(ctx, dz, &p->k[j], dx, acc_dx, &p->conv_work);
}

static dynb_status doublesym_backward(dynb_ctx *ctx, const dynb__layer *l, const parts *p,
                                      const dynb__layer_eval *e, const dynb__tensor *dout,
                                      const dynb__tensor *dx, bool acc_dx,
                                      const dynb__tensor *dtheta) {
  const cache_views *v = &p->cv;
  int64_t c = l->channels, kd[4] = {c, c, l->kernel, l->kernel};
  dynb__tensor dk = dynb__tensor_sub(dtheta, p->lo.k[0], 4, kd);
  dynb__tensor db2 = dynb__tensor_sub(dtheta, p->lo.b[1], 1, &c);
  /* g = Kᵀ s + b₂ */
  DYNB_TRY(dynb__channel_sum(ctx, dout, &db2, true));
  DYNB_TRY(dynb__conv2d_transpose_backward_weights(ctx, &v->s[0], dout, &dk, true, &p->conv_work));
  DYNB_TRY(dynb__conv2d_transpose_backward_data(ctx, dout, &p->k[0], &p->t1, false, &p->conv_work));
  DYNB_TRY(dynb__act_backward(ctx, l->act, &v->a[0], &p->t1, &p->t1, false));
  const dynb__tensor *dz;
  DYNB_TRY(norm_backward(ctx, l, p, 0, e->train, &v->z[0], &p->t1, &p->t2, dtheta, &dz));
  return conv_backward(ctx, l, p, 0, e->x, dz, dx, acc_dx, dtheta);
}

static dynb_status double_backward(dynb_ctx *ctx, const dynb__layer *l, const parts *p,
                                   const dynb__layer_eval *e, const dynb__tensor *dout,
                                   const dynb__tensor *dx, bool acc_dx,
                                   const dynb__tensor *dtheta) {
  const cache_views *v = &p->cv;
  const dynb__tensor *dz;
  /* g = σ(a₂), a₂ = N₂(z₂), z₂ = K₂ s₁ + b₂ */
  DYNB_TRY(dynb__act_backward(ctx, l->act, &v->a[1], dout, &p->t1, false));
  DYNB_TRY(norm_backward(ctx, l, p, 1, e->train, &v->z[1], &p->t1, &p->t2, dtheta, &dz));
  const dynb__tensor *ds = dz == &p->t1 ? &p->t2 : &p->t1;
  DYNB_TRY(conv_backward(ctx, l, p, 1, &v->s[0], dz, ds, false, dtheta));
  /* s₁ = σ(a₁), a₁ = N₁(z₁), z₁ = K₁ y + b₁ */
  DYNB_TRY(dynb__act_backward(ctx, l->act, &v->a[0], ds, ds, false));
  const dynb__tensor *other = ds == &p->t1 ? &p->t2 : &p->t1;
  DYNB_TRY(norm_backward(ctx, l, p, 0, e->train, &v->z[0], ds, other, dtheta, &dz));
  return conv_backward(ctx, l, p, 0, e->x, dz, dx, acc_dx, dtheta);
}

static dynb_status preact_backward(dynb_ctx *ctx, const dynb__layer *l, const parts *p,
                                   const dynb__layer_eval *e, const dynb__tensor *dout,
                                   const dynb__tensor *dx, bool acc_dx,
                                   const dynb__tensor *dtheta) {
  const cache_views *v = &p->cv;
  const dynb__tensor *dz;
  /* g = N₂(z₂), z₂ = K₂ s₁ + b₂ */
  DYNB_TRY(norm_backward(ctx, l, p, 1, e->train, &v->z[1], dout, &p->t1, dtheta, &dz));
  DYNB_TRY(conv_backward(ctx, l, p, 1, &v->s[0], dz, &p->t2, false, dtheta));
  /* s₁ = σ(a₁), a₁ = N₁(z₁), z₁ = K₁ s₀ + b₁ */
  DYNB_TRY(dynb__act_backward(ctx, l->act, &v->a[0], &p->t2, &p->t2, false));
  DYNB_TRY(norm_backward(ctx, l, p, 0, e->train, &v->z[0], &p->t2, &p->t1, dtheta, &dz));
  const dynb__tensor *ds0 = dz == &p->t1 ? &p->t2 : &p->t1;
  DYNB_TRY(conv_backward(ctx, l, p, 0, &v->s0, dz, ds0, false, dtheta));
  /* s₀ = σ(y) */
  return dynb__act_backward(ctx, l->act, e->x, ds0, dx, acc_dx);
}

dynb_status dynb__layer_backward(dynb_ctx *ctx, const dynb__layer *l, const dynb__layer_eval *e,
                                 const dynb__tensor *dout, const dynb__tensor *dx, bool acc_dx,
                                 const dynb__tensor *dtheta, const dynb__tensor *work) {
  parts p;
  DYNB_TRY(prepare(ctx, l, e, work, &p));
  dynb_dtype dt = e->x->dtype;
  DYNB_CHECK(ctx, dout && dx && dtheta, DYNB_STATUS_INVALID_ARGUMENT, "layer: NULL gradient");
  DYNB_TRY(dynb__tensor_check(ctx, dout, "layer: dout", dt, 4));
  DYNB_TRY(dynb__tensor_check_same(ctx, dout, "layer: dout", e->x, "layer: x"));
  DYNB_TRY(dynb__tensor_check(ctx, dx, "layer: dx", dt, 4));
  DYNB_TRY(dynb__tensor_check_same(ctx, dx, "layer: dx", e->x, "layer: x"));
  DYNB_TRY(dynb__tensor_check(ctx, dtheta, "layer: dtheta", dt, -1));
  DYNB_CHECK(ctx, dynb__tensor_numel(dtheta) == p.lo.total, DYNB_STATUS_SHAPE_MISMATCH,
             "layer: dtheta has %zu elements, the layer needs %zu", dynb__tensor_numel(dtheta),
             p.lo.total);
  switch (l->kind) {
    case DYNB_LAYER_DOUBLESYM: return doublesym_backward(ctx, l, &p, e, dout, dx, acc_dx, dtheta);
    case DYNB_LAYER_DOUBLE: return double_backward(ctx, l, &p, e, dout, dx, acc_dx, dtheta);
    case DYNB_LAYER_PREACT: return preact_backward(ctx, l, &p, e, dout, dx, acc_dx, dtheta);
    case DYNB_LAYER_HAMILTONIAN: break; /* in halves only */
  }
  return DYNB_STATUS_INVALID_ARGUMENT;
}
