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

#endif
