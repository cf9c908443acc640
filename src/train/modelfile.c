/* Model and checkpoint files (safetensors with SPEC §3 names) and data-set
 * loading: where the file formats of src/io meet networks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"
#include "train/train.h"

#define SPEC_KEY "dynblocks.spec"

/* Host copies of tensors to write, converted to bytes of their dtype. */
typedef struct writer {
  dynb__st_entry *entries;
  void **buffers;
  int n, cap;
} writer;

static dynb_status writer_add(dynb_ctx *ctx, writer *w, const char *name, const dynb__tensor *t) {
  if (w->n == w->cap) {
    int cap = w->cap ? 2 * w->cap : 256;
    dynb__st_entry *e = realloc(w->entries, (size_t)cap * sizeof *e);
    if (e) w->entries = e;
    void **b = e ? realloc(w->buffers, (size_t)cap * sizeof *b) : NULL;
    if (b) w->buffers = b;
    DYNB_CHECK(ctx, e && b, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
    w->cap = cap;
  }
  size_t n = dynb__tensor_numel(t), es = dynb__dtype_size(t->dtype);
  void *buf = malloc(n * es);
  DYNB_CHECK(ctx, buf, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  w->buffers[w->n] = buf;
  w->entries[w->n] = (dynb__st_entry){name, t->dtype == DYNB_F64 ? DYNB_ST_F64 : t->dtype == DYNB_I32 ? DYNB_ST_I32 : DYNB_ST_F32,
                                      t->ndim, t->dims, buf};
  w->n++;
  DYNB_TRY(dynb__tensor_read(ctx, t, buf));
  /* A diverged network must never replace a good file (SPEC §6). */
  bool finite = true;
  for (size_t i = 0; finite && i < n && t->dtype != DYNB_I32; i++)
    finite = t->dtype == DYNB_F64 ? isfinite(((const double *)buf)[i])
                                  : isfinite(((const float *)buf)[i]);
  DYNB_CHECK(ctx, finite, DYNB_STATUS_NON_FINITE,
             "refusing to save: tensor '%s' holds NaN or infinite values", name);
  return DYNB_OK;
}

static void writer_release(writer *w) {
  for (int i = 0; i < w->n; i++) free(w->buffers[i]);
  free(w->entries), free(w->buffers);
}

dynb_status dynb__model_save(dynb__net *net, const char *path, dynb__optimizer *opt,
                             const dynb__train_state *ts) {
  dynb_ctx *ctx = net->ctx;
  writer w = {0};
  dynb_status st = DYNB_OK;
  for (size_t i = 0; st == DYNB_OK && i < net->ntensors; i++)
    st = writer_add(ctx, &w, net->tensors[i].name, &net->tensors[i].value);
  for (size_t i = 0; st == DYNB_OK && opt && i < dynb__optimizer_state_count(opt); i++) {
    const dynb__net_tensor *t = dynb__optimizer_state_at(opt, i);
    st = writer_add(ctx, &w, t->name, &t->value);
  }
  /* Small host-side state rides along as tensors: one format, one write.
   * The convolution routes chosen so far go too, so that a resumed run
   * computes exactly as the interrupted one would have (docs/determinism.md). */
  int64_t counters[3] = {0, 0, 0}, three = 3, eight = 8, one = 1;
  int64_t route_dims[2] = {(int64_t)ctx->nchoices, 2};
  int64_t *routes = ts ? calloc(2 * ctx->nchoices + 1, sizeof *routes) : NULL;
  double norms[8], best = ts ? ts->best : 0;
  if (ts) {
    counters[0] = ts->epoch;
    memcpy(&counters[1], &ts->rng, sizeof ts->rng);
    counters[2] = opt ? *dynb__optimizer_step_counter(opt) : 0;
    memcpy(norms, ts->norm_mean, sizeof ts->norm_mean);
    memcpy(norms + 4, ts->norm_std, sizeof ts->norm_std);
    for (size_t i = 0; routes && i < ctx->nchoices; i++)
      memcpy(&routes[2 * i], &ctx->choices[i].key, 8), routes[2 * i + 1] = ctx->choices[i].value;
    if (st == DYNB_OK && !routes)
      st = dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  }
  char *spec = dynb__spec_to_json(&net->spec);
  if (st == DYNB_OK && !spec) st = dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  if (st == DYNB_OK) {
    dynb__st_entry *e = realloc(w.entries, ((size_t)w.n + 4) * sizeof *e);
    if (!e) {
      st = dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
    } else {
      w.entries = e;
      int n = w.n;
      if (ts) {
        e[n++] = (dynb__st_entry){"train.counters", DYNB_ST_I64, 1, &three, counters};
        e[n++] = (dynb__st_entry){"train.input_norm", DYNB_ST_F64, 1, &eight, norms};
        e[n++] = (dynb__st_entry){"train.best", DYNB_ST_F64, 1, &one, &best};
        e[n++] = (dynb__st_entry){"train.routes", DYNB_ST_I64, 2, route_dims, routes};
      }
      const char *keys[2] = {SPEC_KEY, "dynblocks.version"};
      const char *vals[2] = {spec, DYNB_VERSION_STRING};
      char err[600];
      if (dynb__st_write(path, e, n, keys, vals, 2, err, sizeof err) != DYNB_OK)
        st = dynb__fail(ctx, DYNB_STATUS_IO_ERROR, "%s", err);
    }
  }
  free(spec);
  free(routes);
  writer_release(&w);
  return st;
}

/* Copies a file tensor into a device tensor of the same shape, converting
 * F32/F64 to the tensor's dtype. */
static dynb_status upload(dynb_ctx *ctx, const char *path, const dynb__st_file *f,
                          const char *name, const dynb__tensor *t) {
  const dynb__st_tensor *s = dynb__st_find(f, name);
  DYNB_CHECK(ctx, s, DYNB_STATUS_BAD_FORMAT, "%s: tensor '%s' is missing", path, name);
  bool same = s->ndim == t->ndim;
  for (int i = 0; same && i < t->ndim; i++) same = s->dims[i] == t->dims[i];
  DYNB_CHECK(ctx, same, DYNB_STATUS_BAD_FORMAT, "%s: tensor '%s' has the wrong shape for the spec",
             path, name);
  DYNB_CHECK(ctx, s->dtype == DYNB_ST_F32 || s->dtype == DYNB_ST_F64, DYNB_STATUS_BAD_FORMAT,
             "%s: tensor '%s' is %s; expected F32 or F64", path, name, dynb__st_dtype_name(s->dtype));
  size_t n = dynb__tensor_numel(t);
  double *host = malloc((n ? n : 1) * sizeof *host);
  DYNB_CHECK(ctx, host, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  const unsigned char *p = dynb__st_data(f, s);
  bool finite = true;
  for (size_t i = 0; i < n; i++) {
    if (s->dtype == DYNB_ST_F32) {
      float v;
      memcpy(&v, p + 4 * i, 4);
      host[i] = v;
    } else {
      memcpy(&host[i], p + 8 * i, 8);
    }
    finite = finite && host[i] - host[i] == 0;
  }
  dynb_status st = finite ? dynb__tensor_write_f64(ctx, t, host)
                          : dynb__fail(ctx, DYNB_STATUS_BAD_FORMAT,
                                       "%s: tensor '%s' holds NaN or infinite values", path, name);
  free(host);
  return st;
}

static dynb_status open_model(dynb_ctx *ctx, const char *path, dynb__st_file *f) {
  char err[600];
  dynb_status st = dynb__st_open(path, f, err, sizeof err);
  if (st != DYNB_OK) return dynb__fail(ctx, st, "%s", err);
  return DYNB_OK;
}

/* The convolution routes a checkpoint was trained with become the
 * context's choices where it has not chosen yet (3 fields of 2 bits; the
 * convolutions check that a choice fits its shape before using it). A
 * choice the context already made stays: a plan built on it sized its
 * scratch for that route, and a different route there could need more. */
static dynb_status restore_routes(dynb_ctx *ctx, const char *path, const dynb__st_file *f) {
  const dynb__st_tensor *r = dynb__st_find(f, "train.routes");
  if (!r) return DYNB_OK;
  DYNB_CHECK(ctx, r->dtype == DYNB_ST_I64 && r->ndim == 2 && r->dims[1] == 2,
             DYNB_STATUS_BAD_FORMAT, "%s: train.routes must be I64 [n, 2]", path);
  const unsigned char *p = dynb__st_data(f, r);
  for (int64_t i = 0; i < r->dims[0]; i++) {
    int64_t kv[2];
    memcpy(kv, p + 16 * i, sizeof kv);
    DYNB_CHECK(ctx, kv[1] >= 0 && kv[1] < 64, DYNB_STATUS_BAD_FORMAT,
               "%s: train.routes[%lld] = %lld is not a route choice", path, (long long)i,
               (long long)kv[1]);
    uint64_t key;
    memcpy(&key, &kv[0], sizeof key);
    int known = dynb__choice_get(ctx, key);
    if (known < 0)
      DYNB_TRY(dynb__choice_put(ctx, key, (int)kv[1]));
    else if (known != (int)kv[1])
      dynb__log(ctx, DYNB_LOG_INFO, "%s: a convolution shape keeps this context's route, not "
                "the checkpoint's; a resumed run may differ in the last bits", path);
  }
  return DYNB_OK;
}

dynb_status dynb__model_load(dynb_ctx *ctx, const char *path, dynb_dtype real, dynb__net **out,
                             dynb__train_state *ts) {
  *out = NULL;
  dynb__st_file f;
  DYNB_TRY(open_model(ctx, path, &f));
  const char *text = dynb__st_meta(&f, SPEC_KEY);
  dynb_status st = DYNB_OK;
  if (!text) st = dynb__fail(ctx, DYNB_STATUS_BAD_FORMAT, "%s: no '%s' in __metadata__: not a dynblocks model", path, SPEC_KEY);
  dynb__net_spec *spec = st == DYNB_OK ? malloc(sizeof *spec) : NULL;
  char err[600];
  if (st == DYNB_OK && !spec) st = dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory");
  if (st == DYNB_OK && dynb__spec_parse(text, strlen(text), path, spec, err, sizeof err) != DYNB_OK)
    st = dynb__fail(ctx, DYNB_STATUS_BAD_FORMAT, "embedded spec: %s", err);
  dynb__net *net = NULL;
  if (st == DYNB_OK) st = dynb__net_create(ctx, spec, real, &net);
  for (size_t i = 0; st == DYNB_OK && i < net->ntensors; i++)
    st = upload(ctx, path, &f, net->tensors[i].name, &net->tensors[i].value);
  if (ts) memset(ts, 0, sizeof *ts);
  const dynb__st_tensor *c = dynb__st_find(&f, "train.counters");
  const dynb__st_tensor *nm = dynb__st_find(&f, "train.input_norm");
  if (st == DYNB_OK && ts && c && c->dtype == DYNB_ST_I64 && dynb__st_numel(c) == 3) {
    int64_t v[3];
    memcpy(v, dynb__st_data(&f, c), sizeof v);
    ts->epoch = v[0];
    memcpy(&ts->rng, &v[1], sizeof ts->rng);
  }
  if (st == DYNB_OK && ts && nm && nm->dtype == DYNB_ST_F64 && dynb__st_numel(nm) == 8) {
    double v[8];
    memcpy(v, dynb__st_data(&f, nm), sizeof v);
    memcpy(ts->norm_mean, v, sizeof ts->norm_mean);
    memcpy(ts->norm_std, v + 4, sizeof ts->norm_std);
  }
  if (ts) ts->best = INFINITY;
  const dynb__st_tensor *b = dynb__st_find(&f, "train.best");
  if (st == DYNB_OK && ts && b && b->dtype == DYNB_ST_F64 && dynb__st_numel(b) == 1)
    memcpy(&ts->best, dynb__st_data(&f, b), sizeof ts->best);
  if (st == DYNB_OK && ts) st = restore_routes(ctx, path, &f);
  free(spec);
  dynb__st_release(&f);
  if (st != DYNB_OK) {
    dynb__net_free(net);
    return st;
  }
  *out = net;
  return DYNB_OK;
}

dynb_status dynb__model_load_optimizer(dynb__net *net, const char *path, dynb__optimizer *opt) {
  dynb__st_file f;
  DYNB_TRY(open_model(net->ctx, path, &f));
  dynb_status st = DYNB_OK;
  for (size_t i = 0; st == DYNB_OK && i < dynb__optimizer_state_count(opt); i++) {
    const dynb__net_tensor *t = dynb__optimizer_state_at(opt, i);
    st = upload(net->ctx, path, &f, t->name, &t->value);
  }
  const dynb__st_tensor *c = dynb__st_find(&f, "train.counters");
  if (st == DYNB_OK && c && c->dtype == DYNB_ST_I64 && dynb__st_numel(c) == 3) {
    int64_t v[3];
    memcpy(v, dynb__st_data(&f, c), sizeof v);
    *dynb__optimizer_step_counter(opt) = v[2];
  }
  dynb__st_release(&f);
  return st;
}

/* ---- data sets ------------------------------------------------------------------------ */

static dynb_status from_bytes(const unsigned char *img, const unsigned char *lab, int64_t n, int c,
                              int h, int w, dynb__dataset *out) {
  size_t per = (size_t)c * (size_t)h * (size_t)w;
  out->n = n, out->c = c, out->h = h, out->w = w, out->classes = 10;
  out->images = malloc((size_t)n * per * sizeof *out->images);
  out->labels = malloc((size_t)n * sizeof *out->labels);
  if (!out->images || !out->labels) {
    dynb__dataset_release(out);
    return DYNB_STATUS_OUT_OF_HOST_MEMORY;
  }
  for (size_t i = 0; i < (size_t)n * per; i++) out->images[i] = (float)img[i] / 255.0f;
  for (int64_t i = 0; i < n; i++) out->labels[i] = lab[i];
  return DYNB_OK;
}

static bool exists(const char *p) { return access(p, R_OK) == 0; }

static dynb_status load_idx(const char *dir, bool test, dynb__dataset *out, char *err,
                            size_t errlen) {
  const char *split = test ? "t10k" : "train";
  char ip[4200], lp[4200];
  snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, split);
  if (!exists(ip)) snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte", dir, split);
  snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, split);
  if (!exists(lp)) snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte", dir, split);
  int64_t d[3], l[1];
  unsigned char *img = NULL, *lab = NULL;
  dynb_status st = dynb__idx_read(ip, 3, d, &img, err, errlen);
  if (st == DYNB_OK) st = dynb__idx_read(lp, 1, l, &lab, err, errlen);
  if (st == DYNB_OK && l[0] != d[0]) {
    snprintf(err, errlen, "%s: %lld labels for %lld images in %s", lp, (long long)l[0],
             (long long)d[0], ip);
    st = DYNB_STATUS_BAD_FORMAT;
  }
  for (int64_t i = 0; st == DYNB_OK && i < l[0]; i++)
    if (lab[i] > 9) {
      snprintf(err, errlen, "%s: label %d of item %lld is outside 0..9", lp, lab[i], (long long)i);
      st = DYNB_STATUS_BAD_FORMAT;
    }
  if (st == DYNB_OK) st = from_bytes(img, lab, d[0], 1, (int)d[1], (int)d[2], out);
  free(img), free(lab);
  return st;
}

static dynb_status load_cifar(const char *dir, bool test, dynb__dataset *out, char *err,
                              size_t errlen) {
  int64_t n = 0;
  unsigned char *img = NULL, *lab = NULL;
  dynb_status st = DYNB_OK;
  char p[4200];
  for (int i = 1; st == DYNB_OK && i <= (test ? 1 : 5); i++) {
    if (test)
      snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    else
      snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, i);
    st = dynb__cifar_read(p, &n, &img, &lab, err, errlen);
  }
  if (st == DYNB_OK) st = from_bytes(img, lab, n, 3, 32, 32, out);
  free(img), free(lab);
  return st;
}

dynb_status dynb__dataset_load(const char *name, const char *data_dir, bool test,
                               dynb__dataset *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  const char *dir = name;
  if (!name || strcmp(name, "fashion-mnist") == 0)
    dir = data_dir ? data_dir : "/usr/share/datasets/fashion-mnist";
  else if (strcmp(name, "mnist") == 0 || strcmp(name, "cifar10") == 0) {
    if (!data_dir) {
      snprintf(err, errlen, "--data %s needs --data-dir DIR with its files", name);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    dir = data_dir;
  }
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/%s", dir, test ? "test_batch.bin" : "data_batch_1.bin");
  bool cifar = (name && strcmp(name, "cifar10") == 0) || exists(probe);
  dynb_status st = cifar ? load_cifar(dir, test, out, err, errlen) : load_idx(dir, test, out, err, errlen);
  if (st == DYNB_STATUS_OUT_OF_HOST_MEMORY) snprintf(err, errlen, "%s: out of host memory", dir);
  return st;
}
