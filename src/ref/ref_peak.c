/* Reference of kernels/peak.cl: the same chains, in double. */
#include <math.h>

#include "ref/ref.h"

double ref_peak_fma(int i, int width, int chains, int iters, double m, double a) {
  double sum = 0;
  for (int j = 0; j < chains; j++)
    for (int l = 0; l < width; l++) {
      double x = 0.5 + (double)((i + j) & 15) / 32 + (double)l / 512;
      for (int t = 0; t < iters; t++) x = fma(x, m, a);
      sum += x;
    }
  return sum;
}
