/* `dynblocks bench --profile`: the device time of every command of some
 * training steps (OpenCL event profiling, src/runtime/profile.c), summed by
 * kernel family, by layer and by kernel, each table sorted by time. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct prof_row {
  char key[80];
  double seconds, forward, backward;
  size_t count;
} prof_row;

typedef struct prof_table {
  prof_row *rows;
  size_t n, cap;
} prof_table;

static prof_row *row_for(prof_table *t, const char *key) {
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->rows[i].key, key) == 0) return &t->rows[i];
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 32;
    prof_row *r = realloc(t->rows, cap * sizeof *r);
    if (!r) return NULL;
    t->rows = r, t->cap = cap;
  }
  prof_row *r = &t->rows[t->n++];
  memset(r, 0, sizeof *r);
  snprintf(r->key, sizeof r->key, "%s", key);
  return r;
}

static void add(prof_table *t, const char *key, const dynb__prof_sample *s) {
  prof_row *r = row_for(t, key);
  if (!r) return;
  r->seconds += s->seconds;
  r->count++;
  if (strcmp(s->pass, "forward") == 0) r->forward += s->seconds;
  if (strcmp(s->pass, "backward") == 0) r->backward += s->seconds;
}

static int by_time(const void *a, const void *b) {
  double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
  return x < y ? 1 : x > y ? -1 : 0;
}

static void print_table(const char *title, prof_table *t, size_t limit, double total, long steps,
                        bool passes) {
  qsort(t->rows, t->n, sizeof *t->rows, by_time);
  printf("\n%-36s %10s %7s %10s", title, "ms/step", "%", "calls/step");
  if (passes) printf(" %10s %10s", "forward", "backward");
  printf("\n");
  size_t shown = t->n < limit ? t->n : limit;
  for (size_t i = 0; i < shown; i++) {
    const prof_row *r = &t->rows[i];
    printf("%-36s %10.3f %6.1f%% %10.1f", r->key, 1e3 * r->seconds / (double)steps,
           total > 0 ? 100 * r->seconds / total : 0, (double)r->count / (double)steps);
    if (passes) printf(" %10.3f %10.3f", 1e3 * r->forward / (double)steps,
                       1e3 * r->backward / (double)steps);
    printf("\n");
  }
  if (shown < t->n) printf("(%zu more)\n", t->n - shown);
}

double cli_print_profile(const dynb__prof_sample *s, size_t n, long steps, double wall) {
  prof_table fam = {0}, layer = {0}, kern = {0};
  double total = 0;
  for (size_t i = 0; i < n; i++) {
    char key[80];
    total += s[i].seconds;
    add(&fam, s[i].family, &s[i]);
    if (s[i].index >= 0)
      snprintf(key, sizeof key, "%s %d", s[i].layer, s[i].index);
    else
      snprintf(key, sizeof key, "%s", s[i].layer[0] ? s[i].layer : "(none)");
    add(&layer, key, &s[i]);
    snprintf(key, sizeof key, "%s/%s", s[i].family, s[i].name);
    add(&kern, key, &s[i]);
  }
  printf("\nprofile: %ld training step(s), %.3f ms/step measured, device busy %.3f ms/step "
         "(%.1f%%; the rest is time between commands), %zu commands/step\n",
         steps, 1e3 * wall / (double)steps, 1e3 * total / (double)steps,
         wall > 0 ? 100 * total / wall : 0, n / (size_t)steps);
  print_table("family", &fam, fam.n, total, steps, false);
  print_table("layer", &layer, layer.n, total, steps, true);
  print_table("kernel (family/name)", &kern, 15, total, steps, false);
  free(fam.rows), free(layer.rows), free(kern.rows);
  return total;
}
