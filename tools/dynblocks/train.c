/* dynblocks train: a network from a spec file or from flags, trained on a
 * data set, with the epoch table on stdout, a CSV log, an SVG plot, the
 * best model by validation loss and a resumable checkpoint. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "parallel/group.h"

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
  const char *devices[DYNB_MAX_REPLICAS]; /* device names, data-parallel runs */
  int64_t shard[DYNB_MAX_REPLICAS];       /* the last epoch's split (--split auto moves it) */
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

static void on_row(void *user, const dynb__epoch_row *row0) {
  run *r = user;
  dynb__epoch_row row = *row0;
  if (r->rank > 0) return;
  /* A refined epoch is marked "3*" in the same five columns. */
  printf(row.refined ? "%4d* %8.1f %10.3g %10.3g %9.3g %10.3g %10.4f %9.4f %10.4f %9.4f"
                     : "%5d %8.1f %10.3g %10.3g %9.3g %10.3g %10.4f %9.4f %10.4f %9.4f",
         row.epoch, row.seconds,
         row.d_running_mean, row.d_running_var, row.lr, row.d_params, row.train_loss,
         row.train_acc, row.val_loss, row.val_acc);
  if (r->net->spec.time_reg > 0) printf(" %10.4g", row.time_reg);
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
  for (int b = 0; row.refined && b < r->net->spec.nblocks; b++)
    fprintf(stderr, "  epoch %d: refined block %d to %d steps, %d control points\n", row.epoch, b,
            r->net->spec.blocks[b].nstates - 1, r->net->spec.blocks[b].ncontrols);
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
    if (dynb__model_save(r->net, r->out_path, NULL, &r->ts) != DYNB_OK) {
      fprintf(stderr, "dynblocks train: %s\n", dynb_ctx_last_error(r->net->ctx));
      r->failed = true;
    }
  }
  char svg[4200];
  snprintf(svg, sizeof svg, "%.*s.svg", (int)(strlen(r->log_path) - (strlen(r->log_path) > 4 && !strcmp(r->log_path + strlen(r->log_path) - 4, ".csv") ? 4 : 0)), r->log_path);
  cli_plot_svg(svg, r->rows, r->nrows);
}

static bool load_data(const char *cmd, const train_opts *o, dynb__dataset *train,
                      dynb__dataset *val, dynb__dataset *test, dynb__train_state *ts) {
  char err[1024];
  long train_size = o->train_size;
  double val_size = o->val_size;
  bool fixed_norm = o->resume != NULL;
  if (dynb__dataset_load(o->data, o->data_dir, false, train, err, sizeof err) != DYNB_OK ||
      dynb__dataset_load(o->data, o->data_dir, true, test, err, sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    return false;
  }
  uint64_t rng = (uint64_t)o->seed ^ UINT64_C(0x5eed);
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


/* A new network from --spec or from the flags, initialised from the seed. */
static bool new_network(const char *cmd, const train_opts *o, dynb_ctx *ctx,
                        const dynb__dataset *train, dynb__net **out) {
  static dynb__net_spec spec;
  char err[1024];
  size_t len = 0;
  char *text = o->spec ? cli_read_text(cmd, o->spec, &len)
                       : cli_train_spec_json(o, train->c, train->h, train->w, train->classes);
  if (!text) {
    if (!o->spec) fprintf(stderr, "dynblocks %s: out of host memory\n", cmd);
    return false;
  }
  if (!o->spec) len = strlen(text);
  dynb_status st = dynb__spec_parse(text, len, o->spec ? o->spec : "flags", &spec, err, sizeof err);
  free(text);
  if (st != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    return false;
  }
  if (dynb__net_create(ctx, &spec, DYNB_F32, out) != DYNB_OK ||
      dynb__net_init(*out, (uint64_t)o->seed) != DYNB_OK) {
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
static bool replica_networks(const char *cmd, const uint32_t *idx, int n, dynb__net **nets,
                             run *r) {
  r->devices[0] = nets[0]->ctx->info.device_name;
  for (int k = 1; k < n; k++) {
    char sel[16];
    snprintf(sel, sizeof sel, "%u", idx[k]);
    dynb_ctx *ctx = cli_context(cmd, sel);
    if (!ctx) return false;
    if (dynb__net_create(ctx, &nets[0]->spec, nets[0]->real, &nets[k]) != DYNB_OK) {
      cli_fail(cmd, ctx);
      dynb_ctx_free(ctx);
      return false;
    }
    r->devices[k] = ctx->info.device_name;
  }
  return true;
}

static void free_replicas(dynb__net **nets, int n) {
  for (int k = 1; k < n; k++) {
    if (!nets[k]) continue;
    dynb_ctx *ctx = nets[k]->ctx;
    dynb__net_free(nets[k]);
    dynb_ctx_free(ctx);
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
  dynb__train_desc d;
  memset(&d, 0, sizeof d);
  run r;
  memset(&r, 0, sizeof r);
  r.out_path = o.out;
  r.log_path = o.log;
  r.log_reconstruction = o.log_reconstruction;
  r.warn_reconstruction = o.warn_reconstruction;
  r.ckpt_path = o.checkpoint;
  r.best_val = INFINITY;
  r.tty = isatty(2);
  uint32_t idx[DYNB_MAX_REPLICAS];
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
  int64_t shard[DYNB_MAX_REPLICAS];
  if ((ndev > 0 || nranks > 1) &&
      dynb__split_parse(split, nranks > 1 ? (int)nranks : ndev, o.batch, shard, err,
                        sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    if (nranks > 1) cli_ranks_end();
    return 1;
  }
  char sel0[16];
  snprintf(sel0, sizeof sel0, "%u", idx[0]);
  dynb__net *nets[DYNB_MAX_REPLICAS] = {NULL};
  dynb_ctx *ctx = cli_context(cmd, ndev > 0 ? sel0 : o.device);
  if (!ctx || (nranks > 1 && !cli_ranks_join(cmd, ctx))) {
    /* Before the join no collective waits: MPI_Abort ends every rank. */
    if (nranks > 1) cli_ranks_fatal();
    dynb_ctx_free(ctx);
    return 1;
  }
  bool trained = false;
  dynb__dataset train = {0}, val = {0}, test = {0};
  if (o.resume && dynb__model_load(ctx, o.resume, DYNB_F32, &r.net, &r.ts) != DYNB_OK) {
    cli_fail(cmd, ctx);
    goto done;
  }
  /* The best model so far stays unless beaten, if it is there. */
  if (o.resume && access(o.out, F_OK) == 0)
    r.best_val = r.ts.best;
  else
    r.ts.best = INFINITY;
  if (!load_data(cmd, &o, &train, &val, &test, &r.ts)) goto done;
  if (!r.net && !new_network(cmd, &o, ctx, &train, &r.net)) goto done;
  nets[0] = r.net;
  if (ndev > 1 && nranks <= 1 && !replica_networks(cmd, idx, ndev, nets, &r)) goto done;
  if (nranks > 1) {
    const dynb__dataset *sets[3] = {&train, &val, &test};
    if (!cli_ranks_same(cmd, ctx, argc, argv, r.net, sets, 3)) {
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
  if (r.rank == 0)
  fprintf(stderr, "dynblocks train: %s, %lld training / %lld validation / %lld test samples on %s\n",
          o.data ? o.data : "fashion-mnist", (long long)train.n, (long long)val.n,
          (long long)test.n, ctx->info.device_name);
  printf("%5s %8s %10s %10s %9s %10s %10s %9s %10s %9s%s%s\n", "epoch", "seconds", "d_rmean",
         "d_rvar", "lr", "d_params", "train_loss", "train_acc", "val_loss", "val_acc",
         r.net->spec.time_reg > 0 ? "   time_reg" : "", o.log_reconstruction ? "   rec_err" : "");
  d.epochs = (int)o.epochs;
  d.batch = o.batch;
  d.lr = o.lr;
  d.optim = o.optim;
  d.memory = o.memory;
  d.seed = (uint64_t)o.seed;
  d.augment = o.augment;
  d.log_reconstruction = o.log_reconstruction;
  d.warn_reconstruction = o.warn_reconstruction;
  d.on_row = on_row;
  d.on_progress = on_progress;
  d.user = &r;
  d.checkpoint_path = r.rank == 0 ? r.ckpt_path : NULL;
  d.resume_path = o.resume;
  d.state = &r.ts;
  d.refine_epochs = o.refine_epochs;
  d.nrefine = o.nrefine;
  if (nranks > 1) {
    d.replicas = (int)nranks;
    d.shard = shard;
    /* --split auto (the default): the balancer gathers every rank's timing. */
    d.balance = dynb__split_is_auto(split);
    if (r.rank == 0)
      fprintf(stderr, "dynblocks train: %ld MPI ranks, shards %s of %lld\n", nranks,
              d.balance ? "auto" : split, (long long)o.batch);
  } else if (ndev > 1) {
    d.replicas = ndev;
    d.nets = nets;
    d.shard = shard;
    d.balance = dynb__split_is_auto(o.split);
    memcpy(r.shard, shard, sizeof r.shard);
    for (int k = 0; k < ndev; k++)
      fprintf(stderr, "dynblocks train: device %d: %s, shard %lld of %lld%s\n", k, r.devices[k],
              (long long)shard[k], (long long)o.batch, d.balance ? " (to start; --split auto)" : "");
  }
  trained = true;
  if (dynb__train(r.net, &train, &val, &d) != DYNB_OK || r.failed) {
    cli_fail(cmd, ctx);
    /* Rank 0 could not write the model: the others wait in the test. */
    if (nranks > 1) cli_ranks_abort(ctx, "it could not write the model");
    goto done;
  }
  /* With no epoch run (--epochs 0, or resuming a finished run) the model as
   * it stands is the result. */
  if (r.rank == 0 && isinf(r.best_val) &&
      dynb__model_save(r.net, r.out_path, NULL, &r.ts) != DYNB_OK) {
    cli_fail(cmd, ctx);
    if (nranks > 1) cli_ranks_abort(ctx, "it could not write the model");
    goto done;
  }
  /* Test accuracy of the best model, as saved. */
  dynb__net *best = NULL;
  dynb__plan *plan = NULL;
  double loss, acc;
  dynb_status est = r.rank == 0 ? dynb__model_load(ctx, r.out_path, DYNB_F32, &best, NULL) : DYNB_OK;
  if (nranks > 1) {
    /* Rank 0's model, split over the ranks. */
    est = cli_ranks_test(ctx, r.net, est == DYNB_OK ? best : NULL, shard, &test, &loss, &acc);
  } else if (est == DYNB_OK && ndev > 1) {
    /* Split over the devices as validation was (SPEC §2.1). */
    nets[0] = best;
    est = dynb__evaluate_split(nets, ndev, r.shard, &test, &loss, &acc);
    nets[0] = r.net;
  } else if (est == DYNB_OK) {
    est = dynb__plan_build(best, o.batch, DYNB_MEMORY_STORE, &plan);
    if (est == DYNB_OK) est = dynb__evaluate(plan, &test, &loss, &acc);
  }
  if (est != DYNB_OK) {
    /* Another rank's failure is rank 0's to report. */
    if (r.rank == 0 || strncmp(dynb_ctx_last_error(ctx), "rank ", 5) != 0) cli_fail(cmd, ctx);
  } else {
    printf("test loss %.4f, test accuracy %.4f (%lld samples, best model %s)\n", loss, acc,
           (long long)test.n, r.out_path);
    rc = 0;
  }
  dynb__plan_free(plan);
  dynb__net_free(best);
done:
  /* A rank that fails before training: the others wait in a collective. */
  if (nranks > 1 && !trained) cli_ranks_abort(ctx, "it failed before training (its error is above)");
  if (r.csv) fclose(r.csv);
  if (nranks <= 1) free_replicas(nets, ndev);
  dynb__net_free(r.net);
  dynb__dataset_release(&train), dynb__dataset_release(&val), dynb__dataset_release(&test);
  dynb_ctx_free(ctx);
  if (nranks > 1) cli_ranks_end();
  return rc;
}
