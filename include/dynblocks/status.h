/** @file dynblocks/status.h
 * Status codes returned by every dynblocks call.
 *
 * Codes are grouped by tens: 10s arguments and shapes, 20s memory, 30s
 * OpenCL and CLBlast, 40s files and formats, 50s numerics, 60s state and
 * misuse. Numbers below 100 are frozen once released. */
#ifndef DYNBLOCKS_STATUS_H
#define DYNBLOCKS_STATUS_H

#include "dynblocks/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One list, expanded into the enum and into the name and message tables, so
 * that the names printed in logs can never drift from the values:
 * X(name, value, message). */
#define DYNB_STATUS_MAP(X)                                                   \
  X(OK, 0, "success")                                                        \
  X(INVALID_ARGUMENT, 10, "invalid argument")                                \
  X(SHAPE_MISMATCH, 11, "tensor shapes do not match")                        \
  X(PARAM_OUT_OF_BOUND, 12, "parameter out of bound")                        \
  X(UNSUPPORTED, 13, "not supported on this device")                         \
  X(BUFFER_TOO_SMALL, 14, "buffer too small for the tensor")                 \
  X(OUT_OF_HOST_MEMORY, 20, "out of host memory")                            \
  X(OUT_OF_DEVICE_MEMORY, 21, "out of device memory")                        \
  X(SIZE_OVERFLOW, 22, "size arithmetic overflows")                          \
  X(OPENCL_ERROR, 30, "OpenCL call failed")                                  \
  X(NO_DEVICE, 31, "no matching OpenCL device")                              \
  X(BUILD_FAILED, 32, "kernel build failed")                                 \
  X(CLBLAST_ERROR, 33, "CLBlast call failed")                                \
  X(IO_ERROR, 40, "input/output error")                                      \
  X(BAD_FORMAT, 41, "malformed file")                                        \
  X(SPEC_ERROR, 42, "invalid network spec")                                  \
  X(NON_FINITE, 50, "non-finite value")                                      \
  X(MISUSE, 60, "library misuse")

/** What a call did: DYNB_OK, or why it failed (the context that the call
 * ran in also holds a message: dynb_ctx_last_error). */
typedef enum dynb_status {
#define DYNB__STATUS_ENUM(name, value, msg) DYNB_STATUS_##name = value,
  DYNB_STATUS_MAP(DYNB__STATUS_ENUM)
#undef DYNB__STATUS_ENUM
  DYNB_OK = DYNB_STATUS_OK /**< success (same as DYNB_STATUS_OK) */
} dynb_status;

/** Name of a status, e.g. "DYNB_STATUS_SHAPE_MISMATCH".
 * @return "DYNB_STATUS_UNKNOWN" for a value not in the map; never NULL. Since: 0.1 */
DYNB_API const char *dynb_status_name(dynb_status status);

/** Short English description of a status.
 * @return static text; never NULL. Since: 0.1 */
DYNB_API const char *dynb_status_message(dynb_status status);

#ifdef __cplusplus
}
#endif
#endif
