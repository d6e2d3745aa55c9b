// Malformed calibration captures (issue 18, items 3, 9 and 10): counts that claim more data than
// the file holds must fail before anything is sized by them, NaN/Inf or out-of-range attention
// masses must not be clustered into a map, trailing bytes and directories are errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"
#include "shareprefill/file_bytes.h"
#include "test_util.h"

namespace sp {
namespace {

// One layer, one head, two blocks of 128 tokens: causal rows that sum to 1.
calibration_input small_input() {
  calibration_input in;
  in.text = "t";
  in.n_tokens = 256;
  in.block_size = 128;
  in.n_blocks = 2;
  in.layers = 1;
  in.heads = 1;
  in.block_attention = {1.0f, 0.0f, 0.5f, 0.5f};
  in.vs_coverage = {0.9f};
  return in;
}

std::vector<uint8_t> capture_bytes(const std::vector<calibration_input>& inputs) {
  const std::string path = testing::temp_path("capture_bad_test.bin");
  save_calibration_inputs(path, inputs);
  std::vector<uint8_t> bytes = read_file_bytes(path, "test");
  std::remove(path.c_str());
  return bytes;
}

void put_i64(std::vector<uint8_t>& b, size_t at, int64_t v) {
  std::memcpy(&b[at], &v, 8);
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  return testing::error_of([&] { calibration_inputs_from_bytes(bytes, "c.bin"); });
}

// Byte offsets in a one-input capture with a one-character text name.
constexpr size_t count_at = 8, n_blocks_at = 8 + 8 + 8 + 1 + 16, layers_at = n_blocks_at + 8;

TEST(CaptureBad, ValidCaptureLoads) {
  const auto back = calibration_inputs_from_bytes(capture_bytes({small_input()}), "c.bin");
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].block_attention, small_input().block_attention);
}

TEST(CaptureBad, CountsBeyondTheFileFailBeforeAllocating) {
  // 4096 blocks -> 16M floats claimed by a 90-byte file: refused from the size, not by
  // resizing to 64 MB and then finding the file truncated.
  calibration_input in = small_input();
  std::vector<uint8_t> b = capture_bytes({in});
  put_i64(b, n_blocks_at, 4096);
  put_i64(b, n_blocks_at - 16, 4096 * 128);  // n_tokens consistent with the blocks
  const std::string err = parse_error(b);
  EXPECT_NE(err.find("c.bin: block attention claims 16777216 floats but only"), std::string::npos)
      << err;
  b = capture_bytes({in});
  put_i64(b, count_at, 9999);
  EXPECT_NE(parse_error(b).find("bad input count 9999"), std::string::npos) << parse_error(b);
  b = capture_bytes({in});
  put_i64(b, layers_at, int64_t{1} << 40);
  EXPECT_NE(parse_error(b).find("bad shape"), std::string::npos) << parse_error(b);
  b = capture_bytes({in});
  put_i64(b, n_blocks_at - 16, INT64_MAX);  // n_tokens near 2^63: no overflow in the block count
  EXPECT_NE(parse_error(b).find("does not match"), std::string::npos) << parse_error(b);
  for (size_t cut = 0; cut < b.size(); ++cut) {
    const std::vector<uint8_t> head(b.begin(), b.begin() + static_cast<int64_t>(cut));
    EXPECT_NE(parse_error(head), "") << "cut at " << cut;
  }
}

TEST(CaptureBad, NonFiniteOrOutOfRangeMassIsRefused) {
  calibration_input in = small_input();
  in.block_attention.assign(4, std::nanf(""));
  EXPECT_NE(testing::error_of([&] {
              in.validate();
            }).find("t@256: block_attention value nan at flat index 0 is not an attention mass"),
            std::string::npos)
      << testing::error_of([&] { in.validate(); });
  in = small_input();
  in.vs_coverage = {INFINITY};
  EXPECT_NE(testing::error_of([&] { in.validate(); }).find("vs_coverage value inf of head 0"),
            std::string::npos);
  in = small_input();
  in.block_attention[2] = -0.25f;
  EXPECT_NE(testing::error_of([&] { in.validate(); }).find("value -0.25 at flat index 2"),
            std::string::npos);
  // The same NaN capture written by hand (save refuses it) is refused on load.
  std::vector<uint8_t> b = capture_bytes({small_input()});
  const float nan = std::nanf("");
  std::memcpy(&b[layers_at + 16], &nan, 4);
  EXPECT_NE(parse_error(b).find("block_attention value nan"), std::string::npos) << parse_error(b);
}

TEST(CaptureBad, TrailingBytesAndDirectories) {
  std::vector<uint8_t> b = capture_bytes({small_input()});
  b.push_back(0);
  EXPECT_NE(parse_error(b).find("1 bytes of trailing data after the last input"), std::string::npos)
      << parse_error(b);
  const std::string dir = ::testing::TempDir();
  EXPECT_EQ(testing::error_of([&] { load_calibration_inputs(dir); }),
            "[load_calibration_inputs] '" + dir + "' is a directory, not a file");
}

TEST(CaptureBad, SavingToAFullDeviceFails) {
  EXPECT_NE(testing::error_of([] { save_calibration_inputs("/dev/full", {small_input()}); })
                .find("write to '/dev/full' failed"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
