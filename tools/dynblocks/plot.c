/* Training curves as a small self-contained SVG: loss on the left panel,
 * accuracy on the right, training solid and validation dashed. */
#include <math.h>
#include <stdio.h>

#include "cli.h"

static void panel(FILE *f, const dynb_epoch_row *rows, int n, int x0, const char *title,
                  bool acc) {
  const int w = 360, h = 240, top = 30;
  double lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < n; i++) {
    double a = acc ? rows[i].train_acc : rows[i].train_loss;
    double b = acc ? rows[i].val_acc : rows[i].val_loss;
    lo = fmin(lo, fmin(a, b)), hi = fmax(hi, fmax(a, b));
  }
  if (!(hi > lo)) hi = lo + 1;
  fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#888'/>\n", x0, top,
          w, h);
  fprintf(f, "<text x='%d' y='20' font-size='14'>%s</text>\n", x0, title);
  fprintf(f, "<text x='%d' y='%d' font-size='10'>%.4g</text>\n", x0 + 2, top + 10, hi);
  fprintf(f, "<text x='%d' y='%d' font-size='10'>%.4g</text>\n", x0 + 2, top + h - 2, lo);
  fprintf(f, "<text x='%d' y='%d' font-size='10'>epoch</text>\n", x0 + w / 2 - 10, top + h + 14);
  for (int s = 0; s < 2; s++) {
    fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2'%s points='", s ? "#d62728" : "#1f77b4",
            s ? " stroke-dasharray='5,3'" : "");
    for (int i = 0; i < n; i++) {
      double v = s ? (acc ? rows[i].val_acc : rows[i].val_loss)
                   : (acc ? rows[i].train_acc : rows[i].train_loss);
      double x = x0 + (n > 1 ? (double)i / (n - 1) : 0.5) * w;
      double y = top + h - (v - lo) / (hi - lo) * h;
      fprintf(f, "%.1f,%.1f ", x, y);
    }
    fprintf(f, "'/>\n");
  }
}

bool cli_plot_svg(const char *path, const dynb_epoch_row *rows, int n) {
  FILE *f = fopen(path, "w");
  if (!f) return false;
  fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='800' height='300' "
             "font-family='sans-serif'>\n<rect width='800' height='300' fill='white'/>\n");
  panel(f, rows, n, 20, "loss (train solid, validation dashed)", false);
  panel(f, rows, n, 420, "accuracy (train solid, validation dashed)", true);
  fprintf(f, "</svg>\n");
  return fclose(f) == 0;
}
