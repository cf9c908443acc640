#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <math.h>
#include <time.h>

dynb_ctx_desc tu_ctx_desc(void) {
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.device = getenv("DYNB_TEST_DEVICE");
  const char *cache = getenv("DYNB_TEST_CACHE_DIR");
  d.cache_dir = cache ? cache : "";
  /* Tests never depend on tuned parameters: the built-in ones only. */
  d.tune_cache = "";
  return d;
}

dynb_ctx *tu_ctx_create(const dynb_ctx_desc *d) {
  dynb_ctx *ctx = NULL;
  dynb_status st = dynb_ctx_create(d, &ctx);
  if (st == DYNB_STATUS_NO_DEVICE) {
    fprintf(stderr, "skipping: %s\n", dynb_ctx_last_error(ctx));
    dynb_ctx_free(ctx);
    skip();
  }
  if (st != DYNB_OK) fail_msg("dynb_ctx_create: %s", dynb_ctx_last_error(ctx));
  return ctx;
}

dynb_ctx *tu_ctx(void) {
  dynb_ctx_desc d = tu_ctx_desc();
  return tu_ctx_create(&d);
}

void *tu_count_alloc(void *user, size_t bytes) {
  void *p = malloc(bytes);
  if (p) ++*(size_t *)user;
  return p;
}

void tu_count_free(void *user, void *ptr) {
  if (ptr) --*(size_t *)user;
  free(ptr);
}

bool tu_small(void) {
  const char *v = getenv("DYNB_TEST_SMALL");
  return v && *v && strcmp(v, "0") != 0;
}

void tu_require_real(dynb_ctx *ctx, dynb_dtype real) {
  if (real == DYNB_F64 && !ctx->info.has_fp64) {
    fprintf(stderr, "skipping: %s has no fp64\n", ctx->info.device_name);
    skip();
  }
}

double *tu_random(tu_rng *r, size_t n, double lo, double hi) {
  double *x = malloc((n ? n : 1) * sizeof *x);
  assert_non_null(x);
  tu_fill(r, x, n, lo, hi);
  return x;
}

void tu_write(dynb_ctx *ctx, const dynb__tensor *t, const double *host) {
  size_t n = dynb__tensor_numel(t);
  void *buf = calloc(n ? n : 1, dynb__dtype_size(t->dtype));
  assert_non_null(buf);
  for (size_t i = 0; host && i < n; i++) {
    if (t->dtype == DYNB_F32)
      ((float *)buf)[i] = (float)host[i];
    else if (t->dtype == DYNB_F64)
      ((double *)buf)[i] = host[i];
    else
      ((int32_t *)buf)[i] = (int32_t)host[i];
  }
  TU_OK(ctx, dynb__tensor_write(ctx, t, buf));
  free(buf);
}

dynb__tensor tu_upload(dynb_ctx *ctx, dynb_dtype dtype, int ndim, const int64_t *dims,
                       const double *host) {
  dynb__tensor t;
  TU_OK(ctx, dynb__tensor_alloc(ctx, dtype, ndim, dims, &t));
  tu_write(ctx, &t, host);
  return t;
}

dynb__tensor tu_upload_at(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims,
                          const double *host, size_t off, dynb__tensor *base) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= dims[i];
  int64_t flat = n + (int64_t)off + 3;
  *base = tu_upload(ctx, dt, 1, &flat, NULL);
  dynb__tensor v = dynb__tensor_view(base->mem, off, dt, ndim, dims);
  tu_write(ctx, &v, host);
  return v;
}

double tu_unit(dynb_dtype dt) { return ref_unit(dt == DYNB_F64); }

void tu_round_to(dynb_dtype dt, double *x, size_t n) {
  for (size_t i = 0; dt == DYNB_F32 && i < n; i++) x[i] = (float)x[i];
}

dynb__tensor tu_upload_i32(dynb_ctx *ctx, int64_t n, const int32_t *labels) {
  dynb__tensor t;
  TU_OK(ctx, dynb__tensor_alloc(ctx, DYNB_I32, 1, &n, &t));
  TU_OK(ctx, dynb__tensor_write(ctx, &t, labels));
  return t;
}

void tu_download(dynb_ctx *ctx, const dynb__tensor *t, double *host) {
  size_t n = dynb__tensor_numel(t);
  void *buf = calloc(n ? n : 1, dynb__dtype_size(t->dtype));
  assert_non_null(buf);
  TU_OK(ctx, dynb__tensor_read(ctx, t, buf));
  for (size_t i = 0; i < n; i++) {
    if (t->dtype == DYNB_F32)
      host[i] = ((float *)buf)[i];
    else if (t->dtype == DYNB_F64)
      host[i] = ((double *)buf)[i];
    else
      host[i] = ((int32_t *)buf)[i];
  }
  free(buf);
}

/* Both measures are src/ref's one error measure with a per-element scale:
 * max(|want|, floor), or atol + rtol |want| when floor < 0. */
static double scaled(const double *got, const double *want, size_t n, double rtol, double atol,
                     double floor, size_t *at) {
  double *scale = malloc((n ? n : 1) * sizeof *scale);
  assert_non_null(scale);
  for (size_t i = 0; i < n; i++)
    scale[i] = floor >= 0 ? fmax(fabs(want[i]), floor) : atol + rtol * fabs(want[i]);
  double worst = ref_max_scaled_err(got, want, scale, n, at);
  free(scale);
  return worst;
}

double tu_max_rel_err(const double *got, const double *want, size_t n, double floor) {
  return scaled(got, want, n, 0, 0, floor, NULL);
}

void tu_assert_close(const char *what, const double *got, const double *want, size_t n,
                     double rtol, double atol) {
  size_t at = 0;
  double worst = scaled(got, want, n, rtol, atol, -1, &at);
  double rel = tu_max_rel_err(got, want, n, atol > 0 ? atol / (rtol > 0 ? rtol : 1) : 1e-300);
  printf("maxerr %s: %.3g (n=%zu)\n", what, rel, n);
  if (!(worst <= 1.0))
    fail_msg("%s: element %zu is %.17g, expected %.17g (rtol %g, atol %g)", what, at, got[at],
             want[at], rtol, atol);
}

double tu_dot(const double *w, const double *y, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += w[i] * y[i];
  return s;
}

void tu_check_gradient(const char *what, tu_scalar_fn f, void *user, double *x, size_t n,
                       const double *analytic, double step, double tol, size_t max_checks) {
  size_t stride = n > max_checks ? (n + max_checks - 1) / max_checks : 1;
  double worst = 0;
  for (size_t i = 0; i < n; i += stride) {
    double keep = x[i];
    x[i] = keep + step;
    double fp = f(user);
    x[i] = keep - step;
    double fm = f(user);
    x[i] = keep;
    double fd = (fp - fm) / (2 * step);
    double err = fabs(fd - analytic[i]) / fmax(1.0, fabs(analytic[i]));
    if (!(err <= worst)) worst = err;
    if (!(err <= tol))
      fail_msg("%s: d/dx[%zu]: finite difference %.12g, analytic %.12g (tol %g)", what, i, fd,
               analytic[i], tol);
  }
  printf("maxerr fd %s: %.3g\n", what, worst);
}

double tu_check_gradient_richardson(const char *what, tu_scalar_fn f, void *user, double *x,
                                    const size_t *idx, size_t n, const double *analytic,
                                    double step, double tol) {
  double worst = 0;
  for (size_t q = 0; q < n; q++) {
    size_t i = idx[q];
    double keep = x[i], d[2];
    for (int half = 0; half < 2; half++) {
      double hs = half ? step / 2 : step;
      x[i] = keep + hs;
      double lp = f(user);
      x[i] = keep - hs;
      double lm = f(user);
      d[half] = (lp - lm) / (2 * hs);
    }
    x[i] = keep;
    double fd = (4 * d[1] - d[0]) / 3, err = fabs(fd - analytic[i]) / fmax(1, fabs(analytic[i]));
    if (!(err <= worst)) worst = err;
    if (!(err <= tol))
      fail_msg("%s: d/d[%zu]: finite difference %.12g, analytic %.12g (tol %g)", what, i, fd,
               analytic[i], tol);
  }
  return worst;
}

size_t tu_live_buffers_settled(dynb_ctx *ctx) {
  TU_OK(ctx, dynb__finish(ctx));
  for (int i = 0; i < 200 && dynb__ctx_live_buffers(ctx) != 0; i++) {
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  return dynb__ctx_live_buffers(ctx);
}

dynb__block *tu_block_create(dynb_ctx *ctx, dynb_dtype dt, const dynb__layer *l, const char *scheme,
                             int ns, const double *ts, int nc, const double *tc) {
  dynb__block_desc d = {.layer = *l, .nstates = ns, .t_states = ts, .ncontrols = nc,
                        .t_controls = tc};
  assert_true(dynb__tableau_builtin(scheme, &d.tableau));
  dynb__block *b = NULL;
  char err[256] = "";
  dynb_status st = dynb__block_create(ctx, &d, dt, &b, err, sizeof err);
  if (st != DYNB_OK) fail_msg("dynb__block_create: %s (%s)", dynb_status_name(st), err);
  return b;
}

double *tu_random_controls(tu_rng *r, const dynb__layer *l, int J, double wscale) {
  dynb__param_entry e[DYNB_LAYER_MAX_PARAMS];
  size_t P;
  int ne = dynb__layer_params(l, e, &P);
  double *c = malloc((size_t)J * P * sizeof *c);
  for (int j = 0; j < J; j++)
    for (int i = 0; i < ne; i++) {
      size_t count = 1;
      for (int d = 0; d < e[i].ndim; d++) count *= (size_t)e[i].dims[d];
      bool weight = strstr(e[i].name, ".weight") != NULL;
      double lo = -0.2, hi = 0.2;
      if (weight && e[i].is_norm) lo = 0.7, hi = 1.3;
      if (weight && !e[i].is_norm) lo = -wscale, hi = wscale;
      tu_fill(r, c + (size_t)j * P + e[i].offset, count, lo, hi);
    }
  return c;
}

void tu_initial_running(size_t n, int c, double *out) {
  for (size_t i = 0; i < n; i++) out[i] = (i / (size_t)c) % 2 == 1 ? 1.0 : 0.0;
}
