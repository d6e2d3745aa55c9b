// Test-only stand-in for reading a tokenizer vocabulary until tokenizer::from_gguf exists: loads
// the JSON that scripts/dump_vocab.py (or scripts/make_tokenizer_golden.py) writes from the
// model's GGUF to $SP_CACHE/tokenizer_vocab.json, with exactly the fields of sp::tokenizer_vocab.
// Also locates the cache ($SP_CACHE, else ~/.cache/shareprefill) for the model tests.
#pragma once

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "shareprefill/tokenizer.h"

namespace sp_test {

inline std::string cache_dir() {
  if (const char* env = std::getenv("SP_CACHE"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/shareprefill";
}

// The vocabulary in `path`, or nullopt when the file does not exist (the caller skips).
inline std::optional<sp::tokenizer_vocab> load_tokenizer_vocab_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  const nlohmann::json j = nlohmann::json::parse(in);
  sp::tokenizer_vocab vocab;
  vocab.model = j.at("model").get<std::string>();
  vocab.pre = j.at("pre").get<std::string>();
  vocab.tokens = j.at("tokens").get<std::vector<std::string>>();
  vocab.merges = j.at("merges").get<std::vector<std::string>>();
  vocab.token_types = j.at("token_types").get<std::vector<int32_t>>();
  vocab.bos = j.at("bos").get<int32_t>();
  vocab.eos = j.at("eos").get<int32_t>();
  return vocab;
}

}  // namespace sp_test
