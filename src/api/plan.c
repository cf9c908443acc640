/* Public plans: the internal plan (src/plan) fed from the caller's tensors,
 * with the spec's time regularisation in backward as the trainer does it. */
#include "api/api.h"

dynb_status dynb_plan_build(dynb_net *net, int64_t batch, dynb_memory_mode mode,
                            dynb_plan **out) {
  DYNB__API_HANDLE(net);
  dynb_ctx *ctx = net->ctx;
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_plan_build: out is NULL");
  *out = NULL;
  /* Blocks hold the buffers of one batch shape: a second plan would take
   * them from under the first. */
  DYNB_CHECK(ctx, !net->plan, DYNB_STATUS_MISUSE,
             "dynb_plan_build: the network already has a plan; free it first");
  DYNB_CHECK(ctx, mode == DYNB_MEMORY_STORE || mode == DYNB_MEMORY_CHECKPOINT ||
                      mode == DYNB_MEMORY_RECONSTRUCT,
             DYNB_STATUS_INVALID_ARGUMENT, "dynb_plan_build: unknown memory mode %d", (int)mode);
  DYNB_CHECK(ctx, batch >= 1 && batch <= INT32_MAX, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_plan_build: batch %lld outside 1..%d", (long long)batch, INT32_MAX);
  dynb_plan *p = dynb__calloc(ctx, 1, sizeof *p);
  DYNB_CHECK(ctx, p, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_plan_build: no host memory");
  p->net = net;
  dynb_status st = dynb__plan_build(net->net, batch, mode, &p->plan);
  /* Labels stay defined (zero) until a forward brings some. */
  if (st == DYNB_OK) st = dynb__tensor_zero(ctx, dynb__plan_labels(p->plan));
  if (st == DYNB_OK && net->net->spec.time_reg > 0) {
    int64_t one = 1;
    st = dynb__timereg_create(net->net, &p->reg);
    if (st == DYNB_OK) st = dynb__tensor_alloc(ctx, net->net->real, 1, &one, &p->reg_value);
  }
  if (st != DYNB_OK) {
    dynb__tensor_release(&p->reg_value);
    dynb__timereg_free(p->reg);
    dynb__plan_free(p->plan);
    dynb__free(ctx, p);
    return st;
  }
  net->plan = p;
  net->children++;
  *out = p;
  return DYNB_OK;
}

void dynb_plan_free(dynb_plan *p) {
  if (!p) return;
  dynb_net *net = p->net;
  dynb__tensor_release(&p->reg_value);
  dynb__timereg_free(p->reg);
  dynb__plan_free(p->plan);
  net->plan = NULL;
  net->children--;
  dynb__free(net->ctx, p);
}

dynb_status dynb_plan_forward(dynb_plan *p, const dynb_tensor *x, const dynb_tensor *labels,
                              dynb_pass pass) {
  DYNB__API_HANDLE(p);
  dynb_ctx *ctx = p->net->ctx;
  DYNB_CHECK(ctx, pass == DYNB_PASS_EVAL || pass == DYNB_PASS_TRAIN, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_plan_forward: unknown pass %d", (int)pass);
  const dynb__tensor *in = dynb__plan_input(p->plan), *lab = dynb__plan_labels(p->plan);
  DYNB_TRY(dynb__api_tensor_check(ctx, "dynb_plan_forward: x", x, in->dtype, in->ndim, in->dims));
  if (labels)
    DYNB_TRY(dynb__api_tensor_check(ctx, "dynb_plan_forward: labels", labels, DYNB_I32, 1,
                                    lab->dims));
  p->ran = p->has_labels = false;
  DYNB_TRY(dynb__tensor_copy(ctx, &x->t, in));
  if (labels) DYNB_TRY(dynb__tensor_copy(ctx, &labels->t, lab));
  DYNB_TRY(dynb__plan_forward(p->plan, pass == DYNB_PASS_TRAIN));
  p->ran = true;
  p->has_labels = labels != NULL;
  return DYNB_OK;
}

dynb_status dynb_plan_logits(dynb_plan *p, dynb_tensor *out) {
  DYNB__API_HANDLE(p);
  dynb_ctx *ctx = p->net->ctx;
  const dynb__tensor *z = dynb__plan_logits(p->plan);
  DYNB_CHECK(ctx, p->ran, DYNB_STATUS_MISUSE, "dynb_plan_logits: no forward pass has run");
  DYNB_TRY(dynb__api_tensor_check(ctx, "dynb_plan_logits: out", out, z->dtype, 2, z->dims));
  return dynb__tensor_copy(ctx, z, &out->t);
}

dynb_status dynb_plan_loss(dynb_plan *p, double *loss, double *accuracy) {
  DYNB__API_HANDLE(p);
  dynb_ctx *ctx = p->net->ctx;
  DYNB_CHECK(ctx, loss, DYNB_STATUS_INVALID_ARGUMENT, "dynb_plan_loss: loss is NULL");
  DYNB_CHECK(ctx, p->has_labels, DYNB_STATUS_MISUSE,
             "dynb_plan_loss: the last forward pass had no labels");
  double v[2];
  DYNB_TRY(dynb__tensor_read_f64(ctx, dynb__plan_loss(p->plan), v));
  *loss = v[0];
  if (accuracy) *accuracy = v[1] / (double)dynb__plan_batch(p->plan);
  return DYNB_OK;
}

dynb_status dynb_plan_backward(dynb_plan *p, dynb_tensor *dx) {
  DYNB__API_HANDLE(p);
  dynb_ctx *ctx = p->net->ctx;
  DYNB_CHECK(ctx, p->has_labels, DYNB_STATUS_MISUSE,
             "dynb_plan_backward: needs a forward pass with labels before it");
  const dynb__tensor *gx = dynb__plan_input_grad(p->plan);
  if (dx)
    DYNB_TRY(dynb__api_tensor_check(ctx, "dynb_plan_backward: dx", dx, gx->dtype, gx->ndim,
                                    gx->dims));
  /* The trainer's order (src/train/trainer.c): zero, regularisation, then
   * the loss's gradients on top. */
  DYNB_TRY(dynb__net_zero_grads(p->net->net));
  if (p->reg) DYNB_TRY(dynb__timereg_apply(p->reg, &p->reg_value));
  DYNB_TRY(dynb__plan_backward(p->plan, dx != NULL));
  p->net->has_grads = true;
  return dx ? dynb__tensor_copy(ctx, gx, &dx->t) : DYNB_OK;
}

dynb_status dynb_plan_bytes(const dynb_plan *p, size_t *bytes) {
  DYNB__API_HANDLE(p);
  if (!bytes) return DYNB_STATUS_INVALID_ARGUMENT;
  *bytes = dynb__plan_bytes(p->plan);
  return DYNB_OK;
}
