// Shared by the model tests: the default model loaded once per test binary, or a skip when it is
// not cached (scripts/fetch_model.sh fetches it; scripts/test.sh runs that first).
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <memory>

#include "shareprefill/llama_model.h"
#include "shareprefill/model_cache.h"

namespace sp::testing {

inline bool default_model_cached() { return std::ifstream(default_model_path()).good(); }

// Loaded on first use, kept for the whole test binary (dequantised fp32 weights, ~0.6 GB).
inline const llama_weights& default_model_weights(thread_pool& pool) {
  static std::unique_ptr<llama_weights> weights;
  if (!weights) weights = std::make_unique<llama_weights>(llama_weights_load(default_model_path(), pool));
  return *weights;
}

#define SP_SKIP_WITHOUT_MODEL()                                                       \
  if (!::sp::testing::default_model_cached())                                         \
  GTEST_SKIP() << "default model not cached at " << ::sp::default_model_path()        \
               << " (run scripts/fetch_model.sh)"

}  // namespace sp::testing
