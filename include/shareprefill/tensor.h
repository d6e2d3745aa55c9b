// Non-owning tensor view (pointer, dtype, 64-bit shape and strides in elements) and the
// bf16/fp16 <-> fp32 conversions. Layout convention of the project: activations are rows of
// [N, H, D] (token-major; query head h of a GQA model reads KV head h / (H / Hkv)).
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

namespace sp {

enum class dtype : uint8_t { f32, f16, bf16 };

size_t dtype_size(dtype t);
const char* dtype_name(dtype t);

// Round-to-nearest-even fp32 -> bf16; NaN stays NaN.
inline uint16_t fp32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_fp32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t fp32_to_fp16(float f);  // IEEE binary16, round-to-nearest-even, saturates to inf
float fp16_to_fp32(uint16_t h);

// Rounds through bf16 and back: the value a bf16 tensor would hold.
inline float round_to_bf16(float f) { return bf16_to_fp32(fp32_to_bf16(f)); }

constexpr int max_rank = 4;

struct tensor_view {
  void* data = nullptr;
  dtype type = dtype::f32;
  int rank = 0;
  int64_t shape[max_rank] = {0, 0, 0, 0};
  int64_t stride[max_rank] = {0, 0, 0, 0};  // in elements
  bool on_device = false;

  // Row-major contiguous view over `data` with the given shape.
  static tensor_view contiguous(void* data, dtype type, std::initializer_list<int64_t> shape);
  static tensor_view contiguous(const void* data, dtype type,
                                std::initializer_list<int64_t> shape) {
    return contiguous(const_cast<void*>(data), type, shape);
  }

  int64_t numel() const;
  bool is_contiguous() const;
  bool empty() const { return data == nullptr; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// Reads element `i` (flat, contiguous views only) of an f32/f16/bf16 view as fp32.
float load_as_fp32(const tensor_view& t, int64_t i);

// Copies a contiguous view of any dtype to fp32 (dst: [numel]).
void convert_to_fp32(float* dst, const tensor_view& src);

// Returns the flat index of the first NaN/Inf element of a contiguous view, or -1.
int64_t find_non_finite(const tensor_view& t);

// An owning fp32 buffer with its view, for tests, tools and benchmarks.
struct fp32_tensor {
  std::vector<float> values;
  tensor_view view;
  explicit fp32_tensor(std::initializer_list<int64_t> shape);
};

}  // namespace sp
