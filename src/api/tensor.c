/* Public tensors: the library's own buffers, or views of the caller's
 * cl_mem, over the runtime's tensor views. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"

const char *dynb__api_dims_str(char *buf, size_t len, int ndim, const int64_t *dims) {
  size_t at = 0;
  at += (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < ndim && at < len; i++)
    at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? ", " : "", (long long)dims[i]);
  if (at < len) snprintf(buf + at, len - at, "]");
  return buf;
}

dynb_status dynb__api_tensor_check(dynb_ctx *ctx, const char *what, const dynb_tensor *t,
                                   dynb_dtype dtype, int ndim, const int64_t *dims) {
  DYNB_CHECK(ctx, t, DYNB_STATUS_INVALID_ARGUMENT, "%s is NULL", what);
  DYNB_CHECK(ctx, t->ctx == ctx, DYNB_STATUS_INVALID_ARGUMENT,
             "%s belongs to another context", what);
  DYNB_CHECK(ctx, t->t.dtype == dtype, DYNB_STATUS_INVALID_ARGUMENT, "%s is %s; expected %s",
             what, dynb__dtype_name(t->t.dtype), dynb__dtype_name(dtype));
  bool same = t->t.ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = t->t.dims[i] == dims[i];
  char got[96], want[96];
  DYNB_CHECK(ctx, same, DYNB_STATUS_SHAPE_MISMATCH, "%s has shape %s; expected %s", what,
             dynb__api_dims_str(got, sizeof got, t->t.ndim, t->t.dims),
             dynb__api_dims_str(want, sizeof want, ndim, dims));
  return DYNB_OK;
}

static dynb_tensor *tensor_new(dynb_ctx *ctx) {
  dynb_tensor *t = dynb__calloc(ctx, 1, sizeof *t);
  if (t) t->ctx = ctx;
  return t;
}

dynb_status dynb_tensor_create(dynb_ctx *ctx, dynb_dtype dtype, int ndim, const int64_t *dims,
                               dynb_tensor **out) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_tensor_create: out is NULL");
  *out = NULL;
  DYNB_CHECK(ctx, dims, DYNB_STATUS_INVALID_ARGUMENT, "dynb_tensor_create: dims is NULL");
  DYNB_CHECK(ctx, dtype == DYNB_F32 || dtype == DYNB_F64 || dtype == DYNB_I32,
             DYNB_STATUS_INVALID_ARGUMENT, "dynb_tensor_create: unknown dtype %d", (int)dtype);
  dynb_tensor *t = tensor_new(ctx);
  DYNB_CHECK(ctx, t, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_tensor_create: no host memory");
  dynb_status st = dynb__tensor_alloc(ctx, dtype, ndim, dims, &t->t);
  if (st == DYNB_OK) st = dynb__tensor_zero(ctx, &t->t);
  if (st != DYNB_OK) {
    dynb_tensor_free(t);
    return st;
  }
  t->owned = true;
  *out = t;
  return DYNB_OK;
}

dynb_status dynb_tensor_wrap_cl(dynb_ctx *ctx, cl_mem mem, size_t offset, dynb_dtype dtype,
                                int ndim, const int64_t *dims, dynb_tensor **out) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_tensor_wrap_cl: out is NULL");
  *out = NULL;
  DYNB_CHECK(ctx, mem && dims, DYNB_STATUS_INVALID_ARGUMENT, "dynb_tensor_wrap_cl: %s is NULL",
             mem ? "dims" : "mem");
  DYNB_CHECK(ctx, dtype == DYNB_F32 || dtype == DYNB_F64 || dtype == DYNB_I32,
             DYNB_STATUS_INVALID_ARGUMENT, "dynb_tensor_wrap_cl: unknown dtype %d", (int)dtype);
  DYNB_CHECK(ctx, ndim >= 1 && ndim <= DYNB_MAX_DIMS, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_tensor_wrap_cl: rank %d outside 1..%d", ndim, DYNB_MAX_DIMS);
  dynb_tensor *t = tensor_new(ctx);
  DYNB_CHECK(ctx, t, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_tensor_wrap_cl: no host memory");
  dynb_status st = dynb__tensor_wrap(ctx, mem, offset, dtype, ndim, dims, &t->t);
  if (st != DYNB_OK) {
    dynb__free(ctx, t);
    return dynb__fail_prefixed(ctx, st, "dynb_tensor_wrap_cl");
  }
  *out = t;
  return DYNB_OK;
}

void dynb_tensor_free(dynb_tensor *t) {
  if (!t) return;
  /* Both kinds hold one reference to the buffer: the one clCreateBuffer
   * gave, or the one wrapping retained. */
  dynb__tensor_release(&t->t);
  dynb__free(t->ctx, t);
}

dynb_status dynb_tensor_shape(const dynb_tensor *t, dynb_dtype *dtype, int *ndim,
                              int64_t *dims) {
  DYNB__API_HANDLE(t);
  if (dtype) *dtype = t->t.dtype;
  if (ndim) *ndim = t->t.ndim;
  for (int i = 0; dims && i < DYNB_MAX_DIMS; i++) dims[i] = i < t->t.ndim ? t->t.dims[i] : 0;
  return DYNB_OK;
}

dynb_status dynb_tensor_cl_mem(const dynb_tensor *t, cl_mem *mem, size_t *offset) {
  DYNB__API_HANDLE(t);
  if (mem) *mem = t->t.mem;
  if (offset) *offset = t->t.offset;
  return DYNB_OK;
}

/* Host copies take the exact byte count, so that a wrong element type or
 * shape on the caller's side fails instead of overrunning. */
static dynb_status check_host(const dynb_tensor *t, const char *call, const void *host,
                              size_t bytes) {
  size_t need = dynb__tensor_numel(&t->t) * dynb__dtype_size(t->t.dtype);
  DYNB_CHECK(t->ctx, host, DYNB_STATUS_INVALID_ARGUMENT, "%s: host is NULL", call);
  DYNB_CHECK(t->ctx, bytes == need, DYNB_STATUS_SHAPE_MISMATCH,
             "%s: %zu bytes given; the %s tensor of %zu elements has %zu", call, bytes,
             dynb__dtype_name(t->t.dtype), dynb__tensor_numel(&t->t), need);
  return DYNB_OK;
}

dynb_status dynb_tensor_write(dynb_tensor *t, const void *host, size_t bytes) {
  DYNB__API_HANDLE(t);
  DYNB_TRY(check_host(t, "dynb_tensor_write", host, bytes));
  return dynb__tensor_write(t->ctx, &t->t, host);
}

dynb_status dynb_tensor_read(dynb_tensor *t, void *host, size_t bytes) {
  DYNB__API_HANDLE(t);
  DYNB_TRY(check_host(t, "dynb_tensor_read", host, bytes));
  return dynb__tensor_read(t->ctx, &t->t, host);
}
