// Unit tests of the server's key file parser, key lookup, JSON escaping and
// histogram rendering (no server process).
#include <string>

#include "gtest/gtest.h"
#include "server/auth.h"
#include "server/observe.h"

namespace attnsearch {
namespace {

constexpr char kRead[] = "read-key-0123456789abcdef";
constexpr char kWrite[] = "write-key-fedcba9876543210";

TEST(ApiKeysTest, ParsesKeysCommentsAndBlankLines) {
  auto keys = ApiKeys::Parse(
      std::string("# keys\n\n  ") + kRead + "   read \r\n" + kWrite + "\twrite\n# end", "keys.txt");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(keys->enabled());
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_EQ(keys->Lookup(kRead), Access::kRead);
  EXPECT_EQ(keys->Lookup(kWrite), Access::kWrite);
  EXPECT_EQ(keys->Lookup(""), Access::kNone);
  EXPECT_EQ(keys->Lookup(std::string(kRead) + "x"), Access::kNone);
  EXPECT_EQ(keys->Lookup(std::string(kRead).substr(1)), Access::kNone);
  EXPECT_EQ(keys->Lookup(std::string(kRead).substr(0, 24)), Access::kNone);
  EXPECT_EQ(keys->Lookup(std::string(4096, 'k')), Access::kNone);
}

TEST(ApiKeysTest, BadLinesNameFileAndLineButNeverTheKey) {
  const struct {
    std::string text;
    std::string where;
  } cases[] = {
      {std::string(kRead) + " read\n" + kWrite + " admin\n", "keys.txt:2: "},
      {std::string("\n") + kRead + "\n", "keys.txt:2: "},
      {std::string(kRead) + " read write\n", "keys.txt:1: "},
      {"short-key read\n", "keys.txt:1: "},
      {std::string(600, 'k') + " read\n", "keys.txt:1: "},
      {std::string(kRead) + " read\n# x\n" + kRead + " write\n", "keys.txt:3: "},
      {std::string("key-with-\x7f-0123456789 read\n"), "keys.txt:1: "},
      {"", "keys.txt: holds no API key"},
      {"# nothing\n", "keys.txt: holds no API key"},
  };
  for (const auto& c : cases) {
    auto keys = ApiKeys::Parse(c.text, "keys.txt");
    ASSERT_FALSE(keys.ok()) << c.text;
    EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(keys.status().message());
    EXPECT_EQ(message.rfind(c.where, 0), 0u) << message;
    EXPECT_EQ(message.find("key-0123"), std::string::npos) << message;
    EXPECT_EQ(message.find("kkkkkkkk"), std::string::npos) << message;
  }
  EXPECT_EQ(ApiKeys::Load("/nonexistent/keys").status().code(), absl::StatusCode::kNotFound);
  const absl::Status folder = ApiKeys::Load("/tmp").status();
  EXPECT_EQ(folder.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(folder.message(), "/tmp: a directory, not an API key file");
}

TEST(ApiKeysTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc", 8));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd", 8));
  EXPECT_FALSE(ConstantTimeEquals("abc", std::string_view("abc\0", 4), 8));
  EXPECT_FALSE(ConstantTimeEquals(std::string_view("abc\0", 4), "abc", 8));
  EXPECT_FALSE(ConstantTimeEquals("", "a", 8));
  EXPECT_TRUE(ConstantTimeEquals("", "", 8));
}

TEST(ObserveTest, HistogramBucketsAreCumulative) {
  Histogram h;
  h.Observe(0.00005);  // first bucket
  h.Observe(0.002);    // le 0.0025
  h.Observe(100);      // +Inf only
  std::string out;
  h.Render("x_seconds", "rpc=\"Search\"", &out);
  EXPECT_NE(out.find("x_seconds_bucket{rpc=\"Search\",le=\"0.0001\"} 1\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("x_seconds_bucket{rpc=\"Search\",le=\"0.001\"} 1\n"), std::string::npos);
  EXPECT_NE(out.find("x_seconds_bucket{rpc=\"Search\",le=\"0.0025\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("x_seconds_bucket{rpc=\"Search\",le=\"10\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("x_seconds_bucket{rpc=\"Search\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(out.find("x_seconds_count{rpc=\"Search\"} 3\n"), std::string::npos);
  EXPECT_NE(out.find("x_seconds_sum{rpc=\"Search\"} 100.00205"), std::string::npos) << out;
}

}  // namespace
}  // namespace attnsearch
