// Recording a prefill's attention inputs and writing them (attention_inputs_file.h).
#include "shareprefill/attention_inputs_file.h"

#include <cstring>

#include "shareprefill/cuda_copy.h"
#include "shareprefill/error.h"
#include "shareprefill/safetensors.h"

namespace sp {
namespace {

// A view [N, heads, dim] (bf16, heads contiguous in a token, token-strided) to the host.
void download(const tensor_view& x, std::vector<uint16_t>& bits, int64_t& rows, int64_t& heads,
              int64_t& dim) {
  const char* fn = "attention_inputs_recorder";
  check(x.rank == 3 && x.type == dtype::bf16, fn, "expects bf16 views [N, heads, dim]");
  check(x.stride[2] == 1 && x.stride[1] == x.shape[2] && x.stride[0] >= x.shape[1] * x.shape[2], fn,
        "expects heads contiguous in a token");
  rows = x.shape[0], heads = x.shape[1], dim = x.shape[2];
  const int64_t width = heads * dim;  // elements of a token
  bits.resize(static_cast<size_t>(rows * width));
  if (x.on_device) {
    cuda_copy_2d(bits.data(), width * 2, x.data, x.stride[0] * 2, width * 2, rows);
    return;
  }
  const auto* src = static_cast<const uint16_t*>(x.data);
  for (int64_t t = 0; t < rows; ++t)
    std::memcpy(bits.data() + t * width, src + t * x.stride[0], static_cast<size_t>(width) * 2);
}

}  // namespace

int64_t attention_inputs_bytes(const llama_config& c, int64_t n) {
  return c.n_layers * n * (c.n_heads + 2 * c.n_kv_heads) * c.head_dim * 2;
}

prefill_options::attention_inputs_hook attention_inputs_recorder::hook() {
  return [this](int64_t l, const tensor_view& q, const tensor_view& k, const tensor_view& v) {
    check(l == layers(), "attention_inputs_recorder", "layer ", l, " came after ", layers(),
          " recorded layers (one prompt, in order)");
    layer r;
    for (auto [view, t] : {std::pair{&q, &r.q}, std::pair{&k, &r.k}, std::pair{&v, &r.v}})
      download(*view, t->bits, t->rows, t->heads, t->dim);
    layers_.push_back(std::move(r));
  };
}

void attention_inputs_recorder::save(const std::string& path) const {
  check(!layers_.empty(), "attention_inputs_recorder", "no layer recorded for '", path, "'");
  std::vector<std::pair<std::string, tensor_view>> tensors;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const std::string prefix = "layer" + std::to_string(l) + ".";
    const layer& r = layers_[l];
    for (auto [name, t] : {std::pair{"q", &r.q}, std::pair{"k", &r.k}, std::pair{"v", &r.v}})
      tensors.emplace_back(prefix + name, tensor_view::contiguous(t->bits.data(), dtype::bf16,
                                                                  {t->rows, t->heads, t->dim}));
  }
  safetensors_save(path, tensors);
}

}  // namespace sp
