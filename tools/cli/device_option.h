// --device cpu|cuda for the model subcommands (generate, demo, eval ppl, eval needle, bench
// prefill): where the forward runs. The default is cuda when this build has CUDA and a usable GPU
// is present, else cpu; asking for cuda without one is refused before any work, naming why.
#pragma once

#include <string>

#include "command.h"

namespace sp::cli {

// Adds --device to `sub`; `device` stays "" when the option is not given (the default).
void add_device_option(CLI::App* sub, std::string& device);

// "cpu" or "cuda": `requested` ("" = the default) resolved against whether a GPU is usable.
// Throws sp::error naming --device when cuda is requested and gpu_available is false.
std::string resolve_device(const std::string& requested, bool gpu_available);

// resolve_device with this process's answer (cuda_device_available()).
std::string resolve_device(const std::string& requested);

}  // namespace sp::cli
