// libFuzzer entry point for the calibration-capture reader: parses the input as a capture file
// (every count is checked against the bytes left before anything is sized by it), then clusters
// small accepted captures with both metrics, so values that passed validation are run through
// the distance and clustering code. sp::error is the expected outcome for bad input; anything
// else (a crash, a sanitizer report, a huge allocation) is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<sp::calibration_input> inputs;
  try {
    inputs = sp::calibration_inputs_from_bytes(std::vector<uint8_t>(data, data + size), "<fuzz>");
  } catch (const sp::error&) {
    return 0;
  }
  // Clustering costs heads^2 * blocks^2 per input: only small captures, to keep runs fast.
  for (const sp::calibration_input& in : inputs)
    if (in.head_count() > 64 || in.n_blocks > 32) return 0;
  const sp::cluster_model_info model{"fuzz", inputs[0].layers, inputs[0].heads, 0, 0};
  for (const sp::calib_metric metric : {sp::calib_metric::js, sp::calib_metric::jaccard}) {
    try {
      sp::calibration_settings settings;
      settings.metric = metric;
      sp::calibrate_from_inputs(inputs, settings, model);
    } catch (const sp::error&) {
    }
  }
  return 0;
}
