// Tensor views, half-precision conversions and the thread pool.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>

#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"
#include "test_util.h"

namespace sp {
namespace {

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down to 1.0).
  EXPECT_EQ(fp32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(fp32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(-2.5f)), -2.5f);
}

TEST(Dtype, Fp16RoundTripsEveryHalfValue) {
  // Every finite half value converts to fp32 and back unchanged.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = fp16_to_fp32(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), bits) << "half bits " << h;
  }
}

TEST(Dtype, Fp16RoundingAndLimits) {
  EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(fp16_to_fp32(fp32_to_fp16(65520.0f))));  // rounds up to inf
  EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(65519.0f)), 65504.0f);
  EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(std::ldexp(1.0f, -24))), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -26)), 0);  // below half the smallest subnormal
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even.
  EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
}

TEST(TensorView, ContiguousShapeAndNonFiniteScan) {
  std::vector<float> data(24, 1.0f);
  auto t = tensor_view::contiguous(data.data(), dtype::f32, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.stride[0], 12);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(find_non_finite(t), -1);
  data[17] = INFINITY;
  EXPECT_EQ(find_non_finite(t), 17);
  std::vector<uint16_t> half(8, fp32_to_bf16(1.0f));
  half[5] = fp32_to_bf16(NAN);
  EXPECT_EQ(find_non_finite(tensor_view::contiguous(half.data(), dtype::bf16, {8})), 5);
  EXPECT_NE(testing::error_of([] { tensor_view::contiguous(static_cast<void*>(nullptr), dtype::f32, {1, 2, 3, 4, 5}); }),
            "");
}

TEST(ThreadPool, CoversEveryItemOnceAndRethrows) {
  thread_pool pool(3);
  std::vector<std::atomic<int>> hits(1000);
  pool.parallel_for(1000, [&](int64_t i, int worker) {
    ASSERT_GE(worker, 0);
    ASSERT_LT(worker, pool.size());
    hits[static_cast<size_t>(i)]++;
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_THROW(pool.parallel_for(100,
                                 [](int64_t i, int) {
                                   if (i == 37) throw sp::error("item 37");
                                 }),
               sp::error);
  // The pool stays usable after an exception.
  std::atomic<int> count{0};
  pool.parallel_for(10, [&](int64_t, int) { count++; });
  EXPECT_EQ(count.load(), 10);
}

}  // namespace
}  // namespace sp
