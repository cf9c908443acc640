/** @file dynblocks/cl.h
 * Opt-in OpenCL interop: contexts on the caller's own cl_context and queue,
 * tensors on the caller's own cl_mem buffers. Include only where the OpenCL
 * headers are available (link the OpenCL ICD loader too). */
#ifndef DYNBLOCKS_CL_H
#define DYNBLOCKS_CL_H

#ifndef CL_TARGET_OPENCL_VERSION
/** The OpenCL API level dynblocks uses (1.2), unless the includer chose one. */
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "dynblocks/dynblocks.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Creates a context that runs on the caller's `context` and in-order
 * `queue` (both borrowed: retained while the dynblocks context lives, never
 * released beyond that). desc->device is ignored: the queue's device is
 * used. Work dynblocks enqueues is ordered with the caller's own commands on
 * the same queue.
 * @return as dynb_ctx_create, and DYNB_STATUS_INVALID_ARGUMENT for NULL
 *         handles, a queue of another context or an out-of-order queue. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_create_cl(const dynb_ctx_desc *desc, cl_context context,
                                        cl_command_queue queue, dynb_ctx **out);

/** The context's OpenCL queue (borrowed; valid while the context lives).
 * @return NULL for a NULL context. Since: 0.1 */
DYNB_API cl_command_queue dynb_ctx_cl_queue(dynb_ctx *ctx);
/** The context's OpenCL context (borrowed; valid while the context lives).
 * @return NULL for a NULL context. Since: 0.1 */
DYNB_API cl_context dynb_ctx_cl_context(dynb_ctx *ctx);

/** Wraps the caller's buffer as a tensor: elements `offset` … of `mem`,
 * read as `dtype` in the given shape. The caller keeps owning `mem`; the
 * tensor holds one more reference (clRetainMemObject) until
 * dynb_tensor_free, so the buffer outlives it even if the caller releases
 * theirs first.
 * @param ctx the context.
 * @param mem a buffer of the context's cl_context.
 * @param offset first element (in elements of dtype, not bytes).
 * @param dtype element type.
 * @param ndim 1..DYNB_MAX_DIMS.
 * @param dims (borrowed) `ndim` dimensions; the view must fit in `mem`.
 * @param out (out) the tensor; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL ctx), DYNB_STATUS_INVALID_ARGUMENT
 *         (NULL mem, a buffer of another context, bad dims),
 *         DYNB_STATUS_BUFFER_TOO_SMALL, DYNB_STATUS_SIZE_OVERFLOW. Since: 0.1 */
DYNB_API dynb_status dynb_tensor_wrap_cl(dynb_ctx *ctx, cl_mem mem, size_t offset,
                                         dynb_dtype dtype, int ndim, const int64_t *dims,
                                         dynb_tensor **out);

/** The buffer and element offset behind a tensor (borrowed: valid while the
 * tensor lives); each output may be NULL.
 * @return DYNB_OK, or DYNB_STATUS_MISUSE for a NULL tensor. Since: 0.1 */
DYNB_API dynb_status dynb_tensor_cl_mem(const dynb_tensor *t, cl_mem *mem, size_t *offset);

#ifdef __cplusplus
}
#endif
#endif
