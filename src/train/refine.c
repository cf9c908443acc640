/* Multilevel training (SPEC §1.1, §4 `train --refine`): the epochs at which
 * every block's grids are halved, and the optimiser state carried across a
 * refinement.
 *
 * The optimiser state is interpolated like the parameters, not reset. A
 * control point's velocity (SGD) or moments (Adam) describe how θ(t) has
 * been moving at its time; the new control points take the linear
 * interpolation of the old points' state at their times, exactly as their
 * values are θ(t) there, and points that were already there keep theirs.
 * So the first step after a refinement moves θ(t) as the step before it
 * would have (where the gradient is the same), and momentum built over the
 * coarse epochs is not thrown away (a reset would restart SGD's momentum
 * from zero and Adam's bias correction would no longer match its
 * moments). Adam's step counter goes on. Interpolated second moments stay
 * non-negative (a convex combination). Everything outside the blocks keeps
 * its state by name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"

dynb_status dynb__refine_parse(const char *text, int *epochs, int *n, char *err, size_t errlen) {
  *n = 0;
  const char *p = text;
  for (;;) {
    char *end;
    long v = strtol(p, &end, 10);
    size_t len = strcspn(p, ",");
    if (end == p || end != p + len || v < 0 || v > 100000) {
      snprintf(err, errlen, "'%.64s': item %d ('%.*s') is not an epoch number in 0..100000", text,
               *n + 1, (int)(len < 32 ? len : 32), p);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    if (*n == DYNB_MAX_REFINE) {
      snprintf(err, errlen, "'%.64s': more than %d refinements", text, DYNB_MAX_REFINE);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    if (*n > 0 && v <= epochs[*n - 1]) {
      snprintf(err, errlen, "'%.64s': epochs must be strictly increasing: %ld after %d", text, v,
               epochs[*n - 1]);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    epochs[(*n)++] = (int)v;
    p += len;
    if (*p == '\0') break;
    p++;
  }
  return DYNB_OK;
}

bool dynb__refine_due(const int *epochs, int n, int epoch) {
  for (int i = 0; i < n; i++)
    if (epochs[i] == epoch) return true;
  return false;
}

/* ---- optimiser state across a refinement ------------------------------------------- */

struct dynb__optim_saved {
  size_t n;
  char (*names)[96];
  size_t *offset; /* into values; offset[n] is the total */
  double *values;
  int64_t step;
  int nblocks;
  int ncontrols[DYNB_MAX_BLOCKS];
  double *t_controls[DYNB_MAX_BLOCKS];
};

void dynb__optim_saved_free(dynb__optim_saved *s) {
  if (!s) return;
  free(s->names), free(s->offset), free(s->values);
  for (int b = 0; b < DYNB_MAX_BLOCKS; b++) free(s->t_controls[b]);
  free(s);
}

dynb_status dynb__optim_save(dynb__optimizer *opt, dynb__net *net, dynb__optim_saved **out) {
  dynb_ctx *ctx = net->ctx;
  *out = NULL;
  dynb__optim_saved *s = calloc(1, sizeof *s);
  DYNB_CHECK(ctx, s, DYNB_STATUS_OUT_OF_HOST_MEMORY, "refine: no host memory");
  s->n = dynb__optimizer_state_count(opt);
  s->step = *dynb__optimizer_step_counter(opt);
  s->names = calloc(s->n + 1, sizeof *s->names);
  s->offset = calloc(s->n + 1, sizeof *s->offset);
  for (size_t i = 0; s->offset && i < s->n; i++)
    s->offset[i + 1] = s->offset[i] + dynb__tensor_numel(&dynb__optimizer_state_at(opt, i)->value);
  s->values = s->offset ? malloc((s->offset[s->n] + 1) * sizeof *s->values) : NULL;
  s->nblocks = net->spec.nblocks;
  bool ok = s->names && s->offset && s->values;
  for (int b = 0; ok && b < s->nblocks; b++) {
    const dynb__block_spec *bs = &net->spec.blocks[b];
    s->ncontrols[b] = bs->ncontrols;
    s->t_controls[b] = malloc((size_t)bs->ncontrols * sizeof *s->t_controls[b]);
    ok = s->t_controls[b] != NULL;
    if (ok) memcpy(s->t_controls[b], bs->t_controls, (size_t)bs->ncontrols * sizeof(double));
  }
  if (!ok) {
    dynb__optim_saved_free(s);
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "refine: no host memory");
  }
  for (size_t i = 0; i < s->n; i++) {
    const dynb__net_tensor *t = dynb__optimizer_state_at(opt, i);
    memcpy(s->names[i], t->name, sizeof s->names[i]);
    dynb_status st = dynb__tensor_read_f64(ctx, &t->value, s->values + s->offset[i]);
    if (st != DYNB_OK) {
      dynb__optim_saved_free(s);
      return st;
    }
  }
  *out = s;
  return DYNB_OK;
}

static const double *saved_find(const dynb__optim_saved *s, const char *name, size_t numel) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->names[i], name) == 0)
      return s->offset[i + 1] - s->offset[i] == numel ? s->values + s->offset[i] : NULL;
  return NULL;
}

/* The state of one new tensor, in host: by name, or for a block's control
 * point j, interpolated from the old points around its time. False when
 * the old state has no counterpart (then it starts at zero). */
static bool state_for(const dynb__optim_saved *s, const dynb__net *net, const char *name,
                      size_t numel, double *host) {
  int b, j, used = 0;
  if (sscanf(name, "optim.blocks.%d.controls.%d.%n", &b, &j, &used) == 2 && used > 0 && b >= 0 &&
      b < s->nblocks && b < net->spec.nblocks && j >= 0 && j < net->spec.blocks[b].ncontrols) {
    int j0;
    double w;
    dynb__interp_weights(s->t_controls[b], s->ncontrols[b], net->spec.blocks[b].t_controls[j], &j0,
                         &w);
    char old[128];
    snprintf(old, sizeof old, "optim.blocks.%d.controls.%d.%s", b, j0, name + used);
    const double *a = saved_find(s, old, numel), *c = a;
    if (w != 0) {
      snprintf(old, sizeof old, "optim.blocks.%d.controls.%d.%s", b, j0 + 1, name + used);
      c = saved_find(s, old, numel);
    }
    if (!a || !c) return false;
    for (size_t i = 0; i < numel; i++) host[i] = (1 - w) * a[i] + w * c[i];
    return true;
  }
  const double *a = saved_find(s, name, numel);
  if (a) memcpy(host, a, numel * sizeof *host);
  return a != NULL;
}

dynb_status dynb__optim_restore(dynb__optimizer *opt, dynb__net *net, const dynb__optim_saved *s) {
  dynb_ctx *ctx = net->ctx;
  size_t n = dynb__optimizer_state_count(opt), most = 1;
  for (size_t i = 0; i < n; i++) {
    size_t m = dynb__tensor_numel(&dynb__optimizer_state_at(opt, i)->value);
    most = m > most ? m : most;
  }
  double *host = malloc(most * sizeof *host);
  DYNB_CHECK(ctx, host, DYNB_STATUS_OUT_OF_HOST_MEMORY, "refine: no host memory");
  dynb_status st = DYNB_OK;
  for (size_t i = 0; st == DYNB_OK && i < n; i++) {
    const dynb__net_tensor *t = dynb__optimizer_state_at(opt, i);
    size_t numel = dynb__tensor_numel(&t->value);
    if (!state_for(s, net, t->name, numel, host))
      st = dynb__fail(ctx, DYNB_STATUS_MISUSE, "refine: no optimiser state to carry to %s",
                      t->name);
    if (st == DYNB_OK) st = dynb__tensor_write_f64(ctx, &t->value, host);
  }
  free(host);
  if (st == DYNB_OK) *dynb__optimizer_step_counter(opt) = s->step;
  return st;
}
