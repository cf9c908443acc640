/* dynblocks eval, predict, grad and bench: commands over a model file or a
 * spec, each a thin use of the library. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "io/io.h"

static double now_seconds(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_eval(int argc, char **argv) {
  const char *cmd = "eval";
  eval_opts o;
  char err[1024];
  int rc = cli_report(&cli_eval_command, cli_eval_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  dynb_ctx *ctx = cli_context(cmd, o.device);
  if (!ctx) return 1;
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  dynb__train_state ts;
  dynb__dataset d = {0};
  rc = 1;
  if (dynb__model_load(ctx, o.model, DYNB_F32, &net, &ts) != DYNB_OK) {
    cli_fail(cmd, ctx);
  } else if (dynb__dataset_load(o.data, o.data_dir, o.test_split, &d, err, sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks eval: %s\n", err);
  } else if (d.c != net->spec.in_channels || d.h != net->spec.in_height || d.w != net->spec.in_width) {
    fprintf(stderr, "dynblocks eval: data of %dx%dx%d does not fit the model's input %dx%dx%d\n",
            d.c, d.h, d.w, net->spec.in_channels, net->spec.in_height, net->spec.in_width);
  } else {
    double loss, acc;
    if (ts.norm_std[0] > 0) dynb__dataset_normalise(&d, ts.norm_mean, ts.norm_std);
    if (dynb__plan_build(net, o.batch, DYNB_MEMORY_STORE, &plan) != DYNB_OK ||
        dynb__evaluate(plan, &d, &loss, &acc) != DYNB_OK) {
      cli_fail(cmd, ctx);
    } else {
      printf("loss %.6f accuracy %.4f samples %lld\n", loss, acc, (long long)d.n);
      rc = 0;
    }
  }
  dynb__dataset_release(&d);
  dynb__plan_free(plan);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
  return rc;
}

/* A batch file: x (F32 N×C×H×W) and, for grad, y (I32 or I64, N). The
 * inputs are the network's inputs as they are (no normalisation). */
typedef struct batch_file {
  int64_t n;
  float *x;
  int32_t *y;
} batch_file;

static bool read_batch(const char *cmd, const char *path, const dynb__net_spec *s, bool labels,
                       batch_file *b) {
  dynb__st_file f;
  char err[1024];
  memset(b, 0, sizeof *b);
  if (dynb__st_open(path, &f, err, sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    return false;
  }
  const dynb__st_tensor *x = dynb__st_find(&f, "x"), *y = dynb__st_find(&f, "y");
  bool ok = false;
  if (!x || x->dtype != DYNB_ST_F32 || x->ndim != 4 || x->dims[1] != s->in_channels ||
      x->dims[2] != s->in_height || x->dims[3] != s->in_width || x->dims[0] < 1) {
    fprintf(stderr, "dynblocks %s: %s: needs 'x' as F32 [N, %d, %d, %d]\n", cmd, path,
            s->in_channels, s->in_height, s->in_width);
  } else if (labels && (!y || (y->dtype != DYNB_ST_I32 && y->dtype != DYNB_ST_I64) ||
                        y->ndim != 1 || y->dims[0] != x->dims[0])) {
    fprintf(stderr, "dynblocks %s: %s: needs 'y' as I32 or I64 [%lld]\n", cmd, path,
            (long long)x->dims[0]);
  } else {
    b->n = x->dims[0];
    size_t n = (size_t)dynb__st_numel(x);
    b->x = malloc(n * sizeof *b->x);
    b->y = calloc((size_t)b->n, sizeof *b->y);
    ok = b->x && b->y;
    if (ok) memcpy(b->x, dynb__st_data(&f, x), n * sizeof *b->x);
    for (int64_t i = 0; ok && labels && i < b->n; i++) {
      int64_t v = 0;
      if (y->dtype == DYNB_ST_I32) {
        int32_t v32;
        memcpy(&v32, dynb__st_data(&f, y) + 4 * i, 4);
        v = v32;
      } else {
        memcpy(&v, dynb__st_data(&f, y) + 8 * i, 8);
      }
      if (v < 0 || v >= s->classes) {
        fprintf(stderr, "dynblocks %s: %s: y[%lld] = %lld is not a class in 0..%d\n", cmd, path,
                (long long)i, (long long)v, s->classes - 1);
        ok = false;
      }
      b->y[i] = (int32_t)v;
    }
  }
  dynb__st_release(&f);
  if (!ok) {
    free(b->x), free(b->y);
    b->x = NULL, b->y = NULL;
  }
  return ok;
}

/* Shared by predict and grad: flags, model, batch, plan with the inputs set. */
typedef struct model_run {
  dynb_ctx *ctx;
  dynb__net *net;
  dynb__plan *plan;
  batch_file b;
  const char *out;
} model_run;

static int model_run_open(const cli_command *c, int argc, char **argv, bool labels, model_run *m) {
  const char *cmd = c->name;
  model_opts o;
  char err[1024];
  memset(m, 0, sizeof *m);
  int rc = cli_report(c, cli_model_options(c, argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  const char *model = o.model, *input = o.input;
  m->out = o.out;
  m->ctx = cli_context(cmd, o.device);
  if (!m->ctx) return 1;
  if (dynb__model_load(m->ctx, model, DYNB_F32, &m->net, NULL) != DYNB_OK) return cli_fail(cmd, m->ctx);
  if (!read_batch(cmd, input, &m->net->spec, labels, &m->b)) return 1;
  if (dynb__plan_build(m->net, m->b.n, DYNB_MEMORY_STORE, &m->plan) != DYNB_OK ||
      dynb__tensor_write(m->ctx, dynb__plan_input(m->plan), m->b.x) != DYNB_OK ||
      dynb__tensor_write(m->ctx, dynb__plan_labels(m->plan), m->b.y) != DYNB_OK)
    return cli_fail(cmd, m->ctx);
  return -1; /* go on */
}

static void model_run_close(model_run *m) {
  free(m->b.x), free(m->b.y);
  dynb__plan_free(m->plan);
  dynb__net_free(m->net);
  dynb_ctx_free(m->ctx);
}

/* Writes named device tensors (F32) to a safetensors file. */
static int write_tensors(const char *cmd, dynb_ctx *ctx, const char *path, const char **names,
                         const dynb__tensor *const *ts, int n) {
  dynb__st_entry *e = calloc((size_t)n, sizeof *e);
  float **bufs = calloc((size_t)n, sizeof *bufs);
  int rc = e && bufs ? 0 : 1;
  for (int i = 0; rc == 0 && i < n; i++) {
    bufs[i] = malloc(dynb__tensor_numel(ts[i]) * sizeof(float));
    if (!bufs[i] || dynb__tensor_read(ctx, ts[i], bufs[i]) != DYNB_OK) rc = 1;
    e[i] = (dynb__st_entry){names[i], DYNB_ST_F32, ts[i]->ndim, ts[i]->dims, bufs[i]};
  }
  char err[1024];
  if (rc == 0 && dynb__st_write(path, e, n, NULL, NULL, 0, err, sizeof err) != DYNB_OK) {
    fprintf(stderr, "dynblocks %s: %s\n", cmd, err);
    rc = 1;
  }
  for (int i = 0; bufs && i < n; i++) free(bufs[i]);
  free(bufs), free(e);
  return rc;
}

int cmd_predict(int argc, char **argv) {
  model_run m;
  int rc = model_run_open(&cli_predict_command, argc, argv, false, &m);
  if (rc < 0) {
    if (dynb__plan_forward(m.plan, false) != DYNB_OK) {
      rc = cli_fail("predict", m.ctx);
    } else {
      const char *names[1] = {"logits"};
      const dynb__tensor *ts[1] = {dynb__plan_logits(m.plan)};
      rc = write_tensors("predict", m.ctx, m.out, names, ts, 1);
    }
  }
  model_run_close(&m);
  return rc;
}

int cmd_grad(int argc, char **argv) {
  model_run m;
  int rc = model_run_open(&cli_grad_command, argc, argv, true, &m);
  if (rc < 0) {
    rc = 1;
    dynb__net *net = m.net;
    if (dynb__net_zero_grads(net) != DYNB_OK || dynb__plan_forward(m.plan, true) != DYNB_OK ||
        dynb__plan_backward(m.plan, true) != DYNB_OK) {
      cli_fail("grad", m.ctx);
    } else {
      size_t n = 2;
      for (size_t i = 0; i < net->ntensors; i++) n += net->tensors[i].trainable;
      const char **names = calloc(n, sizeof *names);
      const dynb__tensor **ts = calloc(n, sizeof *ts);
      char (*buf)[112] = calloc(n, sizeof *buf);
      int64_t one = 1;
      dynb__tensor loss = dynb__tensor_sub(dynb__plan_loss(m.plan), 0, 1, &one);
      if (names && ts && buf) {
        int k = 0;
        names[k] = "loss", ts[k++] = &loss;
        names[k] = "grad.x", ts[k++] = dynb__plan_input_grad(m.plan);
        for (size_t i = 0; i < net->ntensors; i++) {
          if (!net->tensors[i].trainable) continue;
          snprintf(buf[k], sizeof buf[k], "grad.%s", net->tensors[i].name);
          names[k] = buf[k], ts[k] = &net->tensors[i].grad, k++;
        }
        rc = write_tensors("grad", m.ctx, m.out, names, ts, k);
      }
      free(names), free(ts), free(buf);
    }
  }
  model_run_close(&m);
  return rc;
}

/* A VmRSS/VmHWM-style field of /proc/self/status in bytes; 0 where there
 * is none (not Linux). */
static size_t proc_status_bytes(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kib = 0, n = strlen(field);
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, field, n) == 0 && line[n] == ':') kib = strtoull(line + n + 1, NULL, 10);
  if (f) fclose(f);
  return kib * 1024;
}

/* Restarts the kernel's peak-RSS counter (VmHWM) at the current RSS. */
static void restart_peak_rss(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (f) fputs("5", f), fclose(f);
}

/* One training step as bench times it: zero gradients, forward, backward,
 * optimiser, then wait for the device. Labelled for --profile. */
static dynb_status train_step(dynb_ctx *ctx, dynb__net *net, dynb__plan *plan,
                              dynb__optimizer *opt) {
  dynb__profile_pass(ctx, "");
  dynb__profile_layer(ctx, "zero grads", -1);
  dynb_status st = dynb__net_zero_grads(net);
  if (st == DYNB_OK) st = dynb__plan_forward(plan, true);
  if (st == DYNB_OK) st = dynb__plan_backward(plan, false);
  dynb__profile_pass(ctx, "");
  dynb__profile_layer(ctx, "optimizer", -1);
  if (st == DYNB_OK) st = dynb__optimizer_step(opt, 0.0);
  if (st == DYNB_OK) st = dynb__finish(ctx);
  return st;
}

/* --profile: `steps` more training steps with every command's device time
 * recorded, then the tables. Each step waits for the device, as the timed
 * ones do, so that the measured wall time is comparable. */
static dynb_status profile_steps(dynb_ctx *ctx, dynb__net *net, dynb__plan *plan,
                                 dynb__optimizer *opt, long steps) {
  DYNB_TRY(dynb__profile_begin(ctx));
  double wall = 0;
  dynb_status st = DYNB_OK;
  for (long i = 0; st == DYNB_OK && i < steps; i++) {
    double t0 = now_seconds();
    st = train_step(ctx, net, plan, opt);
    wall += now_seconds() - t0;
  }
  dynb__prof_sample *s = NULL;
  size_t n = 0;
  if (st != DYNB_OK) {
    dynb__profile_release(ctx);
    return st;
  }
  DYNB_TRY(dynb__profile_end(ctx, &s, &n));
  cli_print_profile(s, n, steps, wall);
  dynb__free(ctx, s);
  return DYNB_OK;
}

int cmd_bench(int argc, char **argv) {
  const char *cmd = "bench";
  bench_opts o;
  char err[1024];
  int rc = cli_report(&cli_bench_command, cli_bench_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  const char *spec_path = o.spec;
  long batch = o.batch, iters = o.iters;
  static dynb__net_spec spec;
  if (!cli_read_spec(cmd, spec_path, &spec)) return 1;
  dynb_ctx *ctx = cli_context(cmd, o.device);
  if (!ctx) return 1;
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  dynb__optimizer *opt = NULL;
  dynb__optim_desc od = dynb__optim_desc_default();
  rc = 1;
  /* Host memory (PoCL's device memory is host memory): the resident set
   * once the network exists, its peak while the plan is built (route
   * timing uses scratch tensors), and its peak over the steps after the two
   * warm-up ones (which load the remaining kernels). */
  size_t rss_base = 0, rss_build = 0;
  dynb_status st = dynb__net_create(ctx, &spec, DYNB_F32, &net);
  if (st == DYNB_OK) st = dynb__net_init(net, 1);
  rss_base = proc_status_bytes("VmRSS");
  restart_peak_rss();
  if (st == DYNB_OK)
    st = dynb__plan_build(net, batch, o.memory, &plan);
  if (st == DYNB_OK) st = dynb__optimizer_create(net, &od, &opt);
  /* Zero inputs and labels (class 0): throughput does not depend on the
   * values, but nothing may read memory never written (valgrind found the
   * loss kernels reading unwritten labels). */
  if (st == DYNB_OK) st = dynb__tensor_zero(ctx, dynb__plan_input(plan));
  if (st == DYNB_OK) st = dynb__tensor_zero(ctx, dynb__plan_labels(plan));
  rss_build = proc_status_bytes("VmHWM");
  if (st == DYNB_OK) {
    double t_train = 0, t_infer = 0;
    for (long i = 0; st == DYNB_OK && i < iters + 2; i++) {
      if (i == 2) restart_peak_rss();
      double t0 = now_seconds();
      st = train_step(ctx, net, plan, opt);
      if (i >= 2) t_train += now_seconds() - t0;
    }
    for (long i = 0; st == DYNB_OK && i < iters + 2; i++) {
      double t0 = now_seconds();
      st = dynb__plan_forward(plan, false);
      if (st == DYNB_OK) st = dynb__finish(ctx);
      if (i >= 2) t_infer += now_seconds() - t0;
    }
    /* Roofline figures: the convolution work of a step, counted from the
     * plan, against the device's FMA rate measured by a microkernel (each
     * width timed at about 20 ms a launch, best of 3). */
    double conv_fwd = 0, conv_bwd = 0;
    dynb__peak peak = {0};
    if (st == DYNB_OK) {
      dynb__plan_conv_flops(plan, false, &conv_fwd, &conv_bwd);
      st = dynb__peak_measure(ctx, net->real, 0.02, &peak);
    }
    if (st == DYNB_OK) {
      size_t params = 0;
      for (size_t i = 0; i < net->ntensors; i++)
        params += dynb__tensor_numel(&net->tensors[i].value) * dynb__dtype_size(net->real) *
                  (net->tensors[i].trainable ? 2 : 1);
      size_t state = 0;
      for (size_t i = 0; i < dynb__optimizer_state_count(opt); i++) {
        const dynb__tensor *t = &dynb__optimizer_state_at(opt, i)->value;
        state += dynb__tensor_numel(t) * dynb__dtype_size(t->dtype);
      }
      size_t peak_bytes = dynb__plan_bytes(plan) + params + state;
      double tr = (double)batch * (double)iters / t_train, inf = (double)batch * (double)iters / t_infer;
      double step_flops = conv_fwd + conv_bwd;
      double conv_gflops = step_flops * tr / (double)batch / 1e9;
      double infer_gflops = conv_fwd * inf / (double)batch / 1e9;
      double fraction = peak.gflops > 0 ? conv_gflops / peak.gflops : 0;
      printf("device          %s\nbatch           %ld\ntrain img/s     %.1f\ninfer img/s     %.1f\n"
             "peak bytes      %zu (plan %zu, parameters and gradients %zu, optimiser state %zu)\n",
             ctx->info.device_name, batch, tr, inf, peak_bytes, dynb__plan_bytes(plan), params, state);
      printf("conv FLOP/step  %.4g (forward %.4g, backward %.4g; 2 per multiply-add)\n"
             "conv GFLOP/s    %.1f training, %.1f inference\n"
             "peak GFLOP/s    %.1f (FMA microkernel, vectors of %d)\n"
             "of peak         %.1f%% training, %.1f%% inference\n",
             step_flops, conv_fwd, conv_bwd, conv_gflops, infer_gflops, peak.gflops, peak.width,
             100 * fraction, peak.gflops > 0 ? 100 * infer_gflops / peak.gflops : 0);
      if (o.profile) st = profile_steps(ctx, net, plan, opt, iters);
      if (st == DYNB_OK) {
        printf("{\"train_img_per_s\": %.3f, \"infer_img_per_s\": %.3f, \"peak_bytes\": %zu, "
               "\"rss_base_bytes\": %zu, \"rss_build_peak_bytes\": %zu, \"rss_peak_bytes\": %zu, "
               "\"conv_flops_per_step\": %.0f, \"conv_gflops\": %.3f, \"infer_conv_gflops\": %.3f, "
               "\"peak_gflops\": %.3f, \"fraction_of_peak\": %.4f}\n",
               tr, inf, peak_bytes, rss_base, rss_build, proc_status_bytes("VmHWM"), step_flops,
               conv_gflops, infer_gflops, peak.gflops, fraction);
        rc = 0;
      }
    }
  }
  if (rc) cli_fail(cmd, ctx);
  dynb__optimizer_free(opt);
  dynb__plan_free(plan);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
  return rc;
}

int cmd_fold(int argc, char **argv) {
  const char *cmd = "fold";
  fold_opts o;
  char err[1024];
  int rc = cli_report(&cli_fold_command, cli_fold_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  const char *model = o.model, *out = o.out;
  dynb_ctx *ctx = cli_context(cmd, o.device);
  if (!ctx) return 1;
  dynb__net *net = NULL;
  dynb__train_state ts;
  rc = 0;
  if (dynb__model_load(ctx, model, DYNB_F32, &net, &ts) != DYNB_OK ||
      dynb__net_fold_batch_norms(net) != DYNB_OK || dynb__model_save(net, out, NULL, &ts) != DYNB_OK)
    rc = cli_fail(cmd, ctx);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
  return rc;
}

/* The real type a model file's values are in (its head's weight), so that
 * an f64 model stays f64 where the device has fp64. */
static dynb_dtype file_real(dynb_ctx *ctx, const char *path) {
  dynb__st_file f;
  char err[1024];
  if (dynb__st_open(path, &f, err, sizeof err) != DYNB_OK) return DYNB_F32;
  const dynb__st_tensor *w = dynb__st_find(&f, "linear.weight");
  bool f64 = w && w->dtype == DYNB_ST_F64;
  dynb__st_release(&f);
  return f64 && ctx->info.has_fp64 ? DYNB_F64 : DYNB_F32;
}

/* --t-states / --t-controls on block b: a grid not given stays (states) or
 * follows the new state grid (controls), as in a spec. */
static dynb_status regrid_block(dynb__net *net, int b, const refine_opts *o, char *err,
                                size_t errlen) {
  static double keep[DYNB_MAX_TIME_POINTS];
  const dynb__block_spec *bs = &net->spec.blocks[b];
  const double *ts = o->t_states, *tc = o->t_controls;
  int ns = o->nstates, nc = o->ncontrols;
  if (!ns) {
    memcpy(keep, bs->t_states, (size_t)bs->nstates * sizeof *keep);
    ts = keep, ns = bs->nstates;
  }
  if (!nc) tc = ts, nc = ns;
  return dynb__net_regrid(net, b, ns, ts, nc, tc, err, errlen);
}

int cmd_refine(int argc, char **argv) {
  const char *cmd = "refine";
  static refine_opts o;
  char err[1024];
  int rc = cli_report(&cli_refine_command, cli_refine_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  dynb_ctx *ctx = cli_context(cmd, o.device);
  if (!ctx) return 1;
  dynb__net *net = NULL;
  dynb__train_state ts;
  rc = 1;
  dynb_status st = dynb__model_load(ctx, o.model, file_real(ctx, o.model), &net, &ts);
  if (st != DYNB_OK) {
    cli_fail(cmd, ctx);
  } else if (o.block >= net->spec.nblocks) {
    fprintf(stderr, "dynblocks refine: --block %ld: %s has %d blocks (0..%d)\n", o.block, o.model,
            net->spec.nblocks, net->spec.nblocks - 1);
  } else {
    err[0] = 0;
    if (o.factor) st = dynb__net_refine(net, (int)o.factor, err, sizeof err);
    for (int b = 0; !o.factor && st == DYNB_OK && b < net->spec.nblocks; b++)
      if (o.block < 0 || b == o.block) st = regrid_block(net, b, &o, err, sizeof err);
    /* The library's message names the block and the grid; the flag says where it came from. */
    if (st != DYNB_OK)
      fprintf(stderr, "dynblocks refine: %s: %s\n", o.factor ? "--factor" : "--t-states/--t-controls",
              err[0] ? err : dynb_ctx_last_error(ctx));
    else if (dynb__model_save(net, o.out, NULL, &ts) != DYNB_OK)
      cli_fail(cmd, ctx);
    else
      rc = 0;
  }
  dynb__net_free(net);
  dynb_ctx_free(ctx);
  return rc;
}
