// Every layer's attention inputs of one prefill, recorded on the host and written as the
// safetensors file `shareprefill bench layer --inputs` reads: layer{L}.q [N, H, D] (the rotated
// queries), layer{L}.k and layer{L}.v [N, Hkv, D] (the layer's cached keys and values), bf16,
// contiguous. Fed by the CUDA forward's on_attention_inputs hook (`bench prefill --save-inputs`):
// real activations for the layer benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shareprefill/llama_config.h"
#include "shareprefill/llama_model.h"

namespace sp {

// Bytes of the file for a prompt of n tokens (the recorder holds as much on the host): every
// layer's q, k and v in bf16.
int64_t attention_inputs_bytes(const llama_config& c, int64_t n);

class attention_inputs_recorder {
 public:
  // A prefill_options::on_attention_inputs hook that copies layer l's views (bf16 [N, heads,
  // dim], heads contiguous in a token, token-strided; on the device or the host) to the host,
  // a synchronising copy per tensor on the device. Layers must come in order from 0. This
  // object must outlive the prefill.
  prefill_options::attention_inputs_hook hook();
  int64_t layers() const { return static_cast<int64_t>(layers_.size()); }
  // Writes the recorded layers; throws sp::error if none was recorded or the file cannot be
  // written.
  void save(const std::string& path) const;

 private:
  struct tensor {
    std::vector<uint16_t> bits;  // [rows, heads, dim] bf16
    int64_t rows = 0, heads = 0, dim = 0;
  };
  struct layer {
    tensor q, k, v;
  };
  std::vector<layer> layers_;
};

}  // namespace sp
