/* Flag tables and pure parsers of every command (see options.h). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

static cli_result error(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static cli_result error(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (errlen) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return CLI_ERROR;
}

static cli_result convert(const cli_flag *f, const char *v, void *field, char *err,
                          size_t errlen) {
  char *end;
  errno = 0;
  if (f->kind == CLI_LONG) {
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < (long)f->lo || x > (long)f->hi)
      return error(err, errlen, "%s must be an integer in %ld..%ld, got '%s'", f->name,
                   (long)f->lo, (long)f->hi, v);
    *(long *)field = x;
  } else {
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x) || x < f->lo || x > f->hi)
      return error(err, errlen, "%s must be a number in [%g, %g], got '%s'", f->name, f->lo,
                   f->hi, v);
    *(double *)field = x;
  }
  return CLI_OK;
}

cli_result cli_parse(const cli_command *c, int argc, char **argv, void *opts, char *err,
                     size_t errlen) {
  const char *vals[CLI_MAX_FLAGS] = {0};
  if (errlen) err[0] = 0;
  if (c->nflags > CLI_MAX_FLAGS) return error(err, errlen, "too many flags in the table");
  /* Values first, conversions after: --help wins wherever it stands. */
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return CLI_HELP;
    int f = 0;
    while (f < c->nflags && strcmp(argv[i], c->flags[f].name) != 0) f++;
    if (f == c->nflags) return error(err, errlen, "unknown flag '%s' (see --help)", argv[i]);
    if (c->flags[f].kind == CLI_SWITCH)
      vals[f] = "1";
    else if (i + 1 >= argc)
      return error(err, errlen, "%s needs a value", argv[i]);
    else
      vals[f] = argv[++i];
  }
  for (int f = 0; f < c->nflags; f++) {
    const cli_flag *fl = &c->flags[f];
    void *field = (char *)opts + fl->offset;
    switch (fl->kind) {
      case CLI_STRING: *(const char **)field = vals[f]; break;
      case CLI_SWITCH: *(bool *)field = vals[f] != NULL; break;
      case CLI_LONG:
        *(long *)field = (long)fl->def;
        if (vals[f] && convert(fl, vals[f], field, err, errlen) != CLI_OK) return CLI_ERROR;
        break;
      case CLI_DOUBLE:
        *(double *)field = fl->def;
        if (vals[f] && convert(fl, vals[f], field, err, errlen) != CLI_OK) return CLI_ERROR;
        break;
    }
  }
  return CLI_OK;
}

#define COUNT(a) ((int)(sizeof(a) / sizeof *(a)))
#define STR(T, name, field, help) {name, help, CLI_STRING, offsetof(T, field), 0, 0, 0}
#define SWITCH(T, name, field, help) {name, help, CLI_SWITCH, offsetof(T, field), 0, 0, 0}
#define LONG(T, name, field, lo, hi, def, help) \
  {name, help, CLI_LONG, offsetof(T, field), lo, hi, def}
#define REAL(T, name, field, lo, hi, def, help) \
  {name, help, CLI_DOUBLE, offsetof(T, field), lo, hi, def}
#define DEVICE_HELP "OpenCL device index or name substring (or DYNBLOCKS_DEVICE)"

/* ---- devices ------------------------------------------------------------------------ */

static const cli_flag devices_flags[] = {STR(devices_opts, "--device", device, DEVICE_HELP)};
const cli_command cli_devices_command = {
    "devices", "[--device INDEX|NAME]  (lists every OpenCL device; '*' marks the one used)",
    devices_flags, COUNT(devices_flags)};

cli_result cli_devices_options(int argc, char **argv, devices_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  return cli_parse(&cli_devices_command, argc, argv, o, err, errlen);
}

/* ---- train -------------------------------------------------------------------------- */

static const cli_flag train_flags[] = {
    STR(train_opts, "--spec", spec, "network spec (JSON, see specs/); else built from the flags below"),
    STR(train_opts, "--scheme", scheme, "integrator of every block (euler, midpoint, heun, rk3, ssprk3, rk4, rk38, leapfrog, verlet with --layer hamiltonian); default euler"),
    STR(train_opts, "--layer", layer, "layer function: doublesym (default), double, preact, hamiltonian (with --scheme verlet)"),
    STR(train_opts, "--norm", norm, "norm inside blocks: tv (default), batch, none"),
    STR(train_opts, "--widths", widths, "block widths, e.g. 16,32,64 (default 8,16,32)"),
    STR(train_opts, "--head-width", head_width, "width before the linear head (default: last width)"),
    LONG(train_opts, "--steps", steps, 1, 1000, 2, "time steps per block on 0..steps (default 2)"),
    STR(train_opts, "--t-states", t_states, "state grid, e.g. 0,0.5,2 (overrides --steps)"),
    STR(train_opts, "--t-controls", t_controls, "control grid (default: the state grid)"),
    STR(train_opts, "--data", data, "fashion-mnist (default), mnist, cifar10, or a folder of IDX/CIFAR files"),
    STR(train_opts, "--data-dir", data_dir, "folder of the mnist/cifar10 files"),
    LONG(train_opts, "--epochs", epochs, 0, 100000, 3, "epochs (default 3)"),
    LONG(train_opts, "--batch", batch, 1, 1 << 20, 64, "batch size (default 64)"),
    STR(train_opts, "--lr", lr_text, "learning-rate schedule, e.g. 0.1@0,0.01@60 (default 0.05@0,0.01@2)"),
    STR(train_opts, "--optim", optim_name, "sgd (default) or adam"),
    REAL(train_opts, "--momentum", momentum, 0, 0.999999, 0.9, "SGD momentum (default 0.9)"),
    REAL(train_opts, "--weight-decay", weight_decay, 0, 1, 4e-4, "weight decay, not on norm parameters (default 4e-4)"),
    SWITCH(train_opts, "--nesterov", nesterov, "Nesterov momentum"),
    LONG(train_opts, "--seed", seed, 0, 0x7fffffffL, 1, "seed of initialisation, split and shuffling (default 1)"),
    LONG(train_opts, "--train-size", train_size, 0, 100000000, 12000, "training samples to use (default 12000; 0: all but validation)"),
    REAL(train_opts, "--val-size", val_size, 0, 1e8, 2000, "validation split off the training set: a count, or a fraction below 1 (default 2000)"),
    STR(train_opts, "--out", out, "best model by validation loss (default model.safetensors)"),
    STR(train_opts, "--log", log, "per-epoch CSV (default train.csv; the plot goes beside it as .svg)"),
    STR(train_opts, "--checkpoint", checkpoint, "checkpoint written after every epoch (default <out>.ckpt)"),
    STR(train_opts, "--resume", resume, "resume from a checkpoint file"),
    STR(train_opts, "--device", device, DEVICE_HELP),
    STR(train_opts, "--devices", devices, "data-parallel on several devices: indices or name substrings, comma-separated, or all (or DYNBLOCKS_DEVICES)"),
    STR(train_opts, "--split", split, "shards of each batch over --devices: auto (default: balanced by measured speed), equal, or N,N,... summing to --batch"),
    SWITCH(train_opts, "--augment", augment, "random 2-pixel shifts and horizontal flips"),
    SWITCH(train_opts, "--log-reconstruction", log_reconstruction,
           "with --memory reconstruct: the rebuilt first state's relative error, column rec_err"),
    /* The smallest bound is positive: 0 would mean no warning. */
    REAL(train_opts, "--warn-reconstruction", warn_reconstruction, 1e-300, 1e300, 0,
         "with --memory reconstruct: a warning on stderr for each epoch whose rec_err exceeds this bound"),
    STR(train_opts, "--memory", memory_name, "store (default), checkpoint or reconstruct (reversible blocks keep two states): what blocks keep for backward"),
    STR(train_opts, "--refine", refine_text, "multilevel: at the start of these epochs (e.g. 10,20) halve every block's time steps and control intervals"),
};
const cli_command cli_train_command = {
    "train", "[--spec FILE | flags] [--data NAME|DIR] [--epochs N] ...", train_flags,
    COUNT(train_flags)};

static cli_result memory_mode(const char *name, dynb_memory_mode *out, char *err, size_t errlen) {
  *out = DYNB_MEMORY_STORE;
  if (name && strcmp(name, "checkpoint") == 0)
    *out = DYNB_MEMORY_CHECKPOINT;
  else if (name && strcmp(name, "reconstruct") == 0)
    *out = DYNB_MEMORY_RECONSTRUCT;
  else if (name && strcmp(name, "store") != 0)
    return error(err, errlen, "--memory must be store, checkpoint or reconstruct, got '%s'", name);
  return CLI_OK;
}

cli_result cli_train_options(int argc, char **argv, train_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  cli_result r = cli_parse(&cli_train_command, argc, argv, o, err, errlen);
  if (r != CLI_OK) return r;
  o->optim = dynb__optim_desc_default();
  if (o->optim_name && strcmp(o->optim_name, "adam") == 0)
    o->optim.kind = DYNB_OPTIM_ADAM;
  else if (o->optim_name && strcmp(o->optim_name, "sgd") != 0)
    return error(err, errlen, "--optim must be sgd or adam, got '%s'", o->optim_name);
  o->optim.nesterov = o->nesterov;
  o->optim.momentum = o->momentum;
  o->optim.weight_decay = o->weight_decay;
  if (o->nesterov && o->momentum == 0) return error(err, errlen, "--nesterov needs momentum > 0");
  if (memory_mode(o->memory_name, &o->memory, err, errlen) != CLI_OK) return CLI_ERROR;
  if (o->warn_reconstruction > 0 && o->memory != DYNB_MEMORY_RECONSTRUCT)
    return error(err, errlen, "--warn-reconstruction needs --memory reconstruct");
  if (o->device && o->devices) return error(err, errlen, "give --device or --devices, not both");
  char why[512];
  if (dynb__schedule_parse(o->lr_text ? o->lr_text : "0.05@0,0.01@2", &o->lr, why, sizeof why) !=
      DYNB_OK)
    return error(err, errlen, "--lr: %s", why);
  if (!o->out) o->out = "model.safetensors";
  if (!o->log) o->log = "train.csv";
  if (!o->checkpoint) {
    if (strlen(o->out) + 6 > sizeof o->checkpoint_default)
      return error(err, errlen, "--out is too long");
    snprintf(o->checkpoint_default, sizeof o->checkpoint_default, "%s.ckpt", o->out);
    o->checkpoint = o->checkpoint_default;
  }
  if (o->refine_text &&
      dynb__refine_parse(o->refine_text, o->refine_epochs, &o->nrefine, why, sizeof why) != DYNB_OK)
    return error(err, errlen, "--refine %s", why);
  return CLI_OK;
}

char *cli_train_spec_json(const train_opts *o, int c, int h, int w, int classes) {
  const char *widths = o->widths ? o->widths : "8,16,32";
  char grid[2048] = "";
  if (o->t_states)
    snprintf(grid, sizeof grid, "%s", o->t_states);
  else
    for (long k = 0; k <= o->steps; k++)
      snprintf(grid + strlen(grid), sizeof grid - strlen(grid), "%s%ld", k ? "," : "", k);
  size_t cap = 1 << 16;
  char *s = malloc(cap);
  if (!s) return NULL;
  char first[32] = "";
  snprintf(first, sizeof first, "%.*s", (int)strcspn(widths, ","), widths);
  int n = snprintf(s, cap,
                   "{\"input\": {\"channels\": %d, \"height\": %d, \"width\": %d}, \"classes\": %d, "
                   "\"open\": {\"width\": %s}, \"blocks\": [",
                   c, h, w, classes, first);
  const char *p = widths;
  for (int b = 0; *p && n > 0 && (size_t)n < cap; b++) {
    size_t len = strcspn(p, ",");
    n += snprintf(s + n, cap - (size_t)n,
                  "%s{\"width\": %.*s, \"layer\": \"%s\", \"norm\": \"%s\", \"scheme\": \"%s\", "
                  "\"t_states\": [%s]%s%s%s}",
                  b ? ", " : "", (int)len, p, o->layer ? o->layer : "doublesym",
                  o->norm ? o->norm : "tv", o->scheme ? o->scheme : "euler", grid,
                  o->t_controls ? ", \"t_controls\": [" : "", o->t_controls ? o->t_controls : "",
                  o->t_controls ? "]" : "");
    p += len;
    if (*p == ',') p++;
  }
  if (o->head_width && n > 0 && (size_t)n < cap)
    n += snprintf(s + n, cap - (size_t)n, "], \"head_width\": %s}", o->head_width);
  else if (n > 0 && (size_t)n < cap)
    n += snprintf(s + n, cap - (size_t)n, "]}");
  return s;
}

/* ---- eval --------------------------------------------------------------------------- */

static const cli_flag eval_flags[] = {
    STR(eval_opts, "--model", model, "model file (required)"),
    STR(eval_opts, "--data", data, "fashion-mnist (default), mnist, cifar10 or a folder"),
    STR(eval_opts, "--data-dir", data_dir, "folder of the mnist/cifar10 files"),
    STR(eval_opts, "--split", split, "test (default) or train"),
    LONG(eval_opts, "--batch", batch, 1, 1 << 20, 100, "batch size (default 100)"),
    STR(eval_opts, "--device", device, DEVICE_HELP),
};
const cli_command cli_eval_command = {"eval",
                                      "--model MODEL [--data NAME|DIR] [--split test|train]",
                                      eval_flags, COUNT(eval_flags)};

cli_result cli_eval_options(int argc, char **argv, eval_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  cli_result r = cli_parse(&cli_eval_command, argc, argv, o, err, errlen);
  if (r != CLI_OK) return r;
  if (!o->model) return error(err, errlen, "--model is required");
  if (o->split && strcmp(o->split, "test") != 0 && strcmp(o->split, "train") != 0)
    return error(err, errlen, "--split must be test or train, got '%s'", o->split);
  o->test_split = !o->split || strcmp(o->split, "test") == 0;
  return CLI_OK;
}

/* ---- predict and grad --------------------------------------------------------------- */

static const cli_flag model_flags[] = {
    STR(model_opts, "--model", model, "model file (required)"),
    STR(model_opts, "--input", input, "batch file: safetensors with x (and y for grad) (required)"),
    STR(model_opts, "--out", out, "output safetensors file (required)"),
    STR(model_opts, "--device", device, DEVICE_HELP),
};
const cli_command cli_predict_command = {"predict", "--model MODEL --input BATCH --out FILE",
                                         model_flags, COUNT(model_flags)};
const cli_command cli_grad_command = {"grad", "--model MODEL --input BATCH --out FILE",
                                      model_flags, COUNT(model_flags)};

cli_result cli_model_options(const cli_command *c, int argc, char **argv, model_opts *o, char *err,
                             size_t errlen) {
  memset(o, 0, sizeof *o);
  cli_result r = cli_parse(c, argc, argv, o, err, errlen);
  if (r != CLI_OK) return r;
  if (!o->model || !o->input || !o->out)
    return error(err, errlen, "--model, --input and --out are required");
  return CLI_OK;
}

/* ---- bench -------------------------------------------------------------------------- */

static const cli_flag bench_flags[] = {
    STR(bench_opts, "--spec", spec, "network spec (required)"),
    LONG(bench_opts, "--batch", batch, 1, 1 << 20, 64, "batch size (default 64)"),
    STR(bench_opts, "--memory", memory_name, "store (default), checkpoint or reconstruct"),
    LONG(bench_opts, "--iters", iters, 1, 100000, 5, "timed iterations after 2 warm-up ones (default 5)"),
    SWITCH(bench_opts, "--profile", profile,
           "then --iters more training steps with OpenCL event profiling: device time per kernel family, layer and kernel"),
    STR(bench_opts, "--device", device, DEVICE_HELP),
};
const cli_command cli_bench_command = {"bench", "--spec FILE --batch N [--memory store|checkpoint|reconstruct] [--profile]",
                                       bench_flags, COUNT(bench_flags)};

cli_result cli_bench_options(int argc, char **argv, bench_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  cli_result r = cli_parse(&cli_bench_command, argc, argv, o, err, errlen);
  if (r != CLI_OK) return r;
  if (!o->spec) return error(err, errlen, "--spec is required");
  return memory_mode(o->memory_name, &o->memory, err, errlen);
}

/* ---- tune --------------------------------------------------------------------------- */

static const cli_flag tune_flags[] = {
    STR(tune_opts, "--spec", spec, "network spec whose GEMMs are tuned (required)"),
    LONG(tune_opts, "--batch", batch, 1, 1 << 20, 64, "batch size (default 64)"),
    STR(tune_opts, "--memory", memory_name, "store (default), checkpoint or reconstruct"),
    STR(tune_opts, "--cache", cache,
        "tuning cache file (default: DYNBLOCKS_TUNE_CACHE, else $XDG_CACHE_HOME/dynblocks/tune.txt)"),
    REAL(tune_opts, "--time-limit", time_limit, 0.001, 86400, 120,
           "seconds each candidate may take to compile and verify (default 120)"),
    STR(tune_opts, "--candidates", candidates,
        "comma-separated names to try (default: all for the device type; the built-in one is "
        "always added)"),
    LONG(tune_opts, "--reps", reps, 1, 16, 5,
         "timed batches per shape and formulation, median taken (default 5)"),
    STR(tune_opts, "--device", device, DEVICE_HELP),
};
const cli_command cli_tune_command = {
    "tune", "--spec FILE [--batch N] [--cache FILE] [--time-limit SEC] [--device D]", tune_flags,
    COUNT(tune_flags)};

cli_result cli_tune_options(int argc, char **argv, tune_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  cli_result r = cli_parse(&cli_tune_command, argc, argv, o, err, errlen);
  if (r != CLI_OK) return r;
  if (!o->spec) return error(err, errlen, "--spec is required");
  if (o->cache && !o->cache[0]) return error(err, errlen, "--cache must name a file");
  if (o->candidates && !o->candidates[0])
    return error(err, errlen, "--candidates must name at least one candidate");
  return memory_mode(o->memory_name, &o->memory, err, errlen);
}

/* ---- fold --------------------------------------------------------------------------- */

static const cli_flag fold_flags[] = {
    STR(fold_opts, "--model", model, "model file (required)"),
    STR(fold_opts, "--out", out, "folded model file (required)"),
    STR(fold_opts, "--device", device, DEVICE_HELP),
};
const cli_command cli_fold_command = {
    "fold", "--model MODEL --out FILE  (fold batch norms into convolutions for inference)",
    fold_flags, COUNT(fold_flags)};

cli_result cli_fold_options(int argc, char **argv, fold_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  cli_result r = cli_parse(&cli_fold_command, argc, argv, o, err, errlen);
  if (r != CLI_OK) return r;
  if (!o->model || !o->out) return error(err, errlen, "--model and --out are required");
  return CLI_OK;
}

/* ---- refine ------------------------------------------------------------------------- */

static const cli_flag refine_flags[] = {
    STR(refine_opts, "--model", model, "model file (required)"),
    LONG(refine_opts, "--factor", factor, 1, 4096, 0, "cut every interval of every block's grids into this many equal parts"),
    STR(refine_opts, "--t-states", t_states_text, "new state grid, e.g. 0,0.5,1,2 (instead of --factor)"),
    STR(refine_opts, "--t-controls", t_controls_text, "new control grid (default: the new state grid; alone: the state grids stay)"),
    LONG(refine_opts, "--block", block, -1, 15, -1, "apply --t-states/--t-controls to this block only (default: every block)"),
    STR(refine_opts, "--out", out, "refined model file (required)"),
    STR(refine_opts, "--device", device, DEVICE_HELP),
};
const cli_command cli_refine_command = {
    "refine",
    "--model MODEL (--factor 2 | --t-states LIST [--t-controls LIST]) --out FILE  "
    "(re-discretise a trained model: new control points interpolated)",
    refine_flags, COUNT(refine_flags)};

/* A comma-separated list of finite, strictly increasing times. */
static cli_result parse_grid(const char *flag, const char *text, double *t, int *n, char *err,
                             size_t errlen) {
  *n = 0;
  const char *p = text;
  for (;;) {
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    size_t len = strcspn(p, ",");
    if (end == p || end != p + len || errno || !isfinite(v))
      return error(err, errlen, "%s '%.64s': item %d ('%.*s') is not a finite number", flag, text,
                   *n + 1, (int)(len < 32 ? len : 32), p);
    if (*n == DYNB_MAX_TIME_POINTS)
      return error(err, errlen, "%s: more than %d times", flag, DYNB_MAX_TIME_POINTS);
    if (*n > 0 && !(v > t[*n - 1]))
      return error(err, errlen, "%s must be strictly increasing: %g after %g (item %d)", flag, v,
                   t[*n - 1], *n + 1);
    t[(*n)++] = v;
    p += len;
    if (*p == '\0') break;
    p++;
  }
  return CLI_OK;
}

cli_result cli_refine_options(int argc, char **argv, refine_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  cli_result r = cli_parse(&cli_refine_command, argc, argv, o, err, errlen);
  if (r != CLI_OK) return r;
  if (!o->model || !o->out) return error(err, errlen, "--model and --out are required");
  bool grids = o->t_states_text || o->t_controls_text;
  if (o->factor && grids)
    return error(err, errlen, "give --factor or --t-states/--t-controls, not both");
  if (!o->factor && !grids)
    return error(err, errlen, "give --factor N or --t-states LIST (see --help)");
  if (o->block >= 0 && !grids) return error(err, errlen, "--block goes with --t-states/--t-controls");
  if (o->t_states_text &&
      parse_grid("--t-states", o->t_states_text, o->t_states, &o->nstates, err, errlen) != CLI_OK)
    return CLI_ERROR;
  if (o->t_states_text && o->nstates < 2)
    return error(err, errlen, "--t-states needs at least 2 times (one step), got %d", o->nstates);
  if (o->t_controls_text && parse_grid("--t-controls", o->t_controls_text, o->t_controls,
                                       &o->ncontrols, err, errlen) != CLI_OK)
    return CLI_ERROR;
  return CLI_OK;
}

/* ---- selftest ----------------------------------------------------------------------- */

static const cli_flag selftest_flags[] = {
    SWITCH(selftest_opts, "--quick", quick, "fewer and smaller sizes (seconds on a CPU once kernels are cached)"),
    STR(selftest_opts, "--device", device, DEVICE_HELP),
};
const cli_command cli_selftest_command = {
    "selftest",
    "[--quick] [--device D]  (every kernel and route against its plain-C reference; exits 1 on "
    "any failure)",
    selftest_flags, COUNT(selftest_flags)};

cli_result cli_selftest_options(int argc, char **argv, selftest_opts *o, char *err,
                                size_t errlen) {
  memset(o, 0, sizeof *o);
  return cli_parse(&cli_selftest_command, argc, argv, o, err, errlen);
}
