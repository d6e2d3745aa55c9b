// --device: option and resolution (device_option.h).
#include "device_option.h"

#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"

namespace sp::cli {

void add_device_option(CLI::App* sub, std::string& device) {
  sub->add_option("--device", device,
                  "cpu or cuda (default: cuda when a CUDA GPU is usable, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
}

std::string resolve_device(const std::string& requested, bool gpu_available) {
  if (requested.empty()) return gpu_available ? "cuda" : "cpu";
  check(requested == "cpu" || requested == "cuda", "--device", "expected cpu or cuda, got '",
        requested, "'");
  check(requested == "cpu" || gpu_available, "--device",
        "cuda was requested but no usable CUDA GPU is present (this build ",
#ifdef SP_HAVE_CUDA
        "has CUDA; no device of compute capability >= 8.0 was found"
#else
        "was compiled without CUDA"
#endif
        "); use --device cpu");
  return requested;
}

std::string resolve_device(const std::string& requested) {
  return resolve_device(requested, cuda_device_available());
}

}  // namespace sp::cli
