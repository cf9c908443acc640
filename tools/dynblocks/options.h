/* The flags of every command: one table per command and a pure parser per
 * command that fills an options struct from argv. Parsers touch no device,
 * file or stream (errors go to a caller's buffer), so that a fuzzer can
 * drive them (tests/fuzz/fuzz_cli.c) and the commands stay thin. */
#ifndef DYNB_TOOLS_OPTIONS_H
#define DYNB_TOOLS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "train/train.h"

typedef enum cli_result { CLI_OK = 0, CLI_HELP = 1, CLI_ERROR = 2 } cli_result;

/* A flag: its name, help line and where its value goes in the command's
 * options struct. Numbers are checked against [lo, hi] (integers for
 * CLI_LONG) and take `def` when the flag is absent. */
typedef enum cli_kind { CLI_STRING, CLI_SWITCH, CLI_LONG, CLI_DOUBLE } cli_kind;
typedef struct cli_flag {
  const char *name; /* "--epochs" */
  const char *help;
  cli_kind kind;
  size_t offset; /* of a const char *, bool, long or double field */
  double lo, hi, def;
} cli_flag;

typedef struct cli_command {
  const char *name, *usage;
  const cli_flag *flags;
  int nflags;
} cli_command;

/* Most flags a command has (the train command's count, with room). */
#define CLI_MAX_FLAGS 40

/* Fills the fields of `opts` that c's flags name from argv (numbers get
 * their defaults first). @return CLI_OK, CLI_HELP (--help or -h anywhere),
 * or CLI_ERROR with the reason in err: an unknown flag, a missing value, a
 * number that does not parse or lies outside its range. */
cli_result cli_parse(const cli_command *c, int argc, char **argv, void *opts, char *err,
                     size_t errlen);

/* ---- per command: fields filled, defaults applied, values checked ------------------ */

typedef struct devices_opts {
  const char *device;
} devices_opts;

typedef struct eval_opts {
  const char *model, *data, *data_dir, *split, *device;
  long batch;
  bool test_split; /* --split test (the default) */
} eval_opts;

/* predict and grad */
typedef struct model_opts {
  const char *model, *input, *out, *device;
} model_opts;

typedef struct bench_opts {
  const char *spec, *memory_name, *device;
  long batch, iters;
  bool profile; /* --profile */
  dynb_memory_mode memory;
} bench_opts;

typedef struct tune_opts {
  const char *spec, *memory_name, *cache, *candidates, *device;
  long batch, reps;
  double time_limit;
  dynb_memory_mode memory;
} tune_opts;

typedef struct selftest_opts {
  const char *device;
  bool quick;
} selftest_opts;

typedef struct fold_opts {
  const char *model, *out, *device;
} fold_opts;

/* refine: a factor, or new grids parsed from the flags' lists. */
typedef struct refine_opts {
  const char *model, *out, *device, *t_states_text, *t_controls_text;
  long factor, block; /* factor 0: grids given instead; block -1: every block */
  int nstates, ncontrols; /* 0: not given */
  double t_states[DYNB_MAX_TIME_POINTS], t_controls[DYNB_MAX_TIME_POINTS];
} refine_opts;

typedef struct train_opts {
  const char *spec, *scheme, *layer, *norm, *widths, *head_width, *t_states, *t_controls;
  const char *data, *data_dir, *lr_text, *optim_name, *memory_name;
  const char *out, *log, *checkpoint, *resume, *device, *devices, *split;
  long steps, epochs, batch, seed, train_size;
  double val_size, momentum, weight_decay;
  bool nesterov, augment;
  bool log_reconstruction;
  double warn_reconstruction; /* 0: no warning */
  dynb__optim_desc optim;
  dynb_memory_mode memory;
  dynb__schedule lr;
  char checkpoint_default[4200]; /* "<out>.ckpt" */
  const char *refine_text;        /* --refine EPOCH[,EPOCH...] */
  int refine_epochs[DYNB_MAX_REFINE], nrefine;
} train_opts;

extern const cli_command cli_devices_command, cli_train_command, cli_eval_command,
    cli_predict_command, cli_grad_command, cli_bench_command, cli_tune_command, cli_fold_command,
    cli_selftest_command;
extern const cli_command cli_refine_command;

cli_result cli_devices_options(int argc, char **argv, devices_opts *o, char *err, size_t errlen);
cli_result cli_train_options(int argc, char **argv, train_opts *o, char *err, size_t errlen);
cli_result cli_eval_options(int argc, char **argv, eval_opts *o, char *err, size_t errlen);
/* `c` is cli_predict_command or cli_grad_command. */
cli_result cli_model_options(const cli_command *c, int argc, char **argv, model_opts *o, char *err,
                             size_t errlen);
cli_result cli_bench_options(int argc, char **argv, bench_opts *o, char *err, size_t errlen);
cli_result cli_tune_options(int argc, char **argv, tune_opts *o, char *err, size_t errlen);
cli_result cli_fold_options(int argc, char **argv, fold_opts *o, char *err, size_t errlen);
cli_result cli_refine_options(int argc, char **argv, refine_opts *o, char *err, size_t errlen);
cli_result cli_selftest_options(int argc, char **argv, selftest_opts *o, char *err, size_t errlen);

/* The spec JSON that train's flags describe, for data of c×h×w and
 * `classes` (one parser then validates both ways of giving a network):
 * a malloc'd string, NULL when out of memory. */
char *cli_train_spec_json(const train_opts *o, int c, int h, int w, int classes);

#endif
