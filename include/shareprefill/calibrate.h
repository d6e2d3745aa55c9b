// Offline calibration (DESIGN.md section 3): from every head's exact block attention on a few
// calibration inputs (text x length) to the cluster map. The core is model-free:
// calibrate_from_inputs() maps per-input block-attention tensors to clusters, so it can be tested
// on constructed tensors; make_capture_attention() is the prefill strategy that records those
// tensors from a dense run of the real model.
//
// Distances between heads i and j on one input (both in [0, 1]):
//   jaccard: 1 - |P_i n P_j| / |P_i u P_j|, P = the head's gamma-pattern (section 2G tiles);
//   js:      mean over query blocks r >= 1 of JSd(A_i[r, :r+1], A_j[r, :r+1]) / sqrt(ln 2)
//            (row 0 has a single causal entry and is identical for every head, so it is skipped).
// Clustering: average linkage on the mean of the per-input distance matrices, cut at a distance or
// to a cluster count. A cluster is shared when it has >= 2 members, its mean pairwise distance is
// <= cut on *every* input, and the mean fraction of a member's exact block attention covered by
// its own adaptive vertical-slash tiles (over members and inputs) is < tau_fb.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/llama_model.h"
#include "shareprefill/prefill_attention.h"

namespace sp {

enum class calib_metric : uint8_t { jaccard, js };
const char* calib_metric_name(calib_metric m);
calib_metric calib_metric_from_name(const std::string& name);  // throws on unknown names

// Every head's exact block attention on one calibration input.
struct calibration_input {
  std::string text;  // e.g. "sensesensibility"
  int64_t n_tokens = 0;
  int64_t block_size = 128;
  int64_t n_blocks = 0;
  int64_t layers = 0, heads = 0;
  std::vector<float> block_attention;  // [layers * heads, nb, nb], rows sum to 1 over c <= r
  std::vector<float> vs_coverage;      // [layers * heads] A mass covered by the head's own vs tiles
  std::string label() const;           // "text@n_tokens"
  int64_t head_count() const { return layers * heads; }
  void validate() const;  // shapes and sizes; throws sp::error
};

struct calibration_settings {
  calib_metric metric = calib_metric::js;  // default: more stable across inputs (docs/CALIBRATION.md)
  double cut = 0.15;     // distance cut in (0, 1]; also the per-input similarity bar for sharing
  int64_t clusters = 0;  // > 0: cut the tree into this many clusters instead of at `cut`
  double gamma = 0.95;   // gamma-pattern threshold (section 2G)
  double tau_fb = 0.95;  // vertical-slash coverage bar (section 2C)
  void validate(int64_t head_count) const;
};

// Symmetric n x n distance matrix (zero diagonal), row-major.
struct distance_matrix {
  int64_t n = 0;
  std::vector<double> d;  // [n, n]
  double at(int64_t i, int64_t j) const { return d[static_cast<size_t>(i * n + j)]; }
};

// ---- distances (src/calibrate/head_distances.cpp) ----

// Section 2G pattern of every head of an input.
std::vector<std::vector<tile>> gamma_patterns(const calibration_input& in, double gamma);
distance_matrix jaccard_distances(const std::vector<std::vector<tile>>& patterns, int64_t n_blocks);
distance_matrix js_distances(const calibration_input& in);
distance_matrix head_distances(const calibration_input& in, calib_metric metric, double gamma);
distance_matrix mean_distances(const std::vector<distance_matrix>& per_input);

// Fraction of a head's block attention covered by its own adaptive vertical-slash tiles, from
// its last-block profiles and budgets (sections 2A, 2D). a: [nb, nb]; v_blk, s_blk: [nb].
double vs_coverage(const float* a, const float* v_blk, const float* s_blk, int64_t n_blocks,
                   int64_t vertical_blocks, int64_t slash_blocks);

// ---- clustering (src/calibrate/clustering.cpp) ----

// One agglomeration step: clusters a and b (named by their smallest member) merge at `height`.
struct linkage_merge {
  int32_t a = 0, b = 0;  // a < b
  double height = 0.0;
  int64_t size = 0;  // members after the merge
};

// Average-linkage (UPGMA) agglomeration of all n points: n - 1 merges in order. Ties in distance
// merge the pair with the smallest (a, b) first, so the result is deterministic.
std::vector<linkage_merge> average_linkage(const distance_matrix& dist);

// Flat clusters: labels[i] in [0, k), numbered in order of their smallest member.
std::vector<int32_t> cut_at_distance(const std::vector<linkage_merge>& merges, int64_t n,
                                     double cut);
std::vector<int32_t> cut_to_count(const std::vector<linkage_merge>& merges, int64_t n, int64_t k);

// Adjusted Rand index of two labelings of the same points (1 = identical partitions).
double adjusted_rand_index(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

// ---- shared-cluster selection (src/calibrate/shared_selection.cpp) ----

struct cluster_verdict {
  std::vector<int32_t> members;         // head indices (layer * heads + head), ascending
  int32_t medoid = -1;                  // member with the least summed mean distance
  std::vector<double> mean_distance;    // [inputs] mean pairwise distance within the cluster
  double mean_vs_coverage = 0.0;        // over members and inputs
  bool shared = false;
  std::string reason;                   // why not shared ("" when shared)
};

std::vector<cluster_verdict> judge_clusters(const std::vector<int32_t>& labels,
                                            const std::vector<distance_matrix>& per_input,
                                            const distance_matrix& mean,
                                            const std::vector<calibration_input>& inputs,
                                            const calibration_settings& settings);

// ---- the whole offline phase ----

struct calibration_result {
  cluster_map map;
  std::vector<int32_t> labels;            // [heads] cluster index per head (map order)
  std::vector<distance_matrix> per_input; // distances under settings.metric
  distance_matrix mean;
  std::vector<linkage_merge> merges;
  std::vector<cluster_verdict> verdicts;  // [clusters], map order
};

// inputs: >= 1, all of one model shape (model.layers x model.heads). The map's calibration block
// records the settings and the inputs; callers add their own keys (tool, date) afterwards.
calibration_result calibrate_from_inputs(const std::vector<calibration_input>& inputs,
                                         const calibration_settings& settings,
                                         const cluster_model_info& model);

// ---- capture from the model (src/calibrate/capture_attention.cpp) ----

// Dense causal attention (every tile) that also records, into *dst, every head's exact block
// attention and its vertical-slash coverage (statistics of section 2A with gamma and
// min_budget). dst->text is left alone; the shapes are set at begin_prompt / first layer.
std::unique_ptr<prefill_attention> make_capture_attention(calibration_input* dst, int64_t layers,
                                                          int64_t block_size = 128,
                                                          double gamma = 0.95,
                                                          int64_t min_budget = 1024);

// ---- capture on the GPU (src/calibrate/capture_attention_cuda.cpp) ----

// The same capture for the CUDA forward (cuda_llama.h): hook() goes into
// prefill_options::on_attention_inputs of a cuda_llama_session prefill (not chunked; the
// session's own dense attention still produces the activations). Per layer, our CUDA kernel runs
// the dense causal plan with every head a pivot: its A is the same as the CPU kernel's (per tile,
// the mean over the query block's valid rows of their probability mass in the key block, so rows
// sum to 1 over c <= r), downloaded into *dst. vs_coverage is computed on the CPU, as
// make_capture_attention does, from the layer's last block_size query rows and all its keys,
// downloaded in bf16 (the GPU forward's precision). Layer 0 starts a new prompt; the block size
// is 128 (the kernel's). One synchronisation per layer; builds without CUDA throw at layer 0.
class cuda_capture {
 public:
  cuda_capture(calibration_input* dst, int64_t layers, thread_pool& pool, double gamma = 0.95,
               int64_t min_budget = 1024);
  ~cuda_capture();
  cuda_capture(const cuda_capture&) = delete;
  cuda_capture& operator=(const cuda_capture&) = delete;

  // Captures layer l from device views: q [N, H, D], k and v [N, Hkv, D], bf16, heads
  // contiguous in a token (token strides as the forward's: multiples of 8 elements).
  void capture_layer(int64_t l, const tensor_view& q, const tensor_view& k, const tensor_view& v);
  // capture_layer as a prefill_options::on_attention_inputs hook (this object must outlive it).
  prefill_options::attention_inputs_hook hook();

 private:
  struct state;
  std::unique_ptr<state> s_;
};

// ---- the paper's two observations (src/calibrate/report_statistics.cpp) ----

struct pair_comparison {
  int32_t a = 0, b = 0;           // input indices
  double similarity_correlation = 0.0;  // Pearson r of the off-diagonal similarities
  double nearest_neighbour_agreement = 0.0;  // fraction of heads whose nearest other head is the same
  double cluster_ari = 0.0;       // ARI of the per-input clusterings at the same cut
};

struct metric_report {
  calib_metric metric = calib_metric::jaccard;
  std::vector<std::vector<int64_t>> histogram;  // [inputs][10] pairs per similarity decile
  std::vector<int64_t> pairs_above_half;        // [inputs] pairs with similarity > 0.5
  int64_t pairs = 0;                            // head pairs per input, n(n-1)/2
  std::vector<pair_comparison> comparisons;     // every pair of inputs
  double mean_correlation = 0.0, mean_nn_agreement = 0.0, mean_ari = 0.0;
};

// Both metrics on the same inputs (settings.metric is ignored); the per-input clusterings of
// the ARI use settings.cut or settings.clusters.
std::vector<metric_report> observation_report(const std::vector<calibration_input>& inputs,
                                              const calibration_settings& settings);

// ---- captured inputs on disk (src/calibrate/capture_io.cpp), to re-cluster without the model --

// Little-endian binary: magic "SPCALIB1", count, then per input its label fields and tensors.
void save_calibration_inputs(const std::string& path, const std::vector<calibration_input>& inputs);
// Loading checks every count against the bytes left before sizing anything, and each input's
// values (calibration_input::validate); a file with trailing bytes is refused.
std::vector<calibration_input> load_calibration_inputs(const std::string& path);
// The same from the file's bytes; `name` stands for the file in error messages.
std::vector<calibration_input> calibration_inputs_from_bytes(const std::vector<uint8_t>& bytes,
                                                             const std::string& name);

// ---- the report (src/calibrate/report_writer.cpp) ----

struct report_context {
  std::string command;  // how the calibration was run
  std::string date;     // UTC
  double wall_s = 0.0;  // calibration wall time (model runs included)
  std::string machine;  // e.g. "2 threads"
};

// Writes dir/report.md and, when png_supported(), dir/similarity_heatmap.png, dir/cluster_grid.png
// and dir/thumbnails.png. Creates dir if needed. Returns the files written.
std::vector<std::string> write_calibration_report(const std::string& dir,
                                                  const calibration_result& result,
                                                  const std::vector<calibration_input>& inputs,
                                                  const std::vector<metric_report>& observations,
                                                  const calibration_settings& settings,
                                                  const report_context& context);

}  // namespace sp
