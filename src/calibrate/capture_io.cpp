// Saving and loading captured calibration inputs (every head's block attention and vs coverage
// per input) so clustering settings can be explored without re-running the model. The format is
// a private little-endian binary (magic "SPCALIB1"); loading validates every input.
#include <cstring>
#include <fstream>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"

namespace sp {
namespace {

constexpr char magic[8] = {'S', 'P', 'C', 'A', 'L', 'I', 'B', '1'};

void put_i64(std::ofstream& f, int64_t v) { f.write(reinterpret_cast<const char*>(&v), 8); }

int64_t get_i64(std::ifstream& f, const std::string& path) {
  int64_t v = 0;
  f.read(reinterpret_cast<char*>(&v), 8);
  check(f.good(), "load_calibration_inputs", path, ": truncated file");
  return v;
}

void get_floats(std::ifstream& f, std::vector<float>& v, int64_t n, const std::string& path) {
  check(n >= 0 && n <= (int64_t{1} << 32), "load_calibration_inputs", path, ": bad tensor size ",
        n);
  v.resize(static_cast<size_t>(n));
  f.read(reinterpret_cast<char*>(v.data()), n * 4);
  check(f.good(), "load_calibration_inputs", path, ": truncated file");
}

}  // namespace

void save_calibration_inputs(const std::string& path,
                             const std::vector<calibration_input>& inputs) {
  std::ofstream f(path, std::ios::binary);
  check(f.good(), "save_calibration_inputs", "cannot write '", path, "'");
  f.write(magic, 8);
  put_i64(f, static_cast<int64_t>(inputs.size()));
  for (const auto& in : inputs) {
    in.validate();
    put_i64(f, static_cast<int64_t>(in.text.size()));
    f.write(in.text.data(), static_cast<std::streamsize>(in.text.size()));
    for (int64_t v : {in.n_tokens, in.block_size, in.n_blocks, in.layers, in.heads}) put_i64(f, v);
    f.write(reinterpret_cast<const char*>(in.block_attention.data()),
            static_cast<std::streamsize>(in.block_attention.size() * 4));
    f.write(reinterpret_cast<const char*>(in.vs_coverage.data()),
            static_cast<std::streamsize>(in.vs_coverage.size() * 4));
  }
  check(f.good(), "save_calibration_inputs", "write to '", path, "' failed");
}

std::vector<calibration_input> load_calibration_inputs(const std::string& path) {
  const char* fn = "load_calibration_inputs";
  std::ifstream f(path, std::ios::binary);
  check(f.good(), fn, "cannot open '", path, "'");
  char head[8] = {};
  f.read(head, 8);
  check(f.good() && std::memcmp(head, magic, 8) == 0, fn, path,
        ": not a calibration capture (bad magic)");
  const int64_t count = get_i64(f, path);
  check(count > 0 && count < 10000, fn, path, ": bad input count ", count);
  std::vector<calibration_input> out(static_cast<size_t>(count));
  for (auto& in : out) {
    const int64_t len = get_i64(f, path);
    check(len >= 0 && len < 4096, fn, path, ": bad text name length ", len);
    in.text.resize(static_cast<size_t>(len));
    f.read(in.text.data(), len);
    in.n_tokens = get_i64(f, path);
    in.block_size = get_i64(f, path);
    in.n_blocks = get_i64(f, path);
    in.layers = get_i64(f, path);
    in.heads = get_i64(f, path);
    check(in.layers > 0 && in.heads > 0 && in.n_blocks > 0 && in.layers * in.heads < (1 << 20) &&
              in.n_blocks < (1 << 16),
          fn, path, ": bad shape ", in.layers, " x ", in.heads, " x ", in.n_blocks);
    get_floats(f, in.block_attention, in.layers * in.heads * in.n_blocks * in.n_blocks, path);
    get_floats(f, in.vs_coverage, in.layers * in.heads, path);
    in.validate();
  }
  return out;
}

}  // namespace sp
