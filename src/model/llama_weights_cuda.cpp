// Llama weights on the device in bf16 (norm weights f32): from the GGUF through the device
// dequantiser (raw tensor bytes uploaded to a staging buffer, dequantised in place into their
// slot of the fused matrices), or from the CPU model's fp32 weights. Q, K and V share one
// [(H + 2 Hkv) D, dim] matrix and gate and up one [2 F, dim] matrix, so a layer runs two GEMMs
// where the CPU runs five.
#include <algorithm>

#include "shareprefill/cuda_llama.h"
#include "shareprefill/cuda_model_ops.h"
#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"

namespace sp {
namespace {

device_buffer bf16_buffer(int64_t elements) {
  return device_buffer(static_cast<size_t>(elements) * sizeof(uint16_t));
}

// Writes tensor t (expected `elements` values) as bf16 at element `offset` of dst.
void load_bf16(device_buffer& dst, int64_t offset, const gguf_tensor_info& t, int64_t elements,
               device_buffer& staging) {
  const char* fn = "cuda_llama_weights_load";
  check(t.n_elements == elements, fn, "tensor '", t.name, "' has ", t.n_elements,
        " elements, expected ", elements);
  uint16_t* out = static_cast<uint16_t*>(dst.data()) + offset;
  if (cuda_dequantize_supported(t.type)) {
    // The synchronous upload waits for the previous dequantisation reading the staging buffer.
    staging.upload(t.data, static_cast<size_t>(t.n_bytes));
    cuda_dequantize_to_bf16(out, staging.data(), t.type, t.n_elements, nullptr);
    return;
  }
  const std::vector<float> values = dequantize_tensor(t);
  std::vector<uint16_t> bits(values.size());
  std::transform(values.begin(), values.end(), bits.begin(), fp32_to_bf16);
  dst.upload(bits.data(), bits.size() * sizeof(uint16_t), static_cast<size_t>(offset) * sizeof(uint16_t));
}

device_buffer load_f32(const gguf_tensor_info& t, int64_t elements) {
  check(t.n_elements == elements, "cuda_llama_weights_load", "tensor '", t.name, "' has ",
        t.n_elements, " elements, expected ", elements);
  const std::vector<float> values = dequantize_tensor(t);
  device_buffer b(values.size() * sizeof(float));
  b.upload(values.data(), b.size());
  return b;
}

device_buffer upload_f32(const std::vector<float>& values) {
  device_buffer b(values.size() * sizeof(float));
  b.upload(values.data(), b.size());
  return b;
}

// Uploads host fp32 matrices, rounded to bf16, one after the other into one buffer.
device_buffer upload_bf16(std::initializer_list<const std::vector<float>*> parts) {
  int64_t total = 0;
  for (const auto* p : parts) total += static_cast<int64_t>(p->size());
  device_buffer b = bf16_buffer(total);
  size_t offset = 0;
  for (const auto* p : parts) {
    std::vector<uint16_t> bits(p->size());
    std::transform(p->begin(), p->end(), bits.begin(), fp32_to_bf16);
    b.upload(bits.data(), bits.size() * sizeof(uint16_t), offset);
    offset += bits.size() * sizeof(uint16_t);
  }
  return b;
}

}  // namespace

size_t cuda_llama_weights::bytes() const {
  size_t total = token_embd.size() + output_norm.size() + output.size();
  for (const cuda_llama_layer& L : layers)
    total += L.attn_norm.size() + L.wqkv.size() + L.wo.size() + L.ffn_norm.size() +
             L.w_gate_up.size() + L.w_down.size();
  return total;
}

cuda_llama_weights cuda_llama_weights_load(const std::string& gguf_path) {
  const gguf_file file(gguf_path);
  cuda_llama_weights w;
  w.config = read_llama_config(file);
  const llama_config& c = w.config;
  const int64_t dim = c.dim, qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim,
                F = c.ffn_dim;
  int64_t staging_bytes = 0;
  for (const gguf_tensor_info& t : file.tensors()) staging_bytes = std::max(staging_bytes, t.n_bytes);
  device_buffer staging(static_cast<size_t>(staging_bytes));
  w.token_embd = bf16_buffer(c.vocab_size * dim);
  load_bf16(w.token_embd, 0, file.tensor("token_embd.weight"), c.vocab_size * dim, staging);
  w.output_norm = load_f32(file.tensor("output_norm.weight"), dim);
  if (!c.tied_embeddings) {
    w.output = bf16_buffer(c.vocab_size * dim);
    load_bf16(w.output, 0, file.tensor("output.weight"), c.vocab_size * dim, staging);
  }
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = str("blk.", l, ".");
    cuda_llama_layer& L = w.layers[static_cast<size_t>(l)];
    L.attn_norm = load_f32(file.tensor(p + "attn_norm.weight"), dim);
    L.ffn_norm = load_f32(file.tensor(p + "ffn_norm.weight"), dim);
    L.wqkv = bf16_buffer((qd + 2 * kvd) * dim);
    load_bf16(L.wqkv, 0, file.tensor(p + "attn_q.weight"), qd * dim, staging);
    load_bf16(L.wqkv, qd * dim, file.tensor(p + "attn_k.weight"), kvd * dim, staging);
    load_bf16(L.wqkv, (qd + kvd) * dim, file.tensor(p + "attn_v.weight"), kvd * dim, staging);
    L.wo = bf16_buffer(dim * qd);
    load_bf16(L.wo, 0, file.tensor(p + "attn_output.weight"), dim * qd, staging);
    L.w_gate_up = bf16_buffer(2 * F * dim);
    load_bf16(L.w_gate_up, 0, file.tensor(p + "ffn_gate.weight"), F * dim, staging);
    load_bf16(L.w_gate_up, F * dim, file.tensor(p + "ffn_up.weight"), F * dim, staging);
    L.w_down = bf16_buffer(dim * F);
    load_bf16(L.w_down, 0, file.tensor(p + "ffn_down.weight"), dim * F, staging);
  }
  cuda_synchronize();  // the staging buffer is freed on return
  return w;
}

cuda_llama_weights cuda_llama_weights_upload(const llama_weights& host) {
  cuda_llama_weights w;
  w.config = host.config;
  w.token_embd = upload_bf16({&host.token_embd});
  w.output_norm = upload_f32(host.output_norm);
  if (!host.output.empty()) w.output = upload_bf16({&host.output});
  for (const llama_layer_weights& H : host.layers) {
    cuda_llama_layer L;
    L.attn_norm = upload_f32(H.attn_norm);
    L.ffn_norm = upload_f32(H.ffn_norm);
    L.wqkv = upload_bf16({&H.wq, &H.wk, &H.wv});
    L.wo = upload_bf16({&H.wo});
    L.w_gate_up = upload_bf16({&H.w_gate, &H.w_up});
    L.w_down = upload_bf16({&H.w_down});
    w.layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace sp
