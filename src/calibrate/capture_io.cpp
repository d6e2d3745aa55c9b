// Saving and loading captured calibration inputs (every head's block attention and vs coverage
// per input) so clustering settings can be explored without re-running the model. The format is
// a private little-endian binary (magic "SPCALIB1"); loading validates every input.
#include <cstring>
#include <fstream>

#include "shareprefill/calibrate.h"
#include "shareprefill/checked_math.h"
#include "shareprefill/error.h"
#include "shareprefill/file_bytes.h"

namespace sp {
namespace {

constexpr char magic[8] = {'S', 'P', 'C', 'A', 'L', 'I', 'B', '1'};
constexpr const char* load_fn = "load_calibration_inputs";

void put_i64(std::ofstream& f, int64_t v) {
  f.write(reinterpret_cast<const char*>(&v), 8);
}

// Reads from the file's bytes; every count is checked against the bytes that remain before
// anything is sized by it.
class capture_cursor {
 public:
  capture_cursor(const std::vector<uint8_t>& bytes, const std::string& name)
      : bytes_(bytes), name_(name) {}

  int64_t remaining() const { return static_cast<int64_t>(bytes_.size()) - pos_; }

  void read_bytes(void* dst, int64_t n, const char* what) {
    if (!range_within(pos_, n, static_cast<int64_t>(bytes_.size())))
      fail(load_fn, name_, ": truncated file while reading ", what, " (needs ", n,
           " bytes at offset ", pos_, ", ", remaining(), " left)");
    if (n > 0) std::memcpy(dst, bytes_.data() + pos_, static_cast<size_t>(n));
    pos_ += n;
  }
  int64_t read_i64(const char* what) {
    int64_t v = 0;
    read_bytes(&v, 8, what);
    return v;
  }
  void read_floats(std::vector<float>& dst, int64_t n, const char* what) {
    check(n >= 0 && n <= remaining() / 4, load_fn, name_, ": ", what, " claims ", n,
          " floats but only ", remaining(), " bytes are left (truncated file or corrupt shape)");
    dst.resize(static_cast<size_t>(n));
    read_bytes(dst.data(), n * 4, what);
  }

 private:
  const std::vector<uint8_t>& bytes_;
  const std::string& name_;
  int64_t pos_ = 0;
};

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
  f.flush();
  check(f.good(), "save_calibration_inputs", "write to '", path, "' failed");
}

std::vector<calibration_input> load_calibration_inputs(const std::string& path) {
  return calibration_inputs_from_bytes(read_file_bytes(path, load_fn), path);
}

std::vector<calibration_input> calibration_inputs_from_bytes(const std::vector<uint8_t>& bytes,
                                                             const std::string& name) {
  const char* fn = load_fn;
  capture_cursor c(bytes, name);
  char head[8] = {};
  check(bytes.size() >= 8, fn, name, ": not a calibration capture (", bytes.size(),
        " bytes, too short for the magic)");
  c.read_bytes(head, 8, "magic");
  check(std::memcmp(head, magic, 8) == 0, fn, name, ": not a calibration capture (bad magic)");
  const int64_t count = c.read_i64("input count");
  // Every input takes at least its six int64 fields.
  check(count > 0 && count <= c.remaining() / 48, fn, name, ": bad input count ", count,
        " for a file of ", bytes.size(), " bytes");
  std::vector<calibration_input> out(static_cast<size_t>(count));
  for (auto& in : out) {
    const int64_t len = c.read_i64("text name length");
    check(len >= 0 && len < 4096 && len <= c.remaining(), fn, name, ": bad text name length ", len);
    in.text.resize(static_cast<size_t>(len));
    c.read_bytes(in.text.data(), len, "text name");
    in.n_tokens = c.read_i64("token count");
    in.block_size = c.read_i64("block size");
    in.n_blocks = c.read_i64("block count");
    in.layers = c.read_i64("layer count");
    in.heads = c.read_i64("head count");
    check(in.layers > 0 && in.heads > 0 && in.n_blocks > 0 && in.layers < (1 << 20) &&
              in.heads < (1 << 20) && in.layers * in.heads < (1 << 20) && in.n_blocks < (1 << 16),
          fn, name, ": bad shape ", in.layers, " x ", in.heads, " x ", in.n_blocks);
    const int64_t heads = in.layers * in.heads;
    const int64_t attention_values =
        checked_mul(checked_mul(heads, in.n_blocks, fn, name, ": block attention size"),
                    in.n_blocks, fn, name, ": block attention size");
    c.read_floats(in.block_attention, attention_values, "block attention");
    c.read_floats(in.vs_coverage, heads, "vs coverage");
    in.validate();
  }
  check(c.remaining() == 0, fn, name, ": ", c.remaining(),
        " bytes of trailing data after the last input");
  return out;
}

}  // namespace sp
