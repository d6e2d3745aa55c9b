// Loads a Llama GGUF: validates the configuration and dequantises every tensor the forward needs
// to fp32 (rows of ggml tensors are output features, so a [out, in] row-major matrix each).
#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"
#include "shareprefill/llama_model.h"
#include "shareprefill/tensor.h"

namespace sp {

llama_weights llama_weights_load(const std::string& gguf_path, thread_pool& pool) {
  const gguf_file file(gguf_path);
  llama_weights w;
  w.config = read_llama_config(file);
  const llama_config& c = w.config;
  // Corrupt scales or values (NaN/Inf) would surface layers later as a non-finite activation;
  // one pass over the fp32 values names the tensor instead.
  auto load = [&](const std::string& name) {
    std::vector<float> values = dequantize_tensor(file.tensor(name));
    const int64_t n = static_cast<int64_t>(values.size());
    const int64_t bad =
        find_non_finite(tensor_view::contiguous(values.data(), dtype::f32, {n}));
    if (bad >= 0)
      fail("llama_weights_load", gguf_path, ": tensor '", name, "' holds a non-finite value (",
           values[static_cast<size_t>(bad)], ") at element ", bad,
           " after dequantisation: corrupt weights or scales");
    return values;
  };
  w.token_embd = load("token_embd.weight");
  w.output_norm = load("output_norm.weight");
  if (!c.tied_embeddings) w.output = load("output.weight");
  w.layers.resize(static_cast<size_t>(c.n_layers));
  pool.parallel_for(c.n_layers, [&](int64_t l, int) {
    const std::string p = str("blk.", l, ".");
    llama_layer_weights& L = w.layers[static_cast<size_t>(l)];
    L.attn_norm = load(p + "attn_norm.weight");
    L.wq = load(p + "attn_q.weight");
    L.wk = load(p + "attn_k.weight");
    L.wv = load(p + "attn_v.weight");
    L.wo = load(p + "attn_output.weight");
    L.ffn_norm = load(p + "ffn_norm.weight");
    L.w_gate = load(p + "ffn_gate.weight");
    L.w_up = load(p + "ffn_up.weight");
    L.w_down = load(p + "ffn_down.weight");
  });
  return w;
}

}  // namespace sp
