// read_llama_config on small in-memory Llama files (F32 tensors, dim 8, 2 layers, GQA 4/2):
// the parsed hyperparameters and defaults, and one clear error per kind of problem
// (architecture, missing key, indivisible heads, missing tensor, wrong shape, bad tensor type).
// The real SmolLM2 configuration is checked in test_gguf_model.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/test_gguf_support.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"
#include "shareprefill/llama_config.h"

namespace {

using sp_test::gguf_builder;

struct tiny_llama {
  uint32_t layers = 2, dim = 8, heads = 4, kv_heads = 2, ffn = 12, vocab = 10;
  bool tied = true;
  std::string skip_tensor;  // leave this tensor out
  std::string skip_key;     // leave this key out

  gguf_builder builder() const {
    gguf_builder b;
    auto u32 = [&](const std::string& k, uint32_t v) {
      if (k != skip_key) b.add_u32(k, v);
    };
    b.add_string("general.architecture", "llama");
    u32("llama.block_count", layers);
    u32("llama.embedding_length", dim);
    u32("llama.feed_forward_length", ffn);
    u32("llama.attention.head_count", heads);
    u32("llama.attention.head_count_kv", kv_heads);
    u32("llama.context_length", 64);
    if (skip_key != "llama.attention.layer_norm_rms_epsilon") {
      b.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
    }
    const uint64_t hd = dim / heads, q = heads * hd, kv = kv_heads * hd;
    auto tensor = [&](const std::string& name, std::vector<uint64_t> ne) {
      if (name != skip_tensor) b.add_f32_tensor(name, std::move(ne));
    };
    tensor("token_embd.weight", {dim, vocab});
    tensor("output_norm.weight", {dim});
    if (!tied) tensor("output.weight", {dim, vocab});
    for (uint32_t l = 0; l < layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      tensor(p + "attn_norm.weight", {dim});
      tensor(p + "attn_q.weight", {dim, q});
      tensor(p + "attn_k.weight", {dim, kv});
      tensor(p + "attn_v.weight", {dim, kv});
      tensor(p + "attn_output.weight", {q, dim});
      tensor(p + "ffn_norm.weight", {dim});
      tensor(p + "ffn_gate.weight", {dim, ffn});
      tensor(p + "ffn_up.weight", {dim, ffn});
      tensor(p + "ffn_down.weight", {ffn, dim});
    }
    return b;
  }
};

std::string config_error(gguf_builder b) {
  const std::vector<uint8_t> bytes = b.build();
  try {
    const sp::gguf_file f = sp::gguf_file::from_memory(bytes.data(), bytes.size());
    sp::read_llama_config(f);
  } catch (const sp::error& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_CONFIG_ERROR(builder, text) \
  EXPECT_NE(config_error(builder).find(text), std::string::npos) << config_error(builder)

TEST(llama_config, reads_hyperparameters_and_defaults) {
  tiny_llama m;
  m.tied = false;
  gguf_builder b = m.builder();
  const std::vector<uint8_t> bytes = b.build();
  const sp::gguf_file f = sp::gguf_file::from_memory(bytes.data(), bytes.size());
  const sp::llama_config c = sp::read_llama_config(f);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.dim, 8);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.group_size(), 2);
  EXPECT_EQ(c.head_dim, 2);
  EXPECT_EQ(c.rope_dim, 2);     // default: head_dim
  EXPECT_EQ(c.vocab_size, 10);  // default: token_embd ne[1]
  EXPECT_EQ(c.ffn_dim, 12);
  EXPECT_EQ(c.context_length, 64);
  EXPECT_EQ(c.rms_eps, static_cast<double>(1e-6f));
  EXPECT_EQ(c.rope_theta, 10000.0);  // default freq_base
  EXPECT_EQ(c.rope_scaling.type, "none");
  EXPECT_EQ(c.rope_scaling.factor, 1.0);
  EXPECT_FALSE(c.tied_embeddings);
}

TEST(llama_config, rope_scaling_and_tied_output) {
  gguf_builder b = tiny_llama().builder();
  b.add_f32("llama.rope.freq_base", 500000.0f);
  b.add_string("llama.rope.scaling.type", "linear");
  b.add_f32("llama.rope.scaling.factor", 4.0f);
  b.add_u32("llama.rope.scaling.original_context_length", 16);
  const std::vector<uint8_t> bytes = b.build();
  const sp::gguf_file f = sp::gguf_file::from_memory(bytes.data(), bytes.size());
  const sp::llama_config c = sp::read_llama_config(f);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_context_length, 16);
  EXPECT_TRUE(c.tied_embeddings);
}

TEST(llama_config, errors_name_the_problem) {
  EXPECT_CONFIG_ERROR(sp_test::gguf_builder(), "missing key 'general.architecture'");
  gguf_builder other;
  other.add_string("general.architecture", "gpt2");
  EXPECT_CONFIG_ERROR(other, "[read_llama_config] architecture 'gpt2' is not supported");

  tiny_llama m;
  m.skip_key = "llama.block_count";
  EXPECT_CONFIG_ERROR(m.builder(), "missing key 'llama.block_count'");
  m = tiny_llama();
  m.skip_key = "llama.attention.layer_norm_rms_epsilon";
  EXPECT_CONFIG_ERROR(m.builder(), "missing key 'llama.attention.layer_norm_rms_epsilon'");
  m = tiny_llama();
  m.kv_heads = 3;
  EXPECT_CONFIG_ERROR(m.builder(), "head_count 4 is not a multiple of head_count_kv 3");
  m = tiny_llama();
  m.layers = 0;
  EXPECT_CONFIG_ERROR(m.builder(), "key 'llama.block_count' is 0");
  m = tiny_llama();
  m.skip_tensor = "blk.1.ffn_down.weight";
  EXPECT_CONFIG_ERROR(m.builder(), "missing tensor 'blk.1.ffn_down.weight'");
  m = tiny_llama();
  m.skip_tensor = "output_norm.weight";
  EXPECT_CONFIG_ERROR(m.builder(), "missing tensor 'output_norm.weight'");

  gguf_builder b = tiny_llama().builder();
  b.add_u32("llama.vocab_size", 11);
  EXPECT_CONFIG_ERROR(b, "tensor 'token_embd.weight' has shape [8, 10], expected [8, 11]");
  b = tiny_llama().builder();
  for (auto& t : b.tensors) {
    if (t.name == "blk.0.attn_k.weight") t.ne = {8, 8};
  }
  EXPECT_CONFIG_ERROR(b, "tensor 'blk.0.attn_k.weight' has shape [8, 8], expected [8, 4]");
  b = tiny_llama().builder();
  for (auto& t : b.tensors) {
    if (t.name == "blk.0.attn_norm.weight") t.type = 26;  // I32: same size, not dequantisable
  }
  EXPECT_CONFIG_ERROR(b, "tensor 'blk.0.attn_norm.weight' has type I32");
  b = tiny_llama().builder();
  b.add_string("llama.rope.freq_base", "fast");
  EXPECT_CONFIG_ERROR(b, "key 'llama.rope.freq_base' has type string, expected float32");
}

}  // namespace
