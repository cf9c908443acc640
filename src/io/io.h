/* Private header of src/io: safetensors, IDX and CIFAR-10 files. A leaf:
 * nothing here knows about devices or networks. Every reader validates
 * lengths, offsets and counts against the bytes actually present (with
 * overflow-checked arithmetic) before it allocates, and every error message
 * names the file and the problem. Host memory: malloc/free. */
#ifndef DYNB_IO_IO_H
#define DYNB_IO_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynblocks/status.h"

/* Reads a whole file (at most max_bytes) into a malloc'd buffer; gzip
 * files are inflated when `gunzip` (plain files pass through unchanged). */
dynb_status dynb__file_read(const char *path, size_t max_bytes, bool gunzip, unsigned char **out,
                            size_t *size, char *err, size_t errlen);
/* Writes `n` buffers to `path` atomically: a temporary file beside it,
 * flushed and synced, then renamed over the target, so an existing file is
 * never replaced by a partial one. */
dynb_status dynb__file_write_atomic(const char *path, const void *const *parts,
                                    const size_t *sizes, int n, char *err, size_t errlen);

/* ---- safetensors (safetensors.c) ------------------------------------------------- */

typedef enum dynb_st_dtype {
  DYNB_ST_F32, DYNB_ST_F64, DYNB_ST_I32, DYNB_ST_I64, DYNB_ST_U8
} dynb_st_dtype;

#define DYNB_ST_MAX_DIMS 8
/* Caps: a header beyond this is not a model file of ours or anyone's. */
#define DYNB_ST_MAX_HEADER (100u << 20)

typedef struct dynb__st_tensor {
  char *name;
  dynb_st_dtype dtype;
  int ndim;
  int64_t dims[DYNB_ST_MAX_DIMS];
  uint64_t begin, end; /* byte range in the data section */
} dynb__st_tensor;

typedef struct dynb__st_file {
  unsigned char *bytes; /* the whole file */
  size_t size, data_start;
  int ntensors, nmeta;
  dynb__st_tensor *tensors;
  char **meta_keys, **meta_values;
} dynb__st_file;

size_t dynb__st_dtype_size(dynb_st_dtype t);
const char *dynb__st_dtype_name(dynb_st_dtype t);
/* Parses a file already in memory (takes ownership of `bytes`, freed by
 * dynb__st_release even on failure). `name` names it in messages. */
dynb_status dynb__st_parse(unsigned char *bytes, size_t size, const char *name,
                           dynb__st_file *out, char *err, size_t errlen);
dynb_status dynb__st_open(const char *path, dynb__st_file *out, char *err, size_t errlen);
void dynb__st_release(dynb__st_file *f);
const dynb__st_tensor *dynb__st_find(const dynb__st_file *f, const char *name);
const char *dynb__st_meta(const dynb__st_file *f, const char *key);
const unsigned char *dynb__st_data(const dynb__st_file *f, const dynb__st_tensor *t);
uint64_t dynb__st_numel(const dynb__st_tensor *t);

/* One tensor to write; data holds numel · dtype size little-endian bytes. */
typedef struct dynb__st_entry {
  const char *name;
  dynb_st_dtype dtype;
  int ndim;
  const int64_t *dims;
  const void *data;
} dynb__st_entry;

/* Writes tensors (in the given order) and string metadata pairs atomically. */
dynb_status dynb__st_write(const char *path, const dynb__st_entry *entries, int n,
                           const char *const *meta_keys, const char *const *meta_values,
                           int nmeta, char *err, size_t errlen);

/* ---- image data sets (idx.c) ----------------------------------------------------------- */

/* An IDX file of unsigned bytes (MNIST / Fashion-MNIST), raw or gzip'd:
 * `ndim` must match (3 for images N×rows×cols, 1 for labels N). */
dynb_status dynb__idx_read(const char *path, int ndim, int64_t *dims, unsigned char **data,
                           char *err, size_t errlen);
/* A CIFAR-10 binary batch: records of a label byte and 3×32×32 pixels.
 * Appends to *images / *labels (realloc'd), adding to *n. */
dynb_status dynb__cifar_read(const char *path, int64_t *n, unsigned char **images,
                             unsigned char **labels, char *err, size_t errlen);

#endif
