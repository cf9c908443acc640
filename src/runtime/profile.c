/* Per-command device times from OpenCL event profiling, for `dynblocks
 * bench --profile`. Off (ctx->profile NULL), every enqueue passes no event
 * and the queue has no profiling: nothing is paid. On, the context runs on
 * a queue of its own with CL_QUEUE_PROFILING_ENABLE, and every command the
 * library enqueues (our kernels, CLBlast's GEMMs, buffer copies and fills)
 * leaves one record: its event, what it was, and the layer label in force. */
#include <stdio.h>
#include <string.h>

#include "runtime/runtime.h"

dynb_status dynb__profile_begin(dynb_ctx *ctx) {
  DYNB_CHECK(ctx, ctx->profile == NULL, DYNB_STATUS_MISUSE, "profile: already on");
  DYNB_TRY(dynb__finish(ctx));
  dynb__profile *p = dynb__calloc(ctx, 1, sizeof *p);
  DYNB_CHECK(ctx, p, DYNB_STATUS_OUT_OF_HOST_MEMORY, "profile: no memory");
  cl_int e;
  cl_command_queue q =
      clCreateCommandQueue(ctx->context, ctx->device, CL_QUEUE_PROFILING_ENABLE, &e);
  if (e != CL_SUCCESS) {
    dynb__free(ctx, p);
    return dynb__cl_fail(ctx, e, "clCreateCommandQueue(CL_QUEUE_PROFILING_ENABLE)");
  }
  p->plain = ctx->queue;
  p->layer = "";
  p->index = -1;
  p->pass = "";
  ctx->queue = q;
  ctx->profile = p;
  return DYNB_OK;
}

void dynb__profile_set_layer(dynb_ctx *ctx, const char *layer, int index) {
  ctx->profile->layer = layer;
  ctx->profile->index = index;
}

void dynb__profile_set_pass(dynb_ctx *ctx, const char *pass) { ctx->profile->pass = pass; }

dynb_status dynb__profile_add(dynb_ctx *ctx, cl_event ev, cl_event start, const char *family,
                              const char *name) {
  dynb__profile *p = ctx->profile;
  dynb_status st = dynb__grow(ctx, (void **)&p->recs, &p->cap, p->n, sizeof *p->recs,
                              "profile records");
  if (st != DYNB_OK) {
    clReleaseEvent(ev);
    if (start) clReleaseEvent(start);
    return st;
  }
  dynb__prof_rec *r = &p->recs[p->n++];
  r->ev = ev;
  r->start = start;
  r->family = family;
  snprintf(r->name, sizeof r->name, "%s", name);
  r->layer = p->layer;
  r->index = p->index;
  r->pass = p->pass;
  return DYNB_OK;
}

static dynb_status event_time(dynb_ctx *ctx, cl_event ev, cl_profiling_info what, cl_ulong *t) {
  cl_int e = clGetEventProfilingInfo(ev, what, sizeof *t, t, NULL);
  return e == CL_SUCCESS ? DYNB_OK : dynb__cl_fail(ctx, e, "clGetEventProfilingInfo");
}

/* Releases the records' events, the profiling queue, and goes back to the
 * context's own queue. */
static void profile_off(dynb_ctx *ctx) {
  dynb__profile *p = ctx->profile;
  if (!p) return;
  clFinish(ctx->queue);
  for (size_t i = 0; i < p->n; i++) {
    clReleaseEvent(p->recs[i].ev);
    if (p->recs[i].start) clReleaseEvent(p->recs[i].start);
  }
  clReleaseCommandQueue(ctx->queue);
  ctx->queue = p->plain;
  dynb__free(ctx, p->recs);
  dynb__free(ctx, p);
  ctx->profile = NULL;
}

dynb_status dynb__profile_end(dynb_ctx *ctx, dynb__prof_sample **out, size_t *count) {
  *out = NULL;
  *count = 0;
  DYNB_CHECK(ctx, ctx->profile != NULL, DYNB_STATUS_MISUSE, "profile: not on");
  dynb__profile *p = ctx->profile;
  dynb_status st = dynb__finish(ctx);
  dynb__prof_sample *s = NULL;
  if (st == DYNB_OK && p->n) {
    s = dynb__calloc(ctx, p->n, sizeof *s);
    if (!s) st = dynb__fail(ctx, DYNB_STATUS_OUT_OF_HOST_MEMORY, "profile: no memory");
  }
  for (size_t i = 0; st == DYNB_OK && i < p->n; i++) {
    const dynb__prof_rec *r = &p->recs[i];
    cl_ulong t0 = 0, t1 = 0;
    /* A CLBlast call may run several kernels (padding, transposes, the
     * GEMM) but hands back the event of its last one only: its span starts
     * where the marker enqueued before it ended, which on an in-order queue
     * is when the commands before it were done. */
    if (r->start)
      st = event_time(ctx, r->start, CL_PROFILING_COMMAND_END, &t0);
    else
      st = event_time(ctx, r->ev, CL_PROFILING_COMMAND_START, &t0);
    if (st == DYNB_OK) st = event_time(ctx, r->ev, CL_PROFILING_COMMAND_END, &t1);
    if (st != DYNB_OK) break;
    s[i] = (dynb__prof_sample){.family = r->family, .layer = r->layer, .index = r->index,
                               .pass = r->pass, .seconds = t1 > t0 ? 1e-9 * (double)(t1 - t0) : 0};
    memcpy(s[i].name, r->name, sizeof s[i].name);
  }
  size_t n = p->n;
  profile_off(ctx);
  if (st != DYNB_OK) {
    dynb__free(ctx, s);
    return st;
  }
  *out = s;
  *count = n;
  return DYNB_OK;
}

void dynb__profile_release(dynb_ctx *ctx) { profile_off(ctx); }
