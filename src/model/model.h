/* Private header of src/model: Butcher tableaux, layer functions and
 * dynamic blocks. Nothing here knows about whole networks or files. */
#ifndef DYNB_MODEL_MODEL_H
#define DYNB_MODEL_MODEL_H

#include "ops/ops.h"

/* ---- Butcher tableaux (tableau.c) ----------------------------------------- */

/* Most stages an explicit tableau may have; generous for any practical
 * explicit method (the classic ones have at most 4; high-order ones 13). */
#define DYNB_MAX_STAGES 16

/* An explicit Runge–Kutta method: K_i = f(y + h Σ_{j<i} A[i][j] K_j,
 * t + c[i] h), y' = y + h Σ_i b[i] K_i. A is stored dense, row-major
 * s×s, strictly lower triangular. `order` is the classical order of the
 * built-ins (0 when unknown, for custom tableaux). */
/* The kind of integrator a scheme names (integrator.h picks the code):
 * explicit Runge–Kutta from (c, A, b); the reversible two-step leapfrog of
 * SPEC §1.4 (one evaluation per step at c = 0, kept as a one-stage tableau
 * so that running statistics and re-discretisation treat it like one). */
typedef enum dynb__scheme_kind {
  DYNB_SCHEME_RK = 0,
  DYNB_SCHEME_LEAPFROG = 1
} dynb__scheme_kind;

typedef struct dynb__tableau {
  char name[32];
  dynb__scheme_kind kind; /* zero (RK) for every tableau built from (c, A, b) */
  int stages;
  int order;
  double c[DYNB_MAX_STAGES];
  double a[DYNB_MAX_STAGES][DYNB_MAX_STAGES];
  double b[DYNB_MAX_STAGES];
  /* Embedded pairs (SPEC §1.5): b_err is the lower-order solution's weights
   * and `order` that of b; the error estimate of a step is
   * h Σ (b_i − b_err_i) K_i. Zero and false for fixed-step tableaux. */
  bool embedded;
  double b_err[DYNB_MAX_STAGES];
  /* Control settings of an embedded pair, carried with it to the block's
   * integrator (integrator_adaptive.c): the spec's rtol, atol, max_steps
   * (defaults 1e-3, 1e-4, 100 from dynb__tableau_embedded and
   * dynb__tableau_set_embedded). */
  double rtol, atol;
  int max_steps;
} dynb__tableau;

/* Built-in names, in one list: euler (alias rk1), midpoint, heun, rk3
 * (Kutta's third order), ssprk3, rk4 (classic), rk38 (3/8 rule). */
#define DYNB_TABLEAU_NAMES "euler, rk1, midpoint, heun, rk3, ssprk3, rk4, rk38, leapfrog" DYNB_TABLEAU_EMBEDDED_NAMES
/* The embedded pairs (tableau_embedded.c): dopri5 (Dormand–Prince 5(4)),
 * bosh3 (Bogacki–Shampine 3(2)), heun_euler (2(1)). */
#define DYNB_TABLEAU_EMBEDDED_NAMES ", dopri5, bosh3, heun_euler"

/* Fills `out` with the built-in tableau `name`; false when unknown. */
bool dynb__tableau_builtin(const char *name, dynb__tableau *out);
/* Builds and validates a custom tableau: s = len_c stages, A given as s rows
 * of s entries (row-major), b of len_b entries. Checks: 1 <= s <=
 * DYNB_MAX_STAGES, len_b == s, A square (rows == cols == s) and strictly
 * lower triangular, every value finite. On failure writes a reason that
 * names the offending entry (e.g. "A[1][2] = 0.5 is above the diagonal") to
 * err and returns DYNB_STATUS_SPEC_ERROR. */
dynb_status dynb__tableau_custom(const double *c, int len_c, const double *a, int a_rows,
                                 int a_cols, const double *b, int len_b, dynb__tableau *out,
                                 char *err, size_t errlen);
/* Fills `out` with the embedded pair `name` (one of
 * DYNB_TABLEAU_EMBEDDED_NAMES); false when unknown. dynb__tableau_builtin
 * falls back to it, so callers need not. */
bool dynb__tableau_embedded(const char *name, dynb__tableau *out);
/* Makes a (custom) tableau embedded: b_err of len == stages finite entries,
 * not all equal to b, and `order` (1..DYNB_MAX_STAGES), the order of b's
 * solution that the step-size controller's exponent needs. Reason in err
 * and DYNB_STATUS_SPEC_ERROR on failure, t unchanged. */
dynb_status dynb__tableau_set_embedded(dynb__tableau *t, const double *b_err, int len, int order,
                                       char *err, size_t errlen);


/* ---- Layer functions (layer.c) -------------------------------------------- */

#define DYNB_LAYER_MAP(X)            \
  X(DOUBLESYM, 0, "doublesym")       \
  X(DOUBLE, 1, "double")             \
  X(PREACT, 2, "preact")
typedef enum dynb_layer_kind {
#define DYNB__LAYER_ENUM(name, value, str) DYNB_LAYER_##name = value,
  DYNB_LAYER_MAP(DYNB__LAYER_ENUM)
#undef DYNB__LAYER_ENUM
} dynb_layer_kind;

#define DYNB_NORM_MAP(X)  \
  X(NONE, 0, "none")      \
  X(TV, 1, "tv")          \
  X(BATCH, 2, "batch")
typedef enum dynb_norm_kind {
#define DYNB__NORM_ENUM(name, value, str) DYNB_NORM_##name = value,
  DYNB_NORM_MAP(DYNB__NORM_ENUM)
#undef DYNB__NORM_ENUM
} dynb_norm_kind;

const char *dynb__layer_name(dynb_layer_kind k);
bool dynb__layer_parse(const char *name, dynb_layer_kind *out);
const char *dynb__norm_name(dynb_norm_kind k);
bool dynb__norm_parse(const char *name, dynb_norm_kind *out);

/* A layer function f(y, θ) on C channels with a k×k convolution (SPEC §1.2). */
typedef struct dynb__layer {
  dynb_layer_kind kind;
  dynb_norm_kind norm;
  dynb_act act;
  int channels;
  int kernel;
} dynb__layer;

/* One trainable tensor of a layer's parameter block θ (one control point):
 * its SPEC name relative to the control point ("conv.weight", "norm1.bias"),
 * its place in θ and whether it is a norm parameter (no weight decay). */
#define DYNB_LAYER_MAX_PARAMS 8
typedef struct dynb__param_entry {
  char name[24];
  size_t offset;
  int ndim;
  int64_t dims[4];
  bool is_norm;
} dynb__param_entry;

/* Checks a layer description; writes a reason to err on failure. */
dynb_status dynb__layer_validate(const dynb__layer *l, char *err, size_t errlen);
/* Lists θ's tensors (at most DYNB_LAYER_MAX_PARAMS) in storage order and the
 * total element count P. Returns the number of entries. */
int dynb__layer_params(const dynb__layer *l, dynb__param_entry *out, size_t *total);
/* Number of batch norms in the layer (0, 1 or 2): running statistics per
 * evaluation are [norms][2: mean, var][C]. */
int dynb__layer_batch_norms(const dynb__layer *l);
/* Sign s with f = s · g, where g is what dynb__layer_forward computes:
 * doublesym's f = -(Kᵀσ(N(Ky+b₁)) + b₂) is returned as g = Kᵀ… + b₂ with
 * s = -1, so that the minus folds into the Runge–Kutta coefficients instead
 * of costing a pass over memory. */
double dynb__layer_sign(const dynb__layer *l);

/* Elements of the per-evaluation cache (the intermediates the backward pass
 * needs) and of the scratch space, for a batch of [n, C, h, w]:
 * dynb__layer_work_size is enough whatever routes the convolutions take;
 * dynb__layer_prepare chooses their routes now and sets *work to what
 * those take (the size a plan allocates). */
size_t dynb__layer_cache_size(const dynb__layer *l, int64_t n, int64_t h, int64_t w);
size_t dynb__layer_work_size(const dynb__layer *l, int64_t n, int64_t h, int64_t w);
/* Floating-point operations of the convolutions of one evaluation f(y, θ)
 * on n inputs of h×w: 2 per multiply-add, padded positions included (the
 * usual convention: 2·N·C_out·C_in·k²·H·W per convolution). Every layer
 * function convolves twice (doublesym with K, then Kᵀ), so its backward
 * pass costs twice this: data and weight gradients of each. */
double dynb__layer_conv_flops(const dynb__layer *l, int64_t n, int64_t h, int64_t w);
dynb_status dynb__layer_prepare(dynb_ctx *ctx, const dynb__layer *l, dynb_dtype dt, int64_t n,
                                int64_t h, int64_t w, size_t *work);

/* What one evaluation of a layer touches. */
typedef struct dynb__layer_eval {
  const dynb__tensor *theta;   /* θ: P elements */
  const dynb__tensor *x;       /* input [N, C, H, W] */
  const dynb__tensor *cache;   /* dynb__layer_cache_size elements */
  const dynb__tensor *running; /* running statistics (batch norm), or NULL */
  bool train;                  /* batch statistics (and update running if given) */
} dynb__layer_eval;

/* out = g(x, θ) (see dynb__layer_sign); fills the cache. In evaluation mode
 * batch norms use `running`, which is then required. */
dynb_status dynb__layer_forward(dynb_ctx *ctx, const dynb__layer *l, const dynb__layer_eval *e,
                                const dynb__tensor *out, const dynb__tensor *work);
/* From dout = ∂L/∂g: dx (+)= ∂L/∂x and dtheta += ∂L/∂θ, using the cache of
 * the forward evaluation with the same e. */
dynb_status dynb__layer_backward(dynb_ctx *ctx, const dynb__layer *l, const dynb__layer_eval *e,
                                 const dynb__tensor *dout, const dynb__tensor *dx, bool acc_dx,
                                 const dynb__tensor *dtheta, const dynb__tensor *work);

/* ---- Dynamic blocks (block.c) ----------------------------------------------- */

/* What a block keeps for its backward pass: every stage's layer input and
 * intermediates (store), or only each step's input, recomputing the stages
 * of one step at a time during backward (checkpoint). Same gradients.
 * (dynb_memory_mode is public: dynblocks/plan.h.) */

/* Most points on a time grid (a compiled cap, checked before allocating). */
#define DYNB_MAX_TIME_POINTS 4096

typedef struct dynb__block_desc {
  dynb__layer layer;
  dynb__tableau tableau;
  int nstates;                /* points of tY, >= 2 */
  const double *t_states;     /* strictly increasing; borrowed */
  int ncontrols;              /* points of tTheta, >= 1 */
  const double *t_controls;   /* strictly increasing; borrowed */
} dynb__block_desc;

/* A dynamic block: dy/dt = f(y, θ(t)) over tY with an explicit Runge–Kutta
 * method, θ linear in time between the control points tTheta. It owns its
 * control parameters [J, P], their gradients, the running statistics of
 * every (step, stage) evaluation, and the buffers of one batch shape. */
typedef struct dynb__block dynb__block;

/* Validates desc (reason in err, DYNB_STATUS_SPEC_ERROR) and creates a block
 * over `real` with parameters zero and running statistics (0, 1). */
dynb_status dynb__block_create(dynb_ctx *ctx, const dynb__block_desc *desc, dynb_dtype real,
                               dynb__block **out, char *err, size_t errlen);
void dynb__block_free(dynb__block *b);

/* Sizes the two arenas (dynb__arena, not yet allocated, of the block's
 * real type) a block prepared for inputs [n, C, h, w] and a memory mode
 * works in: `keep`, live from a forward to its backward (the states, and
 * the stage caches in store mode), and `scratch`, live only within one
 * forward or backward call (others may size it too: it holds the most any
 * of them needs). A state, stage cache or the like larger than the
 * device's largest allocation is recorded in the arena, whose allocation
 * then fails naming it. Chooses the routes of the layer's convolutions;
 * leaves the block unprepared. */
dynb_status dynb__block_sizes(dynb__block *b, int64_t n, int64_t h, int64_t w,
                              dynb_memory_mode mode, dynb__arena *keep, dynb__arena *scratch);
/* Lays the block out for inputs [n, C, h, w] and a memory mode, in the
 * caller's arenas (sized as above, then allocated; nothing else may use
 * `keep`, and `scratch` only between block calls; borrowed for as long as
 * the block stays prepared) or, with both NULL, in two it allocates; frees
 * the previous ones. Must precede forward/backward. */
dynb_status dynb__block_prepare(dynb__block *b, int64_t n, int64_t h, int64_t w,
                                dynb_memory_mode mode, dynb__arena *keep,
                                dynb__arena *scratch);
/* Device bytes the block allocated for the prepared shape (its own arenas;
 * 0 when lent); not counting parameters. */
size_t dynb__block_buffer_bytes(const dynb__block *b);
/* Convolution FLOPs (dynb__layer_conv_flops' convention) of one forward and
 * of one backward of the prepared shape and mode: every layer evaluation
 * (steps × stages) forward; backward, their data and weight gradients and,
 * in checkpoint mode, the forward evaluations recomputed. */
void dynb__block_conv_flops(const dynb__block *b, double *forward, double *backward);

/* out = the block's output for x (both [n, C, h, w] as prepared; out must
 * not alias x). In training mode batch norms use batch statistics and update
 * the running statistics. */
dynb_status dynb__block_forward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                                bool train);
/* After a forward of the same x and mode: dx = ∂L/∂x from dout = ∂L/∂out,
 * and ∂L/∂controls added to the gradient buffer. dx may not alias x. */
dynb_status dynb__block_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                                 const dynb__tensor *dx);

/* After a backward in reconstruct mode: the largest |rebuilt Y_0 − x| over
 * max |x| (0 where nothing was rebuilt: other schemes or modes, one step). */
dynb_status dynb__block_reconstruction_error(dynb__block *b, const dynb__tensor *x, double *err);

/* Device tensors of the block: controls and gradients [J, P]; running
 * statistics [K, s, norms, 2, C] (NULL view mem when the layer has no batch
 * norm). Borrowed; valid until rediscretise or free. */
const dynb__tensor *dynb__block_controls(const dynb__block *b);
const dynb__tensor *dynb__block_grads(const dynb__block *b);
const dynb__tensor *dynb__block_running(const dynb__block *b);
size_t dynb__block_param_count(const dynb__block *b); /* P, per control point */

/* New grids: each new control point takes θ(t) of the old ones (linear, held
 * constant outside), each new evaluation (step k, stage i) the running
 * statistics of the old evaluation nearest in time. Gradients are zeroed;
 * buffers must be prepared again. */
dynb_status dynb__block_rediscretise(dynb__block *b, int nstates, const double *t_states,
                                     int ncontrols, const double *t_controls, char *err,
                                     size_t errlen);

/* How a block's backward pass is computed (SPEC §1.5): the exact gradient
 * of the steps that ran (discretise-then-optimise), or the continuous
 * adjoint solved backward (optimise-then-discretise). */
typedef enum dynb__gradient_mode {
  DYNB_GRADIENT_DISCRETE = 0,
  DYNB_GRADIENT_ADJOINT = 1,
} dynb__gradient_mode;

/* ---- Network spec (spec.c) ---------------------------------------------------- */

/* Compiled caps, checked before allocating (SQLite-style hard limits). */
#define DYNB_MAX_BLOCKS 16
#define DYNB_MAX_WIDTH 4096
#define DYNB_MAX_CLASSES 100000
#define DYNB_MAX_INPUT_SIDE 8192

/* One dynamic block of a network, followed by its connecting layer. */
typedef struct dynb__block_spec {
  int width;               /* channels inside the block */
  dynb__layer layer;       /* layer.channels == width */
  dynb__tableau tableau;
  int nstates, ncontrols;
  double t_states[DYNB_MAX_TIME_POINTS];
  double t_controls[DYNB_MAX_TIME_POINTS];
  /* Adaptive steps (SPEC §1.5): tolerances and step cap, read only for an
   * embedded scheme (rtol 1e-3, atol 1e-4, max_steps 100 by default, zero
   * otherwise), and the gradient mode of any block. */
  double rtol, atol;
  int max_steps;
  dynb__gradient_mode gradient;
} dynb__block_spec;

/* A whole network as the JSON spec of SPEC §3 describes it. Every field is
 * filled (defaults applied) by dynb__spec_parse. */
typedef struct dynb__net_spec {
  int in_channels, in_height, in_width;
  int classes;
  int open_width, open_kernel;
  dynb_norm_kind open_norm;  /* default batch */
  dynb_act open_act;         /* default relu */
  int nblocks;
  dynb__block_spec blocks[DYNB_MAX_BLOCKS];
  dynb_norm_kind connect_norm; /* default batch */
  dynb_act connect_act;        /* default relu */
  int head_width;              /* default: the last block's width */
  double time_reg;             /* α of the time regularisation, default 0 */
  bool clip;                   /* box constraint on weights after each step */
  double clip_min, clip_max;
} dynb__net_spec;

/* Parses a JSON spec (text of `len` bytes; need not be NUL-terminated) into
 * *out (caller-allocated; it is large). `source` names the text in
 * messages (a file name, or "<string>"). Every unknown key, wrong type or
 * bad value is an error naming the key path, e.g.
 * "spec.json: blocks[1].t_states[2]: must be greater than t_states[1] (2)".
 * @return DYNB_OK or DYNB_STATUS_SPEC_ERROR (message in err). */
dynb_status dynb__spec_parse(const char *text, size_t len, const char *source,
                             dynb__net_spec *out, char *err, size_t errlen);
/* Writes the spec back as canonical JSON (every key, defaults explicit) into
 * a malloc'd NUL-terminated string the caller frees; parsing it gives the
 * same spec. NULL when out of memory. */
char *dynb__spec_to_json(const dynb__net_spec *spec);

/* ---- Network (net.c) ------------------------------------------------------------ */

/* A network's parameters and state: the spec, every trainable tensor and
 * its gradient, and the running statistics. Views into blocks' control
 * buffers are listed under their SPEC §3 names. */
typedef struct dynb__net dynb__net;

/* One named tensor of the network. Trainable ones have a gradient of the
 * same shape; running statistics are state without gradient. */
typedef struct dynb__net_tensor {
  char name[96];
  dynb__tensor value, grad; /* grad.mem NULL for running statistics */
  bool trainable;
  bool is_norm; /* norm parameters skip weight decay */
} dynb__net_tensor;

/* Layers outside blocks. A norm of kind none has no tensors. */
typedef struct dynb__conv_unit {
  dynb__tensor w, b, dw, db;            /* convolution */
  dynb_norm_kind norm;
  dynb__tensor nw, nb, dnw, dnb;        /* norm affine terms (nw: batch only) */
  dynb__tensor rmean, rvar;             /* batch norm running statistics */
  int cin, cout, kernel;
  dynb_act act;
} dynb__conv_unit;

struct dynb__net {
  dynb_ctx *ctx;
  dynb__net_spec spec;
  dynb_dtype real;
  dynb__conv_unit open;
  dynb__block *blocks[DYNB_MAX_BLOCKS];
  dynb__conv_unit connect[DYNB_MAX_BLOCKS];
  dynb__tensor lin_w, lin_b, lin_dw, lin_db;
  size_t ntensors;
  dynb__net_tensor *tensors; /* every named tensor, in a fixed order */
};

dynb_status dynb__net_create(dynb_ctx *ctx, const dynb__net_spec *spec, dynb_dtype real,
                             dynb__net **out);
void dynb__net_free(dynb__net *net);
/* SPEC §1.3 initialisation: convolution and linear weights from
 * N(0, 2/(fan_in + fan_out)) clamped to ±2σ, biases zero, norm scales one,
 * running statistics (0, 1). The same seed gives the same network. */
dynb_status dynb__net_init(dynb__net *net, uint64_t seed);
/* Looks a tensor up by its SPEC name; NULL when absent. */
const dynb__net_tensor *dynb__net_find(const dynb__net *net, const char *name);
/* Zeroes every gradient. */
dynb_status dynb__net_zero_grads(dynb__net *net);
/* Batch-norm folding for inference: every batch norm that follows the
 * opening or a connecting convolution is folded into that convolution's
 * weights and bias (w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β, with
 * the running statistics), and the norm becomes `none` in the spec, so the
 * network computes the same evaluation-mode function with fewer passes.
 * Batch norms inside blocks stay: their affine terms are interpolated in
 * time and their statistics belong to each (step, stage), so no single
 * convolution owns them. */
dynb_status dynb__net_fold_batch_norms(dynb__net *net);
/* Re-discretisation (SPEC §1.1) of block bi: new grids (validated as a
 * spec's; the reason in err and on the context), new control points θ(t)
 * of the old ones, running statistics from the nearest old evaluation
 * (dynb__block_rediscretise). The spec and the tensor list follow; views
 * taken before (plans, optimisers, health checks) are invalid after. */
dynb_status dynb__net_regrid(dynb__net *net, int bi, int nstates, const double *t_states,
                             int ncontrols, const double *t_controls, char *err, size_t errlen);
/* Every block's every interval of t_states and t_controls cut into
 * `factor` equal parts (factor >= 1; the old points stay, exactly). Sizes
 * are checked for all blocks before any changes. */
dynb_status dynb__net_refine(dynb__net *net, int factor, char *err, size_t errlen);
/* out = t[0..n) with each interval cut into `factor` equal parts; returns
 * the count, (n - 1) * factor + 1. */
int dynb__grid_refine(const double *t, int n, int factor, double *out);

/* ---- Normalisation dispatch (norm.c) ------------------------------------------- */

/* One norm application a = N(z) and its parameters, whatever its kind:
 * none (a is z, nothing runs), tv (bias only) or batch (weight and bias;
 * batch statistics saved for backward, running statistics used in
 * evaluation and updated in training unless NULL). */
typedef struct dynb__norm_args {
  dynb_norm_kind kind;
  const dynb__tensor *weight, *bias;
  const dynb__tensor *save_mean, *save_invstd;
  const dynb__tensor *running_mean, *running_var;
  bool train;
  dynb_act act; /* applied to the output by dynb__norm_forward (0: identity) */
} dynb__norm_args;

dynb_status dynb__norm_forward(dynb_ctx *ctx, const dynb__norm_args *n, const dynb__tensor *z,
                               const dynb__tensor *a);
/* Whether a unit computing a = N(z), s = σ(a) keeps a in a buffer of its
 * own for σ's backward: not without a norm (a is z), nor where σ's slope
 * reads as well from s (relu, leaky relu, identity), where a is s itself. */
bool dynb__norm_output_kept(dynb_norm_kind norm, dynb_act act);
/* a = N(z), then s = σ(a): in one pass when a is s itself (the caller keeps
 * no a: σ's slope reads from its output) and there is a norm, else two. */
dynb_status dynb__norm_act_forward(dynb_ctx *ctx, dynb__norm_args n, dynb_act act,
                                   const dynb__tensor *z, const dynb__tensor *a,
                                   const dynb__tensor *s);
/* dz = N'(z)ᵀ da; dweight, dbias accumulate. With kind none nothing runs
 * and the gradient is da itself: *dz_out tells which view holds dz. */
dynb_status dynb__norm_backward(dynb_ctx *ctx, const dynb__norm_args *n, const dynb__tensor *z,
                                const dynb__tensor *da, const dynb__tensor *dz,
                                const dynb__tensor *dweight, const dynb__tensor *dbias,
                                const dynb__tensor **dz_out);

/* ---- Step-size controller of adaptive blocks (controller.c) ------------------- */

/* The controller of SPEC §1.5 as pure host functions (formulas, and where
 * they follow torchdiffeq, at the top of controller.c). The error of a step
 * is reduced to Σ (err/tol)² and an element count, so that partial sums
 * from several devices or replicas add up before dynb__ctrl_ratio. */
double dynb__ctrl_sumsq(size_t n, const double *err, const double *y0, const double *y1,
                        double rtol, double atol);
/* r = sqrt(sumsq / count); 0 for count 0. */
double dynb__ctrl_ratio(double sumsq, double count);
/* min(10, max(0.2, 0.9·r^(−1/order))), at least 1 when accepted; 10 for r = 0. */
double dynb__ctrl_factor(double r, int order, bool accepted);
/* Hairer's first step in two parts: with d0 = rms(y0/scale) and d1 =
 * rms(f0/scale), scale = atol + rtol·|y0|, the trial h0; then, with d2 =
 * rms((f(t0 + h0, y0 + h0·f0) − f0)/scale)/h0, the first step (at most
 * 100·h0 and at most span, the length of the interval). */
double dynb__ctrl_first_guess(double d0, double d1);
double dynb__ctrl_first_step(double h0, double d1, double d2, int order, double span);
/* The times where a step must end: t_states and every control time strictly
 * inside (t_states[0], t_states[end]), merged, ascending, without repeats,
 * written to out (room for nstates + ncontrols); returns their count. */
int dynb__ctrl_stops(int nstates, const double *t_states, int ncontrols,
                     const double *t_controls, double *out);

/* One adaptive solve's stepping state: propose a step, evaluate it, judge
 * it, until done. Counts attempts (accepted + rejected), which max_steps
 * bounds. */
typedef struct dynb__ctrl {
  const double *stops; /* borrowed */
  int nstops, next;    /* next: index of the stop the current step heads for */
  int order, max_steps;
  double t, h;         /* current time; proposed size of the next step */
  double h_try;        /* the step being tried */
  bool clipped;        /* h_try was cut to end on stops[next] */
  int attempts, accepted, rejected;
} dynb__ctrl;

void dynb__ctrl_start(dynb__ctrl *c, const double *stops, int nstops, int order, int max_steps,
                      double h);
bool dynb__ctrl_done(const dynb__ctrl *c);
/* The next step to try, (t, h), cut to end on the next stop. Fails with
 * DYNB_STATUS_PARAM_OUT_OF_BOUND once max_steps attempts are spent (the
 * message gives t and the counts; the caller names the block) and with
 * DYNB_STATUS_NON_FINITE when the step underflows. */
dynb_status dynb__ctrl_propose(dynb__ctrl *c, double *t, double *h, char *err, size_t errlen);
/* Judges the step just tried by its error ratio r: accepts (advancing t,
 * exactly onto the stop when cut to one) if r <= 1, and sizes the next.
 * A NaN or infinite r fails with DYNB_STATUS_NON_FINITE. */
dynb_status dynb__ctrl_judge(dynb__ctrl *c, double r, bool *accepted, char *err, size_t errlen);

#endif
