/* A network's tensors: allocation from the spec, SPEC §3 names, and the
 * seeded initialisation of SPEC §1.3. What runs on them is the plan's
 * business (src/plan). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

/* Collects the named tensors while the network is built. */
typedef struct tensor_list {
  dynb__net *net;
  size_t cap;
} tensor_list;

static dynb_status push(tensor_list *l, const char *name, const dynb__tensor *value,
                        const dynb__tensor *grad, bool is_norm) {
  dynb__net *net = l->net;
  if (net->ntensors == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    dynb__net_tensor *t = dynb__calloc(net->ctx, cap, sizeof *t);
    DYNB_CHECK(net->ctx, t, DYNB_STATUS_OUT_OF_HOST_MEMORY, "network: no memory");
    if (net->tensors) memcpy(t, net->tensors, net->ntensors * sizeof *t);
    dynb__free(net->ctx, net->tensors);
    net->tensors = t;
    l->cap = cap;
  }
  dynb__net_tensor *e = &net->tensors[net->ntensors++];
  snprintf(e->name, sizeof e->name, "%s", name);
  e->value = *value;
  if (grad) e->grad = *grad;
  e->trainable = grad != NULL;
  e->is_norm = is_norm;
  return DYNB_OK;
}

static dynb_status alloc_pair(dynb__net *net, int ndim, const int64_t *dims, dynb__tensor *v,
                              dynb__tensor *g) {
  DYNB_TRY(dynb__tensor_alloc(net->ctx, net->real, ndim, dims, v));
  DYNB_TRY(dynb__tensor_zero(net->ctx, v));
  if (!g) return DYNB_OK;
  DYNB_TRY(dynb__tensor_alloc(net->ctx, net->real, ndim, dims, g));
  return dynb__tensor_zero(net->ctx, g);
}

/* A convolution (k×k, cin → cout) with bias, then a norm: the opening
 * layer and every connecting layer. */
static dynb_status unit_create(tensor_list *l, dynb__conv_unit *u, const char *prefix, int cin,
                               int cout, int kernel, dynb_norm_kind norm, dynb_act act) {
  dynb__net *net = l->net;
  char name[96];
  int64_t wd[4] = {cout, cin, kernel, kernel}, c = cout;
  u->cin = cin, u->cout = cout, u->kernel = kernel, u->norm = norm, u->act = act;
  DYNB_TRY(alloc_pair(net, 4, wd, &u->w, &u->dw));
  DYNB_TRY(alloc_pair(net, 1, &c, &u->b, &u->db));
  snprintf(name, sizeof name, "%s.conv.weight", prefix);
  DYNB_TRY(push(l, name, &u->w, &u->dw, false));
  snprintf(name, sizeof name, "%s.conv.bias", prefix);
  DYNB_TRY(push(l, name, &u->b, &u->db, false));
  if (norm == DYNB_NORM_BATCH) {
    DYNB_TRY(alloc_pair(net, 1, &c, &u->nw, &u->dnw));
    snprintf(name, sizeof name, "%s.norm.weight", prefix);
    DYNB_TRY(push(l, name, &u->nw, &u->dnw, true));
  }
  if (norm != DYNB_NORM_NONE) {
    DYNB_TRY(alloc_pair(net, 1, &c, &u->nb, &u->dnb));
    snprintf(name, sizeof name, "%s.norm.bias", prefix);
    DYNB_TRY(push(l, name, &u->nb, &u->dnb, true));
  }
  if (norm == DYNB_NORM_BATCH) {
    DYNB_TRY(alloc_pair(net, 1, &c, &u->rmean, NULL));
    DYNB_TRY(alloc_pair(net, 1, &c, &u->rvar, NULL));
    snprintf(name, sizeof name, "%s.norm.running_mean", prefix);
    DYNB_TRY(push(l, name, &u->rmean, NULL, true));
    snprintf(name, sizeof name, "%s.norm.running_var", prefix);
    DYNB_TRY(push(l, name, &u->rvar, NULL, true));
  }
  return DYNB_OK;
}

static void unit_release(dynb__conv_unit *u) {
  dynb__tensor *all[] = {&u->w, &u->b, &u->dw, &u->db, &u->nw, &u->nb,
                         &u->dnw, &u->dnb, &u->rmean, &u->rvar};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) dynb__tensor_release(all[i]);
}

/* Names every control point's tensors and every evaluation's running
 * statistics of block `bi` as views into the block's buffers. */
static dynb_status list_block(tensor_list *l, int bi) {
  dynb__net *net = l->net;
  const dynb__block_spec *bs = &net->spec.blocks[bi];
  dynb__block *blk = net->blocks[bi];
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  size_t P = 0;
  int ne = dynb__layer_params(&bs->layer, e, &P);
  char name[96];
  for (int j = 0; j < bs->ncontrols; j++)
    for (int i = 0; i < ne; i++) {
      size_t off = (size_t)j * P + e[i].offset;
      dynb__tensor v = dynb__tensor_sub(dynb__block_controls(blk), off, e[i].ndim, e[i].dims);
      dynb__tensor g = dynb__tensor_sub(dynb__block_grads(blk), off, e[i].ndim, e[i].dims);
      snprintf(name, sizeof name, "blocks.%d.controls.%d.%.23s", bi, j, e[i].name);
      DYNB_TRY(push(l, name, &v, &g, e[i].is_norm));
    }
  int nbn = dynb__layer_batch_norms(&bs->layer);
  int64_t c = bs->width;
  for (int k = 0; k < bs->nstates - 1; k++)
    for (int s = 0; s < bs->tableau.stages; s++)
      for (int n = 0; n < nbn; n++)
        for (int m = 0; m < 2; m++) {
          size_t off = ((((size_t)k * (size_t)bs->tableau.stages + (size_t)s) * (size_t)nbn + (size_t)n) * 2 +
                        (size_t)m) * (size_t)c;
          dynb__tensor v = dynb__tensor_sub(dynb__block_running(blk), off, 1, &c);
          const char *norm = bs->layer.kind == DYNB_LAYER_DOUBLESYM ? "norm" : n ? "norm2" : "norm1";
          snprintf(name, sizeof name, "blocks.%d.steps.%d.stages.%d.%s.%s", bi, k, s, norm,
                   m ? "running_var" : "running_mean");
          DYNB_TRY(push(l, name, &v, NULL, true));
        }
  return DYNB_OK;
}

static dynb_status net_build(dynb__net *net) {
  const dynb__net_spec *sp = &net->spec;
  tensor_list l = {net, 0};
  DYNB_TRY(unit_create(&l, &net->open, "open", sp->in_channels, sp->open_width, sp->open_kernel,
                       sp->open_norm, sp->open_act));
  char err[256], prefix[32];
  for (int b = 0; b < sp->nblocks; b++) {
    const dynb__block_spec *bs = &sp->blocks[b];
    /* The continuous adjoint (SPEC §1.5) is parsed but not implemented:
     * refused here rather than silently trained with the discrete gradient. */
    DYNB_CHECK(net->ctx, bs->gradient == DYNB_GRADIENT_DISCRETE, DYNB_STATUS_UNSUPPORTED,
               "blocks[%d].gradient: 'adjoint' is not implemented yet (issue 15)", b);
    dynb__block_desc d = {bs->layer, bs->tableau, bs->nstates, bs->t_states, bs->ncontrols,
                          bs->t_controls};
    DYNB_TRY(dynb__block_create(net->ctx, &d, net->real, &net->blocks[b], err, sizeof err));
    DYNB_TRY(list_block(&l, b));
    int next = b + 1 < sp->nblocks ? sp->blocks[b + 1].width : sp->head_width;
    snprintf(prefix, sizeof prefix, "connect.%d", b);
    DYNB_TRY(unit_create(&l, &net->connect[b], prefix, bs->width, next, 1, sp->connect_norm,
                         sp->connect_act));
  }
  int64_t wd[2] = {sp->classes, sp->head_width}, c = sp->classes;
  DYNB_TRY(alloc_pair(net, 2, wd, &net->lin_w, &net->lin_dw));
  DYNB_TRY(alloc_pair(net, 1, &c, &net->lin_b, &net->lin_db));
  DYNB_TRY(push(&l, "linear.weight", &net->lin_w, &net->lin_dw, false));
  return push(&l, "linear.bias", &net->lin_b, &net->lin_db, false);
}

dynb_status dynb__net_create(dynb_ctx *ctx, const dynb__net_spec *spec, dynb_dtype real,
                             dynb__net **out) {
  *out = NULL;
  DYNB_CHECK(ctx, spec, DYNB_STATUS_INVALID_ARGUMENT, "network: NULL spec");
  DYNB_TRY(dynb__check_real(ctx, real));
  dynb__net *net = dynb__calloc(ctx, 1, sizeof *net);
  DYNB_CHECK(ctx, net, DYNB_STATUS_OUT_OF_HOST_MEMORY, "network: no memory");
  net->ctx = ctx;
  net->spec = *spec;
  net->real = real;
  dynb_status st = net_build(net);
  if (st != DYNB_OK) {
    dynb__net_free(net);
    return st;
  }
  *out = net;
  return DYNB_OK;
}

void dynb__net_free(dynb__net *net) {
  if (!net) return;
  unit_release(&net->open);
  for (int b = 0; b < DYNB_MAX_BLOCKS; b++) {
    dynb__block_free(net->blocks[b]);
    unit_release(&net->connect[b]);
  }
  dynb__tensor_release(&net->lin_w);
  dynb__tensor_release(&net->lin_b);
  dynb__tensor_release(&net->lin_dw);
  dynb__tensor_release(&net->lin_db);
  dynb__free(net->ctx, net->tensors);
  dynb__free(net->ctx, net);
}

const dynb__net_tensor *dynb__net_find(const dynb__net *net, const char *name) {
  for (size_t i = 0; i < net->ntensors; i++)
    if (strcmp(net->tensors[i].name, name) == 0) return &net->tensors[i];
  return NULL;
}

dynb_status dynb__net_zero_grads(dynb__net *net) {
  for (int b = 0; b < net->spec.nblocks; b++)
    DYNB_TRY(dynb__tensor_zero(net->ctx, dynb__block_grads(net->blocks[b])));
  for (size_t i = 0; i < net->ntensors; i++) {
    const dynb__net_tensor *t = &net->tensors[i];
    /* Block tensors are views into the buffers zeroed above. */
    if (t->trainable && strncmp(t->name, "blocks.", 7) != 0)
      DYNB_TRY(dynb__tensor_zero(net->ctx, &t->grad));
  }
  return DYNB_OK;
}

/* ---- initialisation -------------------------------------------------------------- */

/* splitmix64 and Box–Muller: simple, seedable, the same on every host. */
static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) {
  return ((double)(next_u64(s) >> 11) + 0.5) / 9007199254740992.0; /* in (0, 1) */
}

static double normal(uint64_t *s) {
  double u = uniform01(s), v = uniform01(s);
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The value every element of tensor t starts at, or NAN for random. */
static double init_constant(const dynb__net_tensor *t) {
  if (ends_with(t->name, "running_var")) return 1.0;
  if (t->is_norm && ends_with(t->name, ".weight")) return 1.0;
  if (!ends_with(t->name, ".weight")) return 0.0;
  return NAN;
}

static dynb_status init_tensor(dynb__net *net, const dynb__net_tensor *t, uint64_t *rng,
                               double *host) {
  size_t n = dynb__tensor_numel(&t->value);
  double c = init_constant(t);
  if (!isnan(c)) {
    for (size_t i = 0; i < n; i++) host[i] = c;
  } else {
    /* fans as PyTorch's xavier: in·k·k and out·k·k */
    const int64_t *d = t->value.dims;
    double rf = t->value.ndim == 4 ? (double)(d[2] * d[3]) : 1.0;
    double sigma = sqrt(2.0 / ((double)d[1] * rf + (double)d[0] * rf));
    for (size_t i = 0; i < n; i++) {
      double v = sigma * normal(rng);
      host[i] = v > 2 * sigma ? 2 * sigma : v < -2 * sigma ? -2 * sigma : v;
    }
  }
  return dynb__tensor_write_f64(net->ctx, &t->value, host);
}

dynb_status dynb__net_init(dynb__net *net, uint64_t seed) {
  size_t most = 1;
  for (size_t i = 0; i < net->ntensors; i++) {
    size_t n = dynb__tensor_numel(&net->tensors[i].value);
    if (n > most) most = n;
  }
  double *host = dynb__alloc(net->ctx, most * sizeof *host);
  DYNB_CHECK(net->ctx, host, DYNB_STATUS_OUT_OF_HOST_MEMORY, "network: no memory");
  uint64_t rng = seed;
  dynb_status st = DYNB_OK;
  for (size_t i = 0; st == DYNB_OK && i < net->ntensors; i++)
    st = init_tensor(net, &net->tensors[i], &rng, host);
  dynb__free(net->ctx, host);
  return st;
}

/* ---- batch-norm folding ----------------------------------------------------------- */

static dynb_status fold_unit(dynb__net *net, dynb__conv_unit *u) {
  if (u->norm != DYNB_NORM_BATCH) return DYNB_OK;
  dynb_ctx *ctx = net->ctx;
  size_t co = (size_t)u->cout, per = (size_t)u->cin * (size_t)u->kernel * (size_t)u->kernel;
  double *w = dynb__alloc(ctx, co * per * sizeof *w), *v = dynb__alloc(ctx, 5 * co * sizeof *v);
  dynb_status st = w && v ? DYNB_OK : dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory");
  double *b = v, *g = v + co, *be = v + 2 * co, *m = v + 3 * co, *var = v + 4 * co;
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &u->w, w);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &u->b, b);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &u->nw, g);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &u->nb, be);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &u->rmean, m);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(ctx, &u->rvar, var);
  for (size_t o = 0; st == DYNB_OK && o < co; o++) {
    double s = g[o] / sqrt(var[o] + DYNB_BN_EPS);
    for (size_t i = 0; i < per; i++) w[o * per + i] *= s;
    b[o] = (b[o] - m[o]) * s + be[o];
  }
  if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, &u->w, w);
  if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, &u->b, b);
  dynb__free(ctx, w);
  dynb__free(ctx, v);
  return st;
}

/* Rebuilds the tensor list without the tensors of the folded norms. */
static void drop_folded(dynb__net *net, const char *prefix) {
  size_t n = strlen(prefix), kept = 0;
  for (size_t i = 0; i < net->ntensors; i++)
    if (strncmp(net->tensors[i].name, prefix, n) != 0) net->tensors[kept++] = net->tensors[i];
  net->ntensors = kept;
}

static void unit_forget_norm(dynb__conv_unit *u) {
  dynb__tensor *norm[] = {&u->nw, &u->nb, &u->dnw, &u->dnb, &u->rmean, &u->rvar};
  for (size_t i = 0; i < sizeof norm / sizeof *norm; i++) dynb__tensor_release(norm[i]);
  u->norm = DYNB_NORM_NONE;
}

dynb_status dynb__net_fold_batch_norms(dynb__net *net) {
  char prefix[48];
  DYNB_TRY(fold_unit(net, &net->open));
  if (net->open.norm == DYNB_NORM_BATCH) {
    drop_folded(net, "open.norm.");
    unit_forget_norm(&net->open);
    net->spec.open_norm = DYNB_NORM_NONE;
  }
  bool all = net->spec.connect_norm == DYNB_NORM_BATCH;
  for (int b = 0; all && b < net->spec.nblocks; b++) {
    DYNB_TRY(fold_unit(net, &net->connect[b]));
    snprintf(prefix, sizeof prefix, "connect.%d.norm.", b);
    drop_folded(net, prefix);
    unit_forget_norm(&net->connect[b]);
  }
  if (all) net->spec.connect_norm = DYNB_NORM_NONE;
  return DYNB_OK;
}

/* ---- re-discretisation (SPEC §1.1) ------------------------------------------------- */

/* Named tensors block `bi` would list over nstates/ncontrols points. */
static size_t block_tensor_count(const dynb__block_spec *bs, int nstates, int ncontrols) {
  size_t P = 0;
  size_t ne = (size_t)dynb__layer_params(&bs->layer, NULL, &P);
  size_t nbn = (size_t)dynb__layer_batch_norms(&bs->layer);
  return (size_t)ncontrols * ne + (size_t)(nstates - 1) * (size_t)bs->tableau.stages * nbn * 2;
}

/* Lists the tensors again in the same order, block bi's anew (its buffers
 * were replaced); `fresh` has room for all of them, so nothing can fail
 * half-way. The other entries (and their absence after a fold) carry over. */
static dynb_status relist(dynb__net *net, int bi, dynb__net_tensor *fresh, size_t cap) {
  dynb__net_tensor *old = net->tensors;
  size_t nold = net->ntensors;
  char prefix[32];
  snprintf(prefix, sizeof prefix, "blocks.%d.", bi);
  size_t plen = strlen(prefix);
  net->tensors = fresh, net->ntensors = 0;
  tensor_list l = {net, cap};
  bool listed = false;
  dynb_status st = DYNB_OK;
  for (size_t i = 0; st == DYNB_OK && i < nold; i++) {
    const dynb__net_tensor *t = &old[i];
    if (strncmp(t->name, prefix, plen) == 0) {
      if (!listed) st = list_block(&l, bi);
      listed = true;
      continue;
    }
    st = push(&l, t->name, &t->value, t->trainable ? &t->grad : NULL, t->is_norm);
  }
  dynb__free(net->ctx, old);
  return st;
}

dynb_status dynb__net_regrid(dynb__net *net, int bi, int nstates, const double *t_states,
                             int ncontrols, const double *t_controls, char *err, size_t errlen) {
  if (errlen) err[0] = 0;
  if (bi < 0 || bi >= net->spec.nblocks) {
    snprintf(err, errlen, "block %d does not exist (the network has %d)", bi, net->spec.nblocks);
    return dynb__fail(net->ctx, DYNB_STATUS_INVALID_ARGUMENT, "%s", err);
  }
  dynb__block_spec *bs = &net->spec.blocks[bi];
  /* Room for the new list first: after the block changes, nothing may fail. */
  size_t cap = 0;
  if (nstates >= 2 && ncontrols >= 1 && nstates <= DYNB_MAX_TIME_POINTS &&
      ncontrols <= DYNB_MAX_TIME_POINTS)
    cap = net->ntensors - block_tensor_count(bs, bs->nstates, bs->ncontrols) +
          block_tensor_count(bs, nstates, ncontrols);
  dynb__net_tensor *fresh = cap ? dynb__calloc(net->ctx, cap, sizeof *fresh) : NULL;
  if (cap && !fresh) return dynb__fail(net->ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "network: no memory");
  char why[256];
  dynb_status st = dynb__block_rediscretise(net->blocks[bi], nstates, t_states, ncontrols,
                                            t_controls, why, sizeof why);
  if (st != DYNB_OK) {
    dynb__free(net->ctx, fresh);
    snprintf(err, errlen, "blocks[%d]: %s", bi, why);
    return dynb__fail(net->ctx, st, "%s", err);
  }
  bs->nstates = nstates, bs->ncontrols = ncontrols;
  memcpy(bs->t_states, t_states, (size_t)nstates * sizeof *t_states);
  memcpy(bs->t_controls, t_controls, (size_t)ncontrols * sizeof *t_controls);
  return relist(net, bi, fresh, cap);
}

int dynb__grid_refine(const double *t, int n, int factor, double *out) {
  int m = 0;
  for (int k = 0; k + 1 < n; k++)
    for (int i = 0; i < factor; i++) out[m++] = t[k] + (t[k + 1] - t[k]) * ((double)i / factor);
  out[m++] = t[n - 1];
  return m;
}

dynb_status dynb__net_refine(dynb__net *net, int factor, char *err, size_t errlen) {
  if (errlen) err[0] = 0;
  for (int b = 0; b < net->spec.nblocks; b++) {
    const dynb__block_spec *bs = &net->spec.blocks[b];
    long ns = (long)(bs->nstates - 1) * factor + 1, nc = (long)(bs->ncontrols - 1) * factor + 1;
    if (factor < 1 || ns > DYNB_MAX_TIME_POINTS || nc > DYNB_MAX_TIME_POINTS) {
      if (factor < 1)
        snprintf(err, errlen, "refinement factor must be at least 1, got %d", factor);
      else
        snprintf(err, errlen,
                 "blocks[%d]: refining by %d gives %ld state and %ld control points (at most %d)",
                 b, factor, ns, nc, DYNB_MAX_TIME_POINTS);
      return dynb__fail(net->ctx, DYNB_STATUS_INVALID_ARGUMENT, "%s", err);
    }
  }
  for (int b = 0; b < net->spec.nblocks; b++) {
    const dynb__block_spec *bs = &net->spec.blocks[b];
    /* On the heap: two grids of DYNB_MAX_TIME_POINTS are too big for a
     * small thread stack. Computed before regrid writes the spec. */
    double *ts = dynb__alloc(net->ctx, 2 * DYNB_MAX_TIME_POINTS * sizeof *ts);
    DYNB_CHECK(net->ctx, ts, DYNB_STATUS_OUT_OF_HOST_MEMORY, "network: no memory");
    double *tc = ts + DYNB_MAX_TIME_POINTS;
    int ns = dynb__grid_refine(bs->t_states, bs->nstates, factor, ts);
    int nc = dynb__grid_refine(bs->t_controls, bs->ncontrols, factor, tc);
    dynb_status st = dynb__net_regrid(net, b, ns, ts, nc, tc, err, errlen);
    dynb__free(net->ctx, ts);
    DYNB_TRY(st);
  }
  return DYNB_OK;
}
