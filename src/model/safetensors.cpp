// safetensors reading and writing (header JSON + raw little-endian data), used by
// `shareprefill plan --inputs` to load captured per-layer Q/K/V activations.
#include "shareprefill/safetensors.h"

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "shareprefill/checked_math.h"
#include "shareprefill/error.h"
#include "shareprefill/file_bytes.h"
#include "shareprefill/json_excerpt.h"

namespace sp {
namespace {

bool dtype_from_name(const std::string& s, dtype& out) {
  if (s == "F32")
    out = dtype::f32;
  else if (s == "BF16")
    out = dtype::bf16;
  else if (s == "F16")
    out = dtype::f16;
  else
    return false;
  return true;
}

const char* dtype_tag(dtype t) {
  switch (t) {
    case dtype::f32:
      return "F32";
    case dtype::bf16:
      return "BF16";
    case dtype::f16:
      return "F16";
  }
  return "?";
}

}  // namespace

const tensor_view& safetensors_file::get(const std::string& name) const {
  auto it = tensors.find(name);
  check(it != tensors.end(), "safetensors_file::get", path, ": no tensor named '", name, "'");
  return it->second;
}

safetensors_file safetensors_load(const std::string& path) {
  return safetensors_from_bytes(read_file_bytes(path, "safetensors_load"), path);
}

safetensors_file safetensors_from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  const char* fn = "safetensors_load";
  const int64_t size = static_cast<int64_t>(bytes.size());
  check(size >= 8, fn, name, ": file too small (", size, " bytes)");
  safetensors_file f;
  f.path = name;
  f.bytes = std::move(bytes);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | f.bytes[static_cast<size_t>(i)];
  check(header_len <= static_cast<uint64_t>(size - 8), fn, name, ": header length ", header_len,
        " exceeds the file size ", size);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(f.bytes.begin() + 8,
                                   f.bytes.begin() + 8 + static_cast<int64_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    fail(fn, name, ": header is not valid JSON: ", e.what());
  }
  check(header.is_object(), fn, name, ": header must be a JSON object");
  const int64_t data_begin = 8 + static_cast<int64_t>(header_len);
  const int64_t data_size = size - data_begin;
  for (const auto& [tensor, info] : header.items()) {
    if (tensor == "__metadata__") continue;
    check(info.is_object() && info.contains("dtype") && info.contains("shape") &&
              info.contains("data_offsets"),
          fn, name, ": tensor '", tensor, "' lacks dtype/shape/data_offsets");
    dtype t;
    check(info["dtype"].is_string() && dtype_from_name(info["dtype"].get<std::string>(), t), fn,
          name, ": tensor '", tensor, "': unsupported dtype ", json_excerpt(info["dtype"]),
          " (F32, BF16, F16)");
    const auto& shape = info["shape"];
    check(shape.is_array() && !shape.empty() && shape.size() <= static_cast<size_t>(max_rank), fn,
          name, ": tensor '", tensor, "': shape ", json_excerpt(shape), " must have rank 1..",
          max_rank);
    std::vector<int64_t> dims;
    for (const auto& s : shape) {
      check(s.is_number_integer() && s.get<int64_t>() >= 0, fn, name, ": tensor '", tensor,
            "': bad extent ", json_excerpt(s));
      dims.push_back(s.get<int64_t>());
    }
    const int64_t bytes_needed = checked_product(
        dims.data(), static_cast<int>(dims.size()), static_cast<int64_t>(dtype_size(t)), fn, name,
        ": tensor '", tensor, "': byte size of shape ", json_excerpt(shape));
    const auto& off = info["data_offsets"];
    check(off.is_array() && off.size() == 2 && off[0].is_number_integer() &&
              off[1].is_number_integer(),
          fn, name, ": tensor '", tensor, "': bad data_offsets ", json_excerpt(off));
    const int64_t b = off[0].get<int64_t>(), e = off[1].get<int64_t>();
    check(b >= 0 && e >= b && range_within(b, e - b, data_size), fn, name, ": tensor '", tensor,
          "': data_offsets ", json_excerpt(off), " outside the data section of ", data_size,
          " bytes");
    check(e - b == bytes_needed, fn, name, ": tensor '", tensor, "': ", e - b, " bytes for shape ",
          json_excerpt(shape), " of ", dtype_tag(t), " (needs ", bytes_needed, ")");
    void* data = f.bytes.data() + data_begin + b;
    if (reinterpret_cast<uintptr_t>(data) % dtype_size(t) != 0) {
      // Reading a float through a misaligned pointer is undefined behaviour: copy (heap memory
      // is aligned for every dtype).
      const uint8_t* first = static_cast<const uint8_t*>(data);
      f.realigned.emplace_back(first, first + bytes_needed);
      data = f.realigned.back().data();
    }
    tensor_view v;
    switch (dims.size()) {
      case 1:
        v = tensor_view::contiguous(data, t, {dims[0]});
        break;
      case 2:
        v = tensor_view::contiguous(data, t, {dims[0], dims[1]});
        break;
      case 3:
        v = tensor_view::contiguous(data, t, {dims[0], dims[1], dims[2]});
        break;
      default:
        v = tensor_view::contiguous(data, t, {dims[0], dims[1], dims[2], dims[3]});
        break;
    }
    f.tensors[tensor] = v;
  }
  return f;
}

void safetensors_save(const std::string& path,
                      const std::vector<std::pair<std::string, tensor_view>>& tensors) {
  const char* fn = "safetensors_save";
  nlohmann::json header = nlohmann::json::object();
  int64_t offset = 0;
  for (const auto& [name, v] : tensors) {
    check(v.is_contiguous(), fn, "tensor '", name, "' must be contiguous");
    const int64_t bytes = v.numel() * static_cast<int64_t>(dtype_size(v.type));
    std::vector<int64_t> shape(v.shape, v.shape + v.rank);
    header[name] = {
        {"dtype", dtype_tag(v.type)}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  std::ofstream out(path, std::ios::binary);
  check(out.good(), fn, "cannot write '", path, "'");
  const uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, v] : tensors)
    out.write(static_cast<const char*>(v.data),
              static_cast<std::streamsize>(v.numel() * static_cast<int64_t>(dtype_size(v.type))));
  out.flush();
  check(out.good(), fn, "write to '", path, "' failed");
}

}  // namespace sp
