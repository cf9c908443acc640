/* dynblocks train: a network from a spec file or from flags, trained on a
 * data set, with the epoch table on stdout, a CSV log, an SVG plot, the
 * best model by validation loss and a resumable checkpoint. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dynblocks/dynblocks.h"
/* Only for the MPI helpers of ranks.c (internal types) and the spec check
 * of new_network; training itself goes through include/dynblocks/trainer.h. */
#include "api/api.h"

typedef struct run {
  FILE *csv;
  const char *log_path, *out_path, *ckpt_path;
  dynb_epoch_row rows[4096];
  int nrows;
  double best_val;
  dynb_ctx *ctx;
  dynb_net *net;
  dynb_train_state ts;
  bool failed;
  bool tty;
  char devices[DYNB_TRAIN_MAX_DEVICES][128]; /* device names, data-parallel runs */
  int64_t shard[DYNB_TRAIN_MAX_DEVICES];    /* the last epoch's split (--split auto moves it) */
  int rank;                               /* under mpirun; only rank 0 writes files */
  bool log_reconstruction;                /* a rec_err column */
  double warn_reconstruction;             /* --warn-reconstruction bound (0: none) */
} run;

static void on_progress(void *user, int epoch, int64_t done, int64_t total, double loss,
                        double acc) {
  run *r = user;
  int64_t every = total / 10 > 0 ? total / 10 : 1;
  if (r->rank > 0) return;
  if (r->tty)
    fprintf(stderr, "\r  epoch %d: batch %lld/%lld  loss %.4f  acc %.4f ", epoch,
            (long long)done, (long long)total, loss, acc);
  else if (done % every == 0 || done == total)
    fprintf(stderr, "  epoch %d: batch %lld/%lld  loss %.4f  acc %.4f\n", epoch,
            (long long)done, (long long)total, loss, acc);
  if (r->tty && done == total) fprintf(stderr, "\r%72s\r", "");
}

static void on_row(void *user, const dynb_epoch_row *row0) {
  run *r = user;
  dynb_epoch_row row = *row0;
  if (r->rank > 0) return;
  int nblocks = 0;
  double time_reg = 0;
  dynb_net_blocks(r->net, &nblocks, &time_reg);
  /* A refined epoch is marked "3*" in the same five columns. */
  printf(row.refined ? "%4d* %8.1f %10.3g %10.3g %9.3g %10.3g %10.4f %9.4f %10.4f %9.4f"
                     : "%5d %8.1f %10.3g %10.3g %9.3g %10.3g %10.4f %9.4f %10.4f %9.4f",
         row.epoch, row.seconds,
         row.d_running_mean, row.d_running_var, row.lr, row.d_params, row.train_loss,
         row.train_acc, row.val_loss, row.val_acc);
  if (time_reg > 0) printf(" %10.4g", row.time_reg);
  if (r->log_reconstruction) printf(" %9.3g", row.rec_err);
  printf("\n");
  /* Several devices: each one's shard and time, on stderr beside the
   * progress lines, so that stdout keeps one table row per epoch. */
  for (int k = 0; row.replicas > 1 && k < row.replicas; k++)
    fprintf(stderr,
            "  device %d (%s): shard %lld, forward+backward %.2f s (busy %.2f s), steps %.2f s\n",
            k, r->devices[k], (long long)row.shard[k], row.compute_seconds[k],
            row.busy_seconds[k], row.step_seconds[k]);
  for (int k = 0; row.replicas > 1 && k < row.replicas; k++) r->shard[k] = row.shard[k];
  fflush(stdout);
  if (row.rec_warn)
    fprintf(stderr,
            "dynblocks train: warning: epoch %d: reconstruction error %.3g of the rebuilt first "
            "state is above --warn-reconstruction %g\n",
            row.epoch, row.rec_err, r->warn_reconstruction);
  for (int b = 0; row.refined && b < nblocks; b++) {
    int nstates = 0, ncontrols = 0;
    dynb_net_block_grid(r->net, b, &nstates, &ncontrols);
    fprintf(stderr, "  epoch %d: refined block %d to %d steps, %d control points\n", row.epoch, b,
            nstates - 1, ncontrols);
  }
  fprintf(r->csv, "%d,%.3f,%.6g,%.6g,%.6g,%.6g,%.6f,%.6f,%.6f,%.6f,%.6g", row.epoch, row.seconds,
          row.d_running_mean, row.d_running_var, row.lr, row.d_params, row.train_loss,
          row.train_acc, row.val_loss, row.val_acc, row.time_reg);
  /* Each device's shard and busy seconds, ';'-separated in device order. */
  for (int k = 0; k < row.replicas; k++)
    fprintf(r->csv, "%c%lld", k ? ';' : ',', (long long)row.shard[k]);
  for (int k = 0; k < row.replicas; k++)
    fprintf(r->csv, "%c%.3f", k ? ';' : ',', row.busy_seconds[k]);
  fprintf(r->csv, ",%d", row.refined);
  fprintf(r->csv, ",%.6g", row.nfe);
  if (r->log_reconstruction) fprintf(r->csv, ",%.6g", row.rec_err);
  fprintf(r->csv, "\n");
  fflush(r->csv);
  if (r->nrows < 4096) r->rows[r->nrows++] = row;
  r->ts.epoch = row.epoch + 1;
  /* The best model by validation loss (training loss without validation). */
  double score = isfinite(row.val_loss) && row.val_loss > 0 ? row.val_loss : row.train_loss;
  if (score < r->best_val) {
    r->best_val = r->ts.best = score;
    if (dynb_net_save_state(r->net, r->out_path, &r->ts) != DYNB_OK) {
      fprintf(stderr, "dynblocks train: %s\n", dynb_ctx_last_error(r->ctx));
      r->failed = true;
    }
  }
  char svg[4200];
  snprintf(svg, sizeof svg, "%.*s.svg", (int)(strlen(r->log_path) - (strlen(r->log_path) > 4 && !strcmp(r->log_path + strlen(r->log_path) - 4, ".csv") ? 4 : 0)), r->log_path);
  cli_plot_svg(svg, r->rows, r->nrows);
}

static bool load_data(const char *cmd, const train_opts *o, dynb_ctx *ctx, dynb_dataset **train,
                      dynb_dataset **val, dynb_dataset **test, dynb_train_state *ts) {
  long train_size = o->train_size;
  double val_size = o->val_size;
  bool fixed_norm = o->resume != NULL;
  if (dynb_dataset_open(ctx, o->data, o->data_dir, 0, train) != DYNB_OK ||
      dynb_dataset_open(ctx, o->data, o->data_dir, 1, test) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, dynb_ctx_last_error(ctx));
    return false;
  }
  dynb_dataset_shuffle(*train, (uint64_t)o->seed ^ UINT64_C(0x5eed));
  int64_t n = 0, channels = 0;
  dynb_dataset_shape(*train, &n, &channels, NULL, NULL, NULL);
  /* A fraction of the training set, or a count. */
  int64_t nval = val_size < 1 ? (int64_t)(val_size * (double)n) : (int64_t)val_size;
  if (nval >= n) {
    fprintf(stderr, "dynblocks %s: --val-size %g leaves no training data (%lld samples)\n", cmd,
            val_size, (long long)n);
    return false;
  }
  if (dynb_dataset_split(*train, nval, val) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: out of host memory\n", cmd);
    return false;
  }
  if (train_size > 0) dynb_dataset_truncate(*train, train_size);
  if (channels > DYNB_TRAIN_MAX_CHANNELS) {
    fprintf(stderr, "dynblocks %s: at most 4 input channels are supported\n", cmd);
    return false;
  }
  if (!fixed_norm) dynb_dataset_stats(*train, ts->norm_mean, ts->norm_std);
  dynb_dataset_normalise(*train, ts->norm_mean, ts->norm_std);
  dynb_dataset_normalise(*val, ts->norm_mean, ts->norm_std);
  dynb_dataset_normalise(*test, ts->norm_mean, ts->norm_std);
  return true;
}


/* A new network from --spec or from the flags, initialised from the seed. */
static bool new_network(const char *cmd, const train_opts *o, dynb_ctx *ctx,
                        const dynb_dataset *train, dynb_net **out) {
  static dynb__net_spec spec;
  char err[1024];
  size_t len = 0;
  int64_t c = 0, h = 0, w = 0, classes = 0;
  dynb_dataset_shape(train, NULL, &c, &h, &w, &classes);
  char *text = o->spec ? cli_read_text(cmd, o->spec, &len)
                       : cli_train_spec_json(o, (int)c, (int)h, (int)w, (int)classes);
  if (!text) {
    if (!o->spec) fprintf(stderr, "dynblocks %s: out of host memory\n", cmd);
    return false;
  }
  if (!o->spec) len = strlen(text);
  /* Parsed here first so that a spec error names the file or "flags" (the
   * public dynb_net_create names a "<spec string>"). */
  dynb_status st = dynb__spec_parse(text, len, o->spec ? o->spec : "flags", &spec, err, sizeof err);
  if (st != DYNB_OK) {
    free(text);
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    return false;
  }
  st = dynb_net_create(ctx, text, DYNB_F32, (uint64_t)o->seed, out);
  free(text);
  if (st != DYNB_OK) {
    cli_fail(cmd, ctx);
    return false;
  }
  return true;
}

/* --devices (or DYNBLOCKS_DEVICES): indices, name substrings or `all`, as
 * device indices; 0 when neither is given (one device, --device). */
static int device_list(const char *cmd, const train_opts *o, uint32_t *idx) {
  const char *list = o->devices;
  if (!list && !o->device) {
    const char *env = getenv("DYNBLOCKS_DEVICES");
    list = env && env[0] ? env : NULL;
  }
  if (!list) return 0;
  size_t count = 0;
  if (dynb_device_list(NULL, 0, &count) != DYNB_OK || count == 0) {
    fprintf(stderr, "dynblocks %s: --devices: no OpenCL device\n", cmd);
    return -1;
  }
  if (strcmp(list, "all") == 0) {
    if (count > DYNB_MAX_REPLICAS) count = DYNB_MAX_REPLICAS;
    for (size_t i = 0; i < count; i++) idx[i] = (uint32_t)i;
    return (int)count;
  }
  int n = 0;
  char item[256];
  for (const char *p = list;; p++) {
    size_t len = strcspn(p, ",");
    if (len == 0 || len >= sizeof item) {
      fprintf(stderr, "dynblocks %s: --devices '%s': an empty or too long entry\n", cmd, list);
      return -1;
    }
    if (n == DYNB_MAX_REPLICAS) {
      fprintf(stderr, "dynblocks %s: --devices '%s': at most %d devices\n", cmd, list,
              DYNB_MAX_REPLICAS);
      return -1;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    if (dynb_device_find(item, &idx[n]) != DYNB_OK) {
      fprintf(stderr, "dynblocks %s: --devices: no device matches '%s' (see dynblocks devices)\n",
              cmd, item);
      return -1;
    }
    n++;
    p += len;
    if (*p == '\0') break;
  }
  return n;
}

/* The other replicas of a data-parallel run: a context per device (one
 * cannot span platforms) and the same network on it; parameters come from
 * nets[0] when the group starts. */
static bool replica_networks(const char *cmd, const uint32_t *idx, int n, dynb_net **nets,
                             dynb_ctx **ctxs, run *r) {
  for (int k = 1; k < n; k++) {
    char sel[16];
    snprintf(sel, sizeof sel, "%u", idx[k]);
    dynb_ctx *ctx = cli_context(cmd, sel);
    if (!ctx) return false;
    ctxs[k] = ctx;
    /* The same network: parameters come from nets[0] when training starts. */
    if (dynb_net_create_like(ctx, nets[0], 0, &nets[k]) != DYNB_OK) {
      cli_fail(cmd, ctx);
      return false;
    }
    dynb_device_info info;
    dynb_ctx_device_info(ctx, &info);
    snprintf(r->devices[k], sizeof r->devices[k], "%s", info.device_name);
  }
  return true;
}

static void free_replicas(dynb_net **nets, dynb_ctx **ctxs, int n) {
  for (int k = 1; k < n; k++) {
    dynb_net_free(nets[k]);
    dynb_ctx_free(ctxs[k]);
  }
}

/* Size of the MPI job this process was started in, from the launcher's environment (Open MPI,
 * then PMI/Hydra as MPICH and Slurm set it); 1 when not started by mpirun. */
static long launcher_size(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && *v) return strtol(v, NULL, 10);
  }
  return 1;
}

int cmd_train(int argc, char **argv) {
  const char *cmd = "train";
  static train_opts o;
  char err[1024];
  int rc = cli_report(&cli_train_command, cli_train_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  /* Several ranks without MPI support would each train (and write) the same model on their own. */
  long nranks = launcher_size();
  if (nranks > 1 && !cli_ranks_available()) {
    fprintf(stderr,
            "dynblocks %s: started by mpirun with %ld ranks, but this build has no MPI support "
            "(training across MPI ranks is not implemented yet); run it without mpirun, with --devices "
            "for several devices in one process\n",
            cmd, nranks);
    return 1;
  }
  rc = 1;
  dynb_train_desc d = dynb_train_desc_default();
  run r;
  memset(&r, 0, sizeof r);
  r.out_path = o.out;
  r.log_path = o.log;
  r.log_reconstruction = o.log_reconstruction;
  r.warn_reconstruction = o.warn_reconstruction;
  r.ckpt_path = o.checkpoint;
  r.best_val = INFINITY;
  r.tty = isatty(2);
  uint32_t idx[DYNB_TRAIN_MAX_DEVICES];
  int ndev = device_list(cmd, &o, idx);
  if (ndev < 0) return 1;
  /* Under mpirun: one device per rank, entry local-rank of --devices (or
   * the device of that index), and the split is over the ranks. */
  int local_rank = 0;
  const char *split = o.split;
  if (nranks > 1) {
    nranks = cli_ranks_start(&r.rank, &local_rank);
    size_t count = 0;
    if (ndev > 0) {
      idx[0] = idx[local_rank % ndev];
    } else if (!o.device && dynb_device_list(NULL, 0, &count) == DYNB_OK && count > 0) {
      idx[0] = (uint32_t)(local_rank % (int)count);
    }
    ndev = ndev > 0 || !o.device ? 1 : 0;
    if (r.rank > 0 && !freopen("/dev/null", "w", stdout)) return 1;
  }
  if (o.split && ndev == 0 && nranks <= 1) {
    fprintf(stderr, "dynblocks %s: --split needs --devices (or DYNBLOCKS_DEVICES)\n", cmd);
    return 1;
  }
  int64_t shard[DYNB_TRAIN_MAX_DEVICES];
  int balance = 0;
  if ((ndev > 0 || nranks > 1) &&
      dynb_split_parse(split, nranks > 1 ? (int)nranks : ndev, o.batch, shard, &balance, err,
                       sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    if (nranks > 1) cli_ranks_end();
    return 1;
  }
  char sel0[16];
  snprintf(sel0, sizeof sel0, "%u", idx[0]);
  dynb_net *nets[DYNB_TRAIN_MAX_DEVICES] = {NULL};
  dynb_ctx *ctxs[DYNB_TRAIN_MAX_DEVICES] = {NULL};
  dynb_ctx *ctx = cli_context(cmd, ndev > 0 ? sel0 : o.device);
  if (!ctx || (nranks > 1 && !cli_ranks_join(cmd, ctx))) {
    /* Before the join no collective waits: MPI_Abort ends every rank. */
    if (nranks > 1) cli_ranks_fatal();
    dynb_ctx_free(ctx);
    return 1;
  }
  r.ctx = ctx;
  dynb_device_info info0;
  dynb_ctx_device_info(ctx, &info0);
  snprintf(r.devices[0], sizeof r.devices[0], "%s", info0.device_name);
  bool trained = false;
  dynb_dataset *train = NULL, *val = NULL, *test = NULL;
  if (o.resume && dynb_net_load_state(ctx, o.resume, DYNB_F32, &r.net, &r.ts) != DYNB_OK) {
    cli_fail(cmd, ctx);
    goto done;
  }
  /* The best model so far stays unless beaten, if it is there. */
  if (o.resume && access(o.out, F_OK) == 0)
    r.best_val = r.ts.best;
  else
    r.ts.best = INFINITY;
  if (!load_data(cmd, &o, ctx, &train, &val, &test, &r.ts)) goto done;
  if (!r.net && !new_network(cmd, &o, ctx, train, &r.net)) goto done;
  nets[0] = r.net;
  if (ndev > 1 && nranks <= 1 && !replica_networks(cmd, idx, ndev, nets, ctxs, &r)) goto done;
  if (nranks > 1) {
    /* ranks.c compares the ranks' networks and data through the internal types. */
    const dynb__dataset *sets[3] = {&train->d, &val->d, &test->d};
    if (!cli_ranks_same(cmd, ctx, argc, argv, r.net->net, sets, 3)) {
      trained = true; /* every rank knows: none waits */
      goto done;
    }
  }
  r.csv = r.rank > 0 ? fopen("/dev/null", "w") : fopen(r.log_path, o.resume ? "a" : "w");
  if (!r.csv) {
    fprintf(stderr, "dynblocks %s: cannot write %s\n", cmd, r.log_path);
    goto done;
  }
  if (!o.resume)
    fprintf(r.csv, "epoch,seconds,d_running_mean,d_running_var,lr,d_params,train_loss,train_acc,"
                   "val_loss,val_acc,time_reg,shards,busy_seconds,refined,nfe%s\n",
            o.log_reconstruction ? ",rec_err" : "");
  int64_t ntrain = 0, nval = 0, ntest = 0;
  dynb_dataset_shape(train, &ntrain, NULL, NULL, NULL, NULL);
  dynb_dataset_shape(val, &nval, NULL, NULL, NULL, NULL);
  dynb_dataset_shape(test, &ntest, NULL, NULL, NULL, NULL);
  double time_reg = 0;
  dynb_net_blocks(r.net, NULL, &time_reg);
  if (r.rank == 0)
  fprintf(stderr, "dynblocks train: %s, %lld training / %lld validation / %lld test samples on %s\n",
          o.data ? o.data : "fashion-mnist", (long long)ntrain, (long long)nval,
          (long long)ntest, r.devices[0]);
  printf("%5s %8s %10s %10s %9s %10s %10s %9s %10s %9s%s%s\n", "epoch", "seconds", "d_rmean",
         "d_rvar", "lr", "d_params", "train_loss", "train_acc", "val_loss", "val_acc",
         time_reg > 0 ? "   time_reg" : "", o.log_reconstruction ? "   rec_err" : "");
  d.epochs = (int)o.epochs;
  d.batch = o.batch;
  d.lr = o.lr_text;
  d.optim = o.optim.kind;
  d.momentum = o.optim.momentum, d.weight_decay = o.optim.weight_decay;
  d.nesterov = o.optim.nesterov;
  d.beta1 = o.optim.beta1, d.beta2 = o.optim.beta2, d.eps = o.optim.eps;
  d.memory = o.memory;
  d.seed = (uint64_t)o.seed;
  d.augment = o.augment;
  d.log_reconstruction = o.log_reconstruction;
  d.warn_reconstruction = o.warn_reconstruction;
  d.on_epoch = on_row;
  d.on_progress = on_progress;
  d.user = &r;
  d.checkpoint_path = r.rank == 0 ? r.ckpt_path : NULL;
  d.resume_path = o.resume;
  d.state = &r.ts;
  d.refine_epochs = o.refine_epochs;
  d.nrefine = o.nrefine;
  d.split = split;
  if (nranks > 1) {
    /* --split auto (the default): the balancer gathers every rank's timing. */
    if (r.rank == 0)
      fprintf(stderr, "dynblocks train: %ld MPI ranks, shards %s of %lld\n", nranks,
              balance ? "auto" : split, (long long)o.batch);
  } else if (ndev > 1) {
    d.devices = ndev;
    d.nets = nets;
    memcpy(r.shard, shard, sizeof r.shard);
    for (int k = 0; k < ndev; k++)
      fprintf(stderr, "dynblocks train: device %d: %s, shard %lld of %lld%s\n", k, r.devices[k],
              (long long)shard[k], (long long)o.batch, balance ? " (to start; --split auto)" : "");
  }
  trained = true;
  /* --epochs 0 (nothing to run) skips the trainer, as it did when it ran no epoch. */
  if ((d.epochs > 0 && dynb_train(r.net, train, val, &d) != DYNB_OK) || r.failed) {
    cli_fail(cmd, ctx);
    /* Rank 0 could not write the model: the others wait in the test. */
    if (nranks > 1) cli_ranks_abort(ctx, "it could not write the model");
    goto done;
  }
  /* With no epoch run (--epochs 0, or resuming a finished run) the model as
   * it stands is the result. */
  if (r.rank == 0 && isinf(r.best_val) &&
      dynb_net_save_state(r.net, r.out_path, &r.ts) != DYNB_OK) {
    cli_fail(cmd, ctx);
    if (nranks > 1) cli_ranks_abort(ctx, "it could not write the model");
    goto done;
  }
  /* Test accuracy of the best model, as saved. */
  dynb_net *best = NULL;
  double loss, acc;
  dynb_status est = r.rank == 0 ? dynb_net_load(ctx, r.out_path, DYNB_F32, &best) : DYNB_OK;
  if (nranks > 1) {
    /* Rank 0's model, split over the ranks. */
    est = cli_ranks_test(ctx, r.net->net, est == DYNB_OK && best ? best->net : NULL, shard,
                         &test->d, &loss, &acc);
  } else if (est == DYNB_OK && ndev > 1) {
    /* Split over the devices as validation was (SPEC §2.1). */
    nets[0] = best;
    est = dynb_evaluate(nets, ndev, r.shard, o.batch, test, &loss, &acc);
    nets[0] = r.net;
  } else if (est == DYNB_OK) {
    est = dynb_evaluate(&best, 1, NULL, o.batch, test, &loss, &acc);
  }
  if (est != DYNB_OK) {
    /* Another rank's failure is rank 0's to report. */
    if (r.rank == 0 || strncmp(dynb_ctx_last_error(ctx), "rank ", 5) != 0) cli_fail(cmd, ctx);
  } else {
    printf("test loss %.4f, test accuracy %.4f (%lld samples, best model %s)\n", loss, acc,
           (long long)ntest, r.out_path);
    rc = 0;
  }
  dynb_net_free(best);
done:
  /* A rank that fails before training: the others wait in a collective. */
  if (nranks > 1 && !trained) cli_ranks_abort(ctx, "it failed before training (its error is above)");
  if (r.csv) fclose(r.csv);
  if (nranks <= 1) free_replicas(nets, ctxs, ndev);
  dynb_net_free(r.net);
  dynb_dataset_free(train), dynb_dataset_free(val), dynb_dataset_free(test);
  dynb_ctx_free(ctx);
  if (nranks > 1) cli_ranks_end();
  return rc;
}
