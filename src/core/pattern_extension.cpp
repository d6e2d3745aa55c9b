// extend_pivot_pattern (include/shareprefill/pattern_extension.h): which diagonal offsets and
// key blocks of a pivot's pattern recur over its rows, laid over a later chunk's rows. The rule
// works on row bitsets (the device state's form); the tile form converts to and from them.
#include "shareprefill/pattern_extension.h"

#include <algorithm>

#include "shareprefill/error.h"

namespace sp {
namespace {

// A pattern element recurs when it is in at least this fraction of the rows where it is causal.
constexpr double recur_fraction = 0.5;

bool recurs(int64_t hits, int64_t rows) {
  return rows > 0 && static_cast<double>(hits) >= recur_fraction * static_cast<double>(rows);
}

}  // namespace

std::vector<uint32_t> extend_pivot_pattern_bits(const uint32_t* bits, int64_t words,
                                                int64_t row_begin, int64_t row_end,
                                                int64_t new_begin, int64_t new_end,
                                                int64_t out_words) {
  const char* fn = "extend_pivot_pattern";
  check(0 <= row_begin && row_begin < row_end, fn, "pattern rows [", row_begin, ", ", row_end,
        ") are empty");
  check(0 <= new_begin && new_begin < new_end, fn, "new rows [", new_begin, ", ", new_end,
        ") are empty");
  check(words * 32 >= row_end && out_words * 32 >= new_end, fn, "rows of ", words, " and ",
        out_words, " words cannot hold columns up to ", row_end, " and ", new_end);
  // Calls f(r, c) for every tile of rows [row_begin, row_end).
  auto for_each_tile = [&](auto f) {
    for (int64_t r = row_begin; r < row_end; ++r)
      for (int64_t w = 0; w < words; ++w)
        for (uint32_t word = bits[r * words + w]; word != 0u; word &= word - 1u) {
          const int64_t c = w * 32 + __builtin_ctz(word);
          check(c <= r, fn, "tile (", r, ", ", c, ") is not causal");
          f(r, c);
        }
  };
  // Hits per offset o (r - c) over the pattern's rows; offset o is causal in rows r >= o:
  // max(0, row_end - max(row_begin, o)) rows.
  std::vector<int64_t> offset_hits(static_cast<size_t>(row_end), 0);
  for_each_tile([&](int64_t r, int64_t c) { ++offset_hits[r - c]; });
  std::vector<uint8_t> offset_recurs(static_cast<size_t>(row_end), 0);
  for (int64_t o = 0; o < row_end; ++o)
    offset_recurs[o] = recurs(offset_hits[o], row_end - std::max(row_begin, o));
  std::vector<int64_t> column_hits(static_cast<size_t>(row_end), 0);
  for_each_tile([&](int64_t r, int64_t c) {
    if (!offset_recurs[r - c]) ++column_hits[c];
  });
  std::vector<int64_t> columns, offsets;
  for (int64_t c = 0; c < row_end; ++c) {
    if (recurs(column_hits[c], row_end - std::max(row_begin, c))) columns.push_back(c);
    if (offset_recurs[c]) offsets.push_back(c);
  }
  std::vector<uint32_t> out(static_cast<size_t>(new_end * out_words), 0u);
  auto set = [&](int64_t r, int64_t c) { out[r * out_words + c / 32] |= 1u << (c % 32); };
  for (int64_t r = new_begin; r < new_end; ++r) {
    for (int64_t c : columns)
      if (c <= r) set(r, c);
    for (int64_t o : offsets)
      if (o <= r) set(r, r - o);
  }
  return out;
}

std::vector<tile> extend_pivot_pattern(const std::vector<tile>& pattern, int64_t row_begin,
                                       int64_t row_end, int64_t new_begin, int64_t new_end) {
  const char* fn = "extend_pivot_pattern";
  check(0 <= row_begin && row_begin < row_end, fn, "pattern rows [", row_begin, ", ", row_end,
        ") are empty");
  check(0 <= new_begin && new_begin < new_end, fn, "new rows [", new_begin, ", ", new_end,
        ") are empty");
  const int64_t words = (row_end + 31) / 32, out_words = (new_end + 31) / 32;
  std::vector<uint32_t> bits(static_cast<size_t>(row_end * words), 0u);
  for (const tile& t : pattern) {
    check(t.second <= t.first && t.second >= 0, fn, "tile (", t.first, ", ", t.second,
          ") is not causal");
    if (t.first >= row_begin && t.first < row_end)
      bits[t.first * words + t.second / 32] |= 1u << (t.second % 32);
  }
  const std::vector<uint32_t> out =
      extend_pivot_pattern_bits(bits.data(), words, row_begin, row_end, new_begin, new_end,
                                out_words);
  std::vector<tile> tiles;
  for (int64_t r = new_begin; r < new_end; ++r)
    for (int64_t w = 0; w < out_words; ++w)
      for (uint32_t word = out[r * out_words + w]; word != 0u; word &= word - 1u)
        tiles.emplace_back(static_cast<int32_t>(r),
                           static_cast<int32_t>(w * 32 + __builtin_ctz(word)));
  return tiles;
}

}  // namespace sp
