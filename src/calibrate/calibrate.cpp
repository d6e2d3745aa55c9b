// The offline phase as one function from per-input block-attention tensors to the cluster map:
// distances per input, their mean, average-linkage clustering, the flat cut, the shared-cluster
// verdicts and medoids, and the map with the settings recorded. Also the small helpers of the
// public types (metric names, validation).
#include <algorithm>
#include <cmath>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"

namespace sp {

const char* calib_metric_name(calib_metric m) { return m == calib_metric::js ? "js" : "jaccard"; }

calib_metric calib_metric_from_name(const std::string& name) {
  if (name == "jaccard") return calib_metric::jaccard;
  if (name == "js") return calib_metric::js;
  fail("calib_metric_from_name", "unknown metric '", name, "' (expected jaccard or js)");
}

namespace {

// Index of the first value that is not a mass fraction in [0, 1], NaN included, or -1. The upper
// bound leaves room for fp32 summation error.
int64_t first_outside_unit_interval(const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!(v[i] >= 0.0f && v[i] <= 1.001f)) return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

std::string calibration_input::label() const { return str(text, "@", n_tokens); }

void calibration_input::validate() const {
  const char* fn = "calibration_input::validate";
  check(layers > 0 && heads > 0, fn, label(), ": model shape must be positive, got ", layers,
        " x ", heads);
  check(block_size > 0 && n_tokens >= block_size, fn, label(), ": ", n_tokens,
        " tokens is shorter than one block of ", block_size);
  check(n_blocks == n_tokens / block_size + (n_tokens % block_size != 0 ? 1 : 0), fn, label(),
        ": n_blocks ", n_blocks, " does not match ", n_tokens, " tokens in blocks of ", block_size);
  check(static_cast<int64_t>(block_attention.size()) == head_count() * n_blocks * n_blocks, fn,
        label(), ": block_attention has ", block_attention.size(), " values, expected ",
        head_count() * n_blocks * n_blocks);
  check(static_cast<int64_t>(vs_coverage.size()) == head_count(), fn, label(),
        ": vs_coverage has ", vs_coverage.size(), " values, expected ", head_count());
  const int64_t bad_a = first_outside_unit_interval(block_attention);
  if (bad_a >= 0)
    fail(fn, label(), ": block_attention value ", block_attention[static_cast<size_t>(bad_a)],
         " at flat index ", bad_a,
         " is not an attention mass in [0, 1] (NaN, Inf or corrupt data)");
  const int64_t bad_v = first_outside_unit_interval(vs_coverage);
  if (bad_v >= 0)
    fail(fn, label(), ": vs_coverage value ", vs_coverage[static_cast<size_t>(bad_v)], " of head ",
         bad_v, " is not a fraction in [0, 1] (NaN, Inf or corrupt data)");
}

void calibration_settings::validate(int64_t head_count) const {
  const char* fn = "calibration_settings::validate";
  check(std::isfinite(cut) && cut > 0.0 && cut <= 1.0, fn, "cut must be in (0, 1], got ", cut);
  check(clusters >= 0 && clusters <= head_count, fn, "cluster count must be in [1, ", head_count,
        "] (or 0 to cut at a distance), got ", clusters);
  check(gamma > 0.0 && gamma <= 1.0, fn, "gamma must be in (0, 1], got ", gamma);
  check(tau_fb > 0.0 && tau_fb <= 1.0, fn, "tau_fb must be in (0, 1], got ", tau_fb);
}

calibration_result calibrate_from_inputs(const std::vector<calibration_input>& inputs,
                                         const calibration_settings& settings,
                                         const cluster_model_info& model) {
  const char* fn = "calibrate_from_inputs";
  check(!inputs.empty(), fn, "no calibration inputs");
  for (const auto& in : inputs) {
    in.validate();
    check(in.layers == model.layers && in.heads == model.heads, fn, in.label(), " has ",
          in.layers, " x ", in.heads, " heads but the model has ", model.layers, " x ",
          model.heads);
  }
  const int64_t n = model.layers * model.heads;
  settings.validate(n);

  calibration_result r;
  for (const auto& in : inputs)
    r.per_input.push_back(head_distances(in, settings.metric, settings.gamma));
  r.mean = mean_distances(r.per_input);
  r.merges = average_linkage(r.mean);
  r.labels = settings.clusters > 0 ? cut_to_count(r.merges, n, settings.clusters)
                                   : cut_at_distance(r.merges, n, settings.cut);
  r.verdicts = judge_clusters(r.labels, r.per_input, r.mean, inputs, settings);

  r.map.model = model;
  nlohmann::json texts = nlohmann::json::array(), lengths = nlohmann::json::array();
  for (const auto& in : inputs) {
    if (std::find(texts.begin(), texts.end(), in.text) == texts.end()) texts.push_back(in.text);
    if (std::find(lengths.begin(), lengths.end(), in.n_tokens) == lengths.end())
      lengths.push_back(in.n_tokens);
  }
  int64_t max_tokens = 0;
  for (const auto& in : inputs) max_tokens = std::max(max_tokens, in.n_tokens);
  r.map.calibration = {{"texts", texts},
                       {"tokens", max_tokens},
                       {"lengths", lengths},
                       {"inputs", inputs.size()},
                       {"block_size", inputs[0].block_size},
                       {"metric", calib_metric_name(settings.metric)},
                       {"cut", settings.cut},
                       {"requested_clusters", settings.clusters},
                       {"gamma", settings.gamma},
                       {"tau_fb", settings.tau_fb},
                       {"linkage", "average"}};
  for (size_t c = 0; c < r.verdicts.size(); ++c) {
    const cluster_verdict& v = r.verdicts[c];
    head_cluster hc;
    hc.id = std::to_string(c + 1);
    for (int32_t m : v.members)
      hc.members.push_back({static_cast<int32_t>(m / model.heads),
                            static_cast<int32_t>(m % model.heads)});
    hc.shared = v.shared;
    hc.medoid = head_ref{static_cast<int32_t>(v.medoid / model.heads),
                         static_cast<int32_t>(v.medoid % model.heads)};
    r.map.clusters.push_back(std::move(hc));
  }
  r.map.validate(model.layers, model.heads);
  return r;
}

}  // namespace sp
