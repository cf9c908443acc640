#include "api_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const AF_SPEC =
    "{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": 2,"
    " \"open\": {\"width\": 4},"
    " \"blocks\": [{\"width\": 4, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"euler\","
    "              \"t_states\": [0, 1, 2]},"
    "             {\"width\": 6, \"layer\": \"double\", \"norm\": \"batch\", \"scheme\": \"heun\","
    "              \"t_states\": [0, 1], \"t_controls\": [0, 0.5, 1]}],"
    " \"time_reg\": 0.01}";

/* splitmix64: the same stream on every host. */
static double uniform(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

void af_make_batch(uint64_t seed, float *x, int32_t *y) {
  uint64_t s = seed * UINT64_C(0x9e3779b97f4a7c15) + 1;
  for (int i = 0; i < AF_BATCH; i++) {
    y[i] = uniform(&s) >= 0.5;
    for (int p = 0; p < AF_PIXELS; p++) {
      int bright = (p < AF_PIXELS / 2) == (y[i] == 0);
      x[i * AF_PIXELS + p] = (float)(uniform(&s) - 0.5 + bright);
    }
  }
}

dynb_status af_ctx(dynb_ctx **out, char *err, size_t errlen) {
  dynb_ctx_desc d = dynb_ctx_desc_default();
  const char *cache = getenv("DYNB_TEST_CACHE_DIR");
  d.device = getenv("DYNB_TEST_DEVICE");
  d.cache_dir = cache ? cache : "";
  dynb_ctx *ctx = NULL;
  dynb_status st = dynb_ctx_create(&d, &ctx);
  if (st == DYNB_OK) st = dynb_ctx_set_param(ctx, DYNB_PARAM_CONV_ROUTE, DYNB_CONV_GEMM);
  if (st != DYNB_OK) {
    snprintf(err, errlen, "context: %s", dynb_ctx_last_error(ctx));
    dynb_ctx_free(ctx);
    ctx = NULL;
  }
  *out = ctx;
  return st;
}

/* Appends every tensor of net to a fresh host array. */
static dynb_status collect(dynb_net *net, double **params, size_t *count) {
  size_t n = 0, total = 0;
  dynb_status st = dynb_net_param_count(net, &n);
  double *all = NULL;
  for (size_t i = 0; st == DYNB_OK && i < n; i++) {
    const char *name;
    int nd = 0;
    int64_t dims[DYNB_MAX_DIMS];
    st = dynb_net_param_name(net, i, &name);
    if (st == DYNB_OK) st = dynb_net_param_info(net, name, &nd, dims, NULL);
    size_t k = 1;
    for (int d = 0; d < nd; d++) k *= (size_t)dims[d];
    double *grown = st == DYNB_OK ? realloc(all, (total + k) * sizeof *all) : NULL;
    if (st == DYNB_OK && !grown) st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
    if (grown) all = grown;
    if (st == DYNB_OK) st = dynb_net_param_get(net, name, DYNB_F64, all + total, k);
    total += k;
  }
  if (st != DYNB_OK) {
    free(all);
    all = NULL, total = 0;
  }
  *params = all;
  *count = total;
  return st;
}

dynb_status af_train(dynb_ctx *ctx, uint64_t seed, uint64_t data_seed, int steps,
                     double **params, size_t *count, char *err, size_t errlen) {
  int64_t xd[4] = {AF_BATCH, 1, 8, 8}, yd[1] = {AF_BATCH};
  float x[AF_BATCH * AF_PIXELS];
  int32_t y[AF_BATCH];
  dynb_net *net = NULL;
  dynb_plan *plan = NULL;
  dynb_optimizer *opt = NULL;
  dynb_tensor *xt = NULL, *yt = NULL;
  *params = NULL;
  *count = 0;
  dynb_status st = dynb_net_create(ctx, AF_SPEC, DYNB_F32, seed, &net);
  if (st == DYNB_OK) st = dynb_plan_build(net, AF_BATCH, DYNB_MEMORY_STORE, &plan);
  if (st == DYNB_OK) st = dynb_optimizer_create(net, DYNB_OPTIM_SGD, &opt);
  if (st == DYNB_OK) st = dynb_tensor_create(ctx, DYNB_F32, 4, xd, &xt);
  if (st == DYNB_OK) st = dynb_tensor_create(ctx, DYNB_I32, 1, yd, &yt);
  for (int s = 0; st == DYNB_OK && s < steps; s++) {
    af_make_batch(data_seed + (uint64_t)s, x, y);
    st = dynb_tensor_write(xt, x, sizeof x);
    if (st == DYNB_OK) st = dynb_tensor_write(yt, y, sizeof y);
    if (st == DYNB_OK) st = dynb_plan_forward(plan, xt, yt, DYNB_PASS_TRAIN);
    if (st == DYNB_OK) st = dynb_plan_backward(plan, NULL);
    if (st == DYNB_OK) st = dynb_optimizer_step(opt);
  }
  if (st == DYNB_OK) st = collect(net, params, count);
  if (st != DYNB_OK) snprintf(err, errlen, "training: %s", dynb_ctx_last_error(ctx));
  dynb_tensor_free(xt);
  dynb_tensor_free(yt);
  dynb_optimizer_free(opt);
  dynb_plan_free(plan);
  dynb_net_free(net);
  return st;
}
