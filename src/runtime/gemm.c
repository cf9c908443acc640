/* Matrix products through CLBlast, the only place the library calls it:
 * every GEMM in the formulation tuned for its shape (row-major as written,
 * or the transposed product column-major), and for the tuner a record of
 * the shapes a plan issues. The CLBlast parameters themselves are set per
 * device in gemm_config.c. */
#include <clblast_c.h>

#include <stdio.h>
#include <string.h>

#include "runtime/runtime.h"

static dynb_status clblast_fail(dynb_ctx *ctx, CLBlastStatusCode code, const dynb__gemm_args *g) {
  dynb_status st = DYNB_STATUS_CLBLAST_ERROR;
  if (code == CLBlastTempBufferAllocFailure || code == CLBlastOpenCLOutOfResources)
    st = DYNB_STATUS_OUT_OF_DEVICE_MEMORY;
  return dynb__fail(ctx, st, "CLBlast GEMM %zux%zux%zu (trans %d%d) failed with status %d", g->m,
                    g->n, g->k, (int)g->trans_a, (int)g->trans_b, (int)code);
}

/* The extent a row-major operand needs: rows×cols stored with leading dim ld. */
static int operand_fits(const dynb__tensor *t, size_t rows, size_t cols, size_t ld) {
  size_t es = dynb__dtype_size(t->dtype);
  size_t need = (rows - 1) * ld + cols;
  return ld >= cols && (t->offset + need) * es <= t->cap_bytes;
}

static dynb_status check_args(dynb_ctx *ctx, const dynb__gemm_args *g) {
  DYNB_CHECK(ctx, g && g->a && g->b && g->c && g->a->mem && g->b->mem && g->c->mem,
             DYNB_STATUS_INVALID_ARGUMENT, "gemm: NULL operand");
  dynb_dtype dt = g->a->dtype;
  DYNB_TRY(dynb__check_real(ctx, dt));
  DYNB_CHECK(ctx, g->b->dtype == dt && g->c->dtype == dt, DYNB_STATUS_INVALID_ARGUMENT,
             "gemm: operands differ in dtype");
  if (g->m == 0 || g->n == 0) return DYNB_OK;
  size_t ar = g->trans_a ? g->k : g->m, ac = g->trans_a ? g->m : g->k;
  size_t br = g->trans_b ? g->n : g->k, bc = g->trans_b ? g->k : g->n;
  DYNB_CHECK(ctx,
             (g->k == 0 || (operand_fits(g->a, ar, ac, g->lda) && operand_fits(g->b, br, bc, g->ldb))) &&
                 operand_fits(g->c, g->m, g->n, g->ldc),
             DYNB_STATUS_BUFFER_TOO_SMALL, "gemm %zux%zux%zu: an operand exceeds its buffer", g->m,
             g->n, g->k);
  return DYNB_OK;
}

/* The column-major form swaps the operands: a row-major X with leading
 * dimension ld is, read column-major, Xᵀ with the same ld, so
 * Cᵀ = op(B)ᵀ·op(A)ᵀ is the column-major call with B first, each operand
 * keeping its own transpose flag. */
static dynb_status issue(dynb_ctx *ctx, const dynb__gemm_args *g, dynb__gemm_form form) {
  if (g->m == 0 || g->n == 0) return DYNB_OK;
  CLBlastTranspose ta = g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
  CLBlastTranspose tb = g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
  bool col = form == DYNB__GEMM_COL;
  CLBlastLayout layout = col ? CLBlastLayoutColMajor : CLBlastLayoutRowMajor;
  const dynb__tensor *x = col ? g->b : g->a, *y = col ? g->a : g->b;
  size_t ldx = col ? g->ldb : g->lda, ldy = col ? g->lda : g->ldb;
  size_t m = col ? g->n : g->m, n = col ? g->m : g->n;
  /* While profiling: a marker before the call, whose end opens its span,
   * and the event of its last kernel (profile.c). */
  cl_event mark = NULL, ev = NULL;
  if (ctx->profile) {
    cl_int e = clEnqueueMarkerWithWaitList(ctx->queue, 0, NULL, &mark);
    if (e != CL_SUCCESS) return dynb__cl_fail(ctx, e, "clEnqueueMarkerWithWaitList");
  }
  cl_event *evp = ctx->profile ? &ev : NULL;
  CLBlastStatusCode s;
  if (g->a->dtype == DYNB_F32)
    s = CLBlastSgemm(layout, col ? tb : ta, col ? ta : tb, m, n, g->k, (float)g->alpha, x->mem,
                     x->offset, ldx, y->mem, y->offset, ldy, (float)g->beta, g->c->mem,
                     g->c->offset, g->ldc, &ctx->queue, evp);
  else
    s = CLBlastDgemm(layout, col ? tb : ta, col ? ta : tb, m, n, g->k, g->alpha, x->mem,
                     x->offset, ldx, y->mem, y->offset, ldy, g->beta, g->c->mem, g->c->offset,
                     g->ldc, &ctx->queue, evp);
  if (s != CLBlastSuccess) {
    if (mark) clReleaseEvent(mark);
    if (ev) clReleaseEvent(ev);
    return clblast_fail(ctx, s, g);
  }
  if (!ev) return DYNB_OK;
  char name[64];
  snprintf(name, sizeof name, "gemm %zux%zux%zu %s%s", g->m, g->n, g->k, g->trans_a ? "T" : "N",
           g->trans_b ? "T" : "N");
  return dynb__profile_add(ctx, ev, mark, "clblast", name);
}

static bool same_product(const dynb__gemm_shape *s, dynb_dtype dt, const dynb__gemm_args *g) {
  return s->m == g->m && s->n == g->n && s->k == g->k && s->dtype == dt &&
         s->trans_a == g->trans_a && s->trans_b == g->trans_b;
}

/* A short scan of the table filled at context creation: no file, no
 * string, no allocation on this path. */
static dynb__gemm_form form_of(const dynb_ctx *ctx, dynb_dtype dt, const dynb__gemm_args *g) {
  for (size_t i = 0; i < ctx->ngemm_forms; i++)
    if (same_product(&ctx->gemm_forms[i], dt, g)) return ctx->gemm_forms[i].form;
  return DYNB__GEMM_ROW;
}

static dynb_status record(dynb_ctx *ctx, dynb_dtype dt, const dynb__gemm_args *g) {
  for (size_t i = 0; i < ctx->ngemm_rec; i++) {
    dynb__gemm_shape *s = &ctx->gemm_rec[i];
    if (same_product(s, dt, g) && s->lda == g->lda && s->ldb == g->ldb && s->ldc == g->ldc) {
      s->calls++;
      return DYNB_OK;
    }
  }
  DYNB_TRY(dynb__grow(ctx, (void **)&ctx->gemm_rec, &ctx->gemm_rec_cap, ctx->ngemm_rec,
                      sizeof *ctx->gemm_rec, "recorded GEMM shapes"));
  ctx->gemm_rec[ctx->ngemm_rec++] =
      (dynb__gemm_shape){.dtype = dt, .trans_a = g->trans_a, .trans_b = g->trans_b, .m = g->m,
                         .n = g->n, .k = g->k, .lda = g->lda, .ldb = g->ldb, .ldc = g->ldc,
                         .calls = 1};
  return DYNB_OK;
}

dynb_status dynb__gemm(dynb_ctx *ctx, const dynb__gemm_args *g) {
  DYNB_TRY(check_args(ctx, g));
  dynb_dtype dt = g->a->dtype;
  if (ctx->gemm_recording) DYNB_TRY(record(ctx, dt, g));
  return issue(ctx, g, form_of(ctx, dt, g));
}

dynb_status dynb__gemm_issue(dynb_ctx *ctx, const dynb__gemm_args *g, dynb__gemm_form form) {
  DYNB_TRY(check_args(ctx, g));
  return issue(ctx, g, form);
}

dynb_status dynb__gemm_set_form(dynb_ctx *ctx, const dynb__gemm_shape *s, dynb__gemm_form form) {
  dynb__gemm_args g = {.trans_a = s->trans_a, .trans_b = s->trans_b, .m = s->m, .n = s->n, .k = s->k};
  for (size_t i = 0; i < ctx->ngemm_forms; i++)
    if (same_product(&ctx->gemm_forms[i], s->dtype, &g)) {
      ctx->gemm_forms[i].form = form;
      return DYNB_OK;
    }
  DYNB_TRY(dynb__grow(ctx, (void **)&ctx->gemm_forms, &ctx->gemm_forms_cap, ctx->ngemm_forms,
                      sizeof *ctx->gemm_forms, "GEMM formulations"));
  dynb__gemm_shape e = *s;
  e.form = form;
  ctx->gemm_forms[ctx->ngemm_forms++] = e;
  return DYNB_OK;
}

void dynb__gemm_record(dynb_ctx *ctx, bool on) {
  if (on) ctx->ngemm_rec = 0;
  ctx->gemm_recording = on;
}
