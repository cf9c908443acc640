/* The leapfrog integrator (SPEC §1.4): Störmer–Verlet for Y'' = f(Y, θ(t))
 * with zero initial velocity, on any state grid, any layer function, with
 * the second-order start. With f = σ·g (σ the layer's sign) every step is
 *   Y_{k+1} = α_k Y_k + β_k Y_{k−1} + γ_k g(Y_k, θ(tY[k])),
 *   k = 0:  α = 1, β = 0, γ = ½ h_0² σ;
 *   k ≥ 1:  α = 1 + r, β = −r, γ = ½ h_k (h_k + h_{k−1}) σ,  r = h_k / h_{k−1}.
 * Its adjoint, from P = ∂L/∂Y_{k+1} (complete) and Q = the part of ∂L/∂Y_k
 * that step k+1 sent back (β_{k+1} P_{k+2}):
 *   ḡ = γ_k P,   ∂L/∂Y_k = Q + α_k P + (∂g/∂Y)ᵀ ḡ,   part of ∂L/∂Y_{k−1} = β_k P.
 * The step inverts for k ≥ 1: Y_{k−1} = (Y_{k+1} − α_k Y_k − γ_k g_k) / β_k,
 * which the reconstruct mode uses to keep two states whatever the number
 * of steps; step 0 takes the block's input itself, so the gradient differs
 * from store's only by the rounding of the rebuilt Y_1..Y_{K−2}.
 *
 * Memory: store keeps every state and every evaluation's cache; checkpoint
 * every state, recomputing one evaluation at a time; reconstruct the last
 * two states (Y_K, Y_{K−1}), recomputing and rebuilding backward. */
#include <stdio.h>
#include <string.h>

#include "model/integrator.h"

typedef struct leapfrog {
  bool store, reconstruct;
  dynb__run theta;     /* keep: K items of P, θ(tY[k]) */
  dynb__run states;    /* keep: Y_1..Y_{K−1} (K−1 items), or 2 rotating (reconstruct) */
  dynb__run caches;    /* keep: K items (store), or scratch: 1 */
  dynb__tensor g;      /* scratch: g(Y_k) of the step at hand */
  dynb__tensor adj;    /* scratch: [2][NCHW], P and Q of the adjoint */
  dynb__tensor gbar;   /* scratch: ḡ */
  dynb__tensor dtheta; /* scratch: P */
  int rebuilt;         /* states item holding the rebuilt Y_0 after a backward; −1: none */
} leapfrog;

static leapfrog *impl(const dynb__block *b) { return b->impl; }

static dynb_status lf_check(const dynb__layer *l, const dynb__tableau *t, char *err,
                            size_t errlen) {
  return dynb__integrator_check_not_hamiltonian(l, t, err, errlen); /* any layer of §1.2 */
}

static void lf_shape(dynb__block *b) {
  leapfrog *f = impl(b);
  f->store = b->mode == DYNB_MEMORY_STORE;
  f->reconstruct = b->mode == DYNB_MEMORY_RECONSTRUCT;
  f->rebuilt = -1;
}

static void lf_carve(dynb__block *b, dynb__arena_cursor *k, dynb__arena_cursor *t) {
  leapfrog *f = impl(b);
  size_t K = (size_t)b->nsteps;
  f->theta = dynb__arena_run(k, K, b->P, "block parameters at a step");
  f->states = dynb__arena_run(k, f->reconstruct ? 2 : K - 1, b->nchw, "block state");
  f->caches = dynb__arena_run(f->store ? k : t, f->store ? K : 1, b->cache_elems,
                              "block evaluation cache");
  f->g = dynb__arena_flat(t, b->nchw, "block layer output");
  f->adj = dynb__arena_flat(t, 2 * b->nchw, "block adjoints (two states)");
  f->gbar = dynb__arena_flat(t, b->nchw, "block layer output gradient");
  f->dtheta = dynb__arena_flat(t, b->P, "block parameter gradients");
}

static dynb_status lf_upload(dynb__block *b) {
  (void)b;
  return DYNB_OK; /* coefficients are scalars of each launch */
}

static void coefficients(const dynb__block *b, int k, double *alpha, double *beta,
                         double *gamma) {
  double sign = dynb__layer_sign(&b->layer), h = b->t_states[k + 1] - b->t_states[k];
  if (k == 0) {
    *alpha = 1, *beta = 0, *gamma = 0.5 * h * h * sign;
    return;
  }
  double hp = b->t_states[k] - b->t_states[k - 1], r = h / hp;
  *alpha = 1 + r, *beta = -r, *gamma = 0.5 * h * (h + hp) * sign;
}

/* Y_k: x for k = 0; the kept state otherwise (in reconstruct mode the two
 * items rotate: Y_k in item (k − 1) mod 2, where Y_{k−2} was). */
static dynb__tensor state_at(const dynb__block *b, const dynb__tensor *x, int k) {
  leapfrog *f = impl(b);
  if (k == 0) return *x;
  size_t i = f->reconstruct ? (size_t)(k - 1) % 2 : (size_t)k - 1;
  return dynb__run_at(&f->states, i, 4, b->dims);
}

static dynb__tensor theta_k(const dynb__block *b, int k) {
  int64_t p = (int64_t)b->P;
  return dynb__run_at(&impl(b)->theta, (size_t)k, 1, &p);
}

static dynb__tensor cache_k(const dynb__block *b, int k) {
  int64_t n = (int64_t)b->cache_elems;
  return dynb__run_at(&impl(b)->caches, impl(b)->store ? (size_t)k : 0, 1, &n);
}

/* g = g(Y_k, θ_k) into f->g, filling step k's cache. */
static dynb_status evaluate(dynb__block *b, const dynb__tensor *y, int k, bool train,
                            bool update_running) {
  dynb__tensor th = theta_k(b, k), cache = cache_k(b, k), run = dynb__block_running_at(b, k, 0);
  dynb__layer_eval e = {&th, y, &cache, NULL, train};
  if (b->running.mem && (!train || update_running)) e.running = &run;
  dynb__tensor g = dynb__block_nchw_at(b, &impl(b)->g, 0);
  return dynb__layer_forward(b->ctx, &b->layer, &e, &g, &b->work);
}

static dynb_status lf_forward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                              bool train) {
  leapfrog *f = impl(b);
  int K = b->nsteps;
  f->rebuilt = -1;
  dynb__tensor g = dynb__block_nchw_at(b, &f->g, 0);
  for (int k = 0; k < K; k++) {
    dynb__tensor th = theta_k(b, k);
    DYNB_TRY(dynb__block_theta(b, b->t_states[k], &th));
    dynb__tensor y = state_at(b, x, k);
    DYNB_TRY(evaluate(b, &y, k, train, true));
    double al, be, ga;
    coefficients(b, k, &al, &be, &ga);
    dynb__tensor next = k + 1 == K && !f->reconstruct ? *out : state_at(b, x, k + 1);
    dynb__tensor prev = k > 0 ? state_at(b, x, k - 1) : y;
    DYNB_TRY(dynb__lincomb(b->ctx, al, &y, be, k > 0 ? &prev : NULL, ga, &g, &next));
  }
  if (f->reconstruct) {
    dynb__tensor last = state_at(b, x, K);
    DYNB_TRY(dynb__tensor_copy(b->ctx, &last, out));
  }
  return DYNB_OK;
}

static dynb_status lf_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                               const dynb__tensor *dx) {
  leapfrog *f = impl(b);
  int K = b->nsteps;
  dynb__tensor P = dynb__block_nchw_at(b, &f->adj, 0), Q = dynb__block_nchw_at(b, &f->adj, 1);
  dynb__tensor g = dynb__block_nchw_at(b, &f->g, 0), gbar = dynb__block_nchw_at(b, &f->gbar, 0);
  int64_t pn = (int64_t)b->P;
  dynb__tensor dth = dynb__tensor_sub(&f->dtheta, 0, 1, &pn);
  DYNB_TRY(dynb__tensor_copy(b->ctx, dout, &P));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &Q));
  for (int k = K - 1; k >= 0; k--) {
    dynb__tensor y = state_at(b, x, k);
    if (!f->store) DYNB_TRY(evaluate(b, &y, k, b->train_last, false));
    double al, be, ga;
    coefficients(b, k, &al, &be, &ga);
    DYNB_TRY(dynb__lincomb(b->ctx, ga, &P, 0, NULL, 0, NULL, &gbar));
    /* target = Q + α P, then += (∂g/∂Y)ᵀ ḡ by the layer's backward. */
    const dynb__tensor *target = k == 0 ? dx : &Q;
    DYNB_TRY(dynb__lincomb(b->ctx, 1, &Q, al, &P, 0, NULL, target));
    dynb__tensor th = theta_k(b, k), cache = cache_k(b, k);
    dynb__tensor run = dynb__block_running_at(b, k, 0);
    dynb__layer_eval e = {&th, &y, &cache, NULL, b->train_last};
    if (b->running.mem && !b->train_last) e.running = &run;
    DYNB_TRY(dynb__tensor_zero(b->ctx, &dth));
    DYNB_TRY(dynb__layer_backward(b->ctx, &b->layer, &e, &gbar, target, true, &dth, &b->work));
    DYNB_TRY(dynb__block_theta_backward(b, b->t_states[k], &dth));
    if (k == 0) break;
    DYNB_TRY(dynb__lincomb(b->ctx, be, &P, 0, NULL, 0, NULL, &P));
    dynb__tensor swap = P;
    P = Q, Q = swap;
    if (f->reconstruct) { /* Y_{k−1} over Y_{k+1}, in the item they share */
      dynb__tensor next = state_at(b, x, k + 1), prev = next;
      DYNB_TRY(dynb__lincomb(b->ctx, 1 / be, &next, -al / be, &y, -ga / be, &g, &prev));
      if (k == 1) f->rebuilt = (int)((size_t)k % 2);
    }
  }
  /* The rebuild leaves the early states where the last ones were: a second
   * backward would need a new forward. */
  if (f->reconstruct) b->forward_done = false;
  return DYNB_OK;
}

static void lf_evals(const dynb__block *b, double *forward, double *backward,
                     double *recomputed) {
  *forward = *backward = (double)b->nsteps;
  *recomputed = impl(b)->store ? 0 : *forward;
}

/* max |rebuilt Y_0 − x| / max |x| (dynb__integrator_rebuild_error). */
static dynb_status lf_reconstruction_error(dynb__block *b, const dynb__tensor *x, double *err) {
  leapfrog *f = impl(b);
  *err = 0;
  if (f->rebuilt < 0) return DYNB_OK;
  dynb__tensor y0 = dynb__run_at(&f->states, (size_t)f->rebuilt, 4, b->dims);
  return dynb__integrator_rebuild_error(b, &y0, x, err);
}

const dynb__integrator dynb__integrator_leapfrog = {
    .name = "leapfrog",
    .impl_size = sizeof(leapfrog),
    .check = lf_check,
    .shape = lf_shape,
    .carve = lf_carve,
    .upload = lf_upload,
    .forward = lf_forward,
    .backward = lf_backward,
    .evals = lf_evals,
    .reconstruction_error = lf_reconstruction_error,
};
