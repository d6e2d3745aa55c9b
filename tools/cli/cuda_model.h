// The GPU side of the model subcommands (--device cuda): the weights dequantised on the device
// and the device planner matching an attention_setup (the same mode, planner parameters, dense
// layers and cluster map the CPU path would use).
#pragma once

#include <memory>
#include <string>

#include "attention_options.h"
#include "shareprefill/cuda_llama.h"
#include "shareprefill/device_planner.h"

namespace sp::cli {

// Dequantises the GGUF at `path` to bf16 on the device; prints a line on stderr.
cuda_llama_weights load_cuda_weights(const std::string& path);

// The device planner for a sparse setup; null for dense (the session's full causal plan).
std::unique_ptr<device_planner> make_device_planner(const attention_setup& att,
                                                    const llama_config& config);

}  // namespace sp::cli
