// read_llama_config: hyperparameters from the `llama.*` GGUF keys, then a check that every
// tensor the Llama forward pass reads exists with the implied shape (see llama_config.h).
#include "shareprefill/llama_config.h"

#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"

namespace sp {
namespace {

constexpr const char* fn_name = "read_llama_config";
constexpr int64_t max_hparam = int64_t{1} << 31;

std::string shape_str(const int64_t* ne, int n_dims) {
  std::string s = "[";
  for (int d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
  return s + "]";
}

int64_t positive(const gguf_file& f, const std::string& key) {
  if (!f.has(key)) fail(fn_name, "missing key '", key, "' in ", f.path());
  const int64_t v = f.get_int(key);
  // The bound keeps products such as n_heads * head_dim far from int64 overflow.
  check(v > 0 && v <= max_hparam, fn_name, "key '", key, "' is ", v,
        ", expected a value in [1, 2^31]");
  return v;
}

// Checks that `name` exists, has exactly the given shape and a dequantisable type.
void require_tensor(const gguf_file& f, const std::string& name,
                    std::initializer_list<int64_t> shape) {
  const gguf_tensor_info* t = f.find_tensor(name);
  if (!t) fail(fn_name, "missing tensor '", name, "' in ", f.path());
  const std::vector<int64_t> want(shape);
  bool ok = t->n_dims == static_cast<int>(want.size());
  for (size_t d = 0; ok && d < want.size(); ++d) ok = t->ne[d] == want[d];
  if (!ok) {
    fail(fn_name, "tensor '", name, "' has shape ", shape_str(t->ne, t->n_dims), ", expected ",
         shape_str(want.data(), static_cast<int>(want.size())));
  }
  check(dequantize_supported(t->type), fn_name, "tensor '", name, "' has type ",
        ggml_type_name(t->type), ", which cannot be dequantised");
}

// A tensor of block `layers` or later would be silently ignored: block_count is wrong.
void check_no_block_beyond(const gguf_file& f, int64_t layers) {
  for (const gguf_tensor_info& t : f.tensors()) {
    if (t.name.compare(0, 4, "blk.") != 0) continue;
    const size_t dot = t.name.find('.', 4);
    const std::string index = t.name.substr(4, dot == std::string::npos ? dot : dot - 4);
    if (index.empty() || index.size() > 9 ||
        index.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const int64_t block = std::stoll(index);
    check(block < layers, fn_name, f.path(), ": tensor '", t.name, "' belongs to block ", block,
          " but llama.block_count is ", layers,
          ": the file's block count is wrong or it holds another model's tensors");
  }
}

}  // namespace

llama_config read_llama_config(const gguf_file& f) {
  if (!f.has("general.architecture")) {
    fail(fn_name, "missing key 'general.architecture' in ", f.path());
  }
  const std::string& arch = f.get_string("general.architecture");
  check(arch == "llama", fn_name, "architecture '", arch, "' is not supported (only 'llama')");

  llama_config c;
  c.name = f.get_string_or("general.name", "");
  c.n_layers = positive(f, "llama.block_count");
  c.dim = positive(f, "llama.embedding_length");
  c.ffn_dim = positive(f, "llama.feed_forward_length");
  c.n_heads = positive(f, "llama.attention.head_count");
  c.n_kv_heads = f.has("llama.attention.head_count_kv")
                     ? positive(f, "llama.attention.head_count_kv")
                     : c.n_heads;
  c.context_length = positive(f, "llama.context_length");
  check(c.n_heads % c.n_kv_heads == 0, fn_name, "head_count ", c.n_heads,
        " is not a multiple of head_count_kv ", c.n_kv_heads);
  if (f.has("llama.attention.key_length")) {
    c.head_dim = positive(f, "llama.attention.key_length");
  } else {
    check(c.dim % c.n_heads == 0, fn_name, "embedding_length ", c.dim,
          " is not a multiple of head_count ", c.n_heads);
    c.head_dim = c.dim / c.n_heads;
  }
  if (f.has("llama.attention.value_length")) {
    const int64_t v = positive(f, "llama.attention.value_length");
    check(v == c.head_dim, fn_name, "value_length ", v, " differs from key_length ", c.head_dim,
          " (not supported)");
  }
  check(c.head_dim % 2 == 0, fn_name, "head dimension ", c.head_dim, " is odd (RoPE needs pairs)");
  c.rope_dim =
      f.has("llama.rope.dimension_count") ? positive(f, "llama.rope.dimension_count") : c.head_dim;
  check(c.rope_dim <= c.head_dim && c.rope_dim % 2 == 0, fn_name, "rope.dimension_count ",
        c.rope_dim, " must be even and at most the head dimension ", c.head_dim);
  if (!f.has("llama.attention.layer_norm_rms_epsilon")) {
    fail(fn_name, "missing key 'llama.attention.layer_norm_rms_epsilon' in ", f.path());
  }
  c.rms_eps = f.get_float("llama.attention.layer_norm_rms_epsilon");
  check(c.rms_eps > 0.0 && c.rms_eps < 1.0, fn_name, "rms epsilon ", c.rms_eps,
        " is outside (0, 1)");
  c.rope_theta = f.get_float_or("llama.rope.freq_base", 10000.0);
  check(std::isfinite(c.rope_theta) && c.rope_theta > 0.0, fn_name, "rope.freq_base ",
        c.rope_theta, " is not a finite positive number");
  c.rope_scaling.type = f.get_string_or("llama.rope.scaling.type", "none");
  c.rope_scaling.factor = f.get_float_or("llama.rope.scaling.factor", 1.0);
  check(std::isfinite(c.rope_scaling.factor) && c.rope_scaling.factor > 0.0, fn_name,
        "rope.scaling.factor ", c.rope_scaling.factor, " is not a finite positive number");
  c.rope_scaling.original_context_length =
      f.get_int_or("llama.rope.scaling.original_context_length", 0);

  const gguf_tensor_info* embd = f.find_tensor("token_embd.weight");
  if (!embd) fail(fn_name, "missing tensor 'token_embd.weight' in ", f.path());
  c.vocab_size = f.has("llama.vocab_size") ? positive(f, "llama.vocab_size") : embd->ne[1];
  check(c.vocab_size > 0, fn_name, "vocabulary size ", c.vocab_size, " is not positive");

  const int64_t q_dim = c.n_heads * c.head_dim;
  const int64_t kv_dim = c.n_kv_heads * c.head_dim;
  require_tensor(f, "token_embd.weight", {c.dim, c.vocab_size});
  require_tensor(f, "output_norm.weight", {c.dim});
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  if (!c.tied_embeddings) require_tensor(f, "output.weight", {c.dim, c.vocab_size});
  if (f.find_tensor("rope_freqs.weight")) {
    require_tensor(f, "rope_freqs.weight", {c.rope_dim / 2});
    c.has_rope_freqs = true;
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    require_tensor(f, p + "attn_norm.weight", {c.dim});
    require_tensor(f, p + "attn_q.weight", {c.dim, q_dim});
    require_tensor(f, p + "attn_k.weight", {c.dim, kv_dim});
    require_tensor(f, p + "attn_v.weight", {c.dim, kv_dim});
    require_tensor(f, p + "attn_output.weight", {q_dim, c.dim});
    require_tensor(f, p + "ffn_norm.weight", {c.dim});
    require_tensor(f, p + "ffn_gate.weight", {c.dim, c.ffn_dim});
    require_tensor(f, p + "ffn_up.weight", {c.dim, c.ffn_dim});
    require_tensor(f, p + "ffn_down.weight", {c.ffn_dim, c.dim});
  }
  check_no_block_beyond(f, c.n_layers);
  return c;
}

}  // namespace sp
