/* The JSON network spec of SPEC §3, read with cJSON. Every key is checked:
 * unknown or repeated keys, wrong types and bad values are errors whose
 * message names the source and the key path, e.g.
 * "spec.json: blocks[1].t_states[2]: must be greater than t_states[1] (2)". */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

/* Hard limits on the text, checked before cJSON builds a tree. The largest
 * sensible spec (16 blocks, two grids of 4096 full-precision times each) is
 * under 3 MiB and 2^17 commas; the caps leave room for formatting while
 * bounding the tree (one node per value, about 64 bytes, and a value past a
 * container's first needs a comma) to a few tens of MiB. */
#define SPEC_MAX_BYTES (16u << 20)
#define SPEC_MAX_COMMAS (1u << 18)

/* Choices for messages, generated from the X-maps so that they never drift
 * from what the parsers accept: ", a, b, c" + 2 → "a, b, c". */
#define SPEC_LIST_NAME(name, value, str) ", " str
#define NORM_NAMES (&(DYNB_NORM_MAP(SPEC_LIST_NAME))[2])
#define ACT_NAMES (&(DYNB_ACT_MAP(SPEC_LIST_NAME))[2])
#define LAYER_NAMES (&(DYNB_LAYER_MAP(SPEC_LIST_NAME))[2])

/* Key paths: blocks[15].scheme.A[15] plus one user key shown at most
 * KEY_SHOWN bytes long fit comfortably. */
#define PATH_CAP 160
#define KEY_SHOWN 48

typedef struct parser {
  const char *source;
  char *err;
  size_t errlen;
} parser;

static dynb_status fail(parser *p, const char *path, const char *fmt, ...) {
  char msg[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (p->errlen)
    snprintf(p->err, p->errlen, "%s: %s%s%s", p->source, path, path[0] ? ": " : "", msg);
  return DYNB_STATUS_SPEC_ERROR;
}

/* path.key. Keys come from the file: control bytes would garble a terminal
 * and a megabyte key would drown the message, so both are tamed. */
static void join(char *out, const char *path, const char *key) {
  char shown[KEY_SHOWN + 4];
  size_t n = 0;
  for (; key[n] && n < KEY_SHOWN; n++)
    shown[n] = (unsigned char)key[n] < 0x20 || key[n] == 0x7f ? '?' : key[n];
  if (key[n]) memcpy(shown + n, "...", 3), n += 3;
  shown[n] = 0;
  snprintf(out, PATH_CAP, "%s%s%s", path, path[0] ? "." : "", shown);
}

/* path[i]. Paths are short by construction; a cut one is still readable. */
static void join_index(char *out, const char *path, int i) {
  if (snprintf(out, PATH_CAP, "%s[%d]", path, i) >= PATH_CAP) out[PATH_CAP - 2] = '~';
}

/* Rejects a non-object, keys outside `allowed` (NULL-terminated) and keys
 * given twice (cJSON keeps both; which one wins would be a guess). Every key
 * is a known one when the duplicate scan runs, so a duplicate turns up
 * within |allowed| + 1 members: linear time even for hostile input. */
static dynb_status check_keys(parser *p, const cJSON *obj, const char *path,
                              const char *const *allowed) {
  if (!cJSON_IsObject(obj)) return fail(p, path, "must be an object");
  for (const cJSON *it = obj->child; it; it = it->next) {
    bool known = false;
    for (const char *const *a = allowed; *a && !known; a++) known = strcmp(*a, it->string) == 0;
    char at[PATH_CAP];
    join(at, path, it->string);
    if (!known) return fail(p, at, "unknown key");
    for (const cJSON *o = it->next; o; o = o->next)
      if (strcmp(o->string, it->string) == 0) return fail(p, at, "key appears twice");
  }
  return DYNB_OK;
}

static const cJSON *member(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* An integer in [lo, hi]; when absent, `def` unless required. JSON has only
 * doubles: 2.5 and 1e100 are rejected here, 3.0 is 3. */
static dynb_status get_int(parser *p, const cJSON *obj, const char *path, const char *key, int lo,
                           int hi, bool required, int def, int *out) {
  char at[PATH_CAP];
  join(at, path, key);
  const cJSON *v = member(obj, key);
  if (!v) {
    if (required) return fail(p, at, "missing (required: an integer in %d..%d)", lo, hi);
    *out = def;
    return DYNB_OK;
  }
  if (!cJSON_IsNumber(v)) return fail(p, at, "must be an integer in %d..%d", lo, hi);
  double d = v->valuedouble;
  if (!(d == floor(d)) || d < lo || d > hi)
    return fail(p, at, "must be an integer in %d..%d, got %g", lo, hi, d);
  *out = (int)d;
  return DYNB_OK;
}

/* An odd kernel size: padding k/2 keeps the spatial size. */
static dynb_status get_kernel(parser *p, const cJSON *obj, const char *path, int *out) {
  DYNB_TRY(get_int(p, obj, path, "kernel", 1, 15, false, 3, out));
  char at[PATH_CAP];
  join(at, path, "kernel");
  if (*out % 2 == 0) return fail(p, at, "must be odd (padding k/2 keeps the size), got %d", *out);
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
  char at[PATH_CAP];
  join(at, path, key);
  const cJSON *v = member(obj, key);
  if (!v) {
    if (required) return fail(p, at, "missing (required: one of %s)", choices);
    *out = def;
    return DYNB_OK;
  }
  if (!cJSON_IsString(v)) return fail(p, at, "must be a string, one of %s", choices);
  if (!parse(v->valuestring, out)) {
    char shown[PATH_CAP];
    join(shown, "", v->valuestring);
    return fail(p, at, "unknown value '%s' (one of %s)", shown, choices);
  }
  return DYNB_OK;
}

/* An array of lo..hi finite numbers. The length is checked before any entry
 * is read, so a huge array costs nothing but the parse. */
static dynb_status get_numbers(parser *p, const cJSON *v, const char *at, int lo, int hi,
                               double *out, int *n) {
  if (!cJSON_IsArray(v)) return fail(p, at, "must be an array of %d..%d numbers", lo, hi);
  int len = cJSON_GetArraySize(v);
  if (len < lo || len > hi) return fail(p, at, "must have %d..%d entries, has %d", lo, hi, len);
  int i = 0;
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    char eat[PATH_CAP];
    join_index(eat, at, i);
    if (!cJSON_IsNumber(e)) return fail(p, eat, "must be a number");
    if (!isfinite(e->valuedouble)) return fail(p, eat, "must be finite, got %g", e->valuedouble);
    out[i] = e->valuedouble;
  }
  *n = len;
  return DYNB_OK;
}

/* A time grid (t_states or t_controls): min..DYNB_MAX_TIME_POINTS finite,
 * strictly increasing times. */
static dynb_status get_grid(parser *p, const cJSON *blk, const char *path, const char *key,
                            int min, double *out, int *n) {
  char at[PATH_CAP];
  join(at, path, key);
  DYNB_TRY(get_numbers(p, member(blk, key), at, min, DYNB_MAX_TIME_POINTS, out, n));
  for (int i = 1; i < *n; i++) {
    if (out[i] > out[i - 1]) continue;
    char eat[PATH_CAP];
    join_index(eat, at, i);
    return fail(p, eat, "must be greater than %s[%d] (%.17g); times increase strictly", key, i - 1,
                out[i - 1]);
  }
  return DYNB_OK;
}

/* ---- scheme -------------------------------------------------------------------- */

/* The rows of A, each with nc entries (the stage count); shape errors that
 * the tableau check would only report as a size are caught here with the
 * row's path. */
static dynb_status get_a(parser *p, const cJSON *A, const char *at, int nc, double *a, int *rows,
                         int *cols) {
  if (!cJSON_IsArray(A)) return fail(p, at, "must be an array of rows (arrays of numbers)");
  if (cJSON_GetArraySize(A) > DYNB_MAX_STAGES)
    return fail(p, at, "has %d rows; at most %d stages", cJSON_GetArraySize(A), DYNB_MAX_STAGES);
  *rows = 0, *cols = 0;
  for (const cJSON *row = A->child; row; row = row->next, (*rows)++) {
    char rat[PATH_CAP];
    join_index(rat, at, *rows);
    int n = 0;
    DYNB_TRY(get_numbers(p, row, rat, 0, DYNB_MAX_STAGES, a + *rows * nc, &n));
    if (n != nc)
      return fail(p, rat, "has %d entries; A must be %dx%d (the length of c)", n, nc, nc);
    *cols = n;
  }
  return DYNB_OK;
}

/* The embedded part of a custom tableau (SPEC §1.5): "b_err", the weights of
 * the lower-order solution, with "order", the order of b's solution (the
 * controller's exponent needs it and the library does not guess it). Each
 * needs the other. */
static dynb_status get_embedded(parser *p, const cJSON *v, const char *at, dynb__tableau *t) {
  char sub[PATH_CAP];
  bool has_err = member(v, "b_err") != NULL, has_order = member(v, "order") != NULL;
  if (!has_err && !has_order) return DYNB_OK;
  if (!has_err) {
    join(sub, at, "order");
    return fail(p, sub, "only for an embedded scheme: give b_err too");
  }
  join(sub, at, "order");
  if (!has_order)
    return fail(p, sub, "missing (required with b_err: the order of b's solution, 1..%d)",
                DYNB_MAX_STAGES);
  int order = 0, ne = 0;
  DYNB_TRY(get_int(p, v, at, "order", 1, DYNB_MAX_STAGES, true, 0, &order));
  double be[DYNB_MAX_STAGES];
  join(sub, at, "b_err");
  DYNB_TRY(get_numbers(p, member(v, "b_err"), sub, 1, DYNB_MAX_STAGES, be, &ne));
  char why[256];
  if (dynb__tableau_set_embedded(t, be, ne, order, why, sizeof why) != DYNB_OK)
    return fail(p, at, "%s", why);
  return DYNB_OK;
}

/* A custom explicit tableau {"c": [...], "A": [[...], ...], "b": [...]}. */
static dynb_status get_custom(parser *p, const cJSON *v, const char *at, dynb__tableau *t) {
  static const char *const keys[] = {"c", "A", "b", "b_err", "order", NULL};
  DYNB_TRY(check_keys(p, v, at, keys));
  double c[DYNB_MAX_STAGES], b[DYNB_MAX_STAGES], a[DYNB_MAX_STAGES * DYNB_MAX_STAGES];
  char sub[PATH_CAP];
  for (int k = 0; k < 3; k++) {
    join(sub, at, keys[k]);
    if (!member(v, keys[k])) return fail(p, sub, "missing (required in a custom scheme)");
  }
  int nc = 0, nb = 0, rows = 0, cols = 0;
  join(sub, at, "c");
  DYNB_TRY(get_numbers(p, member(v, "c"), sub, 1, DYNB_MAX_STAGES, c, &nc));
  join(sub, at, "b");
  DYNB_TRY(get_numbers(p, member(v, "b"), sub, 1, DYNB_MAX_STAGES, b, &nb));
  memset(a, 0, sizeof a);
  join(sub, at, "A");
  DYNB_TRY(get_a(p, member(v, "A"), sub, nc, a, &rows, &cols));
  char why[256];
  if (dynb__tableau_custom(c, nc, a, rows, cols, b, nb, t, why, sizeof why) != DYNB_OK)
    return fail(p, at, "%s", why);
  return get_embedded(p, v, at, t);
}

static dynb_status get_scheme(parser *p, const cJSON *blk, const char *path, dynb__tableau *t) {
  char at[PATH_CAP];
  join(at, path, "scheme");
  const cJSON *v = member(blk, "scheme");
  if (!v) return fail(p, at, "missing (required: one of " DYNB_TABLEAU_NAMES ", or {c, A, b})");
  if (cJSON_IsObject(v)) return get_custom(p, v, at, t);
  if (!cJSON_IsString(v))
    return fail(p, at, "must be a name (one of " DYNB_TABLEAU_NAMES ") or an object {c, A, b}");
  if (!dynb__tableau_builtin(v->valuestring, t)) {
    char shown[PATH_CAP];
    join(shown, "", v->valuestring);
    return fail(p, at, "unknown scheme '%s' (one of " DYNB_TABLEAU_NAMES ")", shown);
  }
  return DYNB_OK;
}

/* ---- sections -------------------------------------------------------------------- */

static bool parse_gradient(const char *n, int *o) {
  if (strcmp(n, "discrete") == 0) return *o = DYNB_GRADIENT_DISCRETE, true;
  if (strcmp(n, "adjoint") == 0) return *o = DYNB_GRADIENT_ADJOINT, true;
  return false;
}

/* A tolerance: finite, > 0 (atol: tol = atol + rtol·|y| must stay positive
 * where y is 0) or >= 0 (rtol: pure absolute control is fine). */
static dynb_status get_tol(parser *p, const cJSON *blk, const char *path, const char *key,
                           bool zero_ok, double def, double *out) {
  char at[PATH_CAP];
  join(at, path, key);
  const cJSON *v = member(blk, key);
  *out = def;
  if (!v) return DYNB_OK;
  double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
  if (!isfinite(d) || d < 0 || (!zero_ok && d == 0))
    return fail(p, at, "must be a finite number %s 0", zero_ok ? ">=" : ">");
  *out = d;
  return DYNB_OK;
}

/* The keys of SPEC §1.5: rtol, atol and max_steps belong to an embedded
 * scheme only (a fixed-step block has no error estimate to control), and
 * batch norm cannot sit in an adaptive block (its running statistics are
 * per (step, stage), and the steps change from batch to batch). */
static dynb_status get_adaptive(parser *p, const cJSON *blk, const char *path,
                                dynb__block_spec *b) {
  char at[PATH_CAP];
  int grad = 0;
  DYNB_TRY(get_name(p, blk, path, "gradient", parse_gradient, "discrete, adjoint", false,
                    DYNB_GRADIENT_DISCRETE, &grad));
  b->gradient = (dynb__gradient_mode)grad;
  if (!b->tableau.embedded) {
    static const char *const adaptive_keys[] = {"rtol", "atol", "max_steps"};
    for (int k = 0; k < 3; k++) {
      if (!member(blk, adaptive_keys[k])) continue;
      join(at, path, adaptive_keys[k]);
      return fail(p, at,
                  "only for an adaptive scheme (an embedded pair:%s, or a custom scheme with "
                  "b_err); scheme '%s' takes fixed steps",
                  &DYNB_TABLEAU_EMBEDDED_NAMES[1], b->tableau.name);
    }
    return DYNB_OK;
  }
  DYNB_TRY(get_tol(p, blk, path, "rtol", true, 1e-3, &b->rtol));
  DYNB_TRY(get_tol(p, blk, path, "atol", false, 1e-4, &b->atol));
  DYNB_TRY(get_int(p, blk, path, "max_steps", 1, DYNB_MAX_TIME_POINTS, false, 100,
                   &b->max_steps));
  b->tableau.rtol = b->rtol, b->tableau.atol = b->atol, b->tableau.max_steps = b->max_steps;
  if (b->layer.norm == DYNB_NORM_BATCH) {
    join(at, path, "norm");
    return fail(p, at,
                "batch norm cannot be used in an adaptive block (scheme '%s'): its running "
                "statistics belong to fixed evaluations; use tv or none",
                b->tableau.name);
  }
  return DYNB_OK;
}

/* blocks[i]: width, layer, norm, scheme and t_states are required (SPEC §3
 * gives them no default); act, kernel and t_controls have defaults. */
static dynb_status get_block(parser *p, const cJSON *blk, int index, dynb__block_spec *b) {
  char path[PATH_CAP];
  join_index(path, "blocks", index);
  static const char *const keys[] = {"width", "layer", "norm", "scheme", "t_states",
                                     "t_controls", "act", "kernel", "rtol", "atol",
                                     "max_steps", "gradient", NULL};
  DYNB_TRY(check_keys(p, blk, path, keys));
  int kind = 0, norm = 0, act = 0, kernel = 3;
  DYNB_TRY(get_int(p, blk, path, "width", 1, DYNB_MAX_WIDTH, true, 0, &b->width));
  DYNB_TRY(get_name(p, blk, path, "layer", parse_layer, LAYER_NAMES, true, 0, &kind));
  DYNB_TRY(get_name(p, blk, path, "norm", parse_norm, NORM_NAMES, true, 0, &norm));
  DYNB_TRY(get_name(p, blk, path, "act", parse_act, ACT_NAMES, false, DYNB_ACT_RELU, &act));
  DYNB_TRY(get_kernel(p, blk, path, &kernel));
  DYNB_TRY(get_scheme(p, blk, path, &b->tableau));
  char at[PATH_CAP];
  join(at, path, "t_states");
  if (!member(blk, "t_states")) return fail(p, at, "missing (required: at least 2 times)");
  DYNB_TRY(get_grid(p, blk, path, "t_states", 2, b->t_states, &b->nstates));
  if (member(blk, "t_controls")) {
    DYNB_TRY(get_grid(p, blk, path, "t_controls", 1, b->t_controls, &b->ncontrols));
  } else {
    memcpy(b->t_controls, b->t_states, (size_t)b->nstates * sizeof *b->t_states);
    b->ncontrols = b->nstates;
  }
  b->layer.kind = (dynb_layer_kind)kind;
  b->layer.norm = (dynb_norm_kind)norm;
  b->layer.act = (dynb_act)act;
  b->layer.channels = b->width;
  b->layer.kernel = kernel;
  return get_adaptive(p, blk, path, b);
}

static dynb_status get_blocks(parser *p, const cJSON *root, dynb__net_spec *s) {
  const cJSON *blocks = member(root, "blocks");
  if (!blocks)
    return fail(p, "blocks", "missing (required: an array of 1..%d blocks)", DYNB_MAX_BLOCKS);
  if (!cJSON_IsArray(blocks) || cJSON_GetArraySize(blocks) < 1 ||
      cJSON_GetArraySize(blocks) > DYNB_MAX_BLOCKS)
    return fail(p, "blocks", "must be an array of 1..%d blocks", DYNB_MAX_BLOCKS);
  int i = 0;
  for (const cJSON *b = blocks->child; b; b = b->next, i++)
    DYNB_TRY(get_block(p, b, i, &s->blocks[i]));
  s->nblocks = i;
  return DYNB_OK;
}

static dynb_status get_input(parser *p, const cJSON *root, dynb__net_spec *s) {
  static const char *const keys[] = {"channels", "height", "width", NULL};
  const cJSON *in = member(root, "input");
  if (!in) return fail(p, "input", "missing (required: {channels, height, width})");
  DYNB_TRY(check_keys(p, in, "input", keys));
  DYNB_TRY(get_int(p, in, "input", "channels", 1, DYNB_MAX_WIDTH, true, 0, &s->in_channels));
  DYNB_TRY(get_int(p, in, "input", "height", 1, DYNB_MAX_INPUT_SIDE, true, 0, &s->in_height));
  return get_int(p, in, "input", "width", 1, DYNB_MAX_INPUT_SIDE, true, 0, &s->in_width);
}

/* The opening layer maps the input to blocks[0]'s width, so open.width can
 * only repeat it: it defaults to it, and a different value is an error. The
 * whole object may be left out. */
static dynb_status get_open(parser *p, const cJSON *root, dynb__net_spec *s) {
  static const char *const keys[] = {"width", "norm", "kernel", "act", NULL};
  const cJSON *open = member(root, "open");
  static const cJSON empty = {.type = cJSON_Object};
  if (!open) open = &empty;
  DYNB_TRY(check_keys(p, open, "open", keys));
  int w0 = s->blocks[0].width, norm = 0, act = 0;
  DYNB_TRY(get_int(p, open, "open", "width", 1, DYNB_MAX_WIDTH, false, w0, &s->open_width));
  if (s->open_width != w0)
    return fail(p, "open.width", "is %d but blocks[0].width is %d; the opening layer feeds block 0",
                s->open_width, w0);
  DYNB_TRY(get_kernel(p, open, "open", &s->open_kernel));
  DYNB_TRY(
      get_name(p, open, "open", "norm", parse_norm, NORM_NAMES, false, DYNB_NORM_BATCH, &norm));
  DYNB_TRY(get_name(p, open, "open", "act", parse_act, ACT_NAMES, false, DYNB_ACT_RELU, &act));
  s->open_norm = (dynb_norm_kind)norm, s->open_act = (dynb_act)act;
  return DYNB_OK;
}

static dynb_status get_connect(parser *p, const cJSON *root, dynb__net_spec *s) {
  static const char *const keys[] = {"norm", "act", NULL};
  const cJSON *conn = member(root, "connect");
  static const cJSON empty = {.type = cJSON_Object};
  if (!conn) conn = &empty;
  DYNB_TRY(check_keys(p, conn, "connect", keys));
  int norm = 0, act = 0;
  DYNB_TRY(
      get_name(p, conn, "connect", "norm", parse_norm, NORM_NAMES, false, DYNB_NORM_BATCH, &norm));
  DYNB_TRY(get_name(p, conn, "connect", "act", parse_act, ACT_NAMES, false, DYNB_ACT_RELU, &act));
  s->connect_norm = (dynb_norm_kind)norm, s->connect_act = (dynb_act)act;
  return DYNB_OK;
}

static dynb_status get_time_reg(parser *p, const cJSON *root, dynb__net_spec *s) {
  const cJSON *v = member(root, "time_reg");
  s->time_reg = 0;
  if (!v) return DYNB_OK;
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || !isfinite(v->valuedouble))
    return fail(p, "time_reg", "must be a finite number >= 0 (the weight alpha)");
  s->time_reg = v->valuedouble;
  return DYNB_OK;
}

static dynb_status get_bound(parser *p, const cJSON *clip, const char *key, double *out) {
  char at[PATH_CAP];
  join(at, "clip", key);
  const cJSON *v = member(clip, key);
  if (!v) return fail(p, at, "missing (required in {min, max})");
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
    return fail(p, at, "must be a finite number");
  *out = v->valuedouble;
  return DYNB_OK;
}

/* clip: c > 0 for the box [-c, c], or {"min": a, "max": b} with a < b. */
static dynb_status get_clip(parser *p, const cJSON *root, dynb__net_spec *s) {
  const cJSON *v = member(root, "clip");
  if (!v) return DYNB_OK;
  s->clip = true;
  if (cJSON_IsNumber(v)) {
    if (!(v->valuedouble > 0) || !isfinite(v->valuedouble))
      return fail(p, "clip", "must be a finite number c > 0 (box [-c, c]), got %g", v->valuedouble);
    s->clip_min = -v->valuedouble, s->clip_max = v->valuedouble;
    return DYNB_OK;
  }
  if (!cJSON_IsObject(v)) return fail(p, "clip", "must be a number c > 0 or an object {min, max}");
  static const char *const keys[] = {"min", "max", NULL};
  DYNB_TRY(check_keys(p, v, "clip", keys));
  DYNB_TRY(get_bound(p, v, "min", &s->clip_min));
  DYNB_TRY(get_bound(p, v, "max", &s->clip_max));
  if (!(s->clip_min < s->clip_max))
    return fail(p, "clip", "needs min < max, got min %g, max %g", s->clip_min, s->clip_max);
  return DYNB_OK;
}

/* Block b > 0 sees the input after b 2×2 poolings (floored, as in PyTorch);
 * pooling a side of 1 would leave nothing, so the network is not buildable. */
static dynb_status check_buildable(parser *p, const dynb__net_spec *s) {
  int h = s->in_height, w = s->in_width;
  for (int b = 1; b < s->nblocks; b++) {
    if (h < 2 || w < 2) {
      char at[PATH_CAP];
      join_index(at, "blocks", b);
      return fail(p, at,
                  "input.height x input.width is %dx%d after %d pooling(s), too small to pool "
                  "again before this block: use fewer blocks or a larger input",
                  h, w, b - 1);
    }
    h /= 2, w /= 2;
  }
  return DYNB_OK;
}

static dynb_status parse_root(parser *p, const cJSON *root, dynb__net_spec *s) {
  static const char *const keys[] = {"input", "classes", "open", "blocks", "connect",
                                     "head_width", "time_reg", "clip", NULL};
  DYNB_TRY(check_keys(p, root, "", keys));
  DYNB_TRY(get_input(p, root, s));
  /* One class makes softmax cross-entropy identically zero: nothing to learn. */
  DYNB_TRY(get_int(p, root, "", "classes", 2, DYNB_MAX_CLASSES, true, 0, &s->classes));
  DYNB_TRY(get_blocks(p, root, s));
  DYNB_TRY(get_open(p, root, s));
  DYNB_TRY(get_connect(p, root, s));
  DYNB_TRY(get_int(p, root, "", "head_width", 1, DYNB_MAX_WIDTH, false,
                   s->blocks[s->nblocks - 1].width, &s->head_width));
  DYNB_TRY(get_time_reg(p, root, s));
  DYNB_TRY(get_clip(p, root, s));
  return check_buildable(p, s);
}

/* ---- text ------------------------------------------------------------------------- */

/* Line and column (1-based, columns in bytes) of a byte offset. */
static void position(const char *text, size_t off, int *line, int *col) {
  *line = 1, *col = 1;
  for (size_t i = 0; i < off; i++) {
    if (text[i] == '\n')
      (*line)++, *col = 1;
    else
      (*col)++;
  }
}

static dynb_status fail_at(parser *p, const char *text, size_t off, const char *what) {
  int line, col;
  position(text, off, &line, &col);
  return fail(p, "", "%s at line %d, column %d", what, line, col);
}

/* Checks the raw bytes before parsing: size cap, no NUL inside (cJSON would
 * stop there and ignore the rest), a bounded number of values. Trailing NULs
 * are dropped from *len (a caller may pass a whole zero-padded buffer). */
static dynb_status check_text(parser *p, const char *text, size_t *len) {
  if (*len > SPEC_MAX_BYTES)
    return fail(p, "", "is too large: %zu bytes (at most %u)", *len, SPEC_MAX_BYTES);
  while (*len && text[*len - 1] == 0) (*len)--;
  const char *nul = memchr(text, 0, *len);
  if (nul) return fail_at(p, text, (size_t)(nul - text), "NUL byte");
  size_t commas = 0;
  for (size_t i = 0; i < *len; i++) commas += text[i] == ',';
  if (commas > SPEC_MAX_COMMAS)
    return fail(p, "", "has too many values (%zu commas, at most %u)", commas, SPEC_MAX_COMMAS);
  size_t i = 0;
  while (i < *len && strchr(" \t\r\n", text[i])) i++;
  if (i == *len) return fail(p, "", "is empty");
  return DYNB_OK;
}

/* Parses a NUL-terminated copy (cJSON is then safe even if it peeks one byte
 * past the length). The error position comes from return_parse_end, not from
 * cJSON_GetErrorPtr: that one is a process-wide global, racy when two
 * threads parse specs. */
static dynb_status parse_json(parser *p, const char *text, size_t len, cJSON **root) {
  char *copy = malloc(len + 1);
  if (!copy) {
    fail(p, "", "out of host memory copying %zu bytes", len);
    return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  }
  memcpy(copy, text, len);
  copy[len] = 0;
  /* cJSON would end a string at an escaped NUL: "width\u0000x" would read
   * as the key "width". No spec needs one. */
  const char *esc = strstr(copy, "\\u0000");
  if (esc) {
    size_t at = (size_t)(esc - copy);
    free(copy);
    return fail_at(p, text, at, "escaped NUL (\\u0000)");
  }
  const char *end = NULL;
  *root = cJSON_ParseWithLengthOpts(copy, len, &end, false);
  size_t off = end && end >= copy && end <= copy + len ? (size_t)(end - copy) : 0;
  free(copy);
  if (!*root) return fail_at(p, text, off, "invalid JSON");
  while (off < len && strchr(" \t\r\n", text[off])) off++;
  if (off < len) {
    cJSON_Delete(*root), *root = NULL;
    return fail_at(p, text, off, "unexpected text after the JSON value");
  }
  return DYNB_OK;
}

dynb_status dynb__spec_parse(const char *text, size_t len, const char *source,
                             dynb__net_spec *out, char *err, size_t errlen) {
  parser p = {source ? source : "<string>", err, err ? errlen : 0};
  if (p.errlen) err[0] = 0;
  if (!out) {
    fail(&p, "", "no output spec (NULL)");
    return DYNB_STATUS_INVALID_ARGUMENT;
  }
  memset(out, 0, sizeof *out);
  if (!text) return fail(&p, "", "no text (NULL)");
  DYNB_TRY(check_text(&p, text, &len));
  cJSON *root = NULL;
  DYNB_TRY(parse_json(&p, text, len, &root));
  dynb_status st = parse_root(&p, root, out);
  cJSON_Delete(root);
  if (st != DYNB_OK) memset(out, 0, sizeof *out);
  return st;
}

/* ---- writing ------------------------------------------------------------------------ */

/* Tree building that remembers any allocation failure, so that a partial
 * tree is never printed: the caller gets NULL instead. */
typedef struct writer {
  bool ok;
} writer;

/* Returns the item once it is in the tree, NULL (and w->ok false) if not. */
static cJSON *put(writer *w, cJSON *obj, const char *key, cJSON *item) {
  if (item && obj && cJSON_AddItemToObject(obj, key, item)) return item;
  cJSON_Delete(item);
  w->ok = false;
  return NULL;
}

static void append(writer *w, cJSON *arr, cJSON *item) {
  if (item && arr && cJSON_AddItemToArray(arr, item)) return;
  cJSON_Delete(item);
  w->ok = false;
}

/* The shortest of %.15g..%.17g that reads back as exactly v: cJSON's own
 * printing accepts a one-ulp difference, and a spec must round-trip. A raw
 * item is printed verbatim. */
static cJSON *number_json(double v) {
  char buf[40];
  for (int digits = 15; digits <= 17; digits++) {
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (strtod(buf, NULL) == v) break;
  }
  return cJSON_CreateRaw(buf);
}

static cJSON *numbers_json(writer *w, const double *t, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < n; i++) append(w, a, number_json(t[i]));
  return a;
}

/* Built-ins by name; a custom tableau as the full object (A square). */
static cJSON *scheme_json(writer *w, const dynb__tableau *t) {
  if (strcmp(t->name, "custom") != 0) return cJSON_CreateString(t->name);
  cJSON *o = cJSON_CreateObject();
  put(w, o, "c", numbers_json(w, t->c, t->stages));
  cJSON *A = put(w, o, "A", cJSON_CreateArray());
  for (int i = 0; w->ok && i < t->stages; i++) append(w, A, numbers_json(w, t->a[i], t->stages));
  put(w, o, "b", numbers_json(w, t->b, t->stages));
  if (t->embedded) {
    put(w, o, "b_err", numbers_json(w, t->b_err, t->stages));
    put(w, o, "order", cJSON_CreateNumber(t->order));
  }
  return o;
}

static void put_int(writer *w, cJSON *obj, const char *key, int v) {
  put(w, obj, key, cJSON_CreateNumber(v));
}

static void put_str(writer *w, cJSON *obj, const char *key, const char *v) {
  put(w, obj, key, v ? cJSON_CreateString(v) : NULL);
}

static cJSON *block_json(writer *w, const dynb__block_spec *bs) {
  cJSON *o = cJSON_CreateObject();
  put_int(w, o, "width", bs->width);
  put_str(w, o, "layer", dynb__layer_name(bs->layer.kind));
  put_str(w, o, "norm", dynb__norm_name(bs->layer.norm));
  put(w, o, "scheme", scheme_json(w, &bs->tableau));
  put(w, o, "t_states", numbers_json(w, bs->t_states, bs->nstates));
  put(w, o, "t_controls", numbers_json(w, bs->t_controls, bs->ncontrols));
  put_str(w, o, "act", dynb__act_name(bs->layer.act));
  put_int(w, o, "kernel", bs->layer.kernel);
  /* Only where they mean something: a fixed-step block rejects the
   * tolerances, and "gradient" is written when it is not the default, so
   * specs without adaptive blocks keep their canonical text. */
  if (bs->tableau.embedded) {
    put(w, o, "rtol", number_json(bs->rtol));
    put(w, o, "atol", number_json(bs->atol));
    put_int(w, o, "max_steps", bs->max_steps);
  }
  if (bs->gradient == DYNB_GRADIENT_ADJOINT) put_str(w, o, "gradient", "adjoint");
  return o;
}

static void put_sections(writer *w, cJSON *root, const dynb__net_spec *s) {
  cJSON *in = put(w, root, "input", cJSON_CreateObject());
  put_int(w, in, "channels", s->in_channels);
  put_int(w, in, "height", s->in_height);
  put_int(w, in, "width", s->in_width);
  put_int(w, root, "classes", s->classes);
  cJSON *open = put(w, root, "open", cJSON_CreateObject());
  put_int(w, open, "width", s->open_width);
  put_str(w, open, "norm", dynb__norm_name(s->open_norm));
  put_int(w, open, "kernel", s->open_kernel);
  put_str(w, open, "act", dynb__act_name(s->open_act));
  cJSON *blocks = put(w, root, "blocks", cJSON_CreateArray());
  for (int b = 0; w->ok && b < s->nblocks; b++) append(w, blocks, block_json(w, &s->blocks[b]));
  cJSON *conn = put(w, root, "connect", cJSON_CreateObject());
  put_str(w, conn, "norm", dynb__norm_name(s->connect_norm));
  put_str(w, conn, "act", dynb__act_name(s->connect_act));
  put_int(w, root, "head_width", s->head_width);
  put(w, root, "time_reg", number_json(s->time_reg));
  if (!s->clip) return;
  cJSON *clip = put(w, root, "clip", cJSON_CreateObject());
  put(w, clip, "min", number_json(s->clip_min));
  put(w, clip, "max", number_json(s->clip_max));
}

char *dynb__spec_to_json(const dynb__net_spec *s) {
  if (!s) return NULL;
  writer w = {true};
  cJSON *root = cJSON_CreateObject();
  if (!root) return NULL;
  put_sections(&w, root, s);
  char *text = w.ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  return text;
}
