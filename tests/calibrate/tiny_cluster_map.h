// A cluster map of 2 layers x 2 heads as JSON (clusters "1" = {(0,0), (1,1)} and the shared "2" =
// {(0,1), (1,0)}), for the tests of the map's format versions.
#pragma once

#include <nlohmann/json.hpp>

namespace sp::test {

inline nlohmann::json tiny_map_json(const char* format) {
  return {{"format", format},
          {"model", {{"name", "tiny"}, {"layers", 2}, {"heads", 2}}},
          {"clusters", {{"1", {{0, 0}, {1, 1}}}, {"2", {{0, 1}, {1, 0}}}}},
          {"shared_clusters", {"2"}}};
}

}  // namespace sp::test
