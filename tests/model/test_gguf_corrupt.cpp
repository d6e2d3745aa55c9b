// Malformed GGUF input: each corruption (bad magic, unsupported version, truncation anywhere,
// absurd counts and lengths, out-of-range or misaligned tensor data, unknown types, duplicates)
// must raise an sp::error whose text names the problem and the key or tensor, never crash or
// allocate by a corrupt count. Also seeded random byte flips of a valid file.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "model/test_gguf_support.h"
#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"

namespace {

using sp_test::gguf_builder;
using sp_test::put;
using sp_test::put_str;

// A small valid file: a string, a string array, an F32 [4, 2] and a Q8_0 [32, 1] tensor.
gguf_builder base_builder() {
  gguf_builder b;
  b.add_string("general.name", "base");
  b.add_string_array("tok", {"a", "bc"});
  b.add_f32_tensor("w", {4, 2});
  b.tensors.push_back({"q", {32, 1}, 8, std::vector<uint8_t>(34, 1)});
  return b;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    sp::gguf_file::from_memory(bytes.data(), bytes.size());
  } catch (const sp::error& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_ERROR_HAS(bytes, text) \
  EXPECT_NE(parse_error(bytes).find(text), std::string::npos) << parse_error(bytes)

TEST(gguf_corrupt, base_file_is_valid) {
  gguf_builder b = base_builder();
  const std::vector<uint8_t> bytes = b.build();
  const sp::gguf_file f = sp::gguf_file::from_memory(bytes.data(), bytes.size());
  EXPECT_EQ(f.get_string_array("tok"), (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(sp::dequantize_tensor(f.tensor("w")), std::vector<float>(8, 0.5f));
}

TEST(gguf_corrupt, bad_magic_and_versions) {
  gguf_builder b = base_builder();
  std::vector<uint8_t> bytes = b.build();
  bytes[0] = 'X';
  EXPECT_ERROR_HAS(bytes, "[gguf_file] <memory>: bad magic 0x46554758");
  EXPECT_ERROR_HAS(bytes, "not a GGUF file");
  for (uint32_t version : {1u, 99u, 0x03000000u}) {
    b.version = version;
    bytes = b.build();
    const std::string err = parse_error(bytes);
    const char* expected = version == 1 ? "GGUF version 1 is not supported (only versions 2 and 3)"
                           : version == 99 ? "unsupported GGUF version 99"
                                           : "big-endian GGUF files are not supported";
    EXPECT_NE(err.find(expected), std::string::npos) << err;
  }
}

TEST(gguf_corrupt, every_truncation_is_an_error) {
  gguf_builder b = base_builder();
  const std::vector<uint8_t> bytes = b.build();
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    const std::vector<uint8_t> head(bytes.begin(), bytes.begin() + cut);
    const std::string err = parse_error(head);
    const bool named = err.find("truncated file") != std::string::npos ||
                       err.find("past the end of the file") != std::string::npos;
    EXPECT_TRUE(named) << "cut at " << cut << ": " << err;
  }
  auto cut_at = [&](size_t n) { return std::vector<uint8_t>(bytes.begin(), bytes.begin() + n); };
  EXPECT_ERROR_HAS(cut_at(2), "truncated file while reading magic");
  EXPECT_ERROR_HAS(cut_at(6), "truncated file while reading version");
  EXPECT_ERROR_HAS(cut_at(12), "truncated file while reading tensor count");
  EXPECT_ERROR_HAS(cut_at(20), "truncated file while reading metadata count");
  EXPECT_ERROR_HAS(cut_at(b.header_end - 3), "truncated file while reading tensor 'q' data offset");
  EXPECT_ERROR_HAS(cut_at(bytes.size() - 1), "tensor 'q' data [");
  EXPECT_ERROR_HAS(cut_at(bytes.size() - 1), "past the end of the file");
}

TEST(gguf_corrupt, tensor_data_out_of_range_or_misaligned) {
  for (uint64_t offset : {uint64_t{1} << 20, ~uint64_t{0} - 31, uint64_t{64}}) {
    gguf_builder b = base_builder();
    b.tensors[1].has_offset = true;
    b.tensors[1].offset = offset;
    EXPECT_ERROR_HAS(b.build(), "tensor 'q' data [");
  }
  gguf_builder b = base_builder();
  b.tensors[1].has_offset = true;
  b.tensors[1].offset = 8;
  EXPECT_ERROR_HAS(b.build(), "tensor 'q' data offset 8 is not a multiple of the alignment 32");
}

TEST(gguf_corrupt, overlapping_tensor_data_is_an_error) {
  // w: 32 bytes at 0, q: 34 bytes at 32, z: 64 bytes at 96. q moved to 0 shares w's bytes;
  // z moved to 64 runs into q's 34 bytes at 32..66.
  gguf_builder b = base_builder();
  b.add_f32_tensor("z", {16});
  ASSERT_EQ(parse_error(b.build()), "no error");
  b.tensors[1].has_offset = true;
  b.tensors[1].offset = 0;
  EXPECT_ERROR_HAS(b.build(),
                   "tensor 'q' data at offset 0 overlaps tensor 'w' (data offsets [0, 32))");
  b = base_builder();
  b.add_f32_tensor("z", {16});
  b.tensors[2].has_offset = true;
  b.tensors[2].offset = 64;
  std::vector<uint8_t> bytes = b.build();
  bytes.resize(b.data_start + 128, 0);  // room for z at 64
  EXPECT_ERROR_HAS(bytes,
                   "tensor 'z' data at offset 64 overlaps tensor 'q' (data offsets [32, 66))");
}

TEST(gguf_corrupt, bad_tensor_infos) {
  gguf_builder b = base_builder();
  b.tensors[1].type = 99;
  EXPECT_ERROR_HAS(b.build(), "tensor 'q' has unknown type id 99");
  b = base_builder();
  b.tensors[1].ne = {32, 1, 1, 1, 1};
  EXPECT_ERROR_HAS(b.build(), "tensor 'q' has 5 dimensions");
  b = base_builder();
  b.tensors[1].ne = {33, 1};
  EXPECT_ERROR_HAS(b.build(),
                   "tensor 'q' row length 33 is not a multiple of the Q8_0 block size 32");
  b = base_builder();
  b.tensors[0].ne = {uint64_t{1} << 40, uint64_t{1} << 40};
  EXPECT_ERROR_HAS(b.build(), "tensor 'w' element count overflows int64");
  // Found by fuzz_gguf: huge row lengths whose byte size overflows, and huge dimensions next to
  // a zero one (an empty tensor, not an overflow).
  b = base_builder();
  b.tensors[1].ne = {(uint64_t{1} << 63) - 32, 1};  // 2^58 - 1 blocks of 34 bytes
  EXPECT_ERROR_HAS(b.build(), "tensor 'q' byte size overflows int64");
  b = base_builder();
  b.tensors[0].ne = {uint64_t{1} << 62, uint64_t{1} << 62, 0};
  b.tensors[0].data.clear();
  EXPECT_EQ(parse_error(b.build()), "no error");
  b = base_builder();
  b.tensors[0].ne = {~uint64_t{0}};
  EXPECT_ERROR_HAS(b.build(), "tensor 'w' dimension 0 is 18446744073709551615 (too large)");
  b = base_builder();
  b.tensors[1].name = "w";
  EXPECT_ERROR_HAS(b.build(), "duplicate tensor name 'w'");
}

TEST(gguf_corrupt, absurd_counts_and_lengths) {
  gguf_builder b = base_builder();
  std::vector<uint8_t> bytes = b.build();
  std::vector<uint8_t> patched = bytes;
  const uint64_t huge = uint64_t{1} << 62;
  std::memcpy(patched.data() + 8, &huge, 8);
  EXPECT_ERROR_HAS(patched, "tensor count 4611686018427387904 is impossible");
  patched = bytes;
  std::memcpy(patched.data() + 16, &huge, 8);
  EXPECT_ERROR_HAS(patched, "metadata count 4611686018427387904 is impossible");
  // First key length (right after the 24-byte header).
  patched = bytes;
  std::memcpy(patched.data() + 24, &huge, 8);
  EXPECT_ERROR_HAS(patched, "key of metadata entry 0 length 4611686018427387904 exceeds");

  b = gguf_builder();
  b.key("s", 8);
  put<uint64_t>(b.kv, huge);  // string value length
  EXPECT_ERROR_HAS(b.build(), "truncated file while reading value of key 's' (needs");
  b = gguf_builder();
  b.key("a", 9);
  put<uint32_t>(b.kv, 4);
  put<uint64_t>(b.kv, huge);  // array length
  EXPECT_ERROR_HAS(b.build(),
                   "array of key 'a' claims 4611686018427387904 elements of type uint32");
  b = gguf_builder();
  b.key("a", 9);
  put<uint32_t>(b.kv, 8);
  put<uint64_t>(b.kv, 2);
  put_str(b.kv, "ok");
  put<uint64_t>(b.kv, huge);  // second string's length
  EXPECT_ERROR_HAS(b.build(), "truncated file while reading array of key 'a' element 1");
}

TEST(gguf_corrupt, bad_metadata_values) {
  gguf_builder b;
  b.key("k", 13);
  put<uint32_t>(b.kv, 0);
  EXPECT_ERROR_HAS(b.build(), "key 'k' has unknown value type 13");
  b = gguf_builder();
  b.key("k", 9);
  put<uint32_t>(b.kv, 9);
  put<uint64_t>(b.kv, 1);
  EXPECT_ERROR_HAS(b.build(), "key 'k' is a nested array");
  b = gguf_builder();
  b.key("k", 9);
  put<uint32_t>(b.kv, 77);
  EXPECT_ERROR_HAS(b.build(), "key 'k' has unknown array element type 77");
  b = gguf_builder();
  b.key("k", 7);
  put<uint8_t>(b.kv, 2);
  EXPECT_ERROR_HAS(b.build(), "bool value 2 of key 'k' is not 0 or 1");
  b = gguf_builder();
  b.add_u32("k", 1);
  b.add_u32("k", 2);
  EXPECT_ERROR_HAS(b.build(), "duplicate metadata key 'k'");
  b = gguf_builder();
  b.add_u32("general.alignment", 48);
  EXPECT_ERROR_HAS(b.build(), "general.alignment 48 is not a power of two");
  b = gguf_builder();
  b.add_i32("general.alignment", 32);
  EXPECT_ERROR_HAS(b.build(), "general.alignment has type int32, expected uint32");
}

TEST(gguf_corrupt, custom_alignment_is_honoured) {
  gguf_builder b = base_builder();
  b.alignment = 256;
  b.add_u32("general.alignment", 256);
  const std::vector<uint8_t> bytes = b.build();
  const sp::gguf_file f = sp::gguf_file::from_memory(bytes.data(), bytes.size());
  EXPECT_EQ(f.alignment(), 256);
  EXPECT_EQ(f.data_offset(), 256);
  EXPECT_EQ(f.tensor("q").offset, 256u);
  EXPECT_EQ(f.tensor("q").data, bytes.data() + 512);
}

TEST(gguf_corrupt, file_errors_name_the_path) {
  const std::string dir = ::testing::TempDir();
  auto open_error = [](const std::string& path) {
    try {
      sp::gguf_file f(path);
    } catch (const sp::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(open_error(dir + "/no_such_file.gguf").find("cannot open"), std::string::npos);
  EXPECT_NE(open_error(dir).find("is not a regular file"), std::string::npos);
  const std::string path = dir + "/sp_test_gguf_truncated.gguf";
  gguf_builder b = base_builder();
  const std::vector<uint8_t> bytes = b.build();
  for (size_t size : {size_t{0}, size_t{20}}) {
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(size));
    const std::string err = open_error(path);
    EXPECT_NE(err.find("[gguf_file] " + path + ": truncated file"), std::string::npos) << err;
  }
  std::remove(path.c_str());
}

TEST(gguf_corrupt, random_byte_flips_never_crash) {
  const std::vector<uint8_t> tiny = sp_test::read_bytes(sp_test::data_dir() + "tiny.gguf");
  ASSERT_GT(tiny.size(), 1000u);
  const size_t header_size = sp_test::golden().at("tiny").at("data_offset").get<size_t>();
  std::mt19937 rng(1234);
  int parsed = 0, rejected = 0;
  std::vector<float> buffer;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = tiny;
    const int flips = 1 + static_cast<int>(rng() % 4);
    // Corrupt the header/metadata/table region most of the time: that is where parsing happens.
    const size_t region = trial % 4 == 0 ? bytes.size() : header_size;
    for (int i = 0; i < flips; ++i)
      bytes[rng() % region] ^= static_cast<uint8_t>(1u << (rng() % 8));
    try {
      const sp::gguf_file f = sp::gguf_file::from_memory(bytes.data(), bytes.size());
      for (const sp::gguf_tensor_info& t : f.tensors()) {
        if (!sp::dequantize_supported(t.type)) continue;
        buffer.resize(static_cast<size_t>(t.n_elements));
        sp::dequantize_tensor(buffer.data(), t.n_elements, t);
      }
      ++parsed;
    } catch (const sp::error&) {
      ++rejected;
    }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
