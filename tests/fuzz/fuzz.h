/* What every fuzz target shares: libFuzzer's entry point, and a check that
 * stops the run (a crash libFuzzer records) when a property fails. */
#ifndef DYNB_TESTS_FUZZ_H
#define DYNB_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A failed property is a finding like a crash: abort so that the fuzzer
 * saves the input and the replay test fails on it. */
#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#endif
