/* Helpers shared by the tests: a context on the test device, seeded random
 * data, host<->device copies in double, comparisons that report the largest
 * error, central finite differences, and the block fixtures test_block and
 * test_reversible share. */
#ifndef DYNB_TESTS_TESTUTIL_H
#define DYNB_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "model/model.h"
#include "ops/ops.h"
#include "ref/ref.h"
#include "runtime/runtime.h"

/* A context on DYNB_TEST_DEVICE (else the default device) with the program
 * cache in DYNB_TEST_CACHE_DIR and no tuning cache (the built-in CLBlast
 * parameters); calls cmocka's skip() when no device exists. */
dynb_ctx *tu_ctx(void);
/* The description tu_ctx uses, for tests that add hooks (log, allocator,
 * a tuning cache) before creating the context with tu_ctx_create, which
 * skips or fails the test as tu_ctx does. */
dynb_ctx_desc tu_ctx_desc(void);
dynb_ctx *tu_ctx_create(const dynb_ctx_desc *d);
/* An allocator pair for dynb_ctx_desc that counts live blocks in the
 * size_t its user pointer names. */
void *tu_count_alloc(void *user, size_t bytes);
void tu_count_free(void *user, void *ptr);
/* True when DYNB_TEST_SMALL is set (the Oclgrind targets, tests/oclgrind):
 * tests then leave out their largest cases, keeping every edge size (N = 1,
 * C = 1, 1×1 and odd maps, sizes off the work-group size), so that a
 * simulator that interprets each work-item runs them in minutes. */
bool tu_small(void);
/* Skips the calling test when the device cannot build double kernels. */
void tu_require_real(dynb_ctx *ctx, dynb_dtype real);

/* Device buffers of ctx still alive (dynb__ctx_live_buffers) once released
 * ones are gone: PoCL destroys a released buffer when its driver thread has
 * retired the commands that used it, a moment after clFinish, so this waits
 * for the count to reach zero, boundedly (2 s; a leaked buffer never goes). */
size_t tu_live_buffers_settled(dynb_ctx *ctx);

/* Seeded generator (src/ref's splitmix64, which `dynblocks selftest`
 * draws from too): the same seed gives the same data. */
typedef ref_rng tu_rng;
#define tu_rng_seed ref_rng_seed
#define tu_uniform ref_uniform
#define tu_fill ref_fill
/* A fresh array of n uniform values; free() it. */
double *tu_random(tu_rng *r, size_t n, double lo, double hi);

/* Allocates a device tensor of `dims` and writes `host` (may be NULL: zeros)
 * converted to dtype. Fails the test on error. */
dynb__tensor tu_upload(dynb_ctx *ctx, dynb_dtype dtype, int ndim, const int64_t *dims,
                       const double *host);
/* Writes `host` into an existing tensor (converted). */
void tu_write(dynb_ctx *ctx, const dynb__tensor *t, const double *host);
/* Reads a tensor into host doubles (n = numel). */
void tu_download(dynb_ctx *ctx, const dynb__tensor *t, double *host);
/* The same at element offset `off` of a larger buffer (returned in *base,
 * which the caller releases), to exercise views that do not start at 0. */
dynb__tensor tu_upload_at(dynb_ctx *ctx, dynb_dtype dt, int ndim, const int64_t *dims,
                          const double *host, size_t off, dynb__tensor *base);
/* Unit roundoff of a real type (2^-24 or 2^-53), for tolerances. */
double tu_unit(dynb_dtype dt);
/* Rounds host data to what a tensor of dtype dt holds, so that a reference
 * sees exactly the kernel's inputs. */
void tu_round_to(dynb_dtype dt, double *x, size_t n);
/* Labels as I32. */
dynb__tensor tu_upload_i32(dynb_ctx *ctx, int64_t n, const int32_t *labels);

/* Fails unless |got - want| <= atol + rtol |want| for every element; prints
 * "maxerr <what>: <worst relative error>" so that notes can quote it. */
void tu_assert_close(const char *what, const double *got, const double *want, size_t n,
                     double rtol, double atol);
/* Largest |got - want| / max(|want|, floor). */
double tu_max_rel_err(const double *got, const double *want, size_t n, double floor);

/* Asserts that `call` returned `status` and that the context explains it. */
#define TU_EXPECT_STATUS(ctx, call, status)                                        \
  do {                                                                             \
    dynb_status tu_s_ = (call);                                                    \
    if (tu_s_ != (status))                                                         \
      fail_msg("%s returned %s, expected %s (%s)", #call, dynb_status_name(tu_s_), \
               dynb_status_name(status), dynb_ctx_last_error(ctx));               \
    assert_true(strlen(dynb_ctx_last_error(ctx)) > 0);                             \
  } while (0)
#define TU_OK(ctx, call)                                                           \
  do {                                                                             \
    dynb_status tu_s_ = (call);                                                    \
    if (tu_s_ != DYNB_OK)                                                          \
      fail_msg("%s failed: %s: %s", #call, dynb_status_name(tu_s_),                \
               dynb_ctx_last_error(ctx));                                          \
  } while (0)

/* Central finite differences of a scalar function f(x) (x: n host doubles
 * that f reads through `user`) at up to `max_checks` indices spread over x,
 * compared with `analytic`: |fd - an| <= tol · max(1, |an|). Prints the
 * largest error as "maxerr fd <what>". */
typedef double (*tu_scalar_fn)(void *user);
void tu_check_gradient(const char *what, tu_scalar_fn f, void *user, double *x, size_t n,
                       const double *analytic, double step, double tol, size_t max_checks);

/* Central differences of f at the indices idx[0..n) of x, at h = step and
 * step/2 combined by Richardson extrapolation, (4 D(h/2) − D(h))/3, which
 * cancels the h² term; each against analytic[i]: |fd − an| <= tol ·
 * max(1, |an|), else the test fails. Returns the largest error. */
double tu_check_gradient_richardson(const char *what, tu_scalar_fn f, void *user, double *x,
                                    const size_t *idx, size_t n, const double *analytic,
                                    double step, double tol);

/* Σ_i w_i y_i: the scalar whose gradient with respect to y is w, used to
 * turn a tensor-valued op into a scalar for finite differences. */
double tu_dot(const double *w, const double *y, size_t n);

/* A block of layer l with the built-in tableau (or reversible scheme)
 * `scheme` on the given state and control grids; fails the test on error. */
dynb__block *tu_block_create(dynb_ctx *ctx, dynb_dtype dt, const dynb__layer *l, const char *scheme,
                             int ns, const double *ts, int nc, const double *tc);

/* Random control points of a layer (J × its parameter count, malloc'd):
 * convolution weights in ±wscale (small enough that the flow stays tame over
 * t ≤ 2), biases in ±0.2, batch-norm scales in 1 ± 0.3. Every control point
 * differs, so θ(t) really varies. */
double *tu_random_controls(tu_rng *r, const dynb__layer *l, int J, double wscale);

/* Running statistics as a fresh block holds them: mean 0, variance 1. */
void tu_initial_running(size_t n, int c, double *out);

#endif
