/* Butcher tableaux: the built-in explicit Runge–Kutta methods and the
 * validation of custom ones (SPEC §1.1). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

/* The built-ins need at most 4 stages, so their table stays small; entries
 * not listed are zero. Fractions are written as quotients of exact doubles
 * so each coefficient is the correctly rounded value. */
typedef struct builtin {
  const char *name, *alias;
  int stages, order;
  double c[4], a[4][4], b[4];
  dynb__scheme_kind kind;
} builtin;

static const builtin builtins[] = {
    {"euler", "rk1", 1, 1, {0}, {{0}}, {1}, DYNB_SCHEME_RK},
    {"midpoint", NULL, 2, 2, {0, 1.0 / 2}, {{0}, {1.0 / 2}}, {0, 1}, DYNB_SCHEME_RK},
    /* Heun's second-order method (explicit trapezoid) */
    {"heun", NULL, 2, 2, {0, 1}, {{0}, {1}}, {1.0 / 2, 1.0 / 2}, DYNB_SCHEME_RK},
    /* Kutta's third-order method */
    {"rk3", NULL, 3, 3, {0, 1.0 / 2, 1}, {{0}, {1.0 / 2}, {-1, 2}},
     {1.0 / 6, 2.0 / 3, 1.0 / 6}, DYNB_SCHEME_RK},
    /* Shu–Osher strong-stability-preserving third order */
    {"ssprk3", NULL, 3, 3, {0, 1, 1.0 / 2}, {{0}, {1}, {1.0 / 4, 1.0 / 4}},
     {1.0 / 6, 1.0 / 6, 2.0 / 3}, DYNB_SCHEME_RK},
    {"rk4", NULL, 4, 4, {0, 1.0 / 2, 1.0 / 2, 1}, {{0}, {1.0 / 2}, {0, 1.0 / 2}, {0, 0, 1}},
     {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}, DYNB_SCHEME_RK},
    /* Kutta's 3/8 rule */
    {"rk38", NULL, 4, 4, {0, 1.0 / 3, 2.0 / 3, 1}, {{0}, {1.0 / 3}, {-1.0 / 3, 1}, {1, -1, 1}},
     {1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8}, DYNB_SCHEME_RK},
    /* Reversible (SPEC §1.4): one evaluation per step at tY[k]; b is not
     * what the integrator uses, only what says "one stage". */
    {"leapfrog", NULL, 1, 2, {0}, {{0}}, {1}, DYNB_SCHEME_LEAPFROG},
};

/* Names are matched exactly (case-sensitive), like every other spec key. */
static bool named(const builtin *m, const char *name) {
  return strcmp(name, m->name) == 0 || (m->alias && strcmp(name, m->alias) == 0);
}

bool dynb__tableau_builtin(const char *name, dynb__tableau *out) {
  if (!name || !out) return false;
  for (size_t k = 0; k < sizeof builtins / sizeof *builtins; k++) {
    const builtin *m = &builtins[k];
    if (!named(m, name)) continue;
    memset(out, 0, sizeof *out);
    /* The canonical name, so an alias round-trips as the method it means. */
    snprintf(out->name, sizeof out->name, "%s", m->name);
    out->stages = m->stages;
    out->order = m->order;
    out->kind = m->kind;
    for (int i = 0; i < m->stages; i++) {
      out->c[i] = m->c[i];
      out->b[i] = m->b[i];
      for (int j = 0; j < i; j++) out->a[i][j] = m->a[i][j];
    }
    return true;
  }
  return dynb__tableau_embedded(name, out);
}

/* Writes the reason (when the caller gave room for one) and returns `status`. */
static dynb_status reject(char *err, size_t errlen, dynb_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static dynb_status reject(char *err, size_t errlen, dynb_status status, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return status;
}

/* Names the first non-finite entry of a vector, so the user can find it. */
static dynb_status check_finite(const char *what, const double *v, int n, char *err,
                                size_t errlen) {
  for (int i = 0; i < n; i++)
    if (!isfinite(v[i]))
      return reject(err, errlen, DYNB_STATUS_SPEC_ERROR, "%s[%d] = %g is not finite", what, i,
                    v[i]);
  return DYNB_OK;
}

/* A (s×s, row-major) must be finite and strictly lower triangular: a nonzero
 * on or above the diagonal would make a stage depend on itself or on a later
 * stage, i.e. an implicit method, which the block cannot evaluate. */
static dynb_status check_a(const double *a, int s, char *err, size_t errlen) {
  for (int i = 0; i < s; i++)
    for (int j = 0; j < s; j++) {
      double v = a[i * s + j];
      if (!isfinite(v))
        return reject(err, errlen, DYNB_STATUS_SPEC_ERROR, "A[%d][%d] = %g is not finite", i, j,
                      v);
      if (j >= i && v != 0)
        return reject(err, errlen, DYNB_STATUS_SPEC_ERROR,
                      "A[%d][%d] = %g is on or above the diagonal; an explicit method needs A "
                      "strictly lower triangular",
                      i, j, v);
    }
  return DYNB_OK;
}

/* The row-sum condition c_i = Σ_j A_ij is deliberately not enforced: SPEC
 * admits any explicit tableau, and c only selects where θ(t) is sampled. */
dynb_status dynb__tableau_custom(const double *c, int len_c, const double *a, int a_rows,
                                 int a_cols, const double *b, int len_b, dynb__tableau *out,
                                 char *err, size_t errlen) {
  if (!c || !a || !b || !out)
    return reject(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "tableau: NULL c, A, b or out");
  int s = len_c;
  if (s < 1 || s > DYNB_MAX_STAGES)
    return reject(err, errlen, DYNB_STATUS_SPEC_ERROR,
                  "c has %d entries; a tableau has 1 to %d stages", s, DYNB_MAX_STAGES);
  if (len_b != s)
    return reject(err, errlen, DYNB_STATUS_SPEC_ERROR,
                  "b has %d entries for %d stages (the length of c)", len_b, s);
  if (a_rows != s || a_cols != s)
    return reject(err, errlen, DYNB_STATUS_SPEC_ERROR,
                  "A is %dx%d; it must be square, %dx%d (the length of c)", a_rows, a_cols, s, s);
  /* Checked in the order the spec lists them, c, A, b, so the first bad
   * entry reported is the first one a reader meets. */
  DYNB_TRY(check_finite("c", c, s, err, errlen));
  DYNB_TRY(check_a(a, s, err, errlen));
  DYNB_TRY(check_finite("b", b, s, err, errlen));
  /* Only a valid tableau is written, so a rejection leaves `out` as it was. */
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "custom");
  out->stages = s;
  out->order = 0;
  for (int i = 0; i < s; i++) {
    out->c[i] = c[i];
    out->b[i] = b[i];
    for (int j = 0; j < i; j++) out->a[i][j] = a[i * s + j];
  }
  return DYNB_OK;
}
