/* Fuzz target: the JSON network spec reader (src/model/spec.c). Any text
 * either parses or fails with a message; a spec that parses must survive a
 * round trip through its canonical JSON unchanged. */
#include <string.h>

#include "fuzz.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Specs are large (their time grids): two for the whole run. */
  static dynb__net_spec spec_store, again_store;
  dynb__net_spec *spec = &spec_store, *again = &again_store;
  char err[1024];
  dynb_status st = dynb__spec_parse((const char *)data, size, "fuzz.json", spec, err, sizeof err);
  FUZZ_CHECK(st == DYNB_OK || (st == DYNB_STATUS_SPEC_ERROR && err[0]) ||
             st == DYNB_STATUS_OUT_OF_HOST_MEMORY);
  if (st == DYNB_OK) {
    char *text = dynb__spec_to_json(spec);
    FUZZ_CHECK(text != NULL);
    st = dynb__spec_parse(text, strlen(text), "canonical.json", again, err, sizeof err);
    if (st != DYNB_OK) fprintf(stderr, "canonical spec does not parse: %s\n%s\n", err, text);
    FUZZ_CHECK(st == DYNB_OK);
    char *text2 = dynb__spec_to_json(again);
    FUZZ_CHECK(text2 && strcmp(text, text2) == 0);
    free(text), free(text2);
  }
  return 0;
}
