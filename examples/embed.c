/* Embedding dynblocks in a host code that owns its OpenCL objects.
 *
 * The host creates the OpenCL context, the in-order queue and every buffer
 * itself, fills them with its own data, and hands them to dynblocks as
 * borrowed objects: the library runs on the host's queue (so its work is
 * ordered with the host's own commands) and reads and writes the host's
 * buffers. Here the host's "simulation" makes 1×8×8 fields with a bright
 * vertical bar in the left, middle or right third, and the network learns
 * to tell which.
 *
 * Build: cc embed.c $(pkg-config --cflags --libs dynblocks)   Run: ./a.out */
#include <dynblocks/cl.h>
#include <stdio.h>

#define N 48      /* images per batch */
#define SIDE 8    /* image side */
#define CLASSES 3 /* bar on the left, in the middle, on the right */

static const char *spec =
    "{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": 3,"
    " \"open\": {\"width\": 8},"
    " \"blocks\": [{\"width\": 8, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"rk4\","
    "              \"t_states\": [0, 0.5, 1, 1.5, 2]}]}";

/* A small seeded generator (xorshift32), the same on every host. */
static uint32_t next(uint32_t *s) {
  *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
  return *s;
}

/* The host's data: a bar of one third's columns, plus noise, and its class. */
static void simulate(uint32_t *seed, float *x, int32_t *y) {
  for (int i = 0; i < N; i++) {
    y[i] = (int32_t)(next(seed) % CLASSES);
    for (int r = 0; r < SIDE; r++)
      for (int c = 0; c < SIDE; c++) {
        float noise = (float)(next(seed) >> 8) / 16777216.0f - 0.5f;
        int third = c * CLASSES / SIDE;
        x[(i * SIDE + r) * SIDE + c] = noise + (third == y[i] ? 1.0f : 0.0f);
      }
  }
}

/* The library never prints; the host decides where its messages go. */
static void log_to_stderr(void *user, dynb_log_level level, const char *message) {
  (void)user;
  if (level >= DYNB_LOG_WARN) fprintf(stderr, "dynblocks: %s\n", message);
}

/* The host's own OpenCL set-up: the first GPU, else the first device. */
static int host_opencl(cl_context *context, cl_command_queue *queue) {
  cl_platform_id platforms[8];
  cl_uint np = 0;
  cl_device_id device = NULL;
  if (clGetPlatformIDs(8, platforms, &np) != CL_SUCCESS) return 0;
  for (cl_uint p = 0; p < np && p < 8 && !device; p++)
    if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_GPU, 1, &device, NULL) != CL_SUCCESS)
      device = NULL;
  for (cl_uint p = 0; p < np && p < 8 && !device; p++)
    if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 1, &device, NULL) != CL_SUCCESS)
      device = NULL;
  if (!device) return 0;
  cl_int err;
  *context = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
  if (err != CL_SUCCESS) return 0;
  *queue = clCreateCommandQueue(*context, device, 0, &err);
  return err == CL_SUCCESS;
}

int main(void) {
  cl_context context = NULL;
  cl_command_queue queue = NULL;
  if (!host_opencl(&context, &queue)) {
    fprintf(stderr, "embed: no OpenCL device\n");
    return 1;
  }
  /* The host's buffers: inputs, labels, and room for the logits. */
  static float x[N * SIDE * SIDE], logits[N * CLASSES];
  static int32_t y[N];
  cl_int err;
  cl_mem x_mem = clCreateBuffer(context, CL_MEM_READ_WRITE, sizeof x, NULL, &err);
  cl_mem y_mem = clCreateBuffer(context, CL_MEM_READ_WRITE, sizeof y, NULL, &err);
  cl_mem z_mem = clCreateBuffer(context, CL_MEM_READ_WRITE, sizeof logits, NULL, &err);

  dynb_ctx_desc desc = dynb_ctx_desc_default();
  desc.log_fn = log_to_stderr;
  dynb_ctx *ctx = NULL;
  dynb_net *net = NULL;
  dynb_plan *plan = NULL;
  dynb_optimizer *opt = NULL;
  dynb_tensor *xt = NULL, *yt = NULL, *zt = NULL;
  const int64_t xd[4] = {N, 1, SIDE, SIDE}, yd[1] = {N}, zd[2] = {N, CLASSES};
  dynb_status st = dynb_ctx_create_cl(&desc, context, queue, &ctx);
  if (!st) st = dynb_tensor_wrap_cl(ctx, x_mem, 0, DYNB_F32, 4, xd, &xt);
  if (!st) st = dynb_tensor_wrap_cl(ctx, y_mem, 0, DYNB_I32, 1, yd, &yt);
  if (!st) st = dynb_tensor_wrap_cl(ctx, z_mem, 0, DYNB_F32, 2, zd, &zt);
  if (!st) st = dynb_net_create(ctx, spec, DYNB_F32, 42, &net);
  if (!st) st = dynb_plan_build(net, N, DYNB_MEMORY_STORE, &plan);
  if (!st) st = dynb_optimizer_create(net, DYNB_OPTIM_SGD, &opt);
  if (!st) st = dynb_optimizer_set(opt, DYNB_OPTIM_LR, 0.05);

  /* Training: the host writes each batch into its own buffers with its own
   * queue; the in-order queue puts the library's passes after the writes. */
  uint32_t seed = 1;
  double loss = 0, first = 0, acc = 0;
  for (int step = 0; !st && step <= 60; step++) {
    simulate(&seed, x, y);
    clEnqueueWriteBuffer(queue, x_mem, CL_FALSE, 0, sizeof x, x, 0, NULL, NULL);
    clEnqueueWriteBuffer(queue, y_mem, CL_TRUE, 0, sizeof y, y, 0, NULL, NULL);
    st = dynb_plan_forward(plan, xt, yt, DYNB_PASS_TRAIN);
    if (!st) st = dynb_plan_loss(plan, &loss, &acc);
    if (!st) st = dynb_plan_backward(plan, NULL);
    if (!st) st = dynb_optimizer_step(opt);
    if (step == 0) first = loss;
    if (!st && step % 10 == 0) printf("step %2d  loss %.4f  batch accuracy %.2f\n", step, loss, acc);
  }

  /* Predictions on fresh data, read back by the host from its own buffer. */
  int correct = 0;
  if (!st) {
    simulate(&seed, x, y);
    clEnqueueWriteBuffer(queue, x_mem, CL_FALSE, 0, sizeof x, x, 0, NULL, NULL);
    st = dynb_plan_forward(plan, xt, NULL, DYNB_PASS_EVAL);
    if (!st) st = dynb_plan_logits(plan, zt);
  }
  if (!st && clEnqueueReadBuffer(queue, z_mem, CL_TRUE, 0, sizeof logits, logits, 0, NULL, NULL))
    st = DYNB_STATUS_OPENCL_ERROR;
  for (int i = 0; !st && i < N; i++) {
    int best = 0;
    for (int k = 1; k < CLASSES; k++)
      if (logits[i * CLASSES + k] > logits[i * CLASSES + best]) best = k;
    correct += best == y[i];
    if (i < 6) printf("image %d: bar in third %d, predicted %d\n", i, (int)y[i], best);
  }
  if (!st) printf("held-out accuracy %d/%d; loss %.4f -> %.4f\n", correct, N, first, loss);
  else fprintf(stderr, "embed: %s\n", dynb_ctx_last_error(ctx));

  /* Children before parents; the host's objects outlive the library's. */
  dynb_tensor_free(xt), dynb_tensor_free(yt), dynb_tensor_free(zt);
  dynb_optimizer_free(opt), dynb_plan_free(plan), dynb_net_free(net);
  dynb_ctx_free(ctx);
  clReleaseMemObject(x_mem), clReleaseMemObject(y_mem), clReleaseMemObject(z_mem);
  clReleaseCommandQueue(queue), clReleaseContext(context);
  /* A run whose loss did not fall has failed. */
  return st != DYNB_OK || !(loss < 0.5 * first);
}
