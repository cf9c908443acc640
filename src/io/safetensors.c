/* safetensors reading: an 8-byte little-endian header length N, N bytes of
 * JSON header {"name": {"dtype", "shape", "data_offsets"}, "__metadata__":
 * {...}}, then the data section, offsets relative to its start.
 *
 * Reading trusts nothing. Judgement calls where the format or its reference
 * implementation is loose, all on the strict side because model and batch
 * files come from anywhere:
 * - the header must start with '{' (the format says so; the reference
 *   reader does not check yet) and may end with JSON whitespace (the
 *   reference writer pads with spaces);
 * - raw control bytes other than tab, LF and CR are rejected anywhere in the
 *   header (JSON never allows them raw inside strings, and cJSON would cut a
 *   name at a NUL);
 * - duplicate tensor names and duplicate metadata keys are errors (JSON
 *   parsers keep one silently, which lets a file show two tools two
 *   different tensors);
 * - a tensor entry with a key other than dtype, shape and data_offsets is an
 *   error (the reference ignores extra keys);
 * - "__metadata__": null reads as no metadata, as the reference does;
 * - the tensors must tile the data section exactly, from 0 to its end, in
 *   any header order: a gap, an overlap or bytes after the last tensor are
 *   errors, as in the reference reader; zero-size tensors are fine;
 * - numbers are read by cJSON as doubles: an integer must be exact in a
 *   double (at most 2^53), so "4.0" and "4e0" pass as 4 where the reference
 *   would refuse them. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

static const struct {
  const char *name;
  size_t size, swap;
} dtypes[DYNB_ST_DTYPE_COUNT] = {
    [DYNB_ST_F32] = {"F32", 4, 4},         [DYNB_ST_F64] = {"F64", 8, 8},
    [DYNB_ST_I32] = {"I32", 4, 4},         [DYNB_ST_I64] = {"I64", 8, 8},
    [DYNB_ST_U8] = {"U8", 1, 1},           [DYNB_ST_BOOL] = {"BOOL", 1, 1},
    [DYNB_ST_I8] = {"I8", 1, 1},           [DYNB_ST_I16] = {"I16", 2, 2},
    [DYNB_ST_U16] = {"U16", 2, 2},         [DYNB_ST_U32] = {"U32", 4, 4},
    [DYNB_ST_U64] = {"U64", 8, 8},         [DYNB_ST_F16] = {"F16", 2, 2},
    [DYNB_ST_BF16] = {"BF16", 2, 2},       [DYNB_ST_F8_E5M2] = {"F8_E5M2", 1, 1},
    [DYNB_ST_F8_E4M3] = {"F8_E4M3", 1, 1}, [DYNB_ST_F8_E8M0] = {"F8_E8M0", 1, 1},
    [DYNB_ST_C64] = {"C64", 8, 4},
};

static bool known(dynb_st_dtype t) { return (unsigned)t < DYNB_ST_DTYPE_COUNT; }
size_t dynb__st_dtype_size(dynb_st_dtype t) { return known(t) ? dtypes[t].size : 0; }
const char *dynb__st_dtype_name(dynb_st_dtype t) { return known(t) ? dtypes[t].name : "?"; }
size_t dynb__st_dtype_swap_unit(dynb_st_dtype t) { return known(t) ? dtypes[t].swap : 0; }

/* A name fit for a message: at most ~60 bytes, cut on a character
 * boundary, control characters shown as '?'. */
static const char *shown(char out[72], const char *s) {
  size_t n = 0;
  while (s[n] && n < 60) n++;
  while (s[n] && n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  for (size_t i = 0; i < n; i++) out[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
  memcpy(out + n, s[n] ? "..." : "", s[n] ? 4 : 1);
  return out;
}

void dynb__st_release(dynb__st_file *f) {
  if (!f) return;
  for (int i = 0; f->tensors && i < f->ntensors; i++) free(f->tensors[i].name);
  for (int i = 0; f->meta_keys && i < f->nmeta; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
  free(f->tensors), free(f->meta_keys), free(f->meta_values), free(f->by_name), free(f->bytes);
  memset(f, 0, sizeof *f);
}

uint64_t dynb__st_numel(const dynb__st_tensor *t) {
  uint64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->dims[i];
  return n;
}

static char *dup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* A non-negative integer that a double holds exactly. */
static bool as_u64(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return false;
  double d = v->valuedouble;
  if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return false;
  *out = (uint64_t)d;
  return true;
}

/* ---- one tensor entry ---- */

typedef struct parse_ctx {
  const char *file;
  uint64_t data_size; /* bytes after the header, or DYNB__SIZE_UNKNOWN */
  char *err;
  size_t errlen;
} parse_ctx;

static dynb_status entry_keys(const cJSON *e, const parse_ctx *c, const char *n, const cJSON **dt,
                              const cJSON **shape, const cJSON **offs) {
  static const char *const names[3] = {"dtype", "shape", "data_offsets"};
  const cJSON **slots[3] = {dt, shape, offs};
  for (const cJSON *k = e->child; k; k = k->next) {
    int i = 0;
    while (i < 3 && strcmp(k->string, names[i]) != 0) i++;
    char ks[72];
    if (i == 3)
      return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: tensor '%s': unexpected key '%s'", c->file, n,
                           shown(ks, k->string));
    if (*slots[i])
      return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: tensor '%s': key '%s' appears twice", c->file, n, names[i]);
    *slots[i] = k;
  }
  if (!cJSON_IsString(*dt) || !cJSON_IsArray(*shape) || !cJSON_IsArray(*offs))
    return dynb__io_fail(
        c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
        "%s: tensor '%s': needs \"dtype\" (a string), \"shape\" and \"data_offsets\" (arrays)",
        c->file, n);
  return DYNB_OK;
}

static dynb_status entry_shape(const cJSON *shape, const parse_ctx *c, const char *n,
                               dynb__st_tensor *t, uint64_t *numel) {
  int nd = cJSON_GetArraySize(shape);
  if (nd > DYNB_ST_MAX_DIMS)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': rank %d exceeds %d", c->file, n, nd, DYNB_ST_MAX_DIMS);
  t->ndim = nd;
  bool zero = false, overflow = false;
  uint64_t p = 1;
  int i = 0;
  for (const cJSON *d = shape->child; d; d = d->next, i++) {
    uint64_t v;
    if (!as_u64(d, &v))
      return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: tensor '%s': shape[%d] is not a non-negative integer", c->file, n,
                           i);
    t->dims[i] = (int64_t)v;
    if (v == 0)
      zero = true;
    else if (p > UINT64_MAX / v)
      overflow = true;
    else
      p *= v;
  }
  if (zero)
    p = 0;
  else if (overflow)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': shape has more than 2^64 elements", c->file, n);
  if (p > DYNB_ST_MAX_DATA / dtypes[t->dtype].size)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_SIZE_OVERFLOW,
                         "%s: tensor '%s': %" PRIu64 " elements of %s exceed the cap of %" PRIu64
                         " bytes",
                         c->file, n, p, dtypes[t->dtype].name, (uint64_t)DYNB_ST_MAX_DATA);
  *numel = p;
  return DYNB_OK;
}

static dynb_status entry_offsets(const cJSON *offs, const parse_ctx *c, const char *n,
                                 dynb__st_tensor *t, uint64_t numel) {
  uint64_t b, e;
  if (cJSON_GetArraySize(offs) != 2 || !as_u64(offs->child, &b) || !as_u64(offs->child->next, &e))
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': data_offsets must be two non-negative integers", c->file,
                         n);
  if (b > e)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                         ") end before they begin",
                         c->file, n, b, e);
  if (c->data_size != DYNB__SIZE_UNKNOWN && e > c->data_size)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                         ") past the end of the data (%" PRIu64 " bytes)",
                         c->file, n, b, e, c->data_size);
  uint64_t need = numel * dtypes[t->dtype].size;
  if (e - b != need)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 ") hold %" PRIu64
                         " bytes; %" PRIu64 " elements of %s need %" PRIu64,
                         c->file, n, b, e, e - b, numel, dtypes[t->dtype].name, need);
  t->begin = b, t->end = e;
  return DYNB_OK;
}

static dynb_status parse_tensor(const cJSON *e, const parse_ctx *c, dynb__st_tensor *t) {
  char n[72];
  shown(n, e->string);
  if (!cJSON_IsObject(e))
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': not an object", c->file, n);
  const cJSON *dt = NULL, *shape = NULL, *offs = NULL;
  dynb_status st = entry_keys(e, c, n, &dt, &shape, &offs);
  if (st != DYNB_OK) return st;
  int k = 0;
  while (k < DYNB_ST_DTYPE_COUNT && strcmp(dtypes[k].name, dt->valuestring) != 0) k++;
  char ds[72];
  if (k == DYNB_ST_DTYPE_COUNT)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s': unsupported dtype '%s'", c->file, n,
                         shown(ds, dt->valuestring));
  t->dtype = (dynb_st_dtype)k;
  uint64_t numel = 0;
  st = entry_shape(shape, c, n, t, &numel);
  if (st == DYNB_OK) st = entry_offsets(offs, c, n, t, numel);
  return st;
}

/* ---- metadata ---- */

static dynb_status oom(const parse_ctx *c) {
  return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                       c->file);
}

static dynb_status parse_meta(const cJSON *m, const parse_ctx *c, dynb__st_file *f) {
  if (cJSON_IsNull(m)) return DYNB_OK;
  if (!cJSON_IsObject(m))
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: __metadata__ is not an object", c->file);
  int n = cJSON_GetArraySize(m);
  f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
  f->meta_values = calloc((size_t)n + 1, sizeof *f->meta_values);
  if (!f->meta_keys || !f->meta_values) return oom(c);
  char ks[72];
  for (const cJSON *e = m->child; e; e = e->next) {
    if (!cJSON_IsString(e))
      return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: __metadata__ '%s' is not a string", c->file, shown(ks, e->string));
    f->meta_keys[f->nmeta] = dup(e->string);
    f->meta_values[f->nmeta] = dup(e->valuestring);
    if (!f->meta_keys[f->nmeta] || !f->meta_values[f->nmeta]) {
      free(f->meta_keys[f->nmeta]), free(f->meta_values[f->nmeta]);
      f->meta_keys[f->nmeta] = f->meta_values[f->nmeta] = NULL;
      return oom(c);
    }
    f->nmeta++;
  }
  const char *twice;
  if (dynb__first_duplicate((const char *const *)f->meta_keys, f->nmeta, &twice) != DYNB_OK)
    return oom(c);
  if (twice)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: __metadata__ key '%s' appears twice", c->file, shown(ks, twice));
  return DYNB_OK;
}

/* ---- the whole header ---- */

typedef struct span {
  uint64_t begin, end;
  int index;
} span;

static int by_begin(const void *a, const void *b) {
  const span *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

/* The tensors must tile [0, total) exactly; writes total. */
static dynb_status check_tiling(const dynb__st_file *f, const parse_ctx *c, uint64_t *total) {
  span *s = malloc(((size_t)f->ntensors + 1) * sizeof *s);
  if (!s) return oom(c);
  for (int i = 0; i < f->ntensors; i++) s[i] = (span){f->tensors[i].begin, f->tensors[i].end, i};
  qsort(s, (size_t)f->ntensors, sizeof *s, by_begin);
  uint64_t at = 0;
  dynb_status st = DYNB_OK;
  for (int i = 0; i < f->ntensors && st == DYNB_OK; i++) {
    char n[72];
    if (s[i].begin != at)
      st = dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: tensor '%s' starts at byte %" PRIu64 " of the data; expected %" PRIu64
                         " (%s)",
                         c->file, shown(n, f->tensors[s[i].index].name), s[i].begin, at,
                         s[i].begin > at ? "a gap" : "an overlap");
    at = s[i].end;
  }
  free(s);
  *total = at;
  if (st == DYNB_OK && c->data_size != DYNB__SIZE_UNKNOWN && at != c->data_size)
    st = dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                       "%s: byte %" PRIu64 ": %" PRIu64 " bytes of data after the last tensor",
                       c->file, (uint64_t)f->data_start + at, c->data_size - at);
  return st;
}

typedef struct named {
  const char *name;
  int index;
} named;

static int by_named(const void *a, const void *b) {
  return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* Builds the name index and rejects duplicate names. */
static dynb_status index_names(dynb__st_file *f, const parse_ctx *c) {
  named *s = malloc(((size_t)f->ntensors + 1) * sizeof *s);
  f->by_name = malloc(((size_t)f->ntensors + 1) * sizeof *f->by_name);
  if (!s || !f->by_name) {
    free(s);
    return oom(c);
  }
  for (int i = 0; i < f->ntensors; i++) s[i] = (named){f->tensors[i].name, i};
  qsort(s, (size_t)f->ntensors, sizeof *s, by_named);
  dynb_status st = DYNB_OK;
  for (int i = 0; i < f->ntensors; i++) {
    f->by_name[i] = s[i].index;
    char n[72];
    if (i > 0 && st == DYNB_OK && strcmp(s[i - 1].name, s[i].name) == 0)
      st = dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT, "%s: tensor '%s' appears twice",
                         c->file, shown(n, s[i].name));
  }
  free(s);
  return st;
}

/* Checks the raw text before JSON sees it: '{' first, strict UTF-8, no raw
 * control bytes. */
static dynb_status check_text(const char *text, size_t hl, const parse_ctx *c) {
  if (hl == 0 || text[0] != '{')
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte 8: the header does not start with '{'", c->file);
  size_t ok = dynb__utf8_prefix(text, hl);
  if (ok < hl)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte %zu: the header is not valid UTF-8", c->file, 8 + ok);
  for (size_t i = 0; i < hl; i++) {
    unsigned char b = (unsigned char)text[i];
    if (b < 0x20 && b != '\t' && b != '\n' && b != '\r')
      return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: byte %zu: control byte 0x%02x in the header", c->file, 8 + i, b);
  }
  return DYNB_OK;
}

static dynb_status parse_json(const char *text, size_t hl, const parse_ctx *c, cJSON **root) {
  const char *end = NULL;
  *root = cJSON_ParseWithLengthOpts(text, hl, &end, false);
  if (!*root) {
    size_t at = end && end >= text && end <= text + hl ? (size_t)(end - text) : 0;
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte %zu: the header is not valid JSON", c->file, 8 + at);
  }
  if (!cJSON_IsObject(*root))
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: the header is not a JSON object", c->file);
  /* After the object only padding may follow. */
  for (const char *p = end; p && p < text + hl; p++)
    if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r')
      return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                           "%s: byte %zu: unexpected text after the header object", c->file,
                           8 + (size_t)(p - text));
  return DYNB_OK;
}

static dynb_status parse_entries(const cJSON *root, const parse_ctx *c, dynb__st_file *f) {
  int n = cJSON_GetArraySize(root);
  if (n > DYNB_ST_MAX_TENSORS)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_SIZE_OVERFLOW,
                         "%s: %d header entries exceed the cap of %d", c->file, n,
                         DYNB_ST_MAX_TENSORS);
  f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
  if (!f->tensors) return oom(c);
  bool meta = false;
  for (const cJSON *e = root->child; e; e = e->next) {
    dynb_status st;
    if (strcmp(e->string, "__metadata__") == 0) {
      if (meta)
        return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                             "%s: __metadata__ appears twice", c->file);
      meta = true;
      st = parse_meta(e, c, f);
    } else {
      dynb__st_tensor *t = &f->tensors[f->ntensors];
      st = parse_tensor(e, c, t);
      if (st == DYNB_OK && !(t->name = dup(e->string))) st = oom(c);
      if (st == DYNB_OK) f->ntensors++;
    }
    if (st != DYNB_OK) return st;
  }
  return DYNB_OK;
}

/* Parses the hl header bytes at `text`; f->data_start must be set. */
static dynb_status parse_header(dynb__st_file *f, const char *text, size_t hl, const parse_ctx *c,
                                uint64_t *total) {
  dynb_status st = check_text(text, hl, c);
  if (st != DYNB_OK) return st;
  cJSON *root = NULL;
  st = parse_json(text, hl, c, &root);
  if (st == DYNB_OK) st = parse_entries(root, c, f);
  cJSON_Delete(root);
  if (st == DYNB_OK) st = index_names(f, c);
  if (st == DYNB_OK) st = check_tiling(f, c, total);
  if (st == DYNB_OK && *total > DYNB_ST_MAX_DATA)
    st = dynb__io_fail(c->err, c->errlen, DYNB_STATUS_SIZE_OVERFLOW,
                       "%s: %" PRIu64 " bytes of tensor data exceed the cap of %" PRIu64, c->file,
                       *total, (uint64_t)DYNB_ST_MAX_DATA);
  return st;
}

/* The length prefix: capped and within the bytes present (when known). */
static dynb_status check_header_length(uint64_t hl, uint64_t after, const parse_ctx *c) {
  if (hl > DYNB_ST_MAX_HEADER)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte 0: header length %" PRIu64 " exceeds the cap of %u bytes",
                         c->file, hl, DYNB_ST_MAX_HEADER);
  if (after != DYNB__SIZE_UNKNOWN && hl > after)
    return dynb__io_fail(c->err, c->errlen, DYNB_STATUS_BAD_FORMAT,
                         "%s: byte 0: header length %" PRIu64
                         " runs past the end of the file (%" PRIu64 " bytes after the length)",
                         c->file, hl, after);
  return DYNB_OK;
}

dynb_status dynb__st_parse(unsigned char *bytes, size_t size, const char *name, dynb__st_file *out,
                           char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->bytes = bytes, out->size = size;
  parse_ctx c = {name ? name : "(safetensors)", DYNB__SIZE_UNKNOWN, err, errlen};
  dynb_status st = DYNB_OK;
  if (!bytes || size < 8)
    st =
        dynb__io_fail(err, errlen, DYNB_STATUS_BAD_FORMAT,
                      "%s: %zu bytes: too short for a safetensors file (at least 8)", c.file, size);
  uint64_t hl = st == DYNB_OK ? dynb__load_le64(bytes) : 0, total;
  if (st == DYNB_OK) st = check_header_length(hl, size - 8, &c);
  if (st == DYNB_OK) {
    out->data_start = 8 + (size_t)hl;
    c.data_size = size - out->data_start;
    st = parse_header(out, (const char *)bytes + 8, (size_t)hl, &c, &total);
  }
  if (st != DYNB_OK) dynb__st_release(out);
  return st;
}

dynb_status dynb__st_read(dynb__reader *r, dynb__st_file *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  parse_ctx c = {r->name, DYNB__SIZE_UNKNOWN, err, errlen};
  unsigned char len[8];
  dynb_status st = dynb__reader_exact(r, len, 8, "the header length", err, errlen);
  if (st != DYNB_OK) return st;
  uint64_t hl = dynb__load_le64(len), total = 0;
  st = check_header_length(hl, dynb__reader_remaining(r), &c);
  if (st != DYNB_OK) return st;
  out->bytes = malloc(8 + (size_t)hl);
  if (!out->bytes) return oom(&c);
  memcpy(out->bytes, len, 8);
  out->data_start = 8 + (size_t)hl;
  st = dynb__reader_exact(r, out->bytes + 8, (size_t)hl, "the header", err, errlen);
  if (st == DYNB_OK) {
    c.data_size = dynb__reader_remaining(r);
    st = parse_header(out, (const char *)out->bytes + 8, (size_t)hl, &c, &total);
  }
  if (st == DYNB_OK)
    st = dynb__reader_exact_grow(r, &out->bytes, out->data_start, (size_t)total, "tensor data", err,
                                 errlen);
  if (st == DYNB_OK) st = dynb__reader_end(r, "the last tensor", err, errlen);
  if (st != DYNB_OK) {
    dynb__st_release(out);
    return st;
  }
  out->size = out->data_start + (size_t)total;
  return DYNB_OK;
}

dynb_status dynb__st_open_mem(const void *bytes, size_t size, const char *name, dynb__st_file *out,
                              char *err, size_t errlen) {
  dynb__reader r;
  memset(out, 0, sizeof *out);
  dynb_status st = dynb__reader_open_mem(&r, name, bytes, size, false, err, errlen);
  if (st != DYNB_OK) return st;
  st = dynb__st_read(&r, out, err, errlen);
  dynb__reader_close(&r);
  return st;
}

dynb_status dynb__st_open(const char *path, dynb__st_file *out, char *err, size_t errlen) {
  dynb__reader r;
  memset(out, 0, sizeof *out);
  dynb_status st = dynb__reader_open_file(&r, path, false, err, errlen);
  if (st != DYNB_OK) return st;
  st = dynb__st_read(&r, out, err, errlen);
  dynb__reader_close(&r);
  return st;
}

/* ---- lookups ---- */

const dynb__st_tensor *dynb__st_find(const dynb__st_file *f, const char *name) {
  if (!f || !name || !f->by_name) return NULL;
  int lo = 0, hi = f->ntensors;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    int cmp = strcmp(f->tensors[f->by_name[mid]].name, name);
    if (cmp == 0) return &f->tensors[f->by_name[mid]];
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

const char *dynb__st_meta(const dynb__st_file *f, const char *key) {
  for (int i = 0; f && key && i < f->nmeta; i++)
    if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
  return NULL;
}

const unsigned char *dynb__st_data(const dynb__st_file *f, const dynb__st_tensor *t) {
  return f->bytes + f->data_start + t->begin;
}

dynb_status dynb__st_copy(const dynb__st_file *f, const dynb__st_tensor *t, void *dst,
                          size_t dst_bytes, char *err, size_t errlen) {
  if (!f || !t || t < f->tensors || t >= f->tensors + f->ntensors || (!dst && dst_bytes > 0))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "safetensors copy: bad argument");
  if (dst_bytes != t->end - t->begin)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT,
                         "safetensors copy: tensor '%s' has %" PRIu64 " bytes, the buffer %zu",
                         t->name, t->end - t->begin, dst_bytes);
  size_t unit = dtypes[t->dtype].swap;
  dynb__le_copy(dst, dynb__st_data(f, t), dst_bytes / unit, unit);
  return DYNB_OK;
}
