/* Public optimisers: hyper-parameters checked one at a time, then the
 * internal optimiser (src/train/optimizer.c), created at the first step
 * once its shape (momentum or not, SGD or Adam) is final. */
#include <math.h>

#include "api/api.h"

dynb_status dynb_optimizer_create(dynb_net *net, dynb_optim_kind kind, dynb_optimizer **out) {
  DYNB__API_HANDLE(net);
  dynb_ctx *ctx = net->ctx;
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_optimizer_create: out is NULL");
  *out = NULL;
  DYNB_CHECK(ctx, kind == DYNB_OPTIM_SGD || kind == DYNB_OPTIM_ADAM, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_optimizer_create: unknown kind %d", (int)kind);
  dynb_optimizer *o = dynb__calloc(ctx, 1, sizeof *o);
  DYNB_CHECK(ctx, o, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_optimizer_create: no host memory");
  o->net = net;
  o->desc = dynb__optim_desc_default();
  o->desc.kind = kind;
  o->lr = kind == DYNB_OPTIM_ADAM ? 1e-3 : 1e-2;
  net->children++;
  *out = o;
  return DYNB_OK;
}

void dynb_optimizer_free(dynb_optimizer *o) {
  if (!o) return;
  dynb__optimizer_free(o->opt);
  o->net->children--;
  dynb__free(o->net->ctx, o);
}

/* Where a parameter lives, its bounds (lo inclusive; hi inclusive unless
 * hi_open) and the kind that uses it (-1: both). */
typedef struct param_slot {
  double *value;
  double lo, hi;
  bool hi_open, lo_open;
  int kind;
} param_slot;

static bool slot(dynb_optimizer *o, dynb_optim_param p, param_slot *s) {
  dynb__optim_desc *d = &o->desc;
  switch (p) {
    case DYNB_OPTIM_LR: *s = (param_slot){&o->lr, 0, 1e6, false, false, -1}; return true;
    case DYNB_OPTIM_MOMENTUM: *s = (param_slot){&d->momentum, 0, 1, true, false, DYNB_OPTIM_SGD}; return true;
    case DYNB_OPTIM_WEIGHT_DECAY: *s = (param_slot){&d->weight_decay, 0, 1, false, false, -1}; return true;
    case DYNB_OPTIM_NESTEROV: *s = (param_slot){NULL, 0, 1, false, false, DYNB_OPTIM_SGD}; return true;
    case DYNB_OPTIM_BETA1: *s = (param_slot){&d->beta1, 0, 1, true, false, DYNB_OPTIM_ADAM}; return true;
    case DYNB_OPTIM_BETA2: *s = (param_slot){&d->beta2, 0, 1, true, false, DYNB_OPTIM_ADAM}; return true;
    case DYNB_OPTIM_EPS: *s = (param_slot){&d->eps, 0, 1, false, true, DYNB_OPTIM_ADAM}; return true;
  }
  return false;
}

dynb_status dynb_optimizer_set(dynb_optimizer *o, dynb_optim_param p, double value) {
  DYNB__API_HANDLE(o);
  dynb_ctx *ctx = o->net->ctx;
  param_slot s;
  DYNB_CHECK(ctx, slot(o, p, &s), DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_optimizer_set: unknown parameter %d", (int)p);
  DYNB_CHECK(ctx, s.kind < 0 || s.kind == (int)o->desc.kind, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_optimizer_set: parameter %d does not apply to %s", (int)p,
             o->desc.kind == DYNB_OPTIM_ADAM ? "Adam" : "SGD");
  DYNB_CHECK(ctx, p == DYNB_OPTIM_LR || !o->opt, DYNB_STATUS_MISUSE,
             "dynb_optimizer_set: only the learning rate may change after the first step");
  bool in = isfinite(value) && (s.lo_open ? value > s.lo : value >= s.lo) &&
            (s.hi_open ? value < s.hi : value <= s.hi);
  if (p == DYNB_OPTIM_NESTEROV) in = value == 0 || value == 1;
  DYNB_CHECK(ctx, in, DYNB_STATUS_PARAM_OUT_OF_BOUND,
             "dynb_optimizer_set: parameter %d = %g is outside %c%g, %g%c", (int)p, value,
             s.lo_open ? '(' : '[', s.lo, s.hi, s.hi_open ? ')' : ']');
  if (p == DYNB_OPTIM_NESTEROV)
    o->desc.nesterov = value != 0;
  else
    *s.value = value;
  return DYNB_OK;
}

dynb_status dynb_optimizer_get(const dynb_optimizer *o, dynb_optim_param p, double *value) {
  DYNB__API_HANDLE(o);
  param_slot s;
  if (!value || !slot((dynb_optimizer *)o, p, &s)) return DYNB_STATUS_INVALID_ARGUMENT;
  *value = p == DYNB_OPTIM_NESTEROV ? (double)o->desc.nesterov : *s.value;
  return DYNB_OK;
}

dynb_status dynb_optimizer_step(dynb_optimizer *o) {
  DYNB__API_HANDLE(o);
  dynb_ctx *ctx = o->net->ctx;
  DYNB_CHECK(ctx, o->net->has_grads, DYNB_STATUS_MISUSE,
             "dynb_optimizer_step: the network has had no backward pass");
  DYNB_CHECK(ctx, !o->desc.nesterov || o->desc.momentum > 0, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_optimizer_step: Nesterov momentum needs momentum > 0");
  if (!o->opt) DYNB_TRY(dynb__optimizer_create(o->net->net, &o->desc, &o->opt));
  return dynb__optimizer_step(o->opt, o->lr);
}
