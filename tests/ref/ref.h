/* Plain-C references for every op: naive loops in double, written for
 * clarity, not speed. Layouts match the ops (NCHW, weights [out][in][k][k]).
 * Each family's functions live in tests/ref/ref_<family>.c. */
#ifndef DYNB_TESTS_REF_H
#define DYNB_TESTS_REF_H

#include <stddef.h>
#include <stdint.h>

/* ---- channel (ref_channel.c) ---- */
void ref_bias_add(int n, int c, int s, double *y, const double *b);
void ref_channel_sum(int n, int c, int s, const double *x, double *out);

/* ---- rk (ref_rk.c) ---- */
/* out = y + Σ_j coef[j] k[j]; k: S stages of p elements. */
void ref_rk_combine(size_t p, int S, const double *y, const double *k, const double *coef,
                    double *out);
void ref_rk_combine_backward(size_t p, int S, const double *dout, const double *coef, double *dy,
                             double *dk);

/* ---- act (ref_act.c) ---- */

/* ---- conv (ref_conv.c) ---- */

/* ---- norm (ref_norm.c) ---- */

/* ---- pool, linear, loss (ref_pool.c, ref_linear.c, ref_loss.c) ---- */

/* ---- param: interpolation, optimisers, time regularisation (ref_param.c) ---- */

#endif
