// Byte-level BPE pieces of the tokenizer: GPT-2's byte <-> code point alphabet and the merge
// loop. Private to src/model (tokenizer*.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace sp {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A). Result: a code point.
uint32_t byte_to_code_point(uint8_t byte);

// The inverse; returns -1 for code points outside the alphabet.
int32_t code_point_to_byte(uint32_t code_point);

// Appends the UTF-8 encoding of `code_point` to *out.
void utf8_append(std::string* out, uint32_t code_point);

class bpe_merges {
 public:
  // Registers merge (left, right) -> result with `rank`; a repeated pair keeps its first rank.
  void add(int32_t left, int32_t right, int32_t rank, int32_t result);

  // Merges *ids in place, always the lowest-rank adjacent pair next and the leftmost among equal
  // ranks (HF `tokenizers` order), until no adjacent pair has a merge.
  void apply(std::vector<int32_t>* ids) const;

 private:
  struct merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const merge* find(int32_t left, int32_t right) const;
  std::unordered_map<uint64_t, merge> merges_;
};

}  // namespace sp
