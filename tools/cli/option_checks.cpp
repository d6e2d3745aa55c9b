// Numeric option validators and the dense-mode warning.
#include "option_checks.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "prefill_report.h"
#include "shareprefill/error.h"
#include "shareprefill/thread_pool.h"

namespace sp::cli {

CLI::Validator finite_in(double lo, double hi) {
  const std::string range = sp::str("[", lo, ", ", hi, "]");
  return CLI::Validator(
      [lo, hi, range](std::string& input) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(input.c_str(), &end);
        if (input.empty() || end == input.c_str() || *end != '\0')
          return "Value " + input + " is not a number";
        if (!std::isfinite(v) || v < lo || v > hi)
          return "Value " + input + " is not a finite number in " + range;
        return "";
      },
      "FLOAT in " + range);
}

CLI::Option* add_threads_option(CLI::App* sub, int& threads) {
  return sub->add_option("--threads", threads, "Worker threads (0 = all cores)")
      ->check(CLI::Range(0, thread_pool::max_threads));
}

CLI::Option* add_chunk_state_option(CLI::App* sub, std::string& state) {
  return sub
      ->add_option("--chunk-state", state,
                   "with --chunk: a fresh sharing state per chunk, or one carried through the "
                   "prompt (pivots kept, patterns extended to each next chunk)")
      ->check(CLI::IsMember({"fresh", "carried"}))
      ->capture_default_str();
}

CLI::Option* add_seed_option(CLI::App* sub, uint64_t& seed, const std::string& help) {
  const CLI::Validator digits_only(
      [](std::string& input) -> std::string {
        // At most 19 digits: below 2^64, which CLI11 would otherwise saturate to silently.
        if (input.empty() || input.size() > 19 ||
            input.find_first_not_of("0123456789") != std::string::npos)
          return "Value " + input + " is not an integer in [0, 10^19)";
        return "";
      },
      "UINT");
  return sub->add_option("--seed", seed, help)->check(digits_only)->capture_default_str();
}

void add_rope_options(CLI::App* sub, std::string& type, double& factor) {
  sub->add_option("--rope-scaling", type, "none | linear | ntk | yarn")
      ->check(CLI::IsMember({"none", "linear", "ntk", "yarn"}))
      ->capture_default_str();
  sub->add_option("--rope-factor", factor, "RoPE scaling factor (prompts up to factor x context)")
      ->check(finite_in(1.0, 1024.0))
      ->capture_default_str();
}

void check_rope_length(const rope_scaling_options& rope, const llama_config& c, int64_t length,
                       const char* fn) {
  check(length <= c.context_length || rope.type != "none", fn, "length ", length,
        " exceeds the trained context of ", c.context_length,
        " tokens: pass --rope-scaling linear|ntk|yarn --rope-factor F");
  check(length <= llama_usable_context(c, rope), fn, "length ", length, " exceeds ", rope.factor,
        " x the trained context of ", c.context_length, " tokens: raise --rope-factor");
}

std::vector<std::string> sparse_only_options_given(const CLI::App* sub) {
  static const char* const names[] = {
      "--gamma",      "--tau-sim",      "--tau-fb",       "--tau-qa",
      "--min-budget", "--max-budget",   "--clusters",     "--pivot-medoid",
      "--gammas",     "--dense-layers", "--share-within-layer", "--pivot-dense",
      "--estimation-blocks"};
  std::vector<std::string> given;
  for (const char* name : names) {
    const CLI::Option* opt = sub->get_option_no_throw(name);
    if (opt != nullptr && opt->count() > 0) given.emplace_back(name);
  }
  return given;
}

void warn_ignored_in_dense(const CLI::App* sub, const std::string& what) {
  const std::vector<std::string> given = sparse_only_options_given(sub);
  if (given.empty()) return;
  std::string list;
  for (const std::string& g : given) list += (list.empty() ? "" : ", ") + g;
  end_progress_line();
  std::fprintf(stderr, "shareprefill: warning: %s %s no effect %s\n", list.c_str(),
               given.size() == 1 ? "has" : "have", what.c_str());
}

}  // namespace sp::cli
