/* Learning-rate schedules given per epoch: "0.1@0,0.01@60,0.001@80". */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "train/train.h"

dynb_status dynb__schedule_parse(const char *text, dynb__schedule *out, char *err,
                                 size_t errlen) {
  out->n = 0;
  const char *p = text ? text : "";
  while (*p) {
    if (out->n == DYNB_MAX_SCHEDULE) {
      snprintf(err, errlen, "learning-rate schedule has more than %d entries", DYNB_MAX_SCHEDULE);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    char *end;
    errno = 0;
    double lr = strtod(p, &end);
    long epoch = 0;
    if (end == p || errno || !isfinite(lr) || lr < 0) goto bad;
    if (*end == '@') {
      const char *q = end + 1;
      epoch = strtol(q, &end, 10);
      if (end == q || errno || epoch < 0 || epoch > 1000000) goto bad;
    }
    if (out->n == 0 ? epoch != 0 : epoch <= out->epoch[out->n - 1]) {
      snprintf(err, errlen,
               "learning-rate schedule '%s': epochs must start at 0 and increase (entry %d)", text,
               out->n + 1);
      return DYNB_STATUS_INVALID_ARGUMENT;
    }
    out->lr[out->n] = lr;
    out->epoch[out->n++] = (int)epoch;
    if (*end == ',')
      end++;
    else if (*end)
      goto bad;
    p = end;
  }
  if (out->n > 0) return DYNB_OK;
bad:
  snprintf(err, errlen, "bad learning-rate schedule '%s' (expected e.g. 0.1@0,0.01@60)",
           text ? text : "");
  return DYNB_STATUS_INVALID_ARGUMENT;
}

double dynb__schedule_lr(const dynb__schedule *s, int epoch) {
  double lr = s->n ? s->lr[0] : 0;
  for (int i = 0; i < s->n && s->epoch[i] <= epoch; i++) lr = s->lr[i];
  return lr;
}
