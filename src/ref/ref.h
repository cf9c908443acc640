/* Plain-C references for every op: naive loops in double, written for
 * clarity, not speed. Layouts match the ops (NCHW, weights [out][in][k][k]).
 * Each family's functions live in src/ref/ref_<family>.c. */
#ifndef DYNB_TESTS_REF_H
#define DYNB_TESTS_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- shared by the tests and `dynblocks selftest` (ref_util.c) ---- */
/* Seeded generator (splitmix64): the same seed gives the same data. */
typedef struct ref_rng {
  uint64_t s;
} ref_rng;
ref_rng ref_rng_seed(uint64_t seed);
double ref_uniform(ref_rng *r, double lo, double hi);
void ref_fill(ref_rng *r, double *x, size_t n, double lo, double hi);
/* The largest |got[i] - want[i]| / scale[i] (scale NULL: 1 each), with
 * its index in *at (may be NULL); NaN wins, so that a NaN result never
 * passes a bound. Every comparison of the tests and the selftest is this
 * one measure against a bound that a comment justifies. */
double ref_max_scaled_err(const double *got, const double *want, const double *scale, size_t n,
                          size_t *at);
/* Unit roundoff of a real type: 2^-24 for F32 (0), 2^-53 for F64. */
double ref_unit(bool f64);
/* C = alpha·op(A)·op(B) + beta·C in double (row-major, leading dimensions
 * lda, ldb, ldc), and mag = |alpha|·Σ|a||b| + |beta·C|, the magnitude
 * that rounding-error bounds scale with (mag may be NULL). */
void ref_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, double alpha,
              const double *a, size_t lda, const double *b, size_t ldb, double beta, double *c,
              size_t ldc, double *mag);

/* ---- channel (ref_channel.c) ---- */
void ref_bias_add(int n, int c, int s, double *y, const double *b);
void ref_channel_sum(int n, int c, int s, const double *x, double *out);

/* ---- rk (ref_rk.c) ---- */
/* out = y + Σ_j coef[j] k[j]; k: S stages of p elements. */
void ref_rk_combine(size_t p, int S, const double *y, const double *k, const double *coef,
                    double *out);
void ref_rk_combine_backward(size_t p, int S, const double *dout, const double *coef, double *dy,
                             double *dk);
/* out = a x + b y + c z (y, z NULL: their terms drop). */
void ref_lincomb(size_t p, double a, const double *x, double b, const double *y, double c,
                 const double *z, double *out);

/* ---- act (ref_act.c) ---- */
/* act is a dynb_act value (0 identity, 1 relu, 2 tanh, 3 leaky_relu with
 * slope 0.01); derivatives at 0 follow PyTorch: relu' = 0, leaky' = slope. */
void ref_act_forward(int act, size_t n, const double *x, double *y);
/* dx = dy ⊙ σ'(x), overwritten. */
void ref_act_backward(int act, size_t n, const double *x, const double *dy, double *dx);

/* ---- conv (ref_conv.c) ---- */
/* x: [n][cin][h][w], wt: [cout][cin][k][k], y: [n][cout][h][w]; b may be NULL.
 * Outputs are overwritten. The transposed conv's backward-data is
 * ref_conv2d_forward without bias; its backward-weights is
 * ref_conv2d_backward_weights with x := its dy and dy := its z. */
void ref_conv2d_forward(int n, int cin, int cout, int h, int w, int k, const double *x,
                        const double *wt, const double *b, double *y);
void ref_conv2d_backward_data(int n, int cin, int cout, int h, int w, int k, const double *dy,
                              const double *wt, double *dx);
void ref_conv2d_backward_weights(int n, int cin, int cout, int h, int w, int k, const double *x,
                                 const double *dy, double *dw);
/* y = Kᵀ z + b: z [n][cout][h][w] → y [n][cin][h][w], b: [cin] or NULL. */
void ref_conv2d_transpose_forward(int n, int cin, int cout, int h, int w, int k, const double *z,
                                  const double *wt, const double *b, double *y);

/* ---- norm (ref_norm.c) ---- */
/* Tensors [n][c][s]; per-channel vectors [c]. */
void ref_tv_forward(int n, int c, int s, const double *x, const double *beta, double eps,
                    double *y);
/* Writes dx and dbeta (dbeta may be NULL). */
void ref_tv_backward(int n, int c, int s, const double *x, const double *dy, double eps,
                     double *dx, double *dbeta);
/* Writes y, mean and invstd; updates running_mean/var unless NULL. */
void ref_bn_train_forward(int n, int c, int s, const double *x, const double *gamma,
                          const double *beta, double momentum, double eps, double *y,
                          double *mean, double *invstd, double *running_mean,
                          double *running_var);
void ref_bn_train_backward(int n, int c, int s, const double *x, const double *dy,
                           const double *gamma, const double *mean, const double *invstd,
                           double *dx, double *dgamma, double *dbeta);
void ref_bn_eval_forward(int n, int c, int s, const double *x, const double *gamma,
                         const double *beta, const double *rmean, const double *rvar, double eps,
                         double *y);
void ref_bn_eval_backward(int n, int c, int s, const double *x, const double *dy,
                          const double *gamma, const double *rmean, const double *rvar,
                          double eps, double *dx, double *dgamma, double *dbeta);

/* ---- pool, linear, loss (ref_pool.c, ref_linear.c, ref_loss.c) ---- */
/* Outputs are overwritten. 2x2 pooling: x [n][c][h][w] → y [n][c][h/2][w/2]. */
void ref_avgpool2_forward(int n, int c, int h, int w, const double *x, double *y);
void ref_avgpool2_backward(int n, int c, int h, int w, const double *dy, double *dx);
/* Global pooling over s = h·w: x [n][c][s] → y [n][c]. */
void ref_global_avgpool_forward(int n, int c, int s, const double *x, double *y);
void ref_global_avgpool_backward(int n, int c, int s, const double *dy, double *dx);
/* y [n][o] = x [n][i] · w [o][i]ᵀ + b (b may be NULL); any of dx, dw, db may be NULL. */
void ref_linear_forward(int n, int in, int out, const double *x, const double *w,
                        const double *b, double *y);
void ref_linear_backward(int n, int in, int out, const double *x, const double *w,
                         const double *dy, double *dx, double *dw, double *db);
/* out = {mean softmax cross-entropy, count of rows whose first arg-max is the
 * label}; a label outside 0..k-1 makes the loss NaN. */
void ref_xent_forward(int n, int k, const double *logits, const int32_t *labels, double out[2]);
/* dlogits = scale · (softmax - onehot) / n. */
void ref_xent_backward(int n, int k, const double *logits, const int32_t *labels, double scale,
                       double *dlogits);

/* ---- param: interpolation, optimisers, time regularisation (ref_param.c) ---- */
/* (j0, w) for time t on a strictly increasing grid, by linear scan; exact
 * hits give w = 0 at the hit point. */
void ref_interp_weights(const double *t_controls, int J, double t, int *j0, double *w);
/* out = (1 - w) c[j0] + w c[j0 + 1] (c[j0 + 1] unread when w == 0); c: [J][p]. */
void ref_interp_forward(size_t p, const double *c, int j0, double w, double *out);
/* dc[j0] += (1 - w) dout, dc[j0 + 1] += w dout (skipped when w == 0). */
void ref_interp_backward(size_t p, const double *dout, int j0, double w, double *dc);
/* One PyTorch SGD step in place; vel unused (may be NULL) when momentum == 0. */
void ref_sgd_step(size_t n, double *param, const double *grad, double *vel, double lr,
                  double momentum, double wd, int nesterov);
/* One PyTorch Adam step in place, textbook form with m̂ and v̂. */
void ref_adam_step(size_t n, double *param, const double *grad, double *m, double *v, double lr,
                   double beta1, double beta2, double eps, double wd, int64_t step);
void ref_clip(size_t n, double *param, double lo, double hi);
/* alpha Σ_{j<J-1} h[j] Σ_p |c[j+1][p] - c[j][p]|; c: [J][p]. */
double ref_timereg(int J, size_t p, const double *c, const double *h, double alpha);
/* dc += a subgradient of ref_timereg with sign(0) = 0. */
void ref_timereg_backward(int J, size_t p, const double *c, const double *h, double alpha,
                          double *dc);

/* ---- layer (ref_layer.c) ---- */
struct dynb__layer;
/* f(x, θ) of a layer function exactly as SPEC §1.2 writes it (doublesym
 * with its minus sign), composed of the references above. x: [n][C][h][w];
 * theta: P values, read at the offsets dynb__layer_params gives; f:
 * [n][C][h][w], overwritten. Batch norms: train != 0 uses batch statistics
 * and, unless running is NULL, updates it (momentum 0.1, unbiased
 * variance); train == 0 reads running. running: [norms][2: mean, var][C].
 * margin (may be NULL) receives the smallest |input| of any activation, so
 * that finite differences can keep away from relu's kink. */
void ref_layer_f(const struct dynb__layer *l, int n, int h, int w, const double *theta,
                 const double *x, int train, double *running, double *f, double *margin);

/* ---- block (ref_block.c) ---- */
/* out = a block's output for x ([n][C][h][w]): nstates - 1 steps over
 * t_states of the explicit tableau (s stages; c [s], a [s][s] row-major,
 * b [s]), θ(t) interpolated from controls [ncontrols][P] at t_controls
 * (held constant outside), f = ref_layer_f. running: [steps][s][norms][2][C]
 * (each evaluation's statistics, as ref_layer_f uses them) or NULL. */
void ref_block_forward(const struct dynb__layer *l, int n, int h, int w, int s, const double *c,
                       const double *a, const double *b, int nstates, const double *t_states,
                       int ncontrols, const double *t_controls, const double *controls,
                       const double *x, int train, double *running, double *out);
/* The leapfrog block of SPEC §1.4 over the same inputs (one evaluation per
 * step, at tY[k]; running: [steps][norms][2][C] or NULL). */
void ref_leapfrog_forward(const struct dynb__layer *l, int n, int h, int w, int nstates,
                          const double *t_states, int ncontrols, const double *t_controls,
                          const double *controls, const double *x, int train, double *running,
                          double *out);

/* ---- adaptive steps (ref_adaptive.c) ---- */
struct dynb__tableau;
/* f = dy/dt at (t, y), m elements. */
typedef void (*ref_rhs_fn)(void *user, double t, const double *y, double *f);
typedef struct ref_adaptive_stats {
  int accepted, rejected, nfe;
  double *steps; /* if not NULL (room for max_steps + 1): the accepted step ends, from t0 */
} ref_adaptive_stats;
/* Solves y' = f from stops[0] to stops[nstops-1] with the embedded pair tab
 * (tab->embedded), ending a step on every stop, controlled as in
 * controller.c (Hairer's first step: 2 evaluations; then s per attempted
 * step, no FSAL reuse). Returns 0 (DYNB_OK) or the controller's
 * dynb_status, with its message in err. */
int ref_adaptive_solve(const struct dynb__tableau *tab, ref_rhs_fn f, void *user, size_t m,
                       const double *y0, int nstops, const double *stops, double rtol,
                       double atol, int max_steps, double *y_out, ref_adaptive_stats *st,
                       char *err, size_t errlen);
/* An adaptive block (SPEC §1.5) in training-mode layer evaluations: stops
 * are t_states and interior control times (dynb__ctrl_stops). */
int ref_block_adaptive_forward(const struct dynb__layer *l, int n, int h, int w,
                               const struct dynb__tableau *tab, int nstates,
                               const double *t_states, int ncontrols, const double *t_controls,
                               const double *controls, double rtol, double atol, int max_steps,
                               const double *x, double *out, ref_adaptive_stats *st, char *err,
                               size_t errlen);

/* ---- peak (ref_peak.c) ---- */
/* out[i] of kernels/peak.cl: `chains` chains of `width` lanes, lane l of
 * chain j starting at 0.5 + ((i + j) & 15) / 32 + l / 512, each taken
 * `iters` times through x ← fma(x, m, a), all summed. */
double ref_peak_fma(int i, int width, int chains, int iters, double m, double a);

#endif
