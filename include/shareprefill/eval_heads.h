// Per-head accuracy analysis (issue 17): which heads' sparse attention costs perplexity.
// - head_subset_attention: a prefill strategy that is dense everywhere except for a chosen set of
//   (layer, head) pairs, which take the output of a sparse planner (single-head ablation).
// - head_error_probe: one prefill on the dense model's activations that records, per head, the
//   plain relative attention error and the error of the head's contribution to the residual
//   stream after the output projection, relative to the residual stream's size.
// - spearman_rank_correlation: rank agreement between a cheap measure and the ablation.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "shareprefill/cluster_map.h"
#include "shareprefill/llama_model.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/tensor.h"

namespace sp {

// Spearman's rho of x and y (average ranks for ties). x, y: [n], n >= 2; throws on size
// mismatch, n < 2 or non-finite values. Returns 0 when either side is constant.
double spearman_rank_correlation(const std::vector<double>& x, const std::vector<double>& y);

// Per head h: sqrt(sum_{t >= first_token} ||Wo[:, h*D:(h+1)*D] (out[t,h] - ref[t,h])||^2), the
// size of the error the head adds to the residual stream. out, ref: [N, H, D] f32 contiguous;
// wo: [dim, H*D] row-major (row = output feature); err: [H].
void head_output_errors(double* err, const tensor_view& out, const tensor_view& ref,
                        const float* wo, int64_t dim, int64_t first_token);

// Dense attention outputs of the layers below the first sparse one, kept between ablation runs
// over the same prompts: those layers see the same inputs in every run, so their attention is
// computed once per (prompt key, layer). Each output: [N, H, D].
struct dense_prefix_cache {
  int64_t prompt_key = 0;  // set by the caller before each prefill
  std::map<std::pair<int64_t, int64_t>, std::vector<float>> outputs;
};

// Dense attention for every head except `sparse_heads`, whose outputs come from `pl`'s plan
// (planned on the same q, k, v; in shareprefill mode every layer up to the last listed one is
// planned so the pivots publish as they would in a full sparse run). The report counts the
// listed heads' planned tiles and every causal tile of the others. `pl` (and `cache`, when
// given) must outlive this.
class head_subset_attention final : public prefill_attention {
 public:
  head_subset_attention(const planner& pl, std::vector<head_ref> sparse_heads,
                        dense_prefix_cache* cache = nullptr);
  void begin_prompt(int64_t n_tokens) override;
  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override;
  const char* name() const override { return "head-subset"; }

 private:
  const planner& pl_;
  std::vector<uint8_t> sparse_;  // [layers * heads]
  int64_t first_layer_ = -1;     // the first layer holding a listed head
  int64_t last_layer_ = -1;      // the last layer holding a listed head
  dense_prefix_cache* cache_;
  plan_state state_;
  std::vector<float> planned_out_;
};

struct head_error_row {
  int64_t layer = 0, head = 0;
  head_kind kind = head_kind::dense;
  double density = 0.0;  // the head's planned tiles / causal tiles
  double rel_err = 0.0;  // ||o - o_dense|| / ||o_dense|| over tokens [N/2, N)
  // ||Wo_h (o - o_dense)|| / ||x|| over tokens [N/2, N), x = the residual stream entering the
  // layer: the relative change the head's error makes to what the next layers read.
  double out_err = 0.0;
};

// Dense attention in every layer (passed on), and `pl`'s plan on the same q, k, v, recording a
// head_error_row per (layer, head). Set prefill_options::on_hidden to observe_residual so the
// probe sees the residual stream (score_window replaces on_hidden: use the returned callback
// via head_error_probe::hidden_hook in a plain llama_session::prefill).
class head_error_probe final : public prefill_attention {
 public:
  head_error_probe(const planner& pl, const llama_weights& w);
  void begin_prompt(int64_t n_tokens) override;
  // x: [N, dim], the residual stream entering `layer` (on_hidden's argument).
  void observe_residual(int64_t layer, const float* x);
  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override;
  const char* name() const override { return "head-error-probe"; }
  const std::vector<head_error_row>& rows() const { return rows_; }

 private:
  const planner& pl_;
  const llama_weights& w_;
  int64_t n_tokens_ = 0;
  int64_t residual_layer_ = -1;
  double residual_norm_ = 0.0;  // ||x|| over tokens [N/2, N) of residual_layer_
  plan_state state_;
  std::vector<float> planned_out_;
  std::vector<head_error_row> rows_;
};

}  // namespace sp
