// Cache directory and default-model lookup.
#include "shareprefill/model_cache.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "shareprefill/error.h"

#ifndef SP_SOURCE_DIR
#error "SP_SOURCE_DIR must be defined by the build"
#endif

namespace sp {

std::string cache_dir() {
  if (const char* c = std::getenv("SP_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/shareprefill";
}

std::string default_model_path() { return cache_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }

std::string ensure_default_model() {
  const std::string path = default_model_path();
  if (std::ifstream(path).good()) return path;
  const std::string script = std::string(SP_SOURCE_DIR) + "/scripts/fetch_model.sh";
  std::fprintf(stderr, "default model not cached; fetching it with %s\n", script.c_str());
  const int rc = std::system(("bash '" + script + "' >&2").c_str());
  check(rc == 0, "ensure_default_model", "fetching the default model failed (", script,
        " exited with ", rc, ")");
  check(std::ifstream(path).good(), "ensure_default_model", "fetch finished but ", path,
        " is missing");
  return path;
}

}  // namespace sp
