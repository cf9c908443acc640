/* The one place that maps a scheme's kind to its integrator (integrator.h). */
#include "model/integrator.h"

const dynb__integrator *dynb__integrator_for(const dynb__tableau *t) {
  /* An embedded pair steps adaptively (SPEC §1.5) whatever its kind. */
  if (t->embedded) return &dynb__integrator_adaptive;
  switch (t->kind) {
    case DYNB_SCHEME_RK:
      break;
    case DYNB_SCHEME_LEAPFROG:
      return &dynb__integrator_leapfrog;
  }
  return &dynb__integrator_rk;
}
