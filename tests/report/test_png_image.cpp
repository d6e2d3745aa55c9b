// The report figures' raster helpers: colour maps at their ends, heatmap geometry, rectangles,
// and PNG output (a real file with the PNG signature, or a clear error in builds without libpng).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "shareprefill/png_image.h"
#include "test_util.h"

namespace sp {
namespace {

TEST(PngImage, ColourMaps) {
  EXPECT_EQ(colour_of(0.0, colour_map::viridis), (rgb{68, 1, 84}));
  EXPECT_EQ(colour_of(1.0, colour_map::viridis), (rgb{253, 231, 37}));
  EXPECT_EQ(colour_of(2.0, colour_map::viridis), colour_of(1.0, colour_map::viridis));  // clamped
  EXPECT_EQ(colour_of(0.0, colour_map::grey), (rgb{255, 255, 255}));
  EXPECT_EQ(colour_of(1.0, colour_map::grey), (rgb{0, 0, 0}));
  EXPECT_NE(category_colour(0), category_colour(1));
}

TEST(PngImage, HeatmapAndRectangles) {
  const float v[4] = {0.0f, 1.0f, 0.5f, 0.0f};
  rgb_image img = heatmap_to_rgb(v, 2, 2, 0.0, 1.0, 3, colour_map::grey);
  EXPECT_EQ(img.width, 6);
  EXPECT_EQ(img.height, 6);
  EXPECT_EQ(img.at(0, 0), (rgb{255, 255, 255}));
  EXPECT_EQ(img.at(5, 2), (rgb{0, 0, 0}));  // entry (0, 1) = 1 -> black
  EXPECT_EQ(img.at(1, 4), (rgb{128, 128, 128}));
  img.outline_rect(0, 0, 6, 6, {255, 0, 0});
  EXPECT_EQ(img.at(0, 3), (rgb{255, 0, 0}));
  EXPECT_EQ(img.at(3, 3), (rgb{255, 255, 255}));  // inside untouched: entry (1, 1) = 0
  img.set(100, 100, {1, 2, 3});  // outside: ignored
  EXPECT_NE(testing::error_of([&] { heatmap_to_rgb(v, 2, 2, 1.0, 1.0, 1, colour_map::grey); })
                .find("hi > lo"),
            std::string::npos);
}

TEST(PngImage, SavePng) {
  const std::string path = testing::temp_path("png_image_test.png");
  rgb_image img(5, 4, {10, 20, 30});
  if (!png_supported()) {
    EXPECT_NE(testing::error_of([&] { save_png(path, img); }).find("no libpng"),
              std::string::npos);
    return;
  }
  save_png(path, img);
  std::ifstream f(path, std::ios::binary);
  char sig[8] = {};
  f.read(sig, 8);
  EXPECT_EQ(std::string(sig + 1, 3), "PNG");
  std::remove(path.c_str());
  EXPECT_NE(testing::error_of([&] { save_png("/nonexistent-dir/x.png", img); }).find("cannot write"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
