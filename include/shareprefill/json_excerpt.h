// Guards for untrusted JSON documents. nlohmann::json parses and destroys without recursion, but
// dump() and copying recurse once per nesting level, so a hostile document nested 10^5 deep
// overflows the stack there. json_excerpt quotes a value in an error message without recursing:
// scalars and flat arrays/objects as written (cut to about 80 characters), nested ones as
// "[...]" / "{...}". json_nesting_depth measures the nesting with an explicit stack, so readers
// can refuse deep documents before copying or dumping them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace sp {

std::string json_excerpt(const nlohmann::json& value);

// 0 for a scalar, 1 for a flat array/object, ...; stops counting past `limit` (returns limit + 1).
int json_nesting_depth(const nlohmann::json& value, int limit);

}  // namespace sp
