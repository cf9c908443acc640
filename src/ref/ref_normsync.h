/* Plain-C reference of the per-shard batch-norm reduction of data-parallel
 * training (kernels/normsync.cl). Separate from ref.h so that it moves on
 * its own. */
#ifndef DYNB_TESTS_REF_NORMSYNC_H
#define DYNB_TESTS_REF_NORMSYNC_H

/* Per channel of x [n][c][s]: the mean and M2 = Σ(x - mean)², in double,
 * two passes. */
void ref_bn_moments(int n, int c, int s, const double *x, double *mean, double *m2);

#endif
