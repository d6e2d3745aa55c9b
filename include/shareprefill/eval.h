// Accuracy evaluation of the attention modes on the real model (issue 6): perplexity over
// windows of a text (second half of each window scored), needle retrieval (a fact inserted at a
// sentence boundary at a chosen depth of a haystack, asked back through the chat template), and
// per-head attention error / recall / density against dense attention on the same activations.
// The arithmetic lives here so it is testable without the model; the CLI (tools/cli/eval*.cpp)
// only wires options, the model and the output together.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/llama_model.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/tensor.h"
#include "shareprefill/tokenizer.h"

namespace sp {

// ---- Option lists ----

// "dense,vslash,..." -> names, each one of dense | vslash | flexprefill | shareprefill (unknown
// names and empty lists throw, naming the value).
std::vector<std::string> eval_parse_modes(const std::string& list);
// "2048,4096" -> positive integers; each a multiple of `multiple_of` when > 0.
std::vector<int64_t> eval_parse_lengths(const std::string& list, int64_t multiple_of);
// "0,0.5,1" -> numbers in [lo, hi].
std::vector<double> eval_parse_numbers(const std::string& list, double lo, double hi,
                                       const char* what);

// ---- Perplexity ----

// Non-overlapping windows [begin, begin + length) from the start of a token stream, at most
// max_windows (0 = as many as fit). Throws when not even one window fits.
std::vector<int64_t> ppl_window_starts(int64_t n_tokens, int64_t length, int64_t max_windows);

// Scoring of one window of `length` tokens: targets t in [length/2, length), each predicted by
// the logits at position t - 1. Returns the logit positions (length/2 - 1 .. length - 2).
std::vector<int64_t> ppl_logit_positions(int64_t length);

// log softmax(logits)[target] in double precision. logits: [vocab]
double token_logprob(const float* logits, int64_t vocab, int32_t target);

// exp(-mean(logprobs)); throws on an empty list.
double perplexity_from_logprobs(const std::vector<double>& logprobs);

// Log-probabilities of tokens[t] for t in [length/2, length) after one prefill of `tokens`
// (the window) through `options` (its logit_positions and on_hidden are replaced): the final
// hidden states are captured and projected to the vocabulary in chunks, so the [positions,
// vocab] logits never exist at once.
struct window_score {
  std::vector<double> logprobs;  // [length - length/2]
  prefill_result prefill;        // reports and times (logits of the last position only)
};
window_score score_window(const llama_weights& w, thread_pool& pool,
                          const std::vector<int32_t>& tokens, prefill_options options);

// Tile density of a prefill: visited / causal tiles over all layers and heads.
double prefill_density(const prefill_result& r);

// ---- Needles ----

struct needle_item {
  std::string needle, question, answer;
};

// JSON lines, one object {"needle", "question", "answer"} (non-empty strings) per non-blank
// line. Errors name `source`, the line number and the field.
std::vector<needle_item> parse_needles(const std::string& text, const std::string& source);

// Token boundaries i (0 <= i <= n) before which a needle may go: 0, n, and every i where piece
// i-1 ends a sentence (., ! or ? possibly followed by closing quotes/brackets) and piece i
// starts with whitespace. pieces: the decoded text of each token.
std::vector<int64_t> sentence_boundaries(const std::vector<std::string>& pieces);

// The boundary nearest to depth * n (ties: the earlier one). depth in [0, 1].
int64_t needle_insert_index(const std::vector<int64_t>& boundaries, int64_t n, double depth);

// The chat-template prompt of exactly `length` tokens:
//   <|im_start|>user\n{haystack[0:i]} {needle}{haystack[i:m]}\n\n{question}<|im_end|>\n
//   <|im_start|>assistant\n
// with m chosen so the total is `length`, and i the sentence boundary nearest to depth * m.
struct needle_prompt {
  std::vector<int32_t> tokens;
  int64_t needle_begin = 0, needle_end = 0;  // token range of the needle in `tokens`
  int64_t haystack_tokens = 0;               // m
  double actual_depth = 0.0;                 // i / m
};
// Throws when the haystack has fewer than the m tokens the length needs, or when the template,
// needle and question alone do not fit.
needle_prompt build_needle_prompt(const tokenizer& tok, const std::vector<int32_t>& haystack,
                                  const needle_item& item, int64_t length, double depth);

// Case-insensitive containment of `answer` in `generated`.
bool answer_matches(const std::string& generated, const std::string& answer);

// A greedy answer: its tokens and, for every choice made (each token, and the stop token that
// ended the answer if one did), the lead of the chosen logit over the runner-up's (a difference
// of log-probabilities): how near that choice came to going another way.
struct greedy_answer {
  std::vector<int32_t> tokens;
  std::vector<double> margins;  // [tokens + 1 if a stop token ended it]
};

// Greedy decoding from first_logits ([vocab], the prefill's last row) until a stop token or
// max_new tokens; next_logits(token) feeds a chosen token and returns the next [vocab] logits.
greedy_answer decode_greedy_answer(const std::vector<float>& first_logits, int64_t vocab,
                                   const std::vector<int32_t>& stops, int64_t max_new,
                                   const std::function<std::vector<float>(int32_t)>& next_logits);

// ---- Attention error ----

// Per head ||out - ref|| / ||ref|| (Frobenius over tokens [first_token, N) and dims).
// out, ref: [N, H, D] f32; err: [H]. A head with ||ref|| = 0 gets ||out||.
void head_relative_errors(double* err, const tensor_view& out, const tensor_view& ref,
                          int64_t first_token = 0);

// Share of the dense attention mass that the tiles of `head` in `mask` keep, averaged over query
// tokens: sum_r rows(r) * sum_{c in mask row r} a[r, c] / N, with rows(r) the number of real
// query rows of block r. a: [nb, nb] exact block attention of the head (rows sum to 1).
double tile_recall(const float* a, const block_mask& mask, int64_t head);

// One candidate planner probed against dense attention.
struct probe_candidate {
  std::string mode;  // vslash | flexprefill | shareprefill
  double gamma = 0.95;
  const planner* plan = nullptr;           // attention_probe's (CPU); must outlive the probe
  const device_planner* device = nullptr;  // cuda_attention_probe's (GPU); must outlive it
};

struct probe_row {
  size_t candidate = 0;
  int64_t layer = 0, head = 0;
  head_kind kind = head_kind::dense;
  double rel_err = 0.0, recall = 0.0, density = 0.0;
  double rel_err_second_half = 0.0;  // over tokens [N/2, N), the ones perplexity scores
};

// A prefill strategy that computes dense attention (with every head's exact block attention),
// passes the dense output on (so every layer sees the dense model's activations), and runs each
// candidate's plan + block-sparse attention on the same q, k, v, recording one probe_row per
// (candidate, layer, head). Candidates keep their own planner state across the layers.
class attention_probe final : public prefill_attention {
 public:
  attention_probe(std::vector<probe_candidate> candidates, int64_t block_size);
  void begin_prompt(int64_t n_tokens) override;
  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override;
  const char* name() const override { return "probe"; }

  const std::vector<probe_candidate>& candidates() const { return candidates_; }
  const std::vector<probe_row>& rows() const { return rows_; }

 private:
  std::vector<probe_candidate> candidates_;
  int64_t block_size_;
  std::vector<plan_state> states_;
  std::vector<probe_row> rows_;
  std::vector<float> dense_attn_, cand_out_;
};

// The same probe on the GPU (issue 14), a hook for prefill_options::on_attention_inputs of a
// cuda_llama_session prefill with no planner (dense: every layer sees the dense model's
// activations; not chunked). Per layer, from the forward's device q, k, v: the dense output and
// every head's block attention A by our kernel (cuda_dense_attention.h), then for each candidate
// its device planner through prefill_layer with its own per-prompt state into a scratch output;
// the outputs (bf16, compared in fp32 on the host), A and the candidate's tiles and kinds
// downloaded, and the same probe_rows as attention_probe's (so rel_err includes the bf16
// rounding of both outputs: about 2^-9 relative where the tiles are the same). Layer 0 starts a
// prompt; the last layer checks the planners' device errors. Block size 128 (the kernel's).
// Synchronises once per layer and candidate. Builds without CUDA throw at layer 0.
class cuda_attention_probe {
 public:
  cuda_attention_probe(std::vector<probe_candidate> candidates, int64_t layers);
  ~cuda_attention_probe();
  cuda_attention_probe(const cuda_attention_probe&) = delete;
  cuda_attention_probe& operator=(const cuda_attention_probe&) = delete;

  // Probes layer l: q [N, H, D], k and v [N, Hkv, D] device bf16 views, heads contiguous in a
  // token (the forward's).
  void probe_layer(int64_t l, const tensor_view& q, const tensor_view& k, const tensor_view& v);
  // probe_layer as an on_attention_inputs hook (this object must outlive it).
  prefill_options::attention_inputs_hook hook();

  const std::vector<probe_candidate>& candidates() const { return candidates_; }
  const std::vector<probe_row>& rows() const { return rows_; }

 private:
  struct state;
  std::vector<probe_candidate> candidates_;
  int64_t layers_;
  std::vector<probe_row> rows_;
  std::unique_ptr<state> s_;
};

// Linear interpolation of y at x over points sorted by x (clamped to the end points);
// xs, ys: [n], n >= 1.
double interpolate_at(const std::vector<double>& xs, const std::vector<double>& ys, double x);

}  // namespace sp
