/* Feeds files to a fuzz target's LLVMFuzzerTestOneInput without libFuzzer,
 * so that every build (gcc too) replays the seed corpus and every input
 * that once crashed, under the sanitizers in the ASan suite.
 * Usage: replay_<target> DIR|FILE ...  (files starting with '.' skipped).
 * Fails when a path is missing or nothing was replayed. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return -1;
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap) {
      unsigned char *g = realloc(buf, cap *= 2);
      if (!g) free(buf);
      buf = g;
    }
  }
  fclose(f);
  if (!buf) {
    fprintf(stderr, "replay: out of memory reading %s\n", path);
    return -1;
  }
  /* A private copy of exactly n bytes, so ASan sees reads past the end. */
  unsigned char *exact = malloc(n ? n : 1);
  if (!exact) abort();
  memcpy(exact, buf, n);
  free(buf);
  LLVMFuzzerTestOneInput(exact, n);
  free(exact);
  return 1;
}

static int replay_path(const char *path) {
  struct stat s;
  if (stat(path, &s) != 0) {
    fprintf(stderr, "replay: no such file or folder: %s\n", path);
    return -1;
  }
  if (!S_ISDIR(s.st_mode)) return replay_file(path);
  DIR *d = opendir(path);
  if (!d) return -1;
  int count = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    char child[4096];
    snprintf(child, sizeof child, "%s/%s", path, e->d_name);
    int c = replay_path(child);
    if (c < 0) {
      count = -1;
      break;
    }
    count += c;
  }
  closedir(d);
  return count;
}

int main(int argc, char **argv) {
  int total = 0;
  for (int i = 1; i < argc; i++) {
    int c = replay_path(argv[i]);
    if (c < 0) return 1;
    printf("replayed %d input(s) from %s\n", c, argv[i]);
    total += c;
  }
  if (total == 0) {
    fprintf(stderr, "replay: no inputs\n");
    return 1;
  }
  return 0;
}
