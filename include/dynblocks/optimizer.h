/** @file dynblocks/optimizer.h
 * Optimisers: SGD (momentum, Nesterov, weight decay) and Adam over every
 * trainable tensor of a network, stepping from the gradients of the last
 * dynb_plan_backward. Norm parameters skip weight decay; a spec's `clip`
 * box constraint is applied after each step. */
#ifndef DYNBLOCKS_OPTIMIZER_H
#define DYNBLOCKS_OPTIMIZER_H

#include "dynblocks/network.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An optimiser and its state (velocities, moments, step count). */
typedef struct dynb_optimizer dynb_optimizer;

/** Update rules. */
typedef enum dynb_optim_kind {
  DYNB_OPTIM_SGD = 0, /**< stochastic gradient descent with momentum */
  DYNB_OPTIM_ADAM = 1 /**< Adam (weight decay added to the gradient) */
} dynb_optim_kind;

/** Hyper-parameters, set one at a time; bounds are inclusive unless noted. */
typedef enum dynb_optim_param {
  DYNB_OPTIM_LR = 300,           /**< learning rate in [0, 1e6]; default 0.01 (SGD), 0.001 (Adam);
                                      may change between steps */
  DYNB_OPTIM_MOMENTUM = 301,     /**< SGD momentum in [0, 1); default 0.9 */
  DYNB_OPTIM_WEIGHT_DECAY = 302, /**< L2 weight decay in [0, 1]; default 4e-4 */
  DYNB_OPTIM_NESTEROV = 303,     /**< SGD: 1 for Nesterov momentum, 0 (default) for classical */
  DYNB_OPTIM_BETA1 = 304,        /**< Adam β₁ in [0, 1); default 0.9 */
  DYNB_OPTIM_BETA2 = 305,        /**< Adam β₂ in [0, 1); default 0.999 */
  DYNB_OPTIM_EPS = 306           /**< Adam ε in (0, 1]; default 1e-8 */
} dynb_optim_param;

/** Creates an optimiser over `net` with the default hyper-parameters.
 * @param net the network whose trainable tensors it updates.
 * @param kind DYNB_OPTIM_SGD or DYNB_OPTIM_ADAM.
 * @param out (out) the optimiser; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL net), DYNB_STATUS_INVALID_ARGUMENT
 *         (unknown kind, NULL out). Since: 0.1 */
DYNB_API dynb_status dynb_optimizer_create(dynb_net *net, dynb_optim_kind kind,
                                           dynb_optimizer **out);

/** Releases an optimiser. Accepts NULL. Since: 0.1 */
DYNB_API void dynb_optimizer_free(dynb_optimizer *opt);

/** Sets a hyper-parameter. All but DYNB_OPTIM_LR must be set before the
 * first step (they shape the optimiser's state).
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL optimiser; non-LR after the first
 *         step), DYNB_STATUS_INVALID_ARGUMENT (unknown parameter, or one the
 *         kind does not use), DYNB_STATUS_PARAM_OUT_OF_BOUND (never clamped). Since: 0.1 */
DYNB_API dynb_status dynb_optimizer_set(dynb_optimizer *opt, dynb_optim_param param,
                                        double value);

/** Reads a hyper-parameter into `value` (out).
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.1 */
DYNB_API dynb_status dynb_optimizer_get(const dynb_optimizer *opt, dynb_optim_param param,
                                        double *value);

/** One update of every trainable tensor from its gradient (enqueued).
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL optimiser, or its network has
 *         had no backward pass yet), DYNB_STATUS_OUT_OF_DEVICE_MEMORY (state
 *         is allocated at the first step), DYNB_STATUS_OPENCL_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_optimizer_step(dynb_optimizer *opt);

#ifdef __cplusplus
}
#endif
#endif
