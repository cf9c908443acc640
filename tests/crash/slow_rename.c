/* Test shim for the crash test (LD_PRELOAD): every rename of a temporary
 * file ("*.tmp.*") waits DYNB_SLOW_RENAME_MS milliseconds first, so that a
 * kill lands deterministically in the window of an atomic save where the
 * new file is complete beside the old one but not yet in its place. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int rename(const char *from, const char *to) {
  static int (*real)(const char *, const char *);
  if (!real) *(void **)&real = dlsym(RTLD_NEXT, "rename");
  const char *ms = getenv("DYNB_SLOW_RENAME_MS");
  if (ms && from && strstr(from, ".tmp.")) {
    long v = strtol(ms, NULL, 10);
    struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  return real(from, to);
}
