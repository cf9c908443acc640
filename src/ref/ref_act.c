#include <math.h>

#include "ref/ref.h"

static const double slope = 0.01;

static double act_value(int act, double x) {
  switch (act) {
    case 1: return x > 0 ? x : 0;
    case 2: return tanh(x);
    case 3: return x > 0 ? x : slope * x;
    default: return x;
  }
}

static double act_derivative(int act, double x) {
  switch (act) {
    case 1: return x > 0 ? 1 : 0;
    case 2: return 1 - tanh(x) * tanh(x);
    case 3: return x > 0 ? 1 : slope;
    default: return 1;
  }
}

void ref_act_forward(int act, size_t n, const double *x, double *y) {
  for (size_t i = 0; i < n; i++) y[i] = act_value(act, x[i]);
}

void ref_act_backward(int act, size_t n, const double *x, const double *dy, double *dx) {
  for (size_t i = 0; i < n; i++) dx[i] = dy[i] * act_derivative(act, x[i]);
}
