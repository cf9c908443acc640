/* dynblocks tune: finds the CLBlast GEMM parameters and formulations that
 * run a spec's GEMMs fastest on this device and stores them in the tuning
 * cache, which every later command applies.
 *
 * Each candidate runs in a child process of its own: CLBlast keeps
 * parameter overrides per device for the whole process, some candidates
 * take minutes to compile (notes/clblast-on-pocl.md), and a compiler crash
 * must not end the tuning. The parent never touches OpenCL before its last
 * child is done (a forked OpenCL runtime is unusable), so even the shapes
 * are recorded by a child. Children report on a pipe, one line per result:
 *
 *   recorder:  device NAME | builtin NAME | candidate NAME |
 *              shape DT TA TB M N K LDA LDB LDC CALLS | end
 *   candidate: verify I FORM BAD CHECKED MAXERR | compiled SECS |
 *              time I FORM SECS | end | error MESSAGE */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

#define MAX_SHAPES 256
#define MAX_CANDIDATES 32
#define LINE_MAX_BYTES 1024

typedef struct tune_args {
  const char *device, *spec_path, *cache;
  dynb__net_spec *spec;
  long batch, reps;
  dynb_memory_mode mode;
  double time_limit;
} tune_args;

typedef enum cand_status { C_OK, C_WRONG, C_TIMEOUT, C_FAILED } cand_status;

typedef struct candidate {
  const char *name;
  cand_status status;
  char why[256];
  double compile_secs;
  double secs[MAX_SHAPES][2]; /* per call, per formulation */
  double step_secs;           /* Σ calls × the faster formulation */
} candidate;

typedef struct recording {
  char device[128], builtin[32];
  char names[MAX_CANDIDATES][32];
  int nnames;
  dynb__gemm_shape shapes[MAX_SHAPES];
  int nshapes;
} recording;

/* Copies src, cut to fit. */
static void copy(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* ---- Child processes -------------------------------------------------------- */

typedef struct child {
  pid_t pid;
  int fd;
  char buf[8192];
  size_t len;
} child;

typedef int (*child_fn)(FILE *out, const tune_args *t, const void *arg);

static bool child_start(child *c, child_fn fn, const tune_args *t, const void *arg) {
  int p[2];
  if (pipe(p) != 0) {
    fprintf(stderr, "dynblocks tune: pipe: %s\n", strerror(errno));
    return false;
  }
  fflush(stdout), fflush(stderr);
  c->pid = fork();
  if (c->pid < 0) {
    fprintf(stderr, "dynblocks tune: fork: %s\n", strerror(errno));
    close(p[0]), close(p[1]);
    return false;
  }
  if (c->pid == 0) {
    close(p[0]);
    FILE *out = fdopen(p[1], "w");
    int rc = out ? fn(out, t, arg) : 1;
    if (out) fclose(out);
    _exit(rc);
  }
  close(p[1]);
  c->fd = p[0];
  c->len = 0;
  return true;
}

/* The next line from the child: 1, 0 at its end, -1 when `deadline` passed. */
static int child_line(child *c, double deadline, char *line, size_t cap) {
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl) {
      size_t n = (size_t)(nl - c->buf);
      snprintf(line, cap, "%.*s", (int)(n < cap ? n : cap - 1), c->buf);
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return 1;
    }
    double left = deadline - dynb__now();
    if (left <= 0) return -1;
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    int r = poll(&pf, 1, (int)fmin(left * 1000 + 1, 60000));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;
    ssize_t got = r > 0 ? read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len) : -1;
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0 || c->len + (size_t)got >= sizeof c->buf - 1) return 0;
    c->len += (size_t)got;
  }
}

/* Reaps the child (killed first when `kill_it`); describes an abnormal end. */
static void child_end(child *c, bool kill_it, char *why, size_t cap) {
  if (kill_it) kill(c->pid, SIGKILL);
  close(c->fd);
  int ws = 0;
  while (waitpid(c->pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (!kill_it && WIFSIGNALED(ws))
    snprintf(why, cap, "crashed (signal %d)", WTERMSIG(ws));
  else if (!kill_it && WIFEXITED(ws) && WEXITSTATUS(ws) != 0 && !why[0])
    snprintf(why, cap, "failed (exit status %d)", WEXITSTATUS(ws));
}

/* ---- The recorder: which GEMMs one training step issues -------------------------- */

static int record_child(FILE *out, const tune_args *t, const void *arg) {
  (void)arg;
  dynb_ctx *ctx = cli_context_ex("tune", t->device, "", false);
  if (!ctx) return 1;
  /* Every convolution through im2col + GEMM, so that each shape is seen
   * whichever route a plan later times faster. */
  ctx->conv_policy = DYNB__CONV_GEMM;
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  dynb_status st = dynb__net_create(ctx, t->spec, DYNB_F32, &net);
  if (st == DYNB_OK) st = dynb__net_init(net, 1);
  if (st == DYNB_OK) st = dynb__plan_build(net, t->batch, t->mode, &plan);
  if (st == DYNB_OK) st = dynb__net_zero_grads(net);
  dynb__gemm_record(ctx, true);
  if (st == DYNB_OK) st = dynb__plan_forward(plan, true);
  if (st == DYNB_OK) st = dynb__plan_backward(plan, false);
  if (st == DYNB_OK) st = dynb__finish(ctx);
  dynb__gemm_record(ctx, false);
  if (st != DYNB_OK) {
    fprintf(out, "error %s\n", dynb_ctx_last_error(ctx));
  } else {
    const char *names[MAX_CANDIDATES];
    size_t n = dynb__gemm_candidates(ctx, names, MAX_CANDIDATES);
    fprintf(out, "device %s\nbuiltin %s\n", ctx->info.device_name, dynb__gemm_builtin(ctx, DYNB_F32));
    for (size_t i = 0; i < n && i < MAX_CANDIDATES; i++) fprintf(out, "candidate %s\n", names[i]);
    for (size_t i = 0; i < ctx->ngemm_rec; i++) {
      const dynb__gemm_shape *s = &ctx->gemm_rec[i];
      fprintf(out, "shape %d %d %d %zu %zu %zu %zu %zu %zu %zu\n", (int)s->dtype, s->trans_a,
              s->trans_b, s->m, s->n, s->k, s->lda, s->ldb, s->ldc, s->calls);
    }
    fprintf(out, "end\n");
  }
  dynb__plan_free(plan);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
  return st == DYNB_OK ? 0 : 1;
}

static bool parse_shape(const char *line, dynb__gemm_shape *s) {
  int dt, ta, tb;
  if (sscanf(line, "shape %d %d %d %zu %zu %zu %zu %zu %zu %zu", &dt, &ta, &tb, &s->m, &s->n,
             &s->k, &s->lda, &s->ldb, &s->ldc, &s->calls) != 10 ||
      (dt != DYNB_F32 && dt != DYNB_F64))
    return false;
  s->dtype = (dynb_dtype)dt, s->trans_a = ta, s->trans_b = tb;
  return true;
}

static bool read_recording(child *c, recording *r) {
  char line[LINE_MAX_BYTES];
  double deadline = dynb__now() + 3600; /* a hang guard, not a limit */
  while (child_line(c, deadline, line, sizeof line) == 1) {
    if (strcmp(line, "end") == 0) return true;
    if (strncmp(line, "device ", 7) == 0) copy(r->device, sizeof r->device, line + 7);
    if (strncmp(line, "builtin ", 8) == 0) copy(r->builtin, sizeof r->builtin, line + 8);
    if (strncmp(line, "candidate ", 10) == 0 && r->nnames < MAX_CANDIDATES)
      copy(r->names[r->nnames++], sizeof r->names[0], line + 10);
    if (strncmp(line, "shape ", 6) == 0 && r->nshapes < MAX_SHAPES &&
        parse_shape(line, &r->shapes[r->nshapes]))
      r->nshapes++;
    if (strncmp(line, "error ", 6) == 0) fprintf(stderr, "dynblocks tune: %s\n", line + 6);
  }
  return false;
}

static bool record(const tune_args *t, recording *r) {
  child c;
  memset(r, 0, sizeof *r);
  if (!child_start(&c, record_child, t, NULL)) return false;
  bool ok = read_recording(&c, r);
  char why[128] = "";
  child_end(&c, !ok, why, sizeof why);
  if (!ok) fprintf(stderr, "dynblocks tune: recording the GEMM shapes failed %s\n", why);
  return ok;
}

/* ---- A candidate: compile, verify, time ------------------------------------------- */

typedef struct cand_job {
  const char *name;
  const recording *rec;
} cand_job;

/* Phase 1 runs every shape once in both formulations (which compiles the
 * kernels) and verifies it; phase 2 times them. */
static dynb_status candidate_phases(dynb_ctx *ctx, FILE *out, const tune_args *t,
                                    const recording *r) {
  double t0 = dynb__now();
  for (int phase = 1; phase <= 2; phase++) {
    for (int i = 0; i < r->nshapes; i++) {
      dynb__gemm_bench b;
      dynb_status st = dynb__gemm_bench_init(ctx, &r->shapes[i], (uint64_t)i + 1, &b);
      for (int f = 0; f < 2 && st == DYNB_OK; f++) {
        size_t checked = 0, bad = 0;
        double v = 0;
        if (phase == 1) st = dynb__gemm_bench_verify(ctx, &b, (dynb__gemm_form)f, &checked, &bad, &v);
        if (phase == 1 && st == DYNB_OK) fprintf(out, "verify %d %d %zu %zu %g\n", i, f, bad, checked, v);
        if (phase == 2) st = dynb__gemm_bench_time(ctx, &b, (dynb__gemm_form)f, (int)t->reps, &v);
        if (phase == 2 && st == DYNB_OK) fprintf(out, "time %d %d %.9g\n", i, f, v);
        fflush(out);
      }
      dynb__gemm_bench_free(ctx, &b);
      DYNB_TRY(st);
    }
    if (phase == 1) fprintf(out, "compiled %.3f\n", dynb__now() - t0);
  }
  fprintf(out, "end\n");
  return DYNB_OK;
}

static int candidate_child(FILE *out, const tune_args *t, const void *arg) {
  const cand_job *job = arg;
  dynb_ctx *ctx = cli_context_ex("tune", t->device, "", true);
  if (!ctx) return 1;
  dynb__gemm_config c;
  dynb_status st = dynb__gemm_config_find(ctx, job->name, &c);
  if (st == DYNB_OK) st = dynb__gemm_config_apply(ctx, DYNB_F32, &c);
  if (st == DYNB_OK) st = candidate_phases(ctx, out, t, job->rec);
  if (st != DYNB_OK) fprintf(out, "error %s\n", dynb_ctx_last_error(ctx));
  dynb_ctx_free(ctx);
  return st == DYNB_OK ? 0 : 1;
}

/* One line of a candidate's report; false when it ends the report. */
static bool candidate_line(candidate *c, const recording *r, const char *line, bool *compiled) {
  int i, f;
  size_t bad, checked;
  double v;
  if (sscanf(line, "verify %d %d %zu %zu %lg", &i, &f, &bad, &checked, &v) == 5 && bad > 0) {
    c->status = C_WRONG;
    snprintf(c->why, sizeof c->why, "wrong product: %zu of %zu checked entries of shape %d (%s) "
             "off by up to %g", bad, checked, i, f ? "col" : "row", v);
    return false;
  }
  if (sscanf(line, "time %d %d %lg", &i, &f, &v) == 3 && i >= 0 && i < r->nshapes && f >= 0 && f < 2)
    c->secs[i][f] = v;
  if (sscanf(line, "compiled %lg", &v) == 1) c->compile_secs = v, *compiled = true;
  if (strncmp(line, "error ", 6) == 0) {
    c->status = C_FAILED;
    copy(c->why, sizeof c->why, line + 6);
    return false;
  }
  return strcmp(line, "end") != 0;
}

static void run_candidate(const tune_args *t, const recording *r, candidate *c) {
  child ch;
  cand_job job = {c->name, r};
  c->status = C_FAILED;
  snprintf(c->why, sizeof c->why, "could not start");
  if (!child_start(&ch, candidate_child, t, &job)) return;
  c->why[0] = 0;
  char line[LINE_MAX_BYTES];
  bool compiled = false, done = false;
  double start = dynb__now();
  int got = 1;
  while (!done) {
    /* The time limit bounds compiling and verifying; timing afterwards is
     * only guarded against a hang. */
    double deadline = compiled ? start + 10 * t->time_limit + 600 : start + t->time_limit;
    got = child_line(&ch, deadline, line, sizeof line);
    if (got != 1) break;
    done = !candidate_line(c, r, line, &compiled);
  }
  bool ended = done && strcmp(line, "end") == 0;
  if (got == -1) {
    c->status = C_TIMEOUT;
    snprintf(c->why, sizeof c->why, compiled ? "timing did not finish" :
             "not compiled and verified within %g s", t->time_limit);
  }
  /* A child that timed out or reported a failure may still be working. */
  child_end(&ch, got == -1 || (done && !ended), c->why, sizeof c->why);
  for (int i = 0; ended && i < r->nshapes; i++)
    ended = c->secs[i][0] > 0 && c->secs[i][1] > 0;
  if (ended) c->status = C_OK;
  else if (!c->why[0]) snprintf(c->why, sizeof c->why, "report ended early");
  for (int i = 0; c->status == C_OK && i < r->nshapes; i++)
    c->step_secs += (double)r->shapes[i].calls * fmin(c->secs[i][0], c->secs[i][1]);
}

/* ---- Choosing, printing, storing ----------------------------------------------- */

static double gflops(const dynb__gemm_shape *s, double secs) {
  return 2.0 * (double)s->m * (double)s->n * (double)s->k / secs * 1e-9;
}

static void print_candidates(const candidate *c, int n) {
  printf("\n| candidate | result | compile+verify s | GEMM ms per step |\n|---|---|---|---|\n");
  for (int i = 0; i < n; i++) {
    if (c[i].status == C_OK)
      printf("| %s | ok | %.1f | %.2f |\n", c[i].name, c[i].compile_secs, 1e3 * c[i].step_secs);
    else
      printf("| %s | %s %s | | |\n", c[i].name,
             c[i].status == C_WRONG ? "rejected:" : c[i].status == C_TIMEOUT ? "skipped:" : "failed:",
             c[i].why);
  }
}

static void print_shapes(const recording *r, const candidate *before, const candidate *after) {
  printf("\n| GEMM (m x n x k, op) | calls per step | before GFLOP/s (%s, row) | after GFLOP/s (%s) | "
         "form |\n|---|---|---|---|---|\n", before->name, after->name);
  for (int i = 0; i < r->nshapes; i++) {
    const dynb__gemm_shape *s = &r->shapes[i];
    int f = after->secs[i][1] < after->secs[i][0];
    printf("| %zux%zux%zu %c%c | %zu | %.1f | %.1f | %s |\n", s->m, s->n, s->k,
           s->trans_a ? 't' : 'n', s->trans_b ? 't' : 'n', s->calls,
           gflops(s, before->secs[i][0]), gflops(s, after->secs[i][f]), f ? "col" : "row");
  }
}

/* Row-major everywhere: what dynb__gemm did before any tuning. */
static double row_step_secs(const recording *r, const candidate *c) {
  double sum = 0;
  for (int i = 0; i < r->nshapes; i++) sum += (double)r->shapes[i].calls * c->secs[i][0];
  return sum;
}

static dynb_status store(dynb_ctx *ctx, const tune_args *t, const recording *r,
                         const candidate *best, double before) {
  dynb__gemm_config c, old;
  bool found = false;
  DYNB_TRY(dynb__gemm_config_find(ctx, best->name, &c));
  /* Formulations measured under another configuration mean nothing now. */
  if (dynb__gemm_config_get(ctx, DYNB_F32, &old, &found) != DYNB_OK || !found ||
      strcmp(old.name, c.name) != 0)
    dynb__tune_remove_prefix(ctx, "gemm.f32.");
  DYNB_TRY(dynb__gemm_config_put(ctx, DYNB_F32, &c));
  for (int i = 0; i < r->nshapes; i++) {
    const dynb__gemm_shape *s = &r->shapes[i];
    int f = best->secs[i][1] < best->secs[i][0];
    char key[128], val[128];
    snprintf(key, sizeof key, "gemm.%s.form.%c%c.%zux%zux%zu", dynb__dtype_name(s->dtype),
             s->trans_a ? 't' : 'n', s->trans_b ? 't' : 'n', s->m, s->n, s->k);
    snprintf(val, sizeof val, "%s (%.1f GFLOP/s; %s %.1f)", f ? "col" : "row",
             gflops(s, best->secs[i][f]), f ? "row" : "col", gflops(s, best->secs[i][!f]));
    DYNB_TRY(dynb__tune_put(ctx, key, val));
  }
  char val[256];
  const char *base = strrchr(t->spec_path, '/');
  snprintf(val, sizeof val, "%s batch %ld: %.2f ms of GEMMs per step, built-in %.2f ms",
           base ? base + 1 : t->spec_path, t->batch, 1e3 * best->step_secs, 1e3 * before);
  DYNB_TRY(dynb__tune_put(ctx, "gemm.f32.tuned", val));
  return dynb__tune_save(ctx);
}

/* The convolution routes in the cache were timed against the GEMM
 * parameters of their day; under new ones the GEMM route may win or lose.
 * So every route entry of the device goes, and the spec's shapes are timed
 * again (and stored) under the tuned parameters, in a fresh context that
 * applies them; other networks' shapes are timed at their next use. */
static int retime_routes(const tune_args *t) {
  dynb_ctx *ctx = cli_context_ex("tune", t->device, t->cache, false);
  if (!ctx) return 1;
  dynb__tune_remove_prefix(ctx, "conv.");
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  dynb_status st = dynb__tune_save(ctx);
  if (st == DYNB_OK) st = dynb__net_create(ctx, t->spec, DYNB_F32, &net);
  if (st == DYNB_OK) st = dynb__plan_build(net, t->batch, t->mode, &plan);
  int rc = st == DYNB_OK ? 0 : cli_fail("tune", ctx);
  if (rc == 0)
    printf("convolution routes of %s at batch %ld timed under the tuned GEMMs and stored\n",
           t->spec_path, t->batch);
  dynb__plan_free(plan);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
  return rc;
}

/* Picks the fastest verified candidate, prints the tables, writes the cache. */
static int conclude(const tune_args *t, const recording *r, const candidate *c, int n) {
  const candidate *best = NULL, *builtin = NULL;
  for (int i = 0; i < n; i++) {
    if (c[i].status != C_OK) continue;
    if (!best || c[i].step_secs < best->step_secs) best = &c[i];
    if (strcmp(c[i].name, r->builtin) == 0) builtin = &c[i];
  }
  print_candidates(c, n);
  if (!best) {
    fprintf(stderr, "dynblocks tune: no candidate was compiled, verified and timed; the cache is "
                    "unchanged\n");
    return 1;
  }
  const candidate *before = builtin ? builtin : best;
  double before_secs = row_step_secs(r, before);
  print_shapes(r, before, best);
  printf("\nGEMM time per step: built-in %s (row-major) %.2f ms, tuned %s %.2f ms: %.2fx\n",
         before->name, 1e3 * before_secs, best->name, 1e3 * best->step_secs,
         before_secs / best->step_secs);
  dynb_ctx *ctx = cli_context_ex("tune", t->device, t->cache, false);
  if (!ctx) return 1;
  int rc = store(ctx, t, r, best, before_secs) == DYNB_OK ? 0 : cli_fail("tune", ctx);
  if (rc == 0) printf("written to %s\n", ctx->tune_path);
  dynb_ctx_free(ctx);
  return rc == 0 ? retime_routes(t) : rc;
}

/* ---- The command ------------------------------------------------------------------ */

/* Whether the comma-separated `list` holds `name`. */
static bool in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
    if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == 0)) return true;
  return false;
}

/* The candidates to try: --candidates (each must be known) or all of the
 * device's family; the built-in one always, to compare against. */
static int pick_candidates(const char *list, const recording *r, candidate *c) {
  int n = 0;
  for (int i = 0; i < r->nnames; i++)
    if (!list || in_list(list, r->names[i]) || strcmp(r->names[i], r->builtin) == 0)
      c[n++].name = r->names[i];
  for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
    size_t len = strcspn(p, ",");
    int i = 0;
    while (i < r->nnames && !(strlen(r->names[i]) == len && strncmp(p, r->names[i], len) == 0)) i++;
    if (i < r->nnames) continue;
    fprintf(stderr, "dynblocks tune: --candidates: '%.*s' is not a candidate on %s; known:",
            (int)len, p, r->device);
    for (i = 0; i < r->nnames; i++) fprintf(stderr, " %s", r->names[i]);
    fprintf(stderr, "\n");
    return -1;
  }
  return n;
}

static int tune_run(const tune_args *t, const char *list) {
  static recording rec;
  static candidate cands[MAX_CANDIDATES];
  if (!record(t, &rec)) return 1;
  if (rec.nshapes == 0) {
    fprintf(stderr, "dynblocks tune: %s issues no GEMM; nothing to tune\n", t->spec_path);
    return 1;
  }
  memset(cands, 0, sizeof cands);
  int n = pick_candidates(list, &rec, cands);
  if (n < 0) return 2;
  fprintf(stderr, "dynblocks tune: %d GEMM shapes on %s, %d candidates\n", rec.nshapes, rec.device, n);
  for (int i = 0; i < n; i++) {
    run_candidate(t, &rec, &cands[i]);
    if (cands[i].status == C_OK)
      fprintf(stderr, "dynblocks tune: %-14s compiled and verified in %.1f s, %.2f ms per step\n",
              cands[i].name, cands[i].compile_secs, 1e3 * cands[i].step_secs);
    else
      fprintf(stderr, "dynblocks tune: %-14s %s\n", cands[i].name, cands[i].why);
  }
  return conclude(t, &rec, cands, n);
}

int cmd_tune(int argc, char **argv) {
  const char *cmd = "tune";
  tune_opts o;
  char err[1024];
  int rc = cli_report(&cli_tune_command, cli_tune_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  static dynb__net_spec spec;
  tune_args t = {.device = o.device, .spec_path = o.spec, .spec = &spec, .mode = o.memory,
                 .cache = o.cache ? o.cache : cli_tune_cache(), .batch = o.batch,
                 .reps = o.reps, .time_limit = o.time_limit};
  if (!cli_read_spec(cmd, t.spec_path, &spec)) return 1;
  return tune_run(&t, o.candidates);
}
