// The core's shared infrastructure: UTF-8 validation, the checksum, atomic
// file replacement and the structured logger.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/checksum.h"
#include "core/file_sync.h"
#include "core/log.h"
#include "core/utf8.h"
#include "nlohmann/json.hpp"
#include "test_util.h"

namespace attnsearch {
namespace {

TEST(Utf8Test, CutTextStopsAtACharacterBoundary) {
  EXPECT_EQ(CutText("short", 5), "short");
  EXPECT_EQ(CutText("abcdef", 3), "abc… (6 bytes, cut)");
  // "é" is two bytes: a cut inside it goes back to before it.
  EXPECT_EQ(CutText("ab\xc3\xa9z", 3), "ab… (5 bytes, cut)");
  EXPECT_EQ(FindInvalidUtf8(CutText(std::string(100, '\xe2') + "", 10)), 0u);  // invalid stays
  const std::string euros = "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac";            // three euro signs
  EXPECT_EQ(CutText(euros, 7), "\xe2\x82\xac\xe2\x82\xac… (9 bytes, cut)");
  EXPECT_EQ(FindInvalidUtf8(CutText(euros, 5)), std::string_view::npos);
}

TEST(Utf8Test, FindsTheFirstInvalidByte) {
  constexpr size_t kValid = std::string_view::npos;
  EXPECT_EQ(FindInvalidUtf8(""), kValid);
  EXPECT_EQ(FindInvalidUtf8("plain ascii, long enough for the 8-byte path"), kValid);
  EXPECT_EQ(FindInvalidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF"), kValid);
  EXPECT_EQ(FindInvalidUtf8("\xF4\x8F\xBF\xBF"), kValid);               // U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("abc\xFF"), 3u);                            // not a lead byte
  EXPECT_EQ(FindInvalidUtf8("abc\x80"), 3u);                            // a lone continuation
  EXPECT_EQ(FindInvalidUtf8("ab\xC0\xAF"), 2u);                         // overlong '/'
  EXPECT_EQ(FindInvalidUtf8("\xE0\x80\xAF"), 0u);                       // overlong
  EXPECT_EQ(FindInvalidUtf8("x\xED\xA0\x80"), 1u);                      // a surrogate
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);                   // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("ok \xE2\x82"), 3u);                        // truncated at the end
  EXPECT_EQ(FindInvalidUtf8("\xE2\x82x"), 0u);                          // truncated in the middle
  EXPECT_EQ(FindInvalidUtf8(std::string(20, 'a') + "\xE9t\xE9"), 20u);  // Latin-1
  EXPECT_EQ(FindInvalidUtf8(std::string(17, 'a') + "\xC3\xA9" + std::string(9, 'b') + "\x80"),
            28u);  // after ASCII words and a valid sequence
}

TEST(ChecksumTest, IsXxh3AndSeesEveryFlippedBit) {
  // XXH3-64 of the empty input (xxHash's published value).
  EXPECT_EQ(Checksum64("", 0), 0x2D06800538D394C2ull);
  std::string data(4096, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 131 + 7);
  const uint64_t sum = Checksum64(data.data(), data.size());
  for (size_t byte = 0; byte < data.size(); byte += 97) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = data;
      flipped[byte] = char(flipped[byte] ^ (1 << bit));
      ASSERT_NE(Checksum64(flipped.data(), flipped.size()), sum) << byte << ":" << bit;
    }
  }
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(FileSyncTest, WriteFileAtomicallyReplacesWholeAndLeavesNoTemporary) {
  testing::TempDir dir;
  const std::string path = dir.Sub("f");
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  EXPECT_EQ(ReadAll(path), "first");
  const std::string big(1 << 20, 'x');
  ASSERT_TRUE(WriteFileAtomically(path, big).ok());
  EXPECT_EQ(ReadAll(path), big);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // A folder that does not exist: an error naming the path; nothing else.
  const absl::Status s = WriteFileAtomically(dir.Sub("missing/f"), "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find(dir.Sub("missing/f.tmp")), std::string::npos) << s;
  EXPECT_EQ(ReadAll(path), big);
}

TEST(LogTest, EveryLineIsOneJsonObjectWithItsFields) {
  std::mutex mu;
  std::vector<std::string> lines;
  SetLogSink([&](std::string_view line) {
    std::lock_guard<std::mutex> lock(mu);
    lines.emplace_back(line);
  });
  LogWarn("snapshot not saved", {{"path", "/x/\"y\"\n"},
                                 {"count", 3},
                                 {"big", uint64_t{1} << 40},
                                 {"ms", 0.25},
                                 {"ok", false},
                                 {"bytes", std::string("caf\xE9")}});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 100; ++i) LogInfo("tick", {{"thread", t}, {"i", i}});
    });
  }
  for (auto& th : threads) th.join();
  SetLogSink(nullptr);
  ASSERT_EQ(lines.size(), 401u);
  for (const std::string& line : lines) {
    ASSERT_EQ(line.back(), '\n');
    const nlohmann::json j = nlohmann::json::parse(line);  // throws on a torn line
    EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
  }
  const nlohmann::json first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["level"], "warn");
  EXPECT_EQ(first["msg"], "snapshot not saved");
  EXPECT_EQ(first["path"], "/x/\"y\"\n");
  EXPECT_EQ(first["count"], 3);
  EXPECT_EQ(first["big"], int64_t{1} << 40);
  EXPECT_EQ(first["ms"], 0.25);
  EXPECT_EQ(first["ok"], false);
  EXPECT_EQ(first["bytes"], "caf\xEF\xBF\xBD");  // not UTF-8: U+FFFD
  EXPECT_EQ(lines[0].find("{\"time\":"), 0u);    // time, level, msg first
}

}  // namespace
}  // namespace attnsearch
