// Windows of text for the perplexity subcommands (eval_windows.h).
#include "eval_windows.h"

#include <algorithm>

#include "model_loading.h"
#include "shareprefill/error.h"

namespace sp::cli {

std::vector<text_tokens> tokenize_texts(const std::vector<std::string>& paths,
                                        const tokenizer& tok) {
  std::vector<text_tokens> texts;
  for (const std::string& path : paths)
    texts.push_back({path, tok.encode(read_text_file(path), false)});
  return texts;
}

std::vector<std::pair<size_t, int64_t>> pick_windows(const std::vector<text_tokens>& texts,
                                                     int64_t length, int64_t count,
                                                     const char* who) {
  std::vector<std::vector<int64_t>> per_file;
  size_t most = 0, longest = 0;
  for (const text_tokens& t : texts) {
    const int64_t n = static_cast<int64_t>(t.ids.size());
    per_file.push_back(n >= length ? ppl_window_starts(n, length, 0) : std::vector<int64_t>{});
    most = std::max(most, per_file.back().size());
    longest = std::max(longest, t.ids.size());
  }
  std::vector<std::pair<size_t, int64_t>> out;
  for (size_t i = 0; i < most; ++i)
    for (size_t f = 0; f < texts.size(); ++f)
      if (i < per_file[f].size() && static_cast<int64_t>(out.size()) < count)
        out.emplace_back(f, per_file[f][i]);
  check(!out.empty(), who, "no text file holds a window of ", length, " tokens (the longest has ",
        longest, ")");
  return out;
}

std::vector<int32_t> window_tokens(const std::vector<text_tokens>& texts,
                                   const std::pair<size_t, int64_t>& window, int64_t length) {
  const std::vector<int32_t>& ids = texts[window.first].ids;
  return {ids.begin() + window.second, ids.begin() + window.second + length};
}

std::vector<std::vector<int32_t>> windows_tokens(
    const std::vector<text_tokens>& texts, const std::vector<std::pair<size_t, int64_t>>& windows,
    int64_t length) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& w : windows) out.push_back(window_tokens(texts, w, length));
  return out;
}

nlohmann::json window_sources(const std::vector<text_tokens>& texts,
                              const std::vector<std::pair<size_t, int64_t>>& windows) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& [file, start] : windows)
    sources.push_back({{"file", texts[file].path}, {"token_offset", start}});
  return sources;
}

window_score score_window_cuda(cuda_llama_session& session, const std::vector<int32_t>& tokens,
                               const prefill_options& options, const device_planner* planner) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t first = ppl_logit_positions(n).front();
  session.reset();
  window_score s;
  s.prefill = session.prefill(tokens, options, planner);
  const std::vector<int32_t> targets(tokens.begin() + first + 1, tokens.end());
  const std::vector<float> lp = session.token_logprobs(first, targets);
  s.logprobs.assign(lp.begin(), lp.end());
  return s;
}

}  // namespace sp::cli
