/* Butcher tableaux (SPEC §1.1): the built-ins carry the published
 * coefficients, satisfy the order conditions of their declared order and
 * not all of the next, and converge at that order when used on the host;
 * names match exactly; custom tableaux are validated entry by entry. No
 * device needed. */
#include <math.h>

#include "testutil.h"
#include "model/model.h"

static const char *const builtin_names[] = {"euler", "midpoint", "heun", "rk3",
                                            "ssprk3", "rk4", "rk38"};
#define NBUILTIN (int)(sizeof builtin_names / sizeof *builtin_names)

static dynb__tableau builtin(const char *name) {
  dynb__tableau t;
  if (!dynb__tableau_builtin(name, &t)) fail_msg("built-in '%s' is unknown", name);
  return t;
}

/* ---- published coefficients ------------------------------------------------ */

/* The coefficients as published (Heun 1900; Kutta 1901 for rk3, rk4 and the
 * 3/8 rule; Shu & Osher 1988 for ssprk3), typed in independently of
 * tableau.c. Unlisted entries are zero. */
static const struct {
  const char *name;
  int stages, order;
  double c[4], a[4][4], b[4];
} published[] = {
    {"euler", 1, 1, {0}, {{0}}, {1}},
    {"midpoint", 2, 2, {0, 0.5}, {{0}, {0.5}}, {0, 1}},
    {"heun", 2, 2, {0, 1}, {{0}, {1}}, {0.5, 0.5}},
    {"rk3", 3, 3, {0, 0.5, 1}, {{0}, {0.5}, {-1, 2}}, {1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0}},
    {"ssprk3", 3, 3, {0, 1, 0.5}, {{0}, {1}, {0.25, 0.25}}, {1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0}},
    {"rk4", 4, 4, {0, 0.5, 0.5, 1}, {{0}, {0.5}, {0, 0.5}, {0, 0, 1}},
     {1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0}},
    {"rk38", 4, 4, {0, 1.0 / 3.0, 2.0 / 3.0, 1}, {{0}, {1.0 / 3.0}, {-1.0 / 3.0, 1}, {1, -1, 1}},
     {0.125, 0.375, 0.375, 0.125}},
};

/* Every entry compared exactly: both sides are the correctly rounded double
 * of the same fraction, and the whole 16×16 storage past the stages must be
 * zero so that a block looping to DYNB_MAX_STAGES cannot pick up garbage. */
static void builtins_have_published_coefficients(void **state) {
  (void)state;
  assert_int_equal(sizeof published / sizeof *published, NBUILTIN);
  for (int k = 0; k < NBUILTIN; k++) {
    dynb__tableau t = builtin(published[k].name);
    assert_string_equal(t.name, published[k].name);
    assert_int_equal(t.stages, published[k].stages);
    assert_int_equal(t.order, published[k].order);
    for (int i = 0; i < DYNB_MAX_STAGES; i++) {
      bool in = i < t.stages;
      assert_true(t.c[i] == (in ? published[k].c[i] : 0));
      assert_true(t.b[i] == (in ? published[k].b[i] : 0));
      for (int j = 0; j < DYNB_MAX_STAGES; j++)
        assert_true(t.a[i][j] == (in && j < i ? published[k].a[i][j] : 0));
    }
  }
}

/* ---- order conditions -------------------------------------------------------- */

/* The rooted trees up to order 5 with their density γ: a method has order p
 * iff Φ(τ) = b·(elementary weight of τ) equals 1/γ(τ) for every tree of
 * order <= p (Butcher). */
enum { NTREE = 17 };
static const struct {
  const char *what;
  int order;
  double want;
} trees[NTREE] = {
    {"b.1", 1, 1.0},           {"b.c", 2, 1.0 / 2},        {"b.c2", 3, 1.0 / 3},
    {"b.Ac", 3, 1.0 / 6},      {"b.c3", 4, 1.0 / 4},       {"b.(c*Ac)", 4, 1.0 / 8},
    {"b.Ac2", 4, 1.0 / 12},    {"b.AAc", 4, 1.0 / 24},     {"b.c4", 5, 1.0 / 5},
    {"b.(c2*Ac)", 5, 1.0 / 10}, {"b.(Ac)^2", 5, 1.0 / 20}, {"b.(c*Ac2)", 5, 1.0 / 15},
    {"b.Ac3", 5, 1.0 / 20},    {"b.(c*AAc)", 5, 1.0 / 30}, {"b.A(c*Ac)", 5, 1.0 / 40},
    {"b.AAc2", 5, 1.0 / 60},   {"b.AAAc", 5, 1.0 / 120},
};

typedef double vec[DYNB_MAX_STAGES];

static void mul_a(const dynb__tableau *t, const double *x, double *y) {
  for (int i = 0; i < t->stages; i++) {
    y[i] = 0;
    for (int j = 0; j < t->stages; j++) y[i] += t->a[i][j] * x[j];
  }
}

/* b·(x ∘ y ∘ z), the products elementwise; pass `one` for unused factors. */
static double bdot(const dynb__tableau *t, const double *x, const double *y, const double *z) {
  double s = 0;
  for (int i = 0; i < t->stages; i++) s += t->b[i] * x[i] * y[i] * z[i];
  return s;
}

/* Φ for every tree, in the order of `trees`. */
static void weights(const dynb__tableau *t, double phi[NTREE]) {
  /* Zeroed, so entries past the stages are defined (they are never read). */
  vec one = {0}, c2 = {0}, c3 = {0}, ac = {0}, ac2 = {0}, ac3 = {0}, aac = {0}, aac2 = {0},
      aaac = {0}, cac = {0}, acac = {0};
  const double *c = t->c;
  for (int i = 0; i < DYNB_MAX_STAGES; i++) {
    one[i] = 1;
    c2[i] = c[i] * c[i];
    c3[i] = c2[i] * c[i];
  }
  mul_a(t, c, ac);
  mul_a(t, c2, ac2);
  mul_a(t, c3, ac3);
  mul_a(t, ac, aac);
  mul_a(t, ac2, aac2);
  mul_a(t, aac, aaac);
  for (int i = 0; i < t->stages; i++) cac[i] = c[i] * ac[i];
  mul_a(t, cac, acac);
  const double v[NTREE] = {
      bdot(t, one, one, one), bdot(t, c, one, one), bdot(t, c2, one, one), bdot(t, ac, one, one),
      bdot(t, c3, one, one),  bdot(t, c, ac, one),  bdot(t, ac2, one, one), bdot(t, aac, one, one),
      bdot(t, c3, c, one),    bdot(t, c2, ac, one), bdot(t, ac, ac, one),  bdot(t, c, ac2, one),
      bdot(t, ac3, one, one), bdot(t, c, aac, one), bdot(t, acac, one, one),
      bdot(t, aac2, one, one), bdot(t, aaac, one, one),
  };
  memcpy(phi, v, sizeof v);
}

/* Φ are sums of at most 4 products of at most 5 coefficients of magnitude
 * <= 2, each rounded once (relative 2^-53 ≈ 1.1e-16 per operation, a few
 * tens of operations): 1e-15 bounds that with margin, and a missing or
 * mistyped coefficient moves Φ by far more (>= 1e-3 for any wrong fraction
 * with denominator <= 24). */
#define ORDER_TOL 1e-15

static void builtins_meet_their_order_conditions(void **state) {
  (void)state;
  for (int k = 0; k < NBUILTIN; k++) {
    dynb__tableau t = builtin(builtin_names[k]);
    double phi[NTREE];
    weights(&t, phi);
    double worst_next = 0; /* largest violation among the order p+1 trees */
    for (int q = 0; q < NTREE; q++) {
      double e = fabs(phi[q] - trees[q].want);
      if (trees[q].order <= t.order && e > ORDER_TOL)
        fail_msg("%s: %s = %.17g, want %.17g", t.name, trees[q].what, phi[q], trees[q].want);
      if (trees[q].order == t.order + 1 && e > worst_next) worst_next = e;
    }
    /* The declared order is exact: some order p+1 condition fails clearly. */
    if (worst_next < 1e-3) fail_msg("%s: every order-%d condition holds", t.name, t.order + 1);
    /* Row sums c_i = Σ_j A_ij: every built-in is written with them, and the
     * order conditions above (in their short form) assume them. Sums of <= 3
     * thirds/halves: exact to one rounding, hence the same bound. */
    for (int i = 0; i < t.stages; i++) {
      double row = 0;
      for (int j = 0; j < t.stages; j++) row += t.a[i][j];
      if (fabs(row - t.c[i]) > ORDER_TOL)
        fail_msg("%s: row %d of A sums to %.17g, c = %.17g", t.name, i, row, t.c[i]);
    }
    printf("maxerr %s order conditions <= %d: ok; worst order-%d miss %.4g\n", t.name, t.order,
           t.order + 1, worst_next);
  }
}

/* The next-order weights computed by hand, so the weight code itself is
 * checked and each method's failing conditions are known, not assumed.
 *   euler:    b.c = 0 (1/2).
 *   midpoint: b.c2 = 1·(1/2)² = 1/4 (1/3); b.Ac = 1·(1/2·0) = 0 (1/6).
 *   heun:     b.c2 = 1/2·1 = 1/2 (1/3);   b.Ac = 1/2·(1·0) = 0 (1/6).
 *   rk3:      c = (0,1/2,1), Ac = (0,0,-1·0+2·1/2) = (0,0,1).
 *             b.c3 = 2/3·1/8 + 1/6 = 1/4 — holds (Simpson's rule);
 *             b.(c*Ac) = 1/6·1·1 = 1/6 (1/8) fails;
 *             Ac2 = (0,0,2·1/4) → b.Ac2 = 1/6·1/2 = 1/12 — holds;
 *             AAc = (0,0,-1·0+2·0) = 0 → b.AAc = 0 (1/24) fails.
 *   ssprk3:   c = (0,1,1/2), Ac = (0,0,1/4·0+1/4·1) = (0,0,1/4).
 *             b.c3 = 1/6 + 2/3·1/8 = 1/4 — holds (Simpson again);
 *             b.(c*Ac) = 2/3·1/2·1/4 = 1/12 (1/8) fails;
 *             Ac2 = (0,0,1/4) → b.Ac2 = 2/3·1/4 = 1/6 (1/12) fails;
 *             AAc = (0,0,1/4·0+1/4·0) = 0 (1/24) fails.
 *   rk4:      b.c4 = 2·1/3·1/16 + 1/6 = 5/24 (1/5) fails;
 *             AAAc = A43·A32·A21·c1 in the last row only, c1 = 0 → 0 (1/120).
 *   rk38:     b.c4 = 3/8·(1/81 + 16/81) + 1/8 = 132/648 = 11/54 (1/5) fails;
 *             AAAc = 0 as for any 4-stage explicit method with c1 = 0. */
static void next_order_weights_match_hand_values(void **state) {
  (void)state;
  static const struct {
    const char *name, *tree;
    double hand;
  } cases[] = {
      {"euler", "b.c", 0},           {"midpoint", "b.c2", 1.0 / 4},  {"midpoint", "b.Ac", 0},
      {"heun", "b.c2", 1.0 / 2},     {"heun", "b.Ac", 0},            {"rk3", "b.c3", 1.0 / 4},
      {"rk3", "b.(c*Ac)", 1.0 / 6},  {"rk3", "b.Ac2", 1.0 / 12},     {"rk3", "b.AAc", 0},
      {"ssprk3", "b.c3", 1.0 / 4},   {"ssprk3", "b.(c*Ac)", 1.0 / 12}, {"ssprk3", "b.Ac2", 1.0 / 6},
      {"ssprk3", "b.AAc", 0},        {"rk4", "b.c4", 5.0 / 24},      {"rk4", "b.AAAc", 0},
      {"rk38", "b.c4", 11.0 / 54},   {"rk38", "b.AAAc", 0},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    dynb__tableau t = builtin(cases[k].name);
    double phi[NTREE];
    weights(&t, phi);
    int q = 0;
    while (q < NTREE && strcmp(trees[q].what, cases[k].tree) != 0) q++;
    assert_true(q < NTREE);
    assert_int_equal(trees[q].order, t.order + 1);
    if (fabs(phi[q] - cases[k].hand) > ORDER_TOL)
      fail_msg("%s: %s = %.17g, by hand %.17g", t.name, cases[k].tree, phi[q], cases[k].hand);
  }
}

/* ---- convergence on the host -------------------------------------------------- */

typedef double (*rhs_fn)(double t, double y);

/* n steps of the tableau from (0, y0) to (1, ·), in plain double: the
 * scalar analogue of what a dynamic block does with feature maps. */
static double integrate(const dynb__tableau *tab, rhs_fn f, double y0, int n) {
  double h = 1.0 / n, y = y0, k[DYNB_MAX_STAGES];
  for (int step = 0; step < n; step++) {
    double t = step * h, dy = 0;
    for (int i = 0; i < tab->stages; i++) {
      double yi = y;
      for (int j = 0; j < i; j++) yi += h * tab->a[i][j] * k[j];
      k[i] = f(t + tab->c[i] * h, yi);
      dy += tab->b[i] * k[i];
    }
    y += h * dy;
  }
  return y;
}

static double decay(double t, double y) { return (void)t, -y; }
static double growth_in_t(double t, double y) { return t * y; }
static double logistic(double t, double y) { return (void)t, y * (1 - y); }

/* Problems on [0, 1] with exact solutions. y' = -y is autonomous and
 * linear (it sees only the stability polynomial); y' = t·y samples the
 * stages at t + c_i h, so a wrong c shows; the logistic equation is
 * nonlinear, so every elementary differential is nonzero. (y' = cos t is
 * not used: it is pure quadrature, and rk3/ssprk3 integrate it with
 * Simpson's rule at order 4, not 3.) */
static const struct {
  const char *what;
  rhs_fn f;
  double y0, y1;
} problems[] = {
    {"y'=-y", decay, 1.0, 0.36787944117144233},      /* e^-1 */
    {"y'=t*y", growth_in_t, 1.0, 1.6487212707001282}, /* e^(1/2) */
    {"y'=y(1-y)", logistic, 0.5, 0.7310585786300049}, /* 1/(1+e^-1) */
};

/* Errors at h = 1/16 and 1/32 give the observed order log2(e_h / e_{h/2}).
 * The leading error term dominates when h·(problem scale ~1) is small: the
 * next term is O(h) relative to it, ~1/16 here, moving the observed order by
 * well under 0.2; and the smallest error (rk4 at h = 1/32, ~1e-9) is far
 * above the ~32·1e-16 rounding of the host arithmetic. */
static void builtins_converge_at_their_order(void **state) {
  (void)state;
  for (int k = 0; k < NBUILTIN; k++) {
    dynb__tableau t = builtin(builtin_names[k]);
    for (size_t p = 0; p < sizeof problems / sizeof *problems; p++) {
      double e1 = fabs(integrate(&t, problems[p].f, problems[p].y0, 16) - problems[p].y1);
      double e2 = fabs(integrate(&t, problems[p].f, problems[p].y0, 32) - problems[p].y1);
      double observed = log2(e1 / e2);
      printf("maxerr %s %s: err %.3g -> %.3g, observed order %.3f (declared %d)\n", t.name,
             problems[p].what, e1, e2, observed, t.order);
      if (fabs(observed - t.order) > 0.2)
        fail_msg("%s on %s: observed order %.3f, declared %d", t.name, problems[p].what,
                 observed, t.order);
    }
  }
}

/* ---- names -------------------------------------------------------------------- */

/* Names are spec keys and match exactly, case included (as "layer", "norm"
 * and every other key of the spec do); "rk1" is the one alias. */
static void names_match_exactly(void **state) {
  (void)state;
  dynb__tableau e = builtin("euler"), r = builtin("rk1");
  assert_memory_equal(&e, &r, sizeof e);
  assert_string_equal(r.name, "euler"); /* canonical, so it round-trips as "euler" */
  static const char *const unknown[] = {"rk5",  "",      "RK4",  "Euler", " rk4",
                                        "rk4 ", "rk4\t", "rk", "midpoint2", "custom"};
  for (size_t k = 0; k < sizeof unknown / sizeof *unknown; k++) {
    dynb__tableau t;
    memset(&t, 0x5a, sizeof t);
    if (dynb__tableau_builtin(unknown[k], &t)) fail_msg("'%s' accepted", unknown[k]);
    assert_int_equal(((unsigned char *)&t)[0], 0x5a); /* out left alone */
  }
  dynb__tableau t;
  assert_false(dynb__tableau_builtin(NULL, &t));
  assert_false(dynb__tableau_builtin("rk4", NULL));
  /* The list in the header (used in error messages) names exactly these. */
  for (int k = 0; k < NBUILTIN; k++) assert_non_null(strstr(DYNB_TABLEAU_NAMES, builtin_names[k]));
}

/* ---- custom tableaux ------------------------------------------------------------ */

/* A 2-stage tableau in the layout the spec parser hands over: c, A as s
 * rows of s entries, b; sized so that a case may claim more rows/columns
 * than it has without reading past the array. */
typedef struct custom {
  double c[DYNB_MAX_STAGES + 1], a[(DYNB_MAX_STAGES + 1) * (DYNB_MAX_STAGES + 1)],
      b[DYNB_MAX_STAGES + 1];
  int nc, rows, cols, nb;
} custom;

static custom midpoint_custom(void) {
  custom m = {.c = {0, 0.5}, .a = {0, 0, 0.5, 0}, .b = {0, 1}};
  m.nc = m.rows = m.cols = m.nb = 2;
  return m;
}

static dynb_status build(const custom *m, dynb__tableau *out, char *err, size_t n) {
  return dynb__tableau_custom(m->c, m->nc, m->a, m->rows, m->cols, m->b, m->nb, out, err, n);
}

static void custom_midpoint_is_accepted(void **state) {
  (void)state;
  custom m = midpoint_custom();
  dynb__tableau t, ref = builtin("midpoint");
  char err[256] = "";
  if (build(&m, &t, err, sizeof err) != DYNB_OK) fail_msg("rejected: %s", err);
  assert_string_equal(t.name, "custom");
  assert_int_equal(t.order, 0);
  assert_int_equal(t.stages, 2);
  /* Same method as the built-in: identical coefficients everywhere (also the
   * zero padding), so it integrates bit for bit alike. */
  assert_memory_equal(t.c, ref.c, sizeof t.c);
  assert_memory_equal(t.a, ref.a, sizeof t.a);
  assert_memory_equal(t.b, ref.b, sizeof t.b);
  assert_true(integrate(&t, logistic, 0.5, 7) == integrate(&ref, logistic, 0.5, 7));
  /* -0 above the diagonal is zero, so still explicit. */
  m.a[1] = -0.0;
  assert_int_equal(build(&m, &t, err, sizeof err), DYNB_OK);
}

/* DYNB_MAX_STAGES stages is the largest accepted: 16 Euler substeps of
 * h/16 (c_i = i/16, A_ij = 1/16 below the diagonal, b_i = 1/16) — a valid
 * first-order method, checked to converge as one. */
static void custom_max_stages_is_accepted(void **state) {
  (void)state;
  static custom m;
  int s = DYNB_MAX_STAGES;
  m.nc = m.rows = m.cols = m.nb = s;
  for (int i = 0; i < s; i++) {
    m.c[i] = (double)i / s;
    m.b[i] = 1.0 / s;
    for (int j = 0; j < i; j++) m.a[i * s + j] = 1.0 / s;
  }
  dynb__tableau t;
  char err[256] = "";
  if (build(&m, &t, err, sizeof err) != DYNB_OK) fail_msg("rejected: %s", err);
  assert_int_equal(t.stages, s);
  assert_true(t.a[s - 1][s - 2] == 1.0 / s && t.b[s - 1] == 1.0 / s);
  double e1 = fabs(integrate(&t, logistic, 0.5, 8) - problems[2].y1);
  double e2 = fabs(integrate(&t, logistic, 0.5, 16) - problems[2].y1);
  assert_true(fabs(log2(e1 / e2) - 1) < 0.2);
}

/* Must be rejected with SPEC_ERROR, a message containing both needles, and
 * the output tableau untouched. (How %g spells NaN and Inf varies by C
 * library, so those needles stop before the value.) */
static void expect_reject(const char *what, const custom *m, const char *needle,
                          const char *needle2) {
  dynb__tableau t;
  memset(&t, 0x5a, sizeof t);
  char err[256] = "";
  dynb_status st = build(m, &t, err, sizeof err);
  if (st != DYNB_STATUS_SPEC_ERROR)
    fail_msg("%s: status %s, expected SPEC_ERROR", what, dynb_status_name(st));
  if (!strstr(err, needle) || !strstr(err, needle2))
    fail_msg("%s: message '%s' lacks '%s' or '%s'", what, err, needle, needle2);
  assert_int_equal(((unsigned char *)&t)[sizeof t - 1], 0x5a);
  printf("rejected %s: %s\n", what, err);
}

static void custom_rejections_name_the_entry(void **state) {
  (void)state;
  custom m;
  m = midpoint_custom(), m.nc = 0, m.rows = m.cols = m.nb = 0;
  expect_reject("no stages", &m, "c has 0 entries", "");
  static custom big; /* 17 stages, otherwise valid (all zero but b) */
  big.nc = big.rows = big.cols = big.nb = DYNB_MAX_STAGES + 1;
  big.b[0] = 1;
  expect_reject("too many stages", &big, "c has 17 entries", "");
  m = midpoint_custom(), m.nb = 1;
  expect_reject("short b", &m, "b has 1 entries for 2 stages", "");
  m = midpoint_custom(), m.nb = 3;
  expect_reject("long b", &m, "b has 3 entries", "");
  m = midpoint_custom(), m.rows = 1;
  expect_reject("A too few rows", &m, "A is 1x2", "");
  m = midpoint_custom(), m.cols = 3;
  expect_reject("A too many columns", &m, "A is 2x3", "");
  m = midpoint_custom(), m.rows = m.cols = 3;
  expect_reject("A square but not s x s", &m, "A is 3x3", "");
  m = midpoint_custom(), m.a[0 * 2 + 1] = 0.5;
  expect_reject("A above the diagonal", &m, "A[0][1] = 0.5 is on or above the diagonal", "");
  m = midpoint_custom(), m.a[1 * 2 + 1] = 1;
  expect_reject("A on the diagonal", &m, "A[1][1] = 1 is on or above", "");
  m = midpoint_custom(), m.a[0] = 1e-300;
  expect_reject("tiny A[0][0]", &m, "A[0][0]", "");
  m = midpoint_custom(), m.c[1] = NAN;
  expect_reject("NaN in c", &m, "c[1] = ", "not finite");
  m = midpoint_custom(), m.a[1 * 2 + 0] = INFINITY;
  expect_reject("Inf in A", &m, "A[1][0] = ", "not finite");
  m = midpoint_custom(), m.a[0 * 2 + 1] = NAN;
  expect_reject("NaN above the diagonal", &m, "A[0][1] = ", "not finite");
  m = midpoint_custom(), m.b[0] = -INFINITY;
  expect_reject("-Inf in b", &m, "b[0] = ", "not finite");
  /* Several faults: the first in reading order (c, A, b) is the one named. */
  m = midpoint_custom(), m.b[0] = NAN, m.a[1] = 2, m.c[0] = INFINITY;
  expect_reject("c before A before b", &m, "c[0]", "");
  m = midpoint_custom(), m.b[0] = NAN, m.a[1] = 2;
  expect_reject("A before b", &m, "A[0][1]", "");
}

/* Misuse (NULL arrays or output) is INVALID_ARGUMENT, not a spec error; a
 * NULL or tiny message buffer is safe. */
static void custom_bad_arguments(void **state) {
  (void)state;
  custom m = midpoint_custom();
  dynb__tableau t;
  char err[256] = "";
  assert_int_equal(dynb__tableau_custom(NULL, 2, m.a, 2, 2, m.b, 2, &t, err, sizeof err),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "NULL"));
  assert_int_equal(dynb__tableau_custom(m.c, 2, NULL, 2, 2, m.b, 2, &t, err, sizeof err),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(dynb__tableau_custom(m.c, 2, m.a, 2, 2, NULL, 2, &t, err, sizeof err),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_int_equal(dynb__tableau_custom(m.c, 2, m.a, 2, 2, m.b, 2, NULL, err, sizeof err),
                   DYNB_STATUS_INVALID_ARGUMENT);
  m.c[1] = NAN;
  assert_int_equal(build(&m, &t, NULL, 0), DYNB_STATUS_SPEC_ERROR);
  char tiny[6];
  memset(tiny, 'x', sizeof tiny);
  assert_int_equal(build(&m, &t, tiny, sizeof tiny), DYNB_STATUS_SPEC_ERROR);
  assert_string_equal(tiny, "c[1] "); /* truncated, terminated */
}

/* ---- embedded pairs (SPEC §1.5) ------------------------------------------------ */

/* The pairs as published (Dormand & Prince 1980, Table 2 for dopri5;
 * Bogacki & Shampine 1989 for bosh3; Heun with Euler embedded), typed in
 * again here: b is the higher-order solution, b_err the embedded one. */
static const struct {
  const char *name;
  int stages, order;
  double c[7], b[7], b_err[7];
  double a_last[7]; /* the last row of A, the one with the most entries */
} pairs[] = {
    {"dopri5", 7, 5, {0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1, 1},
     {35.0 / 384.0, 0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0},
     {5179.0 / 57600.0, 0, 7571.0 / 16695.0, 393.0 / 640.0, -92097.0 / 339200.0,
      187.0 / 2100.0, 1.0 / 40.0},
     {35.0 / 384.0, 0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0}},
    {"bosh3", 4, 3, {0, 0.5, 0.75, 1}, {2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0},
     {7.0 / 24.0, 0.25, 1.0 / 3.0, 0.125}, {2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0}},
    {"heun_euler", 2, 2, {0, 1}, {0.5, 0.5}, {1, 0}, {1, 0}},
};
#define NPAIRS (int)(sizeof pairs / sizeof *pairs)

/* Largest |Φ − 1/γ| allowed for a condition that holds. dopri5's entries
 * reach |355/33| ≈ 10.8 and the fifth-order weights multiply up to four of
 * them before cancelling to O(1), so terms of size ~10^3 are each rounded
 * (2^-53 ≈ 1.1e-16 relative): ~1e-13 in all; 1e-12 leaves a margin, and a
 * wrong coefficient moves Φ by >= 1e-4 (the smallest fraction here is
 * 1/339200 ≈ 3e-6 of a coefficient, times weights of order 1e-1..1e1). */
#define PAIR_TOL 1e-12

static void check_order(const dynb__tableau *t, const char *which, int order) {
  double phi[NTREE], worst_next = 0;
  weights(t, phi);
  for (int q = 0; q < NTREE; q++) {
    double e = fabs(phi[q] - trees[q].want);
    if (trees[q].order <= order && e > PAIR_TOL)
      fail_msg("%s %s: %s = %.17g, want %.17g", t->name, which, trees[q].what, phi[q],
               trees[q].want);
    if (trees[q].order == order + 1 && e > worst_next) worst_next = e;
  }
  /* Trees of order 6 are not tabulated: dopri5's b is checked up to 5 only.
   * Dormand and Prince chose b_err nearly fifth order: its largest miss,
   * worked out in rational arithmetic, is b_err·AAAc − 1/120 = 97/120000
   * ≈ 8.1e-4, so the bar for "clearly fails" is 1e-4 here, still 10^8
   * times PAIR_TOL. */
  if (order < 5 && worst_next < 1e-4)
    fail_msg("%s %s: every order-%d condition holds", t->name, which, order + 1);
  printf("maxerr %s %s order conditions <= %d: ok; worst order-%d miss %.4g\n", t->name, which,
         order, order + 1, worst_next);
}

/* Coefficients as published (to one rounding of the same fraction: exact
 * comparison), b of the declared order, b_err of one order less, rows of A
 * summing to c. */
static void embedded_pairs_are_published_and_of_their_order(void **state) {
  (void)state;
  for (int k = 0; k < NPAIRS; k++) {
    dynb__tableau t = builtin(pairs[k].name);
    assert_string_equal(t.name, pairs[k].name);
    assert_true(t.embedded);
    assert_int_equal(t.stages, pairs[k].stages);
    assert_int_equal(t.order, pairs[k].order);
    int s = t.stages;
    for (int i = 0; i < DYNB_MAX_STAGES; i++) {
      bool in = i < s;
      assert_true(t.c[i] == (in ? pairs[k].c[i] : 0));
      assert_true(t.b[i] == (in ? pairs[k].b[i] : 0));
      assert_true(t.b_err[i] == (in ? pairs[k].b_err[i] : 0));
      if (in) assert_true(t.a[s - 1][i] == pairs[k].a_last[i]);
      double row = 0;
      for (int j = 0; j < DYNB_MAX_STAGES; j++) {
        if (j >= i || !in) assert_true(t.a[i][j] == 0);
        row += t.a[i][j];
      }
      if (fabs(row - t.c[i]) > PAIR_TOL)
        fail_msg("%s: row %d of A sums to %.17g, c = %.17g", t.name, i, row, t.c[i]);
    }
    check_order(&t, "b", t.order);
    dynb__tableau low = t;
    memcpy(low.b, t.b_err, sizeof low.b);
    check_order(&low, "b_err", t.order - 1);
  }
  /* The fixed-step built-ins are not embedded. */
  for (int k = 0; k < NBUILTIN; k++) assert_false(builtin(builtin_names[k]).embedded);
  for (int k = 0; k < NPAIRS; k++)
    assert_non_null(strstr(DYNB_TABLEAU_EMBEDDED_NAMES, pairs[k].name));
}

/* The embedded part of a custom tableau: checked entry by entry, and a
 * rejection leaves the tableau as it was. */
static void custom_embedded_is_validated(void **state) {
  (void)state;
  dynb__tableau t = builtin("heun"), before;
  char err[256];
  const double ok[2] = {1, 0}, same[2] = {0.5, 0.5}, nan2[2] = {1, NAN};
  before = t;
  assert_int_equal(dynb__tableau_set_embedded(&t, ok, 1, 2, err, sizeof err),
                   DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(err, "b_err has 1 entries for 2 stages"));
  assert_int_equal(dynb__tableau_set_embedded(&t, nan2, 2, 2, err, sizeof err),
                   DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(err, "b_err[1] = nan is not finite"));
  assert_int_equal(dynb__tableau_set_embedded(&t, same, 2, 2, err, sizeof err),
                   DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(err, "b_err equals b"));
  assert_int_equal(dynb__tableau_set_embedded(&t, ok, 2, 0, err, sizeof err),
                   DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(err, "order 0 is outside"));
  assert_memory_equal(&t, &before, sizeof t);
  assert_int_equal(dynb__tableau_set_embedded(&t, ok, 2, 2, err, sizeof err), DYNB_OK);
  assert_true(t.embedded && t.order == 2 && t.b_err[0] == 1 && t.b_err[1] == 0);
  assert_int_equal(dynb__tableau_set_embedded(NULL, ok, 2, 2, err, sizeof err),
                   DYNB_STATUS_INVALID_ARGUMENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(builtins_have_published_coefficients),
      cmocka_unit_test(builtins_meet_their_order_conditions),
      cmocka_unit_test(next_order_weights_match_hand_values),
      cmocka_unit_test(builtins_converge_at_their_order),
      cmocka_unit_test(names_match_exactly),
      cmocka_unit_test(custom_midpoint_is_accepted),
      cmocka_unit_test(custom_max_stages_is_accepted),
      cmocka_unit_test(custom_rejections_name_the_entry),
      cmocka_unit_test(custom_bad_arguments),
      cmocka_unit_test(embedded_pairs_are_published_and_of_their_order),
      cmocka_unit_test(custom_embedded_is_validated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
