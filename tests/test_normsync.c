/* Batch norm in training across the replicas of a data-parallel group
 * (src/ops/norm_sync.c, kernels/normsync.cl): the per-shard reduction
 * kernel against its plain-C reference, the host merge against moments of
 * the whole batch, the full ops on 2 and 3 replicas (threads, one context
 * each, the in-process transport) against the one-device reference of the
 * global batch in f64 and f32 at edge sizes, their backward against
 * central differences, and a mismatch between replicas failing on every
 * replica instead of hanging. */
#include <math.h>
#include <pthread.h>

#include "parallel/transport.h"
#include "ref/ref.h"
#include "ref/ref_normsync.h"
#include "testutil.h"

#define MAXR 3

typedef struct gshape {
  int r;               /* replicas */
  int64_t shard[MAXR]; /* samples per replica */
  int64_t c, h, w;
} gshape;

/* One sample on a replica; C = 1; 1×1 maps; odd maps; and M per shard that
 * is a multiple of no work-group size (4·13·17 = 884, 5·13·17 = 1105). */
static const gshape shapes[] = {{2, {1, 2, 0}, 3, 7, 5},  {2, {2, 3, 0}, 1, 1, 1},
                                {3, {1, 1, 1}, 2, 13, 9}, {2, {4, 5, 0}, 2, 13, 17},
                                {3, {3, 1, 2}, 1, 5, 3}};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

static dynb_ctx *ctxs[MAXR];

static int64_t total_n(const gshape *g) {
  int64_t n = 0;
  for (int r = 0; r < g->r; r++) n += g->shard[r];
  return n;
}

/* ---- the ops on a group of threads ---------------------------------------- */

typedef struct rep_job {
  dynb__transport *t;
  dynb__replica_link link;
  dynb_ctx *ctx;
  dynb_dtype dt;
  int64_t n, c, h, w;
  const double *x, *dy, *gamma, *beta; /* x and dy: this shard */
  double *y, *dx, *mean, *invstd, *rm, *rv, *dg, *db; /* outputs, rm/rv in and out */
  bool update;
  dynb_status st;
} rep_job;

static dynb_status link_allgather(dynb__replica_link *link, dynb_ctx *ctx, const double *mine,
                                  size_t n, double *all) {
  rep_job *j = link->user;
  return j->t->allgather(j->t, link->index, ctx, mine, n, all);
}

static void *run_rep(void *p) {
  rep_job *j = p;
  dynb_ctx *ctx = j->ctx;
  int64_t d4[4] = {j->n, j->c, j->h, j->w}, dc[1] = {j->c};
  dynb__tensor x = tu_upload(ctx, j->dt, 4, d4, j->x), dy = tu_upload(ctx, j->dt, 4, d4, j->dy);
  dynb__tensor y = tu_upload(ctx, j->dt, 4, d4, NULL), dx = tu_upload(ctx, j->dt, 4, d4, NULL);
  dynb__tensor g = tu_upload(ctx, j->dt, 1, dc, j->gamma), b = tu_upload(ctx, j->dt, 1, dc, j->beta);
  dynb__tensor m = tu_upload(ctx, j->dt, 1, dc, NULL), is = tu_upload(ctx, j->dt, 1, dc, NULL);
  dynb__tensor rm = tu_upload(ctx, j->dt, 1, dc, j->rm), rv = tu_upload(ctx, j->dt, 1, dc, j->rv);
  dynb__tensor dg = tu_upload(ctx, j->dt, 1, dc, NULL), db = tu_upload(ctx, j->dt, 1, dc, NULL);
  /* The backward's staging, as dynb__group_create allocates it. */
  int64_t two_c[1] = {2 * (int64_t)j->c};
  j->link.staging = tu_upload(ctx, j->dt, 1, two_c, NULL);
  ctx->link = &j->link;
  j->st = dynb__bn_train_forward(ctx, &x, &g, &b, &y, &m, &is, j->update ? &rm : NULL,
                                 j->update ? &rv : NULL, DYNB_BN_MOMENTUM, DYNB_BN_EPS,
                                 DYNB_ACT_IDENTITY);
  if (j->st == DYNB_OK)
    j->st = dynb__bn_train_backward(ctx, &x, &dy, &g, &m, &is, &dx, &dg, &db, false, false);
  if (j->st != DYNB_OK) j->t->abort(j->t, j->link.index, j->st, dynb_ctx_last_error(ctx));
  ctx->link = NULL;
  if (j->st == DYNB_OK) {
    tu_download(ctx, &y, j->y), tu_download(ctx, &dx, j->dx);
    tu_download(ctx, &m, j->mean), tu_download(ctx, &is, j->invstd);
    tu_download(ctx, &rm, j->rm), tu_download(ctx, &rv, j->rv);
    tu_download(ctx, &dg, j->dg), tu_download(ctx, &db, j->db);
  }
  dynb__tensor *all[] = {&x, &dy, &y, &dx, &g, &b, &m, &is, &rm, &rv, &dg, &db, &j->link.staging};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) dynb__tensor_release(all[i]);
  return NULL;
}

/* Outputs over the global batch: y and dx in sample order; mean, invstd,
 * running statistics as every replica has them (checked equal); dgamma and
 * dbeta summed over replicas, as the group sums gradients. */
typedef struct outs {
  double *y, *dx, *mean, *invstd, *rm, *rv, *dg, *db;
} outs;

static void run_group(dynb_dtype dt, const gshape *g, const double *x, const double *dy,
                      const double *gamma, const double *beta, const double *rm0,
                      const double *rv0, bool update, outs *o) {
  dynb__transport *t;
  assert_int_equal(dynb__transport_local_create(g->r, &t), DYNB_OK);
  size_t per = (size_t)(g->c * g->h * g->w), c = (size_t)g->c;
  rep_job jobs[MAXR];
  double *vec = calloc((size_t)MAXR * 6 * c, sizeof *vec);
  size_t off = 0;
  for (int r = 0; r < g->r; r++) {
    rep_job *j = &jobs[r];
    memset(j, 0, sizeof *j);
    j->t = t, j->ctx = ctxs[r], j->dt = dt, j->update = update;
    j->link = (dynb__replica_link){g->r, r, link_allgather, j, {0}};
    j->n = g->shard[r], j->c = g->c, j->h = g->h, j->w = g->w;
    j->x = x + off * per, j->dy = dy + off * per, j->gamma = gamma, j->beta = beta;
    j->y = o->y + off * per, j->dx = o->dx + off * per;
    double *v = vec + (size_t)r * 6 * c;
    j->mean = v, j->invstd = v + c, j->rm = v + 2 * c, j->rv = v + 3 * c, j->dg = v + 4 * c;
    j->db = v + 5 * c;
    memcpy(j->rm, rm0, c * sizeof *rm0), memcpy(j->rv, rv0, c * sizeof *rv0);
    off += (size_t)g->shard[r];
  }
  pthread_t th[MAXR];
  for (int r = 0; r < g->r; r++) assert_int_equal(pthread_create(&th[r], NULL, run_rep, &jobs[r]), 0);
  for (int r = 0; r < g->r; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < g->r; r++) {
    if (jobs[r].st != DYNB_OK) fail_msg("replica %d: %s", r, dynb_ctx_last_error(ctxs[r]));
    /* Every replica merged the same values in the same order. */
    assert_memory_equal(jobs[r].mean, jobs[0].mean, 4 * c * sizeof(double));
  }
  memcpy(o->mean, jobs[0].mean, c * sizeof(double));
  memcpy(o->invstd, jobs[0].invstd, c * sizeof(double));
  memcpy(o->rm, jobs[0].rm, c * sizeof(double));
  memcpy(o->rv, jobs[0].rv, c * sizeof(double));
  for (size_t ch = 0; ch < c; ch++) {
    o->dg[ch] = o->db[ch] = 0;
    for (int r = 0; r < g->r; r++) o->dg[ch] += jobs[r].dg[ch], o->db[ch] += jobs[r].db[ch];
  }
  free(vec);
  t->destroy(t);
}

static outs outs_alloc(size_t p, size_t c) {
  outs o;
  o.y = malloc(p * sizeof(double)), o.dx = malloc(p * sizeof(double));
  o.mean = malloc(6 * c * sizeof(double));
  o.invstd = o.mean + c, o.rm = o.mean + 2 * c, o.rv = o.mean + 3 * c, o.dg = o.mean + 4 * c;
  o.db = o.mean + 5 * c;
  return o;
}

static void outs_free(outs *o) { free(o->y), free(o->dx), free(o->mean); }

static void open_contexts(void) {
  for (int r = 0; r < MAXR; r++) ctxs[r] = tu_ctx();
}

static void close_contexts(void) {
  for (int r = 0; r < MAXR; r++) dynb_ctx_free(ctxs[r]), ctxs[r] = NULL;
}

static double *rounded(tu_rng *r, dynb_dtype dt, size_t n, double lo, double hi) {
  double *x = tu_random(r, n, lo, hi);
  tu_round_to(dt, x, n);
  return x;
}

/* ---- against the one-device reference --------------------------------------- */

/* Error bounds, with u the unit roundoff: each replica's sums have at most
 * ceil(M_r / wg) + log2(wg) steps (as in test_norm.c), the merge is in
 * double, and 1/sqrt costs 11u; the outputs are O(1) (|xhat| <= √M, data in
 * ±2, gamma and dy in ±1.5), so every comparison is against
 * 16 · (steps + 11) · u · max(1, |xhat|max), 16 being the magnitude of the
 * terms that enter (x - mean up to 4, times gamma, times the xhat factor
 * squared at most in dx). */
static void group_case(dynb_dtype dt, const gshape *g) {
  tu_rng rng = tu_rng_seed(77 + (uint64_t)g->c * 13 + (uint64_t)g->h);
  int64_t n = total_n(g);
  int c = (int)g->c, s = (int)(g->h * g->w);
  size_t p = (size_t)n * (size_t)c * (size_t)s;
  double *x = rounded(&rng, dt, p, -2, 2), *dy = rounded(&rng, dt, p, -1.5, 1.5);
  double *gamma = rounded(&rng, dt, (size_t)c, 0.5, 1.5), *beta = rounded(&rng, dt, (size_t)c, -1, 1);
  double *rm = rounded(&rng, dt, (size_t)c, -0.5, 0.5), *rv = rounded(&rng, dt, (size_t)c, 0.5, 1.5);
  outs o = outs_alloc(p, (size_t)c), want = outs_alloc(p, (size_t)c);
  bool update = n * s > 1;
  run_group(dt, g, x, dy, gamma, beta, rm, rv, update, &o);
  memcpy(want.rm, rm, (size_t)c * sizeof *rm), memcpy(want.rv, rv, (size_t)c * sizeof *rv);
  ref_bn_train_forward((int)n, c, s, x, gamma, beta, DYNB_BN_MOMENTUM, DYNB_BN_EPS, want.y,
                       want.mean, want.invstd, update ? want.rm : NULL, update ? want.rv : NULL);
  ref_bn_train_backward((int)n, c, s, x, dy, gamma, want.mean, want.invstd, want.dx, want.dg,
                        want.db);
  size_t wg = dynb__reduce_wg(ctxs[0]), most = 0;
  for (int r = 0; r < g->r; r++) most = (size_t)g->shard[r] > most ? (size_t)g->shard[r] : most;
  double steps = (double)((most * (size_t)s + wg - 1) / wg) + log2((double)wg) + 11;
  double xhat = 1;
  for (size_t i = 0; i < p; i++) {
    int ch = (int)((i / (size_t)s) % (size_t)c);
    xhat = fmax(xhat, fabs(x[i] - want.mean[ch]) * want.invstd[ch]);
  }
  double tol = 16 * steps * tu_unit(dt) * xhat;
  /* Sums over M elements (dgamma, dbeta) carry M times the per-term error. */
  double tol_sum = tol * (double)n * s;
  char what[96];
  snprintf(what, sizeof what, "%s r=%d c=%d %dx%d", dynb__dtype_name(dt), g->r, c, (int)g->h,
           (int)g->w);
  printf("%s:\n", what);
  tu_assert_close("y", o.y, want.y, p, 0, tol);
  tu_assert_close("mean", o.mean, want.mean, (size_t)c, 0, tol);
  tu_assert_close("invstd", o.invstd, want.invstd, (size_t)c, tol, 0);
  if (update) {
    tu_assert_close("running_mean", o.rm, want.rm, (size_t)c, 0, tol);
    tu_assert_close("running_var", o.rv, want.rv, (size_t)c, tol, tol);
  }
  tu_assert_close("dx", o.dx, want.dx, p, 0, tol * xhat);
  tu_assert_close("dgamma", o.dg, want.dg, (size_t)c, 0, tol_sum);
  tu_assert_close("dbeta", o.db, want.db, (size_t)c, 0, tol_sum);
  outs_free(&o), outs_free(&want);
  free(x), free(dy), free(gamma), free(beta), free(rm), free(rv);
}

static void ops_match_one_device_reference(void **state) {
  (void)state;
  open_contexts();
  for (size_t k = 0; k < NSHAPES; k++) group_case(DYNB_F32, &shapes[k]);
  if (dynb__check_real(ctxs[0], DYNB_F64) == DYNB_OK)
    for (size_t k = 0; k < NSHAPES; k++) group_case(DYNB_F64, &shapes[k]);
  close_contexts();
}

/* ---- backward against central differences ----------------------------------- */

typedef struct fd_ctx {
  int n, c, s;
  double *x, *gamma, *beta, *w, *y, *mean, *invstd;
} fd_ctx;

/* L = Σ w · y over the global batch, y from the one-device reference. */
static double fd_loss(void *user) {
  fd_ctx *f = user;
  ref_bn_train_forward(f->n, f->c, f->s, f->x, f->gamma, f->beta, DYNB_BN_MOMENTUM, DYNB_BN_EPS,
                       f->y, f->mean, f->invstd, NULL, NULL);
  return tu_dot(f->w, f->y, (size_t)f->n * (size_t)f->c * (size_t)f->s);
}

/* Step 1e-6, tolerance 1e-6 relative to max(1, |gradient|), as test_norm.c
 * argues for the one-device batch norm: |L| stays below ~100 here and no
 * channel has a variance under 1e-2. */
static void backward_matches_finite_differences(void **state) {
  (void)state;
  open_contexts();
  tu_require_real(ctxs[0], DYNB_F64);
  const gshape shapes_fd[] = {{2, {1, 2, 0}, 3, 7, 5}, {3, {3, 1, 2}, 2, 3, 3}};
  for (size_t k = 0; k < 2; k++) {
    const gshape *g = &shapes_fd[k];
    tu_rng rng = tu_rng_seed(5 + k);
    fd_ctx f;
    f.n = (int)total_n(g), f.c = (int)g->c, f.s = (int)(g->h * g->w);
    size_t p = (size_t)f.n * (size_t)f.c * (size_t)f.s, c = (size_t)f.c;
    f.x = tu_random(&rng, p, -2, 2), f.w = tu_random(&rng, p, -1.5, 1.5);
    f.gamma = tu_random(&rng, c, 0.5, 1.5), f.beta = tu_random(&rng, c, -1, 1);
    f.y = malloc(p * sizeof *f.y), f.mean = malloc(2 * c * sizeof *f.mean);
    f.invstd = f.mean + c;
    double *rm = calloc(c, sizeof *rm), *rv = calloc(c, sizeof *rv);
    outs o = outs_alloc(p, c);
    run_group(DYNB_F64, g, f.x, f.w, f.gamma, f.beta, rm, rv, false, &o);
    tu_check_gradient("sync bn d/dx", fd_loss, &f, f.x, p, o.dx, 1e-6, 1e-6, 300);
    tu_check_gradient("sync bn d/dgamma", fd_loss, &f, f.gamma, c, o.dg, 1e-6, 1e-6, 300);
    tu_check_gradient("sync bn d/dbeta", fd_loss, &f, f.beta, c, o.db, 1e-6, 1e-6, 300);
    outs_free(&o);
    free(f.x), free(f.w), free(f.gamma), free(f.beta), free(f.y), free(f.mean), free(rm), free(rv);
  }
  close_contexts();
}

/* ---- the pieces ------------------------------------------------------------------ */

/* The per-shard reduction kernel alone, against ref_bn_moments: mean and
 * M2 with (ceil(M / wg) + log2 wg) steps of u on terms up to 4 (x - shift)
 * and 16 ((x - mean)²), M2 relative to M · 16. */
static void partial_stats_kernel(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  const int64_t sh[][4] = {{1, 1, 1, 1}, {1, 3, 7, 5}, {5, 3, 1, 1}, {9, 2, 13, 17}};
  dynb_dtype dts[2] = {DYNB_F32, DYNB_F64};
  for (int k = 0; k < 2; k++) {
    if (dynb__check_real(ctx, dts[k]) != DYNB_OK) continue;
    for (size_t i = 0; i < 4; i++) {
      tu_rng rng = tu_rng_seed(9 + i);
      int n = (int)sh[i][0], c = (int)sh[i][1], s = (int)(sh[i][2] * sh[i][3]);
      size_t p = (size_t)n * (size_t)c * (size_t)s;
      double *x = rounded(&rng, dts[k], p, -1, 3);
      double *mean = malloc(4 * (size_t)c * sizeof *mean), *m2 = mean + c, *wm = mean + 2 * c;
      double *wq = mean + 3 * c;
      int64_t dc[1] = {c};
      dynb__tensor tx = tu_upload(ctx, dts[k], 4, sh[i], x);
      dynb__tensor tm = tu_upload(ctx, dts[k], 1, dc, NULL), tq = tu_upload(ctx, dts[k], 1, dc, NULL);
      dynb__launch l;
      TU_OK(ctx, dynb__launch_begin(&l, ctx, "normsync", "dynb_bn_partial_stats", dts[k]));
      dynb__arg_int(&l, n), dynb__arg_int(&l, c), dynb__arg_int(&l, s);
      dynb__arg_tensor(&l, &tx), dynb__arg_tensor(&l, &tm), dynb__arg_tensor(&l, &tq);
      size_t wg = dynb__reduce_wg(ctx), global = (size_t)c * wg;
      dynb__arg_local(&l, wg * dynb__dtype_size(dts[k]));
      TU_OK(ctx, dynb__launch_run(&l, 1, &global, &wg));
      tu_download(ctx, &tm, mean), tu_download(ctx, &tq, m2);
      ref_bn_moments(n, c, s, x, wm, wq);
      double steps = (double)(((size_t)n * (size_t)s + wg - 1) / wg) + log2((double)wg) + 2;
      double u = tu_unit(dts[k]);
      tu_assert_close("partial mean", mean, wm, (size_t)c, 0, 4 * steps * u);
      tu_assert_close("partial m2", m2, wq, (size_t)c, 0, 16 * steps * u * (double)n * s);
      dynb__tensor_release(&tx), dynb__tensor_release(&tm), dynb__tensor_release(&tq);
      free(x), free(mean);
    }
  }
  dynb_ctx_free(ctx);
}

/* The host merge of shard moments (Chan et al.) against the moments of the
 * whole data, on data far from zero (mean 1000) where E[x²] - mean² would
 * lose everything: 1e-12 relative is ~5000 u of double on sums of 96
 * terms, the merge itself adding a few u per replica. */
static void merge_matches_whole_batch(void **state) {
  (void)state;
  tu_rng rng = tu_rng_seed(3);
  const int c = 2, s = 4, shard[4] = {1, 5, 2, 4};
  int n = 12;
  double *x = tu_random(&rng, (size_t)n * c * s, 999, 1001);
  double all[4 * (2 * 2 + 1)], mean[2], m2[2], count, wm[2], wq[2];
  int off = 0;
  for (int r = 0; r < 4; r++) {
    double *blk = all + r * (2 * c + 1);
    ref_bn_moments(shard[r], c, s, x + (size_t)off * c * s, blk, blk + c);
    blk[2 * c] = (double)shard[r] * s;
    off += shard[r];
  }
  dynb__bn_merge_moments(4, c, all, mean, m2, &count);
  ref_bn_moments(n, c, s, x, wm, wq);
  assert_true(count == (double)n * s);
  tu_assert_close("merged mean", mean, wm, 2, 1e-12, 0);
  tu_assert_close("merged m2", m2, wq, 2, 1e-12, 0);
  free(x);
}

/* Replicas that disagree (here on the channel count) all fail with a
 * message, none waits forever. */
typedef struct bad_job {
  dynb__transport *t;
  dynb__replica_link link;
  dynb_ctx *ctx;
  int c;
  dynb_status st;
} bad_job;

static dynb_status bad_allgather(dynb__replica_link *link, dynb_ctx *ctx, const double *mine,
                                 size_t n, double *all) {
  bad_job *j = link->user;
  return j->t->allgather(j->t, link->index, ctx, mine, n, all);
}

static void *run_bad(void *p) {
  bad_job *j = p;
  int64_t d4[4] = {2, j->c, 3, 3}, dc[1] = {j->c};
  dynb__tensor x = tu_upload(j->ctx, DYNB_F32, 4, d4, NULL), y = tu_upload(j->ctx, DYNB_F32, 4, d4, NULL);
  dynb__tensor g = tu_upload(j->ctx, DYNB_F32, 1, dc, NULL), b = tu_upload(j->ctx, DYNB_F32, 1, dc, NULL);
  dynb__tensor m = tu_upload(j->ctx, DYNB_F32, 1, dc, NULL), is = tu_upload(j->ctx, DYNB_F32, 1, dc, NULL);
  j->ctx->link = &j->link;
  j->st = dynb__bn_train_forward(j->ctx, &x, &g, &b, &y, &m, &is, NULL, NULL, DYNB_BN_MOMENTUM,
                                 DYNB_BN_EPS, DYNB_ACT_IDENTITY);
  j->ctx->link = NULL;
  dynb__tensor *all[] = {&x, &y, &g, &b, &m, &is};
  for (size_t i = 0; i < 6; i++) dynb__tensor_release(all[i]);
  return NULL;
}

static void mismatch_fails_everywhere(void **state) {
  (void)state;
  open_contexts();
  dynb__transport *t;
  assert_int_equal(dynb__transport_local_create(2, &t), DYNB_OK);
  bad_job jobs[2];
  pthread_t th[2];
  for (int r = 0; r < 2; r++) {
    jobs[r] = (bad_job){t, {2, r, bad_allgather, &jobs[r], {0}}, ctxs[r], 2 + r, DYNB_OK};
    assert_int_equal(pthread_create(&th[r], NULL, run_bad, &jobs[r]), 0);
  }
  for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < 2; r++) {
    assert_int_not_equal(jobs[r].st, DYNB_OK);
    const char *msg = dynb_ctx_last_error(ctxs[r]);
    assert_true(strstr(msg, "disagree") || strstr(msg, "replica"));
  }
  t->destroy(t);
  close_contexts();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(merge_matches_whole_batch),
      cmocka_unit_test(partial_stats_kernel),
      cmocka_unit_test(ops_match_one_device_reference),
      cmocka_unit_test(backward_matches_finite_differences),
      cmocka_unit_test(mismatch_fails_everywhere),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
