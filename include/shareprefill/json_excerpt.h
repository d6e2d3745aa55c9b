// A JSON value quoted in an error message: scalars and flat arrays/objects as written (cut to
// about 80 characters), nested ones as "[...]" / "{...}". It never recurses into the value, so a
// hostile document nested 10^5 deep gets an error message instead of overflowing the stack
// (nlohmann::json::dump() recurses once per level).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace sp {

std::string json_excerpt(const nlohmann::json& value);

}  // namespace sp
