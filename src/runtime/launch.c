/* Kernel launches: arguments collected in order, errors reported once,
 * and buffer arguments dropped once enqueued (runtime.h says why). */
#include <stdio.h>

#include "runtime/runtime.h"

dynb_status dynb__launch_begin(dynb__launch *l, dynb_ctx *ctx, const char *family,
                               const char *name, dynb_dtype real) {
  l->ctx = ctx;
  l->family = family;
  l->name = name;
  l->real = real;
  l->nargs = 0;
  l->err = CL_SUCCESS;
  l->buffers = 0;
  l->kernel = NULL;
  l->local_bytes = 0;
  l->limits.work_group = 1;
  l->limits.local_bytes = 0;
  return dynb__kernel_with_limits(ctx, family, name, real, &l->kernel, &l->limits);
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

void dynb__arg_local(dynb__launch *l, size_t bytes) {
  l->local_bytes += bytes;
  set_arg(l, bytes, NULL);
}

/* The most work-items one group of this launch's kernel may have. */
static size_t group_limit(const dynb__launch *l) {
  size_t dev = l->ctx->limits.max_work_group, k = l->limits.work_group;
  return k < dev ? k : dev;
}

/* Checks an explicit local size and the local memory against the limits
 * before enqueueing: a GPU refuses what PoCL runs, and the refusal
 * (CL_INVALID_WORK_GROUP_SIZE, CL_OUT_OF_RESOURCES) would not say why. */
static dynb_status check_limits(const dynb__launch *l, cl_uint dims, const size_t *local) {
  dynb_ctx *ctx = l->ctx;
  const dynb__limits *lim = &ctx->limits;
  size_t local_mem = l->limits.local_bytes + l->local_bytes;
  DYNB_CHECK(ctx, local_mem <= lim->local_mem, DYNB_STATUS_UNSUPPORTED,
             "kernel %s needs %zu bytes of local memory (%zu of its own, %zu of arguments); "
             "the device has %zu (CL_DEVICE_LOCAL_MEM_SIZE)",
             l->name, local_mem, l->limits.local_bytes, l->local_bytes, lim->local_mem);
  if (!local) return DYNB_OK;
  size_t items = 1;
  for (cl_uint i = 0; i < dims; i++) {
    DYNB_CHECK(ctx, local[i] <= lim->max_items[i < 3 ? i : 2], DYNB_STATUS_UNSUPPORTED,
               "kernel %s: work-group size %zu in dimension %u exceeds the device's %zu "
               "(CL_DEVICE_MAX_WORK_ITEM_SIZES)",
               l->name, local[i], (unsigned)i, lim->max_items[i < 3 ? i : 2]);
    items *= local[i] ? local[i] : 1;
  }
  DYNB_CHECK(ctx, items <= group_limit(l), DYNB_STATUS_UNSUPPORTED,
             "kernel %s: work-group of %zu items exceeds the limit of %zu (kernel %zu: "
             "CL_KERNEL_WORK_GROUP_SIZE; device %zu: CL_DEVICE_MAX_WORK_GROUP_SIZE)",
             l->name, items, group_limit(l), l->limits.work_group, lim->max_work_group);
  return DYNB_OK;
}

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
  DYNB_TRY(check_limits(l, dims, local));
  size_t g[3];
  for (cl_uint i = 0; i < dims; i++) {
    g[i] = global[i];
    if (local && local[i] > 0) g[i] = (g[i] + local[i] - 1) / local[i] * local[i];
    if (g[i] == 0) return DYNB_OK; /* nothing to do; OpenCL rejects empty ranges */
  }
  /* An event only while profiling (profile.c). */
  cl_event ev = NULL;
  cl_int e = clEnqueueNDRangeKernel(l->ctx->queue, l->kernel, dims, NULL, g, local, 0, NULL,
                                    l->ctx->profile ? &ev : NULL);
  if (e != CL_SUCCESS) {
    char what[160];
    snprintf(what, sizeof what, "enqueue of kernel %s", l->name);
    return dynb__cl_fail(l->ctx, e, what);
  }
  return ev ? dynb__profile_add(l->ctx, ev, NULL, l->family, l->name) : DYNB_OK;
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

/* The largest power of two no larger than DYNB__REDUCE_MAX and `cap`;
 * 1 when cap is 0. */
static size_t pow2_within(size_t cap) {
  size_t wg = DYNB__REDUCE_MAX;
  while (wg > 1 && wg > cap) wg /= 2;
  return wg;
}

size_t dynb__reduce_wg(dynb_ctx *ctx) {
  const dynb__limits *lim = &ctx->limits;
  size_t cap = lim->max_work_group < lim->max_items[0] ? lim->max_work_group : lim->max_items[0];
  return pow2_within(cap);
}

size_t dynb__launch_reduce_wg(const dynb__launch *l, size_t per_item) {
  size_t cap = dynb__reduce_wg(l->ctx);
  if (l->limits.work_group < cap) cap = l->limits.work_group;
  /* Local memory left once the kernel's own and the arguments set so far
   * are counted. */
  size_t used = l->limits.local_bytes + l->local_bytes, have = l->ctx->limits.local_mem;
  size_t room = have > used ? have - used : 0;
  if (per_item && room / per_item < cap) cap = room / per_item;
  return pow2_within(cap);
}
