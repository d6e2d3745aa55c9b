// Subcommand registry of the `shareprefill` program. Each subcommand lives in its own file and
// registers itself with a static `command_registration`, so adding one needs no edit elsewhere:
//
//   static void setup_bench(CLI::App& app) { auto* sub = app.add_subcommand("bench", "..."); ... }
//   static sp::cli::command_registration reg(setup_bench);
//
// A subcommand's callback throws sp::error on bad input; main() prints it and exits with 1.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace sp::cli {

using command_setup = std::function<void(CLI::App&)>;

std::vector<command_setup>& command_registry();

struct command_registration {
  explicit command_registration(command_setup setup) {
    command_registry().push_back(std::move(setup));
  }
};

}  // namespace sp::cli
