// Every layer's attention inputs of one CUDA prefill, recorded on the host and written as the
// safetensors file `bench layer --inputs` reads: layer{L}.q [N, H, D] (the rotated queries),
// layer{L}.k and layer{L}.v [N, Hkv, D] (the layer's cached keys and values), bf16, contiguous.
// For `bench prefill --save-inputs`: real activations for the layer benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shareprefill/llama_config.h"
#include "shareprefill/llama_model.h"

namespace sp::cli {

// Bytes of the file for a prompt of n tokens (the recorder holds as much on the host): every
// layer's q, k and v in bf16.
int64_t attention_inputs_bytes(const llama_config& c, int64_t n);
// Throws sp::error naming `path` when the folder it goes to has less free space than `bytes`.
void check_space_for(const std::string& path, int64_t bytes);

class attention_inputs_recorder {
 public:
  // A prefill_options::on_attention_inputs hook that copies layer l's views to the host (a
  // synchronising copy per tensor). This object must outlive the prefill.
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

}  // namespace sp::cli
