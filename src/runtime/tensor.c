/* Device tensors: buffers with a shape, and the argument checks every op
 * runs before it enqueues anything. */
#include <string.h>

#include "runtime/runtime.h"

size_t dynb__dtype_size(dynb_dtype dtype) {
  switch (dtype) {
    case DYNB_F32: return 4;
    case DYNB_F64: return 8;
    case DYNB_I32: return 4;
  }
  return 0;
}

const char *dynb__dtype_name(dynb_dtype dtype) {
  switch (dtype) {
    case DYNB_F32: return "f32";
    case DYNB_F64: return "f64";
    case DYNB_I32: return "i32";
  }
  return "?";
}

size_t dynb__tensor_numel(const dynb__tensor *t) {
  size_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= (size_t)t->dims[i];
  return n;
}

/* Element count with overflow and positivity checks. */
static dynb_status shape_numel(dynb_ctx *ctx, int ndim, const int64_t *dims, size_t *out) {
  DYNB_CHECK(ctx, ndim >= 1 && ndim <= DYNB__MAX_DIMS, DYNB_STATUS_INVALID_ARGUMENT,
             "tensor rank %d outside 1..%d", ndim, DYNB__MAX_DIMS);
  size_t n = 1;
  for (int i = 0; i < ndim; i++) {
    DYNB_CHECK(ctx, dims[i] >= 1, DYNB_STATUS_INVALID_ARGUMENT,
               "tensor dimension %d is %lld; every dimension must be >= 1", i, (long long)dims[i]);
    DYNB_CHECK(ctx, (uint64_t)dims[i] <= SIZE_MAX / n, DYNB_STATUS_SIZE_OVERFLOW,
               "tensor element count overflows");
    n *= (size_t)dims[i];
  }
  /* Kernels index within a tensor with 32-bit ints. */
  DYNB_CHECK(ctx, n <= (size_t)INT32_MAX, DYNB_STATUS_SIZE_OVERFLOW,
             "tensor of %zu elements exceeds the 2^31-1 element limit", n);
  *out = n;
  return DYNB_OK;
}

dynb__tensor dynb__tensor_view(cl_mem mem, size_t offset, dynb_dtype dtype, int ndim,
                               const int64_t *dims) {
  dynb__tensor t;
  memset(&t, 0, sizeof t);
  t.mem = mem;
  t.offset = offset;
  t.dtype = dtype;
  t.ndim = ndim < 0 ? 0 : ndim > DYNB__MAX_DIMS ? DYNB__MAX_DIMS : ndim;
  for (int i = 0; i < t.ndim; i++) t.dims[i] = dims[i];
  if (mem) clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof t.cap_bytes, &t.cap_bytes, NULL);
  return t;
}

dynb_status dynb__tensor_wrap(dynb_ctx *ctx, cl_mem mem, size_t offset, dynb_dtype dtype,
                              int ndim, const int64_t *dims, dynb__tensor *out) {
  memset(out, 0, sizeof *out);
  cl_context owner = NULL;
  cl_int e = clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clGetMemObjectInfo(CL_MEM_CONTEXT)");
  DYNB_CHECK(ctx, owner == ctx->context, DYNB_STATUS_INVALID_ARGUMENT,
             "the buffer belongs to another cl_context");
  dynb__tensor view = dynb__tensor_view(mem, offset, dtype, ndim, dims);
  DYNB_TRY(dynb__tensor_check(ctx, &view, "wrapped buffer", dtype, ndim));
  e = clRetainMemObject(mem);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clRetainMemObject");
  *out = view;
  return DYNB_OK;
}

dynb__tensor dynb__tensor_sub(const dynb__tensor *base, size_t offset, int ndim,
                              const int64_t *dims) {
  dynb__tensor t = *base;
  t.offset = base->offset + offset;
  t.ndim = ndim < 0 ? 0 : ndim > DYNB__MAX_DIMS ? DYNB__MAX_DIMS : ndim;
  for (int i = 0; i < DYNB__MAX_DIMS; i++) t.dims[i] = i < t.ndim ? dims[i] : 0;
  return t;
}

dynb__tensor dynb__cursor_take(dynb__cursor *c, int ndim, const int64_t *dims) {
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
  c->at = (c->at + 31) / 32 * 32;
  dynb__tensor t = dynb__tensor_sub(c->base, c->at, ndim, dims);
  c->at += n ? n : 1;
  return t;
}

dynb__tensor dynb__cursor_flat(dynb__cursor *c, size_t count) {
  int64_t n = (int64_t)count;
  return dynb__cursor_take(c, 1, &n);
}

/* Fault tests count live buffers; tests release everything before the
 * context, so the context outlives every callback. */
static void CL_CALLBACK buffer_destroyed(cl_mem mem, void *user) {
  (void)mem;
  atomic_fetch_sub(&((dynb_ctx *)user)->faults.live_buffers, 1);
}

dynb_status dynb__tensor_alloc(dynb_ctx *ctx, dynb_dtype dtype, int ndim, const int64_t *dims,
                               dynb__tensor *out) {
  memset(out, 0, sizeof *out);
  size_t n = 0;
  DYNB_TRY(shape_numel(ctx, ndim, dims, &n));
  cl_int e;
  size_t bytes = n * dynb__dtype_size(dtype);
  DYNB_CHECK(ctx, bytes <= ctx->limits.max_alloc, DYNB_STATUS_OUT_OF_DEVICE_MEMORY,
             "a tensor of %zu bytes exceeds the device's largest allocation, %llu bytes "
             "(CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
             bytes, (unsigned long long)ctx->limits.max_alloc);
  if (dynb__fault_hit(ctx, DYNB__FAULT_BUFFER))
    return dynb__cl_fail(ctx, CL_MEM_OBJECT_ALLOCATION_FAILURE, "clCreateBuffer (injected fault)");
  cl_mem mem = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &e);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clCreateBuffer");
  if (ctx->faults.track && clSetMemObjectDestructorCallback(mem, buffer_destroyed, ctx) == CL_SUCCESS)
    atomic_fetch_add(&ctx->faults.live_buffers, 1);
  *out = dynb__tensor_view(mem, 0, dtype, ndim, dims);
  out->cap_bytes = bytes;
  return DYNB_OK;
}

void dynb__tensor_release(dynb__tensor *t) {
  if (t->mem) clReleaseMemObject(t->mem);
  memset(t, 0, sizeof *t);
}

static size_t tensor_bytes(const dynb__tensor *t) {
  return dynb__tensor_numel(t) * dynb__dtype_size(t->dtype);
}

dynb_status dynb__tensor_write(dynb_ctx *ctx, const dynb__tensor *t, const void *host) {
  cl_int e = clEnqueueWriteBuffer(ctx->queue, t->mem, CL_TRUE,
                                  t->offset * dynb__dtype_size(t->dtype), tensor_bytes(t), host,
                                  0, NULL, NULL);
  return e == CL_SUCCESS ? DYNB_OK : dynb__cl_fail(ctx, e, "clEnqueueWriteBuffer");
}

dynb_status dynb__tensor_read(dynb_ctx *ctx, const dynb__tensor *t, void *host) {
  cl_int e = clEnqueueReadBuffer(ctx->queue, t->mem, CL_TRUE,
                                 t->offset * dynb__dtype_size(t->dtype), tensor_bytes(t), host, 0,
                                 NULL, NULL);
  return e == CL_SUCCESS ? DYNB_OK : dynb__cl_fail(ctx, e, "clEnqueueReadBuffer");
}

/* F64 tensors pass straight through; others go through a staging copy. */
dynb_status dynb__tensor_write_f64(dynb_ctx *ctx, const dynb__tensor *t, const double *host) {
  if (t->dtype == DYNB_F64) return dynb__tensor_write(ctx, t, host);
  size_t n = dynb__tensor_numel(t);
  void *buf = dynb__calloc(ctx, n, dynb__dtype_size(t->dtype));
  DYNB_CHECK(ctx, buf, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for %zu elements", n);
  for (size_t i = 0; i < n; i++) {
    if (t->dtype == DYNB_F32)
      ((float *)buf)[i] = (float)host[i];
    else
      ((int32_t *)buf)[i] = (int32_t)host[i];
  }
  dynb_status st = dynb__tensor_write(ctx, t, buf);
  dynb__free(ctx, buf);
  return st;
}

dynb_status dynb__tensor_read_f64(dynb_ctx *ctx, const dynb__tensor *t, double *host) {
  if (t->dtype == DYNB_F64) return dynb__tensor_read(ctx, t, host);
  size_t n = dynb__tensor_numel(t);
  void *buf = dynb__calloc(ctx, n, dynb__dtype_size(t->dtype));
  DYNB_CHECK(ctx, buf, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for %zu elements", n);
  dynb_status st = dynb__tensor_read(ctx, t, buf);
  for (size_t i = 0; st == DYNB_OK && i < n; i++)
    host[i] = t->dtype == DYNB_F32 ? ((float *)buf)[i] : ((int32_t *)buf)[i];
  dynb__free(ctx, buf);
  return st;
}

dynb_status dynb__tensor_copy(dynb_ctx *ctx, const dynb__tensor *src, const dynb__tensor *dst) {
  DYNB_CHECK(ctx, src->dtype == dst->dtype && dynb__tensor_numel(src) == dynb__tensor_numel(dst),
             DYNB_STATUS_SHAPE_MISMATCH, "copy: tensors differ in dtype or size");
  size_t es = dynb__dtype_size(src->dtype);
  cl_event ev = NULL;
  cl_int e = clEnqueueCopyBuffer(ctx->queue, src->mem, dst->mem, src->offset * es,
                                 dst->offset * es, tensor_bytes(src), 0, NULL,
                                 ctx->profile ? &ev : NULL);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clEnqueueCopyBuffer");
  return ev ? dynb__profile_add(ctx, ev, NULL, "buffer", "copy") : DYNB_OK;
}

dynb_status dynb__tensor_zero(dynb_ctx *ctx, const dynb__tensor *t) {
  /* A one-byte zero pattern fills any element type and any offset. */
  const unsigned char zero = 0;
  cl_event ev = NULL;
  cl_int e = clEnqueueFillBuffer(ctx->queue, t->mem, &zero, 1,
                                 t->offset * dynb__dtype_size(t->dtype), tensor_bytes(t), 0, NULL,
                                 ctx->profile ? &ev : NULL);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clEnqueueFillBuffer");
  return ev ? dynb__profile_add(ctx, ev, NULL, "buffer", "fill") : DYNB_OK;
}

dynb_status dynb__tensor_check(dynb_ctx *ctx, const dynb__tensor *t, const char *name,
                               dynb_dtype dtype, int ndim) {
  DYNB_CHECK(ctx, t != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: NULL tensor", name);
  DYNB_CHECK(ctx, t->mem != NULL, DYNB_STATUS_INVALID_ARGUMENT, "%s: tensor has no buffer", name);
  DYNB_CHECK(ctx, t->dtype == dtype, DYNB_STATUS_INVALID_ARGUMENT, "%s: dtype %s, expected %s",
             name, dynb__dtype_name(t->dtype), dynb__dtype_name(dtype));
  DYNB_CHECK(ctx, ndim < 0 || t->ndim == ndim, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: rank %d, expected %d", name, t->ndim, ndim);
  size_t n = 0;
  dynb_status st = shape_numel(ctx, t->ndim, t->dims, &n);
  if (st != DYNB_OK) return dynb__fail_prefixed(ctx, st, name);
  size_t es = dynb__dtype_size(dtype);
  DYNB_CHECK(ctx, t->offset <= SIZE_MAX / es && n <= SIZE_MAX / es - t->offset,
             DYNB_STATUS_SIZE_OVERFLOW, "%s: offset + size overflows", name);
  DYNB_CHECK(ctx, (t->offset + n) * es <= t->cap_bytes, DYNB_STATUS_BUFFER_TOO_SMALL,
             "%s: view of %zu elements at offset %zu needs %zu bytes; buffer holds %zu", name, n,
             t->offset, (t->offset + n) * es, t->cap_bytes);
  return DYNB_OK;
}

dynb_status dynb__tensor_check_same(dynb_ctx *ctx, const dynb__tensor *a, const char *an,
                                    const dynb__tensor *b, const char *bn) {
  int same = a->ndim == b->ndim;
  for (int i = 0; same && i < a->ndim; i++) same = a->dims[i] == b->dims[i];
  DYNB_CHECK(ctx, same, DYNB_STATUS_SHAPE_MISMATCH, "%s and %s differ in shape", an, bn);
  return DYNB_OK;
}

dynb_status dynb__check_real(dynb_ctx *ctx, dynb_dtype real) {
  DYNB_CHECK(ctx, real == DYNB_F32 || real == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "kernels are built for f32 or f64, not %s", dynb__dtype_name(real));
  DYNB_CHECK(ctx, real != DYNB_F64 || ctx->info.has_fp64, DYNB_STATUS_UNSUPPORTED,
             "device %s has no double precision", ctx->info.device_name);
  return DYNB_OK;
}

dynb_status dynb__finish(dynb_ctx *ctx) {
  cl_int e = clFinish(ctx->queue);
  return e == CL_SUCCESS ? DYNB_OK : dynb__cl_fail(ctx, e, "clFinish");
}
