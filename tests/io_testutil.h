/* Helpers of the file-format tests (test_io.c, test_io_data.c): a private
 * scratch folder, whole-file writes and reads, gzip in memory, and a byte
 * source that trickles a buffer a few bytes per call and can fail at byte N
 * (the substitute file system of STYLE §4). No device needed. */
#ifndef DYNB_TESTS_IO_TESTUTIL_H
#define DYNB_TESTS_IO_TESTUTIL_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "io/io.h"

/* The scratch folder of the running test program. */
static char iot_dir[64];

static inline int iot_setup(void **state) {
  (void)state;
  snprintf(iot_dir, sizeof iot_dir, "/tmp/dynb-io-XXXXXX");
  return mkdtemp(iot_dir) ? 0 : -1;
}

/* Removes the (flat) scratch folder. */
static inline int iot_teardown(void **state) {
  (void)state;
  DIR *d = opendir(iot_dir);
  if (!d) return 0;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(p, sizeof p, "%s/%s", iot_dir, e->d_name);
    if (remove(p) != 0) rmdir(p);
  }
  closedir(d);
  return rmdir(iot_dir);
}

static inline void iot_path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", iot_dir, name);
}

/* Writes a new file (unlinking first: rewriting a file in place makes ext4
 * flush it on close, which turns a loop over prefixes into seconds). */
static inline void iot_write(const char *path, const void *bytes, size_t n) {
  remove(path);
  FILE *f = fopen(path, "wb");
  if (!f) fail_msg("cannot create %s: %s", path, strerror(errno));
  if (n && fwrite(bytes, 1, n, f) != n) fail_msg("cannot write %s", path);
  fclose(f);
}

/* A whole file, read with stdio (not with the code under test). */
static inline unsigned char *iot_slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)size + 1);
  *n = fread(b, 1, (size_t)size, f);
  fclose(f);
  assert_int_equal(*n, (size_t)size);
  return b;
}

/* Entries of the scratch folder whose name contains `part`. */
static inline int iot_count(const char *part) {
  DIR *d = opendir(iot_dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += strstr(e->d_name, part) != NULL;
  closedir(d);
  return n;
}

/* One gzip member of n bytes, malloc'd. */
static inline unsigned char *iot_gzip(const void *bytes, size_t n, size_t *out_n) {
  z_stream z;
  memset(&z, 0, sizeof z);
  assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  size_t cap = deflateBound(&z, (uLong)n) + 64;
  unsigned char *out = malloc(cap);
  z.next_in = (Bytef *)(uintptr_t)bytes, z.avail_in = (uInt)n;
  z.next_out = out, z.avail_out = (uInt)cap;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  *out_n = cap - z.avail_out;
  deflateEnd(&z);
  return out;
}

/* A source over a buffer that hands out at most `chunk` bytes per call
 * (short reads everywhere) and fails with EIO once `fail_at` bytes are out. */
typedef struct iot_source {
  const unsigned char *p;
  size_t n, pos, chunk, fail_at;
} iot_source;

static inline int iot_source_read(void *user, void *dst, size_t n, size_t *got) {
  iot_source *s = user;
  *got = 0;
  if (s->pos >= s->fail_at) return EIO;
  size_t k = s->n - s->pos;
  if (k > n) k = n;
  if (k > s->chunk) k = s->chunk;
  if (k > s->fail_at - s->pos) k = s->fail_at - s->pos;
  memcpy(dst, s->p + s->pos, k);
  s->pos += k, *got = k;
  return 0;
}

static inline iot_source iot_trickle(const void *p, size_t n, size_t chunk, size_t fail_at) {
  return (iot_source){p, n, 0, chunk, fail_at};
}

/* Fails unless err starts with "name: " and contains needle. */
static inline void iot_expect_msg(const char *err, const char *name, const char *needle) {
  size_t k = strlen(name);
  if (strncmp(err, name, k) != 0 || err[k] != ':' || !strstr(err, needle))
    fail_msg("message '%s' should start with '%s:' and contain '%s'", err, name, needle);
}

#endif
