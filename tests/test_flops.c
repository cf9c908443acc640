/* The convolution FLOPs a plan reports (dynb__plan_conv_flops), against a
 * count by hand of bench/specs/d.json. */
#include "testutil.h"
#include "plan/plan.h"

/* Reads bench/specs/NAME, found from this file's absolute path (tests/..). */
static void read_bench_spec(const char *name, dynb__net_spec *s) {
  char path[4096];
  snprintf(path, sizeof path, "%s", __FILE__);
  char *slash = strrchr(path, '/');
  assert_non_null(slash);
  snprintf(slash, sizeof path - (size_t)(slash - path), "/../bench/specs/%s", name);
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text, f);
  fclose(f);
  assert_true(n < sizeof text);
  char err[512];
  if (dynb__spec_parse(text, n, name, s, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
}

/* bench/specs/d.json: input 1×28×28; opening conv 1 → 8, 3×3 (open.kernel's
 * default); blocks of widths 8, 16, 32 at 28×28, 14×14, 7×7 (each level's
 * connecting layer is followed by 2×2 pooling), each doublesym 3×3 with
 * rk4 (4 stages) over t_states 0, 1, 2 (2 steps): 8 layer evaluations, each
 * convolving twice (K y, then Kᵀ s); connecting 1×1 convs 8 → 16, 16 → 32,
 * 32 → 64 (head_width). One convolution is 2·C_out·C_in·k²·H·W FLOPs per
 * image:
 *   open        2·8·1·9·784    =    112,896
 *   block 0     2·8·8·9·784    =    903,168
 *   block 1     2·16·16·9·196  =    903,168
 *   block 2     2·32·32·9·49   =    903,168
 *   connect 0   2·16·8·784     =    200,704
 *   connect 1   2·32·16·196    =    200,704
 *   connect 2   2·64·32·49     =    200,704
 * Forward: 112,896 + 3 blocks · 16 convs · 903,168 (= 43,352,064)
 *          + 3 · 200,704 (= 602,112)                      = 44,067,072.
 * Backward, store mode, no input gradient: the opening conv's weight
 * gradient (112,896); per block evaluation the data and weight gradients
 * of both convs, 32 per block (86,704,128); each connecting conv's weight
 * and data gradients (1,204,224)                           = 88,021,248.
 * A training step, store mode:                              132,088,320.
 * Checkpoint mode's backward also recomputes every forward convolution
 * (blocks' stages and every unit): 88,021,248 + 44,067,072 = 132,088,320,
 * a training step                                           176,155,392.
 * The input gradient adds the opening conv's data gradient:     112,896. */
#define D_FORWARD 44067072.0
#define D_BACKWARD_STORE 88021248.0
#define D_BACKWARD_CHECKPOINT 132088320.0
#define D_OPEN_DATA 112896.0

static void check_d(dynb_memory_mode mode, double backward_per_image) {
  static dynb__net_spec spec;
  read_bench_spec("d.json", &spec);
  dynb_ctx *ctx = tu_ctx();
  dynb__net *net = NULL;
  dynb__plan *plan = NULL;
  const int64_t batch = 3;
  TU_OK(ctx, dynb__net_create(ctx, &spec, DYNB_F32, &net));
  TU_OK(ctx, dynb__plan_build(net, batch, mode, &plan));
  double fwd = 0, bwd = 0;
  dynb__plan_conv_flops(plan, false, &fwd, &bwd);
  /* Integers below 2^53: exact in double. */
  assert_true(fwd == batch * D_FORWARD);
  assert_true(bwd == batch * backward_per_image);
  dynb__plan_conv_flops(plan, true, &fwd, &bwd);
  assert_true(bwd == batch * (backward_per_image + D_OPEN_DATA));
  dynb__plan_free(plan);
  dynb__net_free(net);
  dynb_ctx_free(ctx);
}

static void d_store_matches_hand_count(void **state) {
  (void)state;
  check_d(DYNB_MEMORY_STORE, D_BACKWARD_STORE);
}

static void d_checkpoint_matches_hand_count(void **state) {
  (void)state;
  check_d(DYNB_MEMORY_CHECKPOINT, D_BACKWARD_CHECKPOINT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(d_store_matches_hand_count),
      cmocka_unit_test(d_checkpoint_matches_hand_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
