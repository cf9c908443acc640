/* The kernel sources embedded at build time (see cmake/EmbedKernels.cmake). */
#ifndef DYNB_RUNTIME_KERNELS_EMBEDDED_H
#define DYNB_RUNTIME_KERNELS_EMBEDDED_H

typedef struct dynb__kernel_source {
  const char *family; /* file name without .cl, e.g. "conv" */
  const char *source;
} dynb__kernel_source;

/* Prepended to every family: the `real` type and shared helpers. */
extern const char *const dynb__kernel_prelude;
extern const dynb__kernel_source dynb__kernel_sources[];
extern const int dynb__kernel_source_count;

#endif
