/* Reconstruction drift in f32 (issue 14): for a network of leapfrog (or
 * verlet) blocks with K steps each, one training forward and backward on
 * the same batch in store and in reconstruct mode, from the same
 * parameters; prints the rebuilt-Y_0 error the library reports and the
 * largest difference of any parameter gradient relative to the largest
 * store gradient of the network (as tests/parity does: a bias before a
 * batch norm has a gradient that is zero but for rounding, so per tensor
 * the ratio is rounding over rounding), and the same per tensor over the
 * reversible blocks' control points only (where θ's gradients are not
 * zero by construction). With a training-step count
 * > 0, the parameters are first trained that many SGD steps (store mode)
 * on the same synthetic batches, so the figure is also given "after
 * training". Used by bench/reversible.sh; public API only.
 *
 * usage: reversible_drift SPEC K TRAIN_STEPS, where SPEC's "@T" stand for
 * the state grid 0, 4/K, ..., 4. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynblocks/dynblocks.h"

#define BATCH 64
#define PIX (28 * 28)

static void die(dynb_ctx *ctx, const char *what) {
  fprintf(stderr, "reversible_drift: %s: %s\n", what, ctx ? dynb_ctx_last_error(ctx) : "");
  exit(1);
}
#define CK(ctx, call) \
  if ((call) != DYNB_OK) die(ctx, #call)

/* A reproducible batch: uniform pixels, a class from the brightest quadrant. */
static void batch(unsigned seed, float *x, int32_t *y) {
  srand(seed);
  for (int n = 0; n < BATCH; n++) {
    double q[4] = {0};
    for (int i = 0; i < PIX; i++) {
      x[n * PIX + i] = (float)rand() / (float)RAND_MAX;
      q[(i / 28 >= 14) * 2 + (i % 28 >= 14)] += x[n * PIX + i];
    }
    int best = 0;
    for (int c = 1; c < 4; c++)
      if (q[c] > q[best]) best = c;
    y[n] = best;
  }
}

static void step(dynb_ctx *ctx, dynb_plan *plan, unsigned seed, dynb_tensor *xt, dynb_tensor *yt) {
  static float x[BATCH * PIX];
  static int32_t y[BATCH];
  batch(seed, x, y);
  CK(ctx, dynb_tensor_write(xt, x, sizeof x));
  CK(ctx, dynb_tensor_write(yt, y, sizeof y));
  CK(ctx, dynb_plan_forward(plan, xt, yt, DYNB_PASS_TRAIN));
  CK(ctx, dynb_plan_backward(plan, NULL));
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SPEC_TEMPLATE K TRAIN_STEPS\n", argv[0]);
    return 2;
  }
  int K = atoi(argv[2]), train = atoi(argv[3]);
  char grid[4096] = "0", spec[8192];
  for (int k = 1; k <= K; k++)
    snprintf(grid + strlen(grid), sizeof grid - strlen(grid), ", %g", 4.0 * k / K);
  spec[0] = 0;
  for (const char *p = argv[1]; *p;) {
    const char *at = strstr(p, "@T");
    size_t len = at ? (size_t)(at - p) : strlen(p);
    if (strlen(spec) + len + strlen(grid) + 1 > sizeof spec) die(NULL, "spec too long");
    size_t at_len = strlen(spec);
    memcpy(spec + at_len, p, len);
    spec[at_len + len] = 0;
    if (!at) break;
    strcat(spec, grid);
    p = at + 2;
  }
  dynb_ctx *ctx = NULL;
  dynb_ctx_desc d = dynb_ctx_desc_default();
  CK(NULL, dynb_ctx_create(&d, &ctx));
  int64_t xd[4] = {BATCH, 1, 28, 28}, yd[1] = {BATCH};
  dynb_tensor *xt, *yt;
  CK(ctx, dynb_tensor_create(ctx, DYNB_F32, 4, xd, &xt));
  CK(ctx, dynb_tensor_create(ctx, DYNB_I32, 1, yd, &yt));
  const char *saved = "reversible_drift.safetensors";
  {
    dynb_net *net;
    dynb_plan *plan;
    dynb_optimizer *opt;
    CK(ctx, dynb_net_create(ctx, spec, DYNB_F32, 1, &net));
    CK(ctx, dynb_plan_build(net, BATCH, DYNB_MEMORY_STORE, &plan));
    CK(ctx, dynb_optimizer_create(net, DYNB_OPTIM_SGD, &opt));
    for (int s = 0; s < train; s++) {
      step(ctx, plan, 100u + (unsigned)s, xt, yt);
      CK(ctx, dynb_optimizer_step(opt));
    }
    CK(ctx, dynb_net_save(net, saved));
    dynb_optimizer_free(opt);
    dynb_plan_free(plan);
    dynb_net_free(net);
  }
  dynb_net *nets[2];
  double rec = 0;
  for (int m = 0; m < 2; m++) {
    dynb_plan *plan;
    CK(ctx, dynb_net_load(ctx, saved, DYNB_F32, &nets[m]));
    CK(ctx, dynb_plan_build(nets[m], BATCH, m ? DYNB_MEMORY_RECONSTRUCT : DYNB_MEMORY_STORE,
                            &plan));
    step(ctx, plan, 7u, xt, yt);
    if (m) CK(ctx, dynb_plan_reconstruction_error(plan, &rec));
    dynb_plan_free(plan);
  }
  size_t count;
  double diff_all = 0, mag_all = 0, worst_block = 0;
  CK(ctx, dynb_net_param_count(nets[0], &count));
  for (size_t i = 0; i < count; i++) {
    const char *name;
    int ndim, trainable;
    int64_t dims[8];
    CK(ctx, dynb_net_param_name(nets[0], i, &name));
    CK(ctx, dynb_net_param_info(nets[0], name, &ndim, dims, &trainable));
    if (!trainable) continue;
    size_t n = 1;
    for (int j = 0; j < ndim; j++) n *= (size_t)dims[j];
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), diff = 0, mag = 0;
    CK(ctx, dynb_net_grad_get(nets[0], name, DYNB_F64, a, n));
    CK(ctx, dynb_net_grad_get(nets[1], name, DYNB_F64, b, n));
    for (size_t j = 0; j < n; j++) diff = fmax(diff, fabs(a[j] - b[j])), mag = fmax(mag, fabs(a[j]));
    diff_all = fmax(diff_all, diff), mag_all = fmax(mag_all, mag);
    /* Block weights only: their gradients are not zero by construction. */
    if (strncmp(name, "blocks.", 7) == 0 && strstr(name, ".weight") && mag > 0)
      worst_block = fmax(worst_block, diff / mag);
    free(a), free(b);
  }
  printf("%d %d %.3g %.3g %.3g\n", K, train, rec, mag_all > 0 ? diff_all / mag_all : 0, worst_block);
  remove(saved);
  dynb_net_free(nets[0]), dynb_net_free(nets[1]);
  dynb_tensor_free(xt), dynb_tensor_free(yt);
  dynb_ctx_free(ctx);
  return 0;
}
