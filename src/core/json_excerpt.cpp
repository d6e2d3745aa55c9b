// json_excerpt: dump() only values known to be at most one level deep.
#include "shareprefill/json_excerpt.h"

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

}  // namespace sp
