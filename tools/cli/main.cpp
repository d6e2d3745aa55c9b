// Entry point of the `shareprefill` command-line program: builds the CLI11 app from the
// registered subcommands, runs the chosen one and turns errors into a message and exit code 1.
#include <cstdio>
#include <new>

#include "command.h"
#include "shareprefill/error.h"

namespace sp::cli {

std::vector<command_setup>& command_registry() {
  static std::vector<command_setup> registry;
  return registry;
}

}  // namespace sp::cli

int main(int argc, char** argv) {
  CLI::App app{"shareprefill: fast, accurate sparse prefill for long-context LLMs"};
  app.require_subcommand(1);
  for (auto& setup : sp::cli::command_registry()) setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const sp::error& e) {
    std::fprintf(stderr, "shareprefill: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "shareprefill: error: out of memory: the input needs more memory than this "
                 "machine has (try a shorter prompt)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shareprefill: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
