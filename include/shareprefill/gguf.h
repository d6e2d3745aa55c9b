// GGUF (v2/v3, little-endian) model-file reader: header, typed metadata, tensor table and the
// tensor data, memory-mapped read-only. Every structural problem of a file (bad magic, version,
// truncation, absurd counts, out-of-range tensor data, unknown types) is an sp::error whose
// message names the problem and the key or tensor; counts are checked against the bytes left
// before anything is allocated, so memory use stays proportional to the file size. Tensor
// element types follow ggml (ggml_type); the dequantisers live in dequantize.h. Shapes are in
// ggml order: ne[0] is the contiguous (row) dimension. Typical use:
//   sp::gguf_file f(path);
//   const auto& tokens = f.get_string_array("tokenizer.ggml.tokens");
//   std::vector<float> w = sp::dequantize_tensor(f.tensor("blk.0.attn_q.weight"));
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace sp {

// ggml tensor element types (ids as stored in GGUF files). Ids not listed are unknown.
enum class ggml_type : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
  mxfp4 = 39,
};

// True for the ids listed in ggml_type.
bool ggml_type_is_known(uint32_t id);
// "Q4_K" etc.; "unknown" for ids that are not known.
const char* ggml_type_name(ggml_type t);
// Elements per block (1 for plain types, 32 or 256 for quantised ones) and bytes per block.
int64_t ggml_block_size(ggml_type t);
int64_t ggml_block_bytes(ggml_type t);
// Bytes taken by n consecutive elements; n must be a multiple of the block size.
int64_t ggml_row_bytes(ggml_type t, int64_t n);

// GGUF metadata value types (ids as stored in the file).
enum class gguf_type : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
const char* gguf_type_name(gguf_type t);

// One metadata key/value. Scalars: integers in `i` (signed types) or `u` (unsigned types and
// bool), floats in `f`, strings in `s`. Arrays: `array_type` is the element type; strings go to
// `strings`, numbers and bools stay as their little-endian bytes in `raw` (array_size elements).
struct gguf_kv {
  std::string key;
  gguf_type type = gguf_type::u8;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0.0;
  std::string s;
  gguf_type array_type = gguf_type::u8;
  int64_t array_size = 0;
  std::vector<std::string> strings;
  std::vector<uint8_t> raw;
};

constexpr int gguf_max_dims = 4;

struct gguf_tensor_info {
  std::string name;
  int n_dims = 0;
  int64_t ne[gguf_max_dims] = {1, 1, 1, 1};  // ggml order: ne[0] = row length
  ggml_type type = ggml_type::f32;
  uint64_t offset = 0;  // from the start of the data section (aligned)
  int64_t n_elements = 0;
  int64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping; valid while the gguf_file lives
  int64_t n_rows() const { return ne[0] == 0 ? 0 : n_elements / ne[0]; }
};

// An opened GGUF file. Non-copyable (it owns the mapping); movable.
class gguf_file {
 public:
  // Maps the file at `path` read-only and parses it; throws sp::error naming the path.
  explicit gguf_file(const std::string& path);
  // Parses `size` bytes at `data` without copying them: the caller keeps them alive.
  static gguf_file from_memory(const void* data, size_t size);

  gguf_file(gguf_file&& other) noexcept;
  gguf_file& operator=(gguf_file&& other) noexcept;
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;
  ~gguf_file();

  uint32_t version() const { return version_; }
  int64_t alignment() const { return alignment_; }
  int64_t file_size() const { return static_cast<int64_t>(size_); }
  int64_t data_offset() const { return data_offset_; }  // start of the tensor data section
  const std::string& path() const { return path_; }

  // ---- metadata ----
  const std::vector<gguf_kv>& metadata() const { return kvs_; }
  const gguf_kv* find(const std::string& key) const;  // nullptr when absent
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed getters: throw sp::error "[gguf_file::get_*] key 'k' ..." when the key is missing or
  // has another type. get_int accepts every integer type (the value must fit in int64);
  // get_float accepts f32 and f64.
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  // Same, returning `fallback` when the key is absent (a present key of a wrong type still throws).
  int64_t get_int_or(const std::string& key, int64_t fallback) const;
  double get_float_or(const std::string& key, double fallback) const;
  bool get_bool_or(const std::string& key, bool fallback) const;
  std::string get_string_or(const std::string& key, const std::string& fallback) const;
  // Array getters; get_int32_array/get_int_array accept arrays of every integer type (values
  // must fit), get_float_array accepts f32 and f64 arrays.
  const std::vector<std::string>& get_string_array(const std::string& key) const;
  std::vector<int32_t> get_int32_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  // Element type and length of an array key (throws when missing or not an array).
  gguf_type array_type(const std::string& key) const;
  int64_t array_size(const std::string& key) const;

  // ---- tensors ----
  const std::vector<gguf_tensor_info>& tensors() const { return tensors_; }
  const gguf_tensor_info* find_tensor(const std::string& name) const;  // nullptr when absent
  const gguf_tensor_info& tensor(const std::string& name) const;       // throws when absent

 private:
  gguf_file() = default;
  void parse();
  void check_data_ranges_disjoint() const;  // throws when two tensors share data bytes
  const gguf_kv& require(const std::string& key, const char* fn) const;
  void release() noexcept;

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;  // non-null when we own an mmap of map_size_ bytes
  size_t map_size_ = 0;
  uint32_t version_ = 0;
  int64_t alignment_ = 32;
  int64_t data_offset_ = 0;
  std::vector<gguf_kv> kvs_;
  std::vector<gguf_tensor_info> tensors_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace sp
