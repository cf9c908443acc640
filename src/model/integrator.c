/* The one place that maps a scheme's kind to its integrator (integrator.h), and
 * what more than one integrator shares. */
#include <math.h>
#include <stdio.h>

#include "model/integrator.h"

dynb_status dynb__integrator_check_not_hamiltonian(const dynb__layer *l, const dynb__tableau *t,
                                                  char *err, size_t errlen) {
  if (l->kind != DYNB_LAYER_HAMILTONIAN) return DYNB_OK;
  snprintf(err, errlen, "layer 'hamiltonian' takes only scheme 'verlet', not '%s'", t->name);
  return DYNB_STATUS_SPEC_ERROR;
}

dynb_status dynb__integrator_rebuild_error(dynb__block *b, const dynb__tensor *y0,
                                           const dynb__tensor *x, double *err) {
  double *a = dynb__alloc(b->ctx, 2 * b->nchw * sizeof *a);
  DYNB_CHECK(b->ctx, a, DYNB_STATUS_OUT_OF_HOST_MEMORY, "block: no memory");
  dynb_status st = dynb__tensor_read_f64(b->ctx, y0, a);
  if (st == DYNB_OK) st = dynb__tensor_read_f64(b->ctx, x, a + b->nchw);
  if (st == DYNB_OK) {
    double d = 0, m = 0;
    for (size_t i = 0; i < b->nchw; i++) {
      d = fmax(d, fabs(a[i] - a[b->nchw + i]));
      m = fmax(m, fabs(a[b->nchw + i]));
    }
    *err = m > 0 ? d / m : d;
  }
  dynb__free(b->ctx, a);
  return st;
}

const dynb__integrator *dynb__integrator_for(const dynb__tableau *t) {
  /* An embedded pair steps adaptively (SPEC §1.5) whatever its kind, and
   * the continuous adjoint of any tableau is solved there too. */
  if (t->embedded || t->gradient == DYNB_GRADIENT_ADJOINT) return &dynb__integrator_adaptive;
  switch (t->kind) {
    case DYNB_SCHEME_RK:
      break;
    case DYNB_SCHEME_LEAPFROG:
      return &dynb__integrator_leapfrog;
    case DYNB_SCHEME_VERLET:
      return &dynb__integrator_verlet;
  }
  return &dynb__integrator_rk;
}
