/* Public networks: built from a spec, loaded and saved through model files,
 * and their named tensors read and written from the host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "io/io.h"

dynb_status dynb__api_net_wrap(dynb_ctx *ctx, dynb__net *inner, dynb_net **out) {
  dynb_net *net = dynb__calloc(ctx, 1, sizeof *net);
  if (!net) {
    dynb__net_free(inner);
    return dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_net: no host memory");
  }
  net->ctx = ctx;
  net->net = inner;
  *out = net;
  return DYNB_OK;
}

/* Parses spec text (len bytes, `source` names it), builds and initialises. */
static dynb_status from_text(dynb_ctx *ctx, const char *text, size_t len, const char *source,
                             dynb_dtype real, uint64_t seed, dynb_net **out) {
  DYNB_TRY(dynb__check_real(ctx, real));
  /* A spec holds two grids of DYNB_MAX_TIME_POINTS per block: too big for
   * the stack of an embedding host's thread. */
  dynb__net_spec *spec = dynb__alloc(ctx, sizeof *spec);
  DYNB_CHECK(ctx, spec, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_net: no host memory for a spec");
  char err[600];
  dynb__net *inner = NULL;
  dynb_status st = dynb__spec_parse(text, len, source, spec, err, sizeof err);
  if (st != DYNB_OK) st = dynb__fail(ctx, st, "%s", err);
  if (st == DYNB_OK) st = dynb__net_create(ctx, spec, real, &inner);
  if (st == DYNB_OK) st = dynb__net_init(inner, seed);
  dynb__free(ctx, spec);
  if (st != DYNB_OK) {
    dynb__net_free(inner);
    return st;
  }
  return dynb__api_net_wrap(ctx, inner, out);
}

dynb_status dynb_net_create(dynb_ctx *ctx, const char *spec_json, dynb_dtype real,
                            uint64_t seed, dynb_net **out) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_net_create: out is NULL");
  *out = NULL;
  DYNB_CHECK(ctx, spec_json, DYNB_STATUS_INVALID_ARGUMENT, "dynb_net_create: spec_json is NULL");
  return from_text(ctx, spec_json, strlen(spec_json), "<spec string>", real, seed, out);
}

dynb_status dynb_net_create_from_file(dynb_ctx *ctx, const char *spec_path, dynb_dtype real,
                                      uint64_t seed, dynb_net **out) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_net_create_from_file: out is NULL");
  *out = NULL;
  DYNB_CHECK(ctx, spec_path, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_create_from_file: spec_path is NULL");
  unsigned char *text = NULL;
  size_t len = 0;
  char err[600];
  /* The read is bounded well above the spec parser's own cap, which then
   * explains an oversized spec in its words. */
  dynb_status st = dynb__file_read(spec_path, 64u << 20, false, &text, &len, err, sizeof err);
  if (st != DYNB_OK) return dynb__fail(ctx, st, "%s", err);
  st = from_text(ctx, (const char *)text, len, spec_path, real, seed, out);
  free(text);
  return st;
}

dynb_status dynb_net_load(dynb_ctx *ctx, const char *path, dynb_dtype real, dynb_net **out) {
  DYNB__API_HANDLE(ctx);
  DYNB_CHECK(ctx, out && path, DYNB_STATUS_INVALID_ARGUMENT, "dynb_net_load: %s is NULL",
             out ? "path" : "out");
  *out = NULL;
  DYNB_TRY(dynb__check_real(ctx, real));
  dynb__net *inner;
  DYNB_TRY(dynb__model_load(ctx, path, real, &inner, NULL));
  return dynb__api_net_wrap(ctx, inner, out);
}

dynb_status dynb_net_save(dynb_net *net, const char *path) {
  DYNB__API_HANDLE(net);
  DYNB_CHECK(net->ctx, path, DYNB_STATUS_INVALID_ARGUMENT, "dynb_net_save: path is NULL");
  return dynb__model_save(net->net, path, NULL, NULL);
}

void dynb_net_free(dynb_net *net) {
  if (!net) return;
  if (net->children)
    dynb__log(net->ctx, DYNB_LOG_ERROR,
              "dynb_net_free: %d plans or optimisers of this network are still alive; "
              "they must not be used again", net->children);
  dynb__net_free(net->net);
  dynb__free(net->ctx, net);
}

dynb_status dynb_net_init(dynb_net *net, uint64_t seed) {
  DYNB__API_HANDLE(net);
  return dynb__net_init(net->net, seed);
}

dynb_status dynb_net_shape(const dynb_net *net, int64_t *channels, int64_t *height,
                           int64_t *width, int64_t *classes, dynb_dtype *real) {
  DYNB__API_HANDLE(net);
  const dynb__net_spec *s = &net->net->spec;
  if (channels) *channels = s->in_channels;
  if (height) *height = s->in_height;
  if (width) *width = s->in_width;
  if (classes) *classes = s->classes;
  if (real) *real = net->net->real;
  return DYNB_OK;
}

dynb_status dynb_net_param_count(const dynb_net *net, size_t *count) {
  DYNB__API_HANDLE(net);
  if (!count) return DYNB_STATUS_INVALID_ARGUMENT;
  *count = net->net->ntensors;
  return DYNB_OK;
}

dynb_status dynb_net_param_name(const dynb_net *net, size_t index, const char **name) {
  DYNB__API_HANDLE(net);
  DYNB_CHECK(net->ctx, name, DYNB_STATUS_INVALID_ARGUMENT, "dynb_net_param_name: name is NULL");
  DYNB_CHECK(net->ctx, index < net->net->ntensors, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_param_name: index %zu is past the network's %zu tensors", index,
             net->net->ntensors);
  *name = net->net->tensors[index].name;
  return DYNB_OK;
}

static dynb_status find(const dynb_net *net, const char *call, const char *name,
                        const dynb__net_tensor **out) {
  DYNB_CHECK(net->ctx, name, DYNB_STATUS_INVALID_ARGUMENT, "%s: name is NULL", call);
  *out = dynb__net_find(net->net, name);
  DYNB_CHECK(net->ctx, *out, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: the network has no tensor named '%.120s' (dynb_net_param_name lists them, "
             "e.g. '%s')", call, name, net->net->tensors[0].name);
  return DYNB_OK;
}

dynb_status dynb_net_param_info(const dynb_net *net, const char *name, int *ndim, int64_t *dims,
                                int *trainable) {
  DYNB__API_HANDLE(net);
  const dynb__net_tensor *t;
  DYNB_TRY(find(net, "dynb_net_param_info", name, &t));
  if (ndim) *ndim = t->value.ndim;
  for (int i = 0; dims && i < DYNB_MAX_DIMS; i++) dims[i] = i < t->value.ndim ? t->value.dims[i] : 0;
  if (trainable) *trainable = t->trainable;
  return DYNB_OK;
}

/* Checks a host array of `count` elements of host_dtype against tensor v. */
static dynb_status check_host(dynb_ctx *ctx, const char *call, const char *name,
                              const dynb__tensor *v, dynb_dtype host_dtype, const void *host,
                              size_t count) {
  DYNB_CHECK(ctx, host, DYNB_STATUS_INVALID_ARGUMENT, "%s: host is NULL", call);
  DYNB_CHECK(ctx, host_dtype == DYNB_F32 || host_dtype == DYNB_F64, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: host_dtype must be DYNB_F32 or DYNB_F64", call);
  DYNB_CHECK(ctx, count == dynb__tensor_numel(v), DYNB_STATUS_SHAPE_MISMATCH,
             "%s: '%s' has %zu elements; %zu given", call, name, dynb__tensor_numel(v), count);
  return DYNB_OK;
}

/* Tensor → host in host_dtype. Same types copy straight; others convert
 * through double, which holds f32 and f64 values exactly. */
static dynb_status read_as(dynb_ctx *ctx, const dynb__tensor *v, dynb_dtype host_dtype,
                           void *host) {
  if (v->dtype == host_dtype) return dynb__tensor_read(ctx, v, host);
  if (host_dtype == DYNB_F64) return dynb__tensor_read_f64(ctx, v, host);
  size_t n = dynb__tensor_numel(v);
  double *tmp = dynb__alloc(ctx, n * sizeof *tmp);
  DYNB_CHECK(ctx, tmp, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for %zu elements", n);
  dynb_status st = dynb__tensor_read_f64(ctx, v, tmp);
  for (size_t i = 0; st == DYNB_OK && i < n; i++) ((float *)host)[i] = (float)tmp[i];
  dynb__free(ctx, tmp);
  return st;
}

/* Reads the value (or, with grad, the gradient) of tensor `name`. */
static dynb_status get(dynb_net *net, const char *call, const char *name, bool grad,
                       dynb_dtype host_dtype, void *host, size_t count) {
  const dynb__net_tensor *t;
  DYNB_TRY(find(net, call, name, &t));
  DYNB_CHECK(net->ctx, !grad || t->trainable, DYNB_STATUS_INVALID_ARGUMENT,
             "%s: '%s' is a running statistic, which has no gradient", call, name);
  const dynb__tensor *v = grad ? &t->grad : &t->value;
  DYNB_TRY(check_host(net->ctx, call, name, v, host_dtype, host, count));
  return read_as(net->ctx, v, host_dtype, host);
}

dynb_status dynb_net_param_get(dynb_net *net, const char *name, dynb_dtype host_dtype, void *host,
                               size_t count) {
  DYNB__API_HANDLE(net);
  return get(net, "dynb_net_param_get", name, false, host_dtype, host, count);
}

dynb_status dynb_net_grad_get(dynb_net *net, const char *name, dynb_dtype host_dtype, void *host,
                              size_t count) {
  DYNB__API_HANDLE(net);
  return get(net, "dynb_net_grad_get", name, true, host_dtype, host, count);
}

dynb_status dynb_net_param_set(dynb_net *net, const char *name, dynb_dtype host_dtype,
                               const void *host, size_t count) {
  DYNB__API_HANDLE(net);
  const char *call = "dynb_net_param_set";
  const dynb__net_tensor *t;
  DYNB_TRY(find(net, call, name, &t));
  DYNB_TRY(check_host(net->ctx, call, name, &t->value, host_dtype, host, count));
  if (t->value.dtype == host_dtype) return dynb__tensor_write(net->ctx, &t->value, host);
  if (host_dtype == DYNB_F64) return dynb__tensor_write_f64(net->ctx, &t->value, host);
  double *tmp = dynb__alloc(net->ctx, count * sizeof *tmp);
  DYNB_CHECK(net->ctx, tmp, DYNB_STATUS_OUT_OF_HOST_MEMORY, "no host memory for %zu elements",
             count);
  for (size_t i = 0; i < count; i++) tmp[i] = ((const float *)host)[i];
  dynb_status st = dynb__tensor_write_f64(net->ctx, &t->value, tmp);
  dynb__free(net->ctx, tmp);
  return st;
}

/* ---- re-discretisation ---------------------------------------------------------- */

static dynb_status check_unshared(dynb_net *net, const char *fn) {
  DYNB_CHECK(net->ctx, net->children == 0, DYNB_STATUS_MISUSE,
             "%s: %d plans or optimisers of this network are alive; free them first (they "
             "hold its tensors, which change)", fn, net->children);
  return DYNB_OK;
}

dynb_status dynb_net_refine(dynb_net *net, int factor) {
  DYNB__API_HANDLE(net);
  DYNB_TRY(check_unshared(net, "dynb_net_refine"));
  char err[300];
  dynb_status st = dynb__net_refine(net->net, factor, err, sizeof err);
  net->has_grads = false;
  return st;
}

dynb_status dynb_net_regrid(dynb_net *net, int block, const double *t_states, int nstates,
                            const double *t_controls, int ncontrols) {
  DYNB__API_HANDLE(net);
  DYNB_TRY(check_unshared(net, "dynb_net_regrid"));
  dynb__net *n = net->net;
  DYNB_CHECK(net->ctx, t_states || t_controls, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_regrid: neither t_states nor t_controls is given");
  DYNB_CHECK(net->ctx, block >= -1 && block < n->spec.nblocks, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_regrid: block %d does not exist (the network has %d; -1 means all)",
             block, n->spec.nblocks);
  char err[300];
  net->has_grads = false;
  for (int b = block < 0 ? 0 : block; b < (block < 0 ? n->spec.nblocks : block + 1); b++) {
    const dynb__block_spec *bs = &n->spec.blocks[b];
    /* A kept grid is read from the spec, which regrid rewrites: copy it. */
    double *keep = NULL;
    const double *ts = t_states, *tc = t_controls ? t_controls : t_states;
    int ns = nstates, nc = t_controls ? ncontrols : nstates;
    if (!t_states) {
      keep = dynb__alloc(net->ctx, (size_t)bs->nstates * sizeof *keep);
      DYNB_CHECK(net->ctx, keep, DYNB_STATUS_OUT_OF_HOST_MEMORY, "dynb_net_regrid: no memory");
      memcpy(keep, bs->t_states, (size_t)bs->nstates * sizeof *keep);
      ts = keep, ns = bs->nstates;
    }
    dynb_status st = dynb__net_regrid(n, b, ns, ts, nc, tc, err, sizeof err);
    dynb__free(net->ctx, keep);
    DYNB_TRY(st);
  }
  return DYNB_OK;
}

dynb_status dynb_net_blocks(const dynb_net *net, int *blocks, double *time_reg) {
  DYNB__API_HANDLE(net);
  if (blocks) *blocks = net->net->spec.nblocks;
  if (time_reg) *time_reg = net->net->spec.time_reg;
  return DYNB_OK;
}

dynb_status dynb_net_block_grid(const dynb_net *net, int block, int *nstates, int *ncontrols) {
  DYNB__API_HANDLE(net);
  DYNB_CHECK(net->ctx, block >= 0 && block < net->net->spec.nblocks, DYNB_STATUS_INVALID_ARGUMENT,
             "dynb_net_block_grid: no block %d (the network has %d)", block,
             net->net->spec.nblocks);
  if (nstates) *nstates = net->net->spec.blocks[block].nstates;
  if (ncontrols) *ncontrols = net->net->spec.blocks[block].ncontrols;
  return DYNB_OK;
}

dynb_status dynb_net_create_like(dynb_ctx *ctx, const dynb_net *like, uint64_t seed,
                                 dynb_net **out) {
  DYNB__API_HANDLE(ctx);
  DYNB__API_HANDLE(like);
  DYNB_CHECK(ctx, out, DYNB_STATUS_INVALID_ARGUMENT, "dynb_net_create_like: out is NULL");
  *out = NULL;
  dynb__net *inner = NULL;
  dynb_status st = dynb__net_create(ctx, &like->net->spec, like->net->real, &inner);
  if (st == DYNB_OK) st = dynb__net_init(inner, seed);
  if (st != DYNB_OK) {
    dynb__net_free(inner);
    return st;
  }
  return dynb__api_net_wrap(ctx, inner, out);
}
