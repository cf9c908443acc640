/* The verlet integrator (SPEC §1.4): symplectic Euler on the Hamiltonian
 * system of the `hamiltonian` layer, two states Y and Z, Z_0 = 0:
 *   Z_{k+1} = Z_k − h_k s₀(Y_k),      s₀ = σ(N₁(Kᵀ Y + b₁))  (layer half 0)
 *   Y_{k+1} = Y_k + h_k s₁(Z_{k+1}),  s₁ = σ(N₂(K Z + b₂))   (layer half 1)
 * θ at tY[k]; the block outputs Y_K. The adjoint of a step, from (Ȳ, Z̄)
 * of step k+1, runs in place on those two buffers:
 *   Z̄ += J₁ᵀ (h Ȳ)    (half 1's backward at Z_{k+1})
 *   Ȳ += J₀ᵀ (−h Z̄)   (half 0's backward at Y_k)
 * and the step inverts exactly: Y_k = Y_{k+1} − h s₁(Z_{k+1}), then
 * Z_k = Z_{k+1} + h s₀(Y_k), which the reconstruct mode uses to keep only
 * (Y_K, Z_K). Step 0's half 0 reads the block's input itself; the rebuilt
 * Y_0 is what the reconstruction error compares with it. */
#include <stdio.h>
#include <string.h>

#include "model/integrator.h"

typedef struct verlet {
  bool store, reconstruct;
  dynb__run theta;   /* keep: K items of P */
  dynb__run ys;      /* keep: Y_1..Y_{K−1}; reconstruct: 1 item, Y_k of the pass */
  dynb__run zs;      /* keep: Z_1..Z_K; reconstruct: 1 item, Z_k of the pass */
  dynb__run caches;  /* keep: [K][2] (store), or scratch: [2] */
  dynb__tensor s;    /* scratch: a half's output */
  dynb__tensor adj;  /* scratch: [2][NCHW], Ȳ and Z̄ */
  dynb__tensor gbar; /* scratch: a half's output gradient */
  dynb__tensor dtheta;
  bool rebuilt; /* ys item 0 holds the rebuilt Y_0 */
} verlet;

static verlet *impl(const dynb__block *b) { return b->impl; }

static dynb_status vl_check(const dynb__layer *l, const dynb__tableau *t, char *err,
                            size_t errlen) {
  (void)t;
  if (l->kind == DYNB_LAYER_HAMILTONIAN) return DYNB_OK;
  snprintf(err, errlen, "scheme 'verlet' takes only the 'hamiltonian' layer, not '%s'",
           dynb__layer_name(l->kind));
  return DYNB_STATUS_SPEC_ERROR;
}

static void vl_shape(dynb__block *b) {
  verlet *v = impl(b);
  v->store = b->mode == DYNB_MEMORY_STORE;
  v->reconstruct = b->mode == DYNB_MEMORY_RECONSTRUCT;
  v->rebuilt = false;
}

static void vl_carve(dynb__block *b, dynb__arena_cursor *k, dynb__arena_cursor *t) {
  verlet *v = impl(b);
  size_t K = (size_t)b->nsteps;
  v->theta = dynb__arena_run(k, K, b->P, "block parameters at a step");
  v->ys = dynb__arena_run(k, v->reconstruct ? 1 : K - 1, b->nchw, "block state Y");
  v->zs = dynb__arena_run(k, v->reconstruct ? 1 : K, b->nchw, "block state Z");
  v->caches = dynb__arena_run(v->store ? k : t, v->store ? 2 * K : 2, b->cache_elems,
                              "block half-evaluation cache");
  v->s = dynb__arena_flat(t, b->nchw, "block layer output");
  v->adj = dynb__arena_flat(t, 2 * b->nchw, "block adjoints (two states)");
  v->gbar = dynb__arena_flat(t, b->nchw, "block layer output gradient");
  v->dtheta = dynb__arena_flat(t, b->P, "block parameter gradients");
}

static dynb_status vl_upload(dynb__block *b) {
  (void)b;
  return DYNB_OK;
}

static double step(const dynb__block *b, int k) { return b->t_states[k + 1] - b->t_states[k]; }

/* Y_k (x for k = 0) and Z_k (k ≥ 1) as kept; in reconstruct mode the one
 * item of each holds the state of the step at hand. */
static dynb__tensor y_at(const dynb__block *b, const dynb__tensor *x, int k) {
  verlet *v = impl(b);
  if (k == 0) return *x;
  return dynb__run_at(&v->ys, v->reconstruct ? 0 : (size_t)k - 1, 4, b->dims);
}

static dynb__tensor z_at(const dynb__block *b, int k) {
  verlet *v = impl(b);
  return dynb__run_at(&v->zs, v->reconstruct ? 0 : (size_t)k - 1, 4, b->dims);
}

static dynb__tensor theta_k(const dynb__block *b, int k) {
  int64_t p = (int64_t)b->P;
  return dynb__run_at(&impl(b)->theta, (size_t)k, 1, &p);
}

static dynb__layer_eval eval_of(const dynb__block *b, int k, int half, const dynb__tensor *in,
                                dynb__tensor *th, dynb__tensor *cache, dynb__tensor *run,
                                bool train, bool update_running) {
  int64_t n = (int64_t)b->cache_elems;
  *th = theta_k(b, k);
  *cache = dynb__run_at(&impl(b)->caches, (impl(b)->store ? 2 * (size_t)k : 0) + (size_t)half, 1,
                        &n);
  *run = dynb__block_running_at(b, k, 0);
  dynb__layer_eval e = {th, in, cache, NULL, train};
  if (b->running.mem && (!train || update_running)) e.running = run;
  return e;
}

/* s = half `half` of the layer at `in`, step k. */
static dynb_status half_forward(dynb__block *b, int k, int half, const dynb__tensor *in,
                                bool train, bool update_running) {
  dynb__tensor th, cache, run, s = dynb__block_nchw_at(b, &impl(b)->s, 0);
  dynb__layer_eval e = eval_of(b, k, half, in, &th, &cache, &run, train, update_running);
  return dynb__layer_half_forward(b->ctx, &b->layer, half, &e, &s, &b->work);
}

static dynb_status vl_forward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *out,
                              bool train) {
  verlet *v = impl(b);
  int K = b->nsteps;
  v->rebuilt = false;
  dynb__tensor s = dynb__block_nchw_at(b, &v->s, 0);
  for (int k = 0; k < K; k++) {
    double h = step(b, k);
    dynb__tensor th = theta_k(b, k);
    DYNB_TRY(dynb__block_theta(b, b->t_states[k], &th));
    dynb__tensor y = y_at(b, x, k), z = k > 0 ? z_at(b, k) : s, znext = z_at(b, k + 1);
    DYNB_TRY(half_forward(b, k, 0, &y, train, true));
    DYNB_TRY(dynb__lincomb(b->ctx, -h, &s, 1, k > 0 ? &z : NULL, 0, NULL, &znext));
    DYNB_TRY(half_forward(b, k, 1, &znext, train, true));
    dynb__tensor ynext = k + 1 == K && !v->reconstruct ? *out : y_at(b, x, k + 1);
    DYNB_TRY(dynb__lincomb(b->ctx, 1, &y, h, &s, 0, NULL, &ynext));
  }
  if (v->reconstruct) {
    dynb__tensor last = y_at(b, x, K);
    DYNB_TRY(dynb__tensor_copy(b->ctx, &last, out));
  }
  return DYNB_OK;
}

/* gbar = scale · dout, then half `half`'s backward at `in` into target. */
static dynb_status half_backward(dynb__block *b, int k, int half, const dynb__tensor *in,
                                 double scale, const dynb__tensor *dout,
                                 const dynb__tensor *target) {
  verlet *v = impl(b);
  dynb__tensor gbar = dynb__block_nchw_at(b, &v->gbar, 0), th, cache, run;
  int64_t pn = (int64_t)b->P;
  dynb__tensor dth = dynb__tensor_sub(&v->dtheta, 0, 1, &pn);
  DYNB_TRY(dynb__lincomb(b->ctx, scale, dout, 0, NULL, 0, NULL, &gbar));
  dynb__layer_eval e = eval_of(b, k, half, in, &th, &cache, &run, b->train_last, false);
  DYNB_TRY(dynb__tensor_zero(b->ctx, &dth));
  DYNB_TRY(dynb__layer_half_backward(b->ctx, &b->layer, half, &e, &gbar, target, true, &dth,
                                     &b->work));
  return dynb__block_theta_backward(b, b->t_states[k], &dth);
}

static dynb_status vl_backward(dynb__block *b, const dynb__tensor *x, const dynb__tensor *dout,
                               const dynb__tensor *dx) {
  verlet *v = impl(b);
  int K = b->nsteps;
  dynb__tensor yb = dynb__block_nchw_at(b, &v->adj, 0), zb = dynb__block_nchw_at(b, &v->adj, 1);
  dynb__tensor s = dynb__block_nchw_at(b, &v->s, 0);
  DYNB_TRY(dynb__tensor_copy(b->ctx, dout, &yb));
  DYNB_TRY(dynb__tensor_zero(b->ctx, &zb));
  for (int k = K - 1; k >= 0; k--) {
    double h = step(b, k);
    dynb__tensor znext = z_at(b, k + 1), y = y_at(b, x, k);
    if (v->reconstruct) { /* Y_k = Y_{k+1} − h s₁(Z_{k+1}), over Y_{k+1} */
      dynb__tensor ybuf = dynb__run_at(&v->ys, 0, 4, b->dims);
      DYNB_TRY(half_forward(b, k, 1, &znext, b->train_last, false));
      DYNB_TRY(dynb__lincomb(b->ctx, 1, &ybuf, -h, &s, 0, NULL, &ybuf));
      DYNB_TRY(half_forward(b, k, 0, &y, b->train_last, false));
    } else if (!v->store) {
      DYNB_TRY(half_forward(b, k, 0, &y, b->train_last, false));
      DYNB_TRY(half_forward(b, k, 1, &znext, b->train_last, false));
    }
    DYNB_TRY(half_backward(b, k, 1, &znext, h, &yb, &zb));
    DYNB_TRY(half_backward(b, k, 0, &y, -h, &zb, &yb));
    if (v->reconstruct && k > 0) /* Z_k = Z_{k+1} + h s₀(Y_k), over Z_{k+1} */
      DYNB_TRY(dynb__lincomb(b->ctx, 1, &znext, h, &s, 0, NULL, &znext));
  }
  if (v->reconstruct) {
    v->rebuilt = true;
    b->forward_done = false; /* the kept states are now Y_0, Z_1 */
  }
  return dynb__tensor_copy(b->ctx, &yb, dx);
}

static void vl_evals(const dynb__block *b, double *forward, double *backward,
                     double *recomputed) {
  *forward = *backward = (double)b->nsteps;
  *recomputed = impl(b)->store ? 0 : *forward;
}

static dynb_status vl_reconstruction_error(dynb__block *b, const dynb__tensor *x, double *err) {
  verlet *v = impl(b);
  *err = 0;
  if (!v->rebuilt) return DYNB_OK;
  dynb__tensor y0 = dynb__run_at(&v->ys, 0, 4, b->dims);
  return dynb__integrator_rebuild_error(b, &y0, x, err);
}

const dynb__integrator dynb__integrator_verlet = {
    .name = "verlet",
    .impl_size = sizeof(verlet),
    .check = vl_check,
    .shape = vl_shape,
    .carve = vl_carve,
    .upload = vl_upload,
    .forward = vl_forward,
    .backward = vl_backward,
    .evals = vl_evals,
    .reconstruction_error = vl_reconstruction_error,
};
