/* Integrators of a dynamic block (private to src/model).
 *
 * A block (block.c) owns what every scheme shares: the layer, the grids,
 * the control parameters and their gradients, the running statistics of
 * each (step, evaluation), the batch shape and the two arenas. How the
 * states advance, what a step keeps for the backward pass, and how that
 * pass runs belong to the block's integrator: one vtable per kind of scheme
 * (explicit Runge–Kutta tableaux in integrator_rk.c; reversible two-step
 * and two-state schemes; embedded pairs with error control and a continuous
 * adjoint can implement the same calls). block.c validates arguments and
 * dispatches; it never switches over schemes.
 *
 * Life of a block and the calls it makes, in order:
 *   create:   check(layer, tableau)      the scheme accepts this layer?
 *             impl_size bytes zeroed     the integrator's private state
 *   prepare:  shape(b)                   per-shape sizes (b->nchw etc. set)
 *             carve(b, keep, scratch)    lay buffers out (sizing or real)
 *             upload(b)                  device constants (coefficients)
 *   forward / backward                   the passes
 *   reconstruction_error (optional)      after a reconstructing backward
 * Every size is fixed by prepare (an adaptive scheme sizes for its
 * max_steps), so a plan can size its arenas before it runs. */
#ifndef DYNB_MODEL_INTEGRATOR_H
#define DYNB_MODEL_INTEGRATOR_H

#include "model/model.h"

typedef struct dynb__integrator dynb__integrator;

/* The block, shared by block.c and the integrators. Fields above `impl`
 * are set by block.c; integrators read them and keep their own state in
 * impl. */
struct dynb__block {
  dynb_ctx *ctx;
  dynb__layer layer;
  dynb__tableau tab;
  const dynb__integrator *integ;
  dynb_dtype real;
  int nsteps, ncontrols;
  double *t_states, *t_controls;
  size_t P;
  dynb__tensor controls, grads, running; /* running.mem NULL without batch norm */
  /* Prepared shape. */
  bool prepared;
  bool train_last;   /* the mode of the last forward, which backward repeats */
  bool forward_done; /* a forward completed since prepare: backward has its caches */
  dynb_memory_mode mode; /* as asked; an integrator may keep less or more */
  int64_t dims[4];
  size_t nchw, cache_elems, work_elems, bytes;
  dynb__arena own_keep, own_scratch;
  dynb__tensor work; /* scratch: the layer's (carved by block.c, after the integrator) */
  void *impl;        /* the integrator's state: integ->impl_size bytes, zeroed at create */
};

struct dynb__integrator {
  const char *name;
  size_t impl_size;
  /* Whether the scheme takes this layer; a reason in err (naming the
   * layer and the scheme) and DYNB_STATUS_SPEC_ERROR when not. */
  dynb_status (*check)(const dynb__layer *l, const dynb__tableau *t, char *err, size_t errlen);
  /* Sizes that depend on the shape and mode (b->dims, nchw, cache_elems,
   * mode are set). */
  void (*shape)(dynb__block *b);
  /* Lays out its views: `keep` lives from a forward to its backward,
   * `scratch` within one call. Must not depend on the arenas' contents. */
  void (*carve)(dynb__block *b, dynb__arena_cursor *keep, dynb__arena_cursor *scratch);
  /* After carve into allocated arenas: writes device constants. */
  dynb_status (*upload)(dynb__block *b);
  /* out = the block's output for x (checked by block.c: shapes, aliasing). */
  dynb_status (*forward)(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                         bool train);
  /* dx = ∂L/∂x from dout; ∂L/∂controls added to b->grads. */
  dynb_status (*backward)(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                          const dynb__tensor *dx);
  /* Layer evaluations of one forward, layer backward passes of one
   * backward, and forward evaluations that backward recomputes (FLOP
   * counts). */
  void (*evals)(const dynb__block *b, double *forward, double *backward, double *recomputed);
  /* Optional (NULL when the scheme rebuilds nothing): after a backward that
   * rebuilt the states, the largest |rebuilt Y_0 − x| over max |x|. */
  dynb_status (*reconstruction_error)(dynb__block *b, const dynb__tensor *x, double *err);
};

/* The integrator of a scheme (the tableau's kind). */
const dynb__integrator *dynb__integrator_for(const dynb__tableau *t);

extern const dynb__integrator dynb__integrator_rk;
extern const dynb__integrator dynb__integrator_leapfrog;
extern const dynb__integrator dynb__integrator_verlet;
extern const dynb__integrator dynb__integrator_adaptive; /* embedded pairs */

/* For the schemes other than verlet: refuses the hamiltonian layer, which
 * only verlet evaluates (in its two halves). */
dynb_status dynb__integrator_check_not_hamiltonian(const dynb__layer *l, const dynb__tableau *t,
                                                  char *err, size_t errlen);

/* For the reversible schemes: max |y0 − x| / max |x| (the plain difference
 * when x is 0) between the rebuilt first state y0 and the input x, on the
 * host: asked for once an epoch at most, so a device reduction would not pay
 * for its kernel. */
dynb_status dynb__integrator_rebuild_error(dynb__block *b, const dynb__tensor *y0,
                                           const dynb__tensor *x, double *err);

/* ---- helpers block.c gives every integrator ---------------------------------- */

/* View `index` of a buffer of NCHW states. */
dynb__tensor dynb__block_nchw_at(const dynb__block *b, const dynb__tensor *base, size_t index);
/* Running statistics of evaluation (step k, stage i); b->running (mem NULL)
 * without batch norm. */
dynb__tensor dynb__block_running_at(const dynb__block *b, int k, int i);
/* θ(t) into `out` (P elements), interpolated from the control points. */
dynb_status dynb__block_theta(dynb__block *b, double t, const dynb__tensor *out);
/* Adds dθ (P elements, the gradient at time t) to the control gradients. */
dynb_status dynb__block_theta_backward(dynb__block *b, double t, const dynb__tensor *dtheta);

#endif
