// PNG figures of the evaluation: lines, boxes and 3x5-font text drawn on an rgb_image, a line
// chart (linear or log y axis, legend) and an annotated heatmap, written with save_png.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "plot_font.h"
#include "shareprefill/error.h"
#include "shareprefill/plot.h"
#include "shareprefill/png_image.h"

namespace sp {
namespace {

constexpr rgb white{255, 255, 255}, black{0, 0, 0}, grey{225, 225, 225};
constexpr int scale = 2;  // font pixels per glyph pixel

// Lines and 3x5-font text on an rgb_image (png_image.h holds the pixels and writes the PNG).
struct canvas {
  rgb_image img;
  canvas(int width, int height) : img(width, height, white) {}

  void fill(int x0, int y0, int x1, int y1, rgb c) { img.fill_rect(x0, y0, x1 - x0, y1 - y0, c); }
  void line(int x0, int y0, int x1, int y1, rgb c, int thick) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      fill(x0 - thick / 2, y0 - thick / 2, x0 - thick / 2 + thick, y0 - thick / 2 + thick, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  static int text_width(const std::string& s) {
    return static_cast<int>(s.size()) * (plot_font::width + 1) * scale;
  }
  void text(int x, int y, const std::string& s, rgb c) {
    for (char ch : s) {
      for (int r = 0; r < plot_font::height; ++r)
        for (int col = 0; col < plot_font::width; ++col)
          if (plot_font::ink(ch, r, col))
            fill(x + col * scale, y + r * scale, x + (col + 1) * scale, y + (r + 1) * scale, c);
      x += (plot_font::width + 1) * scale;
    }
  }
};

std::string tick_label(double v) {
  char b[32];
  if (v != 0 && (std::fabs(v) < 1e-3 || std::fabs(v) >= 1e5))
    std::snprintf(b, sizeof(b), "%.0e", v);
  else
    std::snprintf(b, sizeof(b), "%.4g", v);
  return b;
}

// Red (0) -> yellow (0.5) -> green (1).
rgb heat(double t) {
  t = std::clamp(t, 0.0, 1.0);
  const rgb lo{215, 48, 39}, mid{254, 224, 139}, hi{26, 152, 80};
  const rgb a = t < 0.5 ? lo : mid, b = t < 0.5 ? mid : hi;
  const double u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
  auto mix = [u](uint8_t x, uint8_t y) { return static_cast<uint8_t>(x + u * (y - x)); };
  return {mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2])};
}

}  // namespace

void plot_save_lines(const std::string& path, const line_plot& p) {
  const char* fn = "plot_save_lines";
  check(!p.series.empty(), fn, "no series to draw for '", path, "'");
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const plot_series& s : p.series) {
    check(s.x.size() == s.y.size(), fn, "series '", s.label, "' has ", s.x.size(), " x and ",
          s.y.size(), " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      check(!p.log_y || s.y[i] > 0, fn, "series '", s.label, "' has y = ", s.y[i],
            " on a log axis");
      const double y = p.log_y ? std::log10(s.y[i]) : s.y[i];
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  check(std::isfinite(x0) && std::isfinite(y0), fn, "no points to draw for '", path, "'");
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad;
  y1 += pad;

  canvas cv(760, 440);
  const int L = 80, R = 560, T = 40, B = 380;
  auto px = [&](double x) {
    return L + static_cast<int>(std::lround((x - x0) / (x1 - x0) * (R - L)));
  };
  auto py = [&](double y) {
    const double v = p.log_y ? std::log10(y) : y;
    return B - static_cast<int>(std::lround((v - y0) / (y1 - y0) * (B - T)));
  };
  cv.text(L, 12, p.title, black);
  for (int i = 0; i <= 4; ++i) {
    const double fx = x0 + (x1 - x0) * i / 4.0, fy = y0 + (y1 - y0) * i / 4.0;
    const int gx = px(fx), gy = B - (B - T) * i / 4;
    cv.line(gx, T, gx, B, grey, 1);
    cv.line(L, gy, R, gy, grey, 1);
    const std::string xl = tick_label(fx), yl = tick_label(p.log_y ? std::pow(10.0, fy) : fy);
    cv.text(gx - canvas::text_width(xl) / 2, B + 8, xl, black);
    cv.text(L - 6 - canvas::text_width(yl), gy - 5, yl, black);
  }
  cv.line(L, B, R, B, black, 1);
  cv.line(L, T, L, B, black, 1);
  cv.text((L + R - canvas::text_width(p.x_label)) / 2, B + 28, p.x_label, black);
  cv.text(8, T - 16, p.y_label, black);
  for (size_t si = 0; si < p.series.size(); ++si) {
    const plot_series& s = p.series[si];
    const rgb c = category_colour(static_cast<int64_t>(si));
    for (size_t i = 0; i < s.x.size(); ++i) {
      const int x = px(s.x[i]), y = py(s.y[i]);
      if (i > 0) cv.line(px(s.x[i - 1]), py(s.y[i - 1]), x, y, c, 2);
      cv.fill(x - 3, y - 3, x + 4, y + 4, c);
    }
    const int ly = T + 6 + static_cast<int>(si) * 18;
    cv.fill(R + 20, ly, R + 34, ly + 10, c);
    cv.text(R + 40, ly, s.label, black);
  }
  save_png(path, cv.img);
}

void plot_save_heatmap(const std::string& path, const heatmap_plot& p) {
  const char* fn = "plot_save_heatmap";
  const size_t rows = p.y_ticks.size(), cols = p.x_ticks.size();
  check(rows > 0 && cols > 0 && p.values.size() == rows * cols, fn, "values must be rows x cols (",
        rows, " x ", cols, "), got ", p.values.size());
  check(p.vmax > p.vmin, fn, "vmax ", p.vmax, " must exceed vmin ", p.vmin);
  const int cell_w = 90, cell_h = 44, L = 90, T = 50;
  const int width =
      std::max(L + static_cast<int>(cols) * cell_w + 40, L + canvas::text_width(p.title) + 20);
  canvas cv(width, T + static_cast<int>(rows) * cell_h + 60);
  cv.text(L, 14, p.title, black);
  for (size_t r = 0; r < rows; ++r) {
    const int y = T + static_cast<int>(r) * cell_h;
    cv.text(L - 8 - canvas::text_width(p.y_ticks[r]), y + cell_h / 2 - 5, p.y_ticks[r], black);
    for (size_t c = 0; c < cols; ++c) {
      const int x = L + static_cast<int>(c) * cell_w;
      const double v = p.values[r * cols + c];
      cv.fill(x + 1, y + 1, x + cell_w - 1, y + cell_h - 1, heat((v - p.vmin) / (p.vmax - p.vmin)));
      if (p.annotate) {
        const std::string t = tick_label(v);
        cv.text(x + (cell_w - canvas::text_width(t)) / 2, y + cell_h / 2 - 5, t, black);
      }
    }
  }
  const int bottom = T + static_cast<int>(rows) * cell_h;
  for (size_t c = 0; c < cols; ++c)
    cv.text(L + static_cast<int>(c) * cell_w + (cell_w - canvas::text_width(p.x_ticks[c])) / 2,
            bottom + 8, p.x_ticks[c], black);
  cv.text(L, bottom + 30, p.x_label, black);
  cv.text(8, T - 16, p.y_label, black);
  save_png(path, cv.img);
}

}  // namespace sp
