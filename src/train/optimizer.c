/* Optimisers over a network's trainable tensors, and the time
 * regularisation of its blocks. */
#include <stdio.h>
#include <string.h>

#include "train/train.h"

dynb__optim_desc dynb__optim_desc_default(void) {
  dynb__optim_desc d = {DYNB_OPTIM_SGD, 0.9, 4e-4, false, 0.9, 0.999, 1e-8};
  return d;
}

struct dynb__optimizer {
  dynb__net *net;
  dynb__optim_desc desc;
  int64_t step;
  size_t nstate;
  dynb__net_tensor *state; /* per trainable tensor: velocity, or m then v */
};

static int slots(const dynb__optimizer *o) {
  if (o->desc.kind == DYNB_OPTIM_ADAM) return 2;
  return o->desc.momentum > 0 ? 1 : 0;
}

dynb_status dynb__optimizer_create(dynb__net *net, const dynb__optim_desc *desc,
                                   dynb__optimizer **out) {
  dynb_ctx *ctx = net->ctx;
  *out = NULL;
  dynb__optimizer *o = dynb__calloc(ctx, 1, sizeof *o);
  DYNB_CHECK(ctx, o, DYNB_STATUS_OUT_OF_HOST_MEMORY, "optimizer: no memory");
  o->net = net;
  o->desc = *desc;
  size_t ntrain = 0;
  for (size_t i = 0; i < net->ntensors; i++) ntrain += net->tensors[i].trainable;
  int k = slots(o);
  o->state = dynb__calloc(ctx, ntrain * (size_t)(k ? k : 1), sizeof *o->state);
  if (!o->state) {
    dynb__optimizer_free(o);
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "optimizer: no memory");
  }
  static const char *names[2][2] = {{"velocity", ""}, {"m", "v"}};
  for (size_t i = 0; k && i < net->ntensors; i++) {
    const dynb__net_tensor *t = &net->tensors[i];
    if (!t->trainable) continue;
    for (int s = 0; s < k; s++) {
      dynb__net_tensor *st = &o->state[o->nstate];
      snprintf(st->name, sizeof st->name, "optim.%.80s.%s", t->name,
               names[desc->kind == DYNB_OPTIM_ADAM][s]);
      dynb_status e = dynb__tensor_alloc(ctx, net->real, t->value.ndim, t->value.dims, &st->value);
      if (e == DYNB_OK) e = dynb__tensor_zero(ctx, &st->value);
      if (e != DYNB_OK) {
        dynb__optimizer_free(o);
        return e;
      }
      o->nstate++;
    }
  }
  *out = o;
  return DYNB_OK;
}

void dynb__optimizer_free(dynb__optimizer *o) {
  if (!o) return;
  for (size_t i = 0; i < o->nstate; i++) dynb__tensor_release(&o->state[i].value);
  dynb__free(o->net->ctx, o->state);
  dynb__free(o->net->ctx, o);
}

size_t dynb__optimizer_state_count(const dynb__optimizer *o) { return o->nstate; }
const dynb__net_tensor *dynb__optimizer_state_at(const dynb__optimizer *o, size_t i) {
  return &o->state[i];
}
int64_t *dynb__optimizer_step_counter(dynb__optimizer *o) { return &o->step; }

dynb_status dynb__optimizer_step(dynb__optimizer *o, double lr) {
  dynb__net *net = o->net;
  dynb_ctx *ctx = net->ctx;
  const dynb__optim_desc *d = &o->desc;
  int k = slots(o);
  size_t si = 0;
  o->step++;
  for (size_t i = 0; i < net->ntensors; i++) {
    const dynb__net_tensor *t = &net->tensors[i];
    if (!t->trainable) continue;
    double wd = t->is_norm ? 0.0 : d->weight_decay;
    if (d->kind == DYNB_OPTIM_ADAM) {
      dynb__adam_hyper h = {lr, d->beta1, d->beta2, d->eps, wd, o->step};
      DYNB_TRY(dynb__adam_step(ctx, &t->value, &t->grad, &o->state[si].value,
                               &o->state[si + 1].value, &h));
    } else {
      dynb__sgd_hyper h = {lr, d->momentum, wd, d->nesterov};
      DYNB_TRY(dynb__sgd_step(ctx, &t->value, &t->grad, k ? &o->state[si].value : NULL, &h));
    }
    si += (size_t)k;
    if (net->spec.clip && !t->is_norm)
      DYNB_TRY(dynb__clip(ctx, &t->value, net->spec.clip_min, net->spec.clip_max));
  }
  return DYNB_OK;
}

/* ---- time regularisation -------------------------------------------------------- */

struct dynb__timereg {
  dynb__net *net;
  dynb__tensor h[DYNB_MAX_BLOCKS]; /* control spacings per block; no buffer for J == 1 */
  dynb__tensor work;
};

dynb_status dynb__timereg_create(dynb__net *net, dynb__timereg **out) {
  dynb_ctx *ctx = net->ctx;
  *out = NULL;
  dynb__timereg *tr = dynb__calloc(ctx, 1, sizeof *tr);
  DYNB_CHECK(ctx, tr, DYNB_STATUS_OUT_OF_HOST_MEMORY, "timereg: no memory");
  tr->net = net;
  size_t most = 1;
  dynb_status st = DYNB_OK;
  for (int b = 0; st == DYNB_OK && b < net->spec.nblocks; b++) {
    const dynb__block_spec *bs = &net->spec.blocks[b];
    size_t ws = dynb__timereg_workspace(ctx, (int64_t)dynb__block_param_count(net->blocks[b]));
    most = ws > most ? ws : most;
    if (bs->ncontrols < 2) continue;
    double h[DYNB_MAX_TIME_POINTS];
    for (int j = 0; j + 1 < bs->ncontrols; j++) h[j] = bs->t_controls[j + 1] - bs->t_controls[j];
    int64_t n = bs->ncontrols - 1;
    st = dynb__tensor_alloc(ctx, net->real, 1, &n, &tr->h[b]);
    if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, &tr->h[b], h);
  }
  int64_t w = (int64_t)most;
  if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, net->real, 1, &w, &tr->work);
  if (st != DYNB_OK) {
    dynb__timereg_free(tr);
    return st;
  }
  *out = tr;
  return DYNB_OK;
}

void dynb__timereg_free(dynb__timereg *tr) {
  if (!tr) return;
  for (int b = 0; b < DYNB_MAX_BLOCKS; b++) dynb__tensor_release(&tr->h[b]);
  dynb__tensor_release(&tr->work);
  dynb__free(tr->net->ctx, tr);
}

dynb_status dynb__timereg_apply(dynb__timereg *tr, const dynb__tensor *value) {
  dynb__net *net = tr->net;
  double alpha = net->spec.time_reg;
  DYNB_TRY(dynb__tensor_zero(net->ctx, value));
  for (int b = 0; alpha > 0 && b < net->spec.nblocks; b++) {
    if (!tr->h[b].mem) continue;
    const dynb__tensor *c = dynb__block_controls(net->blocks[b]);
    DYNB_TRY(dynb__timereg_forward(net->ctx, c, &tr->h[b], alpha, value, true, &tr->work));
    DYNB_TRY(dynb__timereg_backward(net->ctx, c, &tr->h[b], alpha, dynb__block_grads(net->blocks[b])));
  }
  return DYNB_OK;
}
