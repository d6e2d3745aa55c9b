// Malformed safetensors input (issue 18, items 1, 2 and 10): offsets near 2^63 that overflow an
// adding bounds check, element counts that overflow int64, values nested deeper than the stack
// allows dump() to go, and a directory given as the file. Each must be an sp::error naming the
// file and the tensor, never a wild pointer, a huge allocation or a stack overflow.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "shareprefill/error.h"
#include "shareprefill/safetensors.h"
#include "shareprefill/tensor.h"
#include "test_util.h"

namespace sp {
namespace {

// 8-byte little-endian header length, the header text, then `data_bytes` zero bytes.
std::vector<uint8_t> safetensors_bytes(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>((header.size() >> (8 * i)) & 0xff));
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

std::string load_error(const std::string& header, size_t data_bytes) {
  return testing::error_of(
      [&] { safetensors_from_bytes(safetensors_bytes(header, data_bytes), "x.st"); });
}

TEST(SafetensorsBad, ValidFileLoads) {
  const safetensors_file f = safetensors_from_bytes(
      safetensors_bytes(R"({"t": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})", 24),
      "x.st");
  ASSERT_TRUE(f.has("t"));
  EXPECT_EQ(f.get("t").numel(), 6);
  EXPECT_EQ(find_non_finite(f.get("t")), -1);
}

TEST(SafetensorsBad, MisalignedDataIsReadThroughAnAlignedCopy) {
  // A header whose length is not a multiple of 4 misaligns the data (found by fuzz_safetensors:
  // UBSan reported a misaligned float load in find_non_finite); an F16 tensor of 1 element puts
  // the next F32 tensor at offset 2.
  std::string header = R"({"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},)"
                       R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]}})";
  while ((8 + header.size()) % 4 != 1) header += ' ';  // data at 1 mod 4: both misaligned
  std::vector<uint8_t> bytes = safetensors_bytes(header, 10);
  const float two[2] = {1.5f, -2.0f};
  std::memcpy(&bytes[bytes.size() - 8], two, 8);
  const safetensors_file f = safetensors_from_bytes(bytes, "x.st");
  const tensor_view& b = f.get("b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data) % alignof(float), 0u);
  EXPECT_EQ(b.as<const float>()[0], 1.5f);
  EXPECT_EQ(b.as<const float>()[1], -2.0f);
  EXPECT_EQ(find_non_finite(f.get("a")), -1);
}

TEST(SafetensorsBad, OffsetsNearInt64MaxAreOutsideTheData) {
  // data_begin + end wraps negative, so "data_begin + end <= size" passed and the view pointed
  // 2^63 bytes past the buffer.
  const std::string err = load_error(
      R"({"t": {"dtype": "F32", "shape": [1],
                "data_offsets": [9223372036854775800, 9223372036854775804]}})",
      16);
  EXPECT_NE(err.find("[safetensors_load] x.st: tensor 't': data_offsets "), std::string::npos)
      << err;
  EXPECT_NE(err.find("outside the data section of 16 bytes"), std::string::npos) << err;
  EXPECT_NE(
      load_error(
          R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 9223372036854775807]}})", 16)
          .find("outside the data section"),
      std::string::npos);
}

TEST(SafetensorsBad, ElementCountOverflowIsAnError) {
  // 2^62 * 4 * 4 elements wrap to 0, matching 0 bytes of data.
  const std::string err = load_error(
      R"({"t": {"dtype": "F32", "shape": [4611686018427387904, 4, 4], "data_offsets": [0, 0]}})",
      0);
  EXPECT_NE(
      err.find("x.st: tensor 't': byte size of shape [4611686018427387904,4,4] overflows int64"),
      std::string::npos)
      << err;
  // Zero extents make an empty tensor whatever the others are (found by fuzz_safetensors:
  // [2^62, 4, 0] overflowed in tensor_view::numel()).
  for (const std::string shape : {"[4611686018427387904, 0]", "[4611686018427387904, 4, 0]",
                                  "[0, 4611686018427387904, 4]"}) {
    const safetensors_file f = safetensors_from_bytes(
        safetensors_bytes(
            R"({"t": {"dtype": "F32", "shape": )" + shape + R"(, "data_offsets": [0, 0]}})", 0),
        "x.st");
    EXPECT_EQ(f.get("t").numel(), 0) << shape;
    EXPECT_TRUE(f.get("t").is_contiguous()) << shape;
    EXPECT_EQ(find_non_finite(f.get("t")), -1) << shape;
    // Found by fuzz_safetensors: converting an empty view passed null pointers to memcpy.
    EXPECT_NO_THROW(convert_to_fp32(nullptr, f.get("t"))) << shape;
  }
}

TEST(SafetensorsBad, DeeplyNestedValueGetsAShortMessage) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  for (const std::string field : {"dtype", "shape", "data_offsets"}) {
    std::string header = R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
    const std::string key = "\"" + field + "\": ";
    const size_t at = header.find(key) + key.size();
    const size_t end = field == "dtype" ? header.find(',', at) : header.find(']', at) + 1;
    header.replace(at, end - at, deep);
    const std::string err = load_error(header, 4);
    EXPECT_NE(err.find("tensor 't'"), std::string::npos) << field;
    EXPECT_LT(err.size(), 300u) << field;
  }
}

TEST(SafetensorsBad, DirectoryIsNamedAsADirectory) {
  const std::string dir = ::testing::TempDir();
  EXPECT_EQ(testing::error_of([&] { safetensors_load(dir); }),
            "[safetensors_load] '" + dir + "' is a directory, not a file");
}

TEST(SafetensorsBad, TruncatedAndShortFiles) {
  EXPECT_NE(testing::error_of([] {
              safetensors_from_bytes({1, 2, 3}, "x.st");
            }).find("x.st: file too small (3 bytes)"),
            std::string::npos);
  std::vector<uint8_t> b =
      safetensors_bytes(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4);
  b[0] = 0xff;
  b[7] = 0x7f;  // header length near 2^63
  EXPECT_NE(
      testing::error_of([&] { safetensors_from_bytes(b, "x.st"); }).find("exceeds the file size"),
      std::string::npos);
  EXPECT_NE(load_error(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4)
                .find("outside the data section of 4 bytes"),
            std::string::npos);
}

TEST(SafetensorsBad, SavingToAFullDeviceFails) {
  std::vector<float> values(4096, 1.0f);
  const tensor_view v = tensor_view::contiguous(values.data(), dtype::f32, {4096});
  EXPECT_NE(testing::error_of([&] { safetensors_save("/dev/full", {{"t", v}}); })
                .find("write to '/dev/full' failed"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
