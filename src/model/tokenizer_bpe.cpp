// Byte-level BPE: GPT-2's byte alphabet and the rank-ordered merge loop (a min-heap over
// adjacent pairs on a linked list of symbols, O(n log n) per piece, so long pieces such as a
// run of 10^5 letters stay fast).
#include "model/tokenizer_bpe.h"

#include <array>
#include <queue>
#include <tuple>

namespace sp {
namespace {

bool byte_is_printable(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct byte_alphabet {
  std::array<uint32_t, 256> to_code_point{};
  std::array<int32_t, 512> to_byte{};  // every code point of the alphabet is below U+0144
  byte_alphabet() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      to_code_point[b] = byte_is_printable(b) ? static_cast<uint32_t>(b) : next++;
      to_byte[to_code_point[b]] = b;
    }
  }
};

const byte_alphabet& alphabet() {
  static const byte_alphabet table;
  return table;
}

}  // namespace

uint32_t byte_to_code_point(uint8_t byte) { return alphabet().to_code_point[byte]; }

int32_t code_point_to_byte(uint32_t code_point) {
  return code_point < 512 ? alphabet().to_byte[code_point] : -1;
}

void utf8_append(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void bpe_merges::add(int32_t left, int32_t right, int32_t rank, int32_t result) {
  merges_.emplace(key(left, right), merge{rank, result});
}

const bpe_merges::merge* bpe_merges::find(int32_t left, int32_t right) const {
  auto it = merges_.find(key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void bpe_merges::apply(std::vector<int32_t>* ids) const {
  std::vector<int32_t>& sym = *ids;
  const int64_t n = static_cast<int64_t>(sym.size());
  if (n < 2) return;
  // Doubly linked list over positions; a merged-away position gets alive = false.
  std::vector<int64_t> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (int64_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  // (rank, left position, right id): smallest rank first, then leftmost.
  using entry = std::tuple<int32_t, int64_t, int32_t>;
  std::priority_queue<entry, std::vector<entry>, std::greater<entry>> heap;
  auto push_pair = [&](int64_t left) {
    if (left < 0 || next[left] < 0) return;
    if (const merge* m = find(sym[left], sym[next[left]])) heap.emplace(m->rank, left, sym[next[left]]);
  };
  for (int64_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const auto [rank, left, right_id] = heap.top();
    heap.pop();
    if (!alive[left] || next[left] < 0) continue;
    const int64_t right = next[left];
    if (sym[right] != right_id) continue;  // stale: the right neighbour changed since the push
    const merge* m = find(sym[left], right_id);
    if (m == nullptr || m->rank != rank) continue;  // stale: the left symbol changed
    sym[left] = m->result;
    alive[right] = 0;
    next[left] = next[right];
    if (next[left] >= 0) prev[next[left]] = left;
    push_pair(prev[left]);
    push_pair(left);
  }
  int64_t out = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (alive[i]) sym[out++] = sym[i];
  }
  sym.resize(out);
}

}  // namespace sp
