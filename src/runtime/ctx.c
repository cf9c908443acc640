/* The context: device, OpenCL context and queue, allocator, log and the last
 * error. Everything a call needs lives here; the library has no globals. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <clblast_c.h>

#include "parallel/transport.h"
#include "runtime/kernels_embedded.h"
#include "runtime/runtime.h"

unsigned dynb_version_number(void) { return DYNB_VERSION_NUMBER; }
const char *dynb_version_string(void) { return DYNB_VERSION_STRING; }

static void *default_alloc(void *user, size_t bytes) {
  (void)user;
  return malloc(bytes);
}
static void default_free(void *user, void *ptr) {
  (void)user;
  free(ptr);
}

dynb_ctx_desc dynb_ctx_desc_default(void) {
  dynb_ctx_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = (uint32_t)sizeof d;
  return d;
}

void *dynb__alloc(dynb_ctx *ctx, size_t bytes) {
  if (dynb__fault_hit(ctx, DYNB__FAULT_ALLOC)) return NULL;
  return ctx->allocator.alloc_fn(ctx->allocator.user, bytes ? bytes : 1);
}

void *dynb__calloc(dynb_ctx *ctx, size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size) return NULL;
  void *p = dynb__alloc(ctx, count * size);
  if (p) memset(p, 0, count * size);
  return p;
}

void dynb__free(dynb_ctx *ctx, void *ptr) {
  if (ptr) ctx->allocator.free_fn(ctx->allocator.user, ptr);
}

char *dynb__strdup(dynb_ctx *ctx, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = dynb__alloc(ctx, n);
  if (p) memcpy(p, s, n);
  return p;
}

void dynb__log(dynb_ctx *ctx, dynb_log_level level, const char *fmt, ...) {
  if (!ctx->log_fn) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx->log_fn(ctx->log_user, level, buf);
}

dynb_status dynb__fail_at(dynb_ctx *ctx, dynb_status status, const char *file, int line,
                          const char *fmt, ...) {
  if (!ctx) return status;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
  va_end(ap);
  /* Debug builds say where the error was raised, as zstd's error macros do. */
  if (file && n >= 0 && (size_t)n < sizeof ctx->last_error) {
    const char *base = strrchr(file, '/');
    snprintf(ctx->last_error + n, sizeof ctx->last_error - (size_t)n, " [%s:%d]",
             base ? base + 1 : file, line);
  }
  ctx->last_status = status;
  dynb__log(ctx, DYNB_LOG_DEBUG, "%s: %s", dynb_status_name(status), ctx->last_error);
  return status;
}

dynb_status dynb__fail_prefixed(dynb_ctx *ctx, dynb_status status, const char *prefix) {
  /* The message is rewritten into last_error itself: format from a copy. */
  char why[sizeof ctx->last_error];
  snprintf(why, sizeof why, "%s", ctx->last_error);
  return dynb__fail_at(ctx, status, NULL, 0, "%s: %s", prefix, why);
}

dynb_status dynb__cl_fail(dynb_ctx *ctx, cl_int err, const char *what) {
  dynb_status st = DYNB_STATUS_OPENCL_ERROR;
  if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
      err == CL_INVALID_BUFFER_SIZE)
    st = DYNB_STATUS_OUT_OF_DEVICE_MEMORY;
  if (err == CL_OUT_OF_HOST_MEMORY) st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
  return dynb__fail(ctx, st, "%s failed: %s (%d)", what, dynb__cl_error_name(err), (int)err);
}

dynb_status dynb_ctx_last_status(const dynb_ctx *ctx) {
  return ctx ? ctx->last_status : DYNB_STATUS_MISUSE;
}

const char *dynb_ctx_last_error(const dynb_ctx *ctx) {
  if (!ctx) return "no context (NULL)";
  return ctx->last_status == DYNB_OK ? "no error" : ctx->last_error;
}

/* The default cache folder follows the XDG base-directory convention, the
 * one piece of the environment the library reads, as every desktop and HPC
 * tool that caches per user does. */
int dynb__choice_get(const dynb_ctx *ctx, uint64_t key) {
  for (size_t i = 0; i < ctx->nchoices; i++)
    if (ctx->choices[i].key == key) return ctx->choices[i].value;
  return -1;
}

dynb_status dynb__grow(dynb_ctx *ctx, void **items, size_t *cap, size_t n, size_t elem,
                       const char *what) {
  if (n < *cap) return DYNB_OK;
  size_t c = *cap ? 2 * *cap : 16;
  char *p = dynb__calloc(ctx, c, elem);
  DYNB_CHECK(ctx, p, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory for %zu %s", c, what);
  if (n) memcpy(p, *items, n * elem);
  dynb__free(ctx, *items);
  *items = p;
  *cap = c;
  return DYNB_OK;
}

dynb_status dynb__choice_put(dynb_ctx *ctx, uint64_t key, int value) {
  for (size_t i = 0; i < ctx->nchoices; i++)
    if (ctx->choices[i].key == key) {
      ctx->choices[i].value = value;
      return DYNB_OK;
    }
  DYNB_TRY(dynb__grow(ctx, (void **)&ctx->choices, &ctx->choices_cap, ctx->nchoices,
                      sizeof *ctx->choices, "choices"));
  ctx->choices[ctx->nchoices].key = key;
  ctx->choices[ctx->nchoices++].value = value;
  return DYNB_OK;
}

void dynb__ctx_inject_fault(dynb_ctx *ctx, dynb__fault_kind kind, uint64_t k) {
  ctx->faults.at[kind] = k;
  ctx->faults.count[kind] = 0;
  ctx->faults.fired[kind] = false;
  ctx->faults.track = true;
}

bool dynb__ctx_fault_fired(const dynb_ctx *ctx, dynb__fault_kind kind) {
  return ctx->faults.fired[kind];
}

size_t dynb__ctx_live_buffers(const dynb_ctx *ctx) { return atomic_load(&ctx->faults.live_buffers); }

double dynb__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *default_cache_dir(dynb_ctx *ctx) {
  const char *xdg = getenv("XDG_CACHE_HOME");
  const char *home = getenv("HOME");
  char buf[4096];
  if (xdg && xdg[0] == '/')
    snprintf(buf, sizeof buf, "%s/dynblocks", xdg);
  else if (home && home[0])
    snprintf(buf, sizeof buf, "%s/.cache/dynblocks", home);
  else
    return NULL;
  return dynb__strdup(ctx, buf);
}

/* The tuning cache: the desc's file, else tune.txt in the cache folder. */
static dynb_status tune_path(dynb_ctx *ctx, const char *file) {
  if (file && !file[0]) return DYNB_OK;
  if (!file && !ctx->cache_dir) return DYNB_OK;
  char buf[4096];
  if (!file) snprintf(buf, sizeof buf, "%s/tune.txt", ctx->cache_dir);
  ctx->tune_path = dynb__strdup(ctx, file ? file : buf);
  DYNB_CHECK(ctx, ctx->tune_path, DYNB_STATUS_OUT_OF_HOST_MEMORY, "cannot copy tune_cache");
  return DYNB_OK;
}

static dynb_status ctx_new(const dynb_ctx_desc *desc, bool plain, dynb_ctx **out) {
  dynb_ctx_desc d = dynb_ctx_desc_default();
  if (desc) {
    if (desc->struct_size < sizeof(uint32_t) || desc->struct_size > sizeof d)
      return DYNB_STATUS_INVALID_ARGUMENT;
    memcpy(&d, desc, desc->struct_size);
  }
  if (!d.allocator.alloc_fn != !d.allocator.free_fn) return DYNB_STATUS_INVALID_ARGUMENT;
  if (!d.allocator.alloc_fn) {
    d.allocator.alloc_fn = default_alloc;
    d.allocator.free_fn = default_free;
  }
  dynb_ctx *ctx = d.allocator.alloc_fn(d.allocator.user, sizeof *ctx);
  if (!ctx) return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  memset(ctx, 0, sizeof *ctx);
  ctx->allocator = d.allocator;
  ctx->log_fn = d.log_fn;
  ctx->log_user = d.log_user;
  *out = ctx;
  if (d.cache_dir == NULL)
    ctx->cache_dir = default_cache_dir(ctx);
  else if (d.cache_dir[0])
    ctx->cache_dir = dynb__strdup(ctx, d.cache_dir);
  if (d.cache_dir && d.cache_dir[0] && !ctx->cache_dir)
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "cannot copy cache_dir");
  if (!plain && tune_path(ctx, d.tune_cache) != DYNB_OK) return ctx->last_status;
  ctx->programs = dynb__calloc(ctx, (size_t)dynb__kernel_source_count * DYNB__REAL_KINDS,
                               sizeof *ctx->programs);
  if (!ctx->programs) return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory");
  return DYNB_OK;
}

/* Fills what both creation paths learn from the device. */
static void ctx_describe(dynb_ctx *ctx) {
  dynb__device_describe(ctx->platform, ctx->device, &ctx->info);
  dynb__limits *lim = &ctx->limits;
  /* The smallest values OpenCL 1.2 allows a device (the embedded profile's
   * for local memory) stand in where a query fails. */
  size_t wg = 1, items[3] = {1, 1, 1};
  cl_ulong local = 1024, alloc = 128u << 20;
  clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
  clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof items, items, NULL);
  clGetDeviceInfo(ctx->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
  clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof alloc, &alloc, NULL);
  lim->max_work_group = wg ? wg : 1;
  for (int i = 0; i < 3; i++) lim->max_items[i] = items[i] ? items[i] : 1;
  lim->local_mem = (size_t)local;
  lim->max_alloc = alloc;
}

static size_t lower(size_t have, size_t cap) { return cap && cap < have ? cap : have; }

void dynb__ctx_clamp_limits(dynb_ctx *ctx, const dynb__limits *cap) {
  dynb__limits *lim = &ctx->limits;
  lim->max_work_group = lower(lim->max_work_group, cap->max_work_group);
  for (int i = 0; i < 3; i++) lim->max_items[i] = lower(lim->max_items[i], cap->max_items[i]);
  lim->local_mem = lower(lim->local_mem, cap->local_mem);
  if (cap->max_alloc && cap->max_alloc < lim->max_alloc) lim->max_alloc = cap->max_alloc;
}

/* The tuning cache, then the CLBlast parameters it (or the built-in
 * table) names; a plain context gets neither. */
static dynb_status ctx_tune(dynb_ctx *ctx, bool plain) {
  if (plain) return DYNB_OK;
  DYNB_TRY(dynb__tune_load(ctx));
  return dynb__gemm_configure(ctx);
}

static dynb_status ctx_create(const dynb_ctx_desc *desc, bool plain, dynb_ctx **out) {
  if (!out) return DYNB_STATUS_INVALID_ARGUMENT;
  *out = NULL;
  dynb_status st = ctx_new(desc, plain, out);
  if (st != DYNB_OK) return st;
  dynb_ctx *ctx = *out;
  if (ctx->last_status != DYNB_OK) return ctx->last_status;
  char err[512];
  st = dynb__device_resolve(desc ? desc->device : NULL, &ctx->platform, &ctx->device, err,
                            sizeof err);
  if (st != DYNB_OK) return dynb__fail(ctx, st, "%s", err);
  cl_int e;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)ctx->platform, 0};
  ctx->context = clCreateContext(props, 1, &ctx->device, NULL, NULL, &e);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clCreateContext");
  ctx->queue = clCreateCommandQueue(ctx->context, ctx->device, 0, &e);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clCreateCommandQueue");
  ctx_describe(ctx);
  dynb__log(ctx, DYNB_LOG_INFO, "device: %s (%s)", ctx->info.device_name, ctx->info.platform_name);
  return ctx_tune(ctx, plain);
}

dynb_status dynb_ctx_create(const dynb_ctx_desc *desc, dynb_ctx **out) {
  return ctx_create(desc, false, out);
}

dynb_status dynb__ctx_create_plain(const dynb_ctx_desc *desc, dynb_ctx **out) {
  return ctx_create(desc, true, out);
}

dynb_status dynb_ctx_create_cl(const dynb_ctx_desc *desc, cl_context context,
                               cl_command_queue queue, dynb_ctx **out) {
  if (!out) return DYNB_STATUS_INVALID_ARGUMENT;
  *out = NULL;
  dynb_status st = ctx_new(desc, false, out);
  if (st != DYNB_OK) return st;
  dynb_ctx *ctx = *out;
  if (ctx->last_status != DYNB_OK) return ctx->last_status;
  DYNB_CHECK(ctx, context && queue, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_ctx_create_cl: context and queue must not be NULL");
  cl_context qctx = NULL;
  cl_int e = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clGetCommandQueueInfo(CL_QUEUE_CONTEXT)");
  DYNB_CHECK(ctx, qctx == context, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_ctx_create_cl: the queue does not belong to the context");
  cl_command_queue_properties qp = 0;
  clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof qp, &qp, NULL);
  DYNB_CHECK(ctx, !(qp & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE), DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_ctx_create_cl: the queue must be in-order");
  e = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof ctx->device, &ctx->device, NULL);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clGetCommandQueueInfo(CL_QUEUE_DEVICE)");
  clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof ctx->platform, &ctx->platform, NULL);
  /* Retained so that our release at free time balances; the caller's own
   * references are never touched. */
  clRetainContext(context);
  ctx->context = context;
  clRetainCommandQueue(queue);
  ctx->queue = queue;
  ctx_describe(ctx);
  return ctx_tune(ctx, false);
}

void dynb_ctx_free(dynb_ctx *ctx) {
  if (!ctx) return;
  /* The MPI transport (a vtable: the core library calls no MPI itself). */
  if (ctx->world) ctx->world->destroy(ctx->world);
  dynb__profile_release(ctx);
  if (ctx->queue) clFinish(ctx->queue);
  if (ctx->programs) dynb__programs_release(ctx);
  /* CLBlast keeps the programs it built for this context in a process-wide
   * cache, each holding a reference to the context, until the cache is
   * cleared or destroyed at exit. Cleared here, the context really goes
   * with its dynb_ctx, and no OpenCL call is left for CLBlast's exit-time
   * destructor: under Oclgrind that one wrote into Oclgrind's already
   * destroyed thread-local call stack and corrupted the heap ("malloc():
   * unsorted double linked list corrupted" after test_linear and test_gemm
   * passed; valgrind: invalid write in clReleaseProgram called from
   * clblast::Cache::~Cache, in a block freed by __call_tls_dtors). CLBlast
   * has no per-context clear: other live contexts rebuild their CLBlast
   * programs on their next GEMM, which costs time, never correctness. */
  if (ctx->context) CLBlastClearCache();
  if (ctx->queue) clReleaseCommandQueue(ctx->queue);
  if (ctx->context) clReleaseContext(ctx->context);
  dynb__free(ctx, ctx->programs);
  dynb__free(ctx, ctx->choices);
  dynb__tune_release(ctx);
  dynb__free(ctx, ctx->gemm_forms);
  dynb__free(ctx, ctx->gemm_rec);
  dynb__free(ctx, ctx->cache_dir);
  dynb_allocator a = ctx->allocator;
  a.free_fn(a.user, ctx);
}

dynb_status dynb_ctx_device_info(dynb_ctx *ctx, dynb_device_info *info) {
  if (!ctx) return DYNB_STATUS_MISUSE;
  DYNB_CHECK(ctx, info && ctx->device, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_ctx_device_info: no device or NULL info");
  *info = ctx->info;
  return DYNB_OK;
}

cl_command_queue dynb_ctx_cl_queue(dynb_ctx *ctx) { return ctx ? ctx->queue : NULL; }
cl_context dynb_ctx_cl_context(dynb_ctx *ctx) { return ctx ? ctx->context : NULL; }
