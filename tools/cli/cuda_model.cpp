// Loading the model onto the GPU and the device planner of an attention setup (cuda_model.h).
#include "cuda_model.h"

#include <chrono>
#include <cstdio>

namespace sp::cli {

cuda_llama_weights load_cuda_weights(const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  cuda_llama_weights w = cuda_llama_weights_load(path);
  std::fprintf(stderr, "on the GPU: bf16 weights, %.1f MiB of device memory (%.1f s)\n",
               double(w.bytes()) / (1 << 20),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return w;
}

std::unique_ptr<device_planner> make_device_planner(const attention_setup& att,
                                                    const llama_config& config) {
  if (!att.plan) return nullptr;
  return std::make_unique<device_planner>(att.plan->params(), config.n_layers, config.n_heads,
                                          att.clusters.get());
}

}  // namespace sp::cli
