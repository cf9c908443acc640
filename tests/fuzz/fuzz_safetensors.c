/* Fuzz target: the safetensors reader (src/io/safetensors.c) and what the
 * model-file loader (src/train/modelfile.c) reads from a file before it
 * needs a device: the embedded spec and the training counters. Every tensor
 * of a file that parses must lie inside the file and be findable by name. */
#include <string.h>

#include "fuzz.h"
#include "io/io.h"
#include "model/model.h"

static void walk(const dynb__st_file *f) {
  char err[512];
  for (int i = 0; i < f->ntensors; i++) {
    const dynb__st_tensor *t = &f->tensors[i];
    FUZZ_CHECK(dynb__st_find(f, t->name) == t);
    FUZZ_CHECK(t->begin <= t->end && f->data_start + t->end <= f->size);
    FUZZ_CHECK(dynb__st_numel(t) * dynb__st_dtype_size(t->dtype) == t->end - t->begin);
    size_t n = (size_t)(t->end - t->begin);
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) abort();
    FUZZ_CHECK(dynb__st_copy(f, t, buf, n, err, sizeof err) == DYNB_OK);
    free(buf);
  }
  /* As dynb__model_load: the spec, then the counters when well-typed. */
  const char *text = dynb__st_meta(f, "dynblocks.spec");
  if (text) {
    dynb__net_spec *spec = malloc(sizeof *spec);
    if (!spec) abort();
    dynb__spec_parse(text, strlen(text), "fuzz.safetensors", spec, err, sizeof err);
    free(spec);
  }
  const dynb__st_tensor *c = dynb__st_find(f, "train.counters");
  if (c && c->dtype == DYNB_ST_I64 && dynb__st_numel(c) == 3) {
    int64_t v[3];
    memcpy(v, dynb__st_data(f, c), sizeof v);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dynb__st_file f;
  char err[512];
  dynb_status st = dynb__st_open_mem(data, size, "fuzz.safetensors", &f, err, sizeof err);
  FUZZ_CHECK(st == DYNB_OK || err[0]);
  if (st == DYNB_OK) walk(&f);
  dynb__st_release(&f);
  return 0;
}
