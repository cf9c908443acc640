/* Matrix products through CLBlast, the only place the library calls it. */
#include <clblast_c.h>

#include <pthread.h>
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

dynb_status dynb__gemm(dynb_ctx *ctx, const dynb__gemm_args *g) {
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
  CLBlastTranspose ta = g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
  CLBlastTranspose tb = g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
  CLBlastStatusCode s;
  if (dt == DYNB_F32)
    s = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, g->m, g->n, g->k, (float)g->alpha, g->a->mem,
                     g->a->offset, g->lda, g->b->mem, g->b->offset, g->ldb, (float)g->beta,
                     g->c->mem, g->c->offset, g->ldc, &ctx->queue, NULL);
  else
    s = CLBlastDgemm(CLBlastLayoutRowMajor, ta, tb, g->m, g->n, g->k, g->alpha, g->a->mem,
                     g->a->offset, g->lda, g->b->mem, g->b->offset, g->ldb, g->beta, g->c->mem,
                     g->c->offset, g->ldc, &ctx->queue, NULL);
  return s == CLBlastSuccess ? DYNB_OK : clblast_fail(ctx, s, g);
}

/* CLBlast has no tuning for PoCL's CPU device and falls back to generic GPU
 * parameters that run these convolution GEMMs at 3-24 GFLOP/s. This Xgemm
 * configuration (tiny work-groups, 16-wide vectors, no local memory, KWG=8,
 * always the indirect kernel) was measured correct on every conv shape and
 * 5-40x faster (notes/clblast-on-pocl.md, "i_m32n32"); the tests check every
 * GEMM result against references with it in place. Issue 5's tuner replaces
 * this single choice with per-shape measured ones. */
static const char *const xgemm_names[] = {"GEMMK", "KREG",  "KWG",  "KWI",  "MDIMA", "MDIMC",
                                          "MWG",   "NDIMB", "NDIMC", "NWG", "SA",    "SB",
                                          "STRM",  "STRN",  "VWM",  "VWN"};
static const size_t xgemm_values[] = {0, 1, 8, 8, 2, 2, 32, 2, 2, 32, 0, 0, 0, 0, 16, 16};

dynb_status dynb__gemm_apply_defaults(dynb_ctx *ctx) {
  bool pocl_cpu = !ctx->info.is_gpu && strstr(ctx->info.platform_name, "Portable Computing Language");
  if (!pocl_cpu) return DYNB_OK;
  const char *routine[] = {"XGEMM_MIN_INDIRECT_SIZE"};
  const size_t always_indirect[] = {1};
  /* CLBlastOverrideParameters (CLBlast 1.5.3) corrupts its process-wide
   * database when two threads call it at once (test_threads.c crashed in it
   * with two contexts created together), so calls take turns. The mutex is
   * the library's only other process-wide object; it holds no data. */
  static pthread_mutex_t override_lock = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&override_lock);
  CLBlastStatusCode s = CLBlastOverrideParameters(ctx->device, "Xgemm", CLBlastPrecisionSingle, 16,
                                                  (const char **)xgemm_names, xgemm_values);
  if (s == CLBlastSuccess)
    s = CLBlastOverrideParameters(ctx->device, "GemmRoutine", CLBlastPrecisionSingle, 1, routine,
                                  always_indirect);
  pthread_mutex_unlock(&override_lock);
  if (s != CLBlastSuccess)
    dynb__log(ctx, DYNB_LOG_WARN, "CLBlast parameter override refused (%d); using its defaults",
              (int)s);
  return DYNB_OK;
}
