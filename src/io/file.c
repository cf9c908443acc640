/* Whole-file reads (with gzip) and atomic writes. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/io.h"

dynb_status dynb__file_read(const char *path, size_t max_bytes, bool gunzip, unsigned char **out,
                            size_t *size, char *err, size_t errlen) {
  *out = NULL, *size = 0;
  /* gzread passes files without the gzip magic through unchanged. */
  gzFile gz = NULL;
  FILE *f = NULL;
  if (gunzip)
    gz = gzopen(path, "rb");
  else
    f = fopen(path, "rb");
  if (!gz && !f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    return DYNB_STATUS_IO_ERROR;
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  dynb_status st = buf ? DYNB_OK : DYNB_STATUS_OUT_OF_HOST_MEMORY;
  while (st == DYNB_OK) {
    if (n == cap) {
      if (cap > max_bytes) {
        snprintf(err, errlen, "%s: larger than %zu bytes", path, max_bytes);
        st = DYNB_STATUS_BAD_FORMAT;
        break;
      }
      unsigned char *grown = realloc(buf, cap * 2);
      if (!grown) {
        st = DYNB_STATUS_OUT_OF_HOST_MEMORY;
        break;
      }
      buf = grown, cap *= 2;
    }
    size_t want = cap - n;
    if (want > (1u << 30)) want = 1u << 30;
    long got = gz ? gzread(gz, buf + n, (unsigned)want) : (long)fread(buf + n, 1, want, f);
    if (got < 0 || (f && ferror(f))) {
      int zerr = 0;
      snprintf(err, errlen, "%s: read error: %s", path,
               gz ? gzerror(gz, &zerr) : strerror(errno));
      st = gz ? DYNB_STATUS_BAD_FORMAT : DYNB_STATUS_IO_ERROR;
      break;
    }
    if (got == 0) break;
    n += (size_t)got;
  }
  if (st == DYNB_OK && n > max_bytes) {
    snprintf(err, errlen, "%s: larger than %zu bytes", path, max_bytes);
    st = DYNB_STATUS_BAD_FORMAT;
  }
  if (st == DYNB_STATUS_OUT_OF_HOST_MEMORY) snprintf(err, errlen, "%s: out of host memory", path);
  if (gz) gzclose(gz);
  if (f) fclose(f);
  if (st != DYNB_OK) {
    free(buf);
    return st;
  }
  *out = buf, *size = n;
  return DYNB_OK;
}

/* Syncs the folder holding `path`, so that the rename itself is durable. */
static void sync_parent(const char *path) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    slash[1] = 0;
  else if (slash)
    *slash = 0;
  else
    snprintf(dir, sizeof dir, ".");
  int fd = open(dir, O_RDONLY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

dynb_status dynb__file_write_atomic(const char *path, const void *const *parts,
                                    const size_t *sizes, int n, char *err, size_t errlen) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    return DYNB_STATUS_IO_ERROR;
  }
  bool ok = true;
  for (int i = 0; ok && i < n; i++) ok = fwrite(parts[i], 1, sizes[i], f) == sizes[i];
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  int saved = errno;
  ok = fclose(f) == 0 && ok;
  if (ok && rename(tmp, path) != 0) ok = false, saved = errno;
  if (!ok) {
    remove(tmp);
    snprintf(err, errlen, "%s: write failed: %s (the previous file, if any, is unchanged)", path,
             strerror(saved));
    return DYNB_STATUS_IO_ERROR;
  }
  sync_parent(path);
  return DYNB_OK;
}
