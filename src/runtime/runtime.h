/* Private header of src/runtime: the context, device buffers, program
 * building and kernel launches. Only this folder calls OpenCL or CLBlast
 * directly; everything above goes through these functions. */
#ifndef DYNB_RUNTIME_RUNTIME_H
#define DYNB_RUNTIME_RUNTIME_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynblocks/cl.h"
#include "dynblocks/dynblocks.h"

/* Element types of device tensors (dynb_dtype, public): F32 and F64 are
 * the two `real`s the kernels are built for; I32 holds labels and indices. */
#define DYNB__REAL_KINDS 2
#define DYNB__MAX_DIMS 4

/* A view of device memory: a buffer, an element offset into it and a shape.
 * Views are plain values; the buffer belongs to whoever allocated it (see
 * dynb__tensor_alloc / dynb__tensor_release). Offsets are passed to kernels
 * explicitly rather than through sub-buffers, whose alignment rules differ
 * between devices. */
typedef struct dynb__tensor {
  cl_mem mem;
  size_t offset;     /* in elements */
  size_t cap_bytes;  /* size of mem in bytes, to check views against it */
  dynb_dtype dtype;
  int ndim;
  int64_t dims[DYNB__MAX_DIMS];
} dynb__tensor;

/* A decision remembered for the context's life, keyed by a hash of what it
 * depends on (e.g. which convolution path is faster for one layer shape). */
typedef struct dynb__choice {
  uint64_t key;
  int value;
} dynb__choice;

/* How convolutions pick their path: by timing both once per layer shape
 * (the default), or always one of them (tests, and users who know). */
typedef enum dynb__conv_policy {
  DYNB__CONV_AUTO = 0,
  DYNB__CONV_GEMM = 1, /* im2col + CLBlast */
  DYNB__CONV_ROW = 2,  /* direct, vectors along image rows */
  DYNB__CONV_WIDE = 3, /* direct, vectors across output channels */
  DYNB__CONV_WIDE2 = 4 /* the same, two vectors per work-item (forward/adjoint) */
} dynb__conv_policy;

/* Test hook (fault injection): which event of each kind fails. Kinds:
 * host allocations through the context's allocator, device buffer
 * creations, program builds (from source or from the binary cache). */
typedef enum dynb__fault_kind {
  DYNB__FAULT_ALLOC = 0,
  DYNB__FAULT_BUFFER = 1,
  DYNB__FAULT_BUILD = 2,
  DYNB__FAULT_KINDS = 3
} dynb__fault_kind;

typedef struct dynb__faults {
  uint64_t at[DYNB__FAULT_KINDS];    /* the event that fails, 1-based; 0: none */
  uint64_t count[DYNB__FAULT_KINDS]; /* events seen since armed */
  bool fired[DYNB__FAULT_KINDS];
  bool track;                        /* count live device buffers (live_buffers) */
  atomic_size_t live_buffers;        /* decremented on OpenCL's threads */
} dynb__faults;

/* One entry of the tuning cache (tune.c): key and value share one block. */
typedef struct dynb__tune_entry {
  char *key;
  char *value;
} dynb__tune_entry;

/* How a GEMM reaches CLBlast: as written (a row-major call), or as the
 * same product transposed, Cᵀ = op(B)ᵀ·op(A)ᵀ, issued column-major. Both
 * give the same matrix; CLBlast pads and transposes differently for each,
 * so which is faster depends on the shape (notes/clblast-on-pocl.md). */
typedef enum dynb__gemm_form { DYNB__GEMM_ROW = 0, DYNB__GEMM_COL = 1 } dynb__gemm_form;

/* A GEMM's shape as dynb__gemm sees it (row-major terms). The tuner
 * records these while a plan runs (`calls` counts them) and the context
 * keeps the tuned formulation of each (`form`). */
typedef struct dynb__gemm_shape {
  dynb_dtype dtype;
  bool trans_a, trans_b;
  size_t m, n, k, lda, ldb, ldc;
  size_t calls;
  dynb__gemm_form form;
} dynb__gemm_shape;

/* What a kernel allows, queried once when its program is built: the most
 * work-items per group (CL_KERNEL_WORK_GROUP_SIZE, which a device may set
 * below its own maximum for a kernel with many registers) and the local
 * memory it takes before any __local argument (CL_KERNEL_LOCAL_MEM_SIZE). */
typedef struct dynb__kernel_limits {
  size_t work_group;
  size_t local_bytes;
} dynb__kernel_limits;

/* One built program per kernel family and real type, with its kernels. */
typedef struct dynb__program {
  cl_program program;
  cl_uint nkernels;
  cl_kernel *kernels;
  char **names;
  dynb__kernel_limits *limits;
} dynb__program;

/* ---- Profiling (profile.c) ------------------------------------------------ */

/* One command enqueued while profiling: its event (for a CLBlast call, its
 * last kernel's) and, for CLBlast, the marker enqueued before it; the
 * family ("conv", "clblast", "buffer", ...), the kernel's name, and the
 * layer label and pass in force (string literals). */
typedef struct dynb__prof_rec {
  cl_event ev, start;
  const char *family, *layer, *pass;
  int index;
  char name[64];
} dynb__prof_rec;

typedef struct dynb__profile {
  cl_command_queue plain; /* the context's own queue, back when profiling ends */
  dynb__prof_rec *recs;
  size_t n, cap;
  const char *layer, *pass; /* labels of the commands enqueued next */
  int index;
} dynb__profile;

/* What dynb__profile_end returns per command: device seconds from its
 * start to its end (a CLBlast call: from the end of the commands before it
 * to the end of its last kernel). */
typedef struct dynb__prof_sample {
  const char *family, *layer, *pass;
  int index;
  char name[64];
  double seconds;
} dynb__prof_sample;

/* The device limits the library reads, once, at context creation. GPUs
 * enforce them where PoCL is lenient (4096-item groups, megabytes of local
 * memory, allocations up to all of memory); the test hook
 * dynb__ctx_clamp_limits lowers them to prove the paths that respect them. */
typedef struct dynb__limits {
  size_t max_work_group;    /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
  size_t max_items[3];      /* CL_DEVICE_MAX_WORK_ITEM_SIZES, per dimension */
  size_t local_mem;         /* CL_DEVICE_LOCAL_MEM_SIZE, bytes */
  uint64_t max_alloc;       /* CL_DEVICE_MAX_MEM_ALLOC_SIZE, bytes */
} dynb__limits;

struct dynb_ctx {
  dynb_allocator allocator;
  dynb__faults faults;       /* test hook; all zero (off) unless armed */
  dynb_log_fn log_fn;
  void *log_user;
  cl_platform_id platform;
  cl_device_id device;
  cl_context context;
  cl_command_queue queue;
  dynb_device_info info;
  char *cache_dir;          /* NULL: no program-binary cache */
  dynb__limits limits;
  dynb__program *programs;  /* [family][real kind], built on first use */
  dynb__conv_policy conv_policy;
  dynb__choice *choices;    /* decisions made so far (dynb__choice_get/put) */
  size_t nchoices, choices_cap;
  char *tune_path;          /* tuning cache file; NULL: none */
  char *tune_id;            /* this device's section in it */
  dynb__tune_entry *tune;   /* this device's entries */
  size_t ntune, tune_cap;
  dynb__gemm_shape *gemm_forms; /* tuned formulations, looked up per GEMM */
  size_t ngemm_forms, gemm_forms_cap;
  dynb__gemm_shape *gemm_rec;   /* shapes seen while recording (the tuner) */
  size_t ngemm_rec, gemm_rec_cap;
  bool gemm_recording;
  char gemm_config[DYNB__REAL_KINDS][32]; /* CLBlast parameters in force, by name */
  dynb__profile *profile;    /* NULL: not profiling (the usual case) */
  dynb_status last_status;
  char last_error[4096];
  /* Set while the context is one replica of a data-parallel group
   * (src/parallel); NULL: it trains alone, and no op waits for others. */
  struct dynb__replica_link *link;
  /* Set by dynb_mpi_join (libdynblocks_mpi): a transport over the ranks of
   * an MPI communicator (src/parallel/transport.h) and this process's rank
   * in it; training on this context is then one replica of a group that
   * spans the processes. Owned by the context (freed with it). NULL: the
   * process trains on its own. */
  struct dynb__transport *world;
  int world_rank;
};

/* ---- Replicas (set by src/parallel, read by the ops) --------------------- */

/* What an op needs from the other replicas of a data-parallel group: batch
 * norm in training merges its per-channel statistics over the global batch.
 * Owned by the group; the ops only call it. */
typedef struct dynb__replica_link {
  int replicas; /* in the whole group, > 1 */
  int index;    /* this replica's place in the fixed replica order */
  /* Gathers n doubles from every replica into all[replicas * n], replica
   * k's at all + k·n, every replica with the same n; blocks until all have
   * contributed. A failure (another replica failed, n differs) is recorded
   * on ctx and returned. */
  dynb_status (*allgather)(struct dynb__replica_link *link, dynb_ctx *ctx, const double *mine,
                           size_t n, double *all);
  void *user;
  /* Device staging for a batch norm's per-channel sums (2 per channel of
   * the widest norm), allocated with the group so that no training step
   * allocates. */
  dynb__tensor staging;
} dynb__replica_link;

/* ---- Errors and logging (ctx.c) ----------------------------------------- */

/* Records a failure on ctx (message from fmt) and returns `status`. */
dynb_status dynb__fail_at(dynb_ctx *ctx, dynb_status status, const char *file, int line,
                          const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
/* Fails with the context's last error message behind `prefix` ("prefix:
 * message"), for a caller that adds where a lower-level failure happened. */
dynb_status dynb__fail_prefixed(dynb_ctx *ctx, dynb_status status, const char *prefix);
#ifdef NDEBUG
#define dynb__fail(ctx, status, ...) dynb__fail_at((ctx), (status), NULL, 0, __VA_ARGS__)
#else
#define dynb__fail(ctx, status, ...) dynb__fail_at((ctx), (status), __FILE__, __LINE__, __VA_ARGS__)
#endif

/* Returns from the calling function with `status` unless `cond` holds. */
#define DYNB_CHECK(ctx, cond, status, ...)                                     \
  do {                                                                         \
    if (!(cond)) return dynb__fail((ctx), (status), __VA_ARGS__);              \
  } while (0)
/* Returns the status of `expr` from the calling function unless it is DYNB_OK. */
#define DYNB_TRY(expr)                                                         \
  do {                                                                         \
    dynb_status dynb__s = (expr);                                              \
    if (dynb__s != DYNB_OK) return dynb__s;                                    \
  } while (0)

/* Records an OpenCL error code from `what` as a failure; allocation failures
 * map to DYNB_STATUS_OUT_OF_DEVICE_MEMORY. */
dynb_status dynb__cl_fail(dynb_ctx *ctx, cl_int err, const char *what);
const char *dynb__cl_error_name(cl_int err);
void dynb__log(dynb_ctx *ctx, dynb_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Host memory of a context goes through its allocator (the fault-injection
 * and embedding hook). */
void *dynb__alloc(dynb_ctx *ctx, size_t bytes);
void *dynb__calloc(dynb_ctx *ctx, size_t count, size_t size);
void dynb__free(dynb_ctx *ctx, void *ptr);
char *dynb__strdup(dynb_ctx *ctx, const char *s);

/* Fault injection (tests): makes the k-th event of `kind` from now fail,
 * once (k = 0: none), and from then on counts the context's live device
 * buffers. A failed allocation returns NULL, a failed buffer creation
 * DYNB_STATUS_OUT_OF_DEVICE_MEMORY, a failed build DYNB_STATUS_BUILD_FAILED,
 * each with a message saying the fault was injected. */
void dynb__ctx_inject_fault(dynb_ctx *ctx, dynb__fault_kind kind, uint64_t k);
/* Test hook: lowers the limits the library reads to those of `cap` (a
 * zero field leaves that limit alone; none is ever raised). Kernels built
 * afterwards and plans built afterwards see them. */
void dynb__ctx_clamp_limits(dynb_ctx *ctx, const dynb__limits *cap);
/* Whether the armed fault of `kind` has fired. */
bool dynb__ctx_fault_fired(const dynb_ctx *ctx, dynb__fault_kind kind);
/* Device buffers created by dynb__tensor_alloc and not yet destroyed, since
 * the first dynb__ctx_inject_fault (OpenCL reports destruction through a
 * callback; a queue still using a buffer keeps it alive until it drains). */
size_t dynb__ctx_live_buffers(const dynb_ctx *ctx);
/* Counts an event of `kind`: true when it is the one that must fail. */
static inline bool dynb__fault_hit(dynb_ctx *ctx, dynb__fault_kind kind) {
  dynb__faults *f = &ctx->faults;
  if (!f->at[kind] || ++f->count[kind] != f->at[kind]) return false;
  f->fired[kind] = true;
  return true;
}

/* Grows an array of `elem`-byte items so that it holds at least n + 1;
 * `what` names it in the error. */
dynb_status dynb__grow(dynb_ctx *ctx, void **items, size_t *cap, size_t n, size_t elem,
                       const char *what);

/* Remembered decisions: dynb__choice_get returns -1 for an unknown key. */
int dynb__choice_get(const dynb_ctx *ctx, uint64_t key);
dynb_status dynb__choice_put(dynb_ctx *ctx, uint64_t key, int value);
/* Seconds on a monotonic clock, for the timings behind choices. */
double dynb__now(void);

/* A context whose GEMMs run with CLBlast's own parameters: no tuning cache
 * and no built-in override (desc->tune_cache is ignored). The tuner starts
 * each candidate from it, in a process of its own, since CLBlast keeps
 * overrides per device for the whole process. */
dynb_status dynb__ctx_create_plain(const dynb_ctx_desc *desc, dynb_ctx **out);

/* ---- Devices (device.c) -------------------------------------------------- */

dynb_status dynb__device_resolve(const char *selector, cl_platform_id *platform,
                                 cl_device_id *device, char *err, size_t errlen);
void dynb__device_describe(cl_platform_id platform, cl_device_id device, dynb_device_info *info);

/* ---- Programs and kernels (program.c) ----------------------------------- */

/* The kernel `name` of kernel family `family` (a kernels/<family>.cl file),
 * built for `real` (DYNB_F32 or DYNB_F64). The program is built on first use
 * (from the binary cache when possible) and kept for the context's life. */
dynb_status dynb__kernel(dynb_ctx *ctx, const char *family, const char *name, dynb_dtype real,
                         cl_kernel *out);
/* The same with what the kernel allows (see dynb__kernel_limits). */
dynb_status dynb__kernel_with_limits(dynb_ctx *ctx, const char *family, const char *name,
                                     dynb_dtype real, cl_kernel *out, dynb__kernel_limits *lim);
void dynb__programs_release(dynb_ctx *ctx);
/* Builds `source` (after the prelude) for `real` through the binary cache;
 * `label` names it in cache files and error messages. The caller releases
 * the program. */
dynb_status dynb__program_build(dynb_ctx *ctx, const char *label, const char *source,
                                dynb_dtype real, cl_program *out);
/* Creates `dir` and its parents where missing (best effort). */
void dynb__mkdir_p(const char *dir);
/* 64-bit FNV-1a, continued from `h` (start with DYNB__FNV_SEED). */
#define DYNB__FNV_SEED UINT64_C(0xcbf29ce484222325)
uint64_t dynb__fnv1a(uint64_t h, const void *data, size_t n);

/* ---- Tensors (tensor.c) -------------------------------------------------- */

size_t dynb__dtype_size(dynb_dtype dtype);
const char *dynb__dtype_name(dynb_dtype dtype);
size_t dynb__tensor_numel(const dynb__tensor *t);
/* Allocates a buffer of exactly the tensor's size and returns a view of it.
 * A tensor larger than the device's largest allocation
 * (CL_DEVICE_MAX_MEM_ALLOC_SIZE) fails with OUT_OF_DEVICE_MEMORY saying
 * both sizes; callers that know the tensor's name prefix it. */
dynb_status dynb__tensor_alloc(dynb_ctx *ctx, dynb_dtype dtype, int ndim, const int64_t *dims,
                               dynb__tensor *out);
/* Releases a buffer obtained from dynb__tensor_alloc and clears the view. */
void dynb__tensor_release(dynb__tensor *t);
/* A view of `mem` at element `offset` with the given shape. */
dynb__tensor dynb__tensor_view(cl_mem mem, size_t offset, dynb_dtype dtype, int ndim,
                               const int64_t *dims);
/* A view of the caller's buffer `mem` at element `offset`: checks that mem
 * belongs to ctx's cl_context and that the view lies inside it, then takes
 * one reference to mem (dynb__tensor_release drops it), so the caller may
 * release theirs whenever they like. */
dynb_status dynb__tensor_wrap(dynb_ctx *ctx, cl_mem mem, size_t offset, dynb_dtype dtype,
                              int ndim, const int64_t *dims, dynb__tensor *out);
/* A view into the same buffer as `base`, `offset` elements past base's
 * offset, with the given shape and base's dtype. No OpenCL call. */
dynb__tensor dynb__tensor_sub(const dynb__tensor *base, size_t offset, int ndim,
                              const int64_t *dims);

/* Consecutive views of one buffer. With a base holding no buffer (a zeroed
 * tensor) it only counts, so that one function both sizes a buffer and lays
 * it out. Views start at multiples of 32 elements: whole cache lines, and
 * vector loads that never straddle two views. Empty views take one element,
 * so that each is a valid tensor. */
typedef struct dynb__cursor {
  const dynb__tensor *base;
  size_t at;
} dynb__cursor;
dynb__tensor dynb__cursor_take(dynb__cursor *c, int ndim, const int64_t *dims);
dynb__tensor dynb__cursor_flat(dynb__cursor *c, size_t count);
/* ---- Arenas (arena.c) ---------------------------------------------------- */

/* Views laid out over several buffers ("pages") where one would exceed the
 * device's largest allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE, often a
 * quarter of a GPU's memory): a plan's shared scratch, a block's arenas.
 * Each layout walks the pages with a cursor from the start; a view that
 * does not fit in what is left of its page starts the next one, so a view
 * never straddles two buffers. Sizing comes first: with no page allocated,
 * layouts only record how much of each page they reach (several layouts
 * sharing the arena, each from the start, record the most of any);
 * dynb__arena_alloc then allocates each page that size, and the same
 * layouts again hand out views of the pages. A layout fits in one page
 * when it can, so on a device that allows it the arena is one buffer laid
 * out as a single cursor would. A view larger than a page cannot be
 * placed: the arena records the first such view (by the name its layout
 * gives) and the error surfaces from dynb__arena_alloc or
 * dynb__arena_check. */
#define DYNB__ARENA_PAGES 64
typedef struct dynb__arena {
  dynb_dtype dtype;
  size_t page_cap;                      /* elements one page may hold */
  int npages;                           /* pages the layouts reach */
  size_t need[DYNB__ARENA_PAGES];       /* elements each page must hold */
  dynb__tensor page[DYNB__ARENA_PAGES]; /* the buffers, once allocated */
  bool allocated;
  char error[256];                      /* the first view that could not be placed */
} dynb__arena;

/* An empty arena of `dtype` whose pages hold at most the device's largest
 * allocation (and 2^31 - 1 elements, the kernels' index range). */
void dynb__arena_init(dynb_ctx *ctx, dynb__arena *a, dynb_dtype dtype);
/* Allocates every page at its recorded size; fails (OUT_OF_DEVICE_MEMORY)
 * with the recorded placement error prefixed by `what`, if any. */
dynb_status dynb__arena_alloc(dynb_ctx *ctx, dynb__arena *a, const char *what);
/* After laying views out in an allocated arena: fails with the placement
 * error, if any (BUFFER_TOO_SMALL: a layout reached past what was sized). */
dynb_status dynb__arena_check(dynb_ctx *ctx, const dynb__arena *a, const char *what);
/* Releases the pages and empties the arena (init again before reuse). */
void dynb__arena_release(dynb__arena *a);
size_t dynb__arena_bytes(const dynb__arena *a);

typedef struct dynb__arena_cursor {
  dynb__arena *arena;
  int page;
  size_t at;
} dynb__arena_cursor;
dynb__arena_cursor dynb__arena_begin(dynb__arena *a);
/* A view of `dims`, 32-element aligned like dynb__cursor_take (empty views
 * take one element); `what` names it in a placement error. */
dynb__tensor dynb__arena_take(dynb__arena_cursor *c, int ndim, const int64_t *dims,
                              const char *what);
dynb__tensor dynb__arena_flat(dynb__arena_cursor *c, size_t count, const char *what);

/* `count` items of `size` elements, consecutive where they share a page
 * (item i + 1 right after item i, as in one tensor), never straddling two:
 * the states or stage caches of a block, which together may exceed an
 * allocation that each one fits. */
typedef struct dynb__run {
  const dynb__arena *arena;
  int page;        /* of item 0 */
  size_t off;      /* of item 0, in elements */
  size_t first;    /* items in that page */
  size_t per_page; /* items in each later page */
  size_t size;     /* elements per item */
} dynb__run;
dynb__run dynb__arena_run(dynb__arena_cursor *c, size_t count, size_t size, const char *what);
/* Item i of a run as a view of `dims` (numel at most the item size). */
dynb__tensor dynb__run_at(const dynb__run *r, size_t i, int ndim, const int64_t *dims);

/* Blocking copies between host memory and the whole tensor. */
dynb_status dynb__tensor_write(dynb_ctx *ctx, const dynb__tensor *t, const void *host);
dynb_status dynb__tensor_read(dynb_ctx *ctx, const dynb__tensor *t, void *host);
/* The same copies with host values as doubles, converted to the tensor's
 * dtype (for initialisation, files and tests; not for hot paths). */
dynb_status dynb__tensor_write_f64(dynb_ctx *ctx, const dynb__tensor *t, const double *host);
dynb_status dynb__tensor_read_f64(dynb_ctx *ctx, const dynb__tensor *t, double *host);
/* dst = src, same element count (enqueued, not waited for). */
dynb_status dynb__tensor_copy(dynb_ctx *ctx, const dynb__tensor *src, const dynb__tensor *dst);
/* Sets every element to zero (enqueued, not waited for). */
dynb_status dynb__tensor_zero(dynb_ctx *ctx, const dynb__tensor *t);
/* Checks that `t` is usable as the argument called `name`: a buffer, the
 * dtype `dtype`, `ndim` dimensions (any if negative), every dim >= 1 and the
 * view inside its buffer. */
dynb_status dynb__tensor_check(dynb_ctx *ctx, const dynb__tensor *t, const char *name,
                               dynb_dtype dtype, int ndim);
/* Checks that a and b have the same shape. */
dynb_status dynb__tensor_check_same(dynb_ctx *ctx, const dynb__tensor *a, const char *an,
                                    const dynb__tensor *b, const char *bn);
/* Checks that the device can run kernels over `real`. */
dynb_status dynb__check_real(dynb_ctx *ctx, dynb_dtype real);
/* Blocks until the queue is empty. */
dynb_status dynb__finish(dynb_ctx *ctx);

/* ---- Profiling (profile.c) ----------------------------------------------- */

/* Starts recording every command the context enqueues, on a queue of its
 * own with profiling enabled (after the context's queue has drained).
 * dynb__profile_end waits for the device, returns one sample per command
 * in enqueue order (*out from dynb__alloc, freed with dynb__free; NULL when
 * none), and goes back to the context's queue. Costs nothing when off. */
dynb_status dynb__profile_begin(dynb_ctx *ctx);
dynb_status dynb__profile_end(dynb_ctx *ctx, dynb__prof_sample **out, size_t *count);
/* Ends profiling without results (dynb_ctx_free). */
void dynb__profile_release(dynb_ctx *ctx);
/* Records a command's event (taken) under the current labels; `start`, a
 * marker enqueued just before the command (taken; NULL for one kernel). */
dynb_status dynb__profile_add(dynb_ctx *ctx, cl_event ev, cl_event start, const char *family,
                              const char *name);
void dynb__profile_set_layer(dynb_ctx *ctx, const char *layer, int index);
void dynb__profile_set_pass(dynb_ctx *ctx, const char *pass);
/* Labels the commands enqueued next with a layer ("open", "block" 2, ...;
 * index -1 for none) or a pass ("forward", "backward"); string literals.
 * No-ops unless profiling. */
static inline void dynb__profile_layer(dynb_ctx *ctx, const char *layer, int index) {
  if (ctx->profile) dynb__profile_set_layer(ctx, layer, index);
}
static inline void dynb__profile_pass(dynb_ctx *ctx, const char *pass) {
  if (ctx->profile) dynb__profile_set_pass(ctx, pass);
}

/* ---- Launches (launch.c) ------------------------------------------------- */

/* Collects a kernel's arguments in order, then enqueues it. Argument errors
 * are remembered and reported by dynb__launch_run, so call sites stay flat.
 * dynb__launch_run always ends by setting every buffer argument back to
 * NULL: kernels are cached for the context's life, and some drivers (Mesa's
 * rusticl) keep a buffer alive for as long as a kernel holds it as an
 * argument, so a freed plan, or a caller's released cl_mem, would otherwise
 * stay in device memory until that kernel next ran or the context went. */
typedef struct dynb__launch {
  dynb_ctx *ctx;
  cl_kernel kernel;
  const char *family; /* a string literal: kernels/<family>.cl */
  const char *name;
  dynb_dtype real;
  cl_uint nargs;
  cl_int err;
  dynb__kernel_limits limits; /* the kernel's */
  size_t local_bytes;         /* __local arguments so far */
  uint64_t buffers; /* bit i set: argument i is a buffer */
} dynb__launch;

dynb_status dynb__launch_begin(dynb__launch *l, dynb_ctx *ctx, const char *family,
                               const char *name, dynb_dtype real);
/* A tensor is passed as two arguments: its buffer and its element offset (ulong). */
void dynb__arg_tensor(dynb__launch *l, const dynb__tensor *t);
void dynb__arg_int(dynb__launch *l, int v);
void dynb__arg_ulong(dynb__launch *l, uint64_t v);
/* A scalar of the kernel's `real` type. */
void dynb__arg_real(dynb__launch *l, double v);
/* Local memory of `bytes`; dynb__launch_run checks that the kernel's own
 * and every __local argument fit in the device's local memory. */
void dynb__arg_local(dynb__launch *l, size_t bytes);
/* Enqueues over `global` (rounded up to a multiple of `local` where given).
 * An explicit local size must respect the kernel's and the device's
 * work-group limits and the per-dimension item limits; a launch that
 * does not fails with UNSUPPORTED naming the kernel and the limit, before
 * anything is enqueued. */
dynb_status dynb__launch_run(dynb__launch *l, cl_uint dims, const size_t *global,
                             const size_t *local);
/* Enqueues a 1-D launch of at least n work-items, local size left to the
 * driver (fastest on PoCL; see notes). Kernels guard with `if (i >= n)`. */
dynb_status dynb__launch_1d(dynb__launch *l, size_t n);
/* Reductions (dynb_group_sum) use power-of-two work-groups of at most
 * DYNB__REDUCE_MAX items; their first passes split the input into a number
 * of groups that depends on this constant only, so that workspaces do not
 * depend on the kernel. */
#define DYNB__REDUCE_MAX 256
/* The work-group size of the reduction kernel begun in l, whose __local
 * scratch takes `per_item` bytes per work-item: the largest power of two no
 * larger than DYNB__REDUCE_MAX, the device's work-group and first-dimension
 * limits, the kernel's CL_KERNEL_WORK_GROUP_SIZE, and what the device's
 * local memory holds besides the kernel's own. At least 1 (a launch whose
 * one item does not fit fails in dynb__launch_run). A property of the
 * device, driver and kernel, so the reduction tree is fixed for them. */
size_t dynb__launch_reduce_wg(const dynb__launch *l, size_t per_item);
/* The same bound from the device limits alone (any kernel's is at most
 * this): tests derive their error bounds from it. */
size_t dynb__reduce_wg(dynb_ctx *ctx);

/* ---- GEMM through CLBlast (gemm.c) --------------------------------------- */

/* Row-major C = alpha * op(A) * op(B) + beta * C, with op(X) = X or Xᵀ;
 * A, B, C are views whose offsets are honoured; ld* are leading dimensions
 * in elements. All three share `a->dtype`, which must be F32 or F64. */
typedef struct dynb__gemm_args {
  bool trans_a, trans_b;
  size_t m, n, k;
  double alpha, beta;
  const dynb__tensor *a;
  size_t lda;
  const dynb__tensor *b;
  size_t ldb;
  const dynb__tensor *c;
  size_t ldc;
} dynb__gemm_args;
/* Issued in the formulation tuned for its shape (row-major when none). */
dynb_status dynb__gemm(dynb_ctx *ctx, const dynb__gemm_args *g);
/* The same in a given formulation (the tuner, tests). */
dynb_status dynb__gemm_issue(dynb_ctx *ctx, const dynb__gemm_args *g, dynb__gemm_form form);
/* Sets the formulation dynb__gemm uses for one shape (dtype, transposes,
 * m, n, k of `s`; its leading dimensions and calls are ignored). */
dynb_status dynb__gemm_set_form(dynb_ctx *ctx, const dynb__gemm_shape *s, dynb__gemm_form form);
/* While on, dynb__gemm appends every new shape (with its leading
 * dimensions) to ctx->gemm_rec and counts calls per shape. Starting
 * clears what was recorded. */
void dynb__gemm_record(dynb_ctx *ctx, bool on);

/* ---- CLBlast parameter sets (gemm_config.c) ------------------------------ */

/* One set of CLBlast GEMM parameters, applied per device and precision:
 * the Xgemm kernel, the XgemmDirect kernel and the size below which CLBlast
 * takes the direct one. A part that is absent stays as CLBlast has it. */
#define DYNB__XGEMM_PARAMS 16
#define DYNB__XGEMM_DIRECT_PARAMS 10
typedef struct dynb__gemm_config {
  char name[32];
  bool has_xgemm, has_direct, has_routine;
  size_t xgemm[DYNB__XGEMM_PARAMS];
  size_t direct[DYNB__XGEMM_DIRECT_PARAMS];
  size_t min_indirect; /* XGEMM_MIN_INDIRECT_SIZE */
} dynb__gemm_config;

/* The curated candidates for the context's device type whose work-groups
 * and local memory fit the device, "clblast" (no override) first; returns
 * how many there are and fills up to cap names. */
size_t dynb__gemm_candidates(const dynb_ctx *ctx, const char **names, size_t cap);
/* The name of the built-in configuration for the device type and real
 * ("i_m32n32" for single precision on PoCL CPU devices, else "clblast"). */
const char *dynb__gemm_builtin(const dynb_ctx *ctx, dynb_dtype real);
/* The candidate called `name`; INVALID_ARGUMENT naming the known ones when
 * there is none. */
dynb_status dynb__gemm_config_find(dynb_ctx *ctx, const char *name, dynb__gemm_config *out);
/* Hands the configuration to CLBlast for the context's device and `real`. */
dynb_status dynb__gemm_config_apply(dynb_ctx *ctx, dynb_dtype real, const dynb__gemm_config *c);
/* Writes (put) or reads (get) a configuration as tuning-cache entries
 * gemm.<real>.{config,xgemm,xgemmdirect,routine}. Get sets *found to false
 * when there is no gemm.<real>.config, and fails with BAD_FORMAT naming the
 * entry when one is malformed. */
dynb_status dynb__gemm_config_put(dynb_ctx *ctx, dynb_dtype real, const dynb__gemm_config *c);
dynb_status dynb__gemm_config_get(dynb_ctx *ctx, dynb_dtype real, dynb__gemm_config *out,
                                  bool *found);
/* At context creation: for each real type, the configuration from the
 * tuning cache (and its per-shape formulations) when there is one, else the
 * built-in one. Never fails the creation: a cache CLBlast refuses is
 * reported through the log and the built-in parameters are used. */
dynb_status dynb__gemm_configure(dynb_ctx *ctx);

/* ---- Verifying and timing one GEMM shape (gemm_bench.c) ------------------ */

/* A shape with operands on the device and their host copies: small
 * integers, so that every partial sum is exact in the real type and the
 * device result must equal the host product exactly (see gemm_bench.c). */
typedef struct dynb__gemm_bench {
  dynb__gemm_shape shape;
  double *a, *b;
  dynb__tensor ta, tb, tc;
} dynb__gemm_bench;
dynb_status dynb__gemm_bench_init(dynb_ctx *ctx, const dynb__gemm_shape *s, uint64_t seed,
                                  dynb__gemm_bench *out);
void dynb__gemm_bench_free(dynb_ctx *ctx, dynb__gemm_bench *b);
/* Enqueues `calls` products C = A·B in formulation `form` (no wait). */
dynb_status dynb__gemm_bench_run(dynb_ctx *ctx, dynb__gemm_bench *b, dynb__gemm_form form,
                                 int calls);
/* Clears C, runs one product and compares C with the host product;
 * *bad counts wrong entries among *checked. */
dynb_status dynb__gemm_bench_verify(dynb_ctx *ctx, dynb__gemm_bench *b, dynb__gemm_form form,
                                    size_t *checked, size_t *bad, double *max_err);
/* Median seconds per call over `reps` batches of back-to-back calls, the
 * queue finished only around each batch. */
dynb_status dynb__gemm_bench_time(dynb_ctx *ctx, dynb__gemm_bench *b, dynb__gemm_form form,
                                  int reps, double *secs);
/* The host check behind dynb__gemm_bench_verify, on host A, B (row-major,
 * leading dimensions of s) and C (m×n, ldc): every entry of small products,
 * else every row and column at three places plus a seeded sample. Returns
 * the number of entries off by more than the error bound. */
size_t dynb__gemm_check(const dynb__gemm_shape *s, const double *a, const double *b,
                        const double *c, size_t *checked, double *max_err);

/* ---- Tuning cache (tune.c) ----------------------------------------------- */

/* The cache is a text file of sections, one per device identity
 * ("[platform | platform version | device | driver | CLBlast x.y.z]"), of
 * `key = value` lines; '#' starts a comment line. A context loads its own
 * section once at creation; malformed lines are reported through the log
 * (file and line) and ignored. Keys are [A-Za-z0-9._-]+, values printable
 * ASCII without leading or trailing blanks, each at most DYNB__TUNE_MAX. */
#define DYNB__TUNE_MAX 512
/* Loads ctx->tune_path (missing file: empty). Only called at creation. */
dynb_status dynb__tune_load(dynb_ctx *ctx);
/* The value of `key` for this device copied to val (cap bytes); false when
 * absent or longer than cap - 1. */
bool dynb__tune_get(const dynb_ctx *ctx, const char *key, char *val, size_t cap);
/* Sets `key` for this device in memory; dynb__tune_save writes it. */
dynb_status dynb__tune_put(dynb_ctx *ctx, const char *key, const char *val);
/* Drops every key of this device that starts with `prefix`. */
void dynb__tune_remove_prefix(dynb_ctx *ctx, const char *prefix);
/* Writes this device's entries into the file atomically, keeping the other
 * devices' sections as the file has them now. */
dynb_status dynb__tune_save(dynb_ctx *ctx);
void dynb__tune_release(dynb_ctx *ctx);

#endif
