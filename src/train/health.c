/* The divergence check of every training step: is the loss finite, and is
 * every gradient? Checked on the device by one deterministic sum per
 * gradient buffer (a block's controls share one buffer) into a small
 * vector beside a copy of the loss, read back in one transfer: NaN or Inf
 * anywhere makes its buffer's sum non-finite. Only then does the host read
 * gradients, in the network's tensor order, to name the first bad tensor.
 * A sum can also overflow from finite values; the host look-up then finds
 * nothing wrong and training goes on. */
#include <math.h>
#include <string.h>

#include "train/train.h"

struct dynb__health {
  dynb__net *net;
  const dynb__tensor *loss;
  dynb__tensor values; /* [2 + nregions]: loss, correct count, one sum per buffer */
  dynb__tensor work;
  dynb__tensor *regions;
  size_t nregions;
  double *host;
};

void dynb__health_free(dynb__health *h) {
  if (!h) return;
  dynb_ctx *ctx = h->net->ctx;
  dynb__tensor_release(&h->values);
  dynb__tensor_release(&h->work);
  dynb__free(ctx, h->regions);
  dynb__free(ctx, h->host);
  dynb__free(ctx, h);
}

/* The whole buffer behind a gradient: a block's grads for its controls'
 * views, else the gradient itself. */
static dynb__tensor region_of(const dynb__net *net, const dynb__tensor *grad) {
  for (int b = 0; b < net->spec.nblocks; b++)
    if (dynb__block_grads(net->blocks[b])->mem == grad->mem) return *dynb__block_grads(net->blocks[b]);
  return *grad;
}

static dynb_status collect_regions(dynb__health *h) {
  dynb__net *net = h->net;
  h->regions = dynb__calloc(net->ctx, net->ntensors + 1, sizeof *h->regions);
  DYNB_CHECK(net->ctx, h->regions, DYNB_STATUS_OUT_OF_HOST_MEMORY, "divergence check: no memory");
  for (size_t i = 0; i < net->ntensors; i++) {
    if (!net->tensors[i].trainable) continue;
    dynb__tensor r = region_of(net, &net->tensors[i].grad);
    bool seen = false;
    for (size_t j = 0; j < h->nregions && !seen; j++) seen = h->regions[j].mem == r.mem;
    if (!seen) h->regions[h->nregions++] = r;
  }
  return DYNB_OK;
}

dynb_status dynb__health_create(dynb__net *net, const dynb__tensor *loss, dynb__health **out) {
  dynb_ctx *ctx = net->ctx;
  *out = NULL;
  dynb__health *h = dynb__calloc(ctx, 1, sizeof *h);
  DYNB_CHECK(ctx, h, DYNB_STATUS_OUT_OF_HOST_MEMORY, "divergence check: no memory");
  h->net = net;
  h->loss = loss;
  dynb_status st = collect_regions(h);
  size_t most = 1;
  for (size_t j = 0; j < h->nregions; j++) {
    size_t w = dynb__sum_workspace(ctx, dynb__tensor_numel(&h->regions[j]));
    most = w > most ? w : most;
  }
  int64_t nv = 2 + (int64_t)h->nregions, nw = (int64_t)most;
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, net->real, 1, &nv, &h->values);
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, net->real, 1, &nw, &h->work);
  if (st == DYNB_OK) {
    h->host = dynb__calloc(ctx, (size_t)nv, sizeof *h->host);
    if (!h->host) st = dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "divergence check: no memory");
  }
  if (st != DYNB_OK) {
    dynb__health_free(h);
    return st;
  }
  *out = h;
  return DYNB_OK;
}

/* The first non-finite gradient element in the network's tensor order. */
static dynb_status name_the_culprit(dynb__health *h, int epoch, int64_t step) {
  dynb__net *net = h->net;
  dynb_ctx *ctx = net->ctx;
  for (size_t i = 0; i < net->ntensors; i++) {
    const dynb__net_tensor *t = &net->tensors[i];
    if (!t->trainable) continue;
    size_t n = dynb__tensor_numel(&t->grad);
    double *g = dynb__alloc(ctx, n * sizeof *g);
    DYNB_CHECK(ctx, g, DYNB_STATUS_OUT_OF_HOST_MEMORY, "divergence check: no memory");
    dynb_status st = dynb__tensor_read_f64(ctx, &t->grad, g);
    size_t bad = 0;
    while (st == DYNB_OK && bad < n && isfinite(g[bad])) bad++;
    double v = bad < n ? g[bad] : 0;
    if (isnan(v)) v = fabs(v); /* "nan", never "-nan" */
    dynb__free(ctx, g);
    DYNB_TRY(st);
    if (bad < n)
      return dynb__fail(ctx, DYNB_STATUS_NON_FINITE,
                        "training diverged at epoch %d, step %lld: grad.%s[%zu] is %g; stopped "
                        "before the optimiser step (files written so far are kept)",
                        epoch, (long long)step, t->name, bad, v);
  }
  return DYNB_OK;
}

dynb_status dynb__health_check(dynb__health *h, int epoch, int64_t step, double out[2]) {
  dynb_ctx *ctx = h->net->ctx;
  int64_t two = 2, one = 1;
  dynb__tensor head = dynb__tensor_sub(&h->values, 0, 1, &two);
  DYNB_TRY(dynb__tensor_copy(ctx, h->loss, &head));
  for (size_t j = 0; j < h->nregions; j++) {
    dynb__tensor slot = dynb__tensor_sub(&h->values, 2 + j, 1, &one);
    DYNB_TRY(dynb__sum(ctx, &h->regions[j], &slot, false, &h->work));
  }
  DYNB_TRY(dynb__tensor_read_f64(ctx, &h->values, h->host));
  out[0] = h->host[0], out[1] = h->host[1];
  if (isnan(out[0])) out[0] = fabs(out[0]);
  if (!isfinite(out[0]))
    return dynb__fail(ctx, DYNB_STATUS_NON_FINITE,
                      "training diverged at epoch %d, step %lld: the loss is %g; stopped before "
                      "the optimiser step (files written so far are kept)",
                      epoch, (long long)step, out[0]);
  bool finite = true;
  for (size_t j = 0; j < h->nregions; j++) finite = finite && isfinite(h->host[2 + j]);
  return finite ? DYNB_OK : name_the_culprit(h, epoch, step);
}
