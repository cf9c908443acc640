/* Private header of src/api: the public handles (include/dynblocks) as thin
 * wrappers over the internal modules. Nothing here computes; every call
 * checks its arguments, records failures in the owning context and hands
 * over to runtime, model, plan or train. */
#ifndef DYNB_API_API_H
#define DYNB_API_API_H

#include "train/train.h"

struct dynb_tensor {
  dynb_ctx *ctx;
  dynb__tensor t;
  bool owned; /* the buffer was created here; else the caller's, retained */
};

struct dynb_net {
  dynb_ctx *ctx;
  dynb__net *net;
  dynb_plan *plan;    /* the network's one live plan, or NULL */
  int children;       /* live plans and optimisers, to report misuse at free */
  bool has_grads;     /* a backward pass has filled the gradients */
};

struct dynb_plan {
  dynb_net *net;
  dynb__plan *plan;
  dynb__timereg *reg; /* the spec's time regularisation, NULL when α = 0 */
  dynb__tensor reg_value;
  bool ran;           /* a forward pass has run */
  bool has_labels;    /* ... with labels */
};

struct dynb_dataset {
  dynb_ctx *ctx;
  dynb__dataset d;
};

struct dynb_optimizer {
  dynb_net *net;
  dynb__optim_desc desc;
  double lr;
  dynb__optimizer *opt; /* created at the first step, when desc is final */
};

/* Fails with DYNB_STATUS_MISUSE (no context to record in) on NULL handles. */
#define DYNB__API_HANDLE(h) \
  do {                      \
    if (!(h)) return DYNB_STATUS_MISUSE; \
  } while (0)

/* Checks that a public tensor is usable as argument `what` of a call on ctx:
 * not NULL, of ctx, of `dtype`, and of exactly the shape dims[0..ndim). */
dynb_status dynb__api_tensor_check(dynb_ctx *ctx, const char *what, const dynb_tensor *t,
                                   dynb_dtype dtype, int ndim, const int64_t *dims);
/* A public handle over `inner` (taken over; freed on failure). */
dynb_status dynb__api_net_wrap(dynb_ctx *ctx, dynb__net *inner, dynb_net **out);
/* "[2, 3, 4]" into buf, for messages. */
const char *dynb__api_dims_str(char *buf, size_t len, int ndim, const int64_t *dims);

#endif
