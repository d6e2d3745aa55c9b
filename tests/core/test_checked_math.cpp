// Overflow-checked size arithmetic (checked_math.h), whole-file reads that refuse directories
// (file_bytes.h), JSON excerpts that never recurse (json_excerpt.h) and the thread pool's bounds
// and exception-safe start (issue 18, items 3, 4 and 10).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <string>

#include "shareprefill/checked_math.h"
#include "shareprefill/file_bytes.h"
#include "shareprefill/json_excerpt.h"
#include "shareprefill/thread_pool.h"
#include "test_util.h"

namespace sp {
namespace {

constexpr int64_t int64_max = std::numeric_limits<int64_t>::max();

TEST(CheckedMath, RangeWithinNeverAdds) {
  EXPECT_TRUE(range_within(0, 10, 10));
  EXPECT_TRUE(range_within(10, 0, 10));
  EXPECT_FALSE(range_within(10, 1, 10));
  EXPECT_FALSE(range_within(-1, 1, 10));
  EXPECT_FALSE(range_within(0, -1, 10));
  // offset + length wraps to a small value: an adding check would pass.
  EXPECT_FALSE(range_within(int64_max - 4, 8, 100));
  EXPECT_FALSE(range_within(4, int64_max, 100));
}

TEST(CheckedMath, MulAndAddFailNamingTheQuantity) {
  EXPECT_EQ(checked_mul(int64_t{1} << 31, int64_t{1} << 31, "f", "x"), int64_t{1} << 62);
  EXPECT_EQ(checked_mul(0, int64_max, "f", "x"), 0);
  EXPECT_EQ(testing::error_of([] { checked_mul(int64_t{1} << 32, int64_t{1} << 32, "f", "n"); }),
            "[f] n overflows int64 (4294967296 x 4294967296)");
  EXPECT_NE(testing::error_of([] { checked_mul(-1, 2, "f", "n"); }).find("overflows"),
            std::string::npos);
  EXPECT_EQ(checked_add(int64_max - 1, 1, "f", "x"), int64_max);
  EXPECT_EQ(testing::error_of([] { checked_add(int64_max, 1, "f", "end of ", "t"); }),
            "[f] end of t overflows int64 (9223372036854775807 + 1)");
}

TEST(CheckedMath, ProductOfExtents) {
  const int64_t shape[3] = {int64_t{1} << 62, 4, 4};
  EXPECT_NE(testing::error_of([&] {
              checked_product(shape, 3, 1, "f", "t");
            }).find("[f] t overflows int64"),
            std::string::npos);
  const int64_t with_zero[3] = {int64_t{1} << 62, 0, int64_t{1} << 62};
  EXPECT_EQ(checked_product(with_zero, 3, 4, "f", "t"), 0);
  const int64_t small[2] = {3, 5};
  EXPECT_EQ(checked_product(small, 2, 4, "f", "t"), 60);
  const int64_t negative[2] = {3, -5};
  EXPECT_NE(testing::error_of([&] {
              checked_product(negative, 2, 4, "f", "t");
            }).find("negative extent -5"),
            std::string::npos);
}

TEST(FileBytes, DirectoryAndMissingFileAreNamed) {
  const std::string dir = ::testing::TempDir();
  EXPECT_EQ(testing::error_of([&] { read_file_bytes(dir, "reader"); }),
            "[reader] '" + dir + "' is a directory, not a file");
  EXPECT_NE(testing::error_of([&] {
              read_file_text(dir + "/no_such_file", "reader");
            }).find("cannot open '" + dir + "/no_such_file': No such file"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] {
              regular_file_size("/dev/null", "reader");
            }).find("'/dev/null' is not a regular file"),
            std::string::npos);
  const std::string path = dir + "/file_bytes_test.txt";
  std::ofstream(path) << "abc";
  EXPECT_EQ(read_file_text(path, "reader"), "abc");
  EXPECT_EQ(regular_file_size(path, "reader"), 3);
  std::remove(path.c_str());
}

TEST(JsonExcerpt, DeepNestingDoesNotRecurse) {
  // 200,000 levels: dump() would recurse once per level and overflow the stack.
  const std::string text = std::string(200000, '[') + std::string(200000, ']');
  const nlohmann::json deep = nlohmann::json::parse(text);
  EXPECT_EQ(json_excerpt(deep), "[...]");
  EXPECT_EQ(json_excerpt(nlohmann::json::parse("{\"a\": {\"b\": 1}}")), "{...}");
  EXPECT_EQ(json_excerpt(nlohmann::json::parse("[1, 2]")), "[1,2]");
  EXPECT_EQ(json_excerpt(std::string(200, 'x')).size(), 80u);
  EXPECT_EQ(json_nesting_depth(deep, 64), 65);
  EXPECT_EQ(json_nesting_depth(nlohmann::json::parse("[[1], [2, {\"a\": [3]}]]"), 64), 4);
  EXPECT_EQ(json_nesting_depth(nlohmann::json(7), 64), 0);
}

TEST(ThreadPool, CountOutsideTheBoundIsAnError) {
  EXPECT_EQ(testing::error_of([] { thread_pool pool(-3); }),
            "[thread_pool] thread count must be in [0, 1024] (0 = one per core), got -3");
  EXPECT_NE(testing::error_of([] { thread_pool pool(100000); }).find("got 100000"),
            std::string::npos);
  thread_pool pool(0);
  EXPECT_GE(pool.size(), 1);
}

// In a child process: limits the address space to 64 MiB above what is in use, starts a pool of
// 1000 threads (1000 stacks of 8 MiB cannot fit) and exits 0 when that is an sp::error naming
// the failed start.
[[noreturn]] void start_pool_under_address_limit() {
  alarm(20);
  long pages = 0;
  std::ifstream("/proc/self/statm") >> pages;
  const rlim_t used = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE));
  rlimit limit;
  limit.rlim_cur = limit.rlim_max = used + (rlim_t{64} << 20);
  setrlimit(RLIMIT_AS, &limit);
  try {
    thread_pool pool(1000);
  } catch (const sp::error& e) {
    const bool named =
        std::string(e.what()).find("cannot start worker thread") != std::string::npos;
    _exit(named ? 0 : 2);
  }
  _exit(3);
}

// Thread creation failing part-way (address space exhausted by the stacks) must give an
// sp::error with the started workers joined, not std::terminate or a deadlock. Runs in a child
// process (the limit must not reach the test runner); alarm() turns a hang into a failure.
TEST(ThreadPool, FailedThreadStartIsAnErrorNotACrash) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer reserves more address space than the limit allows";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "AddressSanitizer reserves more address space than the limit allows";
#endif
#endif
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(start_pool_under_address_limit(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace sp
