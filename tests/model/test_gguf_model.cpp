// The real SmolLM2-135M-Instruct Q4_1 file (Llama, 30 layers, GQA 9/3) against gguf-py's view of
// it (tests/data/gguf_golden.json "model"): tensor table, dequantised rows of the Q8_0, Q4_1
// and F32 tensors the model uses, whole-tensor checksums, tokenizer arrays and the Llama
// configuration. Skipped when the model is not cached (run scripts/fetch_model.sh).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "model/test_gguf_support.h"
#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"
#include "shareprefill/llama_config.h"

namespace {

using nlohmann::json;

class gguf_model : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!sp_test::file_exists(sp_test::model_path())) {
      GTEST_SKIP() << "model file " << sp_test::model_path()
                   << " not found; run scripts/fetch_model.sh (or set SP_CACHE)";
    }
  }
  const json& want() const { return sp_test::golden().at("model"); }
};

TEST_F(gguf_model, header_and_tensor_table_match_gguf_py) {
  const sp::gguf_file f(sp_test::model_path());
  EXPECT_EQ(f.version(), want().at("version").get<uint32_t>());
  EXPECT_EQ(f.alignment(), want().at("alignment").get<int64_t>());
  EXPECT_EQ(f.data_offset(), want().at("data_offset").get<int64_t>());
  EXPECT_EQ(f.tensors().size(), want().at("n_tensors").get<size_t>());
  EXPECT_EQ(f.metadata().size(), want().at("n_kv").get<size_t>());
  std::map<std::string, int> counts;
  for (const sp::gguf_tensor_info& t : f.tensors()) ++counts[sp::ggml_type_name(t.type)];
  using count_map = std::map<std::string, int>;
  EXPECT_EQ(counts, want().at("type_counts").get<count_map>());
  for (const json& w : want().at("tensors")) {
    const sp::gguf_tensor_info& t = f.tensor(w.at("name"));
    EXPECT_STREQ(sp::ggml_type_name(t.type), w.at("type").get<std::string>().c_str());
    ASSERT_EQ(t.n_dims, static_cast<int>(w.at("ne").size())) << t.name;
    for (int d = 0; d < t.n_dims; ++d) EXPECT_EQ(t.ne[d], w.at("ne")[d].get<int64_t>()) << t.name;
    EXPECT_EQ(f.data_offset() + static_cast<int64_t>(t.offset), w.at("file_offset").get<int64_t>());
    EXPECT_EQ(t.n_bytes, w.at("n_bytes").get<int64_t>()) << t.name;
  }
}

TEST_F(gguf_model, rows_dequantise_like_gguf_py) {
  const sp::gguf_file f(sp_test::model_path());
  for (const json& w : want().at("rows")) {
    const sp::gguf_tensor_info& t = f.tensor(w.at("name"));
    const int64_t row = w.at("row");
    std::vector<float> got(static_cast<size_t>(t.ne[0]) + 1, -7.0f);  // + guard value
    sp::dequantize_rows(got.data(), t, row, 1);
    EXPECT_EQ(got.back(), -7.0f) << t.name << ": wrote past the row";
    const std::vector<float> expected = w.at("values");
    got.resize(expected.size());
    sp_test::expect_values(got, expected, sp_test::row_tolerance(t.type, expected),
                           t.name + " row " + std::to_string(row));
  }
}

TEST_F(gguf_model, tensor_checksums_match_gguf_py) {
  const sp::gguf_file f(sp_test::model_path());
  for (const json& w : want().at("sums")) {
    const sp::gguf_tensor_info& t = f.tensor(w.at("name"));
    ASSERT_EQ(t.n_elements, w.at("n").get<int64_t>());
    const std::vector<float> v = sp::dequantize_tensor(t);
    double sum = 0.0, sum_abs = 0.0;
    for (float x : v) {
      sum += x;
      sum_abs += std::fabs(x);
    }
    // The fp32 values agree to row_tolerance (<= 2^-23 relative to the row maximum, so <= 2^-23
    // * sum_abs in total); the fp64 sums differ in order (numpy is pairwise), each within
    // n * 2^-53 * sum_abs.
    const double ref_abs = w.at("sum_abs");
    const double tol =
        (std::ldexp(1.0, -23) + static_cast<double>(t.n_elements) * std::ldexp(1.0, -53)) * ref_abs;
    EXPECT_NEAR(sum, w.at("sum").get<double>(), tol) << t.name;
    EXPECT_NEAR(sum_abs, ref_abs, tol) << t.name;
  }
}

TEST_F(gguf_model, tokenizer_arrays_are_readable) {
  const sp::gguf_file f(sp_test::model_path());
  const json& sizes = want().at("array_sizes");
  const std::vector<std::string>& tokens = f.get_string_array("tokenizer.ggml.tokens");
  EXPECT_EQ(static_cast<int64_t>(tokens.size()), sizes.at("tokenizer.ggml.tokens").get<int64_t>());
  EXPECT_EQ(static_cast<int64_t>(f.get_string_array("tokenizer.ggml.merges").size()),
            sizes.at("tokenizer.ggml.merges").get<int64_t>());
  EXPECT_EQ(static_cast<int64_t>(f.get_int32_array("tokenizer.ggml.token_type").size()),
            sizes.at("tokenizer.ggml.token_type").get<int64_t>());
  const std::vector<std::string> first = want().at("tokens_first");
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(tokens[i], first[i]);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), 2);
}

TEST_F(gguf_model, llama_config_is_smollm2_135m) {
  const sp::gguf_file f(sp_test::model_path());
  const sp::llama_config c = sp::read_llama_config(f);
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.group_size(), 3);
  EXPECT_EQ(c.dim, 576);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope_dim, 64);
  EXPECT_EQ(c.ffn_dim, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.context_length, 8192);
  EXPECT_FLOAT_EQ(static_cast<float>(c.rms_eps), 1e-5f);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rope_scaling.type, "none");
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.has_rope_freqs);
}

}  // namespace
