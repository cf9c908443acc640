/* Embedded Runge–Kutta pairs (SPEC §1.5): a tableau whose second weight
 * vector b_err gives a lower-order solution alongside y' = y + h Σ b_i K_i,
 * so that h Σ (b_i − b_err_i) K_i estimates the local error of a step and
 * the step size can be controlled (controller.c). Kept apart from the
 * fixed-step built-ins of tableau.c because their table needs 7 stages. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

typedef struct pair {
  const char *name;
  int stages, order;
  double c[7], a[7][7], b[7], b_err[7];
} pair;

static const pair pairs[] = {
    /* Dormand–Prince 5(4) (Dormand & Prince 1980), the pair torchdiffeq's
     * dopri5 uses (its Shampine coefficients are the dense output, which a
     * block does not need: steps end exactly on t_states). b is the
     * fifth-order solution; b_err the fourth-order one. The last stage is
     * f(y'), so the pair is FSAL; this table does not exploit that. */
    {"dopri5",
     7,
     5,
     {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1},
     {{0},
      {1.0 / 5},
      {3.0 / 40, 9.0 / 40},
      {44.0 / 45, -56.0 / 15, 32.0 / 9},
      {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
      {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
      {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}},
     {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0},
     {5179.0 / 57600, 0, 7571.0 / 16695, 393.0 / 640, -92097.0 / 339200, 187.0 / 2100,
      1.0 / 40}},
    /* Bogacki–Shampine 3(2) (1989), torchdiffeq's bosh3; FSAL too. */
    {"bosh3",
     4,
     3,
     {0, 1.0 / 2, 3.0 / 4, 1},
     {{0}, {1.0 / 2}, {0, 3.0 / 4}, {2.0 / 9, 1.0 / 3, 4.0 / 9}},
     {2.0 / 9, 1.0 / 3, 4.0 / 9, 0},
     {7.0 / 24, 1.0 / 4, 1.0 / 3, 1.0 / 8}},
    /* Heun's method with Euler embedded, 2(1) (torchdiffeq's adaptive_heun). */
    {"heun_euler", 2, 2, {0, 1}, {{0}, {1}}, {1.0 / 2, 1.0 / 2}, {1, 0}},
};

bool dynb__tableau_embedded(const char *name, dynb__tableau *out) {
  if (!name || !out) return false;
  for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
    const pair *m = &pairs[k];
    if (strcmp(name, m->name) != 0) continue;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", m->name);
    out->stages = m->stages;
    out->order = m->order;
    out->embedded = true;
    out->rtol = 1e-3, out->atol = 1e-4, out->max_steps = 100;
    for (int i = 0; i < m->stages; i++) {
      out->c[i] = m->c[i];
      out->b[i] = m->b[i];
      out->b_err[i] = m->b_err[i];
      for (int j = 0; j < i; j++) out->a[i][j] = m->a[i][j];
    }
    return true;
  }
  return false;
}

dynb_status dynb__tableau_set_embedded(dynb__tableau *t, const double *b_err, int len, int order,
                                       char *err, size_t errlen) {
  if (!t || !b_err) {
    if (err && errlen) snprintf(err, errlen, "tableau: NULL tableau or b_err");
    return DYNB_STATUS_INVALID_ARGUMENT;
  }
  if (len != t->stages) {
    if (err && errlen)
      snprintf(err, errlen, "b_err has %d entries for %d stages (the length of c)", len,
               t->stages);
    return DYNB_STATUS_SPEC_ERROR;
  }
  bool differs = false;
  for (int i = 0; i < len; i++) {
    if (!isfinite(b_err[i])) {
      if (err && errlen) snprintf(err, errlen, "b_err[%d] = %g is not finite", i, b_err[i]);
      return DYNB_STATUS_SPEC_ERROR;
    }
    differs |= b_err[i] != t->b[i];
  }
  /* b_err == b estimates every error as zero: the controller would grow the
   * step tenfold each time and never reject, an adaptive scheme in name only. */
  if (!differs) {
    if (err && errlen) snprintf(err, errlen, "b_err equals b, so it estimates no error");
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (order < 1 || order > DYNB_MAX_STAGES) {
    if (err && errlen)
      snprintf(err, errlen, "order %d is outside 1..%d", order, DYNB_MAX_STAGES);
    return DYNB_STATUS_SPEC_ERROR;
  }
  memcpy(t->b_err, b_err, (size_t)len * sizeof *b_err);
  t->embedded = true;
  t->order = order;
  t->rtol = 1e-3, t->atol = 1e-4, t->max_steps = 100;
  return DYNB_OK;
}
