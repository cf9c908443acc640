/* The tuning cache: what `dynblocks tune` measured on a device (CLBlast
 * parameters, GEMM formulations) and whatever else the library decides per
 * device by measurement (e.g. convolution routes), in one small text file
 * shared by every device of the machine:
 *
 *   # comment
 *   [Portable Computing Language | OpenCL 3.0 PoCL ... | cpu-x86-64 | 3.1 | CLBlast 1.5.3]
 *   gemm.f32.config = i_m32n32
 *
 * A context reads its own section once, at creation. The file is the user's
 * (it may be edited, copied between machines, cut short by a full disk), so
 * a malformed line is reported with its file and line number and skipped:
 * the cache only ever makes things faster, never makes a command fail. */
#define _POSIX_C_SOURCE 200809L
#include <clblast_c.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "io/io.h"
#include "runtime/runtime.h"

/* A cache holds a few hundred lines; a file beyond this is not ours. */
#define FILE_MAX ((size_t)1 << 20)

static const char header[] =
    "# dynblocks tuning cache: written by `dynblocks tune`, read by every context at creation.\n"
    "# One [platform | platform version | device | driver | CLBlast] section per device.\n"
    "# Delete it to return to the built-in parameters.\n";

/* ---- Keys, values and the device's identity --------------------------------- */

static bool key_ok(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || n >= DYNB__TUNE_MAX) return false;
  for (; *k; k++)
    if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') ||
          *k == '.' || *k == '_' || *k == '-'))
      return false;
  return true;
}

/* Printable ASCII, no blank at either end (the parser trims them). */
static bool value_ok(const char *v) {
  size_t n = strlen(v);
  if (n == 0 || n >= DYNB__TUNE_MAX || v[0] == ' ' || v[n - 1] == ' ') return false;
  for (; *v; v++)
    if (*v < 0x20 || *v > 0x7e) return false;
  return true;
}

/* Appends one component of the identity; characters that would end the
 * section header or the line become '_'. */
static void id_part(char *buf, size_t cap, const char *s) {
  size_t n = strlen(buf);
  if (n && n + 3 < cap) memcpy(buf + n, " | ", 4), n += 3;
  for (; *s && n + 1 < cap; s++) {
    char c = *s;
    buf[n++] = (c < 0x20 || c > 0x7e || c == '[' || c == ']' || c == '|') ? '_' : c;
  }
  buf[n] = 0;
}

/* Everything a tuned value depends on: the platform and its version, the
 * device, its driver and the CLBlast that compiled the kernels. */
static dynb_status identity(dynb_ctx *ctx) {
  char pver[128] = "", clb[32], buf[1024] = "";
  if (ctx->platform)
    clGetPlatformInfo(ctx->platform, CL_PLATFORM_VERSION, sizeof pver - 1, pver, NULL);
  pver[sizeof pver - 1] = 0;
  snprintf(clb, sizeof clb, "CLBlast %d.%d.%d", CLBLAST_VERSION_MAJOR, CLBLAST_VERSION_MINOR,
           CLBLAST_VERSION_PATCH);
  id_part(buf, sizeof buf, ctx->info.platform_name);
  id_part(buf, sizeof buf, pver);
  id_part(buf, sizeof buf, ctx->info.device_name);
  id_part(buf, sizeof buf, ctx->info.driver_version);
  id_part(buf, sizeof buf, clb);
  ctx->tune_id = dynb__strdup(ctx, buf);
  DYNB_CHECK(ctx, ctx->tune_id, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory for the device id");
  return DYNB_OK;
}

/* ---- Parsing ------------------------------------------------------------------ */

typedef dynb_status (*entry_fn)(dynb_ctx *ctx, void *user, const char *section, const char *key,
                                const char *value);

static char *trim(char *s, char *end) {
  while (s < end && (*s == ' ' || *s == '\t')) s++;
  while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) end--;
  *end = 0;
  return s;
}

/* One line (NUL-terminated in place, `len` bytes before the terminator
 * were in the file): a section header, an entry, or why it is neither. */
static const char *parse_line(char *line, size_t len, char **section, char **key, char **value) {
  *key = *value = NULL;
  if (strlen(line) != len) return "contains a NUL byte";
  char *s = trim(line, line + len);
  if (!*s || *s == '#') return NULL;
  if (*s == '[') {
    size_t n = strlen(s);
    if (s[n - 1] != ']') return "a section header must end with ']'";
    char *name = trim(s + 1, s + n - 1);
    if (!*name) return "empty section name";
    *section = name;
    return NULL;
  }
  char *eq = strchr(s, '=');
  if (!eq) return "expected 'key = value', '[device]' or a '#' comment";
  char *k = trim(s, eq), *v = trim(eq + 1, eq + 1 + strlen(eq + 1));
  if (!key_ok(k)) return "the key must be 1-511 of A-Z a-z 0-9 . _ -";
  if (!value_ok(v)) return "the value must be 1-511 printable ASCII characters";
  if (!**section) return "an entry before any [device] section";
  *key = k, *value = v;
  return NULL;
}

/* Calls fn for every well-formed entry of `text` (modified in place);
 * with `warn`, each malformed line is reported once. */
static dynb_status parse(dynb_ctx *ctx, const char *path, char *text, size_t len, bool warn,
                         entry_fn fn, void *user) {
  char *section = "";
  size_t lineno = 0;
  for (char *p = text, *end = text + len; p < end;) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *stop = nl ? nl : end;
    *stop = 0;
    lineno++;
    char *key, *value;
    const char *why = parse_line(p, (size_t)(stop - p), &section, &key, &value);
    if (why && warn)
      dynb__log(ctx, DYNB_LOG_WARN, "tuning cache %s:%zu: %s; line ignored", path, lineno, why);
    if (key) DYNB_TRY(fn(ctx, user, section, key, value));
    p = stop + 1;
  }
  return DYNB_OK;
}

/* The whole file, NUL-terminated, or NULL when there is none or it cannot
 * be used (reported with `warn`, except a file that does not exist). */
static char *read_file(dynb_ctx *ctx, const char *path, bool warn, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (warn && errno != ENOENT)
      dynb__log(ctx, DYNB_LOG_WARN, "tuning cache %s: %s; ignored", path, strerror(errno));
    return NULL;
  }
  char *buf = dynb__alloc(ctx, FILE_MAX + 2);
  size_t n = buf ? fread(buf, 1, FILE_MAX + 1, f) : 0;
  bool bad = !buf || ferror(f) || n > FILE_MAX;
  fclose(f);
  if (bad) {
    if (warn)
      dynb__log(ctx, DYNB_LOG_WARN, "tuning cache %s: %s; ignored", path,
                !buf ? "no memory" : n > FILE_MAX ? "larger than 1 MiB" : "read error");
    dynb__free(ctx, buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

/* ---- Entries in memory -------------------------------------------------------- */

static dynb__tune_entry *find(const dynb_ctx *ctx, const char *key) {
  for (size_t i = 0; i < ctx->ntune; i++)
    if (strcmp(ctx->tune[i].key, key) == 0) return &ctx->tune[i];
  return NULL;
}

static dynb_status put(dynb_ctx *ctx, const char *key, const char *val) {
  size_t kn = strlen(key) + 1, vn = strlen(val) + 1;
  char *block = dynb__alloc(ctx, kn + vn);
  DYNB_CHECK(ctx, block, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory for a tuning entry");
  memcpy(block, key, kn);
  memcpy(block + kn, val, vn);
  dynb__tune_entry *e = find(ctx, key);
  if (e) {
    dynb__free(ctx, e->key);
  } else {
    dynb_status st = dynb__grow(ctx, (void **)&ctx->tune, &ctx->tune_cap, ctx->ntune,
                                sizeof *ctx->tune, "tuning entries");
    if (st != DYNB_OK) {
      dynb__free(ctx, block);
      return st;
    }
    e = &ctx->tune[ctx->ntune++];
  }
  e->key = block;
  e->value = block + kn;
  return DYNB_OK;
}

static dynb_status load_entry(dynb_ctx *ctx, void *user, const char *section, const char *key,
                              const char *value) {
  (void)user;
  return strcmp(section, ctx->tune_id) == 0 ? put(ctx, key, value) : DYNB_OK;
}

dynb_status dynb__tune_load(dynb_ctx *ctx) {
  DYNB_TRY(identity(ctx));
  if (!ctx->tune_path) return DYNB_OK;
  size_t len = 0;
  char *text = read_file(ctx, ctx->tune_path, true, &len);
  if (!text) return DYNB_OK;
  dynb_status st = parse(ctx, ctx->tune_path, text, len, true, load_entry, NULL);
  dynb__free(ctx, text);
  if (st == DYNB_OK)
    dynb__log(ctx, DYNB_LOG_DEBUG, "tuning cache %s: %zu entries for this device", ctx->tune_path,
              ctx->ntune);
  return st;
}

bool dynb__tune_get(const dynb_ctx *ctx, const char *key, char *val, size_t cap) {
  const dynb__tune_entry *e = find(ctx, key);
  if (!e || strlen(e->value) >= cap) return false;
  memcpy(val, e->value, strlen(e->value) + 1);
  return true;
}

dynb_status dynb__tune_put(dynb_ctx *ctx, const char *key, const char *val) {
  DYNB_CHECK(ctx, key && key_ok(key), DYNB_STATUS_INVALID_ARGUMENT,
             "tuning cache: key '%s' is not 1-511 of A-Z a-z 0-9 . _ -", key ? key : "(null)");
  DYNB_CHECK(ctx, val && value_ok(val), DYNB_STATUS_INVALID_ARGUMENT,
             "tuning cache: the value of %s is not 1-511 printable ASCII characters without "
             "blanks at either end", key);
  return put(ctx, key, val);
}

void dynb__tune_remove_prefix(dynb_ctx *ctx, const char *prefix) {
  size_t n = strlen(prefix), kept = 0;
  for (size_t i = 0; i < ctx->ntune; i++) {
    if (strncmp(ctx->tune[i].key, prefix, n) == 0)
      dynb__free(ctx, ctx->tune[i].key);
    else
      ctx->tune[kept++] = ctx->tune[i];
  }
  ctx->ntune = kept;
}

void dynb__tune_release(dynb_ctx *ctx) {
  dynb__tune_remove_prefix(ctx, "");
  dynb__free(ctx, ctx->tune);
  dynb__free(ctx, ctx->tune_id);
  dynb__free(ctx, ctx->tune_path);
  ctx->tune = NULL;
  ctx->tune_id = ctx->tune_path = NULL;
  ctx->tune_cap = 0;
}

/* ---- Saving ------------------------------------------------------------------- */

/* The new file's text, grown as sections are appended. */
typedef struct text {
  char *p;
  size_t n, cap;
  const char *last_section;
} text;

static dynb_status text_add(dynb_ctx *ctx, text *t, const char *a, const char *b, const char *c) {
  const char *parts[3] = {a, b, c};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(parts[i]);
    if (t->n + n + 1 > t->cap) {
      size_t cap = 2 * (t->n + n + 1);
      char *p = dynb__alloc(ctx, cap);
      DYNB_CHECK(ctx, p, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no memory for the tuning cache");
      if (t->n) memcpy(p, t->p, t->n);
      dynb__free(ctx, t->p);
      t->p = p, t->cap = cap;
    }
    memcpy(t->p + t->n, parts[i], n);
    t->n += n;
  }
  return DYNB_OK;
}

static dynb_status text_entry(dynb_ctx *ctx, text *t, const char *section, const char *key,
                              const char *value) {
  if (!t->last_section || strcmp(t->last_section, section) != 0)
    DYNB_TRY(text_add(ctx, t, "\n[", section, "]\n"));
  t->last_section = section;
  DYNB_TRY(text_add(ctx, t, key, " = ", value));
  return text_add(ctx, t, "\n", "", "");
}

/* Keeps the entries of the other devices as the file has them. */
static dynb_status keep_other(dynb_ctx *ctx, void *user, const char *section, const char *key,
                              const char *value) {
  return strcmp(section, ctx->tune_id) == 0 ? DYNB_OK : text_entry(ctx, user, section, key, value);
}

static dynb_status write_text(dynb_ctx *ctx, const text *t) {
  char dir[4096], err[1024];
  snprintf(dir, sizeof dir, "%s", ctx->tune_path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    dynb__mkdir_p(dir);
  }
  const void *parts[1] = {t->p};
  size_t sizes[1] = {t->n};
  dynb_status st = dynb__file_write_atomic(ctx->tune_path, parts, sizes, 1, err, sizeof err);
  DYNB_CHECK(ctx, st == DYNB_OK, st, "tuning cache: %s", err);
  return DYNB_OK;
}

dynb_status dynb__tune_save(dynb_ctx *ctx) {
  DYNB_CHECK(ctx, ctx->tune_path, DYNB_STATUS_INVALID_ARGUMENT,
             "tuning cache: this context has none (tune_cache \"\" or no cache folder)");
  text t = {0};
  size_t len = 0;
  char *old = read_file(ctx, ctx->tune_path, false, &len);
  dynb_status st = text_add(ctx, &t, header, "", "");
  if (st == DYNB_OK && old) st = parse(ctx, ctx->tune_path, old, len, false, keep_other, &t);
  for (size_t i = 0; st == DYNB_OK && i < ctx->ntune; i++)
    st = text_entry(ctx, &t, ctx->tune_id, ctx->tune[i].key, ctx->tune[i].value);
  if (st == DYNB_OK) st = write_text(ctx, &t);
  dynb__free(ctx, t.p);
  dynb__free(ctx, old);
  return st;
}
