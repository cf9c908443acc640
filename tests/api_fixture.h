/* What the public-API tests share: a small spec and a learnable synthetic
 * rule, built with the public API only (no cmocka calls, so that threads
 * may use it). */
#ifndef DYNB_TESTS_API_FIXTURE_H
#define DYNB_TESTS_API_FIXTURE_H

#include <stdint.h>

#include "dynblocks/dynblocks.h"

/* 2 classes of 1×8×8 images; every norm kind and a time regularisation, so
 * that every path of a training step runs. */
extern const char *const AF_SPEC;
#define AF_BATCH 16
#define AF_PIXELS 64

/* A batch of the rule: class 0 has a bright top half, class 1 a bright
 * bottom half, under uniform noise; the same seed gives the same batch. */
void af_make_batch(uint64_t seed, float *x, int32_t *y);

/* A context on DYNB_TEST_DEVICE with the test program cache and the
 * convolution route fixed to GEMM (the timed choice could differ between
 * contexts and so round differently). *out is NULL on failure; a message
 * goes to err. */
dynb_status af_ctx(dynb_ctx **out, char *err, size_t errlen);

/* Builds a network from AF_SPEC with `seed`, trains it `steps` SGD steps on
 * batches af_make_batch(data_seed + step), and copies every tensor, in
 * name order, into *params (malloc'd, *count doubles). Reports the first
 * failure in err. */
dynb_status af_train(dynb_ctx *ctx, uint64_t seed, uint64_t data_seed, int steps,
                     double **params, size_t *count, char *err, size_t errlen);

#endif
