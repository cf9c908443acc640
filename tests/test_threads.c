/* Two contexts on two threads: each builds a network and trains it at the
 * same time as the other, and both end with exactly the tensors that the
 * same runs give one after the other. Run under ThreadSanitizer too
 * (DYNB_TSAN, scripts/test.sh): it found that two first contexts at once
 * crashed inside PoCL and CLBlast (now serialised in src/runtime). */
#include <pthread.h>

#include "api_fixture.h"
#include "testutil.h"

enum { STEPS = 4 };

typedef struct job {
  uint64_t seed, data_seed;
  double *params;
  size_t count;
  dynb_status st;
  char err[600];
} job;

/* A whole life: context, network, training, tensors read back, release.
 * No cmocka calls here: failures are recorded for the main thread. */
static void *run(void *arg) {
  job *j = arg;
  dynb_ctx *ctx = NULL;
  j->st = af_ctx(&ctx, j->err, sizeof j->err);
  if (j->st == DYNB_OK)
    j->st = af_train(ctx, j->seed, j->data_seed, STEPS, &j->params, &j->count, j->err,
                     sizeof j->err);
  dynb_ctx_free(ctx);
  return NULL;
}

static void check(const job *j) {
  if (j->st == DYNB_STATUS_NO_DEVICE) {
    fprintf(stderr, "skipping: %s\n", j->err);
    skip();
  }
  if (j->st != DYNB_OK) fail_msg("seed %llu: %s", (unsigned long long)j->seed, j->err);
}

static void concurrent_training_equals_sequential(void **state) {
  (void)state;
  job seq[2] = {{.seed = 1, .data_seed = 100}, {.seed = 2, .data_seed = 200}};
  job par[2] = {{.seed = 1, .data_seed = 100}, {.seed = 2, .data_seed = 200}};
  /* Concurrent first: on a fresh program cache both threads then build
   * and cache the same kernels at the same time. */
  pthread_t th[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, run, &par[i]), 0);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < 2; i++) {
    check(&par[i]);
    run(&seq[i]);
    check(&seq[i]);
    assert_int_equal(par[i].count, seq[i].count);
    /* Bitwise: the kernels and reductions have a fixed order, so a run on
     * another thread beside another context must not change one bit. */
    if (memcmp(par[i].params, seq[i].params, seq[i].count * sizeof(double)) != 0)
      fail_msg("run %d: concurrent tensors differ from the sequential run", i);
  }
  /* The two runs differ from each other, so the comparison can fail. */
  assert_true(memcmp(seq[0].params, seq[1].params, seq[0].count * sizeof(double)) != 0);
  for (int i = 0; i < 2; i++) free(seq[i].params), free(par[i].params);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(concurrent_training_equals_sequential),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
