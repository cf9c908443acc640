/* The selftest engine behind `dynblocks selftest` (SPEC §4): every kernel
 * and convolution route against the plain-C references of src/ref on edge
 * sizes, in f32 and (where the device has it) f64, and a finite-difference
 * gradient check of a whole small network. It sits above src/plan (the
 * network check builds a plan) and below the tool, which only prints.
 *
 * Results come as rows, one per op, route and dtype; a row's largest error
 * is the worst, over its cases, of max_i |got_i - want_i| / scale_i, and
 * its bound is the one that case was held to. Every bound is derived in a
 * comment next to its check (operation counts times the unit roundoff u,
 * scaled by the magnitudes the data give); none is tuned to pass. */
#ifndef DYNB_SELFTEST_SELFTEST_H
#define DYNB_SELFTEST_SELFTEST_H

#include <stdbool.h>
#include <stddef.h>

#include "ref/ref.h"
#include "runtime/runtime.h"

typedef struct dynb__selftest_row {
  const char *op;    /* "conv2d_forward", "net_gradient", ... */
  const char *route; /* convolution route, or "-" */
  dynb_dtype dtype;
  int checks;         /* comparisons made (over sizes, variants and outputs) */
  double err, bound; /* the worst case's error and its bound */
  bool pass;
  double seconds;
  const char *error; /* not NULL: a call failed (the row fails); its message */
} dynb__selftest_row;

typedef void (*dynb__selftest_row_fn)(void *user, const dynb__selftest_row *row);

typedef struct dynb__selftest_desc {
  bool quick;                   /* fewer sizes; the full mode adds larger ones */
  dynb__selftest_row_fn row_fn; /* called once per finished row; may be NULL */
  void *user;
  /* Test hook, not a user setting: the output of every call of this op
   * (a row's op name) is perturbed as it is read back, so that tests can
   * prove a wrong kernel is caught and makes the run fail. */
  const char *fault_op;
} dynb__selftest_desc;

typedef struct dynb__selftest_summary {
  int rows, failed; /* failed counts rows that failed or had an error */
  bool fp64;        /* whether f64 rows ran */
  double seconds;
} dynb__selftest_summary;

/* Runs every check on ctx's device. ctx's convolution policy is changed
 * while the routes run and restored after. @return DYNB_OK when the run
 * completed (failures are in *sum, not in the status), else the status of
 * an error that stopped it (ctx's last error says which). */
dynb_status dynb__selftest_run(dynb_ctx *ctx, const dynb__selftest_desc *d,
                               dynb__selftest_summary *sum);

/* ---- Internals shared by the check files (selftest.c, check_*.c) ------------- */

#define ST_MAX_TENSORS 24
#define ST_MAX_HOST 48

/* One run; the row being built; the tensors of the current case. */
typedef struct dynb__stest_run {
  dynb_ctx *ctx;
  const dynb__selftest_desc *d;
  dynb__selftest_summary *sum;
  dynb__selftest_row row;
  double ratio; /* worst err / bound of the row so far */
  double t0;
  char error[512];
  dynb_status status; /* first failed call of the current row */
  dynb__tensor tensors[ST_MAX_TENSORS];
  size_t view_off[ST_MAX_TENSORS], view_n[ST_MAX_TENSORS]; /* the view in each buffer */
  int ntensors;
  double *host[ST_MAX_HOST];
  int nhost;
  bool f64;
} dynb__stest_run;

/* A row opens, collects cases, and is handed to row_fn when it ends. */
void dynb__stest_begin(dynb__stest_run *r, const char *op, const char *route, dynb_dtype dt);
void dynb__stest_end(dynb__stest_run *r);
/* Records the status of a library call; false (and the row fails) unless
 * it is DYNB_OK. Once a call failed, the rest of the row is skipped: every
 * helper below does nothing while r->status != DYNB_OK. */
bool dynb__stest_ok(dynb__stest_run *r, dynb_status st);
/* One check: got against want elementwise, |got - want| <= bound · scale
 * (scale NULL: 1). */
void dynb__stest_compare(dynb__stest_run *r, const double *got, const double *want,
                         const double *scale, size_t n, double bound);
/* Checks that every buffer of the current case still holds NaN outside
 * its view (the row fails if an op wrote past its output), then frees the
 * case's tensors and host arrays (call between cases; dynb__stest_end calls
 * it too). */
void dynb__stest_release(dynb__stest_run *r);

/* A device tensor of dims holding host (NULL: NaN, so that an op that reads
 * its output before writing it shows), owned by the case. Starts at element
 * `off` of its buffer, so that ops that ignore offsets are caught. */
dynb__tensor dynb__stest_put(dynb__stest_run *r, int ndim, const int64_t *dims, const double *host,
                             size_t off);
dynb__tensor dynb__stest_put_i32(dynb__stest_run *r, int64_t n, const int32_t *v);
void dynb__stest_write(dynb__stest_run *r, const dynb__tensor *t, const double *host);
/* Reads an op's output back (host: numel doubles); the fault hook acts
 * here. dynb__stest_fetch reads without it (an intermediate that feeds the op). */
void dynb__stest_read(dynb__stest_run *r, const dynb__tensor *t, double *host);
void dynb__stest_fetch(dynb__stest_run *r, const dynb__tensor *t, double *host);

/* Host arrays owned by the case: random in [lo, hi] rounded to the row's
 * dtype (so that the reference sees exactly the device's inputs), and
 * zeroed scratch. NULL after a failure (r->status says so): callers test
 * r->status before they hand them to a reference; the device helpers skip
 * once the row has failed. */
double *dynb__stest_data(dynb__stest_run *r, ref_rng *g, size_t n, double lo, double hi);
double *dynb__stest_zeros(dynb__stest_run *r, size_t n);
/* γ-style count: k roundings of the device's type plus k of the double
 * reference (which matter only in f64, where they equal the device's). */
double dynb__stest_gamma(const dynb__stest_run *r, double k);
/* scale[i] = a·|x[i]| + b (x may be NULL). */
void dynb__stest_scale_abs(double *scale, const double *x, size_t n, double a, double b);
double dynb__stest_max_abs(const double *x, size_t n);

/* Edge shapes N×C×H×W of the run: N = 1, C = 1, 1×1 and odd maps, element
 * counts that are no multiple of any work-group size; the full mode adds
 * larger ones. */
typedef struct dynb__stest_shape {
  int n, c, h, w;
} dynb__stest_shape;
const dynb__stest_shape *dynb__stest_shapes(const dynb__stest_run *r, int *count);
size_t dynb__stest_numel(const dynb__stest_shape *s);
/* An element offset for case i: every other case puts its tensors at a
 * non-zero offset of their buffers. */
size_t dynb__stest_offset(int i);

/* The real types the device runs: F32, and F64 where it has fp64. */
int dynb__stest_dtypes(const dynb__stest_run *r, dynb_dtype out[2]);

/* The check families. */
void dynb__stest_check_elementwise(dynb__stest_run *r); /* act, channel, pool, rk, interp */
void dynb__stest_check_params(dynb__stest_run *r);      /* optim, timereg */
void dynb__stest_check_conv(dynb__stest_run *r);        /* every route and direction */
void dynb__stest_check_dense(dynb__stest_run *r);       /* GEMM wrapper, linear, loss */
void dynb__stest_check_norm(dynb__stest_run *r);        /* tv, batch norm */
void dynb__stest_check_net(dynb__stest_run *r);         /* whole-network gradient */

#endif
