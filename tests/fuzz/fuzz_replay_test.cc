// Replays every fuzz target's seed corpus (corpus/<target>/) and every input
// that once crashed it (regressions/<target>/) through the target's body, in
// the default build: a fixed crash stays fixed without clang or libFuzzer.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_targets.h"
#include "gtest/gtest.h"

#ifndef ATTN_FUZZ_DIR
#error "ATTN_FUZZ_DIR must name tests/fuzz"
#endif

namespace attnsearch::fuzz {
namespace {

using Body = int (*)(const uint8_t*, size_t);

// Runs every file under ATTN_FUZZ_DIR/<kind>/<target>/ through `body`;
// returns how many.
int ReplayDir(const std::string& kind, const std::string& target, Body body) {
  const std::filesystem::path dir = std::filesystem::path(ATTN_FUZZ_DIR) / kind / target;
  if (!std::filesystem::is_directory(dir)) return 0;
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().filename() == "README.md") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(entry.path().string());
    EXPECT_EQ(body(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0);
    ++n;
  }
  return n;
}

void Replay(const std::string& target, Body body) {
  const int seeds = ReplayDir("corpus", target, body);
  EXPECT_GT(seeds, 0) << "no seed corpus for " << target;
  ReplayDir("regressions", target, body);
}

TEST(FuzzReplayTest, Codec) { Replay("codec", FuzzCodec); }
TEST(FuzzReplayTest, Tokenizer) { Replay("tokenizer", FuzzTokenizer); }
TEST(FuzzReplayTest, JsonLine) { Replay("jsonl", FuzzJsonLine); }
TEST(FuzzReplayTest, Fvecs) { Replay("fvecs", FuzzFvecs); }
TEST(FuzzReplayTest, Request) { Replay("request", FuzzRequest); }

}  // namespace
}  // namespace attnsearch::fuzz
