/* The network plan: fixed buffers for one batch shape, and the passes over
 * them. Nothing here allocates after dynb__plan_build. */
#include <stdio.h>
#include <string.h>

#include "plan/plan.h"

/* The activations of one conv unit (opening or connecting layer):
 * z = conv(x), a = N(z), s = σ(a); and their gradients. */
typedef struct unit_buffers {
  dynb__tensor z, a, s, mean, invstd;
  dynb__tensor gs, ga; /* ∂L/∂s (then ∂L/∂a in place), ∂L/∂z */
  dynb__tensor work;   /* the convolution's, in the shared scratch */
} unit_buffers;

/* Level b: block b's input and output and its connecting layer, then the
 * pooled result (the next level's input) or, after the last level, the
 * global average. */
typedef struct level_buffers {
  dynb__tensor in, out, pooled;
  dynb__tensor gin, gout, gpooled;
  unit_buffers conn;
  dynb__arena keep; /* the block's */
} level_buffers;

/* Buffers by lifetime. What a later pass reads (activations, their
 * gradients between levels, the blocks' states and stored stages) has a
 * buffer of its own. What lives only within one call, a block's forward or
 * backward (its adjoints, stage scratch, the recomputed stages of checkpoint
 * mode) or a unit's backward (∂L/∂s, ∂L/∂z, convolution work), shares one
 * scratch buffer: no two such calls overlap, so the plan holds the largest
 * of them, not their sum. Separate buffers rather than one arena: a GPU
 * caps single allocations (CL_DEVICE_MAX_MEM_ALLOC_SIZE, often a quarter of
 * its memory); for the same reason the scratch and each block's keep arena
 * are dynb__arenas, split over several buffers where one would exceed that
 * cap (each tensor in them must fit one; the error names the one that
 * does not). */
struct dynb__plan {
  dynb__net *net;
  int64_t n;
  dynb_memory_mode mode;
  dynb__conv_policy policy; /* the routes the scratch was sized for */
  bool train_last;
  double loss_scale; /* weight of this plan's mean loss in the trained loss */
  dynb__tensor x, labels, gx;
  unit_buffers open;
  level_buffers level[DYNB_MAX_BLOCKS];
  dynb__tensor feat, gfeat, logits, glogits, loss, xent_work;
  dynb__tensor gouts, gins; /* every level's gout, and its gin (see grads_alloc) */
  dynb__arena scratch;
  size_t bytes;
  /* Every buffer above, for release. */
  dynb__tensor *owned[16 + 16 * DYNB_MAX_BLOCKS];
  int nowned;
};

/* `what` names the tensor when the device cannot hold it in one buffer. */
static dynb_status alloc(dynb__plan *p, dynb__tensor *t, dynb_dtype dt, int ndim,
                         const int64_t *dims, const char *what) {
  dynb_status st = dynb__tensor_alloc(p->net->ctx, dt, ndim, dims, t);
  if (st != DYNB_OK) {
    char where[96];
    snprintf(where, sizeof where, "plan (batch %lld): %s", (long long)p->n, what);
    return dynb__fail_prefixed(p->net->ctx, st, where);
  }
  p->owned[p->nowned++] = t;
  p->bytes += t->cap_bytes;
  return DYNB_OK;
}

static dynb_status alloc4(dynb__plan *p, dynb__tensor *t, int64_t c, int64_t h, int64_t w,
                          const char *what) {
  int64_t d[4] = {p->n, c, h, w};
  return alloc(p, t, p->net->real, 4, d, what);
}

static dynb_status alloc_flat(dynb__plan *p, dynb__tensor *t, size_t count, const char *what) {
  int64_t n = (int64_t)(count ? count : 1);
  return alloc(p, t, p->net->real, 1, &n, what);
}

/* Fails naming `what` (a unit or block) if laying it out found a tensor
 * too large for one buffer of the device. */
static dynb_status arena_ok(dynb__plan *p, const dynb__arena *a, const char *what, int index) {
  if (!a->error[0]) return DYNB_OK;
  return dynb__fail(p->net->ctx, DYNB_STATUS_OUT_OF_DEVICE_MEMORY, "plan (batch %lld): %s %d: %s",
                    (long long)p->n, what, index, a->error);
}

/* In checkpoint mode a unit's z, a and s live in the scratch too, and its
 * backward recomputes them first: one more convolution per unit and step,
 * against dozens in the blocks, for the largest activations outside them.
 * The opening unit's s stays, since it is block 0's input. */
static bool unit_recomputes(const dynb__plan *p) { return p->mode != DYNB_MEMORY_STORE; }

static bool keeps_a(const dynb__conv_unit *cu) { return dynb__norm_output_kept(cu->norm, cu->act); }

/* Without a buffer of its own, a is z (no norm) or s (the norm writes s,
 * σ acts in place). */
static void alias_a(unit_buffers *u, const dynb__conv_unit *cu) {
  if (!keeps_a(cu)) u->a = cu->norm == DYNB_NORM_NONE ? u->z : u->s;
}

/* The buffers of a conv unit with `c` output channels at h×w that outlive
 * its calls; `open` for the opening unit. */
static dynb_status unit_alloc(dynb__plan *p, unit_buffers *u, const dynb__conv_unit *cu,
                              int64_t h, int64_t w, bool open) {
  int64_t c = cu->cout;
  if (!unit_recomputes(p)) {
    DYNB_TRY(alloc4(p, &u->z, c, h, w, "convolution output z"));
    if (keeps_a(cu)) DYNB_TRY(alloc4(p, &u->a, c, h, w, "normalised output a"));
  }
  if (!unit_recomputes(p) || open) DYNB_TRY(alloc4(p, &u->s, c, h, w, "activation s"));
  if (cu->norm == DYNB_NORM_BATCH) {
    DYNB_TRY(alloc(p, &u->mean, p->net->real, 1, &c, "batch mean"));
    DYNB_TRY(alloc(p, &u->invstd, p->net->real, 1, &c, "batch 1/std"));
  }
  return DYNB_OK;
}

/* A unit's views of the shared scratch: those of its activations that
 * unit_alloc left out, ∂L/∂s unless `gs` is given (the opening unit's,
 * which block 0's backward writes), ∂L/∂z (in s itself when s is
 * recomputed: σ's backward is its last reader) and the work of the
 * convolution's routes, chosen here. With the scratch not yet allocated it
 * only sizes it. */
static dynb_status unit_carve(dynb__plan *p, unit_buffers *u, const dynb__conv_unit *cu,
                              int64_t h, int64_t w, const dynb__tensor *gs) {
  dynb__arena_cursor cur = dynb__arena_begin(&p->scratch);
  int64_t d[4] = {p->n, cu->cout, h, w};
  size_t work = 0;
  DYNB_TRY(dynb__conv2d_prepare(p->net->ctx, p->net->real, p->n, cu->cin, cu->cout, h, w,
                                cu->kernel, &work));
  bool open = gs != NULL, recompute = unit_recomputes(p);
  if (recompute) {
    u->z = dynb__arena_take(&cur, 4, d, "convolution output z");
    if (keeps_a(cu)) u->a = dynb__arena_take(&cur, 4, d, "normalised output a");
    if (!open) u->s = dynb__arena_take(&cur, 4, d, "activation s");
  }
  alias_a(u, cu);
  u->gs = open ? *gs : dynb__arena_take(&cur, 4, d, "gradient of s");
  u->ga = recompute && !open ? u->s : dynb__arena_take(&cur, 4, d, "gradient of a");
  u->work = dynb__arena_flat(&cur, work, "convolution work");
  return DYNB_OK;
}

/* The level-b buffers that outlive calls, at h×w (block b's resolution). */
static dynb_status level_alloc(dynb__plan *p, int b, int64_t h, int64_t w) {
  dynb__net *net = p->net;
  level_buffers *lv = &p->level[b];
  int64_t c = net->spec.blocks[b].width;
  lv->in = b == 0 ? p->open.s : p->level[b - 1].pooled;
  DYNB_TRY(alloc4(p, &lv->out, c, h, w, "block output"));
  DYNB_TRY(unit_alloc(p, &lv->conn, &net->connect[b], h, w, false));
  if (b + 1 < net->spec.nblocks)
    DYNB_TRY(alloc4(p, &lv->pooled, net->connect[b].cout, h / 2, w / 2, "pooled activation"));
  dynb__arena_init(net->ctx, &lv->keep, net->real);
  DYNB_TRY(dynb__block_sizes(net->blocks[b], p->n, h, w, p->mode, &lv->keep, &p->scratch));
  DYNB_TRY(arena_ok(p, &lv->keep, "block", b));
  return arena_ok(p, &p->scratch, "block", b);
}

/* The gradients between levels, by lifetime too: block b's backward reads
 * ∂L/∂(its output) and writes ∂L/∂(its input); the first is dead once it
 * returns, the second once the level below has pooled it back, before that
 * level's unit writes its own ∂L/∂(block output). So the levels' pairs
 * share two buffers, each as large as the largest of its kind. */
static dynb_status grads_alloc(dynb__plan *p) {
  const dynb__net *net = p->net;
  const dynb__net_spec *sp = &net->spec;
  int64_t dout[DYNB_MAX_BLOCKS][4], din[DYNB_MAX_BLOCKS][4], h = sp->in_height, w = sp->in_width;
  size_t nout = 0, nin = 0;
  for (int b = 0; b < sp->nblocks; b++, h /= 2, w /= 2) {
    int64_t cin = b == 0 ? net->open.cout : net->connect[b - 1].cout;
    int64_t o[4] = {p->n, sp->blocks[b].width, h, w}, i[4] = {p->n, cin, h, w};
    memcpy(dout[b], o, sizeof o), memcpy(din[b], i, sizeof i);
    size_t so = (size_t)(o[0] * o[1] * o[2] * o[3]), si = (size_t)(i[0] * i[1] * i[2] * i[3]);
    nout = so > nout ? so : nout;
    nin = si > nin ? si : nin;
  }
  DYNB_TRY(alloc_flat(p, &p->gouts, nout, "gradient of a block output"));
  DYNB_TRY(alloc_flat(p, &p->gins, nin, "gradient of a block input"));
  for (int b = 0; b < sp->nblocks; b++) {
    p->level[b].gout = dynb__tensor_sub(&p->gouts, 0, 4, dout[b]);
    p->level[b].gin = dynb__tensor_sub(&p->gins, 0, 4, din[b]);
    if (b > 0) p->level[b - 1].gpooled = p->level[b].gin;
  }
  return DYNB_OK;
}

/* Lays out (or, with the scratch not yet allocated, sizes) the units'
 * views of the shared scratch. */
static dynb_status scratch_carve(dynb__plan *p) {
  const dynb__net_spec *sp = &p->net->spec;
  int64_t h = sp->in_height, w = sp->in_width;
  DYNB_TRY(unit_carve(p, &p->open, &p->net->open, h, w, &p->level[0].gin));
  DYNB_TRY(arena_ok(p, &p->scratch, "opening unit", 0));
  for (int b = 0; b < sp->nblocks; b++, h /= 2, w /= 2) {
    DYNB_TRY(unit_carve(p, &p->level[b].conn, &p->net->connect[b], h, w, NULL));
    DYNB_TRY(arena_ok(p, &p->scratch, "connecting unit", b));
  }
  return DYNB_OK;
}

static dynb_status plan_alloc(dynb__plan *p) {
  dynb__net *net = p->net;
  const dynb__net_spec *sp = &net->spec;
  int64_t h = sp->in_height, w = sp->in_width, n = p->n;
  dynb__arena_init(net->ctx, &p->scratch, net->real);
  DYNB_TRY(alloc4(p, &p->x, sp->in_channels, h, w, "input"));
  DYNB_TRY(alloc4(p, &p->gx, sp->in_channels, h, w, "input gradient"));
  DYNB_TRY(alloc(p, &p->labels, DYNB_I32, 1, &n, "labels"));
  DYNB_TRY(unit_alloc(p, &p->open, &net->open, h, w, true));
  for (int b = 0; b < sp->nblocks; b++, h /= 2, w /= 2) DYNB_TRY(level_alloc(p, b, h, w));
  /* Block 0 writes ∂L/∂(its input) where the opening unit reads ∂L/∂s. */
  DYNB_TRY(grads_alloc(p));
  int64_t fd[2] = {n, sp->head_width}, ld[2] = {n, sp->classes}, two = 2;
  int64_t xw = (int64_t)dynb__xent_workspace(n);
  DYNB_TRY(alloc(p, &p->feat, net->real, 2, fd, "features"));
  DYNB_TRY(alloc(p, &p->gfeat, net->real, 2, fd, "feature gradient"));
  DYNB_TRY(alloc(p, &p->logits, net->real, 2, ld, "logits"));
  DYNB_TRY(alloc(p, &p->glogits, net->real, 2, ld, "logit gradient"));
  DYNB_TRY(alloc(p, &p->loss, net->real, 1, &two, "loss"));
  DYNB_TRY(alloc(p, &p->xent_work, net->real, 1, &xw, "loss work"));
  /* Sized by the units' layouts and the blocks' (level_alloc), then laid
   * out for real. */
  DYNB_TRY(scratch_carve(p));
  DYNB_TRY(dynb__arena_alloc(net->ctx, &p->scratch, "plan: scratch"));
  p->bytes += dynb__arena_bytes(&p->scratch);
  DYNB_TRY(scratch_carve(p));
  h = sp->in_height, w = sp->in_width;
  for (int b = 0; b < sp->nblocks; b++, h /= 2, w /= 2) {
    level_buffers *lv = &p->level[b];
    DYNB_TRY(dynb__arena_alloc(net->ctx, &lv->keep, "plan: block keep arena"));
    p->bytes += dynb__arena_bytes(&lv->keep);
    DYNB_TRY(dynb__block_prepare(net->blocks[b], n, h, w, p->mode, &lv->keep, &p->scratch));
  }
  return DYNB_OK;
}

dynb_status dynb__plan_build(dynb__net *net, int64_t batch, dynb_memory_mode mode,
                             dynb__plan **out) {
  dynb_ctx *ctx = net->ctx;
  *out = NULL;
  DYNB_CHECK(ctx, batch >= 1, DYNB_STATUS_INVALID_ARGUMENT, "plan: batch must be >= 1");
  dynb__plan *p = dynb__calloc(ctx, 1, sizeof *p);
  DYNB_CHECK(ctx, p, DYNB_STATUS_OUT_OF_HOST_MEMORY, "plan: no memory");
  p->net = net;
  p->loss_scale = 1;
  p->n = batch;
  p->mode = mode;
  p->policy = ctx->conv_policy;
  dynb_status st = plan_alloc(p);
  if (st != DYNB_OK) {
    dynb__plan_free(p);
    return st;
  }
  *out = p;
  return DYNB_OK;
}

void dynb__plan_free(dynb__plan *p) {
  if (!p) return;
  for (int i = 0; i < p->nowned; i++) dynb__tensor_release(p->owned[i]);
  dynb__arena_release(&p->scratch);
  for (int b = 0; b < DYNB_MAX_BLOCKS; b++) dynb__arena_release(&p->level[b].keep);
  dynb__free(p->net->ctx, p);
}

dynb__net *dynb__plan_net(const dynb__plan *p) { return p->net; }
int64_t dynb__plan_batch(const dynb__plan *p) { return p->n; }
const dynb__tensor *dynb__plan_input(const dynb__plan *p) { return &p->x; }
const dynb__tensor *dynb__plan_labels(const dynb__plan *p) { return &p->labels; }
const dynb__tensor *dynb__plan_logits(const dynb__plan *p) { return &p->logits; }
const dynb__tensor *dynb__plan_loss(const dynb__plan *p) { return &p->loss; }
const dynb__tensor *dynb__plan_input_grad(const dynb__plan *p) { return &p->gx; }
size_t dynb__plan_bytes(const dynb__plan *p) { return p->bytes; }

/* One convolution of a conv unit over the plan's batch at h×w. */
static double unit_flops(const dynb__plan *p, const dynb__conv_unit *cu, int64_t h, int64_t w) {
  return 2.0 * (double)p->n * cu->cout * cu->cin * cu->kernel * cu->kernel * (double)h * (double)w;
}

/* Mirrors forward_passes and backward_passes: the units' forward
 * (unit_forward), weight and data gradients (unit_backward) and
 * recomputation (unit_recomputes), the blocks' own count. */
void dynb__plan_conv_flops(const dynb__plan *p, bool want_dx, double *forward, double *backward) {
  const dynb__net *net = p->net;
  const dynb__net_spec *sp = &net->spec;
  int64_t h = sp->in_height, w = sp->in_width;
  double again = unit_recomputes(p) ? 1 : 0;
  double open = unit_flops(p, &net->open, h, w);
  double fwd = open, bwd = open * (1 + (want_dx ? 1 : 0) + again);
  for (int b = 0; b < sp->nblocks; b++, h /= 2, w /= 2) {
    double bf, bb, conn = unit_flops(p, &net->connect[b], h, w);
    dynb__block_conv_flops(net->blocks[b], &bf, &bb);
    fwd += bf + conn;
    bwd += bb + conn * (2 + again);
  }
  *forward = fwd;
  *backward = bwd;
}

size_t dynb__plan_buffers(const dynb__plan *p) {
  size_t n = (size_t)p->nowned + (size_t)p->scratch.npages;
  for (int b = 0; b < p->net->spec.nblocks; b++) n += (size_t)p->level[b].keep.npages;
  return n;
}

/* ---- passes ---------------------------------------------------------------------- */

static dynb__norm_args unit_norm(const dynb__conv_unit *cu, const unit_buffers *u, bool train) {
  dynb__norm_args a = {cu->norm, &cu->nw, &cu->nb, &u->mean, &u->invstd, NULL, NULL, train,
                       DYNB_ACT_IDENTITY};
  if (cu->norm == DYNB_NORM_BATCH) a.running_mean = &cu->rmean, a.running_var = &cu->rvar;
  return a;
}

/* The unit's z, a and s. `again`: their recomputation in checkpoint
 * mode's backward, where batch statistics come out as in the forward and
 * the running ones are read (evaluation) but not updated a second time
 * (training). */
static dynb_status unit_forward(dynb__plan *p, const dynb__conv_unit *cu, unit_buffers *u,
                                const dynb__tensor *x, bool train, bool again) {
  dynb_ctx *ctx = p->net->ctx;
  dynb__norm_args na = unit_norm(cu, u, train);
  if (again && train) na.running_mean = na.running_var = NULL;
  DYNB_TRY(dynb__conv2d_forward(ctx, x, &cu->w, &cu->b, &u->z, &u->work));
  return dynb__norm_act_forward(ctx, na, cu->act, &u->z, &u->a, &u->s);
}

/* From u->gs = ∂L/∂s to the unit's parameter gradients and dx (if not NULL). */
static dynb_status unit_backward(dynb__plan *p, const dynb__conv_unit *cu, unit_buffers *u,
                                 const dynb__tensor *x, const dynb__tensor *dx, bool train) {
  dynb_ctx *ctx = p->net->ctx;
  dynb__norm_args na = unit_norm(cu, u, train);
  const dynb__tensor *dz;
  DYNB_TRY(dynb__act_backward(ctx, cu->act, &u->a, &u->gs, &u->gs, false));
  DYNB_TRY(dynb__norm_backward(ctx, &na, &u->z, &u->gs, &u->ga, &cu->dnw, &cu->dnb, &dz));
  DYNB_TRY(dynb__channel_sum(ctx, dz, &cu->db, true));
  DYNB_TRY(dynb__conv2d_backward_weights(ctx, x, dz, &cu->dw, true, &u->work));
  if (!dx) return DYNB_OK;
  return dynb__conv2d_backward_data(ctx, dz, &cu->w, dx, false, &u->work);
}

static dynb_status forward_passes(dynb__plan *p, bool train) {
  dynb__net *net = p->net;
  dynb_ctx *ctx = net->ctx;
  int nb = net->spec.nblocks;
  dynb__profile_layer(ctx, "open", -1);
  DYNB_TRY(unit_forward(p, &net->open, &p->open, &p->x, train, false));
  for (int b = 0; b < nb; b++) {
    level_buffers *lv = &p->level[b];
    dynb__profile_layer(ctx, "block", b);
    DYNB_TRY(dynb__block_forward(net->blocks[b], &lv->in, &lv->out, train));
    dynb__profile_layer(ctx, "connect", b);
    DYNB_TRY(unit_forward(p, &net->connect[b], &lv->conn, &lv->out, train, false));
    if (b + 1 < nb)
      DYNB_TRY(dynb__avgpool2_forward(ctx, &lv->conn.s, &lv->pooled));
    else
      DYNB_TRY(dynb__global_avgpool_forward(ctx, &lv->conn.s, &p->feat));
  }
  dynb__profile_layer(ctx, "head", -1);
  DYNB_TRY(dynb__linear_forward(ctx, &p->feat, &net->lin_w, &net->lin_b, &p->logits));
  DYNB_TRY(dynb__xent_forward(ctx, &p->logits, &p->labels, &p->loss, &p->xent_work));
  p->train_last = train;
  return DYNB_OK;
}

static dynb_status backward_passes(dynb__plan *p, bool want_dx) {
  dynb__net *net = p->net;
  dynb_ctx *ctx = net->ctx;
  bool train = p->train_last;
  int nb = net->spec.nblocks;
  dynb__profile_layer(ctx, "head", -1);
  DYNB_TRY(dynb__xent_backward(ctx, &p->logits, &p->labels, p->loss_scale, &p->glogits, false));
  DYNB_TRY(dynb__linear_backward(ctx, &p->feat, &net->lin_w, &p->glogits, &p->gfeat, &net->lin_dw,
                                 &net->lin_db, false, true));
  for (int b = nb - 1; b >= 0; b--) {
    level_buffers *lv = &p->level[b];
    dynb__profile_layer(ctx, "connect", b);
    if (unit_recomputes(p))
      DYNB_TRY(unit_forward(p, &net->connect[b], &lv->conn, &lv->out, train, true));
    if (b + 1 < nb)
      DYNB_TRY(dynb__avgpool2_backward(ctx, &lv->gpooled, &lv->conn.gs, false));
    else
      DYNB_TRY(dynb__global_avgpool_backward(ctx, &p->gfeat, &lv->conn.gs, false));
    DYNB_TRY(unit_backward(p, &net->connect[b], &lv->conn, &lv->out, &lv->gout, train));
    dynb__profile_layer(ctx, "block", b);
    DYNB_TRY(dynb__block_backward(net->blocks[b], &lv->in, &lv->gout, &lv->gin));
  }
  dynb__profile_layer(ctx, "open", -1);
  if (unit_recomputes(p)) DYNB_TRY(unit_forward(p, &net->open, &p->open, &p->x, train, true));
  return unit_backward(p, &net->open, &p->open, &p->x, want_dx ? &p->gx : NULL, train);
}

/* A plan runs by the routes it was built for, whose work its scratch holds,
 * whatever the context's policy has become since (dynb_ctx_set_param:
 * "applies to plans built afterwards"). */
static dynb_status run_pinned(dynb__plan *p, bool backward, bool flag) {
  dynb_ctx *ctx = p->net->ctx;
  dynb__conv_policy now = ctx->conv_policy;
  ctx->conv_policy = p->policy;
  dynb__profile_pass(ctx, backward ? "backward" : "forward");
  dynb_status st = backward ? backward_passes(p, flag) : forward_passes(p, flag);
  ctx->conv_policy = now;
  return st;
}

dynb_status dynb__plan_forward(dynb__plan *p, bool train) { return run_pinned(p, false, train); }

dynb_status dynb__plan_backward(dynb__plan *p, bool want_dx) {
  return run_pinned(p, true, want_dx);
}

void dynb__plan_set_loss_scale(dynb__plan *p, double scale) { p->loss_scale = scale; }
