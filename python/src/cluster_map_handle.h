// The Python-side handle of a cluster map: shared, immutable, so planners keep it alive.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "shareprefill/cluster_map.h"

namespace sp_python {

struct cluster_map_handle {
  std::shared_ptr<const sp::cluster_map> map;

  // The model block's layer count, else the largest layer index + 1.
  int64_t layers() const {
    if (map->model) return map->model->layers;
    int64_t n = 0;
    for (const sp::head_cluster& c : map->clusters)
      for (const sp::head_ref& r : c.members) n = std::max<int64_t>(n, r.layer + 1);
    return n;
  }
};

}  // namespace sp_python
