// Block dequantisers (ggml layouts) and the row/tensor entry points. Each block function follows
// ggml-quants.c dequantize_row_* operation by operation (scale products first, then one multiply
// and one add/subtract per element) so that results equal gguf-py's numpy versions; it runs once
// at model load, so the loops are plain scalar code.
#include "shareprefill/dequantize.h"

#include <cstring>

#include "shareprefill/error.h"
#include "shareprefill/tensor.h"

namespace sp {
namespace {

constexpr int qk = 32;     // block size of the legacy quants
constexpr int qk_k = 256;  // block size of the K-quants

float load_fp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

// Q4_0: fp16 d | 16 bytes of nibbles; y = d * (q - 8); low nibbles are elements 0-15.
void block_q4_0(float* y, const uint8_t* b) {
  const float d = load_fp16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < qk / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    y[j + qk / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

// Q4_1: fp16 d | fp16 m | 16 bytes of nibbles; y = d * q + m.
void block_q4_1(float* y, const uint8_t* b) {
  const float d = load_fp16(b);
  const float m = load_fp16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < qk / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + qk / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5_0: fp16 d | u32 high bits | 16 bytes of nibbles; y = d * (q - 16).
void block_q5_0(float* y, const uint8_t* b) {
  const float d = load_fp16(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < qk / 2; ++j) {
    const uint8_t h0 = static_cast<uint8_t>(((qh >> j) << 4) & 0x10);
    const uint8_t h1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(((qs[j] & 0x0f) | h0) - 16) * d;
    y[j + qk / 2] = static_cast<float>(((qs[j] >> 4) | h1) - 16) * d;
  }
}

// Q5_1: fp16 d | fp16 m | u32 high bits | 16 bytes of nibbles; y = d * q + m.
void block_q5_1(float* y, const uint8_t* b) {
  const float d = load_fp16(b);
  const float m = load_fp16(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < qk / 2; ++j) {
    const uint8_t h0 = static_cast<uint8_t>(((qh >> j) << 4) & 0x10);
    const uint8_t h1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>((qs[j] & 0x0f) | h0) * d + m;
    y[j + qk / 2] = static_cast<float>((qs[j] >> 4) | h1) * d + m;
  }
}

// Q8_0: fp16 d | 32 int8; y = q * d.
void block_q8_0(float* y, const uint8_t* b) {
  const float d = load_fp16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < qk; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// 6-bit scale and min number j (0..7) from the 12-byte K-quant scale array.
void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K: fp16 d | fp16 dmin | 12 scale bytes | 128 bytes of nibbles. Eight sub-blocks of 32;
// each 64-element chunk takes the low then the high nibbles of 32 bytes.
void block_q4_k(float* y, const uint8_t* b) {
  const float d = load_fp16(b);
  const float dmin = load_fp16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < qk_k; j += 64, is += 2) {
    uint8_t sc, m;
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
  }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits (qh) before the nibbles; chunk c uses bits 2c, 2c+1.
void block_q5_k(float* y, const uint8_t* b) {
  const float d = load_fp16(b);
  const float dmin = load_fp16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < qk_k; j += 64, is += 2) {
    uint8_t sc, m;
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) {
      *y++ = d1 * static_cast<float>((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    }
    ql += 32;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

// Q6_K: 128 bytes low nibbles | 64 bytes high 2-bit pairs | 16 int8 scales | fp16 d.
void block_q6_k(float* y, const uint8_t* b) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_fp16(b + 208);
  for (int n = 0; n < qk_k; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * static_cast<float>(q1);
      y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
      y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
      y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using block_fn = void (*)(float*, const uint8_t*);

block_fn find_block_fn(ggml_type type) {
  switch (type) {
    case ggml_type::q4_0:
      return block_q4_0;
    case ggml_type::q4_1:
      return block_q4_1;
    case ggml_type::q5_0:
      return block_q5_0;
    case ggml_type::q5_1:
      return block_q5_1;
    case ggml_type::q8_0:
      return block_q8_0;
    case ggml_type::q4_k:
      return block_q4_k;
    case ggml_type::q5_k:
      return block_q5_k;
    case ggml_type::q6_k:
      return block_q6_k;
    default:
      return nullptr;
  }
}

}  // namespace

bool dequantize_supported(ggml_type type) {
  return type == ggml_type::f32 || type == ggml_type::f16 || type == ggml_type::bf16 ||
         find_block_fn(type) != nullptr;
}

void dequantize_row(float* dst, const void* src, ggml_type type, int64_t n) {
  const char* fn = "dequantize_row";
  check(dequantize_supported(type), fn, "unsupported type ", ggml_type_name(type), " (id ",
        static_cast<uint32_t>(type), ")");
  check(n >= 0, fn, "negative element count ", n);
  const int64_t block = ggml_block_size(type);
  check(n % block == 0, fn, "element count ", n, " is not a multiple of the ", ggml_type_name(type),
        " block size ", block);
  if (n == 0) return;
  check(dst != nullptr && src != nullptr, fn, "null pointer");
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (type) {
    case ggml_type::f32:
      std::memcpy(dst, s, static_cast<size_t>(n) * sizeof(float));
      return;
    case ggml_type::f16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_fp16(s + 2 * i);
      return;
    case ggml_type::bf16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = bf16_to_fp32(h);
      }
      return;
    default:
      break;
  }
  const block_fn f = find_block_fn(type);
  const int64_t bytes = ggml_block_bytes(type);
  for (int64_t b = 0; b < n / block; ++b) f(dst + b * block, s + b * bytes);
}

void dequantize_rows(float* dst, const gguf_tensor_info& t, int64_t row_begin, int64_t n_rows) {
  const int64_t rows = t.n_rows();
  check(row_begin >= 0 && n_rows >= 0 && row_begin <= rows && n_rows <= rows - row_begin,
        "dequantize_rows", "rows [", row_begin, ", ", row_begin + n_rows,
        ") out of range for "
        "tensor '",
        t.name, "' with ", rows, " rows");
  check(t.data != nullptr || n_rows == 0, "dequantize_rows", "tensor '", t.name, "' has no data");
  const int64_t row_bytes = ggml_row_bytes(t.type, t.ne[0]);
  for (int64_t r = 0; r < n_rows; ++r) {
    dequantize_row(dst + r * t.ne[0], t.data + (row_begin + r) * row_bytes, t.type, t.ne[0]);
  }
}

void dequantize_tensor(float* dst, int64_t dst_size, const gguf_tensor_info& t) {
  check(dst_size >= t.n_elements, "dequantize_tensor", "destination holds ", dst_size,
        " floats but tensor '", t.name, "' has ", t.n_elements, " elements");
  check(dequantize_supported(t.type), "dequantize_tensor", "tensor '", t.name, "' has type ",
        ggml_type_name(t.type), ", which cannot be dequantised");
  dequantize_rows(dst, t, 0, t.n_rows());
}

std::vector<float> dequantize_tensor(const gguf_tensor_info& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements));
  dequantize_tensor(out.data(), t.n_elements, t);
  return out;
}

}  // namespace sp
