/* The byte reader every file parser uses: one sequential stream over a
 * file, a memory buffer or a caller's source function, optionally inflating
 * gzip, that tracks positions for messages and never hands out more bytes
 * than the source holds. Parsers ask for exact counts, so a gzip bomb or a
 * lying header cannot make them read or allocate past what they checked. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "io/io.h"

/* zlib takes at most UINT_MAX bytes per call; a gigabyte keeps the casts
 * obviously safe. */
#define Z_CHUNK ((size_t)1 << 30)
/* First reservation when the final size is not promised by the source. */
#define GROW_START ((size_t)1 << 20)

/* ---- sources ---- */

static int mem_source(void *user, void *dst, size_t n, size_t *got) {
  dynb__reader *r = user;
  size_t k = r->mem_size - r->mem_pos;
  if (k > n) k = n;
  if (k) memcpy(dst, r->mem + r->mem_pos, k);
  r->mem_pos += k;
  *got = k;
  return 0;
}

static int file_source(void *user, void *dst, size_t n, size_t *got) {
  FILE *f = user;
  *got = fread(dst, 1, n, f);
  if (*got < n && ferror(f)) return errno ? errno : EIO;
  return 0;
}

/* One call of the source, counted, with the failure explained. */
static dynb_status source_read(dynb__reader *r, unsigned char *dst, size_t n, size_t *got,
                               char *err, size_t errlen) {
  *got = 0;
  if (r->raw_end || n == 0) return DYNB_OK;
  int e = r->read(r->user, dst, n, got);
  if (e != 0)
    return dynb__io_fail(err, errlen, DYNB_STATUS_IO_ERROR, "%s: byte %" PRIu64 ": read error: %s",
                         r->name, r->raw_pos, strerror(e));
  if (*got > n) /* a broken source; never trust it past n */
    return dynb__io_fail(err, errlen, DYNB_STATUS_IO_ERROR, "%s: source returned too many bytes",
                         r->name);
  if (*got == 0) r->raw_end = true;
  r->raw_pos += *got;
  return DYNB_OK;
}

/* Ensures `want` raw bytes wait in buf (fewer only at the end of the source). */
static dynb_status fill(dynb__reader *r, size_t want, char *err, size_t errlen) {
  if (r->buf_pos > 0) {
    memmove(r->buf, r->buf + r->buf_pos, r->buf_len - r->buf_pos);
    r->buf_len -= r->buf_pos, r->buf_pos = 0;
  }
  while (r->buf_len < want && !r->raw_end) {
    size_t got;
    dynb_status st =
        source_read(r, r->buf + r->buf_len, DYNB__READER_BUF - r->buf_len, &got, err, errlen);
    if (st != DYNB_OK) return st;
    r->buf_len += got;
  }
  return DYNB_OK;
}

/* ---- gzip ---- */

static bool gzip_magic_waits(const dynb__reader *r) {
  return r->buf_len - r->buf_pos >= 2 && r->buf[r->buf_pos] == 0x1f &&
         r->buf[r->buf_pos + 1] == 0x8b;
}

static dynb_status z_start(dynb__reader *r, char *err, size_t errlen) {
  z_stream *z = calloc(1, sizeof *z);
  /* 15 + 16: the largest window, gzip wrapper with its CRC-32 and length. */
  if (!z || inflateInit2(z, 15 + 16) != Z_OK) {
    free(z);
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                         r->name);
  }
  r->z = z;
  return DYNB_OK;
}

/* Compressed bytes consumed so far, for messages. */
static uint64_t z_raw_at(const dynb__reader *r) { return r->raw_pos - (r->buf_len - r->buf_pos); }

/* A member ended: another member may follow; anything else is an error. */
static dynb_status z_member_end(dynb__reader *r, char *err, size_t errlen) {
  dynb_status st = fill(r, 2, err, errlen);
  if (st != DYNB_OK) return st;
  if (r->buf_len == r->buf_pos) {
    r->z_end = true;
    return DYNB_OK;
  }
  if (!gzip_magic_waits(r))
    return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: compressed byte %" PRIu64 ": unexpected bytes after the gzip data",
                         r->name, z_raw_at(r));
  inflateReset(r->z);
  return DYNB_OK;
}

static dynb_status z_read(dynb__reader *r, unsigned char *dst, size_t n, size_t *got, char *err,
                          size_t errlen) {
  z_stream *z = r->z;
  *got = 0;
  while (*got < n && !r->z_end) {
    dynb_status st = r->buf_pos < r->buf_len ? DYNB_OK : fill(r, 1, err, errlen);
    if (st != DYNB_OK) return st;
    if (r->buf_pos == r->buf_len) {
      r->z_cut = true;
      return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: byte %" PRIu64 ": the gzip data is cut short (after %" PRIu64
                           " compressed bytes)",
                           r->name, r->pos + *got, r->raw_pos);
    }
    size_t want = n - *got < Z_CHUNK ? n - *got : Z_CHUNK;
    z->next_in = r->buf + r->buf_pos;
    z->avail_in = (uInt)(r->buf_len - r->buf_pos);
    z->next_out = dst + *got;
    z->avail_out = (uInt)want;
    int zr = inflate(z, Z_NO_FLUSH);
    bool stalled = z->avail_in == r->buf_len - r->buf_pos && z->avail_out == want;
    r->buf_pos = r->buf_len - z->avail_in;
    *got += want - z->avail_out;
    if (zr == Z_STREAM_END) {
      st = z_member_end(r, err, errlen);
      if (st != DYNB_OK) return st;
    } else if (zr == Z_MEM_ERROR) {
      return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                           r->name);
    } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
      return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: compressed byte %" PRIu64 ": corrupt gzip data (%s)", r->name,
                           z_raw_at(r), z->msg ? z->msg : "zlib error");
    }
    /* Z_BUF_ERROR means no progress without more input: the loop refills;
     * zlib promises it never stalls with input and room, but a loop that
     * could spin forever is not left to a promise. */
    if (stalled && r->buf_pos < r->buf_len)
      return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: compressed byte %" PRIu64 ": gzip data makes no progress", r->name,
                           z_raw_at(r));
  }
  return DYNB_OK;
}

/* ---- opening and closing ---- */

static dynb_status start(dynb__reader *r, bool gunzip, char *err, size_t errlen) {
  r->buf = malloc(DYNB__READER_BUF);
  if (!r->buf)
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                         r->name);
  if (!gunzip) return DYNB_OK;
  dynb_status st = fill(r, 2, err, errlen);
  if (st == DYNB_OK && gzip_magic_waits(r)) st = z_start(r, err, errlen);
  return st;
}

dynb_status dynb__reader_open_source(dynb__reader *r, const char *name, dynb__source_fn fn,
                                     void *user, uint64_t size, bool gunzip, char *err,
                                     size_t errlen) {
  if (!r || !fn)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "reader: NULL argument");
  memset(r, 0, sizeof *r);
  r->name = name ? name : "(unnamed)";
  r->read = fn, r->user = user, r->raw_size = size;
  dynb_status st = start(r, gunzip, err, errlen);
  if (st != DYNB_OK) dynb__reader_close(r);
  return st;
}

dynb_status dynb__reader_open_mem(dynb__reader *r, const char *name, const void *bytes, size_t size,
                                  bool gunzip, char *err, size_t errlen) {
  if (!r || (!bytes && size > 0))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "reader: NULL argument");
  memset(r, 0, sizeof *r);
  r->name = name ? name : "(memory)";
  r->read = mem_source, r->user = r;
  r->mem = bytes, r->mem_size = size, r->raw_size = size;
  dynb_status st = start(r, gunzip, err, errlen);
  if (st != DYNB_OK) dynb__reader_close(r);
  return st;
}

dynb_status dynb__reader_open_file(dynb__reader *r, const char *path, bool gunzip, char *err,
                                   size_t errlen) {
  if (!r || !path || !*path)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "reader: no file name");
  memset(r, 0, sizeof *r);
  r->name = path;
  errno = 0;
  r->file = fopen(path, "rb");
  if (!r->file)
    return dynb__io_fail(err, errlen, DYNB_STATUS_IO_ERROR, "%s: cannot open: %s", path,
                         strerror(errno ? errno : ENOENT));
  struct stat sb;
  int e = fstat(fileno(r->file), &sb) != 0 ? errno : S_ISDIR(sb.st_mode) ? EISDIR : 0;
  if (e != 0) {
    dynb__reader_close(r);
    return dynb__io_fail(err, errlen, DYNB_STATUS_IO_ERROR, "%s: cannot read: %s", path,
                         strerror(e));
  }
  /* Only a regular file's size is a promise worth planning with; it is
   * still never trusted for bounds (the file may shrink while we read). */
  r->raw_size = S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : DYNB__SIZE_UNKNOWN;
  r->read = file_source, r->user = r->file;
  dynb_status st = start(r, gunzip, err, errlen);
  if (st != DYNB_OK) dynb__reader_close(r);
  return st;
}

void dynb__reader_close(dynb__reader *r) {
  if (!r) return;
  if (r->z) inflateEnd(r->z);
  free(r->z);
  free(r->buf);
  if (r->file) fclose(r->file);
  const char *name = r->name;
  memset(r, 0, sizeof *r);
  r->name = name;
}

/* ---- reading ---- */

static dynb_status plain_read(dynb__reader *r, unsigned char *dst, size_t n, size_t *got, char *err,
                              size_t errlen) {
  size_t k = r->buf_len - r->buf_pos;
  if (k > n) k = n;
  if (k) memcpy(dst, r->buf + r->buf_pos, k);
  r->buf_pos += k;
  *got = k;
  while (*got < n && !r->raw_end) {
    size_t part;
    dynb_status st = source_read(r, dst + *got, n - *got, &part, err, errlen);
    if (st != DYNB_OK) return st;
    *got += part;
  }
  return DYNB_OK;
}

dynb_status dynb__reader_read(dynb__reader *r, void *dst, size_t n, size_t *got, char *err,
                              size_t errlen) {
  *got = 0;
  if (!r->buf)
    return dynb__io_fail(err, errlen, DYNB_STATUS_MISUSE, "%s: reader is not open", r->name);
  dynb_status st =
      r->z ? z_read(r, dst, n, got, err, errlen) : plain_read(r, dst, n, got, err, errlen);
  r->pos += *got;
  return st;
}

uint64_t dynb__reader_remaining(const dynb__reader *r) {
  if (r->z || r->raw_size == DYNB__SIZE_UNKNOWN || r->raw_size < r->pos) return DYNB__SIZE_UNKNOWN;
  return r->raw_size - r->pos;
}

static dynb_status cut_short(dynb__reader *r, uint64_t at, size_t have, size_t n, const char *what,
                             char *err, size_t errlen) {
  return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                       "%s: byte %" PRIu64 ": file ends after %zu of the %zu bytes of %s%s",
                       r->name, at, have, n, what, r->z_cut ? " (the gzip data is cut short)" : "");
}

dynb_status dynb__reader_exact(dynb__reader *r, void *dst, size_t n, const char *what, char *err,
                               size_t errlen) {
  uint64_t at = r->pos;
  size_t got;
  dynb_status st = dynb__reader_read(r, dst, n, &got, err, errlen);
  if ((st == DYNB_OK && got < n) || (st == DYNB_STATUS_BAD_FORMAT && r->z_cut))
    return cut_short(r, at, got, n, what, err, errlen);
  return st;
}

dynb_status dynb__reader_exact_grow(dynb__reader *r, unsigned char **buf, size_t have, size_t n,
                                    const char *what, char *err, size_t errlen) {
  if (n > SIZE_MAX - have - 1)
    return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW, "%s: %zu bytes of %s overflow",
                         r->name, n, what);
  uint64_t at = r->pos, rem = dynb__reader_remaining(r);
  /* A promised size that is too small fails before anything is reserved. */
  if (rem != DYNB__SIZE_UNKNOWN && rem < n)
    return cut_short(r, at, (size_t)rem, n, what, err, errlen);
  size_t cap = rem != DYNB__SIZE_UNKNOWN || n < GROW_START ? n : GROW_START, done = 0;
  for (;;) {
    unsigned char *grown = realloc(*buf, have + cap + 1); /* +1: never realloc(p, 0) */
    if (!grown)
      return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY,
                           "%s: out of host memory for %zu bytes of %s", r->name, n, what);
    *buf = grown;
    size_t got;
    dynb_status st = dynb__reader_read(r, grown + have + done, cap - done, &got, err, errlen);
    done += got;
    if ((st == DYNB_OK && done < cap) || (st == DYNB_STATUS_BAD_FORMAT && r->z_cut))
      return cut_short(r, at, done, n, what, err, errlen);
    if (st != DYNB_OK || done == n) return st;
    cap = cap > n / 2 ? n : cap * 2;
  }
}

dynb_status dynb__reader_end(dynb__reader *r, const char *what, char *err, size_t errlen) {
  uint64_t at = r->pos, rem = dynb__reader_remaining(r);
  unsigned char extra;
  size_t got;
  dynb_status st = dynb__reader_read(r, &extra, 1, &got, err, errlen);
  if (st != DYNB_OK || got == 0) return st;
  if (rem != DYNB__SIZE_UNKNOWN)
    return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte %" PRIu64 ": %" PRIu64 " unexpected bytes after %s", r->name, at,
                         rem, what);
  return dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                       "%s: byte %" PRIu64 ": unexpected bytes after %s", r->name, at, what);
}

dynb_status dynb__reader_all(dynb__reader *r, size_t max_bytes, unsigned char **out, size_t *size,
                             char *err, size_t errlen) {
  *out = NULL, *size = 0;
  uint64_t rem = dynb__reader_remaining(r);
  size_t cap = rem != DYNB__SIZE_UNKNOWN && rem <= max_bytes ? (size_t)rem + 1 : 1 << 16, n = 0;
  unsigned char *b = NULL;
  for (;;) {
    unsigned char *grown = realloc(b, cap);
    if (!grown) {
      free(b);
      return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                           r->name);
    }
    b = grown;
    size_t got;
    dynb_status st = dynb__reader_read(r, b + n, cap - n, &got, err, errlen);
    n += got;
    if (st == DYNB_OK && n > max_bytes)
      st = dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW, "%s: larger than %zu bytes",
                         r->name, max_bytes);
    if (st != DYNB_OK) {
      free(b);
      return st;
    }
    if (n < cap) break; /* the end */
    if (cap > SIZE_MAX / 2) {
      free(b);
      return dynb__io_fail(err, errlen, DYNB_STATUS_SIZE_OVERFLOW, "%s: too large", r->name);
    }
    cap *= 2;
  }
  *out = b, *size = n;
  return DYNB_OK;
}

dynb_status dynb__file_read(const char *path, size_t max_bytes, bool gunzip, unsigned char **out,
                            size_t *size, char *err, size_t errlen) {
  *out = NULL, *size = 0;
  dynb__reader r;
  dynb_status st = dynb__reader_open_file(&r, path, gunzip, err, errlen);
  if (st != DYNB_OK) return st;
  st = dynb__reader_all(&r, max_bytes, out, size, err, errlen);
  dynb__reader_close(&r);
  return st;
}
