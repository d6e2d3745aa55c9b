// Rotary position embedding with linear, NTK-aware and YaRN frequency scaling.
#include "rope.h"

#include <algorithm>
#include <cmath>

#include "shareprefill/error.h"

namespace sp {

rope_table rope_make_table(int64_t rope_dim, double base, const std::string& type, double factor,
                           int64_t original_context) {
  const char* fn = "rope_make_table";
  check(rope_dim > 0 && rope_dim % 2 == 0, fn, "rope dimension must be even and positive, got ",
        rope_dim);
  check(std::isfinite(factor) && factor >= 1.0, fn,
        "rope scaling factor must be finite and >= 1, got ", factor);
  check(std::isfinite(base) && base > 0.0, fn, "rope base must be finite and positive, got ",
        base);
  rope_table t;
  const int64_t half = rope_dim / 2;
  double eff_base = base;
  if (type == "ntk") eff_base = base * std::pow(factor, double(rope_dim) / double(rope_dim - 2));
  // YaRN (Peng et al. 2023) as its reference code and Hugging Face transformers compute it: pairs
  // that rotate more than beta_fast = 32 times over the trained context keep their frequency,
  // pairs that rotate fewer than beta_slow = 1 time are interpolated (frequency / factor), with a
  // ramp linear in the pair index between the two (bounds floored / ceiled), not in rotations.
  const auto pair_of_rotations = [&](double rotations) {  // the pair index that turns that often
    return double(rope_dim) * std::log(double(original_context) / (rotations * 2.0 * M_PI)) /
           (2.0 * std::log(base));
  };
  const double yarn_low = std::max(std::floor(pair_of_rotations(32.0)), 0.0);
  double yarn_high = std::min(std::ceil(pair_of_rotations(1.0)), double(rope_dim - 1));
  if (yarn_high == yarn_low) yarn_high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    double theta = std::pow(eff_base, -2.0 * double(i) / double(rope_dim));
    if (type == "linear") {
      theta /= factor;
    } else if (type == "yarn") {
      const double interpolated = std::clamp((double(i) - yarn_low) / (yarn_high - yarn_low), 0.0, 1.0);
      theta = interpolated * theta / factor + (1.0 - interpolated) * theta;
    } else {
      check(type == "none" || type == "ntk", fn, "unknown rope scaling '", type,
            "' (expected none, linear, ntk or yarn)");
    }
    t.inv_freq.push_back(static_cast<float>(theta));
  }
  if (type == "yarn" && factor > 1.0) t.attention_factor = float(0.1 * std::log(factor) + 1.0);
  return t;
}

void rope_apply(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t first_pos,
                const rope_table& table) {
  const int64_t half = static_cast<int64_t>(table.inv_freq.size());
  std::vector<float> cos_v(static_cast<size_t>(half)), sin_v(static_cast<size_t>(half));
  for (int64_t i = 0; i < n; ++i) {
    const double pos = double(first_pos + i);
    for (int64_t p = 0; p < half; ++p) {
      const double angle = pos * double(table.inv_freq[static_cast<size_t>(p)]);
      cos_v[static_cast<size_t>(p)] = float(std::cos(angle)) * table.attention_factor;
      sin_v[static_cast<size_t>(p)] = float(std::sin(angle)) * table.attention_factor;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (i * heads + h) * head_dim;
      for (int64_t p = 0; p < half; ++p) {
        const float a = v[2 * p], b = v[2 * p + 1];
        v[2 * p] = a * cos_v[static_cast<size_t>(p)] - b * sin_v[static_cast<size_t>(p)];
        v[2 * p + 1] = a * sin_v[static_cast<size_t>(p)] + b * cos_v[static_cast<size_t>(p)];
      }
    }
  }
}

}  // namespace sp
