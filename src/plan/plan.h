/* Private header of src/plan: a network compiled for one batch size and
 * memory mode — every activation, gradient and scratch buffer allocated up
 * front — and the forward and backward passes that replay over them. */
#ifndef DYNB_PLAN_PLAN_H
#define DYNB_PLAN_PLAN_H

#include "model/model.h"

typedef struct dynb__plan dynb__plan;

/* Builds a plan for batches of `batch` inputs. The plan prepares the
 * network's blocks for that shape; one plan per network at a time. */
dynb_status dynb__plan_build(dynb__net *net, int64_t batch, dynb_memory_mode mode,
                             dynb__plan **out);
void dynb__plan_free(dynb__plan *plan);

/* The network the plan runs (borrowed). */
dynb__net *dynb__plan_net(const dynb__plan *plan);
int64_t dynb__plan_batch(const dynb__plan *plan);
/* Buffers the caller fills before a run: inputs [N, C, H, W] and labels [N]
 * (I32). Borrowed, valid for the plan's life. */
const dynb__tensor *dynb__plan_input(const dynb__plan *plan);
const dynb__tensor *dynb__plan_labels(const dynb__plan *plan);
/* Results: logits [N, classes]; loss [2] = {mean loss, correct count}
 * (without the time-regularisation term); ∂L/∂input after a backward with
 * want_dx. */
const dynb__tensor *dynb__plan_logits(const dynb__plan *plan);
const dynb__tensor *dynb__plan_loss(const dynb__plan *plan);
const dynb__tensor *dynb__plan_input_grad(const dynb__plan *plan);
/* Device bytes of the plan's own buffers plus its blocks' buffers (not the
 * parameters). */
size_t dynb__plan_bytes(const dynb__plan *plan);
/* Device buffers those bytes are in: more than one per arena where an
 * arena exceeds the device's largest allocation. */
size_t dynb__plan_buffers(const dynb__plan *plan);

/* Convolution FLOPs (2 per multiply-add, padded positions included) of one
 * forward and of one backward pass as this plan runs them: the opening
 * unit, every block's layer evaluations and every connecting unit;
 * backward takes data and weight gradients (the opening unit's data
 * gradient only with want_dx) and, in checkpoint mode, the forward
 * convolutions it recomputes. Counted from the network's structure; a
 * training step is forward + backward(want_dx false). */
void dynb__plan_conv_flops(const dynb__plan *plan, bool want_dx, double *forward,
                           double *backward);

/* Scales the gradients of the next backward passes: they become those of
 * scale · (mean loss). 1 by default; a replica of a data-parallel group
 * holding b of the global batch's B samples uses b / B, so that the summed
 * gradients are those of Σ loss / B (SPEC §2.1). */
void dynb__plan_set_loss_scale(dynb__plan *plan, double scale);

/* Forward pass over the input; in training mode batch norms use batch
 * statistics and update their running statistics. Enqueued only. */
dynb_status dynb__plan_forward(dynb__plan *plan, bool train);
/* Backward pass of the last forward (same mode): gradients of the mean loss
 * added to the network's gradient tensors (zero them first, see
 * dynb__net_zero_grads); ∂L/∂input too when want_dx. */
dynb_status dynb__plan_backward(dynb__plan *plan, bool want_dx);
/* After a backward in reconstruct mode: the largest, over the blocks, of
 * |rebuilt Y_0 − block input| / max |block input| (0 where no block rebuilt
 * anything). Reads device memory: finishes the queue. */
dynb_status dynb__plan_reconstruction_error(dynb__plan *plan, double *err);

#endif
