// Device buffers for the model-op tests (tests/cuda/test_model_*.cpp): poisoned arrays with
// guard bytes, uploads and checked downloads, bf16 conversions, the tolerance units, and the
// RoPE launch parameters two test files fill alike.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "model/rope.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_model_ops.h"
#include "test_util.h"

namespace sp::device_test {

constexpr double bf16_u = 1.0 / 256;         // unit roundoff of bf16 (8-bit significand)
constexpr double fp32_u = 1.0 / 16777216.0;  // 2^-24
constexpr size_t guard_bytes = 256;
constexpr uint8_t poison = 0xff;  // NaN as bf16 and as fp32

#define SP_SKIP_WITHOUT_DEVICE() \
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device"

// A device array of `count` values followed by poisoned guard bytes.
template <class T>
struct device_array {
  device_buffer buffer;
  size_t count = 0;
  T* data() const { return static_cast<T*>(buffer.data()); }
};

template <class T>
inline device_array<T> poisoned(size_t count) {
  device_array<T> a{device_buffer(count * sizeof(T) + guard_bytes), count};
  a.buffer.fill_bytes(poison);
  return a;
}

template <class T>
inline device_array<T> upload(const std::vector<T>& values) {
  device_array<T> a = poisoned<T>(values.size());
  a.buffer.upload(values.data(), values.size() * sizeof(T));
  return a;
}

// Downloads the values after a synchronisation; fails the test if a guard byte changed.
template <class T>
inline std::vector<T> fetch(const device_array<T>& a, const std::string& what) {
  cuda_synchronize();
  std::vector<uint8_t> raw(a.buffer.size());
  a.buffer.download(raw.data(), raw.size());
  const size_t payload = a.count * sizeof(T);
  for (size_t i = payload; i < raw.size(); ++i)
    if (raw[i] != poison) {
      ADD_FAILURE() << what << ": guard byte " << i - payload << " past the end overwritten";
      break;
    }
  std::vector<T> out(a.count);
  std::memcpy(out.data(), raw.data(), payload);
  return out;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = fp32_to_bf16(x[i]);
  return out;
}

inline std::vector<float> from_bf16(const std::vector<uint16_t>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = bf16_to_fp32(x[i]);
  return out;
}

// Random values already representable in bf16, so host and device start from the same numbers.
inline std::vector<float> random_bf16_values(int64_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v = testing::random_values(n, seed, lo, hi);
  for (float& x : v) x = round_to_bf16(x);
  return v;
}

// |got - ref| <= tol, false for NaN.
inline bool within(double got, double ref, double tol) { return std::fabs(got - ref) <= tol; }

// RoPE launch parameters over n token rows of `qk` (stride elements apart), each [heads, D] q
// then [kv_heads, D] k, positions from first_pos: their cos and sin computed into `angles`
// (cuda_rope_angles), which the launch reads.
inline cuda_rope_params rope_launch(int64_t n, int64_t D, int64_t first_pos, uint16_t* qk,
                                    int64_t stride, int64_t heads, int64_t kv_heads,
                                    const rope_table& table, device_array<float>& angles) {
  cuda_rope_params p;
  p.n = n;
  p.head_dim = D;
  p.q = qk;
  p.q_token_stride = stride;
  p.heads = heads;
  p.k = qk + heads * D;
  p.k_token_stride = stride;
  p.kv_heads = kv_heads;
  p.pairs = static_cast<int64_t>(table.inv_freq.size());
  angles = poisoned<float>(static_cast<size_t>(n * p.pairs * 2));
  cuda_rope_angles(angles.data(), first_pos, n, table.inv_freq.data(), p.pairs,
                   table.attention_factor, nullptr);
  p.cos_sin = angles.data();
  return p;
}

}  // namespace sp::device_test
