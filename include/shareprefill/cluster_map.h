// The cluster map (DESIGN.md section 3): the offline artifact that groups (layer, head) pairs of a
// model into clusters and names the clusters that take part in pattern sharing. Two JSON formats
// load: ours ("format": "shareprefill.clusters/1" with model and calibration blocks and optional
// per-cluster medoids and the layers calibration found best left dense; "/2" adds the heads
// calibration found best left dense, "/3" the heads that plan with their own gamma, "/4" the
// planner thresholds per prompt length, "/5" medoid pivots in them, "/6" dense heads per prompt
// length) and the reference implementation's (only "clusters" and
// "shared_clusters"). Validation against a model shape checks that every head appears exactly once,
// indices are in range, no cluster is empty, every shared id names a cluster and the dense layers
// exist; errors name the file, the key and the bad value.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "shareprefill/length_thresholds.h"

namespace sp {

struct head_ref {
  int32_t layer = 0;
  int32_t head = 0;
  bool operator==(const head_ref& o) const { return layer == o.layer && head == o.head; }
};

struct head_cluster {
  std::string id;                  // the JSON key, e.g. "42"
  std::vector<head_ref> members;   // in file order
  bool shared = false;             // listed in shared_clusters
  std::optional<head_ref> medoid;  // offline medoid (our format, optional); a member
};

struct head_threshold {
  head_ref head;
  double gamma = 0.0;  // in (0, 1]
};

struct cluster_model_info {
  std::string name;
  int64_t layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
};

struct cluster_map {
  std::string source = "<memory>";          // file path, for error messages
  std::optional<cluster_model_info> model;  // our format only
  nlohmann::json calibration;               // kept verbatim (null when absent)
  std::vector<head_cluster> clusters;
  // Layers the sparse modes should run dense ("dense_layers", our format, optional): sorted,
  // unique; chosen by `shareprefill calibrate --dense-layers-pick` (record in calibration).
  std::vector<int64_t> dense_layers;
  // Heads the sparse modes should run dense ("dense_heads", format 2 only, optional): ascending
  // (layer, head), unique; chosen per head by calibration (issue 17; reasons in calibration).
  std::vector<head_ref> dense_heads;
  // Heads the sparse modes plan with their own gamma ("head_gammas", format 3 only, optional):
  // ascending (layer, head), unique; chosen per head by calibration (issue 17).
  std::vector<head_threshold> head_gammas;
  // Planner thresholds per prompt length ("thresholds", format 4 on, optional): ascending
  // from_tokens, the first from 0; chosen by calibration at some lengths (issue 17). Empty: the
  // planner parameters apply at every length.
  std::vector<length_thresholds> thresholds;

  // Throws sp::error unless the map covers a model of `layers` x `heads` exactly (and matches
  // the model block, when present).
  void validate(int64_t layers, int64_t heads) const;

  // Validates, then returns the cluster index of every head: [layers * heads], row-major.
  std::vector<int32_t> head_table(int64_t layers, int64_t heads) const;

  bool any_medoid() const;
};

// Parses either format; `source` names the origin in error messages. Structural errors (wrong
// types, malformed pairs, unknown shared ids, duplicate heads) throw sp::error.
cluster_map cluster_map_from_json(const nlohmann::json& j, const std::string& source);
cluster_map cluster_map_load(const std::string& path);
// The same from the file's text (exactly one JSON document, nested at most 64 deep); `source`
// names the origin in error messages.
cluster_map cluster_map_from_text(const std::string& text, const std::string& source);

// Writes our format in the lowest version that holds the map: "shareprefill.clusters/1", "/2"
// when the map has dense_heads, "/3" when it has head_gammas, "/4" when it has thresholds, "/5"
// when an entry sets pivot_is_medoid, "/6" when an entry has dense_heads, "/7" when an entry sets
// exact_last_row or last_row_gamma.
nlohmann::json cluster_map_to_json(const cluster_map& map);
void cluster_map_save(const std::string& path, const cluster_map& map);

}  // namespace sp
