/* dynblocks train: a network from a spec file or from flags, trained on a
 * data set, with the epoch table on stdout, a CSV log, an SVG plot, the
 * best model by validation loss and a resumable checkpoint. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

enum { F_SPEC, F_SCHEME, F_LAYER, F_NORM, F_WIDTHS, F_HEAD, F_STEPS, F_TSTATES, F_TCONTROLS,
       F_DATA, F_DATADIR, F_EPOCHS, F_BATCH, F_LR, F_OPTIM, F_MOMENTUM, F_WD, F_NESTEROV, F_SEED,
       F_TRAINSIZE, F_VALSIZE, F_OUT, F_LOG, F_CKPT, F_RESUME, F_DEVICE, F_AUGMENT, F_MEMORY,
       F_COUNT };

static cli_flag flags[F_COUNT] = {
    {"--spec", "network spec (JSON, see specs/); else built from the flags below", false, NULL},
    {"--scheme", "integrator of every block (euler, midpoint, heun, rk3, ssprk3, rk4, rk38); default euler", false, NULL},
    {"--layer", "layer function: doublesym (default), double, preact", false, NULL},
    {"--norm", "norm inside blocks: tv (default), batch, none", false, NULL},
    {"--widths", "block widths, e.g. 16,32,64 (default 8,16,32)", false, NULL},
    {"--head-width", "width before the linear head (default: last width)", false, NULL},
    {"--steps", "time steps per block on 0..steps (default 2)", false, NULL},
    {"--t-states", "state grid, e.g. 0,0.5,2 (overrides --steps)", false, NULL},
    {"--t-controls", "control grid (default: the state grid)", false, NULL},
    {"--data", "fashion-mnist (default), mnist, cifar10, or a folder of IDX/CIFAR files", false, NULL},
    {"--data-dir", "folder of the mnist/cifar10 files", false, NULL},
    {"--epochs", "epochs (default 3)", false, NULL},
    {"--batch", "batch size (default 64)", false, NULL},
    {"--lr", "learning-rate schedule, e.g. 0.1@0,0.01@60 (default 0.05@0,0.01@2)", false, NULL},
    {"--optim", "sgd (default) or adam", false, NULL},
    {"--momentum", "SGD momentum (default 0.9)", false, NULL},
    {"--weight-decay", "weight decay, not on norm parameters (default 4e-4)", false, NULL},
    {"--nesterov", "Nesterov momentum", true, NULL},
    {"--seed", "seed of initialisation, split and shuffling (default 1)", false, NULL},
    {"--train-size", "training samples to use (default 12000; 0: all but validation)", false, NULL},
    {"--val-size", "validation split off the training set: a count, or a fraction below 1 (default 2000)", false, NULL},
    {"--out", "best model by validation loss (default model.safetensors)", false, NULL},
    {"--log", "per-epoch CSV (default train.csv; the plot goes beside it as .svg)", false, NULL},
    {"--checkpoint", "checkpoint written after every epoch (default <out>.ckpt)", false, NULL},
    {"--resume", "resume from a checkpoint file", false, NULL},
    {"--device", "OpenCL device index or name substring (or DYNBLOCKS_DEVICE)", false, NULL},
    {"--augment", "random 2-pixel shifts and horizontal flips", true, NULL},
    {"--memory", "store (default) or checkpoint: what blocks keep for backward", false, NULL},
};

#define GET(f) (flags[f].value)

/* Builds spec JSON from the flags so that one parser validates both ways. */
static char *spec_from_flags(const dynb__dataset *d) {
  const char *widths = GET(F_WIDTHS) ? GET(F_WIDTHS) : "8,16,32";
  char grid[2048] = "";
  if (GET(F_TSTATES)) {
    snprintf(grid, sizeof grid, "%s", GET(F_TSTATES));
  } else {
    long steps = GET(F_STEPS) ? strtol(GET(F_STEPS), NULL, 10) : 2;
    if (steps < 1 || steps > 1000) steps = -1; /* the parser reports it */
    for (long k = 0; k <= steps; k++)
      snprintf(grid + strlen(grid), sizeof grid - strlen(grid), "%s%ld", k ? "," : "", k);
  }
  size_t cap = 1 << 16;
  char *s = malloc(cap);
  if (!s) return NULL;
  char first[32] = "";
  snprintf(first, sizeof first, "%.*s", (int)strcspn(widths, ","), widths);
  int n = snprintf(s, cap,
                   "{\"input\": {\"channels\": %d, \"height\": %d, \"width\": %d}, \"classes\": %d, "
                   "\"open\": {\"width\": %s}, \"blocks\": [",
                   d->c, d->h, d->w, d->classes, first);
  const char *p = widths;
  for (int b = 0; *p && n > 0 && (size_t)n < cap; b++) {
    size_t len = strcspn(p, ",");
    n += snprintf(s + n, cap - (size_t)n,
                  "%s{\"width\": %.*s, \"layer\": \"%s\", \"norm\": \"%s\", \"scheme\": \"%s\", "
                  "\"t_states\": [%s]%s%s%s}",
                  b ? ", " : "", (int)len, p, GET(F_LAYER) ? GET(F_LAYER) : "doublesym",
                  GET(F_NORM) ? GET(F_NORM) : "tv", GET(F_SCHEME) ? GET(F_SCHEME) : "euler", grid,
                  GET(F_TCONTROLS) ? ", \"t_controls\": [" : "",
                  GET(F_TCONTROLS) ? GET(F_TCONTROLS) : "", GET(F_TCONTROLS) ? "]" : "");
    p += len;
    if (*p == ',') p++;
  }
  if (GET(F_HEAD) && n > 0 && (size_t)n < cap)
    n += snprintf(s + n, cap - (size_t)n, "], \"head_width\": %s}", GET(F_HEAD));
  else if (n > 0 && (size_t)n < cap)
    n += snprintf(s + n, cap - (size_t)n, "]}");
  return s;
}

typedef struct run {
  FILE *csv;
  const char *log_path, *out_path, *ckpt_path;
  dynb__epoch_row rows[4096];
  int nrows;
  double best_val;
  dynb__net *net;
  dynb__train_state ts;
  bool failed;
  bool tty;
} run;

static void on_progress(void *user, int epoch, int64_t done, int64_t total, double loss,
                        double acc) {
  run *r = user;
  int64_t every = total / 10 > 0 ? total / 10 : 1;
  if (r->tty)
    fprintf(stderr, "\r  epoch %d: batch %lld/%lld  loss %.4f  acc %.4f ", epoch,
            (long long)done, (long long)total, loss, acc);
  else if (done % every == 0 || done == total)
    fprintf(stderr, "  epoch %d: batch %lld/%lld  loss %.4f  acc %.4f\n", epoch,
            (long long)done, (long long)total, loss, acc);
  if (r->tty && done == total) fprintf(stderr, "\r%72s\r", "");
}

static void on_row(void *user, const dynb__epoch_row *row0) {
  run *r = user;
  dynb__epoch_row row = *row0;
  printf("%5d %8.1f %10.3g %10.3g %9.3g %10.3g %10.4f %9.4f %10.4f %9.4f", row.epoch, row.seconds,
         row.d_running_mean, row.d_running_var, row.lr, row.d_params, row.train_loss,
         row.train_acc, row.val_loss, row.val_acc);
  if (r->net->spec.time_reg > 0) printf(" %10.4g", row.time_reg);
  printf("\n");
  fflush(stdout);
  fprintf(r->csv, "%d,%.3f,%.6g,%.6g,%.6g,%.6g,%.6f,%.6f,%.6f,%.6f,%.6g\n", row.epoch, row.seconds,
          row.d_running_mean, row.d_running_var, row.lr, row.d_params, row.train_loss,
          row.train_acc, row.val_loss, row.val_acc, row.time_reg);
  fflush(r->csv);
  if (r->nrows < 4096) r->rows[r->nrows++] = row;
  r->ts.epoch = row.epoch + 1;
  /* The best model by validation loss (training loss without validation). */
  double score = isfinite(row.val_loss) && row.val_loss > 0 ? row.val_loss : row.train_loss;
  if (score < r->best_val) {
    r->best_val = score;
    if (dynb__model_save(r->net, r->out_path, NULL, &r->ts) != DYNB_OK) {
      fprintf(stderr, "dynblocks train: %s\n", dynb_ctx_last_error(r->net->ctx));
      r->failed = true;
    }
  }
  char svg[4200];
  snprintf(svg, sizeof svg, "%.*s.svg", (int)(strlen(r->log_path) - (strlen(r->log_path) > 4 && !strcmp(r->log_path + strlen(r->log_path) - 4, ".csv") ? 4 : 0)), r->log_path);
  cli_plot_svg(svg, r->rows, r->nrows);
}

static bool load_data(const char *cmd, long train_size, double val_size, uint64_t seed,
                      dynb__dataset *train, dynb__dataset *val, dynb__dataset *test,
                      dynb__train_state *ts, bool fixed_norm) {
  char err[1024];
  if (dynb__dataset_load(GET(F_DATA), GET(F_DATADIR), false, train, err, sizeof err) != DYNB_OK ||
      dynb__dataset_load(GET(F_DATA), GET(F_DATADIR), true, test, err, sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    return false;
  }
  uint64_t rng = seed ^ UINT64_C(0x5eed);
  dynb__dataset_shuffle(train, &rng);
  /* A fraction of the training set, or a count. */
  int64_t nval = val_size < 1 ? (int64_t)(val_size * (double)train->n) : (int64_t)val_size;
  if (nval >= train->n) {
    fprintf(stderr, "dynblocks %s: --val-size %g leaves no training data (%lld samples)\n", cmd,
            val_size, (long long)train->n);
    return false;
  }
  if (dynb__dataset_split(train, nval, val) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: out of host memory\n", cmd);
    return false;
  }
  if (train_size > 0 && train_size < train->n) train->n = train_size;
  if (train->c > 4) {
    fprintf(stderr, "dynblocks %s: at most 4 input channels are supported\n", cmd);
    return false;
  }
  if (!fixed_norm) dynb__dataset_stats(train, ts->norm_mean, ts->norm_std);
  dynb__dataset_normalise(train, ts->norm_mean, ts->norm_std);
  dynb__dataset_normalise(val, ts->norm_mean, ts->norm_std);
  dynb__dataset_normalise(test, ts->norm_mean, ts->norm_std);
  return true;
}

static bool parse_optim(const char *cmd, dynb__train_desc *d) {
  d->optim = dynb__optim_desc_default();
  const char *o = GET(F_OPTIM);
  if (o && strcmp(o, "adam") == 0)
    d->optim.kind = DYNB_OPTIM_ADAM;
  else if (o && strcmp(o, "sgd") != 0) {
    fprintf(stderr, "dynblocks %s: --optim must be sgd or adam, got '%s'\n", cmd, o);
    return false;
  }
  d->optim.nesterov = GET(F_NESTEROV) != NULL;
  if (!cli_double(cmd, flags, F_COUNT, "--momentum", 0, 0.999999, 0.9, &d->optim.momentum) ||
      !cli_double(cmd, flags, F_COUNT, "--weight-decay", 0, 1, 4e-4, &d->optim.weight_decay))
    return false;
  if (d->optim.nesterov && d->optim.momentum == 0) {
    fprintf(stderr, "dynblocks %s: --nesterov needs momentum > 0\n", cmd);
    return false;
  }
  const char *m = GET(F_MEMORY);
  d->memory = DYNB_MEMORY_STORE;
  if (m && strcmp(m, "checkpoint") == 0)
    d->memory = DYNB_MEMORY_CHECKPOINT;
  else if (m && strcmp(m, "store") != 0) {
    fprintf(stderr, "dynblocks %s: --memory must be store or checkpoint, got '%s'\n", cmd, m);
    return false;
  }
  char err[512];
  if (dynb__schedule_parse(GET(F_LR) ? GET(F_LR) : "0.05@0,0.01@2", &d->lr, err, sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: --lr: %s\n", cmd, err);
    return false;
  }
  return true;
}

int cmd_train(int argc, char **argv) {
  const char *cmd = "train";
  bool help;
  if (!cli_parse(cmd, "[--spec FILE | flags] [--data NAME|DIR] [--epochs N] ...", flags, F_COUNT,
                 argc, argv, &help))
    return 2;
  if (help) return 0;
  long epochs, batch, seed, train_size;
  double val_size;
  dynb__train_desc d;
  memset(&d, 0, sizeof d);
  if (!cli_int(cmd, flags, F_COUNT, "--epochs", 0, 100000, 3, &epochs) ||
      !cli_int(cmd, flags, F_COUNT, "--batch", 1, 1 << 20, 64, &batch) ||
      !cli_int(cmd, flags, F_COUNT, "--seed", 0, 0x7fffffffL, 1, &seed) ||
      !cli_int(cmd, flags, F_COUNT, "--train-size", 0, 100000000, 12000, &train_size) ||
      !cli_double(cmd, flags, F_COUNT, "--val-size", 0, 1e8, 2000, &val_size) ||
      !parse_optim(cmd, &d))
    return 2;
  run r;
  memset(&r, 0, sizeof r);
  r.out_path = GET(F_OUT) ? GET(F_OUT) : "model.safetensors";
  r.log_path = GET(F_LOG) ? GET(F_LOG) : "train.csv";
  char ckpt[4200];
  snprintf(ckpt, sizeof ckpt, "%s.ckpt", r.out_path);
  r.ckpt_path = GET(F_CKPT) ? GET(F_CKPT) : ckpt;
  r.best_val = INFINITY;
  r.tty = isatty(2);
  dynb_ctx *ctx = cli_context(cmd, GET(F_DEVICE));
  if (!ctx) return 1;
  dynb__dataset train = {0}, val = {0}, test = {0};
  int rc = 1;
  if (GET(F_RESUME)) {
    if (dynb__model_load(ctx, GET(F_RESUME), DYNB_F32, &r.net, &r.ts) != DYNB_OK) goto done;
  }
  if (!load_data(cmd, train_size, val_size, (uint64_t)seed, &train, &val, &test, &r.ts,
                 GET(F_RESUME) != NULL))
    goto done;
  if (!r.net) {
    static dynb__net_spec spec;
    char err[1024];
    size_t len = 0;
    char *text = GET(F_SPEC) ? cli_read_text(cmd, GET(F_SPEC), &len) : spec_from_flags(&train);
    if (!text) goto done;
    if (!GET(F_SPEC)) len = strlen(text);
    dynb_status st = dynb__spec_parse(text, len, GET(F_SPEC) ? GET(F_SPEC) : "flags", &spec, err,
                                      sizeof err);
    free(text);
    if (st != DYNB_OK) {
      fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
      goto done;
    }
    if (dynb__net_create(ctx, &spec, DYNB_F32, &r.net) != DYNB_OK ||
        dynb__net_init(r.net, (uint64_t)seed) != DYNB_OK) {
      cli_fail(cmd, ctx);
      goto done;
    }
  }
  r.csv = fopen(r.log_path, GET(F_RESUME) ? "a" : "w");
  if (!r.csv) {
    fprintf(stderr, "dynblocks %s: cannot write %s\n", cmd, r.log_path);
    goto done;
  }
  if (!GET(F_RESUME))
    fprintf(r.csv, "epoch,seconds,d_running_mean,d_running_var,lr,d_params,train_loss,train_acc,"
                   "val_loss,val_acc,time_reg\n");
  fprintf(stderr, "dynblocks train: %s, %lld training / %lld validation / %lld test samples on %s\n",
          GET(F_DATA) ? GET(F_DATA) : "fashion-mnist", (long long)train.n, (long long)val.n,
          (long long)test.n, ctx->info.device_name);
  printf("%5s %8s %10s %10s %9s %10s %10s %9s %10s %9s%s\n", "epoch", "seconds", "d_rmean",
         "d_rvar", "lr", "d_params", "train_loss", "train_acc", "val_loss", "val_acc",
         r.net->spec.time_reg > 0 ? "   time_reg" : "");
  d.epochs = (int)epochs;
  d.batch = batch;
  d.seed = (uint64_t)seed;
  d.augment = GET(F_AUGMENT) != NULL;
  d.on_row = on_row;
  d.on_progress = on_progress;
  d.user = &r;
  d.checkpoint_path = r.ckpt_path;
  d.resume_path = GET(F_RESUME);
  d.state = &r.ts;
  if (dynb__train(r.net, &train, &val, &d) != DYNB_OK || r.failed) {
    cli_fail(cmd, ctx);
    goto done;
  }
  /* With no epoch run (--epochs 0, or resuming a finished run) the model as
   * it stands is the result. */
  if (isinf(r.best_val) && dynb__model_save(r.net, r.out_path, NULL, &r.ts) != DYNB_OK) {
    cli_fail(cmd, ctx);
    goto done;
  }
  /* Test accuracy of the best model, as saved. */
  dynb__net *best = NULL;
  dynb__plan *plan = NULL;
  double loss, acc;
  if (dynb__model_load(ctx, r.out_path, DYNB_F32, &best, NULL) != DYNB_OK ||
      dynb__plan_build(best, batch, DYNB_MEMORY_STORE, &plan) != DYNB_OK ||
      dynb__evaluate(plan, &test, &loss, &acc) != DYNB_OK) {
    cli_fail(cmd, ctx);
  } else {
    printf("test loss %.4f, test accuracy %.4f (%lld samples, best model %s)\n", loss, acc,
           (long long)test.n, r.out_path);
    rc = 0;
  }
  dynb__plan_free(plan);
  dynb__net_free(best);
done:
  if (r.csv) fclose(r.csv);
  dynb__net_free(r.net);
  dynb__dataset_release(&train), dynb__dataset_release(&val), dynb__dataset_release(&test);
  dynb_ctx_free(ctx);
  return rc;
}
