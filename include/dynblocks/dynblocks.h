/** @file dynblocks/dynblocks.h
 * dynblocks: DynamicBlocks networks (ResNets as ODE discretisations) on any
 * OpenCL device. Include this one header for the whole C API; include
 * dynblocks/cl.h as well to use your own OpenCL context, queue and buffers.
 *
 * Conventions, for every call:
 * - Objects are opaque handles, created by a call that returns a status and
 *   writes an out-pointer (NULL on failure), released by a *_free call that
 *   accepts NULL. Children are freed before their parents: tensors, plans
 *   and optimisers before their network, everything before its context.
 * - Every call returns a dynb_status (the *_free calls and a few queries of
 *   static text excepted). A failure records a message in the context the
 *   object belongs to: dynb_ctx_last_error(). A NULL handle gives
 *   DYNB_STATUS_MISUSE.
 * - Pointer arguments are documented as borrowed (read during the call
 *   only), out (written by the call) or owned by the library.
 * - The library never prints, never exits and has no global mutable state:
 *   messages go to the context's log callback. A context and everything made
 *   from it serve one thread at a time; different contexts may be used from
 *   different threads at once.
 * - Work is enqueued on the context's in-order OpenCL queue; calls that
 *   return values on the host wait for it. */
#ifndef DYNBLOCKS_DYNBLOCKS_H
#define DYNBLOCKS_DYNBLOCKS_H

#include "dynblocks/version.h"
#include "dynblocks/status.h"
#include "dynblocks/context.h"
#include "dynblocks/tensor.h"
#include "dynblocks/network.h"
#include "dynblocks/plan.h"
#include "dynblocks/optimizer.h"
#include "dynblocks/trainer.h"

#endif
