// attnsearch-index on folders of .npy files (--format npy): the real binary
// on seeded folders written here. The oracle is the load of the same
// documents from JSON lines; bad folders are refused naming the file and
// the index, with nothing written.
#include <signal.h>
#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/vector_math.h"
#include "gtest/gtest.h"
#include "indexer/indexer_tool.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using ::attnsearch::testing::ExpectSameDocuments;
using ::attnsearch::testing::ReadBack;
using ::attnsearch::testing::RunTool;
using ::attnsearch::testing::TempDir;
using ::attnsearch::testing::ToolRun;

constexpr uint32_t kDim = 8;

// Writes an .npy file: numpy's version 1.0 layout.
void WriteNpy(const std::string& path, const std::string& descr, const std::string& shape,
              const void* data, size_t bytes) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  dict.append((10 + dict.size() + 1 + 63) / 64 * 64 - 10 - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(char(dict.size() & 0xff));
  out.put(char(dict.size() >> 8));
  out << dict;
  out.write(static_cast<const char*>(data), std::streamsize(bytes));
}

std::string Shape2(size_t rows, size_t cols) {
  return "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
}
std::string Shape1(size_t n) { return "(" + std::to_string(n) + ",)"; }

// n documents of min_rows..3 token rows, values k / 64 (exact in decimal,
// f16 and bf16), a pooled vector each (in the JSON lines too when
// `with_pooled`), text and metadata for every third.
struct Corpus {
  std::vector<float> tokens;
  std::vector<int64_t> offsets = {0};
  std::vector<float> pooled;
  std::vector<std::string> ids;
  std::vector<std::string> side;   // docs.jsonl lines
  std::vector<std::string> jsonl;  // the same documents as JSON lines
};

std::string JsonVector(const float* v) {
  std::string s = "[";
  for (uint32_t k = 0; k < kDim; ++k) s += (k ? "," : "") + std::to_string(v[k]);
  return s + "]";
}

Corpus MakeCorpus(int n, uint64_t seed, int min_rows = 0, bool with_pooled = true) {
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_int_distribution<int> value(-64, 64), rows(min_rows, 3);
  auto draw = [&](float* out) {
    bool zero = true;
    for (uint32_t k = 0; k < kDim; ++k) {
      out[k] = float(value(rng)) / 64.f;
      zero &= out[k] == 0.f;
    }
    if (zero) out[0] = 1.f;
  };
  Corpus c;
  for (int i = 0; i < n; ++i) {
    const std::string id = "doc-" + std::to_string(i);
    c.ids.push_back(id);
    const int r = rows(rng);
    std::string line = "{\"id\":\"" + id + "\"";
    std::vector<float> p(kDim);
    draw(p.data());
    c.pooled.insert(c.pooled.end(), p.begin(), p.end());
    if (with_pooled) line += ",\"pooled\":" + JsonVector(p.data());
    if (r > 0) {
      line += ",\"tokens\":[";
      for (int k = 0; k < r; ++k) {
        std::vector<float> t(kDim);
        draw(t.data());
        c.tokens.insert(c.tokens.end(), t.begin(), t.end());
        line += (k ? "," : "") + JsonVector(t.data());
      }
      line += "]";
    }
    c.offsets.push_back(c.offsets.back() + r);
    if (i % 3 == 0) {
      const std::string fields = "\"text\":\"text " + std::to_string(i) +
                                 "\",\"metadata\":{\"shard\":\"" + std::to_string(i % 2) + "\"}";
      c.side.push_back("{\"id\":\"" + id + "\"," + fields + "}");
      line += "," + fields;
    }
    c.jsonl.push_back(line + "}");
  }
  return c;
}

// The folder: tokens.npy (f32), offsets.npy (int64), ids.npy ('<U'),
// pooled.npy, docs.jsonl.
void WriteFolder(const std::string& dir, const Corpus& c) {
  std::filesystem::create_directories(dir);
  WriteNpy(dir + "/tokens.npy", "<f4", Shape2(c.tokens.size() / kDim, kDim), c.tokens.data(),
           c.tokens.size() * 4);
  WriteNpy(dir + "/offsets.npy", "<i8", Shape1(c.offsets.size()), c.offsets.data(),
           c.offsets.size() * 8);
  WriteNpy(dir + "/pooled.npy", "<f4", Shape2(c.ids.size(), kDim), c.pooled.data(),
           c.pooled.size() * 4);
  size_t width = 1;
  for (const auto& id : c.ids) width = std::max(width, id.size());
  std::vector<uint32_t> chars(c.ids.size() * width, 0);
  for (size_t i = 0; i < c.ids.size(); ++i) {
    for (size_t k = 0; k < c.ids[i].size(); ++k) chars[i * width + k] = uint8_t(c.ids[i][k]);
  }
  WriteNpy(dir + "/ids.npy", "<U" + std::to_string(width), Shape1(c.ids.size()), chars.data(),
           chars.size() * 4);
  std::ofstream side(dir + "/docs.jsonl");
  for (const auto& l : c.side) side << l << "\n";
}

void WriteJsonLines(const std::string& path, const Corpus& c) {
  std::ofstream out(path);
  for (const auto& l : c.jsonl) out << l << "\n";
}

TEST(NpyInputTest, LoadsLikeTheSameDocumentsAsJsonLines) {
  TempDir dir;
  const Corpus c = MakeCorpus(400, 1);
  WriteFolder(dir.Sub("npy"), c);
  WriteJsonLines(dir.Sub("in.jsonl"), c);
  ToolRun run = RunTool(dir, {dir.Sub("npy"), "--data_dir", dir.Sub("a"), "--collection", "c",
                              "--batch", "64", "--threads", "3"});
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("(npy)"), std::string::npos) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("dim 8, the arrays' row length"), std::string::npos)
      << run.stderr_text;
  run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("b"), "--collection", "c"});
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  const GetResult from_npy = ReadBack(dir.Sub("a"), "c", c.ids);
  EXPECT_EQ(from_npy.documents.size(), c.ids.size());
  ExpectSameDocuments(from_npy, ReadBack(dir.Sub("b"), "c", c.ids));
}

// lengths.npy instead of offsets, ids.txt instead of ids.npy, float16 and
// bfloat16 tokens, no pooled vectors: the same documents as f32 tokens
// (k / 64 is exact in both).
TEST(NpyInputTest, LengthsIdsTxtAndHalfPrecisionTokens) {
  TempDir dir;
  const Corpus c = MakeCorpus(120, 2, /*min_rows=*/1, /*with_pooled=*/false);
  WriteJsonLines(dir.Sub("in.jsonl"), c);
  ToolRun run =
      RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("json"), "--collection", "c"});
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  const GetResult want = ReadBack(dir.Sub("json"), "c", c.ids);
  std::vector<int32_t> lengths;
  for (size_t i = 1; i < c.offsets.size(); ++i) {
    lengths.push_back(int32_t(c.offsets[i] - c.offsets[i - 1]));
  }
  std::vector<uint16_t> half, bf16(c.tokens.size());
  FloatToBf16(c.tokens.data(), bf16.data(), bf16.size());
  for (float v : c.tokens) {
    // k / 64 with |k| <= 64 in binary16: exponent and 10-bit mantissa.
    if (v == 0.f) {
      half.push_back(std::signbit(v) ? 0x8000 : 0);
      continue;
    }
    int e;
    const float m = std::frexp(std::fabs(v), &e);  // v = m 2^e, m in [0.5, 1)
    const uint16_t bits =
        uint16_t(((e - 1 + 15) << 10) | uint16_t(std::lround((m * 2 - 1) * 1024)));
    half.push_back(uint16_t(bits | (v < 0 ? 0x8000 : 0)));
    ASSERT_EQ(HalfToFloat(half.back()), v);
  }
  const std::vector<std::pair<std::string, std::vector<uint16_t>*>> kinds = {{"<f2", &half},
                                                                             {"|V2", &bf16}};
  for (const auto& [descr, values] : kinds) {
    const std::string folder = dir.Sub("npy" + descr.substr(1));
    std::filesystem::create_directories(folder);
    WriteNpy(folder + "/tokens.npy", descr, Shape2(values->size() / kDim, kDim), values->data(),
             values->size() * 2);
    WriteNpy(folder + "/lengths.npy", "<i4", Shape1(lengths.size()), lengths.data(),
             lengths.size() * 4);
    std::ofstream ids(folder + "/ids.txt");
    for (const auto& id : c.ids) ids << id << "\r\n";
    ids.close();
    std::ofstream side(folder + "/docs.jsonl");
    for (const auto& l : c.side) side << l << "\n";
    side.close();
    const std::string data = dir.Sub("data" + descr.substr(1));
    run = RunTool(dir, {folder, "--data_dir", data, "--collection", "c"});
    ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
    ExpectSameDocuments(ReadBack(data, "c", c.ids), want);
  }
}

// A folder the reader refuses: exit 2, the file and the index named, and
// nothing created.
void ExpectRefused(const TempDir& dir, const std::string& folder, const std::string& needle) {
  const std::string data = folder + ".data";
  ToolRun run = RunTool(dir, {folder, "--data_dir", data, "--collection", "c"});
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(needle), std::string::npos) << run.stderr_text;
  EXPECT_FALSE(std::filesystem::exists(data + "/c")) << needle;
}

TEST(NpyInputTest, BadFoldersAreRefusedNamingTheFileAndIndex) {
  TempDir dir;
  const Corpus c = MakeCorpus(10, 3);
  auto copy = [&](const std::string& name) {
    const std::string folder = dir.Sub(name);
    WriteFolder(folder, c);
    return folder;
  };
  // Wrong dtype: integer tokens.
  std::string f = copy("dtype");
  std::vector<int32_t> ints(c.tokens.size(), 1);
  WriteNpy(f + "/tokens.npy", "<i4", Shape2(ints.size() / kDim, kDim), ints.data(),
           ints.size() * 4);
  ExpectRefused(dir, f, "dtype/tokens.npy: dtype '<i4' is not float32, float16 or bfloat16");
  // numpy's default float64: not read, with the conversion to make.
  f = copy("float64");
  std::vector<double> doubles(c.tokens.begin(), c.tokens.end());
  WriteNpy(f + "/tokens.npy", "<f8", Shape2(doubles.size() / kDim, kDim), doubles.data(),
           doubles.size() * 8);
  ExpectRefused(dir, f, "float64/tokens.npy: dtype '<f8' is not read");
  ExpectRefused(dir, f, "a.astype(numpy.float32) for vectors");
  // Truncated: the last bytes of the token matrix missing.
  f = copy("truncated");
  std::filesystem::resize_file(f + "/tokens.npy",
                               std::filesystem::file_size(f + "/tokens.npy") - 5);
  ExpectRefused(dir, f, "truncated/tokens.npy: truncated");
  // Offsets that decrease.
  f = copy("offsets");
  std::vector<int64_t> offsets = c.offsets;
  std::swap(offsets[3], offsets[4]);
  if (offsets[3] == offsets[4]) offsets[4] = offsets[3] - 1;
  WriteNpy(f + "/offsets.npy", "<i8", Shape1(offsets.size()), offsets.data(), offsets.size() * 8);
  ExpectRefused(dir, f, "offsets/offsets.npy: index 4 is");
  // One id too few.
  f = copy("ids");
  std::filesystem::remove(f + "/ids.npy");
  std::ofstream ids(f + "/ids.txt");
  for (size_t i = 0; i + 1 < c.ids.size(); ++i) ids << c.ids[i] << "\n";
  ids.close();
  ExpectRefused(dir, f, "ids/ids.txt: 9 ids for 10 documents (offsets.npy has 11 entries)");
  // A side-file line for an unknown id.
  f = copy("side");
  std::ofstream(f + "/docs.jsonl", std::ios::app) << "{\"id\":\"nope\",\"text\":\"x\"}\n";
  ExpectRefused(dir, f, "side/docs.jsonl:5: id: 'nope' is not in ids.npy");
}

// A NaN in a token row: that document is reported at its index with the
// row of tokens.npy that holds it and skipped (exit 4); with --max_errors 0
// the load stops there, the documents before it stored, none after.
TEST(NpyInputTest, ANaNIsReportedWithItsRowAndItsDocumentIsNotWritten) {
  TempDir dir;
  Corpus c = MakeCorpus(50, 4);
  size_t bad = 20;
  while (c.offsets[bad + 1] - c.offsets[bad] < 2) ++bad;
  const size_t row = size_t(c.offsets[bad]) + 1;
  c.tokens[row * kDim + 3] = std::nanf("");
  WriteFolder(dir.Sub("npy"), c);
  ToolRun run = RunTool(dir, {dir.Sub("npy"), "--data_dir", dir.Sub("a"), "--collection", "c"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  const std::string want = "npy:document " + std::to_string(bad) +
                           ": tokens: row 1 has a NaN or infinite value (tokens.npy row " +
                           std::to_string(row) + ")";
  EXPECT_NE(run.stderr_text.find(want), std::string::npos) << run.stderr_text;
  GetResult got = ReadBack(dir.Sub("a"), "c", c.ids);
  EXPECT_EQ(got.documents.size(), c.ids.size() - 1);
  EXPECT_EQ(got.not_found_ids, std::vector<std::string>{c.ids[bad]});

  run = RunTool(dir, {dir.Sub("npy"), "--data_dir", dir.Sub("b"), "--collection", "c",
                      "--max_errors", "0", "--batch", "7"});
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;
  got = ReadBack(dir.Sub("b"), "c", c.ids);
  EXPECT_EQ(got.documents.size(), bad);
  for (const Document& d : got.documents) EXPECT_LT(std::stoi(d.id.substr(4)), int(bad)) << d.id;
}

// The checkpoint names the whole folder: a pooled vector fixed after a run
// that rejected it (tokens.npy unchanged) starts the load over, and the
// fixed document is stored.
TEST(NpyInputTest, FixingAFileBesideTheTokensStartsOver) {
  TempDir dir;
  Corpus c = MakeCorpus(30, 6);
  c.pooled[size_t(9) * kDim] = std::numeric_limits<float>::infinity();
  WriteFolder(dir.Sub("npy"), c);
  ToolRun run = RunTool(dir, {dir.Sub("npy"), "--data_dir", dir.Sub("a"), "--collection", "c"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  EXPECT_EQ(ReadBack(dir.Sub("a"), "c", c.ids).not_found_ids, std::vector<std::string>{c.ids[9]});
  c.pooled[size_t(9) * kDim] = 0.5f;
  WriteNpy(dir.Sub("npy/pooled.npy"), "<f4", Shape2(c.ids.size(), kDim), c.pooled.data(),
           c.pooled.size() * 4);
  run = RunTool(dir, {dir.Sub("npy"), "--data_dir", dir.Sub("a"), "--collection", "c"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("is for another input"), std::string::npos) << run.stderr_text;
  EXPECT_TRUE(ReadBack(dir.Sub("a"), "c", c.ids).not_found_ids.empty());
}

// kill -9 at two points, with 1 and 3 conversion threads, then a run to
// the end: the same collection as one uninterrupted load.
TEST(NpyInputTest, ResumeAfterKillEqualsUninterruptedLoad) {
  TempDir dir;
  const Corpus c = MakeCorpus(3000, 5);
  WriteFolder(dir.Sub("npy"), c);
  auto args = [&](const std::string& data, std::vector<std::string> extra) {
    std::vector<std::string> a = {
        dir.Sub("npy"), "--data_dir",         data, "--collection", "c", "--batch",
        "100",          "--checkpoint_every", "400"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ToolRun run = RunTool(dir, args(dir.Sub("whole"), {}));
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  run = RunTool(dir, args(dir.Sub("resumed"), {"--stop_after", "1300", "--threads", "1"}));
  ASSERT_TRUE(WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL)
      << "wait status " << run.status << "\n"
      << run.stderr_text;
  run = RunTool(dir, args(dir.Sub("resumed"), {"--stop_after", "900", "--threads", "3"}));
  ASSERT_TRUE(WIFSIGNALED(run.status)) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("resuming after document 1200"), std::string::npos)
      << run.stderr_text;
  run = RunTool(dir, args(dir.Sub("resumed"), {"--threads", "2"}));
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("records skipped: loaded by an earlier run"), std::string::npos)
      << run.stderr_text;
  const GetResult whole = ReadBack(dir.Sub("whole"), "c", c.ids);
  EXPECT_EQ(whole.documents.size(), c.ids.size());
  ExpectSameDocuments(ReadBack(dir.Sub("resumed"), "c", c.ids), whole);
}

}  // namespace
}  // namespace attnsearch
