/* safetensors: an 8-byte little-endian header length, a JSON header
 * {"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}, then
 * the data. Reading trusts nothing: every offset, shape and length is
 * checked against the bytes present, and the tensors must tile the data
 * section exactly (no gaps, no overlaps), as the reference reader demands. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

static const struct {
  const char *name;
  size_t size;
} dtypes[] = {{"F32", 4}, {"F64", 8}, {"I32", 4}, {"I64", 8}, {"U8", 1}};

size_t dynb__st_dtype_size(dynb_st_dtype t) { return dtypes[t].size; }
const char *dynb__st_dtype_name(dynb_st_dtype t) { return dtypes[t].name; }

static dynb_status bad(char *err, size_t errlen, const char *name, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(err, errlen, "%s: %s", name, msg);
  return DYNB_STATUS_BAD_FORMAT;
}

void dynb__st_release(dynb__st_file *f) {
  for (int i = 0; f->tensors && i < f->ntensors; i++) free(f->tensors[i].name);
  for (int i = 0; f->meta_keys && i < f->nmeta; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
  free(f->tensors), free(f->meta_keys), free(f->meta_values), free(f->bytes);
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

static dynb_status parse_tensor(const cJSON *e, const char *file, size_t data_size,
                                dynb__st_tensor *t, char *err, size_t errlen) {
  const char *n = e->string;
  if (!cJSON_IsObject(e)) return bad(err, errlen, file, "tensor '%s': not an object", n);
  const cJSON *dt = NULL, *shape = NULL, *offs = NULL;
  for (const cJSON *k = e->child; k; k = k->next) {
    if (strcmp(k->string, "dtype") == 0 && !dt) dt = k;
    else if (strcmp(k->string, "shape") == 0 && !shape) shape = k;
    else if (strcmp(k->string, "data_offsets") == 0 && !offs) offs = k;
    else return bad(err, errlen, file, "tensor '%s': unexpected or repeated key '%s'", n, k->string);
  }
  if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
    return bad(err, errlen, file, "tensor '%s': needs dtype (string), shape and data_offsets (arrays)", n);
  size_t k = 0;
  while (k < sizeof dtypes / sizeof *dtypes && strcmp(dtypes[k].name, dt->valuestring) != 0) k++;
  if (k == sizeof dtypes / sizeof *dtypes)
    return bad(err, errlen, file, "tensor '%s': unsupported dtype '%s'", n, dt->valuestring);
  t->dtype = (dynb_st_dtype)k;
  int nd = cJSON_GetArraySize(shape);
  if (nd > DYNB_ST_MAX_DIMS) return bad(err, errlen, file, "tensor '%s': rank %d", n, nd);
  t->ndim = nd;
  uint64_t numel = 1;
  int i = 0;
  for (const cJSON *d = shape->child; d; d = d->next, i++) {
    uint64_t v;
    if (!as_u64(d, &v)) return bad(err, errlen, file, "tensor '%s': shape[%d] is not a size", n, i);
    if (v && numel > UINT64_MAX / 16 / v)
      return bad(err, errlen, file, "tensor '%s': shape overflows", n);
    numel *= v;
    t->dims[i] = (int64_t)v;
  }
  uint64_t b, en;
  if (cJSON_GetArraySize(offs) != 2 || !as_u64(offs->child, &b) || !as_u64(offs->child->next, &en))
    return bad(err, errlen, file, "tensor '%s': data_offsets must be two sizes", n);
  if (b > en || en > data_size)
    return bad(err, errlen, file,
               "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 ") outside the data (%zu bytes)",
               n, b, en, data_size);
  if (en - b != numel * dtypes[k].size)
    return bad(err, errlen, file, "tensor '%s': %" PRIu64 " bytes for %" PRIu64 " elements of %s",
               n, en - b, numel, dtypes[k].name);
  t->begin = b, t->end = en;
  t->name = dup(n);
  return t->name ? DYNB_OK : DYNB_STATUS_OUT_OF_HOST_MEMORY;
}

static dynb_status parse_meta(const cJSON *m, const char *file, dynb__st_file *f, char *err,
                              size_t errlen) {
  if (!cJSON_IsObject(m)) return bad(err, errlen, file, "__metadata__ is not an object");
  int n = cJSON_GetArraySize(m);
  f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
  f->meta_values = calloc((size_t)n + 1, sizeof *f->meta_values);
  if (!f->meta_keys || !f->meta_values) return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  for (const cJSON *e = m->child; e; e = e->next) {
    if (!cJSON_IsString(e)) return bad(err, errlen, file, "__metadata__.%s is not a string", e->string);
    f->meta_keys[f->nmeta] = dup(e->string);
    f->meta_values[f->nmeta] = dup(e->valuestring);
    if (!f->meta_keys[f->nmeta] || !f->meta_values[f->nmeta]) return DYNB_STATUS_OUT_OF_HOST_MEMORY;
    f->nmeta++;
  }
  return DYNB_OK;
}

static int by_begin(const void *a, const void *b) {
  const dynb__st_tensor *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* The tensors must tile [0, data_size) exactly. */
static dynb_status check_tiling(dynb__st_file *f, const char *file, size_t data_size, char *err,
                                size_t errlen) {
  dynb__st_tensor *sorted = malloc(((size_t)f->ntensors + 1) * sizeof *sorted);
  if (!sorted) return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  memcpy(sorted, f->tensors, (size_t)f->ntensors * sizeof *sorted);
  qsort(sorted, (size_t)f->ntensors, sizeof *sorted, by_begin);
  uint64_t at = 0;
  dynb_status st = DYNB_OK;
  for (int i = 0; i < f->ntensors && st == DYNB_OK; i++) {
    if (sorted[i].begin != at)
      st = bad(err, errlen, file, "tensor '%s' starts at byte %" PRIu64 " of the data; expected %" PRIu64
               " (gap or overlap)", sorted[i].name, sorted[i].begin, at);
    at = sorted[i].end;
  }
  if (st == DYNB_OK && at != data_size)
    st = bad(err, errlen, file, "%" PRIu64 " bytes of data are not covered by any tensor",
             (uint64_t)data_size - at);
  free(sorted);
  return st;
}

static dynb_status parse_header(dynb__st_file *f, const char *name, char *err, size_t errlen) {
  if (f->size < 8) return bad(err, errlen, name, "%zu bytes: too short for a safetensors header", f->size);
  uint64_t hl = 0;
  for (int i = 0; i < 8; i++) hl |= (uint64_t)f->bytes[i] << (8 * i);
  if (hl > DYNB_ST_MAX_HEADER || hl > f->size - 8)
    return bad(err, errlen, name, "header length %" PRIu64 " exceeds the file (%zu bytes)", hl, f->size);
  f->data_start = 8 + (size_t)hl;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts((const char *)f->bytes + 8, (size_t)hl, &end, false);
  if (!root) return bad(err, errlen, name, "header is not valid JSON");
  dynb_status st = DYNB_OK;
  if (!cJSON_IsObject(root)) st = bad(err, errlen, name, "header is not a JSON object");
  /* After the object only padding spaces may follow. */
  for (const char *p = end; st == DYNB_OK && p && p < (const char *)f->bytes + 8 + hl; p++)
    if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r')
      st = bad(err, errlen, name, "garbage after the header object");
  int n = st == DYNB_OK ? cJSON_GetArraySize(root) : 0;
  f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
  if (!f->tensors) st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
  size_t data_size = f->size - f->data_start;
  for (const cJSON *e = st == DYNB_OK ? root->child : NULL; e && st == DYNB_OK; e = e->next) {
    for (const cJSON *o = e->next; o; o = o->next)
      if (strcmp(o->string, e->string) == 0) st = bad(err, errlen, name, "'%s' appears twice", e->string);
    if (st != DYNB_OK) break;
    if (strcmp(e->string, "__metadata__") == 0)
      st = parse_meta(e, name, f, err, errlen);
    else if ((st = parse_tensor(e, name, data_size, &f->tensors[f->ntensors], err, errlen)) == DYNB_OK)
      f->ntensors++;
  }
  if (st == DYNB_OK) st = check_tiling(f, name, data_size, err, errlen);
  if (st == DYNB_STATUS_OUT_OF_HOST_MEMORY) snprintf(err, errlen, "%s: out of host memory", name);
  cJSON_Delete(root);
  return st;
}

dynb_status dynb__st_parse(unsigned char *bytes, size_t size, const char *name,
                           dynb__st_file *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->bytes = bytes, out->size = size;
  dynb_status st = parse_header(out, name, err, errlen);
  if (st != DYNB_OK) dynb__st_release(out);
  return st;
}

dynb_status dynb__st_open(const char *path, dynb__st_file *out, char *err, size_t errlen) {
  unsigned char *bytes;
  size_t size;
  memset(out, 0, sizeof *out);
  /* Model files are parameters, not data sets: 4 GiB is far beyond them. */
  dynb_status st = dynb__file_read(path, (size_t)4 << 30, false, &bytes, &size, err, errlen);
  return st == DYNB_OK ? dynb__st_parse(bytes, size, path, out, err, errlen) : st;
}

const dynb__st_tensor *dynb__st_find(const dynb__st_file *f, const char *name) {
  for (int i = 0; i < f->ntensors; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

const char *dynb__st_meta(const dynb__st_file *f, const char *key) {
  for (int i = 0; i < f->nmeta; i++)
    if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
  return NULL;
}

const unsigned char *dynb__st_data(const dynb__st_file *f, const dynb__st_tensor *t) {
  return f->bytes + f->data_start + t->begin;
}

/* ---- writing ------------------------------------------------------------------------- */

dynb_status dynb__st_write(const char *path, const dynb__st_entry *entries, int n,
                           const char *const *meta_keys, const char *const *meta_values,
                           int nmeta, char *err, size_t errlen) {
  cJSON *root = cJSON_CreateObject();
  dynb_status st = root ? DYNB_OK : DYNB_STATUS_OUT_OF_HOST_MEMORY;
  if (st == DYNB_OK && nmeta > 0) {
    cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
    for (int i = 0; m && i < nmeta; i++) cJSON_AddStringToObject(m, meta_keys[i], meta_values[i]);
  }
  uint64_t at = 0;
  size_t *sizes = calloc((size_t)n + 2, sizeof *sizes);
  const void **parts = calloc((size_t)n + 2, sizeof *parts);
  if (!sizes || !parts) st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
  for (int i = 0; st == DYNB_OK && i < n; i++) {
    const dynb__st_entry *e = &entries[i];
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= (uint64_t)e->dims[d];
    uint64_t bytes = numel * dtypes[e->dtype].size;
    cJSON *o = cJSON_AddObjectToObject(root, e->name), *shape = cJSON_CreateArray();
    cJSON *offs = cJSON_CreateArray();
    if (!o || !shape || !offs) {
      cJSON_Delete(shape), cJSON_Delete(offs);
      st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
      break;
    }
    cJSON_AddStringToObject(o, "dtype", dtypes[e->dtype].name);
    for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->dims[d]));
    cJSON_AddItemToObject(o, "shape", shape);
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)at));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(at + bytes)));
    cJSON_AddItemToObject(o, "data_offsets", offs);
    parts[i + 2] = e->data;
    sizes[i + 2] = (size_t)bytes;
    at += bytes;
  }
  char *json = st == DYNB_OK ? cJSON_PrintUnformatted(root) : NULL;
  if (st == DYNB_OK && !json) st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
  char *header = NULL;
  if (st == DYNB_OK) {
    /* Padded with spaces to a multiple of 8, as the reference writer does,
     * so the data section is aligned. */
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    header = malloc(padded + 8);
    if (!header) {
      st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
    } else {
      for (int i = 0; i < 8; i++) header[i] = (char)(((uint64_t)padded >> (8 * i)) & 0xff);
      memcpy(header + 8, json, len);
      memset(header + 8 + len, ' ', padded - len);
      parts[0] = header, sizes[0] = padded + 8;
      parts[1] = "", sizes[1] = 0;
      st = dynb__file_write_atomic(path, parts, sizes, n + 2, err, errlen);
    }
  }
  if (st == DYNB_STATUS_OUT_OF_HOST_MEMORY) snprintf(err, errlen, "%s: out of host memory", path);
  free(header), free(json), free(sizes), free(parts);
  cJSON_Delete(root);
  return st;
}
