/* The one place that maps a scheme's kind to its integrator (integrator.h). */
#include <stdio.h>

#include "model/integrator.h"

dynb_status dynb__integrator_check_not_hamiltonian(const dynb__layer *l, const dynb__tableau *t,
                                                  char *err, size_t errlen) {
  if (l->kind != DYNB_LAYER_HAMILTONIAN) return DYNB_OK;
  snprintf(err, errlen, "layer 'hamiltonian' takes only scheme 'verlet', not '%s'", t->name);
  return DYNB_STATUS_SPEC_ERROR;
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
