/* Kernel launches: arguments collected in order, errors reported once,
 * and buffer arguments dropped once enqueued (runtime.h says why). */
#include <stdio.h>

#include "runtime/runtime.h"

dynb_status dynb__launch_begin(dynb__launch *l, dynb_ctx *ctx, const char *family,
                               const char *name, dynb_dtype real) {
  l->ctx = ctx;
  l->name = name;
  l->real = real;
  l->nargs = 0;
  l->err = CL_SUCCESS;
  l->buffers = 0;
  l->kernel = NULL;
  return dynb__kernel(ctx, family, name, real, &l->kernel);
}

static void set_arg(dynb__launch *l, size_t size, const void *value) {
  if (l->err != CL_SUCCESS) return;
  l->err = clSetKernelArg(l->kernel, l->nargs++, size, value);
}

void dynb__arg_tensor(dynb__launch *l, const dynb__tensor *t) {
  cl_ulong off = t->offset;
  /* The mask of buffer arguments has 64 bits; no kernel comes near that
   * (the most is 22 arguments, dynb_bn_train_forward). */
  if (l->err == CL_SUCCESS && l->nargs >= 64) l->err = CL_INVALID_ARG_INDEX;
  if (l->err == CL_SUCCESS) l->buffers |= UINT64_C(1) << l->nargs;
  set_arg(l, sizeof(cl_mem), &t->mem);
  set_arg(l, sizeof off, &off);
}

void dynb__arg_int(dynb__launch *l, int v) {
  cl_int x = v;
  set_arg(l, sizeof x, &x);
}

void dynb__arg_ulong(dynb__launch *l, uint64_t v) {
  cl_ulong x = v;
  set_arg(l, sizeof x, &x);
}

void dynb__arg_real(dynb__launch *l, double v) {
  if (l->real == DYNB_F64) {
    cl_double x = v;
    set_arg(l, sizeof x, &x);
  } else {
    cl_float x = (cl_float)v;
    set_arg(l, sizeof x, &x);
  }
}

void dynb__arg_local(dynb__launch *l, size_t bytes) { set_arg(l, bytes, NULL); }

/* Sets the buffer arguments set so far to NULL. The enqueued command keeps
 * the values it was enqueued with (OpenCL captures arguments at enqueue),
 * so this only stops the cached kernel from holding the buffers. */
static void drop_buffers(dynb__launch *l) {
  const cl_mem none = NULL;
  for (cl_uint i = 0; i < 64 && l->buffers >> i; i++)
    if (l->buffers >> i & 1) clSetKernelArg(l->kernel, i, sizeof none, &none);
  l->buffers = 0;
}

static dynb_status enqueue(dynb__launch *l, cl_uint dims, const size_t *global,
                           const size_t *local) {
  if (l->err != CL_SUCCESS) {
    char what[160];
    snprintf(what, sizeof what, "clSetKernelArg(%s, arg %u)", l->name, (unsigned)(l->nargs - 1));
    return dynb__cl_fail(l->ctx, l->err, what);
  }
  size_t g[3];
  for (cl_uint i = 0; i < dims; i++) {
    g[i] = global[i];
    if (local && local[i] > 0) g[i] = (g[i] + local[i] - 1) / local[i] * local[i];
    if (g[i] == 0) return DYNB_OK; /* nothing to do; OpenCL rejects empty ranges */
  }
  cl_int e = clEnqueueNDRangeKernel(l->ctx->queue, l->kernel, dims, NULL, g, local, 0, NULL, NULL);
  if (e != CL_SUCCESS) {
    char what[160];
    snprintf(what, sizeof what, "enqueue of kernel %s", l->name);
    return dynb__cl_fail(l->ctx, e, what);
  }
  return DYNB_OK;
}

dynb_status dynb__launch_run(dynb__launch *l, cl_uint dims, const size_t *global,
                             const size_t *local) {
  dynb_status st = enqueue(l, dims, global, local);
  drop_buffers(l);
  return st;
}

dynb_status dynb__launch_1d(dynb__launch *l, size_t n) {
  size_t g = (n + 63) / 64 * 64;
  return dynb__launch_run(l, 1, &g, NULL);
}

size_t dynb__reduce_wg(dynb_ctx *ctx) {
  size_t wg = 256;
  while (wg > ctx->max_work_group) wg /= 2;
  return wg ? wg : 1;
}
