/* Reference of the layer functions of SPEC §1.2, written as the table
 * there reads and composed of the op references (convolutions, norms,
 * activations), so that it shares no code with src/model/layer.c except
 * θ's layout, which it takes from dynb__layer_params by name:
 *   doublesym: f = -(Kᵀ σ(N(K y + b₁)) + b₂)
 *   double:    f = σ(N₂(K₂ σ(N₁(K₁ y + b₁)) + b₂))
 *   preact:    f = N₂(K₂ σ(N₁(K₁ σ(y) + b₁)) + b₂)
 * The constants are SPEC's, written out here rather than taken from
 * ops.h, so that a wrong constant there shows up as a mismatch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "ref/ref.h"

static const double tv_eps = 1e-4, bn_eps = 1e-5, bn_momentum = 0.1;

/* The batch and the layer the helpers below work on. */
typedef struct job {
  const dynb__layer *l;
  int n, c, h, w;
  size_t m; /* n·c·h·w */
  const double *theta;
  int train;
  double *running;
  double margin;
} job;

/* θ's tensor `name` (e.g. "conv1.weight"); NULL when the layer has none. */
static const double *param(const job *j, const char *name) {
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  int count = dynb__layer_params(j->l, e, NULL);
  for (int i = 0; i < count; i++)
    if (strcmp(e[i].name, name) == 0) return j->theta + e[i].offset;
  return NULL;
}

static const double *param2(const job *j, const char *prefix, const char *suffix) {
  char name[32];
  strcpy(name, prefix);
  strcat(name, suffix);
  return param(j, name);
}

/* a = N(z) for the norm named `prefix` ("norm", "norm1", "norm2"), whose
 * running statistics are block `idx` of j->running. */
static void norm(job *j, const char *prefix, int idx, const double *z, double *a) {
  int s = j->h * j->w;
  const double *beta = param2(j, prefix, ".bias"), *gamma = param2(j, prefix, ".weight");
  double *rmean = j->running ? j->running + (size_t)(2 * idx) * j->c : NULL;
  double *rvar = j->running ? j->running + (size_t)(2 * idx + 1) * j->c : NULL;
  switch (j->l->norm) {
    case DYNB_NORM_NONE:
      memcpy(a, z, j->m * sizeof *a);
      return;
    case DYNB_NORM_TV:
      ref_tv_forward(j->n, j->c, s, z, beta, tv_eps, a);
      return;
    case DYNB_NORM_BATCH:
      if (j->train) {
        double *mean = malloc((size_t)j->c * sizeof *mean);
        double *invstd = malloc((size_t)j->c * sizeof *invstd);
        ref_bn_train_forward(j->n, j->c, s, z, gamma, beta, bn_momentum, bn_eps, a, mean, invstd,
                             rmean, rvar);
        free(mean);
        free(invstd);
      } else {
        ref_bn_eval_forward(j->n, j->c, s, z, gamma, beta, rmean, rvar, bn_eps, a);
      }
      return;
  }
}

/* s = σ(a), noting how close any input comes to 0. */
static void act(job *j, const double *a, double *s) {
  for (size_t i = 0; i < j->m; i++) j->margin = fmin(j->margin, fabs(a[i]));
  ref_act_forward((int)j->l->act, j->m, a, s);
}

static void conv(const job *j, const double *x, const char *prefix, double *z) {
  ref_conv2d_forward(j->n, j->c, j->c, j->h, j->w, j->l->kernel, x, param2(j, prefix, ".weight"),
                     param2(j, prefix, ".bias"), z);
}

void ref_layer_f(const struct dynb__layer *l, int n, int h, int w, const double *theta,
                 const double *x, int train, double *running, double *f, double *margin) {
  job j = {l, n, l->channels, h, w, (size_t)n * l->channels * h * w, theta, train, running,
           INFINITY};
  double *z = malloc(j.m * sizeof *z), *a = malloc(j.m * sizeof *a);
  double *s = malloc(j.m * sizeof *s);
  if (l->kind == DYNB_LAYER_DOUBLESYM) {
    conv(&j, x, "conv", z);
    norm(&j, "norm", 0, z, a);
    act(&j, a, s);
    ref_conv2d_transpose_forward(n, j.c, j.c, h, w, l->kernel, s, param(&j, "conv.weight"),
                                 param(&j, "convt.bias"), f);
    for (size_t i = 0; i < j.m; i++) f[i] = -f[i];
  } else if (l->kind == DYNB_LAYER_DOUBLE) {
    conv(&j, x, "conv1", z);
    norm(&j, "norm1", 0, z, a);
    act(&j, a, s);
    conv(&j, s, "conv2", z);
    norm(&j, "norm2", 1, z, a);
    act(&j, a, f);
  } else {
    act(&j, x, s);
    conv(&j, s, "conv1", z);
    norm(&j, "norm1", 0, z, a);
    act(&j, a, s);
    conv(&j, s, "conv2", z);
    norm(&j, "norm2", 1, z, f);
  }
  if (margin) *margin = j.margin;
  free(z);
  free(a);
  free(s);
}

void ref_hamiltonian_half(const struct dynb__layer *l, int n, int h, int w, const double *theta,
                          const double *x, int half, int train, double *running, double *out) {
  job j = {l, n, l->channels, h, w, (size_t)n * l->channels * h * w, theta, train, running,
           INFINITY};
  double *z = malloc(j.m * sizeof *z), *a = malloc(j.m * sizeof *a);
  if (half == 0)
    ref_conv2d_transpose_forward(n, j.c, j.c, h, w, l->kernel, x, param(&j, "conv.weight"),
                                 param(&j, "convt.bias"), z);
  else
    conv(&j, x, "conv", z);
  norm(&j, half == 0 ? "norm1" : "norm2", half, z, a);
  act(&j, a, out);
  free(z);
  free(a);
}
