// Static tables of the GGUF/ggml type system: element-type names and block geometry (elements
// and bytes per block, as in ggml's type_traits and gguf-py's GGML_QUANT_SIZES), metadata
// value-type names, and the byte size of a run of elements.
#include <limits>

#include "shareprefill/error.h"
#include "shareprefill/gguf.h"

namespace sp {
namespace {

struct type_traits {
  ggml_type type;
  const char* name;
  int64_t block_size;
  int64_t block_bytes;
};

constexpr int64_t qk_k = 256;

constexpr type_traits type_table[] = {
    {ggml_type::f32, "F32", 1, 4},
    {ggml_type::f16, "F16", 1, 2},
    {ggml_type::q4_0, "Q4_0", 32, 2 + 16},
    {ggml_type::q4_1, "Q4_1", 32, 2 + 2 + 16},
    {ggml_type::q5_0, "Q5_0", 32, 2 + 4 + 16},
    {ggml_type::q5_1, "Q5_1", 32, 2 + 2 + 4 + 16},
    {ggml_type::q8_0, "Q8_0", 32, 2 + 32},
    {ggml_type::q8_1, "Q8_1", 32, 4 + 4 + 32},
    {ggml_type::q2_k, "Q2_K", qk_k, 2 + 2 + qk_k / 16 + qk_k / 4},
    {ggml_type::q3_k, "Q3_K", qk_k, 2 + qk_k / 4 + qk_k / 8 + 12},
    {ggml_type::q4_k, "Q4_K", qk_k, 2 + 2 + qk_k / 2 + 12},
    {ggml_type::q5_k, "Q5_K", qk_k, 2 + 2 + qk_k / 2 + qk_k / 8 + 12},
    {ggml_type::q6_k, "Q6_K", qk_k, 2 + qk_k / 2 + qk_k / 4 + qk_k / 16},
    {ggml_type::q8_k, "Q8_K", qk_k, 4 + qk_k + qk_k / 8},
    {ggml_type::iq2_xxs, "IQ2_XXS", qk_k, 2 + qk_k / 4},
    {ggml_type::iq2_xs, "IQ2_XS", qk_k, 2 + qk_k / 4 + qk_k / 32},
    {ggml_type::iq3_xxs, "IQ3_XXS", qk_k, 2 + qk_k / 4 + qk_k / 8},
    {ggml_type::iq1_s, "IQ1_S", qk_k, 2 + qk_k / 8 + qk_k / 16},
    {ggml_type::iq4_nl, "IQ4_NL", 32, 2 + 16},
    {ggml_type::iq3_s, "IQ3_S", qk_k, 2 + qk_k / 4 + qk_k / 8 + qk_k / 32 + 4},
    {ggml_type::iq2_s, "IQ2_S", qk_k, 2 + qk_k / 4 + qk_k / 16},
    {ggml_type::iq4_xs, "IQ4_XS", qk_k, 2 + 2 + qk_k / 2 + qk_k / 64},
    {ggml_type::i8, "I8", 1, 1},
    {ggml_type::i16, "I16", 1, 2},
    {ggml_type::i32, "I32", 1, 4},
    {ggml_type::i64, "I64", 1, 8},
    {ggml_type::f64, "F64", 1, 8},
    {ggml_type::iq1_m, "IQ1_M", qk_k, qk_k / 8 + qk_k / 16 + qk_k / 32},
    {ggml_type::bf16, "BF16", 1, 2},
    {ggml_type::tq1_0, "TQ1_0", qk_k, 2 + 4 * 13},
    {ggml_type::tq2_0, "TQ2_0", qk_k, 2 + 64},
    {ggml_type::mxfp4, "MXFP4", 32, 1 + 16},
};

const type_traits* find_traits(uint32_t id) {
  for (const type_traits& t : type_table) {
    if (static_cast<uint32_t>(t.type) == id) return &t;
  }
  return nullptr;
}

const type_traits& require_traits(ggml_type t, const char* fn) {
  const type_traits* traits = find_traits(static_cast<uint32_t>(t));
  if (!traits) fail(fn, "unknown ggml type id ", static_cast<uint32_t>(t));
  return *traits;
}

}  // namespace

bool ggml_type_is_known(uint32_t id) {
  return find_traits(id) != nullptr;
}

const char* ggml_type_name(ggml_type t) {
  const type_traits* traits = find_traits(static_cast<uint32_t>(t));
  return traits ? traits->name : "unknown";
}

int64_t ggml_block_size(ggml_type t) {
  return require_traits(t, "ggml_block_size").block_size;
}

int64_t ggml_block_bytes(ggml_type t) {
  return require_traits(t, "ggml_block_bytes").block_bytes;
}

int64_t ggml_row_bytes(ggml_type t, int64_t n) {
  const type_traits& traits = require_traits(t, "ggml_row_bytes");
  check(n >= 0, "ggml_row_bytes", "negative element count ", n);
  check(n % traits.block_size == 0, "ggml_row_bytes", "element count ", n,
        " is not a multiple of the ", traits.name, " block size ", traits.block_size);
  const int64_t blocks = n / traits.block_size;
  check(blocks <= std::numeric_limits<int64_t>::max() / traits.block_bytes, "ggml_row_bytes",
        "byte size of ", n, " ", traits.name, " elements overflows int64");
  return blocks * traits.block_bytes;
}

const char* gguf_type_name(gguf_type t) {
  switch (t) {
    case gguf_type::u8:
      return "uint8";
    case gguf_type::i8:
      return "int8";
    case gguf_type::u16:
      return "uint16";
    case gguf_type::i16:
      return "int16";
    case gguf_type::u32:
      return "uint32";
    case gguf_type::i32:
      return "int32";
    case gguf_type::f32:
      return "float32";
    case gguf_type::boolean:
      return "bool";
    case gguf_type::string:
      return "string";
    case gguf_type::array:
      return "array";
    case gguf_type::u64:
      return "uint64";
    case gguf_type::i64:
      return "int64";
    case gguf_type::f64:
      return "float64";
  }
  return "unknown";
}

}  // namespace sp
