// Single kernels of the device planner against their CPU references, at ragged sizes:
// launch_rank_rows (plan_rank.cu), the ranking of the block profiles for step D's top-k: rank of
// each entry in its row's descending order, ties to the lower index (std::stable_sort here).
// Keys drawn from few levels so ties are common, with +inf (the forced entries) and zeros.
// Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "cuda/plan_layout.h"
#include "shareprefill/cuda_attention.h"
#include "test_util.h"

namespace sp {
namespace {

std::vector<int32_t> rank_reference(const std::vector<float>& keys, int64_t segs, int64_t nb) {
  std::vector<int32_t> rank(keys.size());
  for (int64_t s = 0; s < segs; ++s) {
    const float* row = keys.data() + s * nb;
    std::vector<int32_t> order(static_cast<size_t>(nb));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    for (int64_t i = 0; i < nb; ++i) rank[static_cast<size_t>(s * nb + order[i])] = static_cast<int32_t>(i);
  }
  return rank;
}

TEST(DevicePlannerKernels, RankRowsMatchesStableSort) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(11);
  for (int64_t nb : {1, 2, 31, 255, 256, 257, 1000, 1024, 1025, 2049, 4096}) {
    for (int64_t segs : {1, 3, 18}) {
      SCOPED_TRACE(str("nb=", nb, " segs=", segs));
      std::uniform_int_distribution<int> level(0, nb < 64 ? 3 : 40);
      std::vector<float> keys(static_cast<size_t>(segs * nb));
      for (float& k : keys) k = level(rng) == 0 ? 0.0f : static_cast<float>(level(rng)) / 64.0f;
      for (int64_t s = 0; s < segs; ++s) keys[static_cast<size_t>(s * nb + (s % 2 ? nb - 1 : 0))] = INFINITY;
      device_buffer dk(keys.size() * 4), dr(keys.size() * 4);
      dk.upload(keys.data(), dk.size());
      ASSERT_TRUE(cuda::launch_rank_rows(static_cast<const float*>(dk.data()),
                                         static_cast<int32_t*>(dr.data()), segs, nb, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<int32_t> got(keys.size());
      dr.download(got.data(), dr.size());
      EXPECT_EQ(got, rank_reference(keys, segs, nb));
    }
  }
  // Longer rows are left to the CUB path: nothing is launched.
  EXPECT_FALSE(cuda::launch_rank_rows(nullptr, nullptr, 2, cuda::rank_block_max + 1, nullptr));
}

}  // namespace
}  // namespace sp
