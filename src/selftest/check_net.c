/* A whole network's gradient against central finite differences of its
 * loss: a small network (opening layer, two dynamic blocks with different
 * layer functions, norms and schemes, connecting layers, pooling, the
 * head and the loss) built as a plan in checkpoint mode, so that the
 * backward's recomputation is checked too. Every trainable tensor is
 * sampled, and the input. Errors are relative to max(1, |analytic|).
 *
 * f64, step h = 1e-5: the truncation error of central differences,
 * h²/6·|L'''|, is below 1e-7 even where |L'''| reaches 1e3 (the TV norm's
 * ε = 1e-4 puts curvature on the scale √ε = 1e-2 near pixels of small
 * norm: measured, D(h) errs by 380·h² on this network); the rounding of L
 * (order 1, a few hundred roundings of 2^-53 on any path, < 1e-13) over 2h
 * adds < 1e-8. Bound 1e-6: far below the size of any wrong term of a
 * gradient, which is that of the gradient itself.
 *
 * f32 (devices without fp64): rounding now limits the step. A loss
 * evaluation passes D = 256 roundings on its longest path (36-term
 * convolution sums, norms, two blocks of at most 4 stages, pooling, head,
 * log-softmax); by the probabilistic bound of Higham and Mary (SIAM J.
 * Sci. Comput. 2019), |error| <= λ√D·u·|L| with probability at least
 * 1 - 2D·exp(-λ²/2), i.e. > 1 - 2e-3 for λ = 5 (the worst case D·u·|L| is
 * 16 times larger and never approached), with |L| <= 2 (3 classes: ln 3 at
 * initialisation): ε = 9.5e-6. With h = 1e-2 the rounding of
 * D(h) = (L(θ+h) - L(θ-h))/2h is within ε/h = 9.5e-4, the bound reported.
 * Its truncation error, c·h² + O(h⁴), is estimated from the data as
 * Richardson does: D(h) - D(h/2) = ¾·c·h², so |c·h²| <= 4/3·|D(h) - D(h/2)|,
 * doubled for the O(h⁴) rest, is added per entry (it holds only finite
 * differences of the loss, so it cannot absorb an error of the analytic
 * gradient). The f32 network leaves out the TV norm, whose curvature
 * (above) would make any f32 step either too coarse or too noisy; its
 * backward is checked against src/ref in both types and, where there is
 * fp64, against finite differences here. */
#include <math.h>
#include <string.h>

#include "model/model.h"
#include "plan/plan.h"
#include "selftest.h"

typedef struct net_kind {
  dynb_layer_kind layer;
  dynb_norm_kind norm;
  const char *scheme;
} net_kind;

static bool make_spec(dynb__net_spec *s, const net_kind *k) {
  memset(s, 0, sizeof *s);
  s->in_channels = 2, s->in_height = 6, s->in_width = 5, s->classes = 3;
  s->open_width = 3, s->open_kernel = 3, s->open_norm = DYNB_NORM_BATCH;
  s->open_act = DYNB_ACT_TANH;
  s->nblocks = 2;
  for (int b = 0; b < 2; b++) {
    dynb__block_spec *bs = &s->blocks[b];
    bs->width = 3 + b;
    bs->layer = (dynb__layer){k[b].layer, k[b].norm, DYNB_ACT_TANH, bs->width, 3};
    if (!dynb__tableau_builtin(k[b].scheme, &bs->tableau)) return false;
    /* Non-uniform steps; controls that do not coincide with states. */
    bs->nstates = 3;
    bs->t_states[0] = 0, bs->t_states[1] = 0.4, bs->t_states[2] = 1.0;
    bs->ncontrols = 2;
    bs->t_controls[0] = 0.2, bs->t_controls[1] = 0.9;
  }
  s->connect_norm = DYNB_NORM_BATCH, s->connect_act = DYNB_ACT_TANH;
  s->head_width = 5;
  return true;
}

typedef struct fd_state {
  dynb__stest_run *r;
  dynb__plan *plan;
  const dynb__tensor *t; /* the tensor being varied */
  double *host;          /* its values */
} fd_state;

static double loss_at(fd_state *f) {
  double loss[2] = {NAN, NAN};
  dynb__stest_write(f->r, f->t, f->host);
  if (f->r->status == DYNB_OK) dynb__stest_ok(f->r, dynb__plan_forward(f->plan, true));
  dynb__stest_fetch(f->r, dynb__plan_loss(f->plan), loss);
  return loss[0];
}

/* Central differences at up to `checks` entries of one tensor (see the
 * top of the file for h and the bounds). */
static void fd_tensor(fd_state *f, const double *analytic, size_t n, size_t checks, double h,
                      double bound) {
  size_t stride = n > checks ? (n + checks - 1) / checks : 1;
  size_t m = (n + stride - 1) / stride, j = 0;
  double *fd = dynb__stest_zeros(f->r, m), *an = dynb__stest_zeros(f->r, m),
         *scale = dynb__stest_zeros(f->r, m);
  if (f->r->status != DYNB_OK) return;
  for (size_t i = 0; i < n && f->r->status == DYNB_OK; i += stride, j++) {
    double keep = f->host[i], d[2];
    for (int half = 0; half < (f->r->f64 ? 1 : 2); half++) {
      double step = half ? h / 2 : h;
      f->host[i] = keep + step;
      double lp = loss_at(f);
      f->host[i] = keep - step;
      double lm = loss_at(f);
      d[half] = (lp - lm) / (2 * step);
    }
    f->host[i] = keep;
    fd[j] = d[0];
    an[j] = analytic[i];
    scale[j] = fmax(1, fabs(analytic[i]));
    if (!f->r->f64) scale[j] += 2 * (4.0 / 3) * fabs(d[0] - d[1]) / bound;
  }
  dynb__stest_write(f->r, f->t, f->host); /* restore */
  dynb__stest_compare(f->r, an, fd, scale, m, bound);
}

static void check_one(dynb__stest_run *r, const net_kind *k, size_t checks) {
  dynb_ctx *ctx = r->ctx;
  dynb__net_spec spec;
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  if (!make_spec(&spec, k)) {
    dynb__stest_ok(r, DYNB_STATUS_INVALID_ARGUMENT);
    return;
  }
  if (!dynb__stest_ok(r, dynb__net_create(ctx, &spec, r->row.dtype, &net))) return;
  if (dynb__stest_ok(r, dynb__net_init(net, 7)) &&
      dynb__stest_ok(r, dynb__plan_build(net, 4, DYNB_MEMORY_CHECKPOINT, &plan))) {
    const dynb__tensor *in = dynb__plan_input(plan);
    size_t nin = dynb__tensor_numel(in);
    ref_rng g = ref_rng_seed(11);
    double *x = dynb__stest_data(r, &g, nin, -1, 1), *gx = dynb__stest_zeros(r, nin);
    const int32_t labels[4] = {0, 2, 1, 2};
    dynb__stest_write(r, in, x);
    if (r->status == DYNB_OK)
      dynb__stest_ok(r, dynb__tensor_write(ctx, dynb__plan_labels(plan), labels));
    if (r->status == DYNB_OK) dynb__stest_ok(r, dynb__net_zero_grads(net));
    if (r->status == DYNB_OK) dynb__stest_ok(r, dynb__plan_forward(plan, true));
    if (r->status == DYNB_OK) dynb__stest_ok(r, dynb__plan_backward(plan, true));
    double h = r->f64 ? 1e-5 : 1e-2, bound = r->f64 ? 1e-6 : 9.5e-4;
    /* Gradients are read with dynb__stest_read: they are this row's output, which
     * the fault hook perturbs. */
    dynb__stest_read(r, dynb__plan_input_grad(plan), gx);
    fd_state f = {r, plan, in, x};
    fd_tensor(&f, gx, nin, 2 * checks, h, bound);
    for (size_t i = 0; i < net->ntensors && r->status == DYNB_OK; i++) {
      const dynb__net_tensor *t = &net->tensors[i];
      if (!t->trainable) continue;
      size_t n = dynb__tensor_numel(&t->value);
      double *v = dynb__stest_zeros(r, n), *gr = dynb__stest_zeros(r, n);
      dynb__stest_fetch(r, &t->value, v);
      dynb__stest_read(r, &t->grad, gr);
      fd_state ft = {r, plan, &t->value, v};
      fd_tensor(&ft, gr, n, checks, h, bound);
      dynb__stest_release(r); /* host arrays only: this case owns no tensors */
    }
  }
  dynb__stest_release(r);
  dynb__plan_free(plan);
  dynb__net_free(net);
}

void dynb__stest_check_net(dynb__stest_run *r) {
  dynb_dtype dts[2];
  int nd = dynb__stest_dtypes(r, dts);
  /* Two blocks per network. With fp64, the quick run takes the reference
   * configuration's layer (doublesym + tv + rk4) next to double + batch
   * norm + midpoint, and the full run adds preact without norm on rk38
   * and doublesym + batch on euler. In f32, no TV (see above). */
  static const net_kind quick[2] = {{DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, "rk4"},
                                    {DYNB_LAYER_DOUBLE, DYNB_NORM_BATCH, "midpoint"}};
  static const net_kind quick32[2] = {{DYNB_LAYER_DOUBLESYM, DYNB_NORM_BATCH, "rk4"},
                                      {DYNB_LAYER_DOUBLE, DYNB_NORM_NONE, "midpoint"}};
  static const net_kind more[2] = {{DYNB_LAYER_PREACT, DYNB_NORM_NONE, "rk38"},
                                   {DYNB_LAYER_DOUBLESYM, DYNB_NORM_BATCH, "euler"}};
  /* f64 where the device has it (the sharper check), else f32. */
  dynb_dtype dt = dts[nd - 1];
  dynb__stest_begin(r, "net_gradient", "-", dt);
  check_one(r, dt == DYNB_F64 ? quick : quick32, r->d->quick ? 2 : 6);
  if (!r->d->quick) check_one(r, more, 6);
  dynb__stest_end(r);
}
