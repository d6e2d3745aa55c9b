// GGUF reader and dequantisers against golden data written by gguf-py
// (scripts/make_gguf_golden.py) for tests/data/tiny.gguf: every supported tensor type, metadata
// of every value type, GGUF v2 vs v3, and typed-getter errors. The real model's golden rows are
// checked in test_gguf_model.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "model/test_gguf_support.h"
#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"

namespace {

using nlohmann::json;
using sp_test::data_dir;
using sp_test::expect_values;
using sp_test::golden;
using sp_test::row_tolerance;

TEST(gguf_tiny, header_and_table_match_gguf_py) {
  const json& g = golden().at("tiny");
  const sp::gguf_file f(data_dir() + "tiny.gguf");
  EXPECT_EQ(f.version(), g.at("version").get<uint32_t>());
  EXPECT_EQ(f.alignment(), g.at("alignment").get<int64_t>());
  EXPECT_EQ(f.data_offset(), g.at("data_offset").get<int64_t>());
  ASSERT_EQ(f.tensors().size(), g.at("tensors").size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const sp::gguf_tensor_info& t = f.tensors()[i];
    const json& w = g.at("tensors")[i];
    EXPECT_EQ(t.name, w.at("name"));
    EXPECT_STREQ(sp::ggml_type_name(t.type), w.at("type").get<std::string>().c_str()) << t.name;
    ASSERT_EQ(t.n_dims, static_cast<int>(w.at("ne").size())) << t.name;
    for (int d = 0; d < t.n_dims; ++d) EXPECT_EQ(t.ne[d], w.at("ne")[d].get<int64_t>()) << t.name;
    EXPECT_EQ(f.data_offset() + static_cast<int64_t>(t.offset), w.at("file_offset").get<int64_t>());
    EXPECT_EQ(t.n_bytes, w.at("n_bytes").get<int64_t>()) << t.name;
    EXPECT_EQ(t.n_bytes, sp::ggml_row_bytes(t.type, t.n_elements)) << t.name;
    EXPECT_EQ(&f.tensor(t.name), &t);
  }
  EXPECT_EQ(f.find_tensor("absent"), nullptr);
  EXPECT_THROW(f.tensor("absent"), sp::error);
}

TEST(gguf_tiny, metadata_of_every_type_matches_gguf_py) {
  const json& meta = golden().at("tiny").at("metadata");
  const sp::gguf_file f(data_dir() + "tiny.gguf");
  ASSERT_EQ(f.metadata().size(), meta.size());
  for (const auto& item : meta.items()) {
    const std::string& key = item.key();
    const json& w = item.value();
    const sp::gguf_kv* kv = f.find(key);
    ASSERT_NE(kv, nullptr) << key;
    EXPECT_STREQ(sp::gguf_type_name(kv->type), w.at("type").get<std::string>().c_str()) << key;
    const std::string type = w.at("type");
    const json& v = w.at("value");
    if (type == "string") {
      EXPECT_EQ(f.get_string(key), v.get<std::string>()) << key;
    } else if (type == "bool") {
      EXPECT_EQ(f.get_bool(key), v.get<bool>()) << key;
    } else if (type == "float32" || type == "float64") {
      EXPECT_EQ(f.get_float(key), v.get<double>()) << key;
    } else if (type == "uint64" && v.get<uint64_t>() > uint64_t{INT64_MAX}) {
      EXPECT_EQ(kv->u, v.get<uint64_t>()) << key;
      EXPECT_THROW(f.get_int(key), sp::error) << key;
    } else if (type != "array") {
      EXPECT_EQ(f.get_int(key), v.get<int64_t>()) << key;
    } else {
      const std::string elem = w.at("array_type");
      EXPECT_STREQ(sp::gguf_type_name(f.array_type(key)), elem.c_str()) << key;
      EXPECT_EQ(f.array_size(key), static_cast<int64_t>(v.size())) << key;
      if (elem == "string") {
        EXPECT_EQ(f.get_string_array(key), v.get<std::vector<std::string>>()) << key;
      } else if (elem == "float32" || elem == "float64") {
        const std::vector<float> got = f.get_float_array(key);
        for (size_t i = 0; i < v.size(); ++i) {
          EXPECT_EQ(got[i], static_cast<float>(v[i].get<double>())) << key << "[" << i << "]";
        }
      } else if (elem == "bool") {
        for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(kv->raw[i] != 0, v[i].get<bool>()) << key;
      } else {
        EXPECT_EQ(f.get_int_array(key), v.get<std::vector<int64_t>>()) << key;
      }
    }
  }
}

TEST(gguf_tiny, getters_reject_wrong_types_and_missing_keys) {
  const sp::gguf_file f(data_dir() + "tiny.gguf");
  auto message = [&](auto&& call) {
    try {
      call();
    } catch (const sp::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([&] { f.get_int("test.string"); }),
            "[gguf_file::get_int] key 'test.string' has type string, expected an integer");
  EXPECT_EQ(message([&] { f.get_string("test.arr_str"); }),
            "[gguf_file::get_string] key 'test.arr_str' has type array of string, expected string");
  EXPECT_EQ(message([&] { f.get_float("test.u8"); }),
            "[gguf_file::get_float] key 'test.u8' has type uint8, expected float32 or float64");
  EXPECT_NE(message([&] { f.get_bool("nope"); }).find("key 'nope' not found"), std::string::npos);
  EXPECT_NE(message([&] { f.get_int32_array("test.arr_u32"); }).find("does not fit in int32"),
            std::string::npos);
  EXPECT_THROW(f.get_string_array("test.arr_i32"), sp::error);
  EXPECT_THROW(f.get_float_array("test.arr_i32"), sp::error);
  EXPECT_THROW(f.get_int_array("test.arr_str"), sp::error);
  EXPECT_THROW(f.array_size("test.u8"), sp::error);
  EXPECT_EQ(f.get_int32_array("test.arr_i32"), (std::vector<int32_t>{-7, 0, 7, 2147483647}));
  EXPECT_EQ(f.get_int_or("nope", 42), 42);
  EXPECT_EQ(f.get_string_or("nope", "x"), "x");
  EXPECT_EQ(f.get_float_or("test.f64", 0.0), 2.718281828459045);
  EXPECT_THROW(f.get_int_or("test.string", 1), sp::error);
}

TEST(gguf_tiny, every_tensor_dequantises_like_gguf_py) {
  const json& values = golden().at("tiny").at("values");
  const sp::gguf_file f(data_dir() + "tiny.gguf");
  int checked = 0;
  for (const sp::gguf_tensor_info& t : f.tensors()) {
    if (!values.contains(t.name)) {
      EXPECT_FALSE(sp::dequantize_supported(t.type)) << t.name;
      EXPECT_THROW(sp::dequantize_tensor(t), sp::error) << t.name;
      continue;
    }
    const std::vector<float> want = values.at(t.name).get<std::vector<float>>();
    const std::vector<float> got = sp::dequantize_tensor(t);
    expect_values(got, want, row_tolerance(t.type, want), t.name);
    // Row access gives the same values.
    std::vector<float> row(static_cast<size_t>(t.ne[0]));
    const int64_t last = t.n_rows() - 1;
    sp::dequantize_rows(row.data(), t, last, 1);
    const std::vector<float> want_row(want.begin() + last * t.ne[0], want.end());
    expect_values(row, want_row, row_tolerance(t.type, want_row), t.name + " last row");
    ++checked;
  }
  EXPECT_EQ(checked, 12);  // F32 (2), F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K
}

TEST(gguf_tiny, version_2_reads_like_version_3) {
  std::vector<uint8_t> bytes = sp_test::read_bytes(data_dir() + "tiny.gguf");
  ASSERT_GT(bytes.size(), 8u);
  bytes[4] = 2;
  const sp::gguf_file v2 = sp::gguf_file::from_memory(bytes.data(), bytes.size());
  const sp::gguf_file v3(data_dir() + "tiny.gguf");
  EXPECT_EQ(v2.version(), 2u);
  EXPECT_EQ(v2.path(), "<memory>");
  ASSERT_EQ(v2.tensors().size(), v3.tensors().size());
  for (size_t i = 0; i < v3.tensors().size(); ++i) {
    const sp::gguf_tensor_info& a = v2.tensors()[i];
    const sp::gguf_tensor_info& b = v3.tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.offset, b.offset);
    EXPECT_EQ(0, std::memcmp(a.data, b.data, static_cast<size_t>(a.n_bytes))) << a.name;
  }
  EXPECT_EQ(v2.get_string_array("test.arr_str"), v3.get_string_array("test.arr_str"));
}

TEST(gguf_tiny, file_moves_keep_tensor_data_valid) {
  static_assert(!std::is_copy_constructible<sp::gguf_file>::value, "gguf_file owns a mapping");
  const std::vector<float> want = golden().at("tiny").at("values").at("t_f32");
  sp::gguf_file a(data_dir() + "tiny.gguf");
  const uint8_t* data = a.tensor("t_f32").data;
  sp::gguf_file b(std::move(a));
  EXPECT_EQ(b.tensor("t_f32").data, data);
  sp::gguf_file c(data_dir() + "tiny.gguf");
  c = std::move(b);
  EXPECT_EQ(c.tensor("t_f32").data, data);
  EXPECT_EQ(sp::dequantize_tensor(c.tensor("t_f32")), want);
}

}  // namespace
