/** @file dynblocks/plan.h
 * Plans: a network compiled for one batch size and memory mode. Building a
 * plan allocates every activation and gradient buffer and picks every
 * kernel; forward and backward then replay without allocating.
 *
 * Life cycle: dynb_plan_build → (dynb_plan_forward → dynb_plan_loss /
 * dynb_plan_logits → dynb_plan_backward → dynb_optimizer_step)… →
 * dynb_plan_free. A network has at most one plan at a time. */
#ifndef DYNBLOCKS_PLAN_H
#define DYNBLOCKS_PLAN_H

#include "dynblocks/network.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A network compiled for one batch size. */
typedef struct dynb_plan dynb_plan;

/** What backward keeps from forward: every intermediate (fast, more
 * memory), or each step's input only, recomputing a step's stages (and each
 * opening or connecting layer's activations) during backward. On the
 * reference networks checkpointing takes 17-33% more time per training step
 * and a quarter to a half of the memory. Both give the same gradients, bit
 * for bit. */
typedef enum dynb_memory_mode {
  DYNB_MEMORY_STORE = 0,     /**< keep every intermediate */
  DYNB_MEMORY_CHECKPOINT = 1, /**< keep step inputs, recompute the rest */
  /** Reversible blocks (leapfrog) keep only their last two states and
   * rebuild the others backward (memory flat in the number of steps;
   * gradients equal up to the rounding of the rebuild, see
   * dynb_plan_reconstruction_error); other blocks checkpoint. Since: 0.2 */
  DYNB_MEMORY_RECONSTRUCT = 2
} dynb_memory_mode;

/** How a forward pass treats batch norms. */
typedef enum dynb_pass {
  DYNB_PASS_EVAL = 0, /**< running statistics; nothing changes in the network */
  DYNB_PASS_TRAIN = 1 /**< batch statistics; running statistics are updated */
} dynb_pass;

/** Compiles `net` for batches of `batch` images.
 * @param net the network.
 * @param batch images per pass, >= 1.
 * @param mode what backward keeps (same gradients either way).
 * @param out (out) the plan; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL net, or the network already has
 *         a plan: free it first), DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_OUT_OF_DEVICE_MEMORY. Since: 0.1 */
DYNB_API dynb_status dynb_plan_build(dynb_net *net, int64_t batch, dynb_memory_mode mode,
                                     dynb_plan **out);

/** Releases a plan. Accepts NULL. Since: 0.1 */
DYNB_API void dynb_plan_free(dynb_plan *plan);

/** Forward pass over a batch (enqueued; does not wait).
 * @param plan the plan.
 * @param x (borrowed) inputs [batch, channels, height, width] in the
 *        network's real type; copied on the device, so it may be reused at once.
 * @param labels (borrowed, may be NULL) I32 class labels [batch]; needed for
 *        dynb_plan_loss and dynb_plan_backward. A label outside 0..classes-1
 *        makes its row's loss NaN.
 * @param pass DYNB_PASS_EVAL or DYNB_PASS_TRAIN.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL plan), DYNB_STATUS_INVALID_ARGUMENT
 *         (NULL x, wrong dtype, tensor of another context),
 *         DYNB_STATUS_SHAPE_MISMATCH, DYNB_STATUS_OPENCL_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_plan_forward(dynb_plan *plan, const dynb_tensor *x,
                                       const dynb_tensor *labels, dynb_pass pass);

/** Copies the logits of the last forward into `out` (enqueued).
 * @param plan the plan.
 * @param out (borrowed) [batch, classes] in the network's real type.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL plan, no forward yet),
 *         DYNB_STATUS_INVALID_ARGUMENT, DYNB_STATUS_SHAPE_MISMATCH. Since: 0.1 */
DYNB_API dynb_status dynb_plan_logits(dynb_plan *plan, dynb_tensor *out);

/** Mean softmax cross-entropy of the last forward and the fraction of
 * images whose largest logit is their label (blocking). The loss leaves out
 * the spec's time regularisation.
 * @param plan the plan.
 * @param loss (out) mean loss.
 * @param accuracy (out, may be NULL) in [0, 1].
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL plan; no forward with labels yet),
 *         DYNB_STATUS_INVALID_ARGUMENT, DYNB_STATUS_OPENCL_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_plan_loss(dynb_plan *plan, double *loss, double *accuracy);

/** Backward pass of the last forward (enqueued): the gradient of its mean
 * loss, plus the spec's time regularisation, with respect to every
 * trainable tensor replaces the previous gradients (dynb_net_grad_get reads
 * them; dynb_optimizer_step uses them).
 * @param plan the plan.
 * @param dx (borrowed, may be NULL) receives ∂loss/∂x, shaped like x.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL plan; no forward with labels
 *         before it), DYNB_STATUS_INVALID_ARGUMENT, DYNB_STATUS_SHAPE_MISMATCH,
 *         DYNB_STATUS_OPENCL_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_plan_backward(dynb_plan *plan, dynb_tensor *dx);

/** Device bytes the plan holds for activations, gradients and scratch (not
 * the network's parameters), into `bytes` (out).
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.1 */
DYNB_API dynb_status dynb_plan_bytes(const dynb_plan *plan, size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
