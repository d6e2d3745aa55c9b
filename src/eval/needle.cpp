// Needle retrieval: the needles file (JSON lines), sentence boundaries of a tokenised haystack,
// the placement of a needle at a depth, the chat-template prompt of an exact token length, the
// answer check and the greedy answer with its margins.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/sampling.h"

namespace sp {
namespace {

std::string field(const nlohmann::json& j, const char* name, const std::string& source,
                  int64_t line) {
  check(j.contains(name), "parse_needles", source, " line ", line, ": field '", name,
        "' is missing");
  check(j[name].is_string() && !j[name].get<std::string>().empty(), "parse_needles", source,
        " line ", line, ": field '", name, "' must be a non-empty string");
  return j[name].get<std::string>();
}

bool is_space(char ch) {
  return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r';
}

// Text with trailing whitespace and closing quotes/brackets removed.
std::string strip_closers(const std::string& s) {
  size_t e = s.size();
  while (e > 0 && (is_space(s[e - 1]) || std::strchr("\"')]", s[e - 1]) != nullptr)) --e;
  return s.substr(0, e);
}

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// "Mr." and friends end with a period but not a sentence.
bool is_abbreviation(const std::string& word) {
  static const char* const abbr[] = {"mr", "mrs", "ms", "dr", "st", "messrs", "col", "capt"};
  size_t b = word.find_last_of(" \n\t");
  const std::string w = lower(b == std::string::npos ? word : word.substr(b + 1));
  for (const char* a : abbr)
    if (w == a) return true;
  return false;
}

}  // namespace

std::vector<needle_item> parse_needles(const std::string& text, const std::string& source) {
  std::vector<needle_item> items;
  std::stringstream ss(text);
  std::string line;
  int64_t number = 0;
  while (std::getline(ss, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    check(!j.is_discarded(), "parse_needles", source, " line ", number, ": not valid JSON");
    check(j.is_object(), "parse_needles", source, " line ", number, ": expected a JSON object");
    items.push_back({field(j, "needle", source, number), field(j, "question", source, number),
                     field(j, "answer", source, number)});
  }
  check(!items.empty(), "parse_needles", source, ": no needles");
  return items;
}

std::vector<int64_t> sentence_boundaries(const std::vector<std::string>& pieces) {
  const int64_t n = static_cast<int64_t>(pieces.size());
  std::vector<int64_t> out{0};
  for (int64_t i = 1; i < n; ++i) {
    const std::string& prev = pieces[static_cast<size_t>(i - 1)];
    const std::string& next = pieces[static_cast<size_t>(i)];
    const std::string core = strip_closers(prev);
    if (core.empty() || std::strchr(".!?", core.back()) == nullptr) continue;
    if (!(is_space(prev.back()) || (!next.empty() && is_space(next.front())))) continue;
    if (core.back() == '.') {
      // The word before the period: this piece's text, or the previous piece for a lone ".".
      std::string word = core.substr(0, core.size() - 1);
      if (word.empty() && i >= 2) word = strip_closers(pieces[static_cast<size_t>(i - 2)]);
      if (is_abbreviation(word)) continue;
    }
    out.push_back(i);
  }
  if (n > 0) out.push_back(n);
  return out;
}

int64_t needle_insert_index(const std::vector<int64_t>& boundaries, int64_t n, double depth) {
  check(!boundaries.empty(), "needle_insert_index", "no sentence boundaries");
  check(depth >= 0.0 && depth <= 1.0, "needle_insert_index", "depth ", depth, " is outside [0, 1]");
  const double target = depth * double(n);
  int64_t best = boundaries.front();
  for (int64_t b : boundaries)
    if (std::fabs(double(b) - target) < std::fabs(double(best) - target)) best = b;
  return best;
}

needle_prompt build_needle_prompt(const tokenizer& tok, const std::vector<int32_t>& haystack,
                                  const needle_item& item, int64_t length, double depth) {
  const char* fn = "build_needle_prompt";
  const std::vector<int32_t> prefix = tok.encode("<|im_start|>user\n", false);
  const std::vector<int32_t> needle = tok.encode(" " + item.needle, false);
  const std::vector<int32_t> suffix =
      tok.encode("\n\n" + item.question + "<|im_end|>\n<|im_start|>assistant\n", false);
  const int64_t fixed = static_cast<int64_t>(prefix.size() + needle.size() + suffix.size());
  const int64_t m = length - fixed;
  check(m > 0, fn, "length ", length, " leaves no room for the haystack (template, needle and ",
        "question take ", fixed, " tokens)");
  check(static_cast<int64_t>(haystack.size()) >= m, fn, "the haystack has ", haystack.size(),
        " tokens, fewer than the ", m, " that length ", length, " needs");
  std::vector<std::string> pieces;
  pieces.reserve(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) pieces.push_back(tok.decode({haystack[static_cast<size_t>(i)]}));
  const int64_t at = needle_insert_index(sentence_boundaries(pieces), m, depth);

  needle_prompt p;
  p.tokens = prefix;
  p.tokens.insert(p.tokens.end(), haystack.begin(), haystack.begin() + at);
  p.needle_begin = static_cast<int64_t>(p.tokens.size());
  p.tokens.insert(p.tokens.end(), needle.begin(), needle.end());
  p.needle_end = static_cast<int64_t>(p.tokens.size());
  p.tokens.insert(p.tokens.end(), haystack.begin() + at, haystack.begin() + m);
  p.tokens.insert(p.tokens.end(), suffix.begin(), suffix.end());
  p.haystack_tokens = m;
  p.actual_depth = double(at) / double(m);
  return p;
}

bool answer_matches(const std::string& generated, const std::string& answer) {
  return lower(generated).find(lower(answer)) != std::string::npos;
}

greedy_answer decode_greedy_answer(const std::vector<float>& first_logits, int64_t vocab,
                                   const std::vector<int32_t>& stops, int64_t max_new,
                                   const std::function<std::vector<float>(int32_t)>& next_logits) {
  const char* fn = "decode_greedy_answer";
  check(vocab >= 2, fn, "vocab must be >= 2, got ", vocab);
  check(max_new > 0, fn, "max_new must be > 0, got ", max_new);
  greedy_answer out;
  std::vector<float> logits = first_logits;
  for (;;) {
    check(static_cast<int64_t>(logits.size()) == vocab, fn, "logits of ", logits.size(),
          " entries for a vocabulary of ", vocab);
    const std::vector<int32_t> top = top_k_indices(logits.data(), vocab, 2);
    out.margins.push_back(double(logits[top[0]]) - double(logits[top[1]]));
    if (std::find(stops.begin(), stops.end(), top[0]) != stops.end()) break;
    out.tokens.push_back(top[0]);
    if (static_cast<int64_t>(out.tokens.size()) == max_new) break;
    logits = next_logits(top[0]);
  }
  return out;
}

}  // namespace sp
