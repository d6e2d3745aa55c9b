// json_excerpt: dump() only values known to be at most one level deep. json_nesting_depth:
// depth-first walk with an explicit stack of (value, depth).
#include "shareprefill/json_excerpt.h"

#include <utility>
#include <vector>

namespace sp {

std::string json_excerpt(const nlohmann::json& value) {
  constexpr size_t max_chars = 80;
  if (value.is_structured()) {
    for (const auto& element : value)
      if (element.is_structured()) return value.is_array() ? "[...]" : "{...}";
  }
  std::string text = value.dump();
  if (text.size() > max_chars) text = text.substr(0, max_chars - 3) + "...";
  return text;
}

int json_nesting_depth(const nlohmann::json& value, int limit) {
  int deepest = 0;
  std::vector<std::pair<const nlohmann::json*, int>> pending = {{&value, 0}};
  while (!pending.empty()) {
    const auto [v, depth] = pending.back();
    pending.pop_back();
    if (!v->is_structured()) continue;
    if (depth + 1 > deepest) deepest = depth + 1;
    if (deepest > limit) return limit + 1;
    for (const auto& element : *v) pending.emplace_back(&element, depth + 1);
  }
  return deepest;
}

}  // namespace sp
