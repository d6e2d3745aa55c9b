// Entry point of the `shareprefill` program: builds the CLI11 app from the registered
// subcommands, runs the chosen one and turns errors into a message and exit code 1. Output
// failures count as errors: stdout must be open at the start and flushed without error at the
// end (`> /dev/full` or a closed stdout exits 1, not 0 with the results lost).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "command.h"
#include "prefill_report.h"
#include "shareprefill/error.h"

namespace sp::cli {

std::vector<command_setup>& command_registry() {
  static std::vector<command_setup> registry;
  return registry;
}

namespace {

// The leading words of argv name subcommands (`eval ppl ...`); CLI11 answers an unknown one with
// "A subcommand is required". Returns a message naming the word and the choices, or "".
std::string unknown_subcommand(const CLI::App& app, int argc, char** argv) {
  const CLI::App* current = &app;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return "";  // options: the subcommand's own business
    const auto subs = current->get_subcommands([](const CLI::App*) { return true; });
    if (subs.empty()) return "";
    const CLI::App* next = nullptr;
    std::string names;
    for (const CLI::App* sub : subs) {
      if (sub->get_name() == word) next = sub;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (next == nullptr) {
      const std::string where = current == &app ? "" : " of '" + current->get_name() + "'";
      return "unknown subcommand '" + word + "'" + where + " (expected one of: " + names + ")";
    }
    current = next;
  }
  return "";
}

int report_error(const char* kind, const char* message) {
  end_progress_line();
  std::fprintf(stderr, "shareprefill: %s: %s\n", kind, message);
  return 1;
}

}  // namespace
}  // namespace sp::cli

int main(int argc, char** argv) {
  using sp::cli::report_error;
  if (fcntl(STDOUT_FILENO, F_GETFD) == -1)
    return report_error("error", "standard output is closed: nowhere to write the results");
  CLI::App app{"shareprefill: fast, accurate sparse prefill for long-context LLMs"};
  app.require_subcommand(1);
  for (auto& setup : sp::cli::command_registry()) setup(app);
  const std::string unknown = sp::cli::unknown_subcommand(app, argc, argv);
  if (!unknown.empty()) {
    std::fprintf(stderr, "shareprefill: error: %s\nRun with --help for more information.\n",
                 unknown.c_str());
    return 1;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    sp::cli::end_progress_line();
    return app.exit(e);
  } catch (const sp::error& e) {
    return report_error("error", e.what());
  } catch (const std::bad_alloc&) {
    return report_error("error",
                        "out of memory: the input needs more memory than this machine has (try a "
                        "shorter prompt)");
  } catch (const std::exception& e) {
    return report_error("unexpected error", e.what());
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    const std::string why = std::strerror(errno);
    return report_error("error", ("writing to standard output failed: " + why).c_str());
  }
  return 0;
}
