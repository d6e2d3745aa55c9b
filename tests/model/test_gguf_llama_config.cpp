// read_llama_config on small in-memory Llama files (F32 tensors, dim 8, 2 layers, GQA 4/2):
// the parsed hyperparameters and defaults, and one clear error per kind of problem
// (architecture, missing key, indivisible heads, missing tensor, wrong shape, bad tensor type,
// non-finite rope base, a block count that leaves tensors unused). The same tiny model written to
// a file also checks the loader's non-finite weight check and the session's sizing (issue 18).
// The real SmolLM2 configuration is checked in test_gguf_model.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "model/test_gguf_support.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"
#include "shareprefill/llama_config.h"
#include "shareprefill/llama_model.h"
#include "test_util.h"

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
    if (t.name != "blk.0.attn_k.weight") continue;
    t.ne = {8, 8};
    t.data.resize(8 * 8 * sizeof(float));  // else its data would overlap the next tensor's
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

TEST(llama_config, non_finite_rope_values_are_errors) {
  gguf_builder b = tiny_llama().builder();
  b.add_f32("llama.rope.freq_base", std::numeric_limits<float>::infinity());
  EXPECT_CONFIG_ERROR(b, "rope.freq_base inf is not a finite positive number");
  b = tiny_llama().builder();
  b.add_f32("llama.rope.freq_base", std::nanf(""));
  EXPECT_CONFIG_ERROR(b, "rope.freq_base nan is not a finite positive number");
  b = tiny_llama().builder();
  b.add_f32("llama.rope.scaling.factor", std::numeric_limits<float>::infinity());
  EXPECT_CONFIG_ERROR(b, "rope.scaling.factor inf is not a finite positive number");
}

TEST(llama_config, block_count_that_leaves_tensors_unused_is_an_error) {
  tiny_llama m;
  gguf_builder b = m.builder();
  m.layers = 1;  // the key says one block, the file holds two
  gguf_builder one = m.builder();
  b.kv = one.kv;
  b.n_kv = one.n_kv;
  EXPECT_CONFIG_ERROR(b, "tensor 'blk.1.attn_norm.weight' belongs to block 1 but "
                         "llama.block_count is 1");
}

// The tiny model written to a temporary file, for llama_weights_load.
std::string write_model(gguf_builder b, const std::string& name) {
  const std::vector<uint8_t> bytes = b.build();
  const std::string path = sp::testing::temp_path(name);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  return path;
}

TEST(llama_weights, non_finite_weight_is_named_at_load) {
  gguf_builder b = tiny_llama().builder();
  for (auto& t : b.tensors) {
    if (t.name != "blk.1.attn_q.weight") continue;
    const float nan = std::nanf("");
    std::memcpy(&t.data[3 * sizeof(float)], &nan, sizeof(float));
  }
  const std::string path = write_model(b, "nan_weight.gguf");
  sp::thread_pool pool(2);
  const std::string err = sp::testing::error_of([&] { sp::llama_weights_load(path, pool); });
  std::remove(path.c_str());
  EXPECT_NE(err.find("[llama_weights_load] " + path +
                     ": tensor 'blk.1.attn_q.weight' holds a non-finite value (nan) at element 3"),
            std::string::npos)
      << err;
}

TEST(llama_session, sizes_nothing_by_the_capacity_before_checking_the_prompt) {
  const std::string path = write_model(tiny_llama().builder(), "tiny_session.gguf");
  sp::thread_pool pool(2);
  const sp::llama_weights w = sp::llama_weights_load(path, pool);
  std::remove(path.c_str());
  // A capacity of 2^50 tokens would be a 2^55-byte cache: nothing is allocated up front.
  sp::llama_session huge(w, pool, int64_t{1} << 50);
  // A prompt far past the 64-token context fails on the context, before any activation or
  // cache is sized by it.
  const std::vector<int32_t> long_prompt(1 << 20, 1);
  EXPECT_NE(sp::testing::error_of([&] { huge.prefill(long_prompt, {}); })
                .find("prompt of 1048576 tokens exceeds the model's trained context of 64"),
            std::string::npos);
  sp::prefill_options rope;
  rope.rope = {"linear", 2.0};
  EXPECT_NE(sp::testing::error_of([&] { huge.prefill(long_prompt, rope); })
                .find("prompt of 1048576 tokens exceeds 2 x the trained context of 64"),
            std::string::npos);
  rope.rope = {"linear", std::numeric_limits<double>::infinity()};
  EXPECT_NE(sp::testing::error_of([&] { huge.prefill({1, 2}, rope); })
                .find("rope scaling factor must be finite and >= 1, got inf"),
            std::string::npos);
  // The cache grows with the tokens run: prefill then decode past the reserve still works.
  const sp::prefill_result r = huge.prefill({1, 2, 3}, {});
  EXPECT_EQ(r.logits.size(), 10u);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(huge.decode(1).size(), 10u);
  EXPECT_EQ(huge.length(), 303);
  EXPECT_EQ(sp::llama_usable_context(w.config, {"none", 4.0}), 64);
  EXPECT_EQ(sp::llama_usable_context(w.config, {"yarn", 4.0}), 256);
}

}  // namespace
