// Shared test helpers: seeded random tensors, error comparisons, per-test temporary paths.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "shareprefill/error.h"

namespace sp::testing {

inline std::vector<float> random_values(int64_t n, uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

inline double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// Runs f and returns the sp::error message it throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const sp::error& e) {
    return e.what();
  }
  return "";
}

// A file path under the test temporary directory that no other test process uses: ctest runs
// every test case as its own process in parallel, so a fixed name races (one case removes the
// file another has just written).
inline std::string temp_path(const std::string& name) {
  const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string test = t ? std::string(t->test_suite_name()) + "." + t->name() : "no_test";
  return ::testing::TempDir() + "/" + test + "." + std::to_string(::getpid()) + "." + name;
}

// A directory under temp_path(name), removed with everything in it when the object goes.
struct scoped_temp_dir {
  explicit scoped_temp_dir(const std::string& name) : path(temp_path(name)) {}
  ~scoped_temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  scoped_temp_dir(const scoped_temp_dir&) = delete;
  scoped_temp_dir& operator=(const scoped_temp_dir&) = delete;
  const std::string path;
};

}  // namespace sp::testing
