/* Private header of src/train: learning-rate schedules, optimisers over a
 * network's tensors, the time regularisation of blocks, data sets and the
 * training loop. */
#ifndef DYNB_TRAIN_TRAIN_H
#define DYNB_TRAIN_TRAIN_H

#include "plan/plan.h"

/* ---- Learning-rate schedule (schedule.c) -------------------------------------- */

#define DYNB_MAX_SCHEDULE 64
/* Piecewise constant per epoch: "0.1@0,0.01@60,0.001@80" (a bare "0.1"
 * means 0.1 from epoch 0). */
typedef struct dynb__schedule {
  int n;
  int epoch[DYNB_MAX_SCHEDULE];
  double lr[DYNB_MAX_SCHEDULE];
} dynb__schedule;

dynb_status dynb__schedule_parse(const char *text, dynb__schedule *out, char *err, size_t errlen);
double dynb__schedule_lr(const dynb__schedule *s, int epoch);

/* ---- Optimiser (optimizer.c) ----------------------------------------------------- */

typedef enum dynb_optim_kind { DYNB_OPTIM_SGD = 0, DYNB_OPTIM_ADAM = 1 } dynb_optim_kind;

typedef struct dynb__optim_desc {
  dynb_optim_kind kind;
  double momentum, weight_decay; /* SGD; weight decay also for Adam */
  bool nesterov;
  double beta1, beta2, eps;      /* Adam */
} dynb__optim_desc;

/* SGD, momentum 0.9, weight decay 4e-4, no Nesterov; Adam's usual betas. */
dynb__optim_desc dynb__optim_desc_default(void);

/* Optimiser state for every trainable tensor of a network. */
typedef struct dynb__optimizer dynb__optimizer;
dynb_status dynb__optimizer_create(dynb__net *net, const dynb__optim_desc *desc,
                                   dynb__optimizer **out);
void dynb__optimizer_free(dynb__optimizer *opt);
/* One update of every trainable tensor from its gradient at rate lr; norm
 * parameters skip weight decay; then the spec's box constraint, if any, on
 * every trainable tensor that is not a norm parameter. */
dynb_status dynb__optimizer_step(dynb__optimizer *opt, double lr);
/* The state tensors, named "optim.<tensor>.<slot>" (slot: velocity, m, v),
 * for checkpoints; and the step counter. */
size_t dynb__optimizer_state_count(const dynb__optimizer *opt);
const dynb__net_tensor *dynb__optimizer_state_at(const dynb__optimizer *opt, size_t i);
int64_t *dynb__optimizer_step_counter(dynb__optimizer *opt);

/* ---- Time regularisation (optimizer.c) ------------------------------------------ */

/* α Σ_b Σ_j h_j ‖θ_{j+1} − θ_j‖₁ over every block's controls (the spec's
 * time_reg α): value added to out[0], subgradient to the block gradients. */
typedef struct dynb__timereg dynb__timereg;
dynb_status dynb__timereg_create(dynb__net *net, dynb__timereg **out);
void dynb__timereg_free(dynb__timereg *tr);
/* value = R (out: [1]), and gradients += ∂R/∂controls. */
dynb_status dynb__timereg_apply(dynb__timereg *tr, const dynb__tensor *value);

#endif
