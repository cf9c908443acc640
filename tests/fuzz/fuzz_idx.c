/* Fuzz target: the IDX reader (src/io/idx.c), raw and gzip'd. The first
 * byte picks images (3 dimensions) or labels (1); the rest is the file. */
#include "fuzz.h"
#include "io/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int ndim = data[0] & 1 ? 3 : 1;
  dynb__reader r;
  char err[512];
  int64_t dims[DYNB_IDX_MAX_DIMS] = {0};
  unsigned char *items = NULL;
  dynb_status st = dynb__reader_open_mem(&r, "fuzz.idx", data + 1, size - 1, true, err, sizeof err);
  if (st == DYNB_OK) {
    st = dynb__idx_read_from(&r, ndim, dims, &items, err, sizeof err);
    dynb__reader_close(&r);
  }
  FUZZ_CHECK(st == DYNB_OK || (err[0] && items == NULL));
  if (st == DYNB_OK) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
      FUZZ_CHECK(dims[i] >= 1);
      n *= (uint64_t)dims[i];
    }
    /* Every promised byte is there: touching the last one is safe. */
    volatile unsigned char last = items[n - 1];
    (void)last;
    if (ndim == 1) dynb__labels_check(items, dims[0], 10, "fuzz.idx", err, sizeof err);
  }
  free(items);
  return 0;
}
