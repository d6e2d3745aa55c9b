// Typed access to GGUF metadata and the tensor table of a parsed gguf_file: lookups by key or
// tensor name, and getters that convert between compatible types (any integer type to int64,
// f32/f64 to double) and fail with the key, its actual type and the expected type otherwise.
#include <cstring>
#include <limits>

#include "shareprefill/error.h"
#include "shareprefill/gguf.h"

namespace sp {
namespace {

bool is_integer(gguf_type t) {
  switch (t) {
    case gguf_type::u8:
    case gguf_type::i8:
    case gguf_type::u16:
    case gguf_type::i16:
    case gguf_type::u32:
    case gguf_type::i32:
    case gguf_type::u64:
    case gguf_type::i64:
      return true;
    default:
      return false;
  }
}

bool is_unsigned(gguf_type t) {
  return t == gguf_type::u8 || t == gguf_type::u16 || t == gguf_type::u32 || t == gguf_type::u64;
}

[[noreturn]] void wrong_type(const char* fn, const gguf_kv& kv, const char* expected) {
  std::string actual = gguf_type_name(kv.type);
  if (kv.type == gguf_type::array) actual = str("array of ", gguf_type_name(kv.array_type));
  fail(fn, "key '", kv.key, "' has type ", actual, ", expected ", expected);
}

int64_t scalar_int(const gguf_kv& kv, const char* fn) {
  if (!is_integer(kv.type)) wrong_type(fn, kv, "an integer");
  if (!is_unsigned(kv.type)) return kv.i;
  if (kv.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail(fn, "key '", kv.key, "' value ", kv.u, " does not fit in int64");
  }
  return static_cast<int64_t>(kv.u);
}

// Reads element i of a numeric array stored as little-endian bytes.
template <class T>
T raw_at(const gguf_kv& kv, int64_t i) {
  T v;
  std::memcpy(&v, kv.raw.data() + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}

std::vector<int64_t> int_array(const gguf_kv& kv, const char* fn) {
  if (kv.type != gguf_type::array || !is_integer(kv.array_type)) {
    wrong_type(fn, kv, "an array of integers");
  }
  std::vector<int64_t> out(static_cast<size_t>(kv.array_size));
  for (int64_t i = 0; i < kv.array_size; ++i) {
    int64_t v = 0;
    switch (kv.array_type) {
      case gguf_type::u8:
        v = raw_at<uint8_t>(kv, i);
        break;
      case gguf_type::i8:
        v = raw_at<int8_t>(kv, i);
        break;
      case gguf_type::u16:
        v = raw_at<uint16_t>(kv, i);
        break;
      case gguf_type::i16:
        v = raw_at<int16_t>(kv, i);
        break;
      case gguf_type::u32:
        v = raw_at<uint32_t>(kv, i);
        break;
      case gguf_type::i32:
        v = raw_at<int32_t>(kv, i);
        break;
      case gguf_type::i64:
        v = raw_at<int64_t>(kv, i);
        break;
      case gguf_type::u64: {
        const uint64_t u = raw_at<uint64_t>(kv, i);
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          fail(fn, "key '", kv.key, "' element ", i, " value ", u, " does not fit in int64");
        }
        v = static_cast<int64_t>(u);
        break;
      }
      default:
        break;
    }
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

}  // namespace

const gguf_kv* gguf_file::find(const std::string& key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const gguf_kv& gguf_file::require(const std::string& key, const char* fn) const {
  const gguf_kv* kv = find(key);
  if (!kv) fail(fn, "key '", key, "' not found in ", path_);
  return *kv;
}

int64_t gguf_file::get_int(const std::string& key) const {
  return scalar_int(require(key, "gguf_file::get_int"), "gguf_file::get_int");
}

double gguf_file::get_float(const std::string& key) const {
  const gguf_kv& kv = require(key, "gguf_file::get_float");
  if (kv.type != gguf_type::f32 && kv.type != gguf_type::f64) {
    wrong_type("gguf_file::get_float", kv, "float32 or float64");
  }
  return kv.f;
}

bool gguf_file::get_bool(const std::string& key) const {
  const gguf_kv& kv = require(key, "gguf_file::get_bool");
  if (kv.type != gguf_type::boolean) wrong_type("gguf_file::get_bool", kv, "bool");
  return kv.u != 0;
}

const std::string& gguf_file::get_string(const std::string& key) const {
  const gguf_kv& kv = require(key, "gguf_file::get_string");
  if (kv.type != gguf_type::string) wrong_type("gguf_file::get_string", kv, "string");
  return kv.s;
}

int64_t gguf_file::get_int_or(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double gguf_file::get_float_or(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool gguf_file::get_bool_or(const std::string& key, bool fallback) const {
  return has(key) ? get_bool(key) : fallback;
}

std::string gguf_file::get_string_or(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

const std::vector<std::string>& gguf_file::get_string_array(const std::string& key) const {
  const char* fn = "gguf_file::get_string_array";
  const gguf_kv& kv = require(key, fn);
  if (kv.type != gguf_type::array || kv.array_type != gguf_type::string) {
    wrong_type(fn, kv, "an array of string");
  }
  return kv.strings;
}

std::vector<int64_t> gguf_file::get_int_array(const std::string& key) const {
  const char* fn = "gguf_file::get_int_array";
  return int_array(require(key, fn), fn);
}

std::vector<int32_t> gguf_file::get_int32_array(const std::string& key) const {
  const char* fn = "gguf_file::get_int32_array";
  const gguf_kv& kv = require(key, fn);
  const std::vector<int64_t> wide = int_array(kv, fn);
  std::vector<int32_t> out(wide.size());
  for (size_t i = 0; i < wide.size(); ++i) {
    if (wide[i] < std::numeric_limits<int32_t>::min() ||
        wide[i] > std::numeric_limits<int32_t>::max()) {
      fail(fn, "key '", key, "' element ", i, " value ", wide[i], " does not fit in int32");
    }
    out[i] = static_cast<int32_t>(wide[i]);
  }
  return out;
}

std::vector<float> gguf_file::get_float_array(const std::string& key) const {
  const char* fn = "gguf_file::get_float_array";
  const gguf_kv& kv = require(key, fn);
  if (kv.type != gguf_type::array ||
      (kv.array_type != gguf_type::f32 && kv.array_type != gguf_type::f64)) {
    wrong_type(fn, kv, "an array of float32 or float64");
  }
  std::vector<float> out(static_cast<size_t>(kv.array_size));
  for (int64_t i = 0; i < kv.array_size; ++i) {
    out[static_cast<size_t>(i)] = kv.array_type == gguf_type::f32
                                      ? raw_at<float>(kv, i)
                                      : static_cast<float>(raw_at<double>(kv, i));
  }
  return out;
}

gguf_type gguf_file::array_type(const std::string& key) const {
  const gguf_kv& kv = require(key, "gguf_file::array_type");
  if (kv.type != gguf_type::array) wrong_type("gguf_file::array_type", kv, "an array");
  return kv.array_type;
}

int64_t gguf_file::array_size(const std::string& key) const {
  const gguf_kv& kv = require(key, "gguf_file::array_size");
  if (kv.type != gguf_type::array) wrong_type("gguf_file::array_size", kv, "an array");
  return kv.array_size;
}

const gguf_tensor_info* gguf_file::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const gguf_tensor_info& gguf_file::tensor(const std::string& name) const {
  const gguf_tensor_info* t = find_tensor(name);
  if (!t) fail("gguf_file::tensor", "tensor '", name, "' not found in ", path_);
  return *t;
}

}  // namespace sp
