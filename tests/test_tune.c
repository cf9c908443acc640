/* The tuning cache (src/runtime/tune.c) and the GEMM configuration taken
 * from it at context creation (src/runtime/gemm_config.c): round trips,
 * other devices' sections kept, malformed lines reported by file and line
 * and skipped, unusable files ignored, never a failed creation. */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char warnings[1 << 15];

static void capture(void *user, dynb_log_level level, const char *msg) {
  (void)user;
  size_t n = strlen(warnings);
  if (level >= DYNB_LOG_WARN) snprintf(warnings + n, sizeof warnings - n, "%s\n", msg);
}

/* A context with the tuning cache `path` ("" for none) whose warnings land
 * in `warnings`. */
static dynb_ctx *cache_ctx(const char *path) {
  dynb_ctx_desc d = tu_ctx_desc();
  d.tune_cache = path;
  d.log_fn = capture;
  warnings[0] = 0;
  return tu_ctx_create(&d);
}

static char tmp_dir[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* A fresh folder per test, removed with everything in it afterwards. */
static int make_dir(void **state) {
  (void)state;
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/dynb-tune-XXXXXX");
  return mkdtemp(tmp_dir) ? 0 : -1;
}
static int remove_dir(void **state) {
  (void)state;
  return nftw(tmp_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}
static const char *temp_dir(void) { return tmp_dir; }

static void write_file(const char *path, const char *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(bytes, 1, n, f), n);
  fclose(f);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

static void assert_value(dynb_ctx *ctx, const char *key, const char *want) {
  char val[DYNB__TUNE_MAX];
  if (!dynb__tune_get(ctx, key, val, sizeof val)) fail_msg("%s is missing", key);
  assert_string_equal(val, want);
}

static void entries_round_trip_and_other_devices_stay(void **state) {
  (void)state;
  char path[128];
  snprintf(path, sizeof path, "%s/a/b/tune.txt", temp_dir());
  dynb_ctx *ctx = cache_ctx(path);
  assert_int_equal(ctx->ntune, 0);
  assert_string_equal(warnings, ""); /* a missing file is no news */
  TU_OK(ctx, dynb__tune_put(ctx, "conv.fwd.f32.c16.h28w28.n64", "direct"));
  TU_OK(ctx, dynb__tune_put(ctx, "a.b", "x y z"));
  TU_OK(ctx, dynb__tune_put(ctx, "a.b", "x y z!"));
  assert_value(ctx, "a.b", "x y z!");
  char small[6];
  assert_false(dynb__tune_get(ctx, "conv.fwd.f32.c16.h28w28.n64", small, sizeof small));
  assert_false(dynb__tune_get(ctx, "absent", small, sizeof small));
  TU_OK(ctx, dynb__tune_save(ctx)); /* creates a/b */
  dynb_ctx_free(ctx);

  /* Another device's section, as another machine or card would leave it. */
  const char *other = "[Other | 1 | card | 2 | CLBlast 1.5.3]\nk = v\n";
  /* As large as read_text's buffer, so the copy is never cut short. */
  static char text[(1 << 16) + 64];
  snprintf(text, sizeof text, "%s%s", read_text(path), other);
  write_file(path, text, strlen(text));
  ctx = cache_ctx(path);
  assert_string_equal(warnings, "");
  assert_int_equal(ctx->ntune, 2);
  assert_value(ctx, "conv.fwd.f32.c16.h28w28.n64", "direct");
  assert_false(dynb__tune_get(ctx, "k", small, sizeof small));
  TU_OK(ctx, dynb__tune_put(ctx, "a.b", "changed"));
  TU_OK(ctx, dynb__tune_save(ctx));
  dynb_ctx_free(ctx);
  const char *saved = read_text(path);
  assert_non_null(strstr(saved, other));
  assert_non_null(strstr(saved, "a.b = changed\n"));
  assert_null(strstr(saved, "x y z"));
  ctx = cache_ctx(path);
  assert_value(ctx, "a.b", "changed");
  dynb__tune_remove_prefix(ctx, "a.");
  assert_int_equal(ctx->ntune, 1);
  dynb_ctx_free(ctx);
}

/* Each malformed line is reported as "file:line" and skipped; the lines
 * around it still count. */
static void malformed_lines_are_reported_and_skipped(void **state) {
  (void)state;
  dynb_ctx *ctx = cache_ctx("");
  char id[1024];
  snprintf(id, sizeof id, "%s", ctx->tune_id);
  dynb_ctx_free(ctx);
  char long_value[700];
  memset(long_value, 'x', sizeof long_value - 1);
  long_value[sizeof long_value - 1] = 0;
  char text[8192];
  int n = snprintf(text, sizeof text,
                   "# comment\n"              /* 1 */
                   "orphan = 1\n"             /* 2: before any section */
                   "[%s]\n"                   /* 3 */
                   "good.one = 1\n"           /* 4 */
                   "no equals sign\n"         /* 5 */
                   "bad key = 2\n"            /* 6 */
                   "[unterminated\n"          /* 7 */
                   "empty.value =\n"          /* 8 */
                   "ctl = \x01 bell\n"        /* 9 */
                   "[%s]\n"                   /* 10 */
                   "nul.byte = a_b\n"         /* 11: the '_' becomes a NUL */
                   "good.two = 2\n"           /* 12 */
                   "long.value = %s\n"        /* 13 */
                   "  spaced.key\t=  padded value \r\n" /* 14 */
                   "[]\n"                     /* 15 */
                   "last.line = no newline",  /* 16 */
                   id, id, long_value);
  strstr(text, "a_b")[1] = 0;
  char path[128];
  snprintf(path, sizeof path, "%s/tune.txt", temp_dir());
  write_file(path, text, (size_t)n);
  ctx = cache_ctx(path);
  const int bad[] = {2, 5, 6, 7, 8, 9, 11, 13, 15};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char where[160];
    snprintf(where, sizeof where, "%s:%d: ", path, bad[i]);
    if (!strstr(warnings, where)) fail_msg("no warning for line %d in:\n%s", bad[i], warnings);
  }
  int lines = 0;
  for (const char *p = warnings; (p = strchr(p, '\n')); p++) lines++;
  assert_int_equal(lines, 9);
  assert_int_equal(ctx->ntune, 4);
  assert_value(ctx, "good.one", "1");
  assert_value(ctx, "good.two", "2");
  assert_value(ctx, "spaced.key", "padded value");
  assert_value(ctx, "last.line", "no newline");
  dynb_ctx_free(ctx);
}

static void unusable_files_are_ignored(void **state) {
  (void)state;
  dynb_ctx *ctx = cache_ctx(temp_dir()); /* a folder, not a file */
  assert_non_null(strstr(warnings, temp_dir()));
  assert_int_equal(ctx->ntune, 0);
  dynb_ctx_free(ctx);
  char path[128];
  snprintf(path, sizeof path, "%s/big.txt", temp_dir());
  size_t n = ((size_t)1 << 20) + 1;
  char *big = malloc(n);
  memset(big, '#', n);
  write_file(path, big, n);
  free(big);
  ctx = cache_ctx(path);
  assert_non_null(strstr(warnings, "larger than 1 MiB"));
  dynb_ctx_free(ctx);
}

static void keys_and_values_are_checked(void **state) {
  (void)state;
  dynb_ctx *ctx = cache_ctx("");
  TU_EXPECT_STATUS(ctx, dynb__tune_put(ctx, "bad key", "v"), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__tune_put(ctx, "", "v"), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__tune_put(ctx, "k", "two\nlines"), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__tune_put(ctx, "k", " padded"), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__tune_put(ctx, "k", ""), DYNB_STATUS_INVALID_ARGUMENT);
  TU_OK(ctx, dynb__tune_put(ctx, "k", "v"));
  /* tune_cache "" means no file, so there is nothing to save into. */
  TU_EXPECT_STATUS(ctx, dynb__tune_save(ctx), DYNB_STATUS_INVALID_ARGUMENT);
  dynb_ctx_free(ctx);
}

static void candidates_start_with_no_override(void **state) {
  (void)state;
  dynb_ctx *ctx = cache_ctx("");
  const char *names[32];
  size_t n = dynb__gemm_candidates(ctx, names, 32);
  assert_true(n >= 2 && n <= 32);
  assert_string_equal(names[0], "clblast");
  bool builtin = false;
  for (size_t i = 0; i < n; i++) {
    dynb__gemm_config c;
    TU_OK(ctx, dynb__gemm_config_find(ctx, names[i], &c));
    /* Never the 2-D register tiling: wrong products on PoCL. */
    assert_true(!c.has_xgemm || c.xgemm[0] == 0);
    builtin |= strcmp(names[i], dynb__gemm_builtin(ctx, DYNB_F32)) == 0;
  }
  assert_true(builtin);
  dynb__gemm_config c;
  TU_EXPECT_STATUS(ctx, dynb__gemm_config_find(ctx, "no-such", &c), DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "i_m32n32"));
  /* Without a cache the built-in set is in force. */
  assert_string_equal(ctx->gemm_config[DYNB_F32], dynb__gemm_builtin(ctx, DYNB_F32));
  dynb_ctx_free(ctx);
}

/* A tuned configuration and its formulations are applied at creation; a
 * malformed one falls back to the built-in parameters with a warning. */
static void cached_configuration_is_applied(void **state) {
  (void)state;
  char path[128];
  snprintf(path, sizeof path, "%s/tune.txt", temp_dir());
  dynb_ctx *ctx = cache_ctx(path);
  dynb__gemm_config c;
  TU_OK(ctx, dynb__gemm_config_find(ctx, "i_m64n32", &c));
  TU_OK(ctx, dynb__gemm_config_put(ctx, DYNB_F32, &c));
  TU_OK(ctx, dynb__tune_put(ctx, "gemm.f32.form.nt.64x576x50176", "col (12.5 GFLOP/s)"));
  TU_OK(ctx, dynb__tune_put(ctx, "gemm.f32.form.tn.72x3x8", "row"));
  TU_OK(ctx, dynb__tune_put(ctx, "gemm.f32.form.xx.1x2x3", "col"));
  TU_OK(ctx, dynb__tune_put(ctx, "gemm.f32.form.nn.1x-2x3", "col"));
  TU_OK(ctx, dynb__tune_put(ctx, "gemm.f32.form.nn.1x2x3", "sideways"));
  TU_OK(ctx, dynb__tune_save(ctx));
  dynb_ctx_free(ctx);

  ctx = cache_ctx(path);
  assert_string_equal(ctx->gemm_config[DYNB_F32], "i_m64n32");
  assert_int_equal(ctx->ngemm_forms, 2);
  const dynb__gemm_shape *f = &ctx->gemm_forms[0];
  if (f->m != 64) f = &ctx->gemm_forms[1];
  assert_true(f->dtype == DYNB_F32 && !f->trans_a && f->trans_b && f->m == 64 && f->n == 576 &&
              f->k == 50176 && f->form == DYNB__GEMM_COL);
  assert_non_null(strstr(warnings, "gemm.f32.form.xx.1x2x3"));
  assert_non_null(strstr(warnings, "gemm.f32.form.nn.1x-2x3"));
  assert_non_null(strstr(warnings, "sideways"));
  TU_OK(ctx, dynb__tune_put(ctx, "gemm.f32.xgemm", "GEMMK=0 KREG=1"));
  TU_OK(ctx, dynb__tune_save(ctx));
  dynb_ctx_free(ctx);

  ctx = cache_ctx(path);
  assert_non_null(strstr(warnings, "gemm.f32.xgemm: a parameter is missing"));
  assert_string_equal(ctx->gemm_config[DYNB_F32], dynb__gemm_builtin(ctx, DYNB_F32));
  assert_int_equal(ctx->ngemm_forms, 0);
  assert_int_equal(dynb_ctx_last_status(ctx), DYNB_OK);
  dynb_ctx_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(entries_round_trip_and_other_devices_stay, make_dir, remove_dir),
      cmocka_unit_test_setup_teardown(malformed_lines_are_reported_and_skipped, make_dir, remove_dir),
      cmocka_unit_test_setup_teardown(unusable_files_are_ignored, make_dir, remove_dir),
      cmocka_unit_test_setup_teardown(keys_and_values_are_checked, make_dir, remove_dir),
      cmocka_unit_test_setup_teardown(candidates_start_with_no_override, make_dir, remove_dir),
      cmocka_unit_test_setup_teardown(cached_configuration_is_applied, make_dir, remove_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
