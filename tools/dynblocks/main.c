/* dynblocks: the command-line tool. Thin: it parses flags and calls the
 * library; all printing happens here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "runtime/runtime.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: dynblocks COMMAND [FLAGS]\n"
          "\n"
          "commands:\n"
          "  devices    list OpenCL platforms and devices; mark the one that would be used\n"
          "  train      train a network (default: a small net on Fashion-MNIST)\n"
          "  eval       loss and accuracy of a model file on a data set split\n"
          "  predict    eval-mode logits of a model for a batch file\n"
          "  grad       train-mode loss and gradients of a model for a batch file\n"
          "  bench      training and inference throughput and peak device memory\n"
          "  tune       measure CLBlast GEMM parameters for a spec's shapes; cache the best\n"
          "  fold       fold batch norms into convolutions for inference\n"
          "  refine     re-discretise a model: more (or other) time steps, controls interpolated\n"
          "  selftest   every kernel and route against its plain-C reference on this device\n"
          "  version    print the library version\n"
          "\n"
          "Every command takes --help. Device selection: --device INDEX|NAME or the\n"
          "environment variable DYNBLOCKS_DEVICE; the default is the first GPU, else the\n"
          "first device of any kind. Every command applies the tuning cache of\n"
          "`dynblocks tune`: DYNBLOCKS_TUNE_CACHE, else $XDG_CACHE_HOME/dynblocks/tune.txt\n"
          "(~/.cache/dynblocks/tune.txt).\n");
}

/* ---- shared helpers ---------------------------------------------------------------- */

int cli_report(const cli_command *c, cli_result r, const char *err) {
  if (r == CLI_HELP) {
    printf("usage: dynblocks %s %s\n\nflags:\n", c->name, c->usage);
    for (int f = 0; f < c->nflags; f++) printf("  %-16s %s\n", c->flags[f].name, c->flags[f].help);
    return 0;
  }
  if (r == CLI_ERROR) {
    fprintf(stderr, "dynblocks %s: %s\n", c->name, err);
    return 2;
  }
  return -1;
}

/* --device wins over DYNBLOCKS_DEVICE; NULL means the library's default. */
static const char *device_selector(const char *flag) {
  if (flag) return flag;
  const char *env = getenv("DYNBLOCKS_DEVICE");
  return env && env[0] ? env : NULL;
}

/* DYNBLOCKS_LOG=info (or debug) shows what the library reports below
 * warnings, e.g. the timed choice of each convolution's route. */
static void log_to_stderr(void *user, dynb_log_level level, const char *msg) {
  const dynb_log_level *min = user;
  if (level >= *min) fprintf(stderr, "dynblocks: %s\n", msg);
}

static dynb_log_level log_threshold(void) {
  const char *env = getenv("DYNBLOCKS_LOG");
  if (env && strcmp(env, "debug") == 0) return DYNB_LOG_DEBUG;
  if (env && strcmp(env, "info") == 0) return DYNB_LOG_INFO;
  return DYNB_LOG_WARN;
}

/* DYNBLOCKS_CONV=gemm|row|wide|wide2 forces one convolution route; the default
 * (auto) times both once per layer shape. */
static bool conv_policy(const char *cmd, dynb_ctx *ctx) {
  const char *env = getenv("DYNBLOCKS_CONV");
  if (!env || !env[0] || strcmp(env, "auto") == 0) return true;
  if (strcmp(env, "gemm") == 0) {
    ctx->conv_policy = DYNB__CONV_GEMM;
    return true;
  }
  static const char *const names[] = {"row", "wide", "wide2"};
  static const dynb__conv_policy policies[] = {DYNB__CONV_ROW, DYNB__CONV_WIDE, DYNB__CONV_WIDE2};
  for (int i = 0; i < 3; i++)
    if (strcmp(env, names[i]) == 0) {
      ctx->conv_policy = policies[i];
      return true;
    }
  fprintf(stderr,
          "dynblocks %s: DYNBLOCKS_CONV is '%s'; expected auto, gemm, row, wide or wide2\n", cmd,
          env);
  return false;
}

const char *cli_tune_cache(void) {
  const char *env = getenv("DYNBLOCKS_TUNE_CACHE");
  return env && env[0] ? env : NULL;
}

dynb_ctx *cli_context(const char *cmd, const char *device) {
  return cli_context_ex(cmd, device, cli_tune_cache(), false);
}

dynb_ctx *cli_context_ex(const char *cmd, const char *device, const char *tune_cache, bool plain) {
  dynb_ctx_desc d = dynb_ctx_desc_default();
  d.device = device_selector(device);
  d.tune_cache = tune_cache;
  static dynb_log_level threshold;
  threshold = log_threshold();
  d.log_fn = log_to_stderr;
  d.log_user = &threshold;
  dynb_ctx *ctx = NULL;
  if ((plain ? dynb__ctx_create_plain(&d, &ctx) : dynb_ctx_create(&d, &ctx)) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, ctx ? dynb_ctx_last_error(ctx) : "out of memory");
    dynb_ctx_free(ctx);
    return NULL;
  }
  if (!conv_policy(cmd, ctx)) {
    dynb_ctx_free(ctx);
    return NULL;
  }
  return ctx;
}

int cli_fail(const char *cmd, dynb_ctx *ctx) {
  fprintf(stderr, "dynblocks %s: %s\n", cmd, dynb_ctx_last_error(ctx));
  return 1;
}

char *cli_read_text(const char *cmd, const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "dynblocks %s: %s: %s\n", cmd, path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 12, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
    if (n == cap) {
      if (cap >= (16u << 20)) {
        fprintf(stderr, "dynblocks %s: %s: larger than 16 MiB\n", cmd, path);
        free(buf), buf = NULL;
        break;
      }
      char *g = realloc(buf, cap * 2);
      if (!g) free(buf);
      buf = g, cap *= 2;
    }
  }
  fclose(f);
  /* NUL-terminated too (n < cap here: a full buffer grows before the next
   * read), for the public calls that take a C string. */
  if (buf) buf[n] = '\0', *len = n;
  return buf;
}

bool cli_read_spec(const char *cmd, const char *path, dynb__net_spec *spec) {
  size_t len;
  char *text = cli_read_text(cmd, path, &len), err[1024];
  if (!text) return false;
  dynb_status st = dynb__spec_parse(text, len, path, spec, err, sizeof err);
  free(text);
  if (st != DYNB_OK) fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
  return st == DYNB_OK;
}

static int cmd_devices(int argc, char **argv) {
  devices_opts o;
  char err[512];
  int rc = cli_report(&cli_devices_command, cli_devices_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  const char *flag = o.device;
  size_t count = 0;
  dynb_status st = dynb_device_list(NULL, 0, &count);
  if (st != DYNB_OK || count == 0) {
    fprintf(stderr, "dynblocks devices: no OpenCL device found (%s); install an OpenCL driver "
                    "such as pocl-opencl-icd\n", dynb_status_message(st));
    return 1;
  }
  dynb_device_info *info = calloc(count, sizeof *info);
  if (!info) {
    fprintf(stderr, "dynblocks devices: out of memory\n");
    return 1;
  }
  size_t n = count;
  st = dynb_device_list(info, n, &count);
  if (count < n) n = count;
  const char *sel = device_selector(flag);
  uint32_t chosen = 0;
  dynb_status fst = dynb_device_find(sel, &chosen);
  for (size_t i = 0; st == DYNB_OK && i < n; i++) {
    const dynb_device_info *d = &info[i];
    const double gib = 1024.0 * 1024 * 1024;
    printf("%c %u  %-44s  %s  [%s]  %s, driver %s, %u CUs, %.1f GiB (buffers up to %.1f GiB), "
           "work-groups up to %u, %.0f KiB local%s\n",
           fst == DYNB_OK && chosen == d->index ? '*' : ' ', (unsigned)d->index, d->device_name,
           d->is_gpu ? "GPU" : "   ", d->platform_name, d->device_version, d->driver_version,
           (unsigned)d->compute_units, (double)d->global_mem_bytes / gib,
           (double)d->max_alloc_bytes / gib, (unsigned)d->max_work_group,
           (double)d->local_mem_bytes / 1024.0, d->has_fp64 ? ", fp64" : "");
  }
  free(info);
  if (fst != DYNB_OK) {
    fprintf(stderr, "dynblocks devices: no device matches '%s'\n", sel);
    return 1;
  }
  return st == DYNB_OK ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "devices") == 0) return cmd_devices(argc - 2, argv + 2);
  if (strcmp(cmd, "train") == 0) return cmd_train(argc - 2, argv + 2);
  if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 2, argv + 2);
  if (strcmp(cmd, "predict") == 0) return cmd_predict(argc - 2, argv + 2);
  if (strcmp(cmd, "grad") == 0) return cmd_grad(argc - 2, argv + 2);
  if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 2, argv + 2);
  if (strcmp(cmd, "fold") == 0) return cmd_fold(argc - 2, argv + 2);
  if (strcmp(cmd, "refine") == 0) return cmd_refine(argc - 2, argv + 2);
  if (strcmp(cmd, "tune") == 0) return cmd_tune(argc - 2, argv + 2);
  if (strcmp(cmd, "selftest") == 0) return cmd_selftest(argc - 2, argv + 2);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("dynblocks %s\n", dynb_version_string());
    return 0;
  }
  fprintf(stderr, "dynblocks: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return 2;
}
