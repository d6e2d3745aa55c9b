// Shared by the `shareprefill eval ppl|needle|attn` subcommands: the `eval` parent command, the
// common options (model, modes, cluster map and planner parameters, RoPE scaling, threads,
// --json, --png, --gammas) and small output helpers.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attention_options.h"
#include "command.h"
#include "json_output.h"
#include "model_loading.h"

namespace sp::cli {

// The `eval` parent command (created on first use, so each eval_*.cpp can add its child).
CLI::App* eval_app(CLI::App& app);

struct eval_common_options {
  std::string model;
  std::string modes = "dense,vslash,flexprefill,shareprefill";
  attention_options attention;  // clusters + planner parameters (its mode field is unused)
  rope_scaling_options rope;  // --rope-scaling, --rope-factor
  std::string gammas;  // empty = the planner's --gamma only
  int threads = 0;
  json_option json;  // --json [FILE]: one object per result row
  std::string png_dir;
};

void add_eval_common_options(CLI::App* sub, eval_common_options& o);

// The γ values to run: --gammas if given, else the single --gamma.
std::vector<double> eval_gammas(const eval_common_options& o);

// Creates --png DIR if needed and returns DIR/name.
std::string png_path(const std::string& dir, const std::string& name);

}  // namespace sp::cli
