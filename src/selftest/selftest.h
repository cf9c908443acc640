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
  int cases;         /* sizes and variants checked */
  double err, bound; /* the worst case's error and its bound */
  bool pass;
  double seconds;
  const char *error; /* not NULL: a call failed (the row fails); its message */
} dynb__selftest_row;

typedef void (*dynb__selftest_row_fn)(void *user, const dynb__selftest_row *row);

typedef struct dynb__selftest_desc {
  bool quick;                  /* fewer sizes; the full mode adds larger ones */
  dynb__selftest_row_fn row_fn; /* called once per finished row; may be NULL */
  void *user;
  /* Test hook, not a user setting: the output of every call of this op
   * (a row's op name) is perturbed as it is read back, so that tests can
   * prove a wrong kernel is caught and makes the run fail. */
  const char *fault_op;
} dynb__selftest_desc;

typedef struct dynb__selftest_summary {
  int rows, failed;   /* failed counts rows that failed or had an error */
  bool fp64;          /* whether f64 rows ran */
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
typedef struct st_run {
  dynb_ctx *ctx;
  const dynb__selftest_desc *d;
  dynb__selftest_summary *sum;
  dynb__selftest_row row;
  double ratio;     /* worst err / bound of the row so far */
  double t0;
  char error[512];
  dynb_status status; /* first failed call of the current row */
  dynb__tensor tensors[ST_MAX_TENSORS];
  int ntensors;
  double *host[ST_MAX_HOST];
  int nhost;
  bool f64;
} st_run;

/* A row opens, collects cases, and is handed to row_fn when it ends. */
void st_begin(st_run *r, const char *op, const char *route, dynb_dtype dt);
void st_end(st_run *r);
/* Records the status of a library call; false (and the row fails) unless
 * it is DYNB_OK. Once a call failed, the rest of the row is skipped: every
 * helper below does nothing while r->status != DYNB_OK. */
bool st_ok(st_run *r, dynb_status st);
/* A case: got against want elementwise, |got - want| <= bound · scale
 * (scale NULL: 1). */
void st_compare(st_run *r, const double *got, const double *want, const double *scale, size_t n,
                double bound);
/* Frees the current case's tensors and host arrays (call between cases;
 * st_end calls it too). */
void st_release(st_run *r);

/* A device tensor of dims holding host (NULL: NaN, so that an op that reads
 * its output before writing it shows), owned by the case. Starts at element
 * `off` of its buffer, so that ops that ignore offsets are caught. */
dynb__tensor st_put(st_run *r, int ndim, const int64_t *dims, const double *host, size_t off);
dynb__tensor st_put_i32(st_run *r, int64_t n, const int32_t *v);
void st_write(st_run *r, const dynb__tensor *t, const double *host);
/* Reads an op's output back (host: numel doubles); the fault hook acts
 * here. st_fetch reads without it (an intermediate that feeds the op). */
void st_read(st_run *r, const dynb__tensor *t, double *host);
void st_fetch(st_run *r, const dynb__tensor *t, double *host);

/* Host arrays owned by the case: random in [lo, hi] rounded to the row's
 * dtype (so that the reference sees exactly the device's inputs), and
 * zeroed scratch. NULL only after a failure (r->status says so), which
 * callers need not test: every helper skips once the row has failed. */
double *st_data(st_run *r, ref_rng *g, size_t n, double lo, double hi);
double *st_zeros(st_run *r, size_t n);
/* The unit roundoff of the row's dtype. */
double st_u(const st_run *r);
/* γ-style count: k roundings of the device's type plus k of the double
 * reference (which matter only in f64, where they equal the device's). */
double st_gamma(const st_run *r, double k);
/* scale[i] = a·|x[i]| + b (x may be NULL). */
void st_scale_abs(double *scale, const double *x, size_t n, double a, double b);
double st_max_abs(const double *x, size_t n);

/* Edge shapes N×C×H×W of the run: N = 1, C = 1, 1×1 and odd maps, element
 * counts that are no multiple of any work-group size; the full mode adds
 * larger ones. */
typedef struct st_shape {
  int n, c, h, w;
} st_shape;
const st_shape *st_shapes(const st_run *r, int *count);
size_t st_numel(const st_shape *s);
/* An element offset for case i: every other case puts its tensors at a
 * non-zero offset of their buffers. */
size_t st_offset(int i);

/* The real types the device runs: F32, and F64 where it has fp64. */
int st_dtypes(const st_run *r, dynb_dtype out[2]);

/* The check families. */
void st_check_elementwise(st_run *r); /* act, channel, pool, rk, interp */
void st_check_params(st_run *r);      /* optim, timereg */
void st_check_conv(st_run *r);        /* every route and direction */
void st_check_dense(st_run *r);       /* GEMM wrapper, linear, loss */
void st_check_norm(st_run *r);        /* tv, batch norm */
void st_check_net(st_run *r);         /* whole-network gradient */

#endif
