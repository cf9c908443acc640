/* The selftest runner: rows, cases, device tensors and the fault hook. The
 * checks themselves live in check_*.c, one file per family of ops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selftest.h"

/* A buffer of `off` leading and GUARD trailing elements of NaN around each
 * view: an op that ignores its view's offset reads NaN (a wrong result) or
 * writes outside the view (dynb__stest_release sees it). */
#define GUARD 3

static void fail_call(dynb__stest_run *r, dynb_status st, const char *what) {
  if (r->status != DYNB_OK || st == DYNB_OK) return;
  r->status = st;
  snprintf(
      r->error, sizeof r->error, "%s: %s", what,
      st == DYNB_STATUS_OUT_OF_HOST_MEMORY ? "out of host memory" : dynb_ctx_last_error(r->ctx));
}

void dynb__stest_begin(dynb__stest_run *r, const char *op, const char *route, dynb_dtype dt) {
  memset(&r->row, 0, sizeof r->row);
  r->row.op = op;
  r->row.route = route ? route : "-";
  r->row.dtype = dt;
  r->row.pass = true;
  r->ratio = -1;
  r->status = DYNB_OK;
  r->error[0] = 0;
  r->f64 = dt == DYNB_F64;
  r->t0 = dynb__now();
}

void dynb__stest_end(dynb__stest_run *r) {
  dynb__stest_release(r);
  if (r->status == DYNB_OK) fail_call(r, dynb__finish(r->ctx), "finish");
  r->row.seconds = dynb__now() - r->t0;
  if (r->status != DYNB_OK || r->error[0]) {
    r->row.pass = false;
    r->row.error = r->error;
  } else if (r->row.checks == 0) {
    /* A row that checked nothing must not read as a pass. */
    r->row.pass = false;
    r->row.error = "no case ran";
  }
  r->sum->rows++;
  if (!r->row.pass) r->sum->failed++;
  if (r->d->row_fn) r->d->row_fn(r->d->user, &r->row);
}

bool dynb__stest_ok(dynb__stest_run *r, dynb_status st) {
  if (st != DYNB_OK) fail_call(r, st, r->row.op);
  return r->status == DYNB_OK;
}

void dynb__stest_compare(dynb__stest_run *r, const double *got, const double *want,
                         const double *scale, size_t n, double bound) {
  if (r->status != DYNB_OK) return;
  double err = ref_max_scaled_err(got, want, scale, n, NULL);
  double ratio = bound > 0 ? err / bound : (err == 0 ? 0 : INFINITY);
  if (isnan(err)) ratio = INFINITY;
  r->row.checks++;
  if (!(ratio <= 1)) r->row.pass = false;
  if (ratio > r->ratio) {
    r->ratio = ratio;
    r->row.err = err;
    r->row.bound = bound;
  }
}

/* The guards of buffer i: false (and the row fails) if any was written. */
static bool guards_intact(dynb__stest_run *r, int i) {
  const dynb__tensor *t = &r->tensors[i];
  size_t n = dynb__tensor_numel(t);
  double *h = t->dtype == DYNB_I32 ? NULL : malloc((n ? n : 1) * sizeof *h);
  if (!h) return true; /* labels have no guards; no memory: not checked */
  dynb__stest_fetch(r, t, h);
  size_t at = n;
  for (size_t e = 0; r->status == DYNB_OK && e < n && at == n; e++)
    if ((e < r->view_off[i] || e >= r->view_off[i] + r->view_n[i]) && !isnan(h[e])) at = e;
  free(h);
  if (at == n) return true;
  r->row.pass = false;
  snprintf(r->error, sizeof r->error,
           "element %zu of a buffer was written outside the view of %zu elements at %zu", at,
           r->view_n[i], r->view_off[i]);
  return false;
}

void dynb__stest_release(dynb__stest_run *r) {
  bool intact = true;
  for (int i = 0; intact && r->status == DYNB_OK && !r->error[0] && i < r->ntensors; i++)
    intact = guards_intact(r, i);
  for (int i = 0; i < r->ntensors; i++) dynb__tensor_release(&r->tensors[i]);
  for (int i = 0; i < r->nhost; i++) free(r->host[i]);
  r->ntensors = r->nhost = 0;
}

static double *own(dynb__stest_run *r, size_t n) {
  if (r->status != DYNB_OK) return NULL;
  double *p = r->nhost < ST_MAX_HOST ? calloc(n ? n : 1, sizeof *p) : NULL;
  if (!p) {
    fail_call(r, DYNB_STATUS_OUT_OF_HOST_MEMORY, "host array");
    return NULL;
  }
  r->host[r->nhost++] = p;
  return p;
}

double *dynb__stest_zeros(dynb__stest_run *r, size_t n) { return own(r, n); }

double *dynb__stest_data(dynb__stest_run *r, ref_rng *g, size_t n, double lo, double hi) {
  double *x = own(r, n);
  if (!x) return NULL;
  ref_fill(g, x, n, lo, hi);
  for (size_t i = 0; !r->f64 && i < n; i++) x[i] = (float)x[i];
  return x;
}

double dynb__stest_gamma(const dynb__stest_run *r, double k) {
  return k * (ref_unit(r->f64) + 0x1p-53);
}

void dynb__stest_scale_abs(double *scale, const double *x, size_t n, double a, double b) {
  for (size_t i = 0; i < n; i++) scale[i] = a * (x ? fabs(x[i]) : 0) + b;
}

double dynb__stest_max_abs(const double *x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
  return m;
}

/* ---- device tensors -------------------------------------------------------------- */

static size_t dsize(dynb_dtype dt) { return dt == DYNB_F64 ? 8 : 4; }

void dynb__stest_write(dynb__stest_run *r, const dynb__tensor *t, const double *host) {
  if (r->status != DYNB_OK) return;
  size_t n = dynb__tensor_numel(t);
  void *buf = malloc((n ? n : 1) * dsize(t->dtype));
  if (!buf) {
    fail_call(r, DYNB_STATUS_OUT_OF_HOST_MEMORY, "write");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    double v = host ? host[i] : NAN;
    if (t->dtype == DYNB_F64)
      ((double *)buf)[i] = v;
    else
      ((float *)buf)[i] = (float)v;
  }
  dynb_status st = dynb__tensor_write(r->ctx, t, buf);
  free(buf);
  if (st != DYNB_OK) fail_call(r, st, "write");
}

dynb__tensor dynb__stest_put(dynb__stest_run *r, int ndim, const int64_t *dims, const double *host,
                             size_t off) {
  dynb__tensor v = {0};
  if (r->status != DYNB_OK) return v;
  if (r->ntensors == ST_MAX_TENSORS) {
    fail_call(r, DYNB_STATUS_OUT_OF_HOST_MEMORY, "too many tensors in one case");
    return v;
  }
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= dims[i];
  int64_t total = n + (int64_t)off + GUARD;
  dynb__tensor *base = &r->tensors[r->ntensors];
  dynb_status st = dynb__tensor_alloc(r->ctx, r->row.dtype, 1, &total, base);
  if (st != DYNB_OK) {
    fail_call(r, st, "allocate");
    return v;
  }
  r->view_off[r->ntensors] = off, r->view_n[r->ntensors] = (size_t)n;
  r->ntensors++;
  v = dynb__tensor_view(base->mem, off, r->row.dtype, ndim, dims);
  dynb__stest_write(r, base, NULL); /* NaN everywhere, guards included */
  dynb__stest_write(r, &v, host);
  return v;
}

dynb__tensor dynb__stest_put_i32(dynb__stest_run *r, int64_t n, const int32_t *vals) {
  dynb__tensor v = {0};
  if (r->status != DYNB_OK) return v;
  if (r->ntensors == ST_MAX_TENSORS) {
    fail_call(r, DYNB_STATUS_OUT_OF_HOST_MEMORY, "too many tensors in one case");
    return v;
  }
  dynb_status st = dynb__tensor_alloc(r->ctx, DYNB_I32, 1, &n, &r->tensors[r->ntensors]);
  if (st != DYNB_OK) {
    fail_call(r, st, "allocate");
    return v;
  }
  v = r->tensors[r->ntensors++];
  st = dynb__tensor_write(r->ctx, &v, vals);
  if (st != DYNB_OK) fail_call(r, st, "write");
  return v;
}

void dynb__stest_fetch(dynb__stest_run *r, const dynb__tensor *t, double *host) {
  if (r->status != DYNB_OK) return;
  size_t n = dynb__tensor_numel(t);
  void *buf = malloc((n ? n : 1) * dsize(t->dtype));
  if (!buf) {
    fail_call(r, DYNB_STATUS_OUT_OF_HOST_MEMORY, "read");
    return;
  }
  dynb_status st = dynb__tensor_read(r->ctx, t, buf);
  for (size_t i = 0; st == DYNB_OK && i < n; i++)
    host[i] = t->dtype == DYNB_F64 ? ((double *)buf)[i] : ((float *)buf)[i];
  free(buf);
  if (st != DYNB_OK) fail_call(r, st, "read");
}

void dynb__stest_read(dynb__stest_run *r, const dynb__tensor *t, double *host) {
  dynb__stest_fetch(r, t, host);
  size_t n = dynb__tensor_numel(t);
  if (r->status != DYNB_OK) return;
  /* The fault hook: one element of the op's output, changed by half its
   * size plus 0.5, far more than any bound allows. */
  if (r->d->fault_op && n && strcmp(r->d->fault_op, r->row.op) == 0)
    host[n / 2] += 0.5 * (1 + fabs(host[n / 2]));
}

/* ---- sizes ---------------------------------------------------------------------- */

/* 2·3·7·7 = 294, 17·13·9 = 1989 and 3·5·13·9 = 1755 are multiples of no
 * power of two above 2; 1×1×1×1 is the smallest edge of all. */
static const dynb__stest_shape quick_shapes[] = {{1, 1, 1, 1}, {2, 3, 7, 7}, {1, 17, 13, 9}};
static const dynb__stest_shape full_shapes[] = {{1, 1, 1, 1},  {2, 3, 7, 7}, {1, 17, 13, 9},
                                                {3, 5, 13, 9}, {5, 1, 1, 1}, {4, 16, 31, 33}};

const dynb__stest_shape *dynb__stest_shapes(const dynb__stest_run *r, int *count) {
  if (r->d->quick) {
    *count = (int)(sizeof quick_shapes / sizeof *quick_shapes);
    return quick_shapes;
  }
  *count = (int)(sizeof full_shapes / sizeof *full_shapes);
  return full_shapes;
}

size_t dynb__stest_numel(const dynb__stest_shape *s) { return (size_t)s->n * s->c * s->h * s->w; }

int dynb__stest_dtypes(const dynb__stest_run *r, dynb_dtype out[2]) {
  out[0] = DYNB_F32, out[1] = DYNB_F64;
  return r->ctx->info.has_fp64 ? 2 : 1;
}

size_t dynb__stest_offset(int i) { return i % 2 ? (size_t)(3 + i) : 0; }

/* ---- the run ------------------------------------------------------------------- */

dynb_status dynb__selftest_run(dynb_ctx *ctx, const dynb__selftest_desc *d,
                               dynb__selftest_summary *sum) {
  memset(sum, 0, sizeof *sum);
  dynb__stest_run *r = calloc(1, sizeof *r);
  DYNB_CHECK(ctx, r != NULL, DYNB_STATUS_OUT_OF_HOST_MEMORY, "selftest: out of host memory");
  r->ctx = ctx, r->d = d, r->sum = sum;
  sum->fp64 = ctx->info.has_fp64;
  double t0 = dynb__now();
  dynb__conv_policy policy = ctx->conv_policy;
  dynb__stest_check_elementwise(r);
  dynb__stest_check_params(r);
  dynb__stest_check_dense(r);
  dynb__stest_check_norm(r);
  dynb__stest_check_conv(r);
  ctx->conv_policy = policy;
  dynb__stest_check_net(r);
  ctx->conv_policy = policy;
  sum->seconds = dynb__now() - t0;
  free(r);
  return DYNB_OK;
}
