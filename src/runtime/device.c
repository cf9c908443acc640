/* Device enumeration and selection: every platform's devices in one list,
 * chosen by index or name substring; the default is the first GPU, else the
 * first device of any kind. */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

/* Enough for any real machine; more devices are ignored rather than failing. */
#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

typedef struct device_table {
  cl_uint count;
  cl_platform_id platform[MAX_DEVICES];
  cl_device_id device[MAX_DEVICES];
  cl_uint platform_index[MAX_DEVICES];
} device_table;

static void table_load(device_table *t) {
  cl_platform_id plats[MAX_PLATFORMS];
  cl_uint np = 0;
  t->count = 0;
  if (clGetPlatformIDs(MAX_PLATFORMS, plats, &np) != CL_SUCCESS) return;
  if (np > MAX_PLATFORMS) np = MAX_PLATFORMS;
  for (cl_uint p = 0; p < np; p++) {
    cl_device_id devs[MAX_DEVICES];
    cl_uint nd = 0;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd) != CL_SUCCESS)
      continue;
    if (nd > MAX_DEVICES) nd = MAX_DEVICES;
    for (cl_uint d = 0; d < nd && t->count < MAX_DEVICES; d++) {
      t->platform[t->count] = plats[p];
      t->device[t->count] = devs[d];
      t->platform_index[t->count] = p;
      t->count++;
    }
  }
}

static int is_gpu(cl_device_id d) {
  cl_device_type type = 0;
  clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
  return (type & CL_DEVICE_TYPE_GPU) != 0;
}

static cl_uint table_default(const device_table *t) {
  for (cl_uint i = 0; i < t->count; i++)
    if (is_gpu(t->device[i])) return i;
  return 0;
}

/* Copies an info string, truncated to cap; a string longer than the buffer
 * is read whole first, since drivers refuse a too-short buffer outright. */
static void info_string(char *dst, size_t cap, cl_int (*get)(void *, cl_uint, size_t, void *, size_t *),
                        void *obj, cl_uint param) {
  dst[0] = 0;
  size_t n = 0;
  if (get(obj, param, 0, NULL, &n) != CL_SUCCESS || n == 0) return;
  char *tmp = malloc(n + 1);
  if (!tmp) return;
  if (get(obj, param, n, tmp, NULL) == CL_SUCCESS) {
    tmp[n] = 0;
    snprintf(dst, cap, "%s", tmp);
  }
  free(tmp);
  /* Drivers pad some strings with spaces. */
  size_t len = strlen(dst);
  while (len > 0 && isspace((unsigned char)dst[len - 1])) dst[--len] = 0;
}

static cl_int get_platform(void *o, cl_uint p, size_t n, void *v, size_t *r) {
  return clGetPlatformInfo((cl_platform_id)o, p, n, v, r);
}
static cl_int get_device(void *o, cl_uint p, size_t n, void *v, size_t *r) {
  return clGetDeviceInfo((cl_device_id)o, p, n, v, r);
}

void dynb__device_describe(cl_platform_id platform, cl_device_id device, dynb_device_info *info) {
  memset(info, 0, sizeof *info);
  info->struct_size = (uint32_t)sizeof *info;
  info_string(info->platform_name, sizeof info->platform_name, get_platform, platform,
              CL_PLATFORM_NAME);
  info_string(info->device_name, sizeof info->device_name, get_device, device, CL_DEVICE_NAME);
  info_string(info->device_version, sizeof info->device_version, get_device, device,
              CL_DEVICE_VERSION);
  info_string(info->driver_version, sizeof info->driver_version, get_device, device,
              CL_DRIVER_VERSION);
  info->is_gpu = (uint32_t)is_gpu(device);
  cl_device_fp_config fp64 = 0;
  clGetDeviceInfo(device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, NULL);
  info->has_fp64 = fp64 != 0;
  cl_uint cu = 0;
  clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
  info->compute_units = cu;
  cl_ulong mem = 0;
  clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
  info->global_mem_bytes = mem;
  cl_ulong alloc = 0, local = 0;
  size_t wg = 0;
  clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof alloc, &alloc, NULL);
  clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
  clGetDeviceInfo(device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
  info->max_alloc_bytes = alloc;
  info->local_mem_bytes = local;
  info->max_work_group = wg > UINT32_MAX ? UINT32_MAX : (uint32_t)wg;
}

/* PoCL 3.1 (Debian 12) sets its platform up on the first OpenCL call, and
 * two threads making their first calls at once can find no device or a
 * half-built one (a crash in clGetDeviceInfo; test_threads.c found both).
 * So the first enumeration of the process runs alone, under pthread_once;
 * later ones run concurrently as the OpenCL specification allows. (Querying
 * device information in there as well made LeakSanitizer's exit-time scan
 * crash in about half of the `dynblocks train` runs under ASan; enumerating
 * alone does not.) The once flag holds no data. */
static pthread_once_t discovery_once = PTHREAD_ONCE_INIT;

static void discover_alone(void) {
  device_table t;
  table_load(&t);
}

/* Every enumeration goes through here. */
static void table_load_safe(device_table *t) {
  pthread_once(&discovery_once, discover_alone);
  table_load(t);
}

dynb_status dynb_device_list(dynb_device_info *out, size_t cap, size_t *count) {
  if (!count || (!out && cap)) return DYNB_STATUS_INVALID_ARGUMENT;
  device_table t;
  table_load_safe(&t);
  *count = t.count;
  if (t.count == 0) return DYNB_STATUS_NO_DEVICE;
  cl_uint def = table_default(&t);
  for (cl_uint i = 0; i < t.count && i < cap; i++) {
    dynb__device_describe(t.platform[i], t.device[i], &out[i]);
    out[i].index = i;
    out[i].platform_index = t.platform_index[i];
    out[i].is_default = i == def;
  }
  return DYNB_OK;
}

static int contains_nocase(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
      i++;
    if (i == n) return 1;
  }
  return n == 0;
}

static dynb_status table_select(const device_table *t, const char *sel, cl_uint *index,
                                char *err, size_t errlen) {
  if (t->count == 0) {
    snprintf(err, errlen, "no OpenCL device found (is an ICD such as pocl-opencl-icd installed?)");
    return DYNB_STATUS_NO_DEVICE;
  }
  if (!sel || !sel[0]) {
    *index = table_default(t);
    return DYNB_OK;
  }
  char *end = NULL;
  unsigned long v = strtoul(sel, &end, 10);
  if (end && *end == 0 && isdigit((unsigned char)sel[0])) {
    if (v < t->count) {
      *index = (cl_uint)v;
      return DYNB_OK;
    }
    snprintf(err, errlen, "device index %lu out of range: there are %u device(s)", v,
             (unsigned)t->count);
    return DYNB_STATUS_NO_DEVICE;
  }
  for (cl_uint i = 0; i < t->count; i++) {
    dynb_device_info info;
    dynb__device_describe(t->platform[i], t->device[i], &info);
    if (contains_nocase(info.device_name, sel) || contains_nocase(info.platform_name, sel)) {
      *index = i;
      return DYNB_OK;
    }
  }
  snprintf(err, errlen, "no OpenCL device matches '%s' (see `dynblocks devices`)", sel);
  return DYNB_STATUS_NO_DEVICE;
}

dynb_status dynb_device_find(const char *selector, uint32_t *index) {
  if (!index) return DYNB_STATUS_INVALID_ARGUMENT;
  device_table t;
  table_load_safe(&t);
  char err[256];
  cl_uint i = 0;
  dynb_status st = table_select(&t, selector, &i, err, sizeof err);
  if (st == DYNB_OK) *index = i;
  return st;
}

dynb_status dynb__device_resolve(const char *selector, cl_platform_id *platform,
                                 cl_device_id *device, char *err, size_t errlen) {
  device_table t;
  table_load_safe(&t);
  cl_uint i = 0;
  dynb_status st = table_select(&t, selector, &i, err, errlen);
  if (st != DYNB_OK) return st;
  *platform = t.platform[i];
  *device = t.device[i];
  return DYNB_OK;
}

const char *dynb__cl_error_name(cl_int err) {
  switch (err) {
#define E(x) \
  case x:    \
    return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_MEM_COPY_OVERLAP) E(CL_BUILD_PROGRAM_FAILURE)
    E(CL_MAP_FAILURE) E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM)
    E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT) E(CL_INVALID_QUEUE_PROPERTIES)
    E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_HOST_PTR) E(CL_INVALID_MEM_OBJECT)
    E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM)
    E(CL_INVALID_PROGRAM_EXECUTABLE) E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL_DEFINITION)
    E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE)
    E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE)
    E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_EVENT_WAIT_LIST)
    E(CL_INVALID_EVENT) E(CL_INVALID_OPERATION) E(CL_INVALID_BUFFER_SIZE)
    E(CL_INVALID_GLOBAL_WORK_SIZE)
  case -1001:
    return "CL_PLATFORM_NOT_FOUND_KHR";
#undef E
  }
  return "unknown OpenCL error";
}
