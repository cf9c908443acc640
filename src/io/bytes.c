/* Small helpers shared by the readers and writers: byte order, UTF-8
 * validation, error messages. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

bool dynb__host_is_little_endian(void) {
  const uint16_t one = 1;
  unsigned char first;
  memcpy(&first, &one, 1);
  return first == 1;
}

void dynb__byteswap_copy(void *dst, const void *src, size_t count, size_t elem) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  for (size_t i = 0; i < count; i++, d += elem, s += elem)
    for (size_t k = 0; k < elem; k++) d[k] = s[elem - 1 - k];
}

void dynb__le_copy(void *dst, const void *src, size_t count, size_t elem) {
  if (count == 0) return;
  if (elem <= 1 || dynb__host_is_little_endian())
    memmove(dst, src, count * elem);
  else
    dynb__byteswap_copy(dst, src, count, elem);
}

/* Assembled byte by byte, so these hold on any host. */
uint32_t dynb__load_be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

uint64_t dynb__load_le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

void dynb__store_le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Length of the UTF-8 sequence starting at s[0..n), 0 if invalid. The
 * ranges are those of RFC 3629 §4, which exclude overlong forms and
 * surrogates by constraining the second byte. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c == 0xE0)
    len = 3, lo = 0xA0;
  else if (c == 0xED)
    len = 3, hi = 0x9F;
  else if (c >= 0xE1 && c <= 0xEF)
    len = 3;
  else if (c == 0xF0)
    len = 4, lo = 0x90;
  else if (c == 0xF4)
    len = 4, hi = 0x8F;
  else if (c >= 0xF1 && c <= 0xF3)
    len = 4;
  else
    return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t k = 2; k < len; k++)
    if (s[k] < 0x80 || s[k] > 0xBF) return 0;
  return len;
}

size_t dynb__utf8_prefix(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t len = utf8_seq(p + i, n - i);
    if (len == 0) break;
    i += len;
  }
  return i;
}

bool dynb__utf8_valid(const char *s, size_t n) { return dynb__utf8_prefix(s, n) == n; }

dynb_status dynb__io_fail(char *err, size_t errlen, dynb_status status, const char *fmt, ...) {
  if (err && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return status;
}

static int by_string(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

dynb_status dynb__first_duplicate(const char *const *s, int n, const char **twice) {
  *twice = NULL;
  if (n < 2) return DYNB_OK;
  const char **sorted = malloc((size_t)n * sizeof *sorted);
  if (!sorted) return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  memcpy(sorted, s, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, by_string);
  for (int i = 1; i < n && !*twice; i++)
    if (strcmp(sorted[i - 1], sorted[i]) == 0) *twice = sorted[i];
  free(sorted);
  return DYNB_OK;
}
