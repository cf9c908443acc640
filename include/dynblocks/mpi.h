/** @file dynblocks/mpi.h
 * Training across the ranks of an MPI program (library dynblocks_mpi, CMake
 * target dynblocks::dynblocks_mpi, pkg-config dynblocks_mpi; the core
 * library has no MPI dependency). Each rank holds one replica of the model
 * on its context's device; the ranks of the communicator given here train
 * one model on the global batch, with the semantics of several devices in
 * one process (docs/distributed.md). Not part of dynblocks/dynblocks.h: it
 * needs the MPI headers. */
#ifndef DYNBLOCKS_MPI_H
#define DYNBLOCKS_MPI_H

#include <mpi.h>

#include "dynblocks/context.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Makes training on `ctx` one replica of a data-parallel group over the
 * ranks of `comm`, the host's own communicator (MPI_COMM_WORLD or any other;
 * the library works on a duplicate, so it never matches the host's
 * messages). Collective over `comm`: every rank calls it, after MPI_Init and
 * with its own context. Replica order is rank order. Free the context
 * before MPI_Finalize; the duplicate goes with it.
 * @return DYNB_STATUS_MISUSE when MPI is not initialised or the context has
 * already joined; DYNB_STATUS_INVALID_ARGUMENT for MPI_COMM_NULL or more
 * ranks than replicas a group holds. Since: 0.1 */
dynb_status dynb_mpi_join(dynb_ctx *ctx, MPI_Comm comm);

#ifdef __cplusplus
}
#endif

#endif
