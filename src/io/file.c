/* Atomic whole-file writes: temporary file, fsync, rename, fsync of the
 * folder. A reader of the target sees the old file or the new one, never a
 * mix, and a failure anywhere leaves the old file as it was (SPEC §6). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/io.h"

/* Temporary names tried before giving up: stale files of a crashed earlier
 * process with the same pid must not block a save. */
#define TMP_TRIES 100

/* Syncs the folder holding `path`, so that the rename itself is durable.
 * Best effort: some file systems refuse to fsync a folder, and the new file
 * is already in place and complete by then. */
static void sync_parent(const char *path) {
  size_t n = strlen(path);
  char *dir = malloc(n + 2);
  if (!dir) return;
  memcpy(dir, path, n + 1);
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    slash[1] = 0;
  else if (slash)
    *slash = 0;
  else
    memcpy(dir, ".", 2);
  int fd = open(dir, O_RDONLY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

/* Creates a new temporary file beside `path`; writes its name to tmp. */
static int create_temp(const char *path, char *tmp, size_t cap) {
  int fd = -1;
  for (int k = 0; k < TMP_TRIES && fd < 0; k++) {
    if (k == 0)
      snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    else
      snprintf(tmp, cap, "%s.tmp.%ld.%d", path, (long)getpid(), k);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  return fd;
}

/* A save killed between creating its temporary and renaming it leaves
 * "<name>.tmp.<pid>[.<k>]" behind. After each successful save, those of the
 * same target are removed when both their process is gone and they have not
 * changed for an hour: a pid alone could belong to another host sharing the
 * folder, and no live save leaves its file untouched that long. Best
 * effort: nothing here can fail the save. */
#define STALE_SECONDS 3600

static bool is_stale_temp(const char *dir, const char *name, const char *base) {
  size_t nb = strlen(base);
  if (strncmp(name, base, nb) != 0 || strncmp(name + nb, ".tmp.", 5) != 0) return false;
  char *end = NULL;
  errno = 0;
  long pid = strtol(name + nb + 5, &end, 10);
  if (errno || end == name + nb + 5 || pid <= 0 || pid == (long)getpid()) return false;
  if (*end == '.') {
    char *end2 = NULL;
    (void)strtol(end + 1, &end2, 10);
    if (end2 == end + 1) return false;
    end = end2;
  }
  if (*end) return false;
  if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) return false;
  char full[4096];
  if (snprintf(full, sizeof full, "%s/%s", dir, name) >= (int)sizeof full) return false;
  struct stat st;
  return lstat(full, &st) == 0 && S_ISREG(st.st_mode) &&
         difftime(time(NULL), st.st_mtime) > STALE_SECONDS;
}

static void remove_stale_temps(const char *path) {
  char dir[4096];
  if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return;
  char *slash = strrchr(dir, '/');
  const char *base = path;
  if (slash) {
    base = path + (slash - dir) + 1;
    if (slash == dir)
      slash[1] = 0;
    else
      *slash = 0;
  } else {
    memcpy(dir, ".", 2);
  }
  DIR *d = opendir(dir);
  if (!d) return;
  for (struct dirent *e = readdir(d); e; e = readdir(d))
    if (is_stale_temp(dir, e->d_name, base)) {
      char full[4096];
      if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) < (int)sizeof full) unlink(full);
    }
  closedir(d);
}

static int write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n > ((size_t)1 << 30) ? (size_t)1 << 30 : n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    p += w, n -= (size_t)w;
  }
  return 0;
}

/* Writes the parts and syncs; returns 0 or an errno value. */
static int write_parts(int fd, const void *const *parts, const size_t *sizes, int n) {
  int e = 0;
  for (int i = 0; e == 0 && i < n; i++) e = write_all(fd, parts[i], sizes[i]);
  if (e == 0 && fsync(fd) != 0) e = errno;
  return e;
}

static dynb_status check_args(const char *path, const void *const *parts, const size_t *sizes,
                              int n, char *err, size_t errlen) {
  if (!path || !*path)
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "write: no file name");
  if (n < 0 || (n > 0 && (!parts || !sizes)))
    return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "%s: write: bad part list",
                         path);
  for (int i = 0; i < n; i++)
    if (!parts[i] && sizes[i] > 0)
      return dynb__io_fail(err, errlen, DYNB_STATUS_INVALID_ARGUMENT, "%s: write: part %d is NULL",
                           path, i);
  return DYNB_OK;
}

dynb_status dynb__file_write_atomic(const char *path, const void *const *parts, const size_t *sizes,
                                    int n, char *err, size_t errlen) {
  dynb_status st = check_args(path, parts, sizes, n, err, errlen);
  if (st != DYNB_OK) return st;
  size_t cap = strlen(path) + 48;
  char *tmp = malloc(cap);
  if (!tmp)
    return dynb__io_fail(err, errlen, DYNB_STATUS_OUT_OF_HOST_MEMORY, "%s: out of host memory",
                         path);
  int fd = create_temp(path, tmp, cap);
  if (fd < 0) {
    int e = errno;
    st = dynb__io_fail(err, errlen, DYNB_STATUS_IO_ERROR, "%s: cannot create %s: %s", path, tmp,
                       strerror(e));
    free(tmp);
    return st;
  }
  /* A replaced file keeps its permission bits; a new one gets 0666 & ~umask. */
  struct stat old;
  if (stat(path, &old) == 0 && S_ISREG(old.st_mode)) (void)fchmod(fd, old.st_mode & 07777);
  int e = write_parts(fd, parts, sizes, n);
  if (close(fd) != 0 && e == 0) e = errno;
  const char *step = "write";
  if (e == 0 && rename(tmp, path) != 0) e = errno, step = "rename";
  if (e != 0) {
    unlink(tmp);
    st = dynb__io_fail(err, errlen, DYNB_STATUS_IO_ERROR,
                       "%s: %s failed: %s (the previous file, if any, is unchanged)", path, step,
                       strerror(e));
  } else {
    sync_parent(path);
    remove_stale_temps(path);
  }
  free(tmp);
  return st;
}
