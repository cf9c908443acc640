/** @file dynblocks/tensor.h
 * Tensors: a device buffer, an element offset, an element type and a shape.
 * A tensor is either created by the library (which owns its buffer) or
 * wraps the caller's cl_mem (dynb_tensor_wrap_cl in dynblocks/cl.h), which
 * the caller keeps owning. Shapes are row-major, images N×C×H×W. */
#ifndef DYNBLOCKS_TENSOR_H
#define DYNBLOCKS_TENSOR_H

#include "dynblocks/context.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Element types. F32 and F64 are the two real types networks run in; I32
 * holds class labels. */
typedef enum dynb_dtype {
  DYNB_F32 = 0, /**< IEEE single precision (C float, Fortran real(c_float)) */
  DYNB_F64 = 1, /**< IEEE double precision (C double, Fortran real(c_double)) */
  DYNB_I32 = 2  /**< 32-bit signed integer (int32_t, Fortran integer(c_int32_t)) */
} dynb_dtype;

/** Most dimensions a tensor has. */
#define DYNB_MAX_DIMS 4

/** A device tensor; its context records the errors of calls on it. */
typedef struct dynb_tensor dynb_tensor;

/** Creates a tensor with a buffer of its own, every element zero.
 * @param ctx the context whose device holds it.
 * @param dtype element type.
 * @param ndim 1..DYNB_MAX_DIMS.
 * @param dims (borrowed) `ndim` dimensions, each >= 1.
 * @param out (out) the tensor; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL ctx), DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_SIZE_OVERFLOW, DYNB_STATUS_OUT_OF_DEVICE_MEMORY. Since: 0.1 */
DYNB_API dynb_status dynb_tensor_create(dynb_ctx *ctx, dynb_dtype dtype, int ndim,
                                        const int64_t *dims, dynb_tensor **out);

/** Releases a tensor (and its buffer if the library created it; a wrapped
 * cl_mem only loses the reference the tensor held). Accepts NULL. Since: 0.1 */
DYNB_API void dynb_tensor_free(dynb_tensor *t);

/** The tensor's element type, rank and dimensions; each output may be NULL.
 * @param t the tensor.
 * @param dtype (out) element type.
 * @param ndim (out) rank.
 * @param dims (out) DYNB_MAX_DIMS entries: the dimensions, then zeros.
 * @return DYNB_OK, or DYNB_STATUS_MISUSE for a NULL tensor. Since: 0.1 */
DYNB_API dynb_status dynb_tensor_shape(const dynb_tensor *t, dynb_dtype *dtype, int *ndim,
                                       int64_t *dims);

/** Copies host memory into the whole tensor; blocks until done.
 * @param t the tensor.
 * @param host (borrowed) elements of the tensor's dtype, row-major.
 * @param bytes size of `host`: must equal elements × element size.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT (NULL host),
 *         DYNB_STATUS_SHAPE_MISMATCH (wrong byte count), DYNB_STATUS_OPENCL_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_tensor_write(dynb_tensor *t, const void *host, size_t bytes);

/** Copies the whole tensor into host memory; blocks until done (and so
 * waits for every command enqueued before it).
 * @param t the tensor.
 * @param host (out) room for elements of the tensor's dtype.
 * @param bytes size of `host`: must equal elements × element size.
 * @return as dynb_tensor_write. Since: 0.1 */
DYNB_API dynb_status dynb_tensor_read(dynb_tensor *t, void *host, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
