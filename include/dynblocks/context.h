/** @file dynblocks/context.h
 * Devices and contexts: the object every other one is made from, holding the
 * OpenCL context and queue, the host allocator, the log callback and the
 * message of the last failed call. */
#ifndef DYNBLOCKS_CONTEXT_H
#define DYNBLOCKS_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "dynblocks/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Devices ------------------------------------------------------------ */

/** What the library knows of one OpenCL device. Indices count devices over
 * all platforms in the order the ICD loader reports them. */
typedef struct dynb_device_info {
  uint32_t struct_size;        /**< set by the library: sizeof(dynb_device_info) */
  uint32_t index;              /**< index accepted by a device selector */
  uint32_t platform_index;     /**< index of the device's platform */
  uint32_t is_gpu;             /**< 1 for CL_DEVICE_TYPE_GPU */
  uint32_t is_default;         /**< 1 for the device a NULL selector picks */
  uint32_t has_fp64;           /**< 1 when double-precision kernels can be built */
  uint32_t compute_units;      /**< CL_DEVICE_MAX_COMPUTE_UNITS */
  uint64_t global_mem_bytes;   /**< CL_DEVICE_GLOBAL_MEM_SIZE */
  char platform_name[128];     /**< CL_PLATFORM_NAME */
  char device_name[128];       /**< CL_DEVICE_NAME */
  char device_version[128];    /**< CL_DEVICE_VERSION */
  char driver_version[64];     /**< CL_DRIVER_VERSION */
  uint64_t max_alloc_bytes;    /**< CL_DEVICE_MAX_MEM_ALLOC_SIZE: the largest single buffer */
  uint64_t local_mem_bytes;    /**< CL_DEVICE_LOCAL_MEM_SIZE */
  uint32_t max_work_group;     /**< CL_DEVICE_MAX_WORK_GROUP_SIZE */
} dynb_device_info;

/** Lists the OpenCL devices of every platform.
 * @param out (out, may be NULL when cap is 0) receives up to `cap` entries.
 * @param cap entries `out` holds.
 * @param count (out) the number of devices there are.
 * @return DYNB_OK, DYNB_STATUS_NO_DEVICE when no platform or device exists,
 *         DYNB_STATUS_INVALID_ARGUMENT when count is NULL. Since: 0.1 */
DYNB_API dynb_status dynb_device_list(dynb_device_info *out, size_t cap, size_t *count);

/** Resolves a device selector: NULL or "" picks the first GPU, else the first
 * device; a decimal number picks that index; any other text picks the first
 * device whose name or platform name contains it (case-insensitive).
 * @param selector (borrowed) the selector.
 * @param index (out) the device's index.
 * @return DYNB_OK, or DYNB_STATUS_NO_DEVICE when nothing matches. Since: 0.1 */
DYNB_API dynb_status dynb_device_find(const char *selector, uint32_t *index);

/* ---- Context ------------------------------------------------------------ */

/** A context: one OpenCL device, context and in-order queue, plus the host
 * allocator, the log callback and the last error. A context and everything
 * made from it serve one thread at a time; two contexts may be used from two
 * threads at once. */
typedef struct dynb_ctx dynb_ctx;

/** Severity of a log message. */
typedef enum dynb_log_level {
  DYNB_LOG_DEBUG = 0, /**< every recorded failure, with its status name */
  DYNB_LOG_INFO = 1,  /**< device chosen, convolution routes timed */
  DYNB_LOG_WARN = 2,  /**< something the caller may want to fix */
  DYNB_LOG_ERROR = 3  /**< misuse the library could only report */
} dynb_log_level;

/** Receives every message the library has to say; the library never prints.
 * Called on the thread that made the call, never after the call returns. */
typedef void (*dynb_log_fn)(void *user, dynb_log_level level, const char *message);

/** Host allocation hook: every host allocation of a context goes through it. */
typedef struct dynb_allocator {
  void *(*alloc_fn)(void *user, size_t bytes); /**< returns NULL on failure */
  void (*free_fn)(void *user, void *ptr);      /**< never called with NULL */
  void *user;                                  /**< passed to both */
} dynb_allocator;

/** How to create a context. Start from dynb_ctx_desc_default() so that
 * fields added later keep their defaults. */
typedef struct dynb_ctx_desc {
  uint32_t struct_size;     /**< sizeof(dynb_ctx_desc); dynb_ctx_desc_default sets it */
  const char *device;       /**< selector as in dynb_device_find; borrowed */
  const char *cache_dir;    /**< program-binary cache folder; NULL: $XDG_CACHE_HOME/dynblocks
                                 or $HOME/.cache/dynblocks; "": no cache. Borrowed. */
  dynb_log_fn log_fn;       /**< NULL: silent */
  void *log_user;           /**< passed to log_fn */
  dynb_allocator allocator; /**< alloc_fn NULL: malloc/free */
  const char *tune_cache;   /**< tuning cache file written by `dynblocks tune`, read once at
                                 creation; NULL: tune.txt in the cache folder above; "": none
                                 (built-in parameters). Borrowed. */
} dynb_ctx_desc;

/** A description with every field at its default. Since: 0.1 */
DYNB_API dynb_ctx_desc dynb_ctx_desc_default(void);

/** Creates a context with its own OpenCL context and queue on the selected
 * device. Like SQLite's open, `*out` receives a context even when creation
 * fails (unless host memory ran out), so that dynb_ctx_last_error() can
 * explain; free it either way.
 * @param desc (borrowed, may be NULL for the defaults) options.
 * @param out (out) the new context.
 * @return DYNB_OK, DYNB_STATUS_NO_DEVICE, DYNB_STATUS_OPENCL_ERROR,
 *         DYNB_STATUS_OUT_OF_HOST_MEMORY, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_create(const dynb_ctx_desc *desc, dynb_ctx **out);

/** Releases a context and every OpenCL object it created (never the
 * caller's). Free networks, plans, optimisers and tensors first.
 * Accepts NULL. Since: 0.1 */
DYNB_API void dynb_ctx_free(dynb_ctx *ctx);

/** Status of the context's last failed call (DYNB_OK if none failed yet).
 * Querying does not change it.
 * @return the status, or DYNB_STATUS_MISUSE for a NULL context. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_last_status(const dynb_ctx *ctx);

/** Readable message for the last failed call, naming the call, the object
 * and the problem.
 * @return text owned by the context, valid until its next call; never NULL. Since: 0.1 */
DYNB_API const char *dynb_ctx_last_error(const dynb_ctx *ctx);

/** Fills `info` (out) for the context's device.
 * @return DYNB_OK, DYNB_STATUS_MISUSE for a NULL context,
 *         DYNB_STATUS_INVALID_ARGUMENT for a NULL info. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_device_info(dynb_ctx *ctx, dynb_device_info *info);

/** Blocks until every command the context enqueued has finished. Calls that
 * return results on the host (reads, losses) wait by themselves; this is for
 * callers who read the context's results through their own queue.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_OPENCL_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_finish(dynb_ctx *ctx);

/** Context parameters, set one at a time with dynb_ctx_set_param. Values sit
 * in numbered groups: 100s runtime, 200s plans. */
typedef enum dynb_param {
  /** How convolutions pick their kernels: one of dynb_conv_route. Applies to
   * plans built afterwards. Default DYNB_CONV_AUTO. */
  DYNB_PARAM_CONV_ROUTE = 200
} dynb_param;

/** Values of DYNB_PARAM_CONV_ROUTE. */
typedef enum dynb_conv_route {
  /** Time the routes once per layer shape and device, take the fastest and
   * keep the choice in the tuning cache, where later contexts find it. Two
   * contexts that time the same shape before either has saved may choose
   * (and round) differently. */
  DYNB_CONV_AUTO = 0,
  DYNB_CONV_GEMM = 1, /**< im2col + CLBlast everywhere (reproducible) */
  DYNB_CONV_ROW = 2,  /**< direct kernels vectorised along image rows where they apply */
  DYNB_CONV_WIDE = 3, /**< direct kernels vectorised across output channels where they apply */
  DYNB_CONV_WIDE2 = 4 /**< as WIDE with two vectors per work-item (forward and adjoint) */
} dynb_conv_route;

/** Sets a context parameter.
 * @return DYNB_OK, DYNB_STATUS_MISUSE for a NULL context,
 *         DYNB_STATUS_INVALID_ARGUMENT for an unknown parameter,
 *         DYNB_STATUS_PARAM_OUT_OF_BOUND for a value outside
 *         dynb_param_bounds (never clamped). Since: 0.1 */
DYNB_API dynb_status dynb_ctx_set_param(dynb_ctx *ctx, dynb_param param, int64_t value);

/** Reads a context parameter into `value` (out).
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.1 */
DYNB_API dynb_status dynb_ctx_get_param(const dynb_ctx *ctx, dynb_param param, int64_t *value);

/** Inclusive bounds of a parameter's values into `lo` and `hi` (out).
 * @return DYNB_OK, or DYNB_STATUS_INVALID_ARGUMENT for an unknown parameter
 *         or NULL outputs. Since: 0.1 */
DYNB_API dynb_status dynb_param_bounds(dynb_param param, int64_t *lo, int64_t *hi);

#ifdef __cplusplus
}
#endif
#endif
