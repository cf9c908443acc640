/* dynblocks in an MPI program: every rank opens a context on its own device
 * and joins the host's communicator (dynblocks/mpi.h, libdynblocks_mpi).
 * Training on the joined contexts is then one model over the ranks; today
 * the trainer that uses it is reached through `dynblocks train` (under
 * mpirun), not yet through the public API. Run: mpirun -np 2 ./mpi_join */
#include <dynblocks/dynblocks.h>
#include <dynblocks/mpi.h>
#include <stdio.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  /* The program's own communicator: the library takes whatever it is given. */
  MPI_Comm comm;
  MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &comm);
  dynb_ctx *ctx = NULL;
  dynb_status st = dynb_ctx_create(NULL, &ctx);
  if (!st) st = dynb_mpi_join(ctx, comm);
  if (st)
    fprintf(stderr, "rank %d: dynblocks: %s\n", rank, dynb_ctx_last_error(ctx));
  else
    printf("rank %d of %d joined\n", rank, size);
  dynb_ctx_free(ctx); /* before MPI_Finalize: the library's duplicate goes with it */
  MPI_Comm_free(&comm);
  MPI_Finalize();
  return st != DYNB_OK;
}
