/* dynblocks in a few lines: learn "is the top half brighter?" on 4x4 images. */
#include <dynblocks/dynblocks.h>
#include <stdio.h>

#define N 32
static const char *spec = "{\"input\": {\"channels\": 1, \"height\": 4, \"width\": 4},"
  " \"classes\": 2, \"open\": {\"width\": 4}, \"blocks\": [{\"width\": 4, \"layer\": \"doublesym\","
  " \"norm\": \"tv\", \"scheme\": \"rk4\", \"t_states\": [0, 1, 2]}]}";

int main(void) {
  float x[N * 16];
  int32_t y[N];
  for (int i = 0; i < N * 16; i++) {
    y[i / 16] = i / 16 % 2;
    x[i] = (float)((i % 16 < 8) == y[i / 16]) + 0.1f * (float)(i * 7 % 5);
  }
  const int64_t xd[4] = {N, 1, 4, 4}, yd[1] = {N};
  dynb_ctx *ctx = NULL; dynb_net *net = NULL; dynb_plan *plan = NULL;
  dynb_optimizer *opt = NULL; dynb_tensor *xt = NULL, *yt = NULL; double loss = 0, acc = 0;
  dynb_status st = dynb_ctx_create(NULL, &ctx);
  if (!st) st = dynb_net_create(ctx, spec, DYNB_F32, 1, &net);
  if (!st) st = dynb_plan_build(net, N, DYNB_MEMORY_STORE, &plan);
  if (!st) st = dynb_optimizer_create(net, DYNB_OPTIM_ADAM, &opt);
  if (!st) st = dynb_optimizer_set(opt, DYNB_OPTIM_LR, 0.01);
  if (!st) st = dynb_tensor_create(ctx, DYNB_F32, 4, xd, &xt);
  if (!st) st = dynb_tensor_create(ctx, DYNB_I32, 1, yd, &yt);
  if (!st) st = dynb_tensor_write(xt, x, sizeof x);
  if (!st) st = dynb_tensor_write(yt, y, sizeof y);
  for (int step = 0; !st && step <= 30; step++) {
    st = dynb_plan_forward(plan, xt, yt, DYNB_PASS_TRAIN);
    if (!st) st = dynb_plan_loss(plan, &loss, &acc);
    if (!st) st = dynb_plan_backward(plan, NULL);
    if (!st) st = dynb_optimizer_step(opt);
    if (!st && step % 10 == 0) printf("step %2d  loss %.4f  accuracy %.2f\n", step, loss, acc);
  }
  if (st) fprintf(stderr, "dynblocks: %s\n", dynb_ctx_last_error(ctx));
  dynb_tensor_free(xt), dynb_tensor_free(yt), dynb_optimizer_free(opt), dynb_plan_free(plan);
  dynb_net_free(net), dynb_ctx_free(ctx);
  return st != DYNB_OK;
}
