/* Private header of src/io: safetensors, IDX and CIFAR-10 files. A leaf:
 * nothing here knows about devices or networks, and nothing here includes a
 * header of another src/ folder.
 *
 * Rules every reader follows (SPEC §6, STYLE "Trusting files"):
 * - bytes come through a dynb__reader (reader.c), over a file, a memory
 *   buffer or a caller's source function, so that tests can cut a file at
 *   every byte, flip bytes and fail reads at byte N;
 * - every length, count, offset and dimension is checked against a compiled
 *   cap and against the bytes present, with overflow-checked arithmetic,
 *   before anything is allocated from it; buffers whose size the source
 *   cannot promise (gzip, sources of unknown size) grow with the bytes that
 *   actually arrive, so a lying header cannot make us reserve gigabytes;
 * - every error message starts with the file's name and, where it helps, the
 *   byte position, then says what is wrong ("x.idx: byte 16: file ends after
 *   12 of the 784 bytes of image data").
 * Statuses: DYNB_STATUS_IO_ERROR (open, read, write, rename failures),
 * DYNB_STATUS_BAD_FORMAT (malformed content, truncation included),
 * DYNB_STATUS_SIZE_OVERFLOW (a size past a cap or past size_t),
 * DYNB_STATUS_OUT_OF_HOST_MEMORY, DYNB_STATUS_INVALID_ARGUMENT (the caller's
 * own arguments, e.g. a tensor to write with a negative dimension).
 * Messages go to the caller's `err` buffer of `errlen` bytes (truncated to
 * fit, always NUL-terminated when errlen > 0; err may be NULL when errlen is
 * 0). Host memory: plain malloc/free; whatever a function hands out is freed
 * with free() unless a release function is named. */
#ifndef DYNB_IO_IO_H
#define DYNB_IO_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dynblocks/status.h"

/* ---- byte reader (reader.c) ------------------------------------------------------- */

/* A source of raw bytes: reads up to n bytes into dst, sets *got (0 only at
 * the end) and returns 0, or returns an errno value on failure. */
typedef int (*dynb__source_fn)(void *user, void *dst, size_t n, size_t *got);

#define DYNB__READER_BUF   65536
#define DYNB__SIZE_UNKNOWN UINT64_MAX

/* A sequential reader with position tracking. Fields are private to
 * reader.c; the struct is here so that it can live on the caller's stack. */
typedef struct dynb__reader {
  const char *name; /* borrowed: names the source in every message */
  dynb__source_fn read;
  void *user;
  FILE *file;               /* owned when opened from a path */
  const unsigned char *mem; /* memory source */
  size_t mem_size, mem_pos;
  uint64_t raw_size;  /* bytes in the raw source, or DYNB__SIZE_UNKNOWN */
  uint64_t raw_pos;   /* raw bytes taken from the source */
  unsigned char *buf; /* raw bytes read ahead (gzip input, magic probe) */
  size_t buf_len, buf_pos;
  bool raw_end; /* the source said it has nothing more */
  void *z;      /* inflate state (z_stream) when gzip'd */
  bool z_end;   /* the last gzip member ended cleanly */
  bool z_cut;   /* the gzip data ended inside a member */
  uint64_t pos; /* bytes handed out (after gunzip) */
} dynb__reader;

/* Opens `path` for reading. With `gunzip`, a file starting with the gzip
 * magic 1f 8b is inflated (several concatenated members are one stream;
 * bytes after the last member other than another member are an error; the
 * CRC of every member is checked); without, bytes pass through unchanged.
 * On failure nothing needs closing. @return OK, IO_ERROR (cannot open),
 * BAD_FORMAT (a gzip header cut short), OUT_OF_HOST_MEMORY. */
dynb_status dynb__reader_open_file(dynb__reader *r, const char *path, bool gunzip, char *err,
                                   size_t errlen);
/* The same over `size` bytes at `bytes` (borrowed until close); `name` names
 * them in messages. */
dynb_status dynb__reader_open_mem(dynb__reader *r, const char *name, const void *bytes, size_t size,
                                  bool gunzip, char *err, size_t errlen);
/* The same over a caller's source function; `size` is the raw size when
 * known, else DYNB__SIZE_UNKNOWN. Tests use it to inject read errors. */
dynb_status dynb__reader_open_source(dynb__reader *r, const char *name, dynb__source_fn fn,
                                     void *user, uint64_t size, bool gunzip, char *err,
                                     size_t errlen);
/* Frees what the reader holds (closes its file). Safe on a reader whose
 * open failed or that is already closed. */
void dynb__reader_close(dynb__reader *r);

/* Reads up to n bytes; *got < n only at the end of the data. @return OK,
 * IO_ERROR, BAD_FORMAT (corrupt or truncated gzip), OUT_OF_HOST_MEMORY. */
dynb_status dynb__reader_read(dynb__reader *r, void *dst, size_t n, size_t *got, char *err,
                              size_t errlen);
/* Reads exactly n bytes of `what` (e.g. "image data"); running out is
 * BAD_FORMAT: "NAME: byte P: file ends after K of the N bytes of WHAT". */
dynb_status dynb__reader_exact(dynb__reader *r, void *dst, size_t n, const char *what, char *err,
                               size_t errlen);
/* Reads exactly n bytes of `what` into (*buf)[have..have+n), growing *buf
 * (realloc) as the bytes arrive: at once when the source's size promises
 * them, else geometrically, so memory follows the data actually present.
 * On failure *buf stays valid (possibly moved) for the caller to free. */
dynb_status dynb__reader_exact_grow(dynb__reader *r, unsigned char **buf, size_t have, size_t n,
                                    const char *what, char *err, size_t errlen);
/* Succeeds only at the end of the data: "NAME: byte P: unexpected bytes
 * after WHAT" (BAD_FORMAT) otherwise. */
dynb_status dynb__reader_end(dynb__reader *r, const char *what, char *err, size_t errlen);
/* Bytes left when the source promises them (an uncompressed file or memory
 * buffer), else DYNB__SIZE_UNKNOWN. */
uint64_t dynb__reader_remaining(const dynb__reader *r);
/* Reads everything left (at most max_bytes, else SIZE_OVERFLOW) into a
 * malloc'd buffer. */
dynb_status dynb__reader_all(dynb__reader *r, size_t max_bytes, unsigned char **out, size_t *size,
                             char *err, size_t errlen);

/* Reads a whole file (at most max_bytes) into a malloc'd buffer; gzip files
 * are inflated when `gunzip`. */
dynb_status dynb__file_read(const char *path, size_t max_bytes, bool gunzip, unsigned char **out,
                            size_t *size, char *err, size_t errlen);

/* Byte order. Files here are little-endian (safetensors) or big-endian
 * (IDX headers); the helpers keep the code right on either kind of host. */
bool dynb__host_is_little_endian(void);
/* Copies `count` elements of `elem` bytes, reversing each element's bytes. */
void dynb__byteswap_copy(void *dst, const void *src, size_t count, size_t elem);
/* Copies little-endian elements to host order (or back: the same map). */
void dynb__le_copy(void *dst, const void *src, size_t count, size_t elem);
uint32_t dynb__load_be32(const unsigned char *p);
uint64_t dynb__load_le64(const unsigned char *p);
void dynb__store_le64(unsigned char *p, uint64_t v);

/* Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF):
 * the length of the longest valid prefix of s[0..n), so n when all valid. */
size_t dynb__utf8_prefix(const char *s, size_t n);
bool dynb__utf8_valid(const char *s, size_t n);

/* Finds a string that occurs twice among s[0..n) (sorting a copy: n log n,
 * so a hostile file with a million names cannot stall us); *twice is NULL
 * when all differ. @return OK, OUT_OF_HOST_MEMORY. */
dynb_status dynb__first_duplicate(const char *const *s, int n, const char **twice);

/* ---- atomic writes (file.c) ------------------------------------------------------- */

/* Writes the concatenation of n buffers to `path` atomically: a new file
 * "<path>.tmp.<pid>[.<k>]" beside the target (created exclusively, taking
 * the target's permission bits if it exists), written, fsync'd and closed,
 * then renamed over the target; the folder is then fsync'd so the rename is
 * durable. On any failure the temporary file is removed and an existing
 * target is untouched. A process killed mid-write can leave its temporary
 * file behind, never a partial target. @return OK, INVALID_ARGUMENT (path
 * NULL or empty, n < 0, a NULL part of nonzero size), IO_ERROR,
 * OUT_OF_HOST_MEMORY. */
dynb_status dynb__file_write_atomic(const char *path, const void *const *parts, const size_t *sizes,
                                    int n, char *err, size_t errlen);

/* ---- safetensors (safetensors.c, safetensors_write.c) --------------------------- */

/* Every dtype of the format whose elements are whole bytes. The first five
 * values are the ones dynblocks itself writes; the order is fixed. Sub-byte
 * types (F4, F6_*) are rejected as unsupported. */
typedef enum dynb_st_dtype {
  DYNB_ST_F32,
  DYNB_ST_F64,
  DYNB_ST_I32,
  DYNB_ST_I64,
  DYNB_ST_U8,
  DYNB_ST_BOOL,
  DYNB_ST_I8,
  DYNB_ST_I16,
  DYNB_ST_U16,
  DYNB_ST_U32,
  DYNB_ST_U64,
  DYNB_ST_F16,
  DYNB_ST_BF16,
  DYNB_ST_F8_E5M2,
  DYNB_ST_F8_E4M3,
  DYNB_ST_F8_E8M0,
  DYNB_ST_C64,
  DYNB_ST_DTYPE_COUNT
} dynb_st_dtype;

/* Caps, checked before allocating. The header cap is the reference
 * implementation's; the others are far beyond any network of ours. */
#define DYNB_ST_MAX_DIMS    8
#define DYNB_ST_MAX_HEADER  (100u << 20)
#define DYNB_ST_MAX_DATA    ((uint64_t)1 << 36)
#define DYNB_ST_MAX_TENSORS (1 << 20)

typedef struct dynb__st_tensor {
  char *name;
  dynb_st_dtype dtype;
  int ndim;
  int64_t dims[DYNB_ST_MAX_DIMS];
  uint64_t begin, end; /* byte range in the data section */
} dynb__st_tensor;

/* A parsed file: the whole file's bytes, tensors in header order, metadata
 * in header order. */
typedef struct dynb__st_file {
  unsigned char *bytes; /* the whole file */
  size_t size, data_start;
  int ntensors, nmeta;
  dynb__st_tensor *tensors;
  char **meta_keys, **meta_values;
  int *by_name; /* tensor indices sorted by name, for lookups */
} dynb__st_file;

/* Bytes per element; 0 and "?" for a value outside the enum. */
size_t dynb__st_dtype_size(dynb_st_dtype t);
const char *dynb__st_dtype_name(dynb_st_dtype t);
/* The unit whose bytes a byte-order change reverses: the element size,
 * except C64 (two F32 parts). */
size_t dynb__st_dtype_swap_unit(dynb_st_dtype t);

/* What the reader accepts (a judgement where the format is loose, see
 * safetensors.c): a header of at most DYNB_ST_MAX_HEADER bytes of strict
 * UTF-8 JSON that starts with '{' and may end with whitespace padding; an
 * object whose keys are unique; "__metadata__" an object of strings (or
 * null); every other entry an object with exactly dtype (known),
 * shape (at most DYNB_ST_MAX_DIMS non-negative integers) and data_offsets
 * (two integers), end - begin = numel · dtype size; the tensors tile the data
 * section from 0 to its end without gaps or overlaps (zero-size tensors
 * included), as the reference reader demands.
 *
 * Parses a file already in memory, taking ownership of `bytes` (freed by
 * dynb__st_release, or at once on failure). `name` names it in messages.
 * On failure *out is zeroed and needs no release. @return OK, BAD_FORMAT,
 * SIZE_OVERFLOW, OUT_OF_HOST_MEMORY. */
dynb_status dynb__st_parse(unsigned char *bytes, size_t size, const char *name, dynb__st_file *out,
                           char *err, size_t errlen);
/* The same on a copy of `size` bytes at `bytes` (borrowed). */
dynb_status dynb__st_open_mem(const void *bytes, size_t size, const char *name, dynb__st_file *out,
                              char *err, size_t errlen);
/* Reads and parses a file; also IO_ERROR. */
dynb_status dynb__st_open(const char *path, dynb__st_file *out, char *err, size_t errlen);
/* The same from an open reader (read to its end). */
dynb_status dynb__st_read(dynb__reader *r, dynb__st_file *out, char *err, size_t errlen);
/* Frees a parsed file and zeroes it; accepts a zeroed file. */
void dynb__st_release(dynb__st_file *f);
/* A tensor by name, or NULL (binary search). */
const dynb__st_tensor *dynb__st_find(const dynb__st_file *f, const char *name);
/* A metadata value by key, or NULL. */
const char *dynb__st_meta(const dynb__st_file *f, const char *key);
/* The tensor's bytes as stored: little-endian, possibly unaligned. */
const unsigned char *dynb__st_data(const dynb__st_file *f, const dynb__st_tensor *t);
uint64_t dynb__st_numel(const dynb__st_tensor *t);
/* Copies the tensor's elements to dst in host byte order; dst_bytes must be
 * its byte size (end - begin). @return OK, INVALID_ARGUMENT. */
dynb_status dynb__st_copy(const dynb__st_file *f, const dynb__st_tensor *t, void *dst,
                          size_t dst_bytes, char *err, size_t errlen);

/* One tensor to write; data holds numel · dtype size bytes in host order
 * (it may be NULL when that is 0). */
typedef struct dynb__st_entry {
  const char *name;
  dynb_st_dtype dtype;
  int ndim;
  const int64_t *dims;
  const void *data;
} dynb__st_entry;

/* Writes tensors and string metadata pairs atomically (dynb__file_write_atomic).
 * The header lists "__metadata__" first (when nmeta > 0), then the tensors
 * in the given order, which is also their order in the data section; it is
 * padded with spaces to a multiple of 8 bytes, as the reference writer does,
 * so the data section starts 8-aligned. Names, keys and values must be
 * non-NULL, valid UTF-8, tensor names unique and not "__metadata__", keys
 * unique. @return OK, INVALID_ARGUMENT, SIZE_OVERFLOW (sizes past
 * DYNB_ST_MAX_DATA or a header past DYNB_ST_MAX_HEADER), IO_ERROR,
 * OUT_OF_HOST_MEMORY; on failure no file is created or changed. */
dynb_status dynb__st_write(const char *path, const dynb__st_entry *entries, int n,
                           const char *const *meta_keys, const char *const *meta_values, int nmeta,
                           char *err, size_t errlen);

/* ---- IDX (idx.c) ------------------------------------------------------------------ */

/* Caps: the first dimension (items) and every other dimension. */
#define DYNB_IDX_MAX_ITEMS 100000000u
#define DYNB_IDX_MAX_SIDE  4096u
#define DYNB_IDX_MAX_DIMS  4
/* Cap on the item bytes of one file (60000 MNIST images are 47 MB). */
#define DYNB_IDX_MAX_BYTES ((uint64_t)1 << 34)

/* An IDX file of unsigned bytes (MNIST / Fashion-MNIST), raw or gzip'd:
 * magic 00 00 08 <ndim>, ndim big-endian u32 dimensions, then exactly their
 * product of bytes. `ndim` must match (3 for images N×rows×cols, magic
 * 0x00000803; 1 for labels N, magic 0x00000801). Every dimension is at least
 * 1; the first at most DYNB_IDX_MAX_ITEMS, the others DYNB_IDX_MAX_SIDE;
 * their product at most DYNB_IDX_MAX_BYTES (else SIZE_OVERFLOW).
 * Writes dims[0..ndim) and a malloc'd *data (NULL on failure). @return OK,
 * IO_ERROR, BAD_FORMAT (wrong magic, type or rank, dimension out of range,
 * truncated, trailing bytes, corrupt gzip), SIZE_OVERFLOW,
 * INVALID_ARGUMENT, OUT_OF_HOST_MEMORY. */
dynb_status dynb__idx_read(const char *path, int ndim, int64_t *dims, unsigned char **data,
                           char *err, size_t errlen);
/* The same from an open reader (opened with gunzip for gzip'd data). */
dynb_status dynb__idx_read_from(dynb__reader *r, int ndim, int64_t *dims, unsigned char **data,
                                char *err, size_t errlen);
/* Checks that n labels are below `classes`: "NAME: item I has label L;
 * expected 0..classes-1" (BAD_FORMAT) otherwise. */
dynb_status dynb__labels_check(const unsigned char *labels, int64_t n, int classes,
                               const char *name, char *err, size_t errlen);

/* Where Debian's dataset-fashion-mnist installs the four files. */
#define DYNB_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
/* Finds the images and labels of a split of an MNIST-style folder: `split`
 * is "train" or "t10k"; the files are <split>-images-idx3-ubyte and
 * <split>-labels-idx1-ubyte, gzip'd (".gz", preferred, as Debian ships
 * them) or not. Writes malloc'd paths. @return OK, IO_ERROR naming the
 * missing file, INVALID_ARGUMENT, OUT_OF_HOST_MEMORY. */
dynb_status dynb__idx_locate(const char *dir, const char *split, char **images, char **labels,
                             char *err, size_t errlen);

/* ---- CIFAR-10 (cifar.c) ----------------------------------------------------------- */

#define DYNB_CIFAR_RECORD 3073
#define DYNB_CIFAR_PIXELS 3072
/* Cap on the records one call may hold in total (CIFAR-10 has 60000). */
#define DYNB_CIFAR_MAX_RECORDS 10000000

/* A CIFAR-10 binary batch (data_batch_1..5.bin, test_batch.bin): records of
 * a label byte (0..9) and 3×32×32 pixels, channel-major. Appends to
 * *images / *labels (realloc'd; both NULL for a first call), adding to *n.
 * On failure *n is unchanged and the arrays stay the caller's to free.
 * @return OK, IO_ERROR, BAD_FORMAT (empty, not a whole number of records, a
 * label above 9, naming the record), SIZE_OVERFLOW, OUT_OF_HOST_MEMORY. */
dynb_status dynb__cifar_read(const char *path, int64_t *n, unsigned char **images,
                             unsigned char **labels, char *err, size_t errlen);
dynb_status dynb__cifar_read_from(dynb__reader *r, int64_t *n, unsigned char **images,
                                  unsigned char **labels, char *err, size_t errlen);

/* ---- messages (reader.c) ---------------------------------------------------------- */

/* snprintf into err when there is room; returns `status` for one-line
 * error returns. */
dynb_status dynb__io_fail(char *err, size_t errlen, dynb_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
