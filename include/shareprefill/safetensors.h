// Minimal safetensors reader: an 8-byte little-endian header length, a JSON header mapping
// tensor names to {dtype, shape, data_offsets}, then the raw data. Supports F32, BF16 and F16.
// The whole file is read into memory; views into it stay valid while the file object lives.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "shareprefill/tensor.h"

namespace sp {

struct safetensors_file {
  std::string path;
  std::vector<uint8_t> bytes;                  // the whole file
  std::map<std::string, tensor_view> tensors;  // views into bytes or realigned (contiguous)
  // Copies of the tensors whose data in `bytes` is not aligned to their element size (the format
  // does not require it: an unpadded header leaves every tensor misaligned).
  std::vector<std::vector<uint8_t>> realigned;

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  const tensor_view& get(const std::string& name) const;  // throws naming the file and tensor
};

// Throws sp::error on I/O problems, a malformed header, unsupported dtypes or offsets that do
// not match the shape.
safetensors_file safetensors_load(const std::string& path);
// The same from the file's bytes; `name` stands for the file in error messages.
safetensors_file safetensors_from_bytes(std::vector<uint8_t> bytes, const std::string& name);

// Writes tensors (any supported dtype, contiguous) to a new file; for tests and tools.
void safetensors_save(const std::string& path,
                      const std::vector<std::pair<std::string, tensor_view>>& tensors);

}  // namespace sp
