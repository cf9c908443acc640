/* Private header of src/ops: the op library. Each op checks its arguments
 * (NULL buffers, dtypes, shapes, views inside their buffers) and returns a
 * status before it enqueues anything; nothing is waited for.
 *
 * Conventions:
 * - Tensors are NCHW views (dynb__tensor); every real tensor of one call has
 *   the same dtype (F32 or F64), which selects the kernel build.
 * - `acc` on a gradient output: false writes it, true adds to it. Parameter
 *   gradients usually accumulate (several uses of one parameter), input
 *   gradients usually do not.
 * - Outputs may alias inputs only where a function says so.
 * - Scratch memory is passed in as `work`; the *_workspace functions give
 *   its size in elements, so that a plan can size its arena up front. */
#ifndef DYNB_OPS_OPS_H
#define DYNB_OPS_OPS_H

#include "runtime/runtime.h"

/* ---- Activations (act.c, kernels/act.cl) -------------------------------- */

/* Activation kinds with their spec names, in one list. */
#define DYNB_ACT_MAP(X)           \
  X(IDENTITY, 0, "identity")      \
  X(RELU, 1, "relu")              \
  X(TANH, 2, "tanh")              \
  X(LEAKY_RELU, 3, "leaky_relu")

typedef enum dynb_act {
#define DYNB__ACT_ENUM(name, value, str) DYNB_ACT_##name = value,
  DYNB_ACT_MAP(DYNB__ACT_ENUM)
#undef DYNB__ACT_ENUM
} dynb_act;
/* Slope of leaky_relu for negative inputs, as in PyTorch's default. */
#define DYNB_LEAKY_SLOPE 0.01

/* y = σ(x); y may alias x. */
dynb_status dynb__act_forward(dynb_ctx *ctx, dynb_act act, const dynb__tensor *x,
                              const dynb__tensor *y);
/* Whether σ'(x) equals σ'(σ(x)), so that dynb__act_backward may be given the
 * output instead of the input (and the input need not be kept): true for
 * the identity, relu and leaky relu, whose slope depends on the sign alone,
 * which they keep. Not tanh. */
bool dynb__act_slope_from_output(dynb_act act);
/* dx (+)= dy ⊙ σ'(x), from the activation's input x. dx may alias dy when !acc.
 * At x == 0, relu' is 0 and leaky_relu' is the slope, as PyTorch's
 * threshold_backward and leaky_relu_backward give. */
dynb_status dynb__act_backward(dynb_ctx *ctx, dynb_act act, const dynb__tensor *x,
                               const dynb__tensor *dy, const dynb__tensor *dx, bool acc);
const char *dynb__act_name(dynb_act act);
/* Parses a spec name; false when unknown. */
bool dynb__act_parse(const char *name, dynb_act *out);

/* ---- Per-channel helpers (channel.c, kernels/channel.cl) ----------------- */

/* y[n][c][s] += b[c] over a tensor of shape [N, C, ...] (rank >= 2). */
dynb_status dynb__bias_add(dynb_ctx *ctx, const dynb__tensor *y, const dynb__tensor *b);
/* out[c] (+)= Σ_{n,s} x[n][c][s] over [N, C, ...]: bias gradients and the
 * like. Deterministic: a fixed reduction tree per channel. */
dynb_status dynb__channel_sum(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *out,
                              bool acc);
/* out[0] (+)= Σ_i x[i] over all elements, deterministic. `work` holds at
 * least dynb__sum_workspace(n) elements of x's dtype. */
size_t dynb__sum_workspace(dynb_ctx *ctx, size_t n);
dynb_status dynb__sum(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *out, bool acc,
                      const dynb__tensor *work);

/* ---- Convolution (conv.c, kernels/conv.cl) ------------------------------ */

/* Square k×k kernel (k odd), stride 1, zero padding k/2: H and W are kept.
 * x: [N, Cin, H, W], w: [Cout, Cin, k, k], y: [N, Cout, H, W].
 * Routes: im2col + one CLBlast GEMM over the whole batch (any k), and
 * direct kernels (k = 1, 3). Each layer shape takes, per direction, the
 * route that ran faster when timed once (ctx->conv_policy can force one).
 * Every op takes a `work` tensor of at least what its route needs (else
 * DYNB_STATUS_BUFFER_TOO_SMALL); dynb__conv2d_workspace is enough for any
 * route, SIZE_MAX for impossible shapes. */
size_t dynb__conv2d_workspace(int64_t n, int64_t cin, int64_t cout, int64_t h, int64_t w,
                              int64_t k);
/* Chooses the routes of one layer shape now (timing them unless known), so
 * that no step pays for it, and sets *work (if not NULL) to the work they
 * need: the plan calls this for every convolution it will run, and sizes
 * its scratch by the chosen routes rather than by the worst one. */
dynb_status dynb__conv2d_prepare(dynb_ctx *ctx, dynb_dtype dt, int64_t n, int64_t cin,
                                 int64_t cout, int64_t h, int64_t w, int64_t k, size_t *work);
/* y = conv(x, w) + b; b may be NULL. */
dynb_status dynb__conv2d_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *w,
                                 const dynb__tensor *b, const dynb__tensor *y,
                                 const dynb__tensor *work);
/* dx (+)= convᵀ(dy, w): the gradient of conv with respect to its input. */
dynb_status dynb__conv2d_backward_data(dynb_ctx *ctx, const dynb__tensor *dy,
                                       const dynb__tensor *w, const dynb__tensor *dx, bool acc,
                                       const dynb__tensor *work);
/* dw (+)= gradient of conv with respect to w, given its input x and dy. */
dynb_status dynb__conv2d_backward_weights(dynb_ctx *ctx, const dynb__tensor *x,
                                          const dynb__tensor *dy, const dynb__tensor *dw,
                                          bool acc, const dynb__tensor *work);
/* Transposed convolution with the same weights (doublesym's Kᵀ):
 * z: [N, Cout, H, W] → y: [N, Cin, H, W], y = Kᵀ z + b (b: [Cin] or NULL). */
dynb_status dynb__conv2d_transpose_forward(dynb_ctx *ctx, const dynb__tensor *z,
                                           const dynb__tensor *w, const dynb__tensor *b,
                                           const dynb__tensor *y, const dynb__tensor *work);
/* dz (+)= K dy (a convolution without bias). */
dynb_status dynb__conv2d_transpose_backward_data(dynb_ctx *ctx, const dynb__tensor *dy,
                                                 const dynb__tensor *w, const dynb__tensor *dz,
                                                 bool acc, const dynb__tensor *work);
/* dw (+)= gradient of y = Kᵀ z with respect to w, given z and dy. */
dynb_status dynb__conv2d_transpose_backward_weights(dynb_ctx *ctx, const dynb__tensor *z,
                                                    const dynb__tensor *dy, const dynb__tensor *dw,
                                                    bool acc, const dynb__tensor *work);

/* ---- Normalisation (norm.c, kernels/norm.cl) ----------------------------- */

/* TV norm, per pixel across channels: y = x / sqrt(Σ_c x² + eps) + beta[c].
 * x, y: [N, C, H, W]; beta: [C]. Each forward norm applies `act` to its
 * output (DYNB_ACT_IDENTITY for none): σ fused, saving its pass. */
#define DYNB_TV_EPS 1e-4
dynb_status dynb__tv_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *beta,
                             const dynb__tensor *y, double eps, dynb_act act);
/* dx (+)= ∂/∂x, dbeta (+)= Σ_{n,h,w} dy (dbeta may be NULL). */
dynb_status dynb__tv_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                              const dynb__tensor *dx, const dynb__tensor *dbeta, double eps,
                              bool acc_dx, bool acc_params);

/* Batch norm over N, H, W per channel. x, y: [N, C, H, W]; all others [C]. */
#define DYNB_BN_EPS 1e-5
#define DYNB_BN_MOMENTUM 0.1
/* Training: batch statistics. Writes the batch mean and 1/sqrt(var + eps)
 * (biased variance) to save_mean and save_invstd for the backward pass; when
 * running_mean and running_var are not NULL, updates them as
 * r = (1 - momentum) r + momentum · stat, with the unbiased variance
 * (N·H·W must then exceed 1). */
dynb_status dynb__bn_train_forward(dynb_ctx *ctx, const dynb__tensor *x,
                                   const dynb__tensor *gamma, const dynb__tensor *beta,
                                   const dynb__tensor *y, const dynb__tensor *save_mean,
                                   const dynb__tensor *save_invstd,
                                   const dynb__tensor *running_mean,
                                   const dynb__tensor *running_var, double momentum, double eps,
                                   dynb_act act);
dynb_status dynb__bn_train_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                                    const dynb__tensor *gamma, const dynb__tensor *save_mean,
                                    const dynb__tensor *save_invstd, const dynb__tensor *dx,
                                    const dynb__tensor *dgamma, const dynb__tensor *dbeta,
                                    bool acc_dx, bool acc_params);
/* The two training ops on a context that is one replica of a data-parallel
 * group (ctx->link set; norm_sync.c): statistics, running-statistics update
 * and backward sums of the global batch, merged over the replicas; dgamma
 * and dbeta get this replica's share only (the group sums gradients). They
 * wait for the queue. dynb__bn_train_forward/backward call them after their
 * argument checks. */
dynb_status dynb__bn_sync_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *gamma,
                                  const dynb__tensor *beta, const dynb__tensor *y,
                                  const dynb__tensor *save_mean, const dynb__tensor *save_invstd,
                                  const dynb__tensor *running_mean,
                                  const dynb__tensor *running_var, double momentum, double eps,
                                  dynb_act act);
dynb_status dynb__bn_sync_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                                   const dynb__tensor *gamma, const dynb__tensor *save_mean,
                                   const dynb__tensor *save_invstd, const dynb__tensor *dx,
                                   const dynb__tensor *dgamma, const dynb__tensor *dbeta,
                                   bool acc_dx, bool acc_params);
/* Merges per-replica (mean[C], M2[C], count) blocks, laid out one after
 * another in `all`, in replica order (Chan et al.'s pairwise update): the
 * global mean, M2 = Σ(x - mean)² and count. */
void dynb__bn_merge_moments(int replicas, int c, const double *all, double *mean, double *m2,
                            double *count);
/* Evaluation: y = (x - running_mean) / sqrt(running_var + eps) · gamma + beta. */
dynb_status dynb__bn_eval_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *gamma,
                                  const dynb__tensor *beta, const dynb__tensor *running_mean,
                                  const dynb__tensor *running_var, const dynb__tensor *y,
                                  double eps, dynb_act act);
dynb_status dynb__bn_eval_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *dy,
                                   const dynb__tensor *gamma, const dynb__tensor *running_mean,
                                   const dynb__tensor *running_var, const dynb__tensor *dx,
                                   const dynb__tensor *dgamma, const dynb__tensor *dbeta,
                                   double eps, bool acc_dx, bool acc_params);

/* ---- Pooling (pool.c, kernels/pool.cl) ----------------------------------- */

/* 2×2 average pooling, stride 2: [N, C, H, W] → [N, C, H/2, W/2] (floored,
 * as PyTorch; an odd last row or column is dropped and gets zero gradient). */
dynb_status dynb__avgpool2_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *y);
dynb_status dynb__avgpool2_backward(dynb_ctx *ctx, const dynb__tensor *dy, const dynb__tensor *dx,
                                    bool acc);
/* Global average pooling: [N, C, H, W] → [N, C]. */
dynb_status dynb__global_avgpool_forward(dynb_ctx *ctx, const dynb__tensor *x,
                                         const dynb__tensor *y);
dynb_status dynb__global_avgpool_backward(dynb_ctx *ctx, const dynb__tensor *dy,
                                          const dynb__tensor *dx, bool acc);

/* ---- Fully connected layer and loss (linear.c, loss.c, kernels/loss.cl) -- */

/* y = x wᵀ + b; x: [N, I], w: [O, I], b: [O] or NULL, y: [N, O]. */
dynb_status dynb__linear_forward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *w,
                                 const dynb__tensor *b, const dynb__tensor *y);
/* dx (+)= dy w, dw (+)= dyᵀ x, db (+)= Σ_n dy; any of dx, dw, db may be NULL. */
dynb_status dynb__linear_backward(dynb_ctx *ctx, const dynb__tensor *x, const dynb__tensor *w,
                                  const dynb__tensor *dy, const dynb__tensor *dx,
                                  const dynb__tensor *dw, const dynb__tensor *db, bool acc_dx,
                                  bool acc_params);

/* Softmax cross-entropy, mean over the batch. logits: [N, K]; labels: [N]
 * (I32, each in 0..K-1; an out-of-range label makes the loss NaN); out: [2]
 * receives {mean loss, number of rows whose arg-max equals the label}
 * (ties go to the lowest index). */
size_t dynb__xent_workspace(int64_t n);
dynb_status dynb__xent_forward(dynb_ctx *ctx, const dynb__tensor *logits,
                               const dynb__tensor *labels, const dynb__tensor *out,
                               const dynb__tensor *work);
/* dlogits (+)= scale · (softmax(logits) - onehot(labels)) / N. */
dynb_status dynb__xent_backward(dynb_ctx *ctx, const dynb__tensor *logits,
                                const dynb__tensor *labels, double scale,
                                const dynb__tensor *dlogits, bool acc);

/* ---- Runge–Kutta stage combination (rk.c, kernels/rk.cl) ----------------- */

/* out = y + Σ_j coef[j] · stages[j] in one pass over memory.
 * y, out: any shape with P elements (out may alias y; y may be NULL for
 * out = Σ_j coef[j] · stages[j]); stages: a tensor whose
 * first dimension is S (the number of stages) and whose rest holds P
 * elements each; coef: [S] on the device (coefficients that are zero are
 * skipped, so one buffer can hold a whole tableau row including h). */
dynb_status dynb__rk_combine(dynb_ctx *ctx, const dynb__tensor *y, const dynb__tensor *stages,
                             const dynb__tensor *coef, const dynb__tensor *out);
/* The adjoint: dy (+)= dout and dstages[j] (+)= coef[j] · dout, one pass.
 * dy may be NULL. */
dynb_status dynb__rk_combine_backward(dynb_ctx *ctx, const dynb__tensor *dout,
                                      const dynb__tensor *coef, const dynb__tensor *dy,
                                      const dynb__tensor *dstages, bool acc_dy, bool acc_stages);

/* out = a·x + b·y + c·z, one pass (y, z may be NULL: their terms drop).
 * All of P elements; out may alias any of them. The states of the
 * two-step schemes live in separate buffers, hence not rk_combine. */
dynb_status dynb__lincomb(dynb_ctx *ctx, double a, const dynb__tensor *x, double b,
                          const dynb__tensor *y, double c, const dynb__tensor *z,
                          const dynb__tensor *out);

/* ---- Parameter interpolation (interp.c, kernels/param.cl) ---------------- */

/* Where time t falls on a control grid t_controls[0..J-1] (strictly
 * increasing): θ(t) = (1 - w) θ_j0 + w θ_{j0+1}. Outside the grid the
 * nearest end point is used (w = 0). With J == 1, j0 = 0 and w = 0. */
void dynb__interp_weights(const double *t_controls, int J, double t, int *j0, double *w);
/* out = (1 - w) controls[j0] + w controls[j0 + 1]; controls: [J, P]; out: P
 * elements. j0 + 1 < J unless w == 0. */
dynb_status dynb__interp_forward(dynb_ctx *ctx, const dynb__tensor *controls, int j0, double w,
                                 const dynb__tensor *out);
/* The adjoint, always accumulating: dcontrols[j0] += (1 - w) dout,
 * dcontrols[j0 + 1] += w dout. */
dynb_status dynb__interp_backward(dynb_ctx *ctx, const dynb__tensor *dout, int j0, double w,
                                  const dynb__tensor *dcontrols);

/* ---- Optimisers and constraints (optim.c, kernels/param.cl) -------------- */

/* SGD in PyTorch's form: g = grad + wd·θ; v = momentum·v + g;
 * θ -= lr · (nesterov ? g + momentum·v : v). With momentum 0, v is unused
 * (may be NULL). Pass wd = 0 for tensors that skip weight decay. */
typedef struct dynb__sgd_hyper {
  double lr, momentum, weight_decay;
  bool nesterov;
} dynb__sgd_hyper;
dynb_status dynb__sgd_step(dynb_ctx *ctx, const dynb__tensor *param, const dynb__tensor *grad,
                           const dynb__tensor *velocity, const dynb__sgd_hyper *h);
/* Adam in PyTorch's form (L2 weight decay added to the gradient), step >= 1
 * counts updates including this one for the bias corrections. */
typedef struct dynb__adam_hyper {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
} dynb__adam_hyper;
dynb_status dynb__adam_step(dynb_ctx *ctx, const dynb__tensor *param, const dynb__tensor *grad,
                            const dynb__tensor *m, const dynb__tensor *v,
                            const dynb__adam_hyper *h);
/* θ = min(max(θ, lo), hi). */
dynb_status dynb__clip(dynb_ctx *ctx, const dynb__tensor *param, double lo, double hi);

/* ---- Time regularisation (timereg.c, kernels/param.cl) ------------------- */

/* R = alpha Σ_{j<J-1} h[j] ‖θ_{j+1} - θ_j‖₁ over controls: [J, P], h: [J-1]
 * on the device. out[0] (+)= R; work holds dynb__timereg_workspace(P). */
size_t dynb__timereg_workspace(dynb_ctx *ctx, int64_t p);
dynb_status dynb__timereg_forward(dynb_ctx *ctx, const dynb__tensor *controls,
                                  const dynb__tensor *h, double alpha, const dynb__tensor *out,
                                  bool acc, const dynb__tensor *work);
/* dcontrols += a subgradient of R (sign(0) = 0). */
dynb_status dynb__timereg_backward(dynb_ctx *ctx, const dynb__tensor *controls,
                                   const dynb__tensor *h, double alpha,
                                   const dynb__tensor *dcontrols);


/* ---- Peak FMA rate (peak.c, kernels/peak.cl) ----------------------------- */

/* Independent FMA chains per work-item, and the vector widths the kernels
 * come in (kernels/peak.cl says what they compute). */
#define DYNB__PEAK_CHAINS 8
#define DYNB__PEAK_NWIDTHS 4
extern const int dynb__peak_widths[DYNB__PEAK_NWIDTHS];
/* out[i] for i < n: the sum over DYNB__PEAK_CHAINS chains of `width` lanes
 * of `iters` steps x ← fma(x, m, a) from the starts kernels/peak.cl gives;
 * 2 · n · iters · DYNB__PEAK_CHAINS · width floating-point operations.
 * width is 1, 4, 8 or 16; out holds at least n elements (f32 or f64). */
dynb_status dynb__peak_fma(dynb_ctx *ctx, const dynb__tensor *out, int width, int n, int iters,
                           double m, double a);
/* The measured peak: the best rate over the widths, in GFLOP/s. */
typedef struct dynb__peak {
  double gflops;
  int width;
} dynb__peak;
/* Times every width, each with a launch grown to about run_seconds, best of
 * three; waits for the device (about 5 · DYNB__PEAK_NWIDTHS · run_seconds
 * in all on a quiet device: the growing launches, then two more). */
dynb_status dynb__peak_measure(dynb_ctx *ctx, dynb_dtype dt, double run_seconds,
                               dynb__peak *out);

#endif
