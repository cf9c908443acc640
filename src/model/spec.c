/* The JSON network spec of SPEC §3, read with cJSON. Every key is checked:
 * unknown or repeated keys, wrong types and bad values are errors whose
 * message names the file and the key path. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

/* Specs are small; anything larger is a mistake (or an attack). */
#define SPEC_MAX_BYTES (16u << 20)

typedef struct parser {
  const char *source;
  char *err;
  size_t errlen;
} parser;

static dynb_status fail(parser *p, const char *path, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(p->err, p->errlen, "%s: %s%s%s", p->source, path, path[0] ? ": " : "", msg);
  return DYNB_STATUS_SPEC_ERROR;
}

static void join(char *out, size_t cap, const char *path, const char *key) {
  snprintf(out, cap, "%s%s%s", path, path[0] ? "." : "", key);
}

/* Rejects keys outside `allowed` (NULL-terminated) and repeated keys. */
static dynb_status check_keys(parser *p, const cJSON *obj, const char *path,
                              const char *const *allowed) {
  if (!cJSON_IsObject(obj)) return fail(p, path, "must be an object");
  for (const cJSON *it = obj->child; it; it = it->next) {
    bool known = false;
    for (const char *const *a = allowed; *a && !known; a++) known = strcmp(*a, it->string) == 0;
    char at[256];
    join(at, sizeof at, path, it->string);
    if (!known) return fail(p, at, "unknown key");
    for (const cJSON *o = it->next; o; o = o->next)
      if (strcmp(o->string, it->string) == 0) return fail(p, at, "key appears twice");
  }
  return DYNB_OK;
}

static const cJSON *member(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* An integer in [lo, hi]; absent → *out = def unless required. */
static dynb_status get_int(parser *p, const cJSON *obj, const char *path, const char *key, int lo,
                           int hi, bool required, int def, int *out) {
  char at[256];
  join(at, sizeof at, path, key);
  const cJSON *v = member(obj, key);
  if (!v) {
    if (required) return fail(p, at, "missing (required)");
    *out = def;
    return DYNB_OK;
  }
  if (!cJSON_IsNumber(v)) return fail(p, at, "must be an integer");
  double d = v->valuedouble;
  if (!(d == floor(d)) || d < lo || d > hi)
    return fail(p, at, "must be an integer in %d..%d, got %g", lo, hi, d);
  *out = (int)d;
  return DYNB_OK;
}

typedef bool (*name_parse_fn)(const char *name, int *out);

static bool parse_norm(const char *n, int *o) {
  dynb_norm_kind k;
  return dynb__norm_parse(n, &k) ? (*o = (int)k, true) : false;
}
static bool parse_act(const char *n, int *o) {
  dynb_act k;
  return dynb__act_parse(n, &k) ? (*o = (int)k, true) : false;
}
static bool parse_layer(const char *n, int *o) {
  dynb_layer_kind k;
  return dynb__layer_parse(n, &k) ? (*o = (int)k, true) : false;
}

static dynb_status get_name(parser *p, const cJSON *obj, const char *path, const char *key,
                            name_parse_fn parse, const char *choices, bool required, int def,
                            int *out) {
  char at[256];
  join(at, sizeof at, path, key);
  const cJSON *v = member(obj, key);
  if (!v) {
    if (required) return fail(p, at, "missing (required; one of %s)", choices);
    *out = def;
    return DYNB_OK;
  }
  if (!cJSON_IsString(v)) return fail(p, at, "must be a string, one of %s", choices);
  if (!parse(v->valuestring, out))
    return fail(p, at, "unknown value '%s' (one of %s)", v->valuestring, choices);
  return DYNB_OK;
}

/* An array of finite numbers of length lo..hi. */
static dynb_status get_numbers(parser *p, const cJSON *v, const char *at, int lo, int hi,
                               double *out, int *n) {
  if (!cJSON_IsArray(v)) return fail(p, at, "must be an array of numbers");
  int len = cJSON_GetArraySize(v);
  if (len < lo || len > hi) return fail(p, at, "must have %d..%d entries, has %d", lo, hi, len);
  int i = 0;
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
      return fail(p, at, "entry [%d] must be a finite number", i);
    out[i] = e->valuedouble;
  }
  *n = len;
  return DYNB_OK;
}

static dynb_status get_grid(parser *p, const cJSON *v, const char *at, int min, double *out,
                            int *n) {
  DYNB_TRY(get_numbers(p, v, at, min, DYNB_MAX_TIME_POINTS, out, n));
  for (int i = 1; i < *n; i++)
    if (!(out[i] > out[i - 1]))
      return fail(p, at, "must be strictly increasing: [%d] = %g after %g", i, out[i], out[i - 1]);
  return DYNB_OK;
}

/* ---- scheme -------------------------------------------------------------------- */

static dynb_status get_scheme(parser *p, const cJSON *blk, const char *path, dynb__tableau *t) {
  char at[256];
  join(at, sizeof at, path, "scheme");
  const cJSON *v = member(blk, "scheme");
  if (!v) return fail(p, at, "missing (required: a name, one of " DYNB_TABLEAU_NAMES ", or {c, A, b})");
  if (cJSON_IsString(v)) {
    if (!dynb__tableau_builtin(v->valuestring, t))
      return fail(p, at, "unknown scheme '%s' (one of " DYNB_TABLEAU_NAMES ")", v->valuestring);
    return DYNB_OK;
  }
  static const char *const keys[] = {"c", "A", "b", NULL};
  DYNB_TRY(check_keys(p, v, at, keys));
  double c[DYNB_MAX_STAGES], b[DYNB_MAX_STAGES], a[DYNB_MAX_STAGES * DYNB_MAX_STAGES];
  int nc = 0, nb = 0, rows = 0, cols = -1;
  char sub[300];
  for (int k = 0; k < 3; k++)
    if (!member(v, keys[k])) {
      join(sub, sizeof sub, at, keys[k]);
      return fail(p, sub, "missing (required)");
    }
  join(sub, sizeof sub, at, "c");
  DYNB_TRY(get_numbers(p, member(v, "c"), sub, 1, DYNB_MAX_STAGES, c, &nc));
  join(sub, sizeof sub, at, "b");
  DYNB_TRY(get_numbers(p, member(v, "b"), sub, 1, DYNB_MAX_STAGES, b, &nb));
  const cJSON *A = member(v, "A");
  join(sub, sizeof sub, at, "A");
  if (!cJSON_IsArray(A) || cJSON_GetArraySize(A) > DYNB_MAX_STAGES)
    return fail(p, sub, "must be an array of at most %d rows", DYNB_MAX_STAGES);
  memset(a, 0, sizeof a);
  for (const cJSON *row = A->child; row; row = row->next, rows++) {
    char rat[320];
    snprintf(rat, sizeof rat, "%s[%d]", sub, rows);
    int n = 0;
    DYNB_TRY(get_numbers(p, row, rat, 0, DYNB_MAX_STAGES, a + rows * nc, &n));
    if (cols >= 0 && n != cols) return fail(p, rat, "rows of A differ in length");
    if (n > nc) return fail(p, rat, "has %d entries, more than the %d stages of c", n, nc);
    cols = n;
  }
  char why[256];
  if (dynb__tableau_custom(c, nc, a, rows, cols < 0 ? 0 : cols, b, nb, t, why, sizeof why) != DYNB_OK)
    return fail(p, at, "%s", why);
  return DYNB_OK;
}

/* ---- sections -------------------------------------------------------------------- */

static const char *const norm_names = "none, tv, batch";
static const char *const act_names = "identity, relu, tanh, leaky_relu";

static dynb_status get_block(parser *p, const cJSON *blk, int index, dynb__block_spec *b) {
  char path[64];
  snprintf(path, sizeof path, "blocks[%d]", index);
  static const char *const keys[] = {"width", "layer", "norm", "scheme", "t_states",
                                     "t_controls", "act", "kernel", NULL};
  DYNB_TRY(check_keys(p, blk, path, keys));
  int kind = 0, norm = 0, act = 0, kernel = 3;
  DYNB_TRY(get_int(p, blk, path, "width", 1, DYNB_MAX_WIDTH, true, 0, &b->width));
  DYNB_TRY(get_name(p, blk, path, "layer", parse_layer, "doublesym, double, preact", true, 0, &kind));
  DYNB_TRY(get_name(p, blk, path, "norm", parse_norm, norm_names, true, 0, &norm));
  DYNB_TRY(get_name(p, blk, path, "act", parse_act, act_names, false, DYNB_ACT_RELU, &act));
  DYNB_TRY(get_int(p, blk, path, "kernel", 1, 15, false, 3, &kernel));
  char at[128];
  join(at, sizeof at, path, "kernel");
  if (kernel % 2 == 0) return fail(p, at, "must be odd (padding k/2 keeps the size), got %d", kernel);
  DYNB_TRY(get_scheme(p, blk, path, &b->tableau));
  join(at, sizeof at, path, "t_states");
  if (!member(blk, "t_states")) return fail(p, at, "missing (required)");
  DYNB_TRY(get_grid(p, member(blk, "t_states"), at, 2, b->t_states, &b->nstates));
  join(at, sizeof at, path, "t_controls");
  if (member(blk, "t_controls")) {
    DYNB_TRY(get_grid(p, member(blk, "t_controls"), at, 1, b->t_controls, &b->ncontrols));
  } else {
    memcpy(b->t_controls, b->t_states, sizeof b->t_states);
    b->ncontrols = b->nstates;
  }
  b->layer = (dynb__layer){(dynb_layer_kind)kind, (dynb_norm_kind)norm, (dynb_act)act, b->width,
                           kernel};
  return DYNB_OK;
}

static dynb_status get_clip(parser *p, const cJSON *root, dynb__net_spec *s) {
  const cJSON *v = member(root, "clip");
  if (!v) return DYNB_OK;
  s->clip = true;
  if (cJSON_IsNumber(v)) {
    if (!(v->valuedouble > 0) || !isfinite(v->valuedouble))
      return fail(p, "clip", "must be a positive number c (box [-c, c]) or {min, max}");
    s->clip_min = -v->valuedouble, s->clip_max = v->valuedouble;
    return DYNB_OK;
  }
  static const char *const keys[] = {"min", "max", NULL};
  DYNB_TRY(check_keys(p, v, "clip", keys));
  const cJSON *lo = member(v, "min"), *hi = member(v, "max");
  if (!cJSON_IsNumber(lo) || !cJSON_IsNumber(hi) || !isfinite(lo->valuedouble) ||
      !isfinite(hi->valuedouble) || !(lo->valuedouble < hi->valuedouble))
    return fail(p, "clip", "needs finite numbers min < max");
  s->clip_min = lo->valuedouble, s->clip_max = hi->valuedouble;
  return DYNB_OK;
}

/* The pooling chain must leave at least 1×1 before the last block. */
static dynb_status check_buildable(parser *p, const dynb__net_spec *s) {
  int h = s->in_height, w = s->in_width;
  for (int b = 0; b + 1 < s->nblocks; b++) {
    if (h < 2 || w < 2) {
      char at[64];
      snprintf(at, sizeof at, "blocks[%d]", b + 1);
      return fail(p, at, "the input is %dx%d after %d pooling(s): too small to pool again", h, w,
                  b);
    }
    h /= 2, w /= 2;
  }
  return DYNB_OK;
}

static dynb_status parse_root(parser *p, const cJSON *root, dynb__net_spec *s) {
  static const char *const keys[] = {"input", "classes", "open", "blocks", "connect",
                                     "head_width", "time_reg", "clip", NULL};
  DYNB_TRY(check_keys(p, root, "", keys));
  static const char *const in_keys[] = {"channels", "height", "width", NULL};
  const cJSON *in = member(root, "input");
  if (!in) return fail(p, "input", "missing (required)");
  DYNB_TRY(check_keys(p, in, "input", in_keys));
  DYNB_TRY(get_int(p, in, "input", "channels", 1, DYNB_MAX_WIDTH, true, 0, &s->in_channels));
  DYNB_TRY(get_int(p, in, "input", "height", 1, DYNB_MAX_INPUT_SIDE, true, 0, &s->in_height));
  DYNB_TRY(get_int(p, in, "input", "width", 1, DYNB_MAX_INPUT_SIDE, true, 0, &s->in_width));
  /* One class makes the loss identically zero: nothing to learn. */
  DYNB_TRY(get_int(p, root, "", "classes", 2, DYNB_MAX_CLASSES, true, 0, &s->classes));
  const cJSON *blocks = member(root, "blocks");
  if (!cJSON_IsArray(blocks) || cJSON_GetArraySize(blocks) < 1 ||
      cJSON_GetArraySize(blocks) > DYNB_MAX_BLOCKS)
    return fail(p, "blocks", "must be an array of 1..%d blocks", DYNB_MAX_BLOCKS);
  int i = 0;
  for (const cJSON *b = blocks->child; b; b = b->next, i++)
    DYNB_TRY(get_block(p, b, i, &s->blocks[i]));
  s->nblocks = i;
  static const char *const open_keys[] = {"width", "norm", "kernel", "act", NULL};
  const cJSON *open = member(root, "open");
  if (!open) return fail(p, "open", "missing (required)");
  DYNB_TRY(check_keys(p, open, "open", open_keys));
  int norm = 0, act = 0;
  DYNB_TRY(get_int(p, open, "open", "width", 1, DYNB_MAX_WIDTH, true, 0, &s->open_width));
  DYNB_TRY(get_int(p, open, "open", "kernel", 1, 15, false, 3, &s->open_kernel));
  if (s->open_kernel % 2 == 0) return fail(p, "open.kernel", "must be odd, got %d", s->open_kernel);
  DYNB_TRY(get_name(p, open, "open", "norm", parse_norm, norm_names, false, DYNB_NORM_BATCH, &norm));
  DYNB_TRY(get_name(p, open, "open", "act", parse_act, act_names, false, DYNB_ACT_RELU, &act));
  s->open_norm = (dynb_norm_kind)norm, s->open_act = (dynb_act)act;
  if (s->open_width != s->blocks[0].width)
    return fail(p, "open.width", "is %d but blocks[0].width is %d; a block keeps its width",
                s->open_width, s->blocks[0].width);
  static const char *const conn_keys[] = {"norm", "act", NULL};
  const cJSON *conn = member(root, "connect");
  norm = DYNB_NORM_BATCH, act = DYNB_ACT_RELU;
  if (conn) {
    DYNB_TRY(check_keys(p, conn, "connect", conn_keys));
    DYNB_TRY(get_name(p, conn, "connect", "norm", parse_norm, norm_names, false, DYNB_NORM_BATCH, &norm));
    DYNB_TRY(get_name(p, conn, "connect", "act", parse_act, act_names, false, DYNB_ACT_RELU, &act));
  }
  s->connect_norm = (dynb_norm_kind)norm, s->connect_act = (dynb_act)act;
  DYNB_TRY(get_int(p, root, "", "head_width", 1, DYNB_MAX_WIDTH, false,
                   s->blocks[s->nblocks - 1].width, &s->head_width));
  const cJSON *tr = member(root, "time_reg");
  if (tr && (!cJSON_IsNumber(tr) || !(tr->valuedouble >= 0) || !isfinite(tr->valuedouble)))
    return fail(p, "time_reg", "must be a number >= 0");
  s->time_reg = tr ? tr->valuedouble : 0;
  DYNB_TRY(get_clip(p, root, s));
  return check_buildable(p, s);
}

/* Line and column of a byte offset, for syntax errors. */
static void position(const char *text, size_t off, int *line, int *col) {
  *line = 1, *col = 1;
  for (size_t i = 0; i < off; i++) {
    if (text[i] == '\n')
      (*line)++, *col = 1;
    else
      (*col)++;
  }
}

dynb_status dynb__spec_parse(const char *text, size_t len, const char *source,
                             dynb__net_spec *out, char *err, size_t errlen) {
  parser p = {source ? source : "<string>", err, errlen};
  memset(out, 0, sizeof *out);
  if (!text) return fail(&p, "", "no text");
  if (len > SPEC_MAX_BYTES) return fail(&p, "", "spec of %zu bytes is too large", len);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
  if (!root) {
    int line, col;
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    const char *e = cJSON_GetErrorPtr();
    if (e && e >= text && e <= text + len) off = (size_t)(e - text);
    position(text, off, &line, &col);
    return fail(&p, "", "invalid JSON at line %d, column %d", line, col);
  }
  while (end && end < text + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t' || *end == 0))
    end++;
  dynb_status st = DYNB_OK;
  if (end && end < text + len) {
    int line, col;
    position(text, (size_t)(end - text), &line, &col);
    st = fail(&p, "", "unexpected text after the JSON object at line %d, column %d", line, col);
  }
  if (st == DYNB_OK) st = parse_root(&p, root, out);
  cJSON_Delete(root);
  if (st != DYNB_OK) memset(out, 0, sizeof *out);
  return st;
}

/* ---- writing ------------------------------------------------------------------------ */

/* The shortest of %.15g..%.17g that reads back as exactly v: cJSON's own
 * printing accepts a one-ulp difference, and a spec must round-trip. */
static cJSON *number_json(double v) {
  char buf[40];
  for (int digits = 15; digits <= 17; digits++) {
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (strtod(buf, NULL) == v) break;
  }
  return cJSON_CreateRaw(buf);
}

static cJSON *numbers_json(const double *t, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, number_json(t[i]));
  return a;
}


static cJSON *scheme_json(const dynb__tableau *t) {
  if (strcmp(t->name, "custom") != 0) return cJSON_CreateString(t->name);
  cJSON *o = cJSON_CreateObject(), *A = cJSON_CreateArray();
  cJSON_AddItemToObject(o, "c", numbers_json(t->c, t->stages));
  for (int i = 0; i < t->stages; i++) cJSON_AddItemToArray(A, numbers_json(t->a[i], t->stages));
  cJSON_AddItemToObject(o, "A", A);
  cJSON_AddItemToObject(o, "b", numbers_json(t->b, t->stages));
  return o;
}

char *dynb__spec_to_json(const dynb__net_spec *s) {
  cJSON *root = cJSON_CreateObject(), *in = cJSON_CreateObject(), *open = cJSON_CreateObject();
  cJSON *blocks = cJSON_CreateArray(), *conn = cJSON_CreateObject();
  if (!root || !in || !open || !blocks || !conn) {
    cJSON_Delete(root), cJSON_Delete(in), cJSON_Delete(open), cJSON_Delete(blocks), cJSON_Delete(conn);
    return NULL;
  }
  cJSON_AddNumberToObject(in, "channels", s->in_channels);
  cJSON_AddNumberToObject(in, "height", s->in_height);
  cJSON_AddNumberToObject(in, "width", s->in_width);
  cJSON_AddItemToObject(root, "input", in);
  cJSON_AddNumberToObject(root, "classes", s->classes);
  cJSON_AddNumberToObject(open, "width", s->open_width);
  cJSON_AddStringToObject(open, "norm", dynb__norm_name(s->open_norm));
  cJSON_AddNumberToObject(open, "kernel", s->open_kernel);
  cJSON_AddStringToObject(open, "act", dynb__act_name(s->open_act));
  cJSON_AddItemToObject(root, "open", open);
  for (int b = 0; b < s->nblocks; b++) {
    const dynb__block_spec *bs = &s->blocks[b];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "width", bs->width);
    cJSON_AddStringToObject(o, "layer", dynb__layer_name(bs->layer.kind));
    cJSON_AddStringToObject(o, "norm", dynb__norm_name(bs->layer.norm));
    cJSON_AddItemToObject(o, "scheme", scheme_json(&bs->tableau));
    cJSON_AddItemToObject(o, "t_states", numbers_json(bs->t_states, bs->nstates));
    cJSON_AddItemToObject(o, "t_controls", numbers_json(bs->t_controls, bs->ncontrols));
    cJSON_AddStringToObject(o, "act", dynb__act_name(bs->layer.act));
    cJSON_AddNumberToObject(o, "kernel", bs->layer.kernel);
    cJSON_AddItemToArray(blocks, o);
  }
  cJSON_AddItemToObject(root, "blocks", blocks);
  cJSON_AddStringToObject(conn, "norm", dynb__norm_name(s->connect_norm));
  cJSON_AddStringToObject(conn, "act", dynb__act_name(s->connect_act));
  cJSON_AddItemToObject(root, "connect", conn);
  cJSON_AddNumberToObject(root, "head_width", s->head_width);
  cJSON_AddItemToObject(root, "time_reg", number_json(s->time_reg));
  if (s->clip) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToObject(c, "min", number_json(s->clip_min));
    cJSON_AddItemToObject(c, "max", number_json(s->clip_max));
    cJSON_AddItemToObject(root, "clip", c);
  }
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return text;
}
