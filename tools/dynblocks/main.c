/* dynblocks: the command-line tool. Thin: it parses flags and calls the
 * library; all printing happens here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynblocks/dynblocks.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: dynblocks COMMAND [FLAGS]\n"
          "\n"
          "commands:\n"
          "  devices    list OpenCL platforms and devices; mark the one that would be used\n"
          "  version    print the library version\n"
          "\n"
          "Every command takes --help. Device selection: --device INDEX|NAME or the\n"
          "environment variable DYNBLOCKS_DEVICE; the default is the first GPU, else the\n"
          "first device of any kind.\n");
}

/* --device wins over DYNBLOCKS_DEVICE; NULL means the library's default. */
static const char *device_selector(const char *flag) {
  if (flag) return flag;
  const char *env = getenv("DYNBLOCKS_DEVICE");
  return env && env[0] ? env : NULL;
}

static int cmd_devices(int argc, char **argv) {
  const char *flag = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: dynblocks devices [--device INDEX|NAME]\n"
             "Lists every OpenCL device; '*' marks the one commands would use.\n");
      return 0;
    } else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      flag = argv[++i];
    } else {
      fprintf(stderr, "dynblocks devices: unknown or incomplete flag '%s'\n", argv[i]);
      return 2;
    }
  }
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
    printf("%c %u  %-44s  %s  [%s]  %s, driver %s, %u CUs, %.1f GiB%s\n",
           fst == DYNB_OK && chosen == d->index ? '*' : ' ', (unsigned)d->index, d->device_name,
           d->is_gpu ? "GPU" : "   ", d->platform_name, d->device_version, d->driver_version,
           (unsigned)d->compute_units, (double)d->global_mem_bytes / (1024.0 * 1024 * 1024),
           d->has_fp64 ? ", fp64" : "");
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
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("dynblocks %s\n", dynb_version_string());
    return 0;
  }
  fprintf(stderr, "dynblocks: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return 2;
}
