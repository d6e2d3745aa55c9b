// Dequantisation of ggml tensor data to fp32: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q4_K, Q5_K and Q6_K, bit-compatible with ggml's reference dequantize_row_* (same operation
// order, so results match gguf-py's numpy dequantisers exactly unless the compiler fuses a
// multiply-add). Rows are runs of whole blocks; a tensor of ne = [ne0, ne1, ...] has
// n_rows = ne1*ne2*ne3 rows of ne0 elements, stored back to back.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/gguf.h"

namespace sp {

// True for the types listed above.
bool dequantize_supported(ggml_type type);

// dst: [n] fp32; src: ggml_row_bytes(type, n) bytes of `type` data.
// n must be a multiple of the type's block size; throws for unsupported types.
void dequantize_row(float* dst, const void* src, ggml_type type, int64_t n);

// dst: [n_rows, t.ne[0]] fp32: rows [row_begin, row_begin + n_rows) of tensor t.
void dequantize_rows(float* dst, const gguf_tensor_info& t, int64_t row_begin, int64_t n_rows);

// dst: [t.n_elements] fp32; dst_size (elements) must be at least t.n_elements.
void dequantize_tensor(float* dst, int64_t dst_size, const gguf_tensor_info& t);

// Convenience: the whole tensor as a new fp32 vector.
std::vector<float> dequantize_tensor(const gguf_tensor_info& t);

}  // namespace sp
