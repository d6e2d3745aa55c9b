// Small PNG figures for the evaluation (line charts and heatmaps) drawn on an RGB canvas with a
// built-in 3x5 pixel font (upper-case letters, digits, a few symbols; lower case is drawn upper
// case) and written with save_png (png_image.h). Built without libpng, png_supported() is false
// and the save functions throw.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sp {

struct plot_series {
  std::string label;
  std::vector<double> x, y;  // same length; drawn in the given order, joined by lines
};

struct line_plot {
  std::string title, x_label, y_label;
  std::vector<plot_series> series;
  bool log_y = false;
};

struct heatmap_plot {
  std::string title, x_label, y_label;
  std::vector<std::string> x_ticks, y_ticks;  // columns, rows
  std::vector<double> values;                 // [rows, cols], row 0 drawn at the top
  double vmin = 0.0, vmax = 1.0;
  bool annotate = true;  // print each value in its cell
};

void plot_save_lines(const std::string& path, const line_plot& p);
void plot_save_heatmap(const std::string& path, const heatmap_plot& p);

}  // namespace sp
