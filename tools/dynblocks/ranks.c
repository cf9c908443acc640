/* dynblocks train under mpirun (issue 12, docs/distributed.md): MPI is
 * started only when the launcher's environment says mpirun started this
 * process, each rank joins MPI_COMM_WORLD (dynb_mpi_join) with one device,
 * and the ranks prove at start that they run the same command on the same
 * spec and data. In a build without MPI (no DYNB_HAVE_MPI) every function
 * here is a stub and train refuses mpirun runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "parallel/group.h"

#ifdef DYNB_HAVE_MPI
#include <mpi.h>

#include "dynblocks/mpi.h"

bool cli_ranks_available(void) { return true; }

int cli_ranks_start(int *rank, int *local_rank) {
  int size = 1;
  MPI_Init(NULL, NULL);
  MPI_Comm_rank(MPI_COMM_WORLD, rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  /* The rank among those on this node: the default device index. */
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, local_rank);
  MPI_Comm_free(&node);
  return size;
}

bool cli_ranks_join(const char *cmd, dynb_ctx *ctx) {
  if (dynb_mpi_join(ctx, MPI_COMM_WORLD) == DYNB_OK) return true;
  cli_fail(cmd, ctx);
  return false;
}

void cli_ranks_end(void) {
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
  return h;
}

bool cli_ranks_same(const char *cmd, dynb_ctx *ctx, int argc, char **argv, dynb__net *net,
                    const dynb__dataset *const *sets, int nsets) {
  uint64_t h[3] = {UINT64_C(0xcbf29ce484222325), UINT64_C(0xcbf29ce484222325),
                   UINT64_C(0xcbf29ce484222325)};
  /* The flags, but for the device choice, which is each rank's own. */
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--device") == 0 || strcmp(argv[i], "--devices") == 0) {
      i++;
      continue;
    }
    if (strncmp(argv[i], "--device=", 9) == 0 || strncmp(argv[i], "--devices=", 10) == 0) continue;
    h[0] = fnv(h[0], argv[i], strlen(argv[i]) + 1);
  }
  /* The network (its spec and initial or resumed values). */
  double *v = NULL;
  size_t cap = 0;
  dynb_status st = DYNB_OK;
  for (size_t i = 0; st == DYNB_OK && i < net->ntensors; i++) {
    size_t n = dynb__tensor_numel(&net->tensors[i].value);
    if (n > cap) {
      double *w = realloc(v, n * sizeof *w);
      if (!w) {
        st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
        break;
      }
      v = w, cap = n;
    }
    st = dynb__tensor_read_f64(ctx, &net->tensors[i].value, v);
    if (st == DYNB_OK) h[1] = fnv(h[1], v, n * sizeof *v);
  }
  free(v);
  /* The data, after the split into training and validation. */
  for (int k = 0; k < nsets; k++) {
    const dynb__dataset *d = sets[k];
    size_t per = (size_t)d->c * (size_t)d->h * (size_t)d->w;
    h[2] = fnv(h[2], &d->n, sizeof d->n);
    h[2] = fnv(h[2], d->images, (size_t)d->n * per * sizeof *d->images);
    h[2] = fnv(h[2], d->labels, (size_t)d->n * sizeof *d->labels);
  }
  dynb__transport *w = ctx->world;
  if (st != DYNB_OK) {
    w->abort(w, ctx->world_rank, st, "no host memory to compare the ranks' networks");
    fprintf(stderr, "dynblocks %s: no host memory\n", cmd);
    return false;
  }
  double mine[6], all[6 * DYNB_MAX_REPLICAS];
  for (int k = 0; k < 3; k++) mine[2 * k] = (double)(h[k] >> 32), mine[2 * k + 1] = (double)(h[k] & 0xffffffffu);
  if (w->allgather(w, ctx->world_rank, ctx, mine, 6, all) != DYNB_OK) {
    if (ctx->world_rank == 0) cli_fail(cmd, ctx);
    return false;
  }
  static const char *const what[3] = {
      "flags differ from rank 0's (every rank must run the same command, but for --device/--devices)",
      "network (spec, seed or resumed checkpoint) differs from rank 0's",
      "data differ from rank 0's (the same files must be on every node)"};
  for (int r = 1; r < w->replicas; r++)
    for (int k = 0; k < 3; k++)
      if (all[6 * r + 2 * k] != all[2 * k] || all[6 * r + 2 * k + 1] != all[2 * k + 1]) {
        if (ctx->world_rank == 0) fprintf(stderr, "dynblocks %s: rank %d's %s\n", cmd, r, what[k]);
        return false;
      }
  return true;
}

void cli_ranks_fatal(void) { MPI_Abort(MPI_COMM_WORLD, 1); }

/* Every value of net's tensors into (read) or from (!read) v, in order. */
static dynb_status tensors(dynb__net *net, double *v, bool read) {
  for (size_t i = 0, at = 0; i < net->ntensors; i++) {
    dynb__tensor *t = &net->tensors[i].value;
    DYNB_TRY(read ? dynb__tensor_read_f64(net->ctx, t, v + at) : dynb__tensor_write_f64(net->ctx, t, v + at));
    at += dynb__tensor_numel(t);
  }
  return DYNB_OK;
}

dynb_status cli_ranks_test(dynb_ctx *ctx, dynb__net *shape, dynb__net *best,
                           const int64_t *shard, const dynb__dataset *test, double *loss,
                           double *acc) {
  dynb__transport *w = ctx->world;
  const int rank = ctx->world_rank, size = w->replicas;
  size_t total = 0;
  for (size_t i = 0; i < shape->ntensors; i++) total += dynb__tensor_numel(&shape->tensors[i].value);
  double *v = malloc(total * sizeof *v);
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  dynb_status st = v ? DYNB_OK : dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  /* Rank 0's best model, everywhere (the other ranks may not see its file). */
  if (st == DYNB_OK && rank == 0)
    st = best ? tensors(best, v, true) : dynb__fail(ctx, DYNB_STATUS_IO_ERROR, "no best model to test");
  if (st != DYNB_OK) w->abort(w, rank, st, dynb_ctx_last_error(ctx));
  if (st == DYNB_OK) st = w->broadcast(w, rank, 0, ctx, v, total);
  /* This rank's contiguous part, in proportion to its shard. */
  int64_t batch = 0, before = 0;
  for (int k = 0; k < size; k++) batch += shard[k], before += k < rank ? shard[k] : 0;
  int64_t lo = (int64_t)((double)test->n * (double)before / (double)batch);
  int64_t hi = rank == size - 1 ? test->n
                                : (int64_t)((double)test->n * (double)(before + shard[rank]) / (double)batch);
  double mine[2] = {0, 0}, all[2 * DYNB_MAX_REPLICAS];
  if (st == DYNB_OK) {
    st = dynb__net_create(ctx, &shape->spec, DYNB_F32, &net);
    if (st == DYNB_OK) st = tensors(net, v, false);
    if (st == DYNB_OK) st = dynb__plan_build(net, shard[rank], DYNB_MEMORY_STORE, &plan);
    dynb__dataset part = *test;
    size_t per = (size_t)part.c * (size_t)part.h * (size_t)part.w;
    part.n = hi - lo;
    part.images = test->images + (size_t)lo * per;
    part.labels = test->labels + lo;
    if (st == DYNB_OK && part.n > 0) st = dynb__evaluate(plan, &part, &mine[0], &mine[1]);
    mine[0] *= (double)part.n, mine[1] *= (double)part.n;
    if (st != DYNB_OK) w->abort(w, rank, st, dynb_ctx_last_error(ctx));
    if (st == DYNB_OK) st = w->allgather(w, rank, ctx, mine, 2, all);
  }
  if (st == DYNB_OK) {
    double sl = 0, sa = 0;
    for (int k = 0; k < size; k++) sl += all[2 * k], sa += all[2 * k + 1];
    *loss = test->n ? sl / (double)test->n : 0;
    *acc = test->n ? sa / (double)test->n : 0;
  }
  dynb__plan_free(plan);
  dynb__net_free(net);
  free(v);
  return st;
}

void cli_ranks_abort(dynb_ctx *ctx, const char *why) {
  if (ctx && ctx->world) ctx->world->abort(ctx->world, ctx->world_rank, DYNB_STATUS_INVALID_ARGUMENT, why);
}

#else

bool cli_ranks_available(void) { return false; }
int cli_ranks_start(int *rank, int *local_rank) {
  *rank = *local_rank = 0;
  return 1;
}
bool cli_ranks_join(const char *cmd, dynb_ctx *ctx) {
  (void)cmd, (void)ctx;
  return false;
}
void cli_ranks_end(void) {}
bool cli_ranks_same(const char *cmd, dynb_ctx *ctx, int argc, char **argv, dynb__net *net,
                    const dynb__dataset *const *sets, int nsets) {
  (void)cmd, (void)ctx, (void)argc, (void)argv, (void)net, (void)sets, (void)nsets;
  return false;
}
void cli_ranks_abort(dynb_ctx *ctx, const char *why) { (void)ctx, (void)why; }
void cli_ranks_fatal(void) {}
dynb_status cli_ranks_test(dynb_ctx *ctx, dynb__net *shape, dynb__net *best,
                           const int64_t *shard, const dynb__dataset *test, double *loss,
                           double *acc) {
  (void)shape, (void)best, (void)shard, (void)test, (void)loss, (void)acc;
  return dynb__fail(ctx, DYNB_STATUS_UNSUPPORTED, "this build has no MPI support");
}

#endif
