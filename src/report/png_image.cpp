// RGB raster, colour maps and PNG output for report figures (see png_image.h). The viridis map is
// a piecewise-linear interpolation of nine anchor colours of matplotlib's viridis, close enough
// for figures. PNG writing uses libpng when SP_HAVE_PNG is defined.
#include "shareprefill/png_image.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "shareprefill/error.h"

#ifdef SP_HAVE_PNG
#include <png.h>
#endif

namespace sp {

rgb_image::rgb_image(int64_t w, int64_t h, rgb background) : width(w), height(h) {
  check(w > 0 && h > 0 && w <= 65536 && h <= 65536, "rgb_image", "size ", w, " x ", h,
        " out of range [1, 65536]");
  pixels.resize(static_cast<size_t>(w * h * 3));
  for (int64_t i = 0; i < w * h; ++i) std::copy(background.begin(), background.end(), pixels.begin() + i * 3);
}

rgb rgb_image::at(int64_t x, int64_t y) const {
  check(x >= 0 && x < width && y >= 0 && y < height, "rgb_image::at", "pixel (", x, ", ", y,
        ") outside ", width, " x ", height);
  const uint8_t* p = pixels.data() + (y * width + x) * 3;
  return {p[0], p[1], p[2]};
}

void rgb_image::set(int64_t x, int64_t y, rgb c) {
  if (x < 0 || x >= width || y < 0 || y >= height) return;
  std::copy(c.begin(), c.end(), pixels.begin() + (y * width + x) * 3);
}

void rgb_image::fill_rect(int64_t x, int64_t y, int64_t w, int64_t h, rgb c) {
  for (int64_t yy = y; yy < y + h; ++yy)
    for (int64_t xx = x; xx < x + w; ++xx) set(xx, yy, c);
}

void rgb_image::outline_rect(int64_t x, int64_t y, int64_t w, int64_t h, rgb c) {
  for (int64_t xx = x; xx < x + w; ++xx) {
    set(xx, y, c);
    set(xx, y + h - 1, c);
  }
  for (int64_t yy = y; yy < y + h; ++yy) {
    set(x, yy, c);
    set(x + w - 1, yy, c);
  }
}

void rgb_image::paste(const rgb_image& src, int64_t x, int64_t y) {
  for (int64_t yy = 0; yy < src.height; ++yy)
    for (int64_t xx = 0; xx < src.width; ++xx) set(x + xx, y + yy, src.at(xx, yy));
}

rgb colour_of(double t, colour_map map) {
  if (!(t == t)) t = 0.0;
  t = std::clamp(t, 0.0, 1.0);
  if (map == colour_map::grey) {
    const auto g = static_cast<uint8_t>(std::lround(255.0 * (1.0 - t)));
    return {g, g, g};
  }
  static const double anchors[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                       {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                       {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
  const double pos = t * 8.0;
  const int i = std::min(7, static_cast<int>(pos));
  const double f = pos - i;
  rgb c;
  for (int k = 0; k < 3; ++k)
    c[static_cast<size_t>(k)] =
        static_cast<uint8_t>(std::lround(anchors[i][k] * (1.0 - f) + anchors[i + 1][k] * f));
  return c;
}

rgb category_colour(int64_t index) {
  static const rgb palette[12] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                  {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                                  {188, 189, 34},  {23, 190, 207}, {0, 0, 128},    {128, 128, 0}};
  return palette[static_cast<size_t>(((index % 12) + 12) % 12)];
}

rgb_image heatmap_to_rgb(const float* values, int64_t rows, int64_t cols, double lo, double hi,
                         int64_t scale, colour_map map, bool log_scale) {
  const char* fn = "heatmap_to_rgb";
  check(values != nullptr && rows > 0 && cols > 0, fn, "empty matrix ", rows, " x ", cols);
  check(scale >= 1, fn, "scale must be >= 1, got ", scale);
  check(std::isfinite(lo) && std::isfinite(hi) && hi > lo, fn, "range [", lo, ", ", hi,
        "] must be finite with hi > lo");
  check(!log_scale || lo > 0.0, fn, "log scale needs lo > 0, got ", lo);
  const double l0 = log_scale ? std::log10(lo) : lo, l1 = log_scale ? std::log10(hi) : hi;
  rgb_image img(cols * scale, rows * scale);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double v = values[r * cols + c];
      if (log_scale) v = v > 0.0 ? std::log10(v) : l0;
      img.fill_rect(c * scale, r * scale, scale, scale, colour_of((v - l0) / (l1 - l0), map));
    }
  return img;
}

#ifdef SP_HAVE_PNG
bool png_supported() { return true; }

void save_png(const std::string& path, const rgb_image& image) {
  const char* fn = "save_png";
  check(image.width > 0 && image.height > 0 &&
            static_cast<int64_t>(image.pixels.size()) == image.width * image.height * 3,
        fn, path, ": image of ", image.width, " x ", image.height, " has ", image.pixels.size(),
        " bytes");
  FILE* f = std::fopen(path.c_str(), "wb");
  check(f != nullptr, fn, "cannot write '", path, "'");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    std::fclose(f);
    fail(fn, "libpng failed writing '", path, "'");
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width),
               static_cast<png_uint_32>(image.height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < image.height; ++y)
    png_write_row(png, const_cast<png_bytep>(image.pixels.data() + y * image.width * 3));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  const bool closed = std::fclose(f) == 0;
  check(closed, fn, "closing '", path, "' failed");
}
#else
bool png_supported() { return false; }

void save_png(const std::string& path, const rgb_image&) {
  fail("save_png", "cannot write '", path, "': this build has no libpng (install libpng-dev and "
       "reconfigure)");
}
#endif

}  // namespace sp
