/** @file dynblocks/network.h
 * Networks: built from a JSON spec (a string or a file) or loaded from a
 * model file; their named tensors read and written from the host; saved
 * as safetensors model files. Running a network takes a plan
 * (dynblocks/plan.h). The spec format and the tensor names are those of
 * docs/file-formats.md. */
#ifndef DYNBLOCKS_NETWORK_H
#define DYNBLOCKS_NETWORK_H

#include "dynblocks/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A network: its spec, every named tensor (trainable parameters with their
 * gradients, and batch-norm running statistics) on the context's device.
 * Free its plans and optimisers before it, and it before its context. */
typedef struct dynb_net dynb_net;

/** Builds a network from a JSON spec and initialises its parameters (seeded:
 * the same seed gives the same network on every host).
 * @param ctx the context.
 * @param spec_json (borrowed) NUL-terminated JSON text.
 * @param real DYNB_F32 or DYNB_F64 (the latter where the device has fp64).
 * @param seed initialisation seed.
 * @param out (out) the network; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL ctx), DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_SPEC_ERROR (the message names the key),
 *         DYNB_STATUS_UNSUPPORTED, DYNB_STATUS_OUT_OF_DEVICE_MEMORY. Since: 0.1 */
DYNB_API dynb_status dynb_net_create(dynb_ctx *ctx, const char *spec_json, dynb_dtype real,
                                     uint64_t seed, dynb_net **out);

/** As dynb_net_create, with the spec read from the file `spec_path`.
 * @return as dynb_net_create, and DYNB_STATUS_IO_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_net_create_from_file(dynb_ctx *ctx, const char *spec_path,
                                               dynb_dtype real, uint64_t seed, dynb_net **out);

/** Loads a model or checkpoint file written by dynb_net_save or by the
 * `dynblocks` tool (spec and every tensor), converting values to `real`.
 * @param ctx the context.
 * @param path (borrowed) the file.
 * @param real DYNB_F32 or DYNB_F64.
 * @param out (out) the network; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_IO_ERROR, DYNB_STATUS_BAD_FORMAT (the message names the
 *         file and the tensor or key), DYNB_STATUS_OUT_OF_DEVICE_MEMORY. Since: 0.1 */
DYNB_API dynb_status dynb_net_load(dynb_ctx *ctx, const char *path, dynb_dtype real,
                                   dynb_net **out);

/** Writes the network (spec and every tensor in its dtype) as a safetensors
 * model file, atomically: an existing file is replaced only by a complete one.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_IO_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_net_save(dynb_net *net, const char *path);

/** Releases a network. Accepts NULL. Since: 0.1 */
DYNB_API void dynb_net_free(dynb_net *net);

/** Re-initialises every tensor as dynb_net_create does with `seed`.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_OPENCL_ERROR. Since: 0.1 */
DYNB_API dynb_status dynb_net_init(dynb_net *net, uint64_t seed);

/** The network's input shape, number of classes and real type; each output
 * may be NULL.
 * @param net the network.
 * @param channels,height,width (out) one input image is channels×height×width.
 * @param classes (out) logits per image.
 * @param real (out) DYNB_F32 or DYNB_F64.
 * @return DYNB_OK, or DYNB_STATUS_MISUSE for a NULL network. Since: 0.1 */
DYNB_API dynb_status dynb_net_shape(const dynb_net *net, int64_t *channels, int64_t *height,
                                    int64_t *width, int64_t *classes, dynb_dtype *real);

/** Number of named tensors, into `count` (out).
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT. Since: 0.1 */
DYNB_API dynb_status dynb_net_param_count(const dynb_net *net, size_t *count);

/** Name of tensor `index` (0 .. count-1), e.g. "open.conv.weight" or
 * "blocks.0.controls.2.conv.bias", into `name` (out; owned by the network,
 * valid while it lives).
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT
 *         (index out of range). Since: 0.1 */
DYNB_API dynb_status dynb_net_param_name(const dynb_net *net, size_t index, const char **name);

/** Shape of the tensor called `name`; each output may be NULL.
 * @param net the network.
 * @param name (borrowed) a name as dynb_net_param_name gives.
 * @param ndim (out) rank.
 * @param dims (out) DYNB_MAX_DIMS entries: the dimensions, then zeros.
 * @param trainable (out) 1 for a parameter with a gradient, 0 for a running
 *        statistic.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT
 *         (unknown name: the message says so). Since: 0.1 */
DYNB_API dynb_status dynb_net_param_info(const dynb_net *net, const char *name, int *ndim,
                                         int64_t *dims, int *trainable);

/** Reads the tensor called `name` into host memory (blocking), converted to
 * `host_dtype`.
 * @param net the network.
 * @param name (borrowed) a name as dynb_net_param_name gives.
 * @param host_dtype DYNB_F32 or DYNB_F64.
 * @param host (out) `count` elements of host_dtype.
 * @param count must equal the tensor's element count.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT (unknown
 *         name, bad dtype, NULL host), DYNB_STATUS_SHAPE_MISMATCH (count). Since: 0.1 */
DYNB_API dynb_status dynb_net_param_get(dynb_net *net, const char *name, dynb_dtype host_dtype,
                                        void *host, size_t count);

/** Writes host values into the tensor called `name` (blocking), converted
 * from `host_dtype`; arguments as dynb_net_param_get.
 * @return as dynb_net_param_get. Since: 0.1 */
DYNB_API dynb_status dynb_net_param_set(dynb_net *net, const char *name, dynb_dtype host_dtype,
                                        const void *host, size_t count);

/** Reads the gradient of the trainable tensor `name` left by the last
 * dynb_plan_backward; arguments as dynb_net_param_get.
 * @return as dynb_net_param_get, and DYNB_STATUS_INVALID_ARGUMENT for a
 *         running statistic (no gradient). Since: 0.1 */
DYNB_API dynb_status dynb_net_grad_get(dynb_net *net, const char *name, dynb_dtype host_dtype,
                                       void *host, size_t count);

/** Multilevel training (SPEC §1.1): cuts every interval of every block's
 * state grid and control grid into `factor` equal parts. The new control
 * points are θ(t) of the old ones at their times, so θ(t) does not change
 * and the old points keep their values exactly; each new layer evaluation
 * (step, stage) takes the batch-norm running statistics of the old
 * evaluation nearest in time. Gradients become zero. The network's tensors
 * are renamed and resized (dynb_net_param_count and names change), and the
 * spec that dynb_net_save writes holds the new grids.
 * @param net the network; it must have no live plan or optimiser.
 * @param factor 1 (nothing changes) or more; the grids must stay within
 *        4096 points.
 * @return DYNB_OK, DYNB_STATUS_MISUSE (NULL net, or plans or optimisers
 *         alive), DYNB_STATUS_INVALID_ARGUMENT (factor below 1, or grids too
 *         long: the message names the block), DYNB_STATUS_OUT_OF_DEVICE_MEMORY.
 *         Sizes are checked before anything changes. Since: 0.1 */
DYNB_API dynb_status dynb_net_refine(dynb_net *net, int factor);

/** Re-discretises block `block` (or every block, with -1) onto new grids,
 * as dynb_net_refine does: new control points θ(t) of the old ones,
 * running statistics from the nearest old evaluation, gradients zero.
 * @param net the network; it must have no live plan or optimiser.
 * @param block 0 .. blocks-1, or -1 for every block.
 * @param t_states (borrowed) nstates strictly increasing finite times
 *        (nstates >= 2), or NULL to keep each block's state grid.
 * @param nstates points of t_states.
 * @param t_controls (borrowed) ncontrols strictly increasing finite times
 *        (ncontrols >= 1), or NULL for the new state grid (a spec's default).
 *        At least one of the two grids must be given.
 * @param ncontrols points of t_controls.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT (no
 *         such block, no grid), DYNB_STATUS_SPEC_ERROR (a grid not strictly
 *         increasing, not finite or of a bad length: the message names the
 *         block and the grid), DYNB_STATUS_OUT_OF_DEVICE_MEMORY. Since: 0.1 */
DYNB_API dynb_status dynb_net_regrid(dynb_net *net, int block, const double *t_states,
                                     int nstates, const double *t_controls, int ncontrols);

/** Number of blocks and the spec's time-regularisation weight; each output
 * may be NULL.
 * @param net the network.
 * @param blocks (out) blocks in the spec.
 * @param time_reg (out) the spec's `time_reg` α (0: none).
 * @return DYNB_OK, or DYNB_STATUS_MISUSE for a NULL network. Since: 0.2 */
DYNB_API dynb_status dynb_net_blocks(const dynb_net *net, int *blocks, double *time_reg);
/** Grid sizes of block `block` as they are now (dynb_net_refine and
 * dynb_net_regrid change them); each output may be NULL.
 * @param net the network.
 * @param block 0 .. blocks-1.
 * @param nstates (out) points of the state grid (steps + 1).
 * @param ncontrols (out) control points.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT (no such block). Since: 0.2 */
DYNB_API dynb_status dynb_net_block_grid(const dynb_net *net, int block, int *nstates,
                                         int *ncontrols);
/** A new network on `ctx` with the spec (grids as they are now) and real
 * type of `like`, initialised as dynb_net_init(seed) does: a replica of
 * `like` for another device (dynb_train copies the parameters over).
 * @param ctx the context of the new network.
 * @param like the network whose spec is taken.
 * @param seed initialisation seed.
 * @param out (out) the network; NULL on failure.
 * @return DYNB_OK, DYNB_STATUS_MISUSE, DYNB_STATUS_INVALID_ARGUMENT,
 *         DYNB_STATUS_UNSUPPORTED (e.g. f64 on a device without fp64),
 *         DYNB_STATUS_OUT_OF_DEVICE_MEMORY. Since: 0.2 */
DYNB_API dynb_status dynb_net_create_like(dynb_ctx *ctx, const dynb_net *like, uint64_t seed,
                                          dynb_net **out);
#ifdef __cplusplus
}
#endif
#endif
