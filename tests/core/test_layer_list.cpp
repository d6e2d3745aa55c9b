// parse_layer_list / format_layer_list: indices and ranges, spaces, merging, and a clear error for
// every malformed item and for layers beyond the model.
#include <gtest/gtest.h>

#include "shareprefill/layer_list.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;
using v64 = std::vector<int64_t>;

TEST(LayerList, ParsesIndicesAndRanges) {
  EXPECT_EQ(parse_layer_list("", 30), v64{});
  EXPECT_EQ(parse_layer_list("  ", 30), v64{});
  EXPECT_EQ(parse_layer_list(" none ", 30), v64{});
  EXPECT_EQ(parse_layer_list("7", 30), v64{7});
  EXPECT_EQ(parse_layer_list("0-2,11-13", 30), (v64{0, 1, 2, 11, 12, 13}));
  EXPECT_EQ(parse_layer_list(" 29 , 3 - 4 ", 30), (v64{3, 4, 29}));
  EXPECT_EQ(parse_layer_list("5-5", 30), v64{5});
}

TEST(LayerList, MergesOverlapsAndSorts) {
  EXPECT_EQ(parse_layer_list("4-6,2,5-7,2", 30), (v64{2, 4, 5, 6, 7}));
}

TEST(LayerList, RejectsMalformedItemsNamingThem) {
  const char* what = "--dense-layers";
  EXPECT_NE(error_of([&] { parse_layer_list("1,,2", 30, what); }).find("empty item in '1,,2'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_layer_list("3,", 30, what); }).find("empty item"),
            std::string::npos);
  for (const char* bad : {"x", "-1", "1-", "1-2-3", "2.5", "0x3", "a-b"}) {
    const std::string e = error_of([&] { parse_layer_list(bad, 30, what); });
    EXPECT_NE(e.find("[--dense-layers]"), std::string::npos) << bad;
    EXPECT_NE(e.find(std::string("'") + bad + "'"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("is not a layer index or a range"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(error_of([&] {
              parse_layer_list("9-3", 30, what);
            }).find("range '9-3' in '9-3' is reversed (9 > 3)"),
            std::string::npos);
}

TEST(LayerList, RejectsLayersBeyondTheModel) {
  const std::string e = error_of([] { parse_layer_list("0-2,25-30", 30, "--dense-layers"); });
  EXPECT_NE(e.find("layer 30 in '0-2,25-30' is out of range: the model has 30 layers (0-29)"),
            std::string::npos)
      << e;
  EXPECT_NE(error_of([] { parse_layer_list("30", 30); }).find("out of range"), std::string::npos);
  EXPECT_EQ(parse_layer_list("29", 30), v64{29});
}

TEST(LayerList, FormatsTheShortestSpecAndRoundTrips) {
  EXPECT_EQ(format_layer_list({}), "");
  EXPECT_EQ(format_layer_list({4}), "4");
  EXPECT_EQ(format_layer_list({0, 1, 2, 5, 11, 12}), "0-2,5,11-12");
  const v64 layers{0, 1, 2, 11, 12, 13, 14, 29};
  EXPECT_EQ(parse_layer_list(format_layer_list(layers), 30), layers);
}

}  // namespace
}  // namespace sp
