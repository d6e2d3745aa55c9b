// Loading the model and tokenizer for the model subcommands, and reading prompt files.
#pragma once

#include <memory>
#include <string>

#include "shareprefill/llama_model.h"
#include "shareprefill/tokenizer.h"

namespace sp::cli {

struct loaded_model {
  std::string path;
  llama_weights weights;
  std::unique_ptr<tokenizer> tok;
};

// path "" = the cached default model (fetched when missing). Prints a line on stderr.
loaded_model load_model(const std::string& path, thread_pool& pool);

// Whole file as bytes; throws sp::error naming the file when it cannot be read or is empty.
std::string read_text_file(const std::string& path);

}  // namespace sp::cli
