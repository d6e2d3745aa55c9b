// Reporting shared by the model subcommands: per-layer progress on stderr, the prefill summary
// (tokens, times, density per layer, head kinds) as a table or JSON, and peak memory.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "shareprefill/llama_model.h"

namespace sp::cli {

// "prefill [mode] layer k/L" progress on stderr: on a terminal one line overwritten in place
// and cleared at the end; otherwise (a log file, a pipe) one complete line per layer.
std::function<void(int64_t, int64_t)> layer_progress(const std::string& label);

// Ends a terminal progress line left open (by an error mid-prefill) with a newline, so the next
// message starts on its own line.
void end_progress_line();

// Summary of one prefill: keys n_tokens, mode, prefill_ms, attention_ms, plan_ms, density,
// tokens_per_s, kinds (counts per head kind over all layers) and layers (per-layer rows with
// layer, density, plan_ms, attention_ms, kinds and, where some head of the layer met a
// published pattern, the sharing gates' distances gate_distance [H, 2], -1 for the others).
nlohmann::json prefill_summary(const prefill_result& r, const std::string& mode, int64_t n_tokens);

// Prints the summary as one line (and a per-layer table) to `out`.
void print_prefill_summary(FILE* out, const nlohmann::json& summary, bool per_layer);

// Peak resident set size of this process in MiB.
double peak_rss_mib();

}  // namespace sp::cli
