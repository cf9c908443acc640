/* Fuzz target: the flag parsers of every command (tools/dynblocks/
 * options.c), which touch no device or file. The first byte picks the
 * command; the rest, cut at NUL and newline bytes, is argv. Parsed options
 * must respect their ranges; train's flags must also give spec JSON that
 * the spec reader either accepts or explains. */
#include <string.h>

#include "fuzz.h"
#include "options.h"

#define MAX_ARGS 64

static void check_error(cli_result r, const char *err) {
  FUZZ_CHECK(r == CLI_OK || r == CLI_HELP || (r == CLI_ERROR && err[0]));
}

static void train(int argc, char **argv) {
  train_opts *o = malloc(sizeof *o);
  dynb__net_spec *spec = malloc(sizeof *spec);
  char err[1024];
  if (!o || !spec) abort();
  cli_result r = cli_train_options(argc, argv, o, err, sizeof err);
  check_error(r, err);
  if (r == CLI_OK) {
    FUZZ_CHECK(o->epochs >= 0 && o->batch >= 1 && o->steps >= 1 && o->lr.n >= 1);
    FUZZ_CHECK(o->out && o->log && o->checkpoint);
    for (int i = 0; i < o->nrefine; i++)
      FUZZ_CHECK(o->refine_epochs[i] >= 0 && (i == 0 || o->refine_epochs[i] > o->refine_epochs[i - 1]));
    FUZZ_CHECK(o->val_size >= 0 && o->momentum >= 0 && o->momentum < 1);
    char *json = cli_train_spec_json(o, 1, 8, 8, 10);
    FUZZ_CHECK(json != NULL);
    dynb_status st = dynb__spec_parse(json, strlen(json), "flags", spec, err, sizeof err);
    FUZZ_CHECK(st == DYNB_OK || err[0]);
    free(json);
  }
  free(o), free(spec);
}

static void other(int which, int argc, char **argv) {
  char err[1024];
  cli_result r;
  switch (which) {
    case 1: {
      devices_opts o;
      r = cli_devices_options(argc, argv, &o, err, sizeof err);
      break;
    }
    case 2: {
      eval_opts o;
      r = cli_eval_options(argc, argv, &o, err, sizeof err);
      if (r == CLI_OK) FUZZ_CHECK(o.model && o.batch >= 1);
      break;
    }
    case 3:
    case 4: {
      model_opts o;
      r = cli_model_options(which == 3 ? &cli_predict_command : &cli_grad_command, argc, argv, &o,
                            err, sizeof err);
      if (r == CLI_OK) FUZZ_CHECK(o.model && o.input && o.out);
      break;
    }
    case 5: {
      bench_opts o;
      r = cli_bench_options(argc, argv, &o, err, sizeof err);
      if (r == CLI_OK) FUZZ_CHECK(o.spec && o.batch >= 1 && o.iters >= 1);
      break;
    }
    case 6: {
      tune_opts o;
      r = cli_tune_options(argc, argv, &o, err, sizeof err);
      if (r == CLI_OK)
        FUZZ_CHECK(o.spec && o.batch >= 1 && o.reps >= 1 && o.reps <= 16 && o.time_limit > 0 &&
                   (!o.cache || o.cache[0]) && (!o.candidates || o.candidates[0]));
      break;
    }
    case 7: {
      selftest_opts o;
      r = cli_selftest_options(argc, argv, &o, err, sizeof err);
      break;
    }
    case 9: {
      refine_opts *o = malloc(sizeof *o); /* two grids of 4096 times: not for the stack */
      if (!o) abort();
      r = cli_refine_options(argc, argv, o, err, sizeof err);
      if (r == CLI_OK) {
        FUZZ_CHECK(o->model && o->out && (o->factor >= 1) != (o->nstates || o->ncontrols));
        for (int i = 1; i < o->nstates; i++) FUZZ_CHECK(o->t_states[i] > o->t_states[i - 1]);
        for (int i = 1; i < o->ncontrols; i++) FUZZ_CHECK(o->t_controls[i] > o->t_controls[i - 1]);
      }
      free(o);
      break;
    }
    default: {
      fold_opts o;
      r = cli_fold_options(argc, argv, &o, err, sizeof err);
      if (r == CLI_OK) FUZZ_CHECK(o.model && o.out);
      break;
    }
  }
  check_error(r, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int which = data[0] % 10;
  /* One NUL-terminated copy, cut into arguments in place. */
  char *copy = malloc(size);
  char *argv[MAX_ARGS + 1];
  int argc = 0;
  if (!copy) abort();
  memcpy(copy, data + 1, size - 1);
  copy[size - 1] = 0;
  char *p = copy, *end = copy + size - 1;
  while (p < end && argc < MAX_ARGS) {
    argv[argc++] = p;
    while (p < end && *p && *p != '\n') p++;
    *p++ = 0;
  }
  argv[argc] = NULL;
  if (which == 0)
    train(argc, argv);
  else
    other(which, argc, argv);
  free(copy);
  return 0;
}
