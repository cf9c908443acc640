/* CLBlast GEMM parameter sets: the curated candidates `dynblocks tune`
 * tries per device type, the built-in choice when nothing was tuned, and
 * their round trip through the tuning cache.
 *
 * CLBlast keeps parameter overrides per device and precision for the whole
 * process, and each CLBlastOverrideParameters call costs ~0.4 ms, so one
 * configuration per (device, precision) is applied once, at context
 * creation; what may differ per GEMM shape is only the formulation
 * (gemm.c). */
#include <clblast_c.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

static const char *const xgemm_names[DYNB__XGEMM_PARAMS] = {
    "GEMMK", "KREG", "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
    "NDIMC", "NWG",  "SA",  "SB",  "STRM",  "STRN",  "VWM", "VWN"};
static const char *const direct_names[DYNB__XGEMM_DIRECT_PARAMS] = {
    "KWID", "MDIMAD", "MDIMCD", "NDIMBD", "NDIMCD", "PADA", "PADB", "VWMD", "VWND", "WGD"};
static const char *const routine_name = "XGEMM_MIN_INDIRECT_SIZE";

enum { ON_CPU = 1, ON_GPU = 2 };

/* The candidates, from notes/clblast-on-pocl.md (CPU: measured correct on
 * every convolution shape of the reference networks on PoCL, with tiny
 * work-groups, 16-wide vectors, no local memory, KWG = 8 and the indirect
 * kernel forced) and from the first-variant ranges of CLBlast's own Xgemm
 * tuner (GPU). GEMMK=1 is absent on purpose: it computed wrong products on
 * PoCL in every configuration tried. The tuner verifies each candidate on
 * every shape anyway before it may be chosen. */
typedef struct family_entry {
  const char *name;
  unsigned devices;
  const char *xgemm, *direct;
  size_t min_indirect; /* 0: CLBlast's own threshold */
} family_entry;

#define CPU_XGEMM(m, nd, mwg, nwg, vwn, str)                                                \
  "GEMMK=0 KREG=1 KWG=8 KWI=8 MDIMA=" m " MDIMC=" m " MWG=" mwg " NDIMB=" nd " NDIMC=" nd \
  " NWG=" nwg " SA=0 SB=0 STRM=" str " STRN=" str " VWM=16 VWN=" vwn

static const family_entry family[] = {
    {"clblast", ON_CPU | ON_GPU, NULL, NULL, 0},
    {"i_m32n32", ON_CPU, CPU_XGEMM("2", "2", "32", "32", "16", "0"), NULL, 1},
    {"i_m64n32", ON_CPU, CPU_XGEMM("4", "2", "64", "32", "16", "0"), NULL, 1},
    {"i_m64n32str", ON_CPU, CPU_XGEMM("4", "2", "64", "32", "16", "1"), NULL, 1},
    {"i_m128n8", ON_CPU, CPU_XGEMM("8", "1", "128", "8", "8", "0"), NULL, 1},
    {"i_m32n8", ON_CPU, CPU_XGEMM("2", "1", "32", "8", "8", "0"), NULL, 1},
    {"i_m32n8str", ON_CPU, CPU_XGEMM("2", "1", "32", "8", "8", "1"), NULL, 1},
    /* The direct kernel everywhere: it only won the weight gradients of
     * narrow layers, and takes 40 s (w8) to minutes (w16) to compile. */
    {"d_w8_m1n1_k2", ON_CPU, NULL,
     "KWID=2 MDIMAD=1 MDIMCD=1 NDIMBD=1 NDIMCD=1 PADA=0 PADB=0 VWMD=8 VWND=8 WGD=8", 100000},
    {"d_w16_m2n1", ON_CPU, NULL,
     "KWID=8 MDIMAD=2 MDIMCD=2 NDIMBD=1 NDIMCD=1 PADA=0 PADB=0 VWMD=8 VWND=16 WGD=16", 100000},
    {"g_m64n64_l16", ON_GPU,
     "GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=16 MDIMC=16 MWG=64 NDIMB=16 NDIMC=16 NWG=64 SA=1 SB=1 "
     "STRM=0 STRN=0 VWM=2 VWN=2", NULL, 0},
    {"g_m64n64_l8", ON_GPU,
     "GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=64 NDIMB=8 NDIMC=8 NWG=64 SA=1 SB=1 "
     "STRM=0 STRN=0 VWM=4 VWN=4", NULL, 0},
    {"g_m32n32_l8", ON_GPU,
     "GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=32 NDIMB=8 NDIMC=8 NWG=32 SA=0 SB=0 "
     "STRM=0 STRN=0 VWM=2 VWN=2", NULL, 0},
};
#define FAMILY_SIZE (sizeof family / sizeof *family)

static bool is_pocl_cpu(const dynb_ctx *ctx) {
  return !ctx->info.is_gpu && strstr(ctx->info.platform_name, "Portable Computing Language");
}

static unsigned device_kind(const dynb_ctx *ctx) { return ctx->info.is_gpu ? ON_GPU : ON_CPU; }

static const char *from_family(const family_entry *f, dynb__gemm_config *c);

/* Whether a candidate's kernels fit the device: work-groups of MDIMC·NDIMC
 * (direct: MDIMCD·NDIMCD) items, each dimension within the item limits,
 * and the local memory its tiles take in single precision (KWG·MWG and
 * KWG·NWG where SA, SB; direct: WGD·(WGD + PADA) and WGD·(WGD + PADB)).
 * CLBlast would refuse the launch of one that does not, in every shape. */
static bool fits_device(const dynb_ctx *ctx, const family_entry *f) {
  dynb__gemm_config c;
  if (from_family(f, &c)) return false;
  const dynb__limits *lim = &ctx->limits;
  size_t threads[2] = {1, 1}, local = 0;
  if (c.has_xgemm) {
    const size_t *x = c.xgemm; /* in xgemm_names order */
    threads[0] = x[5], threads[1] = x[8];
    local = 4 * (x[10] * x[2] * x[6] + x[11] * x[2] * x[9]);
  }
  if (c.has_direct) {
    const size_t *d = c.direct; /* in direct_names order */
    size_t t0 = d[2], t1 = d[4], l = 4 * (d[9] * (d[9] + d[5]) + d[9] * (d[9] + d[6]));
    threads[0] = t0 > threads[0] ? t0 : threads[0];
    threads[1] = t1 > threads[1] ? t1 : threads[1];
    local = l > local ? l : local;
  }
  return threads[0] <= lim->max_items[0] && threads[1] <= lim->max_items[1] &&
         threads[0] * threads[1] <= lim->max_work_group && local <= lim->local_mem;
}

size_t dynb__gemm_candidates(const dynb_ctx *ctx, const char **names, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < FAMILY_SIZE; i++) {
    if (!(family[i].devices & device_kind(ctx)) || !fits_device(ctx, &family[i])) continue;
    if (n < cap) names[n] = family[i].name;
    n++;
  }
  return n;
}

/* PoCL is not in CLBlast's database and gets generic GPU parameters that
 * ran the convolution GEMMs at 3-24 GFLOP/s; i_m32n32 was the best single
 * set over all of them (5-40x faster). Double precision was not measured
 * and keeps CLBlast's. Elsewhere CLBlast's database is the better guess. */
const char *dynb__gemm_builtin(const dynb_ctx *ctx, dynb_dtype real) {
  return real == DYNB_F32 && is_pocl_cpu(ctx) ? "i_m32n32" : "clblast";
}

/* ---- "NAME=VALUE ..." lists -------------------------------------------------- */

/* Reads exactly the parameters `names` (any order, each once) from s. */
static const char *parse_params(const char *s, const char *const *names, size_t n,
                                size_t *values) {
  bool seen[DYNB__XGEMM_PARAMS] = {false};
  size_t count = 0;
  while (*s) {
    while (*s == ' ') s++;
    if (!*s) break;
    const char *eq = strchr(s, '=');
    if (!eq) return "expected NAME=VALUE";
    size_t i = 0, len = (size_t)(eq - s);
    while (i < n && !(strlen(names[i]) == len && strncmp(names[i], s, len) == 0)) i++;
    if (i == n) return "unknown parameter name";
    if (seen[i]) return "a parameter given twice";
    char *end;
    unsigned long v = strtoul(eq + 1, &end, 10);
    if (end == eq + 1 || (*end && *end != ' ') || v > 1000000) return "a value is not 0..1000000";
    seen[i] = true, values[i] = (size_t)v, count++;
    s = end;
  }
  return count == n ? NULL : "a parameter is missing";
}

static void format_params(char *buf, size_t cap, const char *const *names, const size_t *values,
                          size_t n) {
  size_t len = 0;
  buf[0] = 0;
  for (size_t i = 0; i < n && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%s=%zu", i ? " " : "", names[i], values[i]);
}

static const char *from_family(const family_entry *f, dynb__gemm_config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "%s", f->name);
  const char *why = NULL;
  if (f->xgemm) {
    c->has_xgemm = true;
    why = parse_params(f->xgemm, xgemm_names, DYNB__XGEMM_PARAMS, c->xgemm);
  }
  if (!why && f->direct) {
    c->has_direct = true;
    why = parse_params(f->direct, direct_names, DYNB__XGEMM_DIRECT_PARAMS, c->direct);
  }
  c->has_routine = f->min_indirect != 0;
  c->min_indirect = f->min_indirect;
  return why;
}

dynb_status dynb__gemm_config_find(dynb_ctx *ctx, const char *name, dynb__gemm_config *out) {
  char known[512] = "";
  for (size_t i = 0; i < FAMILY_SIZE; i++) {
    if (strcmp(family[i].name, name) == 0) {
      const char *why = from_family(&family[i], out);
      DYNB_CHECK(ctx, !why, DYNB_STATUS_INVALID_ARGUMENT, "gemm configuration %s: %s", name, why);
      return DYNB_OK;
    }
    size_t len = strlen(known);
    snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "", family[i].name);
  }
  return dynb__fail(ctx, DYNB_STATUS_INVALID_ARGUMENT,
                    "no GEMM configuration called '%s' (known: %s)", name, known);
}

/* ---- Applying ------------------------------------------------------------------ */

static dynb_status override(dynb_ctx *ctx, const char *kernel, dynb_dtype real, size_t n,
                            const char *const *names, const size_t *values) {
  CLBlastPrecision p = real == DYNB_F64 ? CLBlastPrecisionDouble : CLBlastPrecisionSingle;
  /* CLBlastOverrideParameters (CLBlast 1.5.3) corrupts its process-wide
   * database when two threads call it at once (test_threads.c crashed in it
   * with two contexts created together), so calls take turns. The mutex is
   * the library's only other process-wide object; it holds no data. */
  static pthread_mutex_t override_lock = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&override_lock);
  CLBlastStatusCode s = CLBlastOverrideParameters(ctx->device, kernel, p, n, (const char **)names,
                                                  values);
  pthread_mutex_unlock(&override_lock);
  DYNB_CHECK(ctx, s == CLBlastSuccess, DYNB_STATUS_CLBLAST_ERROR,
             "CLBlast refused the %s parameters (status %d)", kernel, (int)s);
  return DYNB_OK;
}

dynb_status dynb__gemm_config_apply(dynb_ctx *ctx, dynb_dtype real, const dynb__gemm_config *c) {
  if (c->has_xgemm)
    DYNB_TRY(override(ctx, "Xgemm", real, DYNB__XGEMM_PARAMS, xgemm_names, c->xgemm));
  if (c->has_direct)
    DYNB_TRY(override(ctx, "XgemmDirect", real, DYNB__XGEMM_DIRECT_PARAMS, direct_names,
                      c->direct));
  if (c->has_routine) DYNB_TRY(override(ctx, "GemmRoutine", real, 1, &routine_name, &c->min_indirect));
  snprintf(ctx->gemm_config[real], sizeof ctx->gemm_config[real], "%s", c->name);
  return DYNB_OK;
}

/* ---- Through the tuning cache ------------------------------------------------- */

static void config_key(char *buf, size_t cap, dynb_dtype real, const char *part) {
  snprintf(buf, cap, "gemm.%s.%s", dynb__dtype_name(real), part);
}

dynb_status dynb__gemm_config_put(dynb_ctx *ctx, dynb_dtype real, const dynb__gemm_config *c) {
  char key[64], val[DYNB__TUNE_MAX];
  config_key(key, sizeof key, real, "config");
  DYNB_TRY(dynb__tune_put(ctx, key, c->name));
  if (c->has_xgemm) {
    config_key(key, sizeof key, real, "xgemm");
    format_params(val, sizeof val, xgemm_names, c->xgemm, DYNB__XGEMM_PARAMS);
    DYNB_TRY(dynb__tune_put(ctx, key, val));
  }
  if (c->has_direct) {
    config_key(key, sizeof key, real, "xgemmdirect");
    format_params(val, sizeof val, direct_names, c->direct, DYNB__XGEMM_DIRECT_PARAMS);
    DYNB_TRY(dynb__tune_put(ctx, key, val));
  }
  if (c->has_routine) {
    config_key(key, sizeof key, real, "routine");
    format_params(val, sizeof val, &routine_name, &c->min_indirect, 1);
    DYNB_TRY(dynb__tune_put(ctx, key, val));
  }
  return DYNB_OK;
}

/* One optional part: absent leaves *has false; present must parse. */
static dynb_status get_part(dynb_ctx *ctx, dynb_dtype real, const char *part,
                            const char *const *names, size_t n, size_t *values, bool *has) {
  char key[64], val[DYNB__TUNE_MAX];
  config_key(key, sizeof key, real, part);
  *has = dynb__tune_get(ctx, key, val, sizeof val);
  const char *why = *has ? parse_params(val, names, n, values) : NULL;
  DYNB_CHECK(ctx, !why, DYNB_STATUS_BAD_FORMAT, "tuning cache %s: %s: %s", ctx->tune_path, key,
             why);
  return DYNB_OK;
}

dynb_status dynb__gemm_config_get(dynb_ctx *ctx, dynb_dtype real, dynb__gemm_config *out,
                                  bool *found) {
  char key[64];
  memset(out, 0, sizeof *out);
  config_key(key, sizeof key, real, "config");
  *found = dynb__tune_get(ctx, key, out->name, sizeof out->name);
  if (!*found) return DYNB_OK;
  DYNB_TRY(get_part(ctx, real, "xgemm", xgemm_names, DYNB__XGEMM_PARAMS, out->xgemm,
                    &out->has_xgemm));
  DYNB_TRY(get_part(ctx, real, "xgemmdirect", direct_names, DYNB__XGEMM_DIRECT_PARAMS,
                    out->direct, &out->has_direct));
  return get_part(ctx, real, "routine", &routine_name, 1, &out->min_indirect, &out->has_routine);
}

/* gemm.<real>.form.<nn|nt|tn|tt>.<m>x<n>x<k> = row|col (then free text). */
static bool parse_form(const dynb__tune_entry *e, const char *prefix, dynb__gemm_shape *s) {
  size_t pn = strlen(prefix);
  const char *k = e->key + pn;
  if (strncmp(e->key, prefix, pn) != 0 || (k[0] != 'n' && k[0] != 't') ||
      (k[1] != 'n' && k[1] != 't') || k[2] != '.')
    return false;
  s->trans_a = k[0] == 't', s->trans_b = k[1] == 't';
  size_t *dims[3] = {&s->m, &s->n, &s->k};
  const char *p = k + 3;
  for (int i = 0; i < 3; i++) {
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p || v == 0 || *end != (i < 2 ? 'x' : '\0') || (*p < '0' || *p > '9')) return false;
    *dims[i] = (size_t)v;
    p = end + 1;
  }
  const char *v = e->value;
  if (strncmp(v, "row", 3) != 0 && strncmp(v, "col", 3) != 0) return false;
  s->form = v[0] == 'c' ? DYNB__GEMM_COL : DYNB__GEMM_ROW;
  return v[3] == 0 || v[3] == ' ';
}

static void drop_forms(dynb_ctx *ctx, dynb_dtype real) {
  size_t kept = 0;
  for (size_t i = 0; i < ctx->ngemm_forms; i++)
    if (ctx->gemm_forms[i].dtype != real) ctx->gemm_forms[kept++] = ctx->gemm_forms[i];
  ctx->ngemm_forms = kept;
}

static dynb_status load_forms(dynb_ctx *ctx, dynb_dtype real) {
  char prefix[32];
  config_key(prefix, sizeof prefix, real, "form.");
  for (size_t i = 0; i < ctx->ntune; i++) {
    dynb__gemm_shape s = {.dtype = real};
    if (strncmp(ctx->tune[i].key, prefix, strlen(prefix)) != 0) continue;
    if (parse_form(&ctx->tune[i], prefix, &s))
      DYNB_TRY(dynb__gemm_set_form(ctx, &s, s.form));
    else
      dynb__log(ctx, DYNB_LOG_WARN, "tuning cache %s: %s = %s is not a GEMM formulation; ignored",
                ctx->tune_path, ctx->tune[i].key, ctx->tune[i].value);
  }
  return DYNB_OK;
}

/* The cached configuration with its formulations; false when there is none
 * or CLBlast refuses it (then the built-in one is applied instead). */
static bool apply_cached(dynb_ctx *ctx, dynb_dtype real) {
  dynb__gemm_config c;
  bool found = false;
  if (dynb__gemm_config_get(ctx, real, &c, &found) != DYNB_OK ||
      (found && (dynb__gemm_config_apply(ctx, real, &c) != DYNB_OK ||
                 load_forms(ctx, real) != DYNB_OK))) {
    dynb__log(ctx, DYNB_LOG_WARN, "%s; using the built-in GEMM parameters",
              dynb_ctx_last_error(ctx));
    drop_forms(ctx, real);
    ctx->last_status = DYNB_OK;
    return false;
  }
  if (found)
    dynb__log(ctx, DYNB_LOG_INFO, "gemm %s: tuned configuration %s from %s (%zu formulations)",
              dynb__dtype_name(real), c.name, ctx->tune_path, ctx->ngemm_forms);
  return found;
}

dynb_status dynb__gemm_configure(dynb_ctx *ctx) {
  for (int r = 0; r < DYNB__REAL_KINDS; r++) {
    dynb_dtype real = (dynb_dtype)r;
    snprintf(ctx->gemm_config[r], sizeof ctx->gemm_config[r], "clblast");
    if (real == DYNB_F64 && !ctx->info.has_fp64) continue;
    if (apply_cached(ctx, real)) continue;
    dynb__gemm_config c;
    if (dynb__gemm_config_find(ctx, dynb__gemm_builtin(ctx, real), &c) != DYNB_OK ||
        dynb__gemm_config_apply(ctx, real, &c) != DYNB_OK) {
      dynb__log(ctx, DYNB_LOG_WARN, "%s; using CLBlast's own parameters", dynb_ctx_last_error(ctx));
      ctx->last_status = DYNB_OK;
    }
  }
  return DYNB_OK;
}
