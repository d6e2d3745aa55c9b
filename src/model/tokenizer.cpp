// sp::tokenizer: vocabulary validation, special-token splitting, the per-piece cache and
// decoding. The regex split lives in tokenizer_pretokenize.cpp, BPE in tokenizer_bpe.cpp.
// Encoding order (HF `tokenizers`): repair UTF-8, cut out control/user-defined tokens
// (leftmost-longest), pre-tokenize each remaining stretch, BPE each piece over its bytes.
#include "shareprefill/tokenizer.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>

#include "model/tokenizer_bpe.h"
#include "model/tokenizer_pretokenize.h"
#include "shareprefill/error.h"

namespace sp {

namespace {

// Pieces longer than this are rare and rarely repeat, so they are not cached.
constexpr size_t CACHE_MAX_PIECE_BYTES = 128;
// The cache is emptied when it reaches this many pieces (bounds memory on huge corpora).
constexpr size_t CACHE_MAX_ENTRIES = size_t{1} << 18;

// Decodes one UTF-8 code point of valid text at s[*i] and advances *i.
uint32_t utf8_next(std::string_view s, size_t* i) {
  const auto c = static_cast<unsigned char>(s[*i]);
  int extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
  uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
  ++*i;
  for (; extra > 0 && *i < s.size(); --extra, ++*i) {
    cp = (cp << 6) | (static_cast<unsigned char>(s[*i]) & 0x3F);
  }
  return cp;
}

bool is_matched_whole(int32_t type) {
  return type == TOKEN_TYPE_CONTROL || type == TOKEN_TYPE_USER_DEFINED;
}

}  // namespace

struct tokenizer::impl {
  tokenizer_vocab vocab;
  std::vector<std::string> token_bytes;          // id -> the bytes it decodes to
  std::array<int32_t, 256> byte_ids{};           // byte -> id of its one-symbol token, or -1
  std::array<std::vector<int32_t>, 256> specials;  // first byte -> ids, longest text first
  bpe_merges merges;
  std::unique_ptr<pretokenizer> pre;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  int32_t type(int32_t id) const {
    return vocab.token_types.empty() ? TOKEN_TYPE_NORMAL : vocab.token_types[id];
  }
  void encode_piece(std::vector<int32_t>* out, std::string_view piece) const;
  void encode_stretch(std::vector<int32_t>* out, std::string_view text) const;
};

tokenizer::tokenizer(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

tokenizer tokenizer::from_vocab(tokenizer_vocab vocab) {
  const char* fn = "tokenizer::from_vocab";
  check(vocab.model == "gpt2", fn, "unsupported tokenizer model '", vocab.model,
        "' (only gpt2 byte-level BPE)");
  check(!vocab.tokens.empty(), fn, "the vocabulary has no tokens");
  check(vocab.tokens.size() < size_t{1} << 31, fn, "vocabulary too large: ", vocab.tokens.size());
  const auto n = static_cast<int32_t>(vocab.tokens.size());
  check(vocab.token_types.empty() || vocab.token_types.size() == vocab.tokens.size(), fn,
        "token_types has ", vocab.token_types.size(), " entries for ", n, " tokens");
  check(vocab.bos >= -1 && vocab.bos < n, fn, "bos id ", vocab.bos, " outside [-1, ", n, ")");
  check(vocab.eos >= -1 && vocab.eos < n, fn, "eos id ", vocab.eos, " outside [-1, ", n, ")");

  auto state = std::make_unique<impl>();
  impl& s = *state;
  s.pre = std::make_unique<pretokenizer>(vocab.pre);
  s.vocab = std::move(vocab);

  // Text -> id; a text listed twice resolves to its last id, as HF's vocab map does.
  std::unordered_map<std::string_view, int32_t> ids;
  ids.reserve(s.vocab.tokens.size());
  for (int32_t id = 0; id < n; ++id) ids[s.vocab.tokens[id]] = id;
  const auto lookup = [&](std::string_view text) {
    auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  };

  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    utf8_append(&symbol, byte_to_code_point(static_cast<uint8_t>(b)));
    s.byte_ids[b] = lookup(symbol);
  }

  for (size_t rank = 0; rank < s.vocab.merges.size(); ++rank) {
    const std::string& line = s.vocab.merges[rank];
    const size_t space = line.find(' ');
    check(space != std::string::npos && space > 0 && space + 1 < line.size(), fn, "merge ", rank,
          " '", line, "' is not 'left right'");
    const std::string_view left(line.data(), space);
    const std::string_view right(line.data() + space + 1, line.size() - space - 1);
    const int32_t left_id = lookup(left), right_id = lookup(right);
    const int32_t result_id = lookup(std::string(left) + std::string(right));
    check(left_id >= 0 && right_id >= 0 && result_id >= 0, fn, "merge ", rank, " '", line,
          "' names a token that is not in the vocabulary");
    s.merges.add(left_id, right_id, static_cast<int32_t>(rank), result_id);
  }

  s.token_bytes.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& text = s.vocab.tokens[id];
    const int32_t kind = s.type(id);
    if (is_matched_whole(kind)) {
      s.token_bytes[id] = text;
      if (!text.empty()) s.specials[static_cast<unsigned char>(text[0])].push_back(id);
      continue;
    }
    std::string& bytes = s.token_bytes[id];
    for (size_t i = 0; i < text.size();) {
      const uint32_t cp = utf8_next(text, &i);
      const int32_t byte = code_point_to_byte(cp);
      if (byte >= 0) {
        bytes.push_back(static_cast<char>(byte));
      } else {
        utf8_append(&bytes, cp);  // outside the byte alphabet: decoded as written
      }
    }
  }
  for (auto& list : s.specials) {
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return s.vocab.tokens[a].size() > s.vocab.tokens[b].size();
    });
  }
  return tokenizer(std::move(state));
}

void tokenizer::impl::encode_piece(std::vector<int32_t>* out, std::string_view piece) const {
  const bool cacheable = piece.size() <= CACHE_MAX_PIECE_BYTES;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(std::string(piece));
    if (it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(piece.size());
  for (char c : piece) {
    const int32_t id = byte_ids[static_cast<unsigned char>(c)];
    if (id >= 0) ids.push_back(id);  // a byte without a token is dropped (HF BPE, no unk)
  }
  merges.apply(&ids);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= CACHE_MAX_ENTRIES) cache.clear();
    cache.emplace(std::string(piece), std::move(ids));
  }
}

void tokenizer::impl::encode_stretch(std::vector<int32_t>* out, std::string_view text) const {
  std::vector<std::string_view> pieces;
  pre->split(&pieces, text);
  for (std::string_view piece : pieces) encode_piece(out, piece);
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_bos) const {
  const impl& s = *impl_;
  check(!add_bos || s.vocab.bos >= 0, "tokenizer::encode",
        "add_bos requested but the vocabulary has no BOS token");
  std::string repaired;
  if (utf8_repair(&repaired, text)) text = repaired;

  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (add_bos) out.push_back(s.vocab.bos);
  size_t start = 0, i = 0;
  while (i < text.size()) {
    int32_t hit = -1;
    for (int32_t id : s.specials[static_cast<unsigned char>(text[i])]) {
      const std::string& special = s.vocab.tokens[id];
      if (text.compare(i, special.size(), special) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > start) s.encode_stretch(&out, text.substr(start, i - start));
    out.push_back(hit);
    i += s.vocab.tokens[hit].size();
    start = i;
  }
  if (start < text.size()) s.encode_stretch(&out, text.substr(start));
  return out;
}

std::string tokenizer::decode(const std::vector<int32_t>& ids) const {
  const int32_t n = vocab_size();
  std::string out;
  for (size_t k = 0; k < ids.size(); ++k) {
    check(ids[k] >= 0 && ids[k] < n, "tokenizer::decode", "id ", ids[k], " at position ", k,
          " outside [0, ", n, ")");
    out += impl_->token_bytes[ids[k]];
  }
  return out;
}

std::string tokenizer::token_text(int32_t id) const {
  check(id >= 0 && id < vocab_size(), "tokenizer::token_text", "id ", id, " outside [0, ",
        vocab_size(), ")");
  return impl_->vocab.tokens[id];
}

int32_t tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->vocab.tokens.size()); }
int32_t tokenizer::bos() const { return impl_->vocab.bos; }
int32_t tokenizer::eos() const { return impl_->vocab.eos; }

int32_t tokenizer::type_of(int32_t id) const {
  check(id >= 0 && id < vocab_size(), "tokenizer::type_of", "id ", id, " outside [0, ",
        vocab_size(), ")");
  return impl_->type(id);
}

}  // namespace sp
