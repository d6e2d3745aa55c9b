// A small RGB raster for report figures: colour maps, heatmaps of a matrix, filled and outlined
// rectangles, and PNG output through libpng (when the build found it; png_supported() says so
// and save_png throws a clear sp::error otherwise).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace sp {

using rgb = std::array<uint8_t, 3>;

struct rgb_image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3] row-major

  rgb_image() = default;
  rgb_image(int64_t w, int64_t h, rgb background = {255, 255, 255});
  rgb at(int64_t x, int64_t y) const;
  void set(int64_t x, int64_t y, rgb c);  // ignores pixels outside the image
  void fill_rect(int64_t x, int64_t y, int64_t w, int64_t h, rgb c);
  void outline_rect(int64_t x, int64_t y, int64_t w, int64_t h, rgb c);
  // Copies src with its top-left corner at (x, y), clipped to this image.
  void paste(const rgb_image& src, int64_t x, int64_t y);
};

enum class colour_map : uint8_t { viridis, grey };

// Colour of t in [0, 1] (clamped; NaN maps to 0).
rgb colour_of(double t, colour_map map);

// A distinct colour for a category index (cycles through a fixed palette).
rgb category_colour(int64_t index);

// Each matrix entry becomes a scale x scale square coloured by (value - lo) / (hi - lo);
// log_scale maps through log10 first (values <= 0 draw as lo). values: [rows, cols] row-major.
rgb_image heatmap_to_rgb(const float* values, int64_t rows, int64_t cols, double lo, double hi,
                         int64_t scale, colour_map map, bool log_scale = false);

bool png_supported();
// Writes an 8-bit RGB PNG; throws sp::error naming the path on failure or without libpng.
void save_png(const std::string& path, const rgb_image& image);

}  // namespace sp
