// Model + tokenizer loading with a progress line.
#include "model_loading.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "shareprefill/error.h"
#include "shareprefill/file_bytes.h"
#include "shareprefill/gguf.h"
#include "shareprefill/model_cache.h"

namespace sp::cli {

loaded_model load_model(const std::string& path, thread_pool& pool) {
  loaded_model m;
  m.path = path.empty() ? ensure_default_model() : path;
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "loading %s ...\n", m.path.c_str());
  m.weights = llama_weights_load(m.path, pool);
  m.tok = std::make_unique<tokenizer>(tokenizer_from_gguf(gguf_file(m.path)));
  const llama_config& c = m.weights.config;
  std::fprintf(stderr, "loaded '%s': %lld layers, %lld/%lld heads, dim %lld, context %lld (%.1f s)\n",
               c.name.c_str(), (long long)c.n_layers, (long long)c.n_heads,
               (long long)c.n_kv_heads, (long long)c.dim, (long long)c.context_length,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return m;
}

std::string read_text_file(const std::string& path) {
  std::string text = read_file_text(path, "read_text_file");  // refuses directories by name
  check(!text.empty(), "read_text_file", "'", path, "' is empty");
  return text;
}

}  // namespace sp::cli
