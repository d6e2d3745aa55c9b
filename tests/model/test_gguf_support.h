// Helpers shared by the GGUF tests: locating the committed golden data and the cached model
// file, and gguf_builder, which writes GGUF bytes in memory (v2/v3 layout) so tests can build
// small valid files and then corrupt them on purpose. Builder tensors carry raw bytes and a raw
// type id, and may override their data offset, so malformed tables are as easy to make.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shareprefill/gguf.h"

namespace sp_test {

inline const std::string& data_dir() {
  static const std::string dir = std::string(SP_SOURCE_DIR) + "/tests/data/";
  return dir;
}

// tests/data/gguf_golden.json, written by scripts/make_gguf_golden.py.
inline const nlohmann::json& golden() {
  static const nlohmann::json g = [] {
    std::ifstream in(data_dir() + "gguf_golden.json");
    EXPECT_TRUE(in.good()) << "missing tests/data/gguf_golden.json";
    nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j.at("format"), "shareprefill.gguf_golden/1")
        << "re-generate with scripts/make_gguf_golden.py";
    return j;
  }();
  return g;
}

// $SP_CACHE (default ~/.cache/shareprefill)/SmolLM2-135M-Instruct.Q4_1.gguf
inline std::string model_path() {
  const char* cache = std::getenv("SP_CACHE");
  const char* home = std::getenv("HOME");
  const std::string dir = cache ? cache : std::string(home ? home : "") + "/.cache/shareprefill";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

inline bool is_quantised(sp::ggml_type t) {
  return t != sp::ggml_type::f32 && t != sp::ggml_type::f16 && t != sp::ggml_type::bf16;
}

// Tolerance for one row. F32/F16/BF16 are plain conversions: exact. Quantised values are
// d*q (+ or -) m with the scale products done first, in fp32, in the same order as gguf-py, so
// they are bit-identical unless the compiler fuses the multiply-add into an FMA (clang does by
// default), which skips one rounding of the product d*q. Since m = -value at q = 0, |m| <= max
// and |d*q| <= |value| + |m| <= 2*max over the row, so the difference is at most
// 0.5 ulp(2*max) <= 2^-23 * max.
inline float row_tolerance(sp::ggml_type t, const std::vector<float>& expected) {
  if (!is_quantised(t)) return 0.0f;
  float max_abs = 0.0f;
  for (float v : expected) max_abs = std::max(max_abs, std::fabs(v));
  return std::ldexp(max_abs, -23);
}

inline void expect_values(const std::vector<float>& got, const std::vector<float>& want, float tol,
                          const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    if (tol == 0.0f) {
      ASSERT_EQ(got[i], want[i]) << what << " element " << i;
    } else {
      ASSERT_NEAR(got[i], want[i], tol) << what << " element " << i;
    }
  }
}

inline bool file_exists(const std::string& p) {
  return std::ifstream(p).good();
}

inline std::vector<uint8_t> read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void put_bytes(std::vector<uint8_t>& b, const void* p, size_t n) {
  const uint8_t* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
}
template <class T>
void put(std::vector<uint8_t>& b, T v) {
  put_bytes(b, &v, sizeof(T));
}
inline void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  put_bytes(b, s.data(), s.size());
}

struct gguf_builder {
  struct tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::vector<uint8_t> data;
    bool has_offset = false;
    uint64_t offset = 0;
  };

  uint32_t version = 3;
  uint64_t alignment = 32;
  uint64_t n_kv = 0;
  std::vector<uint8_t> kv;  // encoded key/value pairs
  std::vector<tensor> tensors;
  size_t header_end = 0;  // set by build(): end of the tensor table
  size_t data_start = 0;  // set by build(): start of the aligned data section

  void key(const std::string& k, uint32_t type) {
    put_str(kv, k);
    put<uint32_t>(kv, type);
    ++n_kv;
  }
  void add_u32(const std::string& k, uint32_t v) {
    key(k, 4);
    put(kv, v);
  }
  void add_i32(const std::string& k, int32_t v) {
    key(k, 5);
    put(kv, v);
  }
  void add_f32(const std::string& k, float v) {
    key(k, 6);
    put(kv, v);
  }
  void add_bool(const std::string& k, bool v) {
    key(k, 7);
    put<uint8_t>(kv, v ? 1 : 0);
  }
  void add_string(const std::string& k, const std::string& v) {
    key(k, 8);
    put_str(kv, v);
  }
  void add_string_array(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    put<uint32_t>(kv, 8);
    put<uint64_t>(kv, v.size());
    for (const std::string& s : v) put_str(kv, s);
  }
  void add_i32_array(const std::string& k, const std::vector<int32_t>& v) {
    key(k, 9);
    put<uint32_t>(kv, 5);
    put<uint64_t>(kv, v.size());
    for (int32_t x : v) put(kv, x);
  }
  // An F32 tensor of the given ggml shape filled with `value`.
  void add_f32_tensor(const std::string& name, std::vector<uint64_t> ne, float value = 0.5f) {
    uint64_t n = 1;
    for (uint64_t d : ne) n *= d;
    std::vector<uint8_t> data;
    for (uint64_t i = 0; i < n; ++i) put(data, value);
    tensors.push_back({name, std::move(ne), 0, std::move(data)});
  }

  std::vector<uint8_t> build() {
    std::vector<uint8_t> b;
    put_bytes(b, "GGUF", 4);
    put<uint32_t>(b, version);
    put<uint64_t>(b, tensors.size());
    put<uint64_t>(b, n_kv);
    put_bytes(b, kv.data(), kv.size());
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const tensor& t : tensors) {
      put_str(b, t.name);
      put<uint32_t>(b, static_cast<uint32_t>(t.ne.size()));
      for (uint64_t d : t.ne) put<uint64_t>(b, d);
      put<uint32_t>(b, t.type);
      const uint64_t off = t.has_offset ? t.offset : offset;
      put<uint64_t>(b, off);
      offsets.push_back(off);
      if (!t.has_offset) offset = (offset + t.data.size() + alignment - 1) / alignment * alignment;
    }
    header_end = b.size();
    b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    data_start = b.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].has_offset) continue;
      if (b.size() < data_start + offsets[i]) b.resize(data_start + offsets[i], 0);
      put_bytes(b, tensors[i].data.data(), tensors[i].data.size());
    }
    return b;
  }
};

}  // namespace sp_test
