// `shareprefill version`: prints the version and what this build contains.
#include <cstdio>

#include "command.h"

namespace {

void setup_version(CLI::App& app) {
  auto* sub = app.add_subcommand("version", "Print the version and build configuration");
  sub->callback([] {
#ifdef SP_HAVE_CUDA
    const char* cuda = "yes";
#else
    const char* cuda = "no";
#endif
    std::printf("shareprefill 0.1.0 (CUDA: %s)\n", cuda);
  });
}

sp::cli::command_registration reg(setup_version);

}  // namespace
