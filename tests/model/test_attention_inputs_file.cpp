// attention_inputs_recorder (bench prefill --save-inputs): token-strided bf16 views, as the
// forward hands them to on_attention_inputs, recorded layer by layer and written as the
// safetensors file bench layer --inputs reads; the file holds every layer's q, k and v bit for
// bit, contiguous. Views out of order, of another dtype or with heads not contiguous, and a save
// with nothing recorded, are errors naming the problem. (The device path is the same with one
// cuda_copy_2d per tensor; it ran on the H200 through bench prefill, docs/PERF.md.)
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "shareprefill/attention_inputs_file.h"
#include "shareprefill/error.h"
#include "shareprefill/safetensors.h"
#include "test_util.h"

namespace sp {
namespace {

constexpr int64_t n = 37, heads = 6, kv_heads = 2, dim = 8, pad = 24;  // ragged, strided

// A token-strided view [n, h, dim] into `buf` (token stride h * dim + pad), filled with bits
// that tell the layer, tensor, token and element apart.
tensor_view strided(std::vector<uint16_t>& buf, int64_t h, int tag) {
  const int64_t stride = h * dim + pad;
  buf.assign(static_cast<size_t>(n * stride), 0xffff);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < h * dim; ++i)
      buf[static_cast<size_t>(t * stride + i)] =
          static_cast<uint16_t>((tag * 4099 + t * 131 + i) & 0x7f7f);
  tensor_view x = tensor_view::contiguous(buf.data(), dtype::bf16, {n, h, dim});
  x.stride[0] = stride;
  return x;
}

TEST(AttentionInputsFile, RecordsEveryLayerBitForBit) {
  attention_inputs_recorder rec;
  const auto hook = rec.hook();
  std::vector<std::vector<uint16_t>> bufs(6);
  for (int l = 0; l < 2; ++l)
    hook(l, strided(bufs[3 * l], heads, 3 * l), strided(bufs[3 * l + 1], kv_heads, 3 * l + 1),
         strided(bufs[3 * l + 2], kv_heads, 3 * l + 2));
  EXPECT_EQ(rec.layers(), 2);
  testing::scoped_temp_dir dir("attention_inputs_file");
  std::filesystem::create_directories(dir.path);
  const std::string path = dir.path + "/inputs.safetensors";
  rec.save(path);
  const safetensors_file f = safetensors_load(path);
  EXPECT_EQ(f.tensors.size(), 6u);
  for (int l = 0; l < 2; ++l)
    for (int p = 0; p < 3; ++p) {
      const std::string name = "layer" + std::to_string(l) + "." + "qkv"[p];
      const tensor_view& t = f.get(name);
      const int64_t h = p == 0 ? heads : kv_heads;
      ASSERT_EQ(t.type, dtype::bf16) << name;
      ASSERT_EQ(t.rank, 3) << name;
      EXPECT_EQ(t.shape[0], n);
      EXPECT_EQ(t.shape[1], h);
      EXPECT_EQ(t.shape[2], dim);
      ASSERT_TRUE(t.is_contiguous()) << name;
      const auto* got = static_cast<const uint16_t*>(t.data);
      const std::vector<uint16_t>& src = bufs[static_cast<size_t>(3 * l + p)];
      for (int64_t tok = 0; tok < n; ++tok)
        for (int64_t i = 0; i < h * dim; ++i)
          ASSERT_EQ(got[tok * h * dim + i], src[static_cast<size_t>(tok * (h * dim + pad) + i)])
              << name << " token " << tok << " element " << i;
    }
}

TEST(AttentionInputsFile, BadUseIsNamed) {
  std::vector<uint16_t> q, k, v;
  const tensor_view tq = strided(q, heads, 0), tk = strided(k, kv_heads, 1),
                    tv = strided(v, kv_heads, 2);
  {
    attention_inputs_recorder rec;
    EXPECT_THROW(
        try { rec.save(testing::temp_path("attention_inputs_none")); } catch (const error& e) {
          EXPECT_NE(std::string(e.what()).find("no layer recorded"), std::string::npos);
          throw;
        },
        error);
    EXPECT_THROW(
        try { rec.hook()(1, tq, tk, tv); } catch (const error& e) {
          EXPECT_NE(std::string(e.what()).find("layer 1 came after 0 recorded layers"),
                    std::string::npos)
              << e.what();
          throw;
        },
        error);
  }
  attention_inputs_recorder rec;
  std::vector<float> f32(static_cast<size_t>(n * heads * dim));
  const tensor_view wrong_type = tensor_view::contiguous(f32.data(), dtype::f32, {n, heads, dim});
  EXPECT_THROW(rec.hook()(0, wrong_type, tk, tv), error);
  tensor_view heads_apart = tq;
  heads_apart.stride[1] = dim + 1;
  EXPECT_THROW(rec.hook()(0, heads_apart, tk, tv), error);
  EXPECT_EQ(rec.layers(), 0);
}

}  // namespace
}  // namespace sp
