/* dynblocks: DynamicBlocks networks (ResNets as ODE discretisations) on any
 * OpenCL device.
 *
 * This header is the reference for the public C API. Objects are opaque
 * handles created with a *_create call that returns a status and writes an
 * out-pointer, and released with a *_free call that accepts NULL. A context
 * and everything made from it serve one thread at a time; two contexts may
 * be used from two threads. */
#ifndef DYNBLOCKS_DYNBLOCKS_H
#define DYNBLOCKS_DYNBLOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "dynblocks/status.h"
#include "dynblocks/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version as DYNB_VERSION_NUMBER; compare it with the macro to
 * detect a header/library mismatch. Since: 0.1 */
DYNB_API unsigned dynb_version_number(void);
/* The library's version as a string, e.g. "0.1.0". Since: 0.1 */
DYNB_API const char *dynb_version_string(void);

/* ---- Devices ------------------------------------------------------------ */

/* What the library knows of one OpenCL device. Indices count devices over
 * all platforms in the order the ICD loader reports them. */
typedef struct dynb_device_info {
  uint32_t struct_size;        /* set by the library: sizeof(dynb_device_info) */
  uint32_t index;              /* index accepted by a device selector */
  uint32_t platform_index;
  uint32_t is_gpu;             /* 1 for CL_DEVICE_TYPE_GPU */
  uint32_t is_default;         /* 1 for the device a NULL selector picks */
  uint32_t has_fp64;           /* 1 when double-precision kernels can be built */
  uint32_t compute_units;
  uint64_t global_mem_bytes;
  char platform_name[128];
  char device_name[128];
  char device_version[128];    /* CL_DEVICE_VERSION */
  char driver_version[64];     /* CL_DRIVER_VERSION */
} dynb_device_info;

/* Lists the OpenCL devices of every platform.
 * `out` (out, may be NULL when cap is 0) receives up to `cap` entries;
 * `count` (out) receives the number of devices there are.
 * @return DYNB_OK, DYNB_STATUS_NO_DEVICE when no platform or device exists,
 *         DYNB_STATUS_INVALID_ARGUMENT when count is NULL. Since: 0.1 */
DYNB_API dynb_status dynb_device_list(dynb_device_info *out, size_t cap, size_t *count);

/* Resolves a device selector: NULL or "" picks the first GPU, else the first
 * device; a decimal number picks that index; any other text picks the first
 * device whose name or platform name contains it (case-insensitive).
 * @return DYNB_OK, or DYNB_STATUS_NO_DEVICE when nothing matches. Since: 0.1 */
DYNB_API dynb_status dynb_device_find(const char *selector, uint32_t *index);

/* ---- Context ------------------------------------------------------------ */

typedef struct dynb_ctx dynb_ctx;

typedef enum dynb_log_level {
  DYNB_LOG_DEBUG = 0,
  DYNB_LOG_INFO = 1,
  DYNB_LOG_WARN = 2,
  DYNB_LOG_ERROR = 3
} dynb_log_level;

/* Receives every message the library has to say; the library never prints. */
typedef void (*dynb_log_fn)(void *user, dynb_log_level level, const char *message);

/* Host allocation hook: every host allocation of a context goes through it. */
typedef struct dynb_allocator {
  void *(*alloc_fn)(void *user, size_t bytes);
  void (*free_fn)(void *user, void *ptr);
  void *user;
} dynb_allocator;

typedef struct dynb_ctx_desc {
  uint32_t struct_size;     /* sizeof(dynb_ctx_desc); dynb_ctx_desc_default sets it */
  const char *device;       /* selector as in dynb_device_find; borrowed */
  const char *cache_dir;    /* program-binary cache folder; NULL: $XDG_CACHE_HOME/dynblocks
                               or $HOME/.cache/dynblocks; "": no cache. Borrowed. */
  dynb_log_fn log_fn;       /* NULL: silent */
  void *log_user;
  dynb_allocator allocator; /* alloc_fn NULL: malloc/free */
  const char *tune_cache;   /* tuning cache file written by `dynblocks tune`, read once at
                               creation; NULL: tune.txt in the cache folder above; "": none
                               (built-in parameters). Borrowed. */
} dynb_ctx_desc;

/* A description with every field at its default. Since: 0.1 */
DYNB_API dynb_ctx_desc dynb_ctx_desc_default(void);

/* Creates a context with its own OpenCL context and queue on the selected
 * device. `desc` (borrowed) may be NULL for the defaults. Like SQLite's open,
 * `*out` receives a context even when creation fails (unless host memory ran
 * out), so that dynb_ctx_last_error() can explain; free it either way.
 * @return DYNB_OK, DYNB_STATUS_NO_DEVICE, DYNB_STATUS_OPENCL_ERROR,
 *         DYNB_STATUS_OUT_OF_HOST_MEMORY, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_create(const dynb_ctx_desc *desc, dynb_ctx **out);

/* Releases a context and every OpenCL object it created (never the caller's).
 * Accepts NULL. Since: 0.1 */
DYNB_API void dynb_ctx_free(dynb_ctx *ctx);

/* Status of the context's last failed call (DYNB_OK if none failed yet).
 * Querying does not change it. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_last_status(const dynb_ctx *ctx);

/* Readable message for the last failed call; owned by the context, valid
 * until its next call. Never NULL. Since: 0.1 */
DYNB_API const char *dynb_ctx_last_error(const dynb_ctx *ctx);

/* Fills `info` (out) for the context's device. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_device_info(dynb_ctx *ctx, dynb_device_info *info);

#ifdef __cplusplus
}
#endif
#endif
