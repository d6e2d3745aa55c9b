// The `eval` parent command and the options and output helpers its subcommands share.
#include "eval_common.h"

#include <sys/stat.h>

#include "option_checks.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"

namespace sp::cli {

CLI::App* eval_app(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_name() == "eval") return sub;
  CLI::App* e = app.add_subcommand(
      "eval", "Accuracy of the attention modes on the real model (perplexity, needle, attention)");
  e->require_subcommand(1);
  return e;
}

void add_eval_common_options(CLI::App* sub, eval_common_options& o) {
  sub->add_option("--model", o.model, "GGUF model (default: the cached SmolLM2-135M-Instruct)");
  sub->add_option("--modes", o.modes, "Comma-separated: dense, vslash, flexprefill, shareprefill")
      ->capture_default_str();
  sub->add_option("--clusters", o.attention.clusters,
                  "Cluster map JSON (default: the shipped map of the model, if any)");
  add_dense_layers_option(sub, o.attention.dense_layers);
  o.attention.given = add_planner_options(sub, o.attention.params);
  sub->add_option("--gammas", o.gammas, "Comma-separated gamma values (default: --gamma)");
  add_rope_options(sub, o.rope.type, o.rope.factor);
  add_threads_option(sub, o.threads);
  add_json_option(sub, o.json, "one object per result row");
  sub->parse_complete_callback([&o, sub] {
    if (eval_parse_modes(o.modes) == std::vector<std::string>{"dense"})
      warn_ignored_in_dense(sub, "with --modes dense");
  });
  sub->add_option("--png", o.png_dir, "Draw the figures into DIR");
}

std::vector<double> eval_gammas(const eval_common_options& o) {
  if (o.gammas.empty()) return {o.attention.params.gamma};
  return eval_parse_numbers(o.gammas, 1e-6, 1.0, "gamma");
}

std::string png_path(const std::string& dir, const std::string& name) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0)
    check(mkdir(dir.c_str(), 0755) == 0, "png_path", "cannot create the folder '", dir, "'");
  return dir + "/" + name;
}

}  // namespace sp::cli
