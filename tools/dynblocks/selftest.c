/* dynblocks selftest: every kernel and convolution route against its
 * plain-C reference on the chosen device, and a whole network's gradient
 * against finite differences (src/selftest). Prints one row per op, route
 * and dtype, then a summary; exits 1 on any failure or error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "selftest/selftest.h"

/* Rows printed so far whose op is the fault hook's (DYNBLOCKS_SELFTEST_FAULT). */
typedef struct printer {
  const char *fault;
  int fault_rows;
} printer;

static void print_row(void *user, const dynb__selftest_row *row) {
  printer *p = user;
  if (p->fault && strcmp(p->fault, row->op) == 0) p->fault_rows++;
  printf("%-34s %-6s %-4s %5d  %12.3e %12.3e  %-4s %8.2f\n", row->op, row->route,
         dynb__dtype_name(row->dtype), row->checks, row->err, row->bound,
         row->pass ? "pass" : "FAIL", row->seconds);
  if (row->error) printf("    error: %s\n", row->error);
  fflush(stdout);
}

int cmd_selftest(int argc, char **argv) {
  selftest_opts o;
  char err[512];
  int rc =
      cli_report(&cli_selftest_command, cli_selftest_options(argc, argv, &o, err, sizeof err), err);
  if (rc >= 0) return rc;
  dynb_ctx *ctx = cli_context("selftest", o.device);
  if (!ctx) return 1;
  const dynb_device_info *info = &ctx->info;
  printf("dynblocks selftest%s on %s [%s], %s, driver %s%s\n", o.quick ? " --quick" : "",
         info->device_name, info->platform_name, info->device_version, info->driver_version,
         info->has_fp64 ? "" : " (no fp64: f32 only)");
  printf("%-34s %-6s %-4s %5s  %12s %12s  %-4s %8s\n", "op", "route", "type", "checks",
         "largest err", "bound", "", "seconds");
  /* DYNBLOCKS_SELFTEST_FAULT=OP perturbs OP's results as they are read
   * back: a way to see (and for tests/cli to prove) that a wrong kernel
   * makes the run fail. docs/cli.md documents it as a testing aid. */
  const char *fault = getenv("DYNBLOCKS_SELFTEST_FAULT");
  printer p = {.fault = fault && fault[0] ? fault : NULL};
  dynb__selftest_desc d = {.quick = o.quick, .row_fn = print_row, .user = &p, .fault_op = p.fault};
  dynb__selftest_summary sum;
  dynb_status st = dynb__selftest_run(ctx, &d, &sum);
  if (st != DYNB_OK) {
    rc = cli_fail("selftest", ctx);
    dynb_ctx_free(ctx);
    return rc;
  }
  printf("\n%d rows, %d passed, %d failed; %s; %.1f s\n", sum.rows, sum.rows - sum.failed,
         sum.failed, sum.fp64 ? "f32 and f64" : "f32 only (the device has no fp64)", sum.seconds);
  if (p.fault)
    printf("(DYNBLOCKS_SELFTEST_FAULT=%s was set: its rows are meant to fail)\n", p.fault);
  if (p.fault && p.fault_rows == 0) {
    fprintf(stderr,
            "dynblocks selftest: DYNBLOCKS_SELFTEST_FAULT names '%s', which is no op of "
            "the table\n",
            p.fault);
    dynb_ctx_free(ctx);
    return 2;
  }
  if (sum.failed)
    fprintf(stderr, "dynblocks selftest: %d of %d rows FAILED\n", sum.failed, sum.rows);
  dynb_ctx_free(ctx);
  return sum.failed ? 1 : 0;
}
