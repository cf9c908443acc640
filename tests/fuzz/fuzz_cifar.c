/* Fuzz target: the CIFAR-10 reader (src/io/cifar.c), raw and gzip'd. The
 * first byte says where to cut the rest into two files read one after the
 * other into the same arrays (the append path of a multi-batch data set). */
#include "fuzz.h"
#include "io/io.h"

static dynb_status read_part(const uint8_t *data, size_t size, int64_t *n, unsigned char **images,
                             unsigned char **labels, char *err, size_t errlen) {
  dynb__reader r;
  dynb_status st = dynb__reader_open_mem(&r, "fuzz.bin", data, size, true, err, errlen);
  if (st != DYNB_OK) return st;
  st = dynb__cifar_read_from(&r, n, images, labels, err, errlen);
  dynb__reader_close(&r);
  return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t cut = size - 1 < 2 * DYNB_CIFAR_RECORD ? 0 : (size - 1) * data[0] / 256;
  int64_t n = 0;
  unsigned char *images = NULL, *labels = NULL;
  char err[512];
  dynb_status st = read_part(data + 1, size - 1 - cut, &n, &images, &labels, err, sizeof err);
  FUZZ_CHECK(st == DYNB_OK || (err[0] && n == 0));
  if (st == DYNB_OK && cut > 0) {
    int64_t before = n;
    st = read_part(data + size - cut, cut, &n, &images, &labels, err, sizeof err);
    FUZZ_CHECK(st == DYNB_OK ? n > before : n == before);
  }
  for (int64_t i = 0; i < n; i++) FUZZ_CHECK(labels[i] <= 9);
  if (n > 0) {
    volatile unsigned char last = images[(size_t)n * DYNB_CIFAR_PIXELS - 1];
    (void)last;
  }
  free(images), free(labels);
  return 0;
}
