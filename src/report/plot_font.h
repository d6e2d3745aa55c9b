// The 3x5 pixel font of the evaluation figures (private to src/eval).
#pragma once

namespace sp::plot_font {

constexpr int width = 3, height = 5;

// Whether the glyph of `ch` (lower case drawn as upper case) has ink at (row, col).
bool ink(char ch, int row, int col);

}  // namespace sp::plot_font
