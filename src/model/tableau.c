/* Butcher tableaux: the built-in explicit Runge–Kutta methods and the
 * validation of custom ones. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

typedef struct builtin {
  const char *name, *alias;
  int stages, order;
  double c[4], a[4][4], b[4];
} builtin;

static const builtin builtins[] = {
    {"euler", "rk1", 1, 1, {0}, {{0}}, {1}},
    {"midpoint", NULL, 2, 2, {0, 0.5}, {{0}, {0.5}}, {0, 1}},
    {"heun", NULL, 2, 2, {0, 1}, {{0}, {1}}, {0.5, 0.5}},
    /* Kutta's third-order method */
    {"rk3", NULL, 3, 3, {0, 0.5, 1}, {{0}, {0.5}, {-1, 2}}, {1.0 / 6, 2.0 / 3, 1.0 / 6}},
    /* Shu–Osher strong-stability-preserving third order */
    {"ssprk3", NULL, 3, 3, {0, 1, 0.5}, {{0}, {1}, {0.25, 0.25}}, {1.0 / 6, 1.0 / 6, 2.0 / 3}},
    {"rk4", NULL, 4, 4, {0, 0.5, 0.5, 1}, {{0}, {0.5}, {0, 0.5}, {0, 0, 1}},
     {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}},
    /* Kutta's 3/8 rule */
    {"rk38", NULL, 4, 4, {0, 1.0 / 3, 2.0 / 3, 1}, {{0}, {1.0 / 3}, {-1.0 / 3, 1}, {1, -1, 1}},
     {0.125, 0.375, 0.375, 0.125}},
};

bool dynb__tableau_builtin(const char *name, dynb__tableau *out) {
  if (!name) return false;
  for (size_t k = 0; k < sizeof builtins / sizeof *builtins; k++) {
    const builtin *b = &builtins[k];
    if (strcmp(name, b->name) != 0 && !(b->alias && strcmp(name, b->alias) == 0)) continue;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", b->name);
    out->stages = b->stages;
    out->order = b->order;
    for (int i = 0; i < b->stages; i++) {
      out->c[i] = b->c[i];
      out->b[i] = b->b[i];
      for (int j = 0; j < b->stages; j++) out->a[i][j] = b->a[i][j];
    }
    return true;
  }
  return false;
}

dynb_status dynb__tableau_custom(const double *c, int len_c, const double *a, int a_rows,
                                 int a_cols, const double *b, int len_b, dynb__tableau *out,
                                 char *err, size_t errlen) {
  int s = len_c;
  if (s < 1 || s > DYNB_MAX_STAGES) {
    snprintf(err, errlen, "c has %d entries; a tableau has 1..%d stages", s, DYNB_MAX_STAGES);
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (len_b != s) {
    snprintf(err, errlen, "b has %d entries for %d stages (the length of c)", len_b, s);
    return DYNB_STATUS_SPEC_ERROR;
  }
  if (a_rows != s || a_cols != s) {
    snprintf(err, errlen, "A is %dx%d; it must be square, %dx%d (the length of c)", a_rows, a_cols,
             s, s);
    return DYNB_STATUS_SPEC_ERROR;
  }
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "custom");
  out->stages = s;
  for (int i = 0; i < s; i++) {
    if (!isfinite(c[i]) || !isfinite(b[i])) {
      snprintf(err, errlen, "%s[%d] is not finite", isfinite(c[i]) ? "b" : "c", i);
      return DYNB_STATUS_SPEC_ERROR;
    }
    out->c[i] = c[i];
    out->b[i] = b[i];
    for (int j = 0; j < s; j++) {
      double v = a[i * s + j];
      if (!isfinite(v)) {
        snprintf(err, errlen, "A[%d][%d] is not finite", i, j);
        return DYNB_STATUS_SPEC_ERROR;
      }
      if (j >= i && v != 0) {
        snprintf(err, errlen,
                 "A[%d][%d] = %g is on or above the diagonal; an explicit method needs A strictly "
                 "lower triangular",
                 i, j, v);
        return DYNB_STATUS_SPEC_ERROR;
      }
      out->a[i][j] = v;
    }
  }
  return DYNB_OK;
}
