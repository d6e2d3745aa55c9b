// Prefill summaries and progress output.
#include "prefill_report.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "shareprefill/planner.h"

namespace sp::cli {

namespace {

// True while a terminal progress line is on screen without its newline.
bool progress_line_open = false;

}  // namespace

std::function<void(int64_t, int64_t)> layer_progress(const std::string& label) {
  const bool terminal = isatty(STDERR_FILENO) == 1;
  return [label, terminal](int64_t layer, int64_t layers) {
    if (!terminal) {  // a log file: one complete line per layer
      std::fprintf(stderr, "%s: layer %lld/%lld\n", label.c_str(), (long long)layer + 1,
                   (long long)layers);
      std::fflush(stderr);
      return;
    }
    std::fprintf(stderr, "\r%s: layer %lld/%lld", label.c_str(), (long long)layer + 1,
                 (long long)layers);
    progress_line_open = true;
    if (layer + 1 == layers) {
      std::fprintf(stderr, "\r%*s\r", int(label.size()) + 24, "");
      progress_line_open = false;
    }
    std::fflush(stderr);
  };
}

void end_progress_line() {
  if (!progress_line_open) return;
  std::fputc('\n', stderr);
  progress_line_open = false;
}

static nlohmann::json kinds_json(const std::array<int64_t, 6>& counts) {
  nlohmann::json k = nlohmann::json::object();
  for (int i = 0; i < head_kind_count; ++i)
    if (counts[static_cast<size_t>(i)] > 0)
      k[head_kind_name(static_cast<head_kind>(i))] = counts[static_cast<size_t>(i)];
  return k;
}

nlohmann::json prefill_summary(const prefill_result& r, const std::string& mode, int64_t n_tokens) {
  int64_t tiles = 0, causal = 0;
  std::array<int64_t, 6> kinds{};
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers) {
    tiles += l.tiles;
    causal += l.causal_tiles;
    for (size_t i = 0; i < kinds.size(); ++i) kinds[i] += l.kind_counts[i];
    nlohmann::json layer = {{"layer", l.layer},
                            {"density", l.density()},
                            {"plan_ms", l.plan_ms},
                            {"attention_ms", l.attention_ms},
                            {"kinds", kinds_json(l.kind_counts)}};
    if (std::any_of(l.gate_distance.begin(), l.gate_distance.end(), [](float d) { return d >= 0; }))
      layer["gate_distance"] = l.gate_distance;  // some head met a published pattern
    layers.push_back(std::move(layer));
  }
  return {{"mode", mode},
          {"n_tokens", n_tokens},
          {"prefill_ms", r.total_ms},
          {"attention_ms", r.attention_ms},
          {"plan_ms", r.plan_ms},
          {"density", causal ? double(tiles) / double(causal) : 0.0},
          {"tokens_per_s", n_tokens / (r.total_ms * 1e-3)},
          {"kinds", kinds_json(kinds)},
          {"layers", layers}};
}

void print_prefill_summary(FILE* out, const nlohmann::json& s, bool per_layer) {
  std::fprintf(
      out,
      "[%s] %lld tokens: prefill %.0f ms (%.0f tok/s), attention %.0f ms (planning %.0f ms), "
      "density %.3f, kinds %s\n",
      s.at("mode").get<std::string>().c_str(), (long long)s.at("n_tokens").get<int64_t>(),
      s.at("prefill_ms").get<double>(), s.at("tokens_per_s").get<double>(),
      s.at("attention_ms").get<double>(), s.at("plan_ms").get<double>(),
      s.at("density").get<double>(), s.at("kinds").dump().c_str());
  if (!per_layer) return;
  std::fprintf(out, "  %5s %8s %9s %12s  kinds\n", "layer", "density", "plan_ms", "attention_ms");
  for (const auto& l : s.at("layers"))
    std::fprintf(out, "  %5lld %8.3f %9.1f %12.1f  %s\n", (long long)l.at("layer").get<int64_t>(),
                 l.at("density").get<double>(), l.at("plan_ms").get<double>(),
                 l.at("attention_ms").get<double>(), l.at("kinds").dump().c_str());
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace sp::cli
