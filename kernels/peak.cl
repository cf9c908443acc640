/* The device's peak rate of fused multiply-adds, for `dynblocks bench`'s
 * fraction of peak: nothing but arithmetic, no memory traffic in the loop.
 *
 * Every work-item i < n runs DYNB_PEAK_CHAINS independent chains of
 * vectors of W lanes, x ← fma(x, m, a), `iters` times, and writes the sum
 * of every chain's every lane to out[i] (so that no chain is dead code).
 * Independent chains hide the FMA latency (a chain waits for its own
 * previous result, 4 cycles on most CPUs, 4-6 on GPUs); vectors fill the
 * SIMD lanes of CPUs, while GPUs and PoCL's work-group vectoriser take the
 * lanes from neighbouring work-items, so the host tries every W and keeps
 * the fastest. Lane l of chain j starts at
 *   0.5 + ((i + j) & 15) / 32 + l / 512
 * (exact in float), which tests/ref/ref_peak.c repeats. Each launch does
 * 2 · n · iters · DYNB_PEAK_CHAINS · W floating-point operations. */

#define DYNB_PEAK_CHAINS 8

/* Lane indices 0..W-1 as reals. */
#define PEAK_LANES_1 ((real)0)
#define PEAK_LANES_4 ((real4)(0, 1, 2, 3))
#define PEAK_LANES_8 ((real8)(0, 1, 2, 3, 4, 5, 6, 7))
#define PEAK_LANES_16 ((real16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))

/* The sum of a vector's lanes, halving. */
#define PEAK_HSUM_1(v) (v)
#define PEAK_HSUM_4(v) (((v).s0 + (v).s2) + ((v).s1 + (v).s3))
#define PEAK_HSUM_8(v) PEAK_HSUM_4((v).lo + (v).hi)
#define PEAK_HSUM_16(v) PEAK_HSUM_8((v).lo + (v).hi)

/* The prelude has real8 and real16; this family also needs real4. */
#if DYNB_REAL_DOUBLE
typedef double4 real4;
#else
typedef float4 real4;
#endif

#define PEAK_START(VT, W, j) \
  ((VT)((real)0.5 + (real)((gid + (j)) & 15) * (real)0.03125) + PEAK_LANES_##W * (real)0.001953125)

#define PEAK_KERNEL(W, VT)                                                                      \
  __kernel void dynb_peak_fma_v##W(DYNB_TENSOR(out), const int n, const int iters,             \
                                   const real m, const real a) {                               \
    const int gid = (int)get_global_id(0);                                                      \
    if (gid >= n) return;                                                                       \
    const VT vm = (VT)(m), va = (VT)(a);                                                        \
    VT x0 = PEAK_START(VT, W, 0), x1 = PEAK_START(VT, W, 1), x2 = PEAK_START(VT, W, 2);         \
    VT x3 = PEAK_START(VT, W, 3), x4 = PEAK_START(VT, W, 4), x5 = PEAK_START(VT, W, 5);         \
    VT x6 = PEAK_START(VT, W, 6), x7 = PEAK_START(VT, W, 7);                                    \
    for (int it = 0; it < iters; it++) {                                                        \
      x0 = fma(x0, vm, va);                                                                     \
      x1 = fma(x1, vm, va);                                                                     \
      x2 = fma(x2, vm, va);                                                                     \
      x3 = fma(x3, vm, va);                                                                     \
      x4 = fma(x4, vm, va);                                                                     \
      x5 = fma(x5, vm, va);                                                                     \
      x6 = fma(x6, vm, va);                                                                     \
      x7 = fma(x7, vm, va);                                                                     \
    }                                                                                           \
    const VT s = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7));                             \
    DYNB_AT(out)[gid] = PEAK_HSUM_##W(s);                                                       \
  }

PEAK_KERNEL(1, real)
PEAK_KERNEL(4, real4)
PEAK_KERNEL(8, real8)
PEAK_KERNEL(16, real16)
