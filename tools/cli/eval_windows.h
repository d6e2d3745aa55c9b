// The windows that `eval ppl` and `eval dense-gain` score: text files tokenised, windows of one
// length taken round-robin over the files, and one window scored on the GPU the way
// score_window scores it on the CPU.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shareprefill/cuda_llama.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/eval.h"
#include "shareprefill/tokenizer.h"

namespace sp::cli {

struct text_tokens {
  std::string path;
  std::vector<int32_t> ids;
};

// Each file read and tokenised (no BOS).
std::vector<text_tokens> tokenize_texts(const std::vector<std::string>& paths,
                                        const tokenizer& tok);

// Up to `count` windows of `length`, taken round-robin from the files, each file's windows
// non-overlapping from its start: (file index, first token) in order. Throws when no file holds
// a window; `who` names the caller in that message.
std::vector<std::pair<size_t, int64_t>> pick_windows(const std::vector<text_tokens>& texts,
                                                     int64_t length, int64_t count,
                                                     const char* who);

// The tokens of one picked window, and of every picked window.
std::vector<int32_t> window_tokens(const std::vector<text_tokens>& texts,
                                   const std::pair<size_t, int64_t>& window, int64_t length);
std::vector<std::vector<int32_t>> windows_tokens(
    const std::vector<text_tokens>& texts, const std::vector<std::pair<size_t, int64_t>>& windows,
    int64_t length);

// [{"file", "token_offset"}] of the picked windows, for JSON rows.
nlohmann::json window_sources(const std::vector<text_tokens>& texts,
                              const std::vector<std::pair<size_t, int64_t>>& windows);

// One window scored on the GPU as score_window scores it on the CPU: the log-probabilities of
// tokens [n/2, n) given their prefixes. planner: null for dense attention.
window_score score_window_cuda(cuda_llama_session& session, const std::vector<int32_t>& tokens,
                               const prefill_options& options, const device_planner* planner);

}  // namespace sp::cli
