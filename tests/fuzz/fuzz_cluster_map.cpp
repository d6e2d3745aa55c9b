// libFuzzer entry point for the cluster-map loader: parses the input as a map file, then, for a
// map that carries a small model shape, validates it and builds the head table, and writes it
// back out and reads that again (the round trip must succeed and give the same clusters).
// sp::error is the expected outcome for bad input; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "shareprefill/cluster_map.h"
#include "shareprefill/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sp::cluster_map map;
  try {
    map = sp::cluster_map_from_text(std::string(reinterpret_cast<const char*>(data), size),
                                    "<fuzz>");
  } catch (const sp::error&) {
    return 0;
  }
  try {
    if (map.model && map.model->layers * map.model->heads <= (int64_t{1} << 16))
      map.head_table(map.model->layers, map.model->heads);
  } catch (const sp::error&) {
  }
  // A map that loaded must survive its own round trip unchanged.
  const std::string text = sp::cluster_map_to_json(map).dump(1);
  const sp::cluster_map back = sp::cluster_map_from_text(text, "<round trip>");
  if (back.clusters.size() != map.clusters.size() || back.dense_layers != map.dense_layers)
    std::abort();
  for (size_t c = 0; c < map.clusters.size(); ++c)
    if (back.clusters[c].members != map.clusters[c].members ||
        back.clusters[c].shared != map.clusters[c].shared)
      std::abort();
  // Everything else too (dense heads, gammas, settings per length with their dense heads).
  if (sp::cluster_map_to_json(back) != sp::cluster_map_to_json(map)) std::abort();
  return 0;
}
