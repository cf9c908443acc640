/* The runtime: status names, devices, contexts (own and the caller's),
 * host allocations, tensors, program building and the binary cache. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "runtime/kernels_embedded.h"

static void status_names_cover_the_map(void **state) {
  (void)state;
#define CHECK_NAME(name, value, msg)                                              \
  assert_string_equal(dynb_status_name(DYNB_STATUS_##name), "DYNB_STATUS_" #name); \
  assert_string_equal(dynb_status_message(DYNB_STATUS_##name), msg);
  DYNB_STATUS_MAP(CHECK_NAME)
#undef CHECK_NAME
  assert_string_equal(dynb_status_name((dynb_status)99), "DYNB_STATUS_UNKNOWN");
  assert_int_equal(DYNB_OK, 0);
  assert_int_equal(dynb_version_number(), DYNB_VERSION_NUMBER);
  assert_string_equal(dynb_version_string(), DYNB_VERSION_STRING);
}

static void devices_are_listed_and_found(void **state) {
  (void)state;
  size_t count = 0;
  dynb_status st = dynb_device_list(NULL, 0, &count);
  if (st == DYNB_STATUS_NO_DEVICE) skip();
  assert_int_equal(st, DYNB_OK);
  assert_true(count >= 1);
  dynb_device_info *info = calloc(count, sizeof *info);
  assert_int_equal(dynb_device_list(info, count, &count), DYNB_OK);
  int defaults = 0;
  for (size_t i = 0; i < count; i++) {
    assert_int_equal(info[i].index, i);
    assert_true(strlen(info[i].device_name) > 0);
    defaults += info[i].is_default;
  }
  assert_int_equal(defaults, 1);
  uint32_t idx = 99;
  assert_int_equal(dynb_device_find(NULL, &idx), DYNB_OK);
  assert_true(info[idx].is_default);
  assert_int_equal(dynb_device_find("0", &idx), DYNB_OK);
  assert_int_equal(idx, 0);
  /* A name substring, in another case than the driver reports it. */
  char sub[8] = {0};
  for (int i = 0; i < 4 && info[0].device_name[i]; i++) {
    char ch = info[0].device_name[i];
    sub[i] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
  }
  assert_int_equal(dynb_device_find(sub, &idx), DYNB_OK);
  assert_int_equal(dynb_device_find("4000000000", &idx), DYNB_STATUS_NO_DEVICE);
  assert_int_equal(dynb_device_find("no-such-device-xyz", &idx), DYNB_STATUS_NO_DEVICE);
  assert_int_equal(dynb_device_list(NULL, 0, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  free(info);
}

static void bad_selector_explains_itself(void **state) {
  (void)state;
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.device = "no-such-device-xyz";
  d.cache_dir = "";
  dynb_ctx *ctx = NULL;
  assert_int_equal(dynb_ctx_create(&d, &ctx), DYNB_STATUS_NO_DEVICE);
  assert_non_null(ctx); /* like sqlite3_open: a handle to read the error from */
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "no-such-device-xyz"));
  assert_int_equal(dynb_ctx_last_status(ctx), DYNB_STATUS_NO_DEVICE);
  dynb_ctx_free(ctx);
  d = dynb_ctx_desc_default();
  d.struct_size = 3;
  assert_int_equal(dynb_ctx_create(&d, &ctx), DYNB_STATUS_INVALID_ARGUMENT);
  assert_null(ctx);
  assert_int_equal(dynb_ctx_create(NULL, NULL), DYNB_STATUS_INVALID_ARGUMENT);
  dynb_ctx_free(NULL);
  assert_int_equal(dynb_ctx_last_status(NULL), DYNB_STATUS_MISUSE);
}

/* Counts live blocks so the test can prove the context frees all it took. */
typedef struct counter {
  long live, total;
} counter;
static void *count_alloc(void *user, size_t n) {
  counter *c = user;
  c->live++, c->total++;
  return malloc(n);
}
static void count_free(void *user, void *p) {
  counter *c = user;
  c->live--;
  free(p);
}

typedef struct log_seen {
  int count;
} log_seen;
static void log_cb(void *user, dynb_log_level level, const char *msg) {
  (void)level;
  assert_non_null(msg);
  ((log_seen *)user)->count++;
}

static void allocator_and_log_hooks_are_used(void **state) {
  (void)state;
  counter c = {0, 0};
  log_seen seen = {0};
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.device = getenv("DYNB_TEST_DEVICE");
  d.cache_dir = "";
  d.allocator = (dynb_allocator){count_alloc, count_free, &c};
  d.log_fn = log_cb;
  d.log_user = &seen;
  dynb_ctx *ctx = NULL;
  dynb_status st = dynb_ctx_create(&d, &ctx);
  if (st == DYNB_STATUS_NO_DEVICE) {
    dynb_ctx_free(ctx);
    skip();
  }
  assert_int_equal(st, DYNB_OK);
  assert_string_equal(dynb_ctx_last_error(ctx), "no error");
  /* Building a program and its kernel table allocates through the hook. */
  cl_kernel k;
  long before = c.total;
  TU_OK(ctx, dynb__kernel(ctx, "rk", "dynb_rk_combine", DYNB_F32, &k));
  assert_true(c.total > before);
  assert_true(seen.count > 0);
  dynb_device_info info;
  TU_OK(ctx, dynb_ctx_device_info(ctx, &info));
  assert_true(info.struct_size == sizeof info);
  dynb_ctx_free(ctx);
  assert_int_equal(c.live, 0);
  /* An allocator with only one of its two functions is refused. */
  d.allocator.free_fn = NULL;
  assert_int_equal(dynb_ctx_create(&d, &ctx), DYNB_STATUS_INVALID_ARGUMENT);
}

/* A context on the caller's own OpenCL context and queue runs ops there and
 * leaves the caller's objects alive and balanced. */
static void wraps_the_callers_queue(void **state) {
  (void)state;
  dynb_ctx *own = tu_ctx();
  cl_device_id dev = own->device;
  cl_int e;
  cl_context cctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
  assert_int_equal(e, CL_SUCCESS);
  cl_command_queue q = clCreateCommandQueue(cctx, dev, 0, &e);
  assert_int_equal(e, CL_SUCCESS);
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.cache_dir = getenv("DYNB_TEST_CACHE_DIR");
  dynb_ctx *ctx = NULL;
  TU_OK(ctx, dynb_ctx_create_cl(&d, cctx, q, &ctx));
  assert_ptr_equal(dynb_ctx_cl_queue(ctx), q);
  assert_ptr_equal(dynb_ctx_cl_context(ctx), cctx);
  int64_t p = 3, kd[2] = {1, 3}, one = 1;
  const double y[3] = {1, 2, 3}, k[3] = {10, 20, 30}, coef[1] = {0.5};
  dynb__tensor ty = tu_upload(ctx, DYNB_F32, 1, &p, y), tk = tu_upload(ctx, DYNB_F32, 2, kd, k);
  dynb__tensor tc = tu_upload(ctx, DYNB_F32, 1, &one, coef);
  TU_OK(ctx, dynb__rk_combine(ctx, &ty, &tk, &tc, &ty));
  double out[3];
  tu_download(ctx, &ty, out);
  assert_true(out[0] == 6 && out[1] == 12 && out[2] == 18);
  dynb__tensor_release(&ty), dynb__tensor_release(&tk), dynb__tensor_release(&tc);
  dynb_ctx_free(ctx);
  /* The caller's queue and context outlive ours and still work. (Reference
   * counts are not checked: the OpenCL spec calls them stale on purpose,
   * and PoCL's worker threads hold short-lived references of their own.) */
  cl_mem probe = clCreateBuffer(cctx, CL_MEM_READ_WRITE, 16, NULL, &e);
  assert_int_equal(e, CL_SUCCESS);
  float zero = 0;
  assert_int_equal(clEnqueueFillBuffer(q, probe, &zero, sizeof zero, 0, 16, 0, NULL, NULL),
                   CL_SUCCESS);
  assert_int_equal(clFinish(q), CL_SUCCESS);
  clReleaseMemObject(probe);
  /* A queue of another context is refused. */
  assert_int_equal(dynb_ctx_create_cl(&d, own->context, q, &ctx), DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "does not belong"));
  dynb_ctx_free(ctx);
  clReleaseCommandQueue(q);
  clReleaseContext(cctx);
  dynb_ctx_free(own);
}

static void tensors_check_their_shapes(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb__tensor t;
  int64_t bad[2] = {3, 0}, huge[3] = {1 << 20, 1 << 20, 1 << 20}, ok[2] = {2, 3};
  TU_EXPECT_STATUS(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 2, bad, &t), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 3, huge, &t), DYNB_STATUS_SIZE_OVERFLOW);
  TU_EXPECT_STATUS(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 5, ok, &t), DYNB_STATUS_INVALID_ARGUMENT);
  TU_OK(ctx, dynb__tensor_alloc(ctx, DYNB_F32, 2, ok, &t));
  assert_int_equal(t.cap_bytes, 24);
  TU_OK(ctx, dynb__tensor_check(ctx, &t, "t", DYNB_F32, 2));
  TU_EXPECT_STATUS(ctx, dynb__tensor_check(ctx, &t, "t", DYNB_F64, 2), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__tensor_check(ctx, &t, "t", DYNB_F32, 3), DYNB_STATUS_SHAPE_MISMATCH);
  dynb__tensor v = t;
  v.dims[1] = 4; /* one row too long for the buffer */
  TU_EXPECT_STATUS(ctx, dynb__tensor_check(ctx, &v, "v", DYNB_F32, 2), DYNB_STATUS_BUFFER_TOO_SMALL);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "v:"));
  v = dynb__tensor_view(t.mem, 3, DYNB_F32, 1, (int64_t[]){3});
  TU_OK(ctx, dynb__tensor_check(ctx, &v, "v", DYNB_F32, 1)); /* exactly fits */
  v.offset = SIZE_MAX / 2;
  TU_EXPECT_STATUS(ctx, dynb__tensor_check(ctx, &v, "v", DYNB_F32, 1), DYNB_STATUS_SIZE_OVERFLOW);
  /* zero fills only the view */
  const double vals[6] = {1, 2, 3, 4, 5, 6};
  tu_write(ctx, &t, vals);
  v.offset = 2;
  v.dims[0] = 2;
  TU_OK(ctx, dynb__tensor_zero(ctx, &v));
  double got[6];
  tu_download(ctx, &t, got);
  assert_true(got[1] == 2 && got[2] == 0 && got[3] == 0 && got[4] == 5);
  dynb__tensor_release(&t);
  assert_null(t.mem);
  /* double on a device without fp64 is refused before any build */
  uint32_t keep = ctx->info.has_fp64;
  ctx->info.has_fp64 = 0;
  cl_kernel k;
  TU_EXPECT_STATUS(ctx, dynb__kernel(ctx, "rk", "dynb_rk_combine", DYNB_F64, &k),
                   DYNB_STATUS_UNSUPPORTED);
  ctx->info.has_fp64 = keep;
  TU_EXPECT_STATUS(ctx, dynb__kernel(ctx, "nope", "x", DYNB_F32, &k), DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__kernel(ctx, "rk", "dynb_nope", DYNB_F32, &k),
                   DYNB_STATUS_INVALID_ARGUMENT);
  TU_EXPECT_STATUS(ctx, dynb__kernel(ctx, "rk", "dynb_rk_combine", DYNB_I32, &k),
                   DYNB_STATUS_INVALID_ARGUMENT);
  dynb_ctx_free(ctx);
}

/* A released buffer is gone once the queue is done with it, while the
 * context lives on: the kernels the context caches do not keep it. Mesa's
 * rusticl keeps a buffer alive for as long as a kernel holds it as an
 * argument, so on rusticl this fails unless every launch drops its buffer
 * arguments (src/runtime/launch.c); PoCL never holds them. Both a kernel
 * that ran and one whose launch failed after a buffer was set count. */
static void released_buffers_are_not_held_by_kernels(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  dynb__ctx_inject_fault(ctx, DYNB__FAULT_ALLOC, 0); /* a disarmed fault: counts buffers */
  int64_t dims[2] = {3, 5};
  const double x[15] = {-1, 2, -3, 4, -5, 6, -7, 8, -9, 10, -11, 12, -13, 14, -15};
  dynb__tensor a = tu_upload(ctx, DYNB_F32, 2, dims, x), b = tu_upload(ctx, DYNB_F32, 2, dims, NULL);
  TU_OK(ctx, dynb__act_forward(ctx, DYNB_ACT_RELU, &a, &b));
  double y[15];
  tu_download(ctx, &b, y);
  assert_true(y[0] == 0 && y[1] == 2 && y[14] == 0);
  dynb__launch l;
  TU_OK(ctx, dynb__launch_begin(&l, ctx, "act", "dynb_act_backward", DYNB_F32));
  dynb__arg_int(&l, 15);
  dynb__arg_int(&l, DYNB_ACT_RELU);
  dynb__arg_real(&l, 0);
  dynb__arg_tensor(&l, &a);                 /* x: held from here */
  dynb__arg_local(&l, sizeof(float));       /* dy is a buffer: refused */
  TU_EXPECT_STATUS(ctx, dynb__launch_1d(&l, 15), DYNB_STATUS_OPENCL_ERROR);
  assert_int_equal(dynb__ctx_live_buffers(ctx), 2);
  dynb__tensor_release(&a);
  dynb__tensor_release(&b);
  assert_int_equal(tu_live_buffers_settled(ctx), 0);
  dynb_ctx_free(ctx);
}

/* Every kernel family builds for f32 on the test device, fp64 or not (f32
 * never needs cl_khr_fp64; rusticl's llvmpipe has none), and for f64 exactly
 * where the device has fp64; elsewhere f64 is refused before any build. */
static void every_family_builds_for_the_reals_the_device_has(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  assert_true(dynb__kernel_source_count > 0);
  for (int i = 0; i < dynb__kernel_source_count; i++) {
    const dynb__kernel_source *src = &dynb__kernel_sources[i];
    for (int r = 0; r < 2; r++) {
      dynb_dtype real = r ? DYNB_F64 : DYNB_F32;
      cl_program p = NULL;
      if (real == DYNB_F64 && !ctx->info.has_fp64) {
        TU_EXPECT_STATUS(ctx, dynb__program_build(ctx, src->family, src->source, real, &p),
                         DYNB_STATUS_UNSUPPORTED);
        continue;
      }
      TU_OK(ctx, dynb__program_build(ctx, src->family, src->source, real, &p));
      clReleaseProgram(p);
    }
  }
  printf("%d kernel families built on %s (f64: %s)\n", dynb__kernel_source_count,
         ctx->info.device_name, ctx->info.has_fp64 ? "yes" : "no device support");
  dynb_ctx_free(ctx);
}

static void build_errors_carry_the_build_log(void **state) {
  (void)state;
  dynb_ctx *ctx = tu_ctx();
  cl_program p = NULL;
  TU_EXPECT_STATUS(ctx,
                   dynb__program_build(ctx, "broken", "__kernel void f(__global real *x) { x[0] = undeclared_name; }",
                                       DYNB_F32, &p),
                   DYNB_STATUS_BUILD_FAILED);
  assert_null(p);
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "undeclared_name"));
  assert_non_null(strstr(dynb_ctx_last_error(ctx), "broken"));
  dynb_ctx_free(ctx);
}

/* ---- the binary cache ---- */

static char cache_dir[256];
/* This binary, re-run as the child processes of the concurrency test
 * (from argv[0]: /proc/self/exe would name valgrind under valgrind). */
static char self_path[4096];

static void make_cache_dir(void) {
  snprintf(cache_dir, sizeof cache_dir, "/tmp/dynb-cache-test-%ld", (long)getpid());
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", cache_dir);
  assert_int_equal(system(cmd), 0);
}

static void remove_cache_dir(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", cache_dir);
  assert_int_equal(system(cmd), 0);
}

/* Lists cache entries: count of .bin files, count of anything else. */
static void cache_listing(int *bins, int *others, char *first_bin, size_t cap) {
  *bins = *others = 0;
  DIR *d = opendir(cache_dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    size_t n = strlen(e->d_name);
    if (n > 4 && strcmp(e->d_name + n - 4, ".bin") == 0) {
      if (*bins == 0 && first_bin) snprintf(first_bin, cap, "%s/%s", cache_dir, e->d_name);
      (*bins)++;
    } else {
      (*others)++;
    }
  }
  closedir(d);
}

/* Builds one kernel in a fresh context on cache_dir and runs it. */
static int use_kernel_once(void) {
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.device = getenv("DYNB_TEST_DEVICE");
  d.cache_dir = cache_dir;
  dynb_ctx *ctx = NULL;
  if (dynb_ctx_create(&d, &ctx) != DYNB_OK) return 1;
  int64_t p = 2, kd[2] = {1, 2}, one = 1;
  dynb__tensor y, k, c;
  int bad = dynb__tensor_alloc(ctx, DYNB_F32, 1, &p, &y) || dynb__tensor_alloc(ctx, DYNB_F32, 2, kd, &k) ||
            dynb__tensor_alloc(ctx, DYNB_F32, 1, &one, &c);
  const float yv[2] = {1, 2}, kv[2] = {3, 4}, cv[1] = {2};
  float out[2] = {0, 0};
  bad = bad || dynb__tensor_write(ctx, &y, yv) || dynb__tensor_write(ctx, &k, kv) ||
        dynb__tensor_write(ctx, &c, cv) || dynb__rk_combine(ctx, &y, &k, &c, &y) ||
        dynb__tensor_read(ctx, &y, out);
  bad = bad || out[0] != 7 || out[1] != 10;
  dynb__tensor_release(&y), dynb__tensor_release(&k), dynb__tensor_release(&c);
  dynb_ctx_free(ctx);
  return bad;
}

static void cache_entry_is_written_and_reused(void **state) {
  (void)state;
  make_cache_dir();
  assert_int_equal(use_kernel_once(), 0);
  int bins, others;
  char path[512];
  cache_listing(&bins, &others, path, sizeof path);
  assert_int_equal(bins, 1);
  assert_int_equal(others, 0);
  struct stat st1;
  assert_int_equal(stat(path, &st1), 0);
  assert_int_equal(use_kernel_once(), 0); /* served from the entry */
  cache_listing(&bins, &others, NULL, 0);
  assert_int_equal(bins, 1);
  remove_cache_dir();
}

/* Corrupt entries of every kind are detected (or fail to load) and rebuilt. */
static void corrupt_cache_entries_are_rebuilt(void **state) {
  (void)state;
  make_cache_dir();
  assert_int_equal(use_kernel_once(), 0);
  int bins, others;
  char path[512];
  cache_listing(&bins, &others, path, sizeof path);
  struct stat good;
  assert_int_equal(stat(path, &good), 0);
  for (int mode = 0; mode < 4; mode++) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    if (mode == 0) { /* truncated in the middle */
      assert_int_equal(ftruncate(fileno(f), good.st_size / 2), 0);
    } else if (mode == 1) { /* one payload byte flipped */
      fseek(f, good.st_size / 2, SEEK_SET);
      int ch = fgetc(f);
      fseek(f, good.st_size / 2, SEEK_SET);
      fputc(ch ^ 0x40, f);
    } else if (mode == 2) { /* absurd length in the header */
      fseek(f, 8, SEEK_SET);
      fwrite("\xff\xff\xff\xff\xff\xff\xff\x7f", 1, 8, f);
    } else { /* empty file */
      assert_int_equal(ftruncate(fileno(f), 0), 0);
    }
    fclose(f);
    assert_int_equal(use_kernel_once(), 0);
    struct stat now;
    assert_int_equal(stat(path, &now), 0);
    assert_int_equal(now.st_size, good.st_size); /* rewritten whole */
  }
  remove_cache_dir();
}

/* Two processes starting at once on an empty cache both succeed and leave
 * exactly one valid entry and no temporary files. */
static void concurrent_starts_are_safe(void **state) {
  (void)state;
  make_cache_dir();
  for (int round = 0; round < 3; round++) {
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
      kids[i] = fork();
      assert_true(kids[i] >= 0);
      if (kids[i] == 0) {
        /* A fresh program image: PoCL's threads do not survive fork. */
        execl(self_path, "test_runtime", "--use-kernel-once", cache_dir, (char *)NULL);
        _exit(127);
      }
    }
    for (int i = 0; i < 2; i++) {
      int status = 0;
      assert_int_equal(waitpid(kids[i], &status, 0), kids[i]);
      assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    int bins, others;
    cache_listing(&bins, &others, NULL, 0);
    assert_int_equal(bins, 1);
    assert_int_equal(others, 0);
  }
  assert_int_equal(use_kernel_once(), 0);
  remove_cache_dir();
}

int main(int argc, char **argv) {
  /* The concurrency test runs this binary as its child processes. */
  if (argc == 3 && strcmp(argv[1], "--use-kernel-once") == 0) {
    snprintf(cache_dir, sizeof cache_dir, "%s", argv[2]);
    return use_kernel_once();
  }
  if (!realpath(argv[0], self_path)) snprintf(self_path, sizeof self_path, "%s", argv[0]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(status_names_cover_the_map),
      cmocka_unit_test(devices_are_listed_and_found),
      cmocka_unit_test(bad_selector_explains_itself),
      cmocka_unit_test(allocator_and_log_hooks_are_used),
      cmocka_unit_test(wraps_the_callers_queue),
      cmocka_unit_test(tensors_check_their_shapes),
      cmocka_unit_test(released_buffers_are_not_held_by_kernels),
      cmocka_unit_test(every_family_builds_for_the_reals_the_device_has),
      cmocka_unit_test(build_errors_carry_the_build_log),
      cmocka_unit_test(cache_entry_is_written_and_reused),
      cmocka_unit_test(corrupt_cache_entries_are_rebuilt),
      cmocka_unit_test(concurrent_starts_are_safe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
