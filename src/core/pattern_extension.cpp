// extend_pivot_pattern (include/shareprefill/pattern_extension.h): which diagonal offsets and
// key blocks of a pivot's pattern recur over its rows, laid over a later chunk's rows.
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

std::vector<tile> extend_pivot_pattern(const std::vector<tile>& pattern, int64_t row_begin,
                                       int64_t row_end, int64_t new_begin, int64_t new_end) {
  const char* fn = "extend_pivot_pattern";
  check(0 <= row_begin && row_begin < row_end, fn, "pattern rows [", row_begin, ", ", row_end,
        ") are empty");
  check(0 <= new_begin && new_begin < new_end, fn, "new rows [", new_begin, ", ", new_end,
        ") are empty");
  // Hits per offset o (r - c) and per column c over the pattern's rows.
  std::vector<int64_t> offset_hits(static_cast<size_t>(row_end), 0);
  for (const tile& t : pattern) {
    check(t.second <= t.first && t.second >= 0, fn, "tile (", t.first, ", ", t.second,
          ") is not causal");
    if (t.first >= row_begin && t.first < row_end) ++offset_hits[t.first - t.second];
  }
  // Offset o is causal in rows r >= o: max(0, row_end - max(row_begin, o)) rows.
  std::vector<uint8_t> offset_recurs(static_cast<size_t>(row_end), 0);
  for (int64_t o = 0; o < row_end; ++o)
    offset_recurs[o] = recurs(offset_hits[o], row_end - std::max(row_begin, o));
  std::vector<int64_t> column_hits(static_cast<size_t>(row_end), 0);
  for (const tile& t : pattern)
    if (t.first >= row_begin && t.first < row_end && !offset_recurs[t.first - t.second])
      ++column_hits[t.second];
  std::vector<int32_t> columns, offsets;
  for (int64_t c = 0; c < row_end; ++c) {
    if (recurs(column_hits[c], row_end - std::max(row_begin, c)))
      columns.push_back(static_cast<int32_t>(c));
    if (offset_recurs[c]) offsets.push_back(static_cast<int32_t>(c));
  }
  std::vector<tile> out;
  for (int64_t r = new_begin; r < new_end; ++r) {
    for (int32_t c : columns)
      if (c <= r) out.emplace_back(static_cast<int32_t>(r), c);
    for (int32_t o : offsets)
      if (o <= r) out.emplace_back(static_cast<int32_t>(r), static_cast<int32_t>(r - o));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace sp
