/* Building kernel programs: one per kernel family and real type, on first
 * use, through an on-disk binary cache.
 *
 * The cache is keyed by a hash of everything that changes the binary: the
 * sources, the build options, the library version, the platform, device and
 * driver. Entries are written to a temporary file and renamed into place, so
 * two processes starting at once never see a half-written entry; an entry
 * that fails its checksum or does not load is rebuilt from source. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/kernels_embedded.h"
#include "runtime/runtime.h"

#define CACHE_MAGIC "DYNBPRG1"
/* No real program binary comes near this; a larger length is corruption. */
#define CACHE_MAX_BYTES ((uint64_t)256 << 20)

uint64_t dynb__fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= UINT64_C(0x100000001b3);
  }
  return h;
}

static uint64_t hash_str(uint64_t h, const char *s) { return dynb__fnv1a(h, s, strlen(s) + 1); }

static int family_index(const char *family) {
  for (int i = 0; i < dynb__kernel_source_count; i++)
    if (strcmp(dynb__kernel_sources[i].family, family) == 0) return i;
  return -1;
}

static void build_options(dynb_dtype real, char *buf, size_t cap) {
  snprintf(buf, cap, "-cl-std=CL1.2 -DDYNB_REAL_DOUBLE=%d", real == DYNB_F64 ? 1 : 0);
}

static void cache_path(dynb_ctx *ctx, const char *label, const char *source, dynb_dtype real,
                       const char *options, char *buf, size_t cap) {
  uint64_t h = DYNB__FNV_SEED;
  h = hash_str(h, dynb__kernel_prelude);
  h = hash_str(h, source);
  h = hash_str(h, options);
  h = hash_str(h, DYNB_VERSION_STRING);
  h = hash_str(h, ctx->info.platform_name);
  h = hash_str(h, ctx->info.device_name);
  h = hash_str(h, ctx->info.device_version);
  h = hash_str(h, ctx->info.driver_version);
  snprintf(buf, cap, "%s/%s-%s-%016llx.bin", ctx->cache_dir, label, dynb__dtype_name(real),
           (unsigned long long)h);
}

void dynb__mkdir_p(const char *dir) {
  char tmp[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof tmp) return;
  memcpy(tmp, dir, n + 1);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    mkdir(tmp, 0755);
    *p = '/';
  }
  mkdir(tmp, 0755);
}

static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Reads a cache entry; returns a buffer the caller frees, or NULL when the
 * entry is missing or corrupt. */
static unsigned char *cache_read(dynb_ctx *ctx, const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char head[24];
  unsigned char *data = NULL;
  if (fread(head, 1, sizeof head, f) != sizeof head || memcmp(head, CACHE_MAGIC, 8) != 0)
    goto corrupt;
  uint64_t n = get_u64(head + 8), want = get_u64(head + 16);
  if (n == 0 || n > CACHE_MAX_BYTES) goto corrupt;
  data = dynb__alloc(ctx, (size_t)n);
  if (!data) goto corrupt;
  if (fread(data, 1, (size_t)n, f) != n || fgetc(f) != EOF) goto corrupt;
  if (dynb__fnv1a(DYNB__FNV_SEED, data, (size_t)n) != want) goto corrupt;
  fclose(f);
  *len = (size_t)n;
  return data;
corrupt:
  dynb__log(ctx, DYNB_LOG_WARN, "program cache entry %s is corrupt; rebuilding", path);
  dynb__free(ctx, data);
  fclose(f);
  return NULL;
}

static void cache_write(dynb_ctx *ctx, const char *path, const unsigned char *data, size_t n) {
  char tmp[4200];
  static const char *what = "program cache";
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%p", path, (long)getpid(), (const void *)data);
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    dynb__log(ctx, DYNB_LOG_WARN, "%s: cannot create %s: %s", what, tmp, strerror(errno));
    return;
  }
  unsigned char head[24];
  memcpy(head, CACHE_MAGIC, 8);
  put_u64(head + 8, n);
  put_u64(head + 16, dynb__fnv1a(DYNB__FNV_SEED, data, n));
  int ok = fwrite(head, 1, sizeof head, f) == sizeof head && fwrite(data, 1, n, f) == n &&
           fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, path) != 0) {
    dynb__log(ctx, DYNB_LOG_WARN, "%s: cannot write %s", what, path);
    remove(tmp);
  }
}

static dynb_status build_failed(dynb_ctx *ctx, cl_program prog, const char *label,
                                const char *options, cl_int err) {
  char log[3000];
  size_t n = 0;
  log[0] = 0;
  clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, &n);
  log[sizeof log - 1] = 0;
  return dynb__fail(ctx, DYNB_STATUS_BUILD_FAILED,
                    "building kernels/%s.cl (%s) failed: %s (%d); build log:\n%s", label, options,
                    dynb__cl_error_name(err), (int)err, log);
}

static cl_program program_from_binary(dynb_ctx *ctx, const unsigned char *bin, size_t n,
                                      const char *options) {
  cl_int e, bst;
  cl_program p = clCreateProgramWithBinary(ctx->context, 1, &ctx->device, &n, &bin, &bst, &e);
  if (e != CL_SUCCESS) return NULL;
  if (bst != CL_SUCCESS || clBuildProgram(p, 1, &ctx->device, options, NULL, NULL) != CL_SUCCESS) {
    clReleaseProgram(p);
    return NULL;
  }
  return p;
}

static unsigned char *program_binary(dynb_ctx *ctx, cl_program p, size_t *n) {
  size_t size = 0;
  if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS ||
      size == 0)
    return NULL;
  unsigned char *bin = dynb__alloc(ctx, size);
  if (!bin) return NULL;
  if (clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) != CL_SUCCESS) {
    dynb__free(ctx, bin);
    return NULL;
  }
  *n = size;
  return bin;
}

dynb_status dynb__program_build(dynb_ctx *ctx, const char *label, const char *source,
                                dynb_dtype real, cl_program *out) {
  DYNB_TRY(dynb__check_real(ctx, real));
  if (dynb__fault_hit(ctx, DYNB__FAULT_BUILD))
    return dynb__fail(ctx, DYNB_STATUS_BUILD_FAILED, "building kernels/%s.cl: injected fault", label);
  char options[128], path[4096];
  build_options(real, options, sizeof options);
  if (ctx->cache_dir) {
    cache_path(ctx, label, source, real, options, path, sizeof path);
    size_t n = 0;
    unsigned char *bin = cache_read(ctx, path, &n);
    if (bin) {
      *out = program_from_binary(ctx, bin, n, options);
      dynb__free(ctx, bin);
      if (*out) return DYNB_OK;
      dynb__log(ctx, DYNB_LOG_WARN, "program cache entry %s does not load; rebuilding", path);
    }
  }
  const char *srcs[2] = {dynb__kernel_prelude, source};
  cl_int e;
  cl_program p = clCreateProgramWithSource(ctx->context, 2, srcs, NULL, &e);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clCreateProgramWithSource");
  e = clBuildProgram(p, 1, &ctx->device, options, NULL, NULL);
  if (e != CL_SUCCESS) {
    dynb_status st = build_failed(ctx, p, label, options, e);
    clReleaseProgram(p);
    return st;
  }
  if (ctx->cache_dir) {
    size_t n = 0;
    unsigned char *bin = program_binary(ctx, p, &n);
    if (bin) {
      dynb__mkdir_p(ctx->cache_dir);
      cache_write(ctx, path, bin, n);
      dynb__free(ctx, bin);
    }
  }
  *out = p;
  return DYNB_OK;
}

static void program_clear(dynb_ctx *ctx, dynb__program *pr) {
  for (cl_uint i = 0; i < pr->nkernels; i++) {
    if (pr->kernels && pr->kernels[i]) clReleaseKernel(pr->kernels[i]);
    if (pr->names) dynb__free(ctx, pr->names[i]);
  }
  dynb__free(ctx, pr->kernels);
  dynb__free(ctx, pr->names);
  dynb__free(ctx, pr->limits);
  if (pr->program) clReleaseProgram(pr->program);
  memset(pr, 0, sizeof *pr);
}

/* Creates every kernel of a built program once, so that later lookups are
 * a short string search and never an OpenCL call. */
static dynb_status program_kernels(dynb_ctx *ctx, dynb__program *pr) {
  cl_uint n = 0;
  cl_int e = clCreateKernelsInProgram(pr->program, 0, NULL, &n);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clCreateKernelsInProgram");
  pr->kernels = dynb__calloc(ctx, n, sizeof *pr->kernels);
  pr->names = dynb__calloc(ctx, n, sizeof *pr->names);
  pr->limits = dynb__calloc(ctx, n, sizeof *pr->limits);
  if (!pr->kernels || !pr->names || !pr->limits)
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory");
  e = clCreateKernelsInProgram(pr->program, n, pr->kernels, NULL);
  if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clCreateKernelsInProgram");
  pr->nkernels = n;
  for (cl_uint i = 0; i < n; i++) {
    char name[128];
    if (clGetKernelInfo(pr->kernels[i], CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL) !=
        CL_SUCCESS)
      name[0] = 0;
    name[sizeof name - 1] = 0;
    pr->names[i] = dynb__strdup(ctx, name);
    if (!pr->names[i]) return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory");
    /* Queried now, before any argument is set, so that the local memory
     * is the kernel's own. A failed query leaves the safe answer: one
     * work-item, and no local memory of its own. */
    size_t wg = 1;
    cl_ulong local = 0;
    clGetKernelWorkGroupInfo(pr->kernels[i], ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg,
                             &wg, NULL);
    clGetKernelWorkGroupInfo(pr->kernels[i], ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof local,
                             &local, NULL);
    pr->limits[i].work_group = wg ? wg : 1;
    pr->limits[i].local_bytes = (size_t)local;
  }
  return DYNB_OK;
}

dynb_status dynb__kernel(dynb_ctx *ctx, const char *family, const char *name, dynb_dtype real,
                         cl_kernel *out) {
  return dynb__kernel_with_limits(ctx, family, name, real, out, NULL);
}

dynb_status dynb__kernel_with_limits(dynb_ctx *ctx, const char *family, const char *name,
                                     dynb_dtype real, cl_kernel *out, dynb__kernel_limits *lim) {
  DYNB_TRY(dynb__check_real(ctx, real));
  int fam = family_index(family);
  DYNB_CHECK(ctx, fam >= 0, DYNB_STATUS_INVALID_ARGUMENT, "no kernel family '%s'", family);
  dynb__program *pr = &ctx->programs[fam * DYNB__REAL_KINDS + (int)real];
  if (!pr->program) {
    DYNB_TRY(dynb__program_build(ctx, dynb__kernel_sources[fam].family,
                                 dynb__kernel_sources[fam].source, real, &pr->program));
    dynb_status st = program_kernels(ctx, pr);
    if (st != DYNB_OK) {
      program_clear(ctx, pr);
      return st;
    }
  }
  for (cl_uint i = 0; i < pr->nkernels; i++)
    if (strcmp(pr->names[i], name) == 0) {
      *out = pr->kernels[i];
      if (lim) *lim = pr->limits[i];
      return DYNB_OK;
    }
  return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT, "kernels/%s.cl has no kernel '%s'", family,
                    name);
}

void dynb__programs_release(dynb_ctx *ctx) {
  for (int i = 0; i < dynb__kernel_source_count * DYNB__REAL_KINDS; i++)
    program_clear(ctx, &ctx->programs[i]);
}
