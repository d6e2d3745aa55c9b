// Where fetched models and corpora live: $SP_CACHE, default ~/.cache/shareprefill (never inside
// the repository), and the default model of the project.
#pragma once

#include <string>

namespace sp {

std::string cache_dir();
// Path of the default model (SmolLM2-135M-Instruct Q4_1) inside cache_dir(); may not exist.
std::string default_model_path();
// Returns default_model_path(), running scripts/fetch_model.sh of the source tree first when the
// file is missing. Throws sp::error when fetching fails.
std::string ensure_default_model();

}  // namespace sp
