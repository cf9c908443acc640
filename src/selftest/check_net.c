/* A whole network's gradient against central finite differences of its
 * loss: a small network (opening layer, two dynamic blocks with different
 * layer functions, norms and schemes, connecting layers, pooling, the
 * head and the loss) built as a plan in checkpoint mode, so that the
 * backward's recomputation is checked too. Every trainable tensor is
 * sampled, and the input.
 *
 * Bounds, relative to max(1, |analytic|):
 * - f64, step h = 1e-5: the truncation error of central differences is
 *   h²/6·|L'''| ~ 1e-10 for this smooth (tanh everywhere) network of
 *   weights drawn at initialisation; the rounding of L (order 1, a few
 *   hundred roundings along any path: < 1e-13) divided by 2h adds
 *   ~1e-8 at most. 1e-6 leaves a wide margin and catches any wrong
 *   term of a gradient, whose size is that of the gradient itself.
 * - f32 (devices without fp64), step h = 1e-2: each loss evaluation is
 *   within D·u·|L| of exact with D = 256 roundings along the longest path
 *   (the convolutions' Cin·k² = 36-term sums, norms, 2 blocks of at most 4
 *   stages, pooling, head, log-softmax) and |L| <= 2 (3 classes: ln 3 ≈
 *   1.1 at initialisation), i.e. 3.1e-5; over 2h that is 1.5e-3.
 *   Truncation h²/6·|L'''| adds 2e-5 for |L'''| <= 1. The f32 analytic
 *   gradient's own error is of the same D·u order (1.5e-5). Bound:
 *   2e-3, still far below the size of a wrong gradient term. */
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
  st_run *r;
  dynb__plan *plan;
  const dynb__tensor *t; /* the tensor being varied */
  double *host;          /* its values */
} fd_state;

static double loss_at(fd_state *f) {
  double loss[2] = {NAN, NAN};
  st_write(f->r, f->t, f->host);
  if (f->r->status == DYNB_OK) st_ok(f->r, dynb__plan_forward(f->plan, true));
  st_fetch(f->r, dynb__plan_loss(f->plan), loss);
  return loss[0];
}

/* Central differences at up to `checks` entries of one tensor. */
static void fd_tensor(fd_state *f, const double *analytic, size_t n, size_t checks, double h,
                      double bound) {
  size_t stride = n > checks ? (n + checks - 1) / checks : 1;
  size_t m = (n + stride - 1) / stride, j = 0;
  double *fd = st_zeros(f->r, m), *an = st_zeros(f->r, m), *scale = st_zeros(f->r, m);
  if (f->r->status != DYNB_OK) return;
  for (size_t i = 0; i < n && f->r->status == DYNB_OK; i += stride, j++) {
    double keep = f->host[i];
    f->host[i] = keep + h;
    double lp = loss_at(f);
    f->host[i] = keep - h;
    double lm = loss_at(f);
    f->host[i] = keep;
    fd[j] = (lp - lm) / (2 * h);
    an[j] = analytic[i];
    scale[j] = fmax(1, fabs(analytic[i]));
  }
  st_write(f->r, f->t, f->host); /* restore */
  st_compare(f->r, an, fd, scale, m, bound);
}

static void check_one(st_run *r, const net_kind *k, size_t checks) {
  dynb_ctx *ctx = r->ctx;
  dynb__net_spec spec;
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  if (!make_spec(&spec, k)) {
    st_ok(r, DYNB_STATUS_INVALID_ARGUMENT);
    return;
  }
  if (!st_ok(r, dynb__net_create(ctx, &spec, r->row.dtype, &net))) return;
  if (st_ok(r, dynb__net_init(net, 7)) &&
      st_ok(r, dynb__plan_build(net, 4, DYNB_MEMORY_CHECKPOINT, &plan))) {
    const dynb__tensor *in = dynb__plan_input(plan);
    size_t nin = dynb__tensor_numel(in);
    ref_rng g = ref_rng_seed(11);
    double *x = st_data(r, &g, nin, -1, 1), *gx = st_zeros(r, nin);
    const int32_t labels[4] = {0, 2, 1, 2};
    st_write(r, in, x);
    if (r->status == DYNB_OK) st_ok(r, dynb__tensor_write(ctx, dynb__plan_labels(plan), labels));
    if (r->status == DYNB_OK) st_ok(r, dynb__net_zero_grads(net));
    if (r->status == DYNB_OK) st_ok(r, dynb__plan_forward(plan, true));
    if (r->status == DYNB_OK) st_ok(r, dynb__plan_backward(plan, true));
    double h = r->f64 ? 1e-5 : 1e-2, bound = r->f64 ? 1e-6 : 2e-3;
    /* Gradients are read with st_read: they are this row's output, which
     * the fault hook perturbs. */
    st_read(r, dynb__plan_input_grad(plan), gx);
    fd_state f = {r, plan, in, x};
    fd_tensor(&f, gx, nin, 2 * checks, h, bound);
    for (size_t i = 0; i < net->ntensors && r->status == DYNB_OK; i++) {
      const dynb__net_tensor *t = &net->tensors[i];
      if (!t->trainable) continue;
      size_t n = dynb__tensor_numel(&t->value);
      double *v = st_zeros(r, n), *gr = st_zeros(r, n);
      st_fetch(r, &t->value, v);
      st_read(r, &t->grad, gr);
      fd_state ft = {r, plan, &t->value, v};
      fd_tensor(&ft, gr, n, checks, h, bound);
      st_release(r); /* host arrays only: this case owns no tensors */
    }
  }
  st_release(r);
  dynb__plan_free(plan);
  dynb__net_free(net);
}

void st_check_net(st_run *r) {
  dynb_dtype dts[2];
  int nd = st_dtypes(r, dts);
  /* Two blocks per network; the quick run takes the reference
   * configuration's layer (doublesym + tv + rk4) next to double + batch
   * norm + midpoint; the full run adds preact without norm on rk38 and
   * euler. */
  static const net_kind quick[2] = {{DYNB_LAYER_DOUBLESYM, DYNB_NORM_TV, "rk4"},
                                    {DYNB_LAYER_DOUBLE, DYNB_NORM_BATCH, "midpoint"}};
  static const net_kind more[2] = {{DYNB_LAYER_PREACT, DYNB_NORM_NONE, "rk38"},
                                   {DYNB_LAYER_DOUBLESYM, DYNB_NORM_BATCH, "euler"}};
  /* f64 where the device has it (the sharper check), else f32. */
  dynb_dtype dt = dts[nd - 1];
  st_begin(r, "net_gradient", "-", dt);
  check_one(r, quick, r->d->quick ? 2 : 6);
  if (!r->d->quick) check_one(r, more, 6);
  st_end(r);
}
