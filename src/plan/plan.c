/* The network plan: fixed buffers for one batch shape, and the passes over
 * them. Nothing here allocates after dynb__plan_build. */
#include <string.h>

#include "plan/plan.h"

/* The activations of one conv unit (opening or connecting layer):
 * z = conv(x), a = N(z), s = σ(a); and their gradients. */
typedef struct unit_buffers {
  dynb__tensor z, a, s, mean, invstd;
  dynb__tensor gs, ga; /* ∂L/∂s (then ∂L/∂a in place), ∂L/∂z */
} unit_buffers;

/* Level b: block b's input and output and its connecting layer, then the
 * pooled result (the next level's input) or, after the last level, the
 * global average. */
typedef struct level_buffers {
  dynb__tensor in, out, pooled;
  dynb__tensor gin, gout, gpooled;
  unit_buffers conn;
} level_buffers;

struct dynb__plan {
  dynb__net *net;
  int64_t n;
  dynb_memory_mode mode;
  bool train_last;
  dynb__tensor x, labels, gx;
  unit_buffers open;
  level_buffers level[DYNB_MAX_BLOCKS];
  dynb__tensor feat, gfeat, logits, glogits, loss, xent_work, conv_work;
  size_t bytes;
  /* Every buffer above, for release. */
  dynb__tensor *owned[16 + 16 * DYNB_MAX_BLOCKS];
  int nowned;
};

static dynb_status alloc(dynb__plan *p, dynb__tensor *t, dynb_dtype dt, int ndim,
                         const int64_t *dims) {
  DYNB_TRY(dynb__tensor_alloc(p->net->ctx, dt, ndim, dims, t));
  p->owned[p->nowned++] = t;
  p->bytes += t->cap_bytes;
  return DYNB_OK;
}

static dynb_status alloc4(dynb__plan *p, dynb__tensor *t, int64_t c, int64_t h, int64_t w) {
  int64_t d[4] = {p->n, c, h, w};
  return alloc(p, t, p->net->real, 4, d);
}

/* The buffers of a conv unit with `c` output channels at h×w. A norm of
 * kind none leaves a as z (no buffer, no pass). */
static dynb_status unit_alloc(dynb__plan *p, unit_buffers *u, const dynb__conv_unit *cu,
                              int64_t h, int64_t w) {
  int64_t c = cu->cout;
  DYNB_TRY(alloc4(p, &u->z, c, h, w));
  if (cu->norm != DYNB_NORM_NONE)
    DYNB_TRY(alloc4(p, &u->a, c, h, w));
  else
    u->a = u->z;
  DYNB_TRY(alloc4(p, &u->s, c, h, w));
  DYNB_TRY(alloc4(p, &u->gs, c, h, w));
  DYNB_TRY(alloc4(p, &u->ga, c, h, w));
  if (cu->norm == DYNB_NORM_BATCH) {
    DYNB_TRY(alloc(p, &u->mean, p->net->real, 1, &c));
    DYNB_TRY(alloc(p, &u->invstd, p->net->real, 1, &c));
  }
  return DYNB_OK;
}

static size_t conv_ws(const dynb__plan *p, const dynb__conv_unit *cu, int64_t h, int64_t w) {
  return dynb__conv2d_workspace(p->n, cu->cin, cu->cout, h, w, cu->kernel);
}

/* Every convolution shape of the plan picks its route now (timed once per
 * context), so that no step pays for the choice. */
static dynb_status choose_conv_routes(dynb__plan *p, const dynb__conv_unit *cu, int64_t h,
                                      int64_t w) {
  return dynb__conv2d_prepare(p->net->ctx, p->net->real, p->n, cu->cin, cu->cout, h, w,
                              cu->kernel);
}

static dynb_status plan_alloc(dynb__plan *p) {
  dynb__net *net = p->net;
  const dynb__net_spec *sp = &net->spec;
  int64_t h = sp->in_height, w = sp->in_width, n = p->n;
  DYNB_TRY(alloc4(p, &p->x, sp->in_channels, h, w));
  DYNB_TRY(alloc4(p, &p->gx, sp->in_channels, h, w));
  DYNB_TRY(alloc(p, &p->labels, DYNB_I32, 1, &n));
  DYNB_TRY(unit_alloc(p, &p->open, &net->open, h, w));
  DYNB_TRY(choose_conv_routes(p, &net->open, h, w));
  size_t ws = conv_ws(p, &net->open, h, w);
  for (int b = 0; b < sp->nblocks; b++) {
    level_buffers *lv = &p->level[b];
    int64_t c = sp->blocks[b].width;
    lv->in = b == 0 ? p->open.s : p->level[b - 1].pooled;
    lv->gin = b == 0 ? p->open.gs : p->level[b - 1].gpooled;
    DYNB_TRY(alloc4(p, &lv->out, c, h, w));
    DYNB_TRY(alloc4(p, &lv->gout, c, h, w));
    DYNB_TRY(unit_alloc(p, &lv->conn, &net->connect[b], h, w));
    size_t cws = conv_ws(p, &net->connect[b], h, w);
    ws = cws > ws ? cws : ws;
    DYNB_TRY(choose_conv_routes(p, &net->connect[b], h, w));
    const dynb__conv_unit inner = {.cin = (int)c, .cout = (int)c,
                                   .kernel = sp->blocks[b].layer.kernel};
    DYNB_TRY(choose_conv_routes(p, &inner, h, w));
    DYNB_TRY(dynb__block_prepare(net->blocks[b], n, h, w, p->mode));
    p->bytes += dynb__block_buffer_bytes(net->blocks[b]);
    if (b + 1 < sp->nblocks) {
      h /= 2, w /= 2;
      DYNB_TRY(alloc4(p, &lv->pooled, net->connect[b].cout, h, w));
      DYNB_TRY(alloc4(p, &lv->gpooled, net->connect[b].cout, h, w));
    }
  }
  int64_t fd[2] = {n, sp->head_width}, ld[2] = {n, sp->classes}, two = 2;
  int64_t xw = (int64_t)dynb__xent_workspace(n), cw = (int64_t)(ws ? ws : 1);
  DYNB_TRY(alloc(p, &p->feat, net->real, 2, fd));
  DYNB_TRY(alloc(p, &p->gfeat, net->real, 2, fd));
  DYNB_TRY(alloc(p, &p->logits, net->real, 2, ld));
  DYNB_TRY(alloc(p, &p->glogits, net->real, 2, ld));
  DYNB_TRY(alloc(p, &p->loss, net->real, 1, &two));
  DYNB_TRY(alloc(p, &p->xent_work, net->real, 1, &xw));
  return alloc(p, &p->conv_work, net->real, 1, &cw);
}

dynb_status dynb__plan_build(dynb__net *net, int64_t batch, dynb_memory_mode mode,
                             dynb__plan **out) {
  dynb_ctx *ctx = net->ctx;
  *out = NULL;
  DYNB_CHECK(ctx, batch >= 1, DYNB_STATUS_INVALID_ARGUMENT, "plan: batch must be >= 1");
  dynb__plan *p = dynb__calloc(ctx, 1, sizeof *p);
  DYNB_CHECK(ctx, p, DYNB_STATUS_OUT_OF_HOST_MEMORY, "plan: no memory");
  p->net = net;
  p->n = batch;
  p->mode = mode;
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

/* ---- passes ---------------------------------------------------------------------- */

static dynb__norm_args unit_norm(const dynb__conv_unit *cu, const unit_buffers *u, bool train) {
  dynb__norm_args a = {cu->norm, &cu->nw, &cu->nb, &u->mean, &u->invstd, NULL, NULL, train};
  if (cu->norm == DYNB_NORM_BATCH) a.running_mean = &cu->rmean, a.running_var = &cu->rvar;
  return a;
}

static dynb_status unit_forward(dynb__plan *p, const dynb__conv_unit *cu, unit_buffers *u,
                                const dynb__tensor *x, bool train) {
  dynb_ctx *ctx = p->net->ctx;
  dynb__norm_args na = unit_norm(cu, u, train);
  DYNB_TRY(dynb__conv2d_forward(ctx, x, &cu->w, &cu->b, &u->z, &p->conv_work));
  DYNB_TRY(dynb__norm_forward(ctx, &na, &u->z, &u->a));
  return dynb__act_forward(ctx, cu->act, &u->a, &u->s);
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
  DYNB_TRY(dynb__conv2d_backward_weights(ctx, x, dz, &cu->dw, true, &p->conv_work));
  if (!dx) return DYNB_OK;
  return dynb__conv2d_backward_data(ctx, dz, &cu->w, dx, false, &p->conv_work);
}

dynb_status dynb__plan_forward(dynb__plan *p, bool train) {
  dynb__net *net = p->net;
  dynb_ctx *ctx = net->ctx;
  int nb = net->spec.nblocks;
  DYNB_TRY(unit_forward(p, &net->open, &p->open, &p->x, train));
  for (int b = 0; b < nb; b++) {
    level_buffers *lv = &p->level[b];
    DYNB_TRY(dynb__block_forward(net->blocks[b], &lv->in, &lv->out, train));
    DYNB_TRY(unit_forward(p, &net->connect[b], &lv->conn, &lv->out, train));
    if (b + 1 < nb)
      DYNB_TRY(dynb__avgpool2_forward(ctx, &lv->conn.s, &lv->pooled));
    else
      DYNB_TRY(dynb__global_avgpool_forward(ctx, &lv->conn.s, &p->feat));
  }
  DYNB_TRY(dynb__linear_forward(ctx, &p->feat, &net->lin_w, &net->lin_b, &p->logits));
  DYNB_TRY(dynb__xent_forward(ctx, &p->logits, &p->labels, &p->loss, &p->xent_work));
  p->train_last = train;
  return DYNB_OK;
}

dynb_status dynb__plan_backward(dynb__plan *p, bool want_dx) {
  dynb__net *net = p->net;
  dynb_ctx *ctx = net->ctx;
  bool train = p->train_last;
  int nb = net->spec.nblocks;
  DYNB_TRY(dynb__xent_backward(ctx, &p->logits, &p->labels, 1.0, &p->glogits, false));
  DYNB_TRY(dynb__linear_backward(ctx, &p->feat, &net->lin_w, &p->glogits, &p->gfeat, &net->lin_dw,
                                 &net->lin_db, false, true));
  for (int b = nb - 1; b >= 0; b--) {
    level_buffers *lv = &p->level[b];
    if (b + 1 < nb)
      DYNB_TRY(dynb__avgpool2_backward(ctx, &lv->gpooled, &lv->conn.gs, false));
    else
      DYNB_TRY(dynb__global_avgpool_backward(ctx, &p->gfeat, &lv->conn.gs, false));
    DYNB_TRY(unit_backward(p, &net->connect[b], &lv->conn, &lv->out, &lv->gout, train));
    DYNB_TRY(dynb__block_backward(net->blocks[b], &lv->in, &lv->gout, &lv->gin));
  }
  return unit_backward(p, &net->open, &p->open, &p->x, want_dx ? &p->gx : NULL, train);
}
