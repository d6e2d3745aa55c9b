// Dequantisers on hand-built blocks whose values are computed here by hand (independent of
// gguf-py and of ggml's code): nibble order, offsets, mins, the 6-bit K-quant scale packing and
// the Q6_K scale layout; plus byte sizes, special fp16 values, guard values after outputs and
// the argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"
#include "shareprefill/tensor.h"

namespace {

using sp::ggml_type;

void put_fp16(uint8_t* p, float v) {
  const uint16_t h = sp::fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Dequantises one block of `type` into n floats followed by a guard value that must survive.
std::vector<float> run_block(const std::vector<uint8_t>& block, ggml_type type) {
  const int64_t n = sp::ggml_block_size(type);
  EXPECT_EQ(static_cast<int64_t>(block.size()), sp::ggml_block_bytes(type));
  std::vector<float> out(static_cast<size_t>(n) + 1, 12345.0f);
  sp::dequantize_row(out.data(), block.data(), type, n);
  EXPECT_EQ(out.back(), 12345.0f) << "wrote past the end";
  out.pop_back();
  return out;
}

TEST(dequantize, byte_sizes) {
  EXPECT_EQ(sp::ggml_row_bytes(ggml_type::q4_1, 576), 18 * 20);
  EXPECT_EQ(sp::ggml_row_bytes(ggml_type::q8_0, 64), 68);
  EXPECT_EQ(sp::ggml_row_bytes(ggml_type::q4_k, 512), 288);
  EXPECT_EQ(sp::ggml_row_bytes(ggml_type::q6_k, 256), 210);
  EXPECT_EQ(sp::ggml_row_bytes(ggml_type::f32, 3), 12);
  EXPECT_EQ(sp::ggml_row_bytes(ggml_type::bf16, 3), 6);
  EXPECT_THROW(sp::ggml_row_bytes(ggml_type::q4_0, 33), sp::error);
  EXPECT_THROW(sp::ggml_row_bytes(static_cast<ggml_type>(5), 32), sp::error);
  EXPECT_THROW(sp::ggml_row_bytes(ggml_type::f64, std::numeric_limits<int64_t>::max()), sp::error);
  EXPECT_FALSE(sp::ggml_type_is_known(4));
  EXPECT_STREQ(sp::ggml_type_name(ggml_type::q5_k), "Q5_K");
  EXPECT_STREQ(sp::ggml_type_name(static_cast<ggml_type>(1000)), "unknown");
}

TEST(dequantize, q4_0_and_q4_1_nibble_order) {
  std::vector<uint8_t> b(18);
  put_fp16(b.data(), 0.5f);
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  std::vector<float> y = run_block(b, ggml_type::q4_0);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f) << j;
  }
  std::vector<uint8_t> c(20);
  put_fp16(c.data(), 0.25f);
  put_fp16(c.data() + 2, -1.0f);
  for (int j = 0; j < 16; ++j) c[4 + j] = b[2 + j];
  y = run_block(c, ggml_type::q4_1);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.0f) << j;
    EXPECT_EQ(y[j + 16], (15 - j) * 0.25f - 1.0f) << j;
  }
}

TEST(dequantize, q5_high_bits) {
  std::vector<uint8_t> b(22);
  put_fp16(b.data(), 1.0f);
  const uint32_t qh = 0x80000001u;  // high bit of element 0 and of element 31
  std::memcpy(b.data() + 2, &qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = 0x33;  // every nibble 3
  std::vector<float> y = run_block(b, ggml_type::q5_0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j == 0 || j == 31) ? 3.0f : 3.0f - 16.0f) << j;
  std::vector<uint8_t> c(24);
  put_fp16(c.data(), 2.0f);
  put_fp16(c.data() + 2, 0.5f);
  std::memcpy(c.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j) c[8 + j] = 0x33;
  y = run_block(c, ggml_type::q5_1);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j == 0 || j == 31) ? 38.5f : 6.5f) << j;
}

TEST(dequantize, q8_0_signed_values) {
  std::vector<uint8_t> b(34);
  put_fp16(b.data(), 0.125f);
  const int8_t q[4] = {-128, -1, 0, 127};
  for (int j = 0; j < 32; ++j) std::memcpy(&b[2 + j], &q[j % 4], 1);
  const std::vector<float> y = run_block(b, ggml_type::q8_0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], q[j % 4] * 0.125f) << j;
}

// Packs eight 6-bit scales and mins the way ggml's Q4_K/Q5_K do.
void pack_k4_scales(uint8_t* q, const int* sc, const int* m) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
  }
}

TEST(dequantize, q4_k_and_q5_k_scale_packing) {
  const int sc[8] = {1, 2, 3, 63, 40, 50, 17, 63};
  const int m[8] = {5, 6, 0, 8, 33, 34, 63, 36};
  std::vector<uint8_t> b(144);
  put_fp16(b.data(), 0.5f);
  put_fp16(b.data() + 2, 0.25f);
  pack_k4_scales(b.data() + 4, sc, m);
  for (int l = 0; l < 128; ++l) b[16 + l] = 0x21;  // low nibble 1, high nibble 2
  std::vector<float> y = run_block(b, ggml_type::q4_k);
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;  // sub-block: even ones read low nibbles, odd ones high nibbles
    const float q = s % 2 == 0 ? 1.0f : 2.0f;
    EXPECT_EQ(y[e], 0.5f * sc[s] * q - 0.25f * m[s]) << e;
  }
  std::vector<uint8_t> c(176);
  std::memcpy(c.data(), b.data(), 16);
  for (int l = 0; l < 32; ++l) c[16 + l] = static_cast<uint8_t>(l % 2 == 0 ? 0x55 : 0xaa);
  for (int l = 0; l < 128; ++l) c[48 + l] = 0x21;
  y = run_block(c, ggml_type::q5_k);
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32, l = e % 32;
    const int bit = ((l % 2 == 0 ? 0x55 : 0xaa) >> s) & 1;  // sub-block s reads bit s of qh[l]
    const float q = (s % 2 == 0 ? 1.0f : 2.0f) + 16.0f * bit;
    EXPECT_EQ(y[e], 0.5f * sc[s] * q - 0.25f * m[s]) << e;
  }
}

TEST(dequantize, q6_k_layout) {
  std::vector<uint8_t> b(210, 0);  // ql = qh = 0: every q is -32
  for (int i = 0; i < 16; ++i) b[192 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 8));
  put_fp16(b.data() + 208, 0.5f);
  b[0] = 0x0f;    // element 0: low nibble 15
  b[128] = 0x02;  // element 0: high bits 2 -> q = 15 + 32 - 32 = 15
  const std::vector<float> y = run_block(b, ggml_type::q6_k);
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, l = e % 32, k = (e % 128) / 32;
    const int scale = half * 8 + l / 16 + 2 * k - 8;
    const float q = e == 0 ? 15.0f : -32.0f;
    EXPECT_EQ(y[e], 0.5f * scale * q) << e;
  }
}

TEST(dequantize, float_types_are_exact_conversions) {
  const uint16_t h[5] = {0x7c00, 0xfc00, 0x0001, 0x3c00,
                         0x7e00};  // inf, -inf, min subnormal, 1, nan
  std::vector<float> y(6, 7.0f);
  sp::dequantize_row(y.data(), h, ggml_type::f16, 5);
  EXPECT_EQ(y[0], std::numeric_limits<float>::infinity());
  EXPECT_EQ(y[1], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(y[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(y[3], 1.0f);
  EXPECT_TRUE(std::isnan(y[4]));
  EXPECT_EQ(y[5], 7.0f);
  const uint16_t bf[2] = {0x3f80, 0xc040};  // 1, -3
  sp::dequantize_row(y.data(), bf, ggml_type::bf16, 2);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -3.0f);
  const float f[3] = {1.5f, -0.0f, 3e-39f};
  sp::dequantize_row(y.data(), f, ggml_type::f32, 3);
  EXPECT_EQ(std::memcmp(y.data(), f, sizeof(f)), 0);
}

TEST(dequantize, argument_errors) {
  std::vector<float> y(256);
  std::vector<uint8_t> b(256, 0);
  auto message = [&](auto&& call) {
    try {
      call();
    } catch (const sp::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([&] { sp::dequantize_row(y.data(), b.data(), ggml_type::q2_k, 256); }),
            "[dequantize_row] unsupported type Q2_K (id 10)");
  EXPECT_EQ(message([&] { sp::dequantize_row(y.data(), b.data(), ggml_type::q8_0, 48); }),
            "[dequantize_row] element count 48 is not a multiple of the Q8_0 block size 32");
  EXPECT_THROW(sp::dequantize_row(nullptr, b.data(), ggml_type::f32, 4), sp::error);
  sp::dequantize_row(nullptr, nullptr, ggml_type::q4_k, 0);  // empty rows are fine

  sp::gguf_tensor_info t;
  t.name = "w";
  t.n_dims = 2;
  t.ne[0] = 4;
  t.ne[1] = 3;
  t.n_elements = 12;
  t.n_bytes = 48;
  const std::vector<float> data = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  t.data = reinterpret_cast<const uint8_t*>(data.data());
  sp::dequantize_rows(y.data(), t, 1, 2);
  EXPECT_EQ(std::vector<float>(y.begin(), y.begin() + 8),
            std::vector<float>(data.begin() + 4, data.end()));
  EXPECT_EQ(message([&] { sp::dequantize_rows(y.data(), t, 2, 2); }),
            "[dequantize_rows] rows [2, 4) out of range for tensor 'w' with 3 rows");
  EXPECT_EQ(message([&] { sp::dequantize_tensor(y.data(), 11, t); }),
            "[dequantize_tensor] destination holds 11 floats but tensor 'w' has 12 elements");
}

}  // namespace
