/* Opt-in OpenCL interop: contexts on the caller's own cl_context and queue.
 * Include only where the OpenCL headers are available. */
#ifndef DYNBLOCKS_CL_H
#define DYNBLOCKS_CL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "dynblocks/dynblocks.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates a context that runs on the caller's `context` and in-order
 * `queue` (both borrowed: retained while the dynblocks context lives, never
 * released beyond that). desc->device is ignored: the queue's device is used.
 * @return as dynb_ctx_create. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_create_cl(const dynb_ctx_desc *desc, cl_context context,
                                        cl_command_queue queue, dynb_ctx **out);

/* The context's OpenCL queue (borrowed; valid while the context lives). */
DYNB_API cl_command_queue dynb_ctx_cl_queue(dynb_ctx *ctx);
/* The context's OpenCL context (borrowed; valid while the context lives). */
DYNB_API cl_context dynb_ctx_cl_context(dynb_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
