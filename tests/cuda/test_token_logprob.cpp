// cuda_token_logprob against the CPU scoring (sp::token_logprob, fp64) on random rows of ragged
// vocabulary sizes, including large logits (the max shift) and an out-of-range target (NaN).
// Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_token_logprob.h"
#include "shareprefill/eval.h"
#include "test_util.h"

namespace sp {
namespace {

TEST(CudaTokenLogprob, MatchesTheCpuScoringAtRaggedSizes) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  for (const auto& [count, vocab, scale] :
       {std::tuple<int64_t, int64_t, float>{1, 1, 1.0f}, {3, 255, 4.0f}, {17, 1000, 30.0f},
        {64, 49152, 12.0f}, {5, 257, 80.0f}}) {
    const std::vector<float> logits =
        testing::random_values(count * vocab, 11 + static_cast<uint64_t>(vocab), -scale, scale);
    std::mt19937_64 rng(static_cast<uint64_t>(count));
    std::vector<int32_t> targets(static_cast<size_t>(count));
    for (auto& t : targets) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
    device_buffer dl(logits.size() * sizeof(float)), dt(targets.size() * sizeof(int32_t)),
        dout(static_cast<size_t>(count) * sizeof(float));
    dl.upload(logits.data(), dl.size());
    dt.upload(targets.data(), dt.size());
    cuda_token_logprob(static_cast<float*>(dout.data()), static_cast<const float*>(dl.data()),
                       static_cast<const int32_t*>(dt.data()), count, vocab, nullptr);
    std::vector<float> got(static_cast<size_t>(count));
    dout.download(got.data(), dout.size());
    for (int64_t i = 0; i < count; ++i) {
      const double ref = token_logprob(&logits[static_cast<size_t>(i * vocab)], vocab,
                                       targets[static_cast<size_t>(i)]);
      // fp32 sums of up to 49152 terms: a relative error of a few 1e-6 on log(sum).
      EXPECT_NEAR(got[static_cast<size_t>(i)], ref, 1e-5 * (1.0 + std::fabs(ref)) + 1e-5)
          << "count " << count << " vocab " << vocab << " row " << i;
    }
  }
}

TEST(CudaTokenLogprob, TargetOutsideTheVocabularyGivesNan) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const std::vector<float> logits = {0.5f, 1.0f, -2.0f, 0.0f, 3.0f, 1.0f};
  const std::vector<int32_t> targets = {3, 1};  // row 0: 3 >= vocab 3
  device_buffer dl(logits.size() * 4), dt(targets.size() * 4), dout(8);
  dl.upload(logits.data(), dl.size());
  dt.upload(targets.data(), dt.size());
  cuda_token_logprob(static_cast<float*>(dout.data()), static_cast<const float*>(dl.data()),
                     static_cast<const int32_t*>(dt.data()), 2, 3, nullptr);
  float got[2];
  dout.download(got, sizeof(got));
  EXPECT_TRUE(std::isnan(got[0]));
  EXPECT_NEAR(got[1], token_logprob(&logits[3], 3, 1), 1e-6);
  EXPECT_NE(testing::error_of([] { cuda_token_logprob(nullptr, nullptr, nullptr, -1, 3, nullptr); })
                .find("count=-1"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
