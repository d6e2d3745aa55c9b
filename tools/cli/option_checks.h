// Range checks on numeric options, applied by CLI11 while parsing, so a bad value is refused
// before any work with a message naming the option ("--threads: Value -3 not in range ...").
// Also the warning for options that the chosen attention mode ignores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "command.h"
#include "shareprefill/llama_model.h"

namespace sp::cli {

// Finite numbers in [lo, hi] (CLI::Range lets NaN through and accepts inf for a double bound).
CLI::Validator finite_in(double lo, double hi);

// Adds --threads with the thread pool's bound (0 = one per core).
CLI::Option* add_threads_option(CLI::App* sub, int& threads);

// Adds --seed: an integer in [0, 10^19) (a uint64 option would take -1 as 2^64 - 1 and
// saturate larger values).
CLI::Option* add_seed_option(CLI::App* sub, uint64_t& seed, const std::string& help);

// Adds --chunk-state: fresh (a new sharing state per chunk) or carried (one carried through the
// prompt), for the chunked prefills of bench layer and eval ppl.
CLI::Option* add_chunk_state_option(CLI::App* sub, std::string& state);

// Adds --rope-scaling and --rope-factor (finite, in [1, 1024]).
void add_rope_options(CLI::App* sub, std::string& type, double& factor);

// Throws unless a prompt of `length` tokens fits the model's trained context, or the usable
// context under the --rope-scaling / --rope-factor given (`rope`).
void check_rope_length(const rope_scaling_options& rope, const llama_config& c, int64_t length,
                       const char* fn);

// The planner, cluster-map and dense-layer options given on the command line of `sub`
// (--gamma, --clusters, ...): dense attention ignores them.
std::vector<std::string> sparse_only_options_given(const CLI::App* sub);

// Prints "warning: --gamma, --clusters have no effect in dense mode" when any was given.
void warn_ignored_in_dense(const CLI::App* sub, const std::string& what);

}  // namespace sp::cli
