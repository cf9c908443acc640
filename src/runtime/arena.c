/* Arenas: views over several device buffers, for layouts that would exceed
 * the device's largest allocation (see runtime.h). */
#include <stdio.h>
#include <string.h>

#include "runtime/runtime.h"

void dynb__arena_init(dynb_ctx *ctx, dynb__arena *a, dynb_dtype dtype) {
  memset(a, 0, sizeof *a);
  a->dtype = dtype;
  uint64_t cap = ctx->limits.max_alloc / dynb__dtype_size(dtype);
  if (cap > (uint64_t)INT32_MAX) cap = INT32_MAX;
  /* Whole 32-element steps, so that aligning a view never passes the end. */
  a->page_cap = cap >= 32 ? (size_t)cap / 32 * 32 : (size_t)cap;
  for (int i = 0; i < DYNB__ARENA_PAGES; i++) a->page[i].dtype = dtype;
}

static size_t bytes_of(const dynb__arena *a, size_t n) { return n * dynb__dtype_size(a->dtype); }

/* Records that the current layout reaches element `end` of page `page`:
 * while sizing, the page must hold it; once allocated, it must already. */
static bool reach(dynb__arena *a, int page, size_t end, const char *what) {
  if (page >= DYNB__ARENA_PAGES) {
    snprintf(a->error, sizeof a->error,
             "%s: needs more than %d buffers of at most %zu bytes (CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
             what, DYNB__ARENA_PAGES, bytes_of(a, a->page_cap));
    return false;
  }
  if (a->allocated) {
    if (page < a->npages && end <= dynb__tensor_numel(&a->page[page])) return true;
    snprintf(a->error, sizeof a->error, "%s: past the end of buffer %d as sized", what, page);
    return false;
  }
  if (page >= a->npages) a->npages = page + 1;
  if (end > a->need[page]) a->need[page] = end;
  return true;
}

static bool too_large(dynb__arena *a, size_t n, const char *what) {
  if (n <= a->page_cap) return false;
  snprintf(a->error, sizeof a->error,
           "%s takes %zu bytes, over the device's largest allocation of %zu bytes "
           "(CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
           what, bytes_of(a, n), bytes_of(a, a->page_cap));
  return true;
}

/* Where `n` elements go: the current page if they fit after aligning,
 * else the start of the next. False (error recorded) if they cannot. */
static bool place(dynb__arena_cursor *c, size_t n, int *page, size_t *off, const char *what) {
  dynb__arena *a = c->arena;
  if (a->error[0] || too_large(a, n, what)) return false;
  size_t at = (c->at + 31) / 32 * 32;
  if (at > a->page_cap || n > a->page_cap - at) c->page++, at = 0;
  if (!reach(a, c->page, at + n, what)) return false;
  *page = c->page;
  *off = at;
  c->at = at + n;
  return true;
}

dynb__arena_cursor dynb__arena_begin(dynb__arena *a) {
  dynb__arena_cursor c = {a, 0, 0};
  return c;
}

dynb__tensor dynb__arena_take(dynb__arena_cursor *c, int ndim, const int64_t *dims,
                              const char *what) {
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
  int page = 0;
  size_t off = 0;
  if (!place(c, n ? n : 1, &page, &off, what)) {
    dynb__tensor none = {0};
    return none;
  }
  return dynb__tensor_sub(&c->arena->page[page], off, ndim, dims);
}

dynb__tensor dynb__arena_flat(dynb__arena_cursor *c, size_t count, const char *what) {
  int64_t n = (int64_t)count;
  return dynb__arena_take(c, 1, &n, what);
}

dynb__run dynb__arena_run(dynb__arena_cursor *c, size_t count, size_t size, const char *what) {
  dynb__arena *a = c->arena;
  dynb__run r = {a, 0, 0, 0, 0, size};
  if (count == 0) return r;
  if (a->error[0] || too_large(a, size ? size : 1, what)) return r;
  size = size ? size : 1;
  r.size = size;
  size_t at = (c->at + 31) / 32 * 32;
  size_t fit = at <= a->page_cap ? (a->page_cap - at) / size : 0;
  if (fit == 0) c->page++, at = 0, fit = a->page_cap / size;
  r.page = c->page;
  r.off = at;
  r.first = count < fit ? count : fit;
  r.per_page = a->page_cap / size;
  if (!reach(a, c->page, at + r.first * size, what)) return r;
  c->at = at + r.first * size;
  for (size_t left = count - r.first; left > 0;) {
    size_t k = left < r.per_page ? left : r.per_page;
    c->page++;
    if (!reach(a, c->page, k * size, what)) return r;
    c->at = k * size;
    left -= k;
  }
  return r;
}

dynb__tensor dynb__run_at(const dynb__run *r, size_t i, int ndim, const int64_t *dims) {
  const dynb__tensor none = {0};
  int page = r->page;
  size_t off = r->off + i * r->size;
  if (i >= r->first) {
    if (r->per_page == 0) return none; /* a run that was never placed */
    size_t j = i - r->first;
    page += 1 + (int)(j / r->per_page);
    off = (j % r->per_page) * r->size;
  }
  if (page >= DYNB__ARENA_PAGES) return none;
  return dynb__tensor_sub(&r->arena->page[page], off, ndim, dims);
}

dynb_status dynb__arena_alloc(dynb_ctx *ctx, dynb__arena *a, const char *what) {
  DYNB_CHECK(ctx, !a->error[0], DYNB_STATUS_OUT_OF_DEVICE_MEMORY, "%s: %s", what, a->error);
  for (int p = 0; p < a->npages; p++) {
    int64_t n = (int64_t)(a->need[p] ? a->need[p] : 1);
    dynb_status st = dynb__tensor_alloc(ctx, a->dtype, 1, &n, &a->page[p]);
    if (st != DYNB_OK) {
      for (int q = 0; q < p; q++) dynb__tensor_release(&a->page[q]);
      return dynb__fail_prefixed(ctx, st, what);
    }
  }
  a->allocated = true;
  return DYNB_OK;
}

dynb_status dynb__arena_check(dynb_ctx *ctx, const dynb__arena *a, const char *what) {
  dynb_status st = a->allocated ? DYNB_STATUS_BUFFER_TOO_SMALL : DYNB_STATUS_OUT_OF_DEVICE_MEMORY;
  DYNB_CHECK(ctx, !a->error[0], st, "%s: %s", what, a->error);
  return DYNB_OK;
}

void dynb__arena_release(dynb__arena *a) {
  for (int p = 0; p < DYNB__ARENA_PAGES; p++) dynb__tensor_release(&a->page[p]);
  memset(a, 0, sizeof *a);
}

size_t dynb__arena_bytes(const dynb__arena *a) {
  size_t n = 0;
  for (int p = 0; p < a->npages; p++) n += a->page[p].cap_bytes;
  return n;
}
