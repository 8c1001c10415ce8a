// End-to-end tests of attnsearch-index: the real binary runs as a child
// process on seeded inputs written here; the result is read back through
// the engine (offline) or the real server (online).
#include "indexer/indexer_tool.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "engine/catalog.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/server_process.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using ::attnsearch::testing::DescribeWaitStatus;
using ::attnsearch::testing::ExpectSameDocuments;
using ::attnsearch::testing::ReadBack;
using ::attnsearch::testing::RunTool;
using ::attnsearch::testing::TempDir;
using ::attnsearch::testing::ToolRun;

constexpr uint32_t kDim = 8;

// A JSON lines corpus of n documents: pooled only, tokens only (both
// spellings) or both, with text and metadata. Seeded.
std::vector<std::string> Corpus(int n, uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto vec = [&] {
    std::string s = "[";
    for (uint32_t k = 0; k < kDim; ++k) s += (k ? "," : "") + std::to_string(u(rng));
    return s + "]";
  };
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    std::string l = "{\"id\":\"doc-" + std::to_string(i) + "\",\"text\":\"text " +
                    std::to_string(i) + "\",\"metadata\":{\"shard\":\"" + std::to_string(i % 3) +
                    "\"}";
    const int kind = i % 3;
    if (kind != 1) l += ",\"pooled\":" + vec();
    if (kind == 1) {
      l += ",\"tokens\":[" + vec() + "," + vec() + "],\"token_texts\":[\"a\",\"b\"]";
    } else if (kind == 2) {
      std::string values = vec() + vec() + vec();
      for (size_t p; (p = values.find("][")) != std::string::npos;) values.replace(p, 2, ",");
      l += ",\"tokens\":{\"rows\":3,\"cols\":" + std::to_string(kDim) + ",\"values\":" + values +
           "}";
    }
    lines.push_back(l + "}");
  }
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const auto& l : lines) out << l << "\n";
}

// The server's CollectionInfo of `name`; a failed call fails the test.
v1::CollectionInfo InfoOf(const std::string& address, const std::string& name) {
  auto stub = testing::NewSearchStub(address);
  grpc::ClientContext ctx;
  v1::GetCollectionRequest req;
  req.set_name(name);
  v1::GetCollectionResponse info;
  const grpc::Status s = stub->GetCollection(&ctx, req, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return info.collection();
}

std::vector<std::string> Ids(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("doc-" + std::to_string(i));
  return ids;
}

TEST(IndexerToolTest, OfflineJsonLinesLoad) {
  TempDir dir;
  WriteLines(dir.Sub("in.jsonl"), Corpus(500, 1));
  const ToolRun run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"),
                                    "--collection", "c", "--dim", "8", "--batch", "64"});
  ASSERT_EQ(run.exit_code(), 0) << DescribeWaitStatus(run.status) << "\n" << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("done: 500 documents written"), std::string::npos)
      << run.stderr_text;
  const GetResult r = ReadBack(dir.Sub("data"), "c", Ids(500));
  EXPECT_EQ(r.documents.size(), 500u);
  EXPECT_TRUE(r.not_found_ids.empty());
  ASSERT_FALSE(r.documents.empty());
  EXPECT_EQ(r.documents[1].num_tokens, 2u);
  EXPECT_EQ(r.documents[1].token_texts, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.documents[2].num_tokens, 3u);
  EXPECT_EQ(r.documents[0].metadata.at("shard"), "0");
}

// Offline into a collection that keeps only codes: the codec trains once
// --code_train_after documents are in, the rest of the load stores codes
// alone, and every document reads back with its token count and tokens
// decoded from its codes (near the rows written); no token row is left.
TEST(IndexerToolTest, CodesOnlyLoadTrainsTheCodecDuringTheLoad) {
  TempDir dir;
  const std::vector<std::string> lines = Corpus(3000, 7);
  WriteLines(dir.Sub("in.jsonl"), lines);
  const ToolRun run =
      RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c",
                    "--dim", "8", "--batch", "100", "--token_codec", "residual", "--exact_tier",
                    "false", "--code_train_after", "1000"});
  ASSERT_EQ(run.exit_code(), 0) << DescribeWaitStatus(run.status) << "\n" << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("1000 documents in: training the token codec"), std::string::npos)
      << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("trained after 1000 documents"), std::string::npos)
      << run.stderr_text;
  const GetResult r = ReadBack(dir.Sub("data"), "c", Ids(3000));
  ASSERT_EQ(r.documents.size(), 3000u);
  for (size_t i = 0; i < r.documents.size(); ++i) {
    const Document& d = r.documents[i];
    const nlohmann::json in = nlohmann::json::parse(lines[i]);
    const uint32_t rows = i % 3 == 0 ? 1 : i % 3 == 1 ? 2 : 3;  // pooled only: one row
    ASSERT_EQ(d.num_tokens, rows) << d.id;
    ASSERT_EQ(d.tokens.size(), size_t(rows) * kDim) << d.id;
    if (i % 3 == 1) {
      // Decoded from 2-bit codes: each row points where the written one does.
      for (uint32_t k = 0; k < rows; ++k) {
        double dot = 0, a = 0, b = 0;
        for (uint32_t t = 0; t < kDim; ++t) {
          const double x = in["tokens"][k][t].get<double>(), y = d.tokens[k * kDim + t];
          dot += x * y;
          a += x * x;
          b += y * y;
        }
        EXPECT_GT(dot / std::sqrt(a * b), 0.8) << d.id << " row " << k;
      }
    }
  }
  auto store = DocStore::Open(dir.Sub("data") + "/collections/c/store", StorageOptions());
  ASSERT_TRUE(store.ok()) << store.status();
  size_t rows_left = 0, coded = 0;
  ASSERT_TRUE((*store)
                  ->ScanTokens(0,
                               [&](Label, std::string_view, uint32_t) {
                                 ++rows_left;
                                 return absl::OkStatus();
                               })
                  .ok());
  ASSERT_TRUE((*store)
                  ->ScanCodes(0,
                              [&](Label, std::string_view) {
                                ++coded;
                                return absl::OkStatus();
                              })
                  .ok());
  EXPECT_EQ(rows_left, 0u);
  EXPECT_EQ(coded, 3000u);
}

TEST(IndexerToolTest, GzipLoadEqualsPlainLoad) {
  TempDir dir;
  const std::vector<std::string> lines = Corpus(300, 2);
  WriteLines(dir.Sub("in.jsonl"), lines);
  {
    gzFile gz = gzopen(dir.Sub("in.jsonl.gz").c_str(), "wb");
    for (const auto& l : lines) gzputs(gz, (l + "\n").c_str());
    gzclose(gz);
  }
  for (const char* name : {"in.jsonl", "in.jsonl.gz"}) {
    const ToolRun run =
        RunTool(dir, {dir.Sub(name), "--data_dir", dir.Sub(name + std::string(".d")),
                      "--collection", "c", "--dim", "8"});
    ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  }
  ExpectSameDocuments(ReadBack(dir.Sub("in.jsonl.d"), "c", Ids(300)),
                      ReadBack(dir.Sub("in.jsonl.gz.d"), "c", Ids(300)));
}

TEST(IndexerToolTest, FvecsLoadTakesTheFilesDim) {
  TempDir dir;
  std::mt19937 rng(3);
  const std::vector<float> v = testing::RandomUnitRows(rng, 100, 16);
  {
    std::ofstream out(dir.Sub("base.fvecs"), std::ios::binary);
    for (int i = 0; i < 100; ++i) {
      const int32_t d = 16;
      out.write(reinterpret_cast<const char*>(&d), 4);
      out.write(reinterpret_cast<const char*>(v.data() + i * 16), 16 * 4);
    }
  }
  const ToolRun run = RunTool(dir, {dir.Sub("base.fvecs"), "--data_dir", dir.Sub("data"),
                                    "--collection", "sift", "--ann_spec", "Flat"});
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  const GetResult r = ReadBack(dir.Sub("data"), "sift", {"0", "99", "100"});
  ASSERT_EQ(r.documents.size(), 2u);
  EXPECT_EQ(r.not_found_ids, (std::vector<std::string>{"100"}));
  ASSERT_EQ(r.documents[1].pooled.size(), 16u);
  for (int k = 0; k < 16; ++k) EXPECT_NEAR(r.documents[1].pooled[k], v[99 * 16 + k], 1e-6);
}

// A corpus with bad lines at known places.
std::vector<std::string> CorpusWithBadLines() {
  std::vector<std::string> lines = Corpus(20, 4);
  lines[3] = "{\"id\":\"doc-3\",\"pooled\":[1,2]}";                      // line 4: dim
  lines[7] = "{\"id\":\"doc-7\",\"pooled\":[1,2,3,4,5,6,7,";             // line 8: JSON
  lines[10] = "{\"id\":\"doc-2\",\"pooled\":[1,2,3,4,5,6,7,8]}";         // line 11: dup
  lines[12] = "{\"pooled\":[1,2,3,4,5,6,7,8]}";                          // line 13: no id
  lines[15] = "{\"id\":\"doc-15\",\"pooled\":[1,\"NaN\",3,4,5,6,7,8]}";  // line 16: NaN
  return lines;
}

// The rejects file's entries: (position, id, reason) per line.
std::vector<std::tuple<uint64_t, std::string, std::string>> ReadRejects(const std::string& path) {
  std::vector<std::tuple<uint64_t, std::string, std::string>> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    out.emplace_back(j.at("position").get<uint64_t>(), j.value("id", ""),
                     j.at("reason").get<std::string>());
    EXPECT_EQ(
        j.at("location").get<std::string>().find(":" + std::to_string(std::get<0>(out.back()))),
        j.at("location").get<std::string>().size() -
            std::to_string(std::get<0>(out.back())).size() - 1)
        << line;
  }
  return out;
}

TEST(IndexerToolTest, BadLinesAreSkippedAndListedByDefault) {
  TempDir dir;
  WriteLines(dir.Sub("bad.jsonl"), CorpusWithBadLines());
  const std::string f = dir.Sub("bad.jsonl");
  ToolRun run = RunTool(
      dir, {f, "--data_dir", dir.Sub("data"), "--collection", "c", "--dim", "8", "--batch", "4"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;  // done, with rejects
  EXPECT_NE(run.stderr_text.find(f + ":4: pooled: expected 8 values, got 2"), std::string::npos)
      << run.stderr_text;
  const std::string rejects = dir.Sub("data/c.bad.jsonl.rejects.jsonl");
  EXPECT_NE(run.stderr_text.find("done with 5 bad records rejected (skipped): see " + rejects),
            std::string::npos)
      << run.stderr_text;
  const GetResult r = ReadBack(dir.Sub("data"), "c", Ids(20));
  EXPECT_EQ(r.documents.size(), 15u);
  const auto listed = ReadRejects(rejects);
  ASSERT_EQ(listed.size(), 5u);
  EXPECT_EQ(listed[0], std::make_tuple(uint64_t{4}, std::string("doc-3"),
                                       std::string("pooled: expected 8 values, got 2")));
  EXPECT_EQ(std::get<0>(listed[1]), 8u);  // bad JSON: no id
  EXPECT_EQ(std::get<1>(listed[1]), "");
  EXPECT_EQ(std::get<1>(listed[2]), "doc-2");  // the duplicate
  EXPECT_EQ(std::get<0>(listed[3]), 13u);
  EXPECT_EQ(std::get<0>(listed[4]), 16u);

  // --max_errors 0: the strict meaning, stop at the first.
  TempDir dir2;
  run = RunTool(dir2, {f, "--data_dir", dir2.Sub("data"), "--collection", "c", "--dim", "8",
                       "--max_errors", "0"});
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find(":8: "), std::string::npos) << run.stderr_text;
  // The lines before the bad one are stored; nothing after it.
  EXPECT_EQ(ReadBack(dir2.Sub("data"), "c", Ids(20)).documents.size(), 3u);

  // A load without bad records leaves no rejects file (a stale one goes).
  WriteLines(dir.Sub("good.jsonl"), Corpus(20, 4));
  run = RunTool(dir, {dir.Sub("good.jsonl"), "--data_dir", dir.Sub("data3"), "--collection", "c",
                      "--dim", "8", "--rejects", rejects});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_FALSE(std::filesystem::exists(rejects));
}

TEST(IndexerToolTest, MaxErrorsReportsEveryBadLineAsFileLine) {
  TempDir dir;
  WriteLines(dir.Sub("bad.jsonl"), CorpusWithBadLines());
  const std::string f = dir.Sub("bad.jsonl");
  ToolRun run = RunTool(dir, {f, "--data_dir", dir.Sub("data"), "--collection", "c", "--dim", "8",
                              "--max_errors", "5", "--batch", "4"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;  // done, the bad lines rejected
  for (const std::string& expected :
       {f + ":4: pooled: expected 8 values, got 2",
        f + ":8: bad JSON:", f + ":11: id: duplicate id 'doc-2' (first at " + f + ":3)",
        f + ":13: id: missing", f + ":16: pooled[1]: expected a number, got string \"NaN\""}) {
    EXPECT_NE(run.stderr_text.find(expected), std::string::npos)
        << "missing '" << expected << "' in:\n"
        << run.stderr_text;
  }
  EXPECT_NE(run.stderr_text.find("5 bad records"), std::string::npos) << run.stderr_text;
  GetResult r = ReadBack(dir.Sub("data"), "c", Ids(20));
  // Line 11 (doc-10's) carried doc-2's id; line 13 (doc-12's) no id.
  EXPECT_EQ(r.documents.size(), 15u);
  EXPECT_EQ(r.not_found_ids,
            (std::vector<std::string>{"doc-3", "doc-7", "doc-10", "doc-12", "doc-15"}));

  // One error more than allowed: stops at the fifth bad line (16), which a
  // re-run with a higher limit resumes from.
  TempDir dir2;
  run = RunTool(dir2, {f, "--data_dir", dir2.Sub("data"), "--collection", "c", "--dim", "8",
                       "--max_errors", "4"});
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("more than 4 bad records"), std::string::npos) << run.stderr_text;
  r = ReadBack(dir2.Sub("data"), "c", Ids(20));
  EXPECT_EQ(r.documents.size(), 11u);  // lines 1..15 minus 4 bad
  run =
      RunTool(dir2, {f, "--data_dir", dir2.Sub("data"), "--collection", "c", "--max_errors", "5"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("resuming after line 15"), std::string::npos) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(f + ":16: "), std::string::npos) << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find(f + ":4: "), std::string::npos) << run.stderr_text;
  ExpectSameDocuments(ReadBack(dir2.Sub("data"), "c", Ids(20)),
                      ReadBack(dir.Sub("data"), "c", Ids(20)));
  // The resumed load's rejects file lists each bad line once.
  EXPECT_EQ(ReadRejects(dir2.Sub("data/c.bad.jsonl.rejects.jsonl")),
            ReadRejects(dir.Sub("data/c.bad.jsonl.rejects.jsonl")));
}

void WriteFvecs(const std::string& path, const std::vector<float>& v, int dim) {
  std::ofstream out(path, std::ios::binary);
  for (size_t i = 0; i * size_t(dim) < v.size(); ++i) {
    out.write(reinterpret_cast<const char*>(&dim), 4);
    out.write(reinterpret_cast<const char*>(v.data() + i * size_t(dim)), dim * 4);
  }
}

// The stats of `collection` in data_dir.
CollectionStats StatsOf(const std::string& data_dir, const std::string& collection) {
  testing::OpenedCollection c = testing::OpenCollection(data_dir, collection);
  return c.collection != nullptr ? c.collection->Stats() : CollectionStats{};
}

// The "efSearch=N" the tool printed as its choice, or "".
std::string PrintedTuning(const std::string& stderr_text) {
  const std::string marker = "ANN index tuned: ";
  const size_t at = stderr_text.find(marker);
  if (at == std::string::npos) return "";
  const size_t begin = at + marker.size();
  return stderr_text.substr(begin, stderr_text.find(' ', begin) - begin);
}

TEST(IndexerToolTest, TargetRecallTunesTheIndexOffline) {
  TempDir dir;
  std::mt19937 rng(31);
  WriteFvecs(dir.Sub("base.fvecs"), testing::RandomUnitRows(rng, 2000, 16), 16);
  ToolRun run = RunTool(dir, {dir.Sub("base.fvecs"), "--data_dir", dir.Sub("data"), "--collection",
                              "v", "--target_recall", "0.9"});
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  const std::string printed = PrintedTuning(run.stderr_text);
  EXPECT_EQ(printed.rfind("efSearch=", 0), 0u) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("on 1000 held-out vectors"), std::string::npos) << run.stderr_text;
  CollectionStats stats = StatsOf(dir.Sub("data"), "v");
  EXPECT_EQ(stats.num_documents, 2000u);
  EXPECT_EQ(stats.tuned_ann_params, printed);
  EXPECT_DOUBLE_EQ(stats.tuned_target_recall, 0.9);

  // Out of range: a usage error before anything is loaded.
  for (const char* bad : {"1.5", "-0.1"}) {
    run = RunTool(dir, {dir.Sub("base.fvecs"), "--data_dir", dir.Sub("data2"), "--collection", "v",
                        "--target_recall", bad});
    EXPECT_EQ(run.exit_code(), 1) << bad << run.stderr_text;
    EXPECT_NE(run.stderr_text.find("--target_recall must be in [0, 1]"), std::string::npos)
        << run.stderr_text;
  }
  // Stopped early (--limit): not tuned.
  run = RunTool(dir, {dir.Sub("base.fvecs"), "--data_dir", dir.Sub("data3"), "--collection", "v",
                      "--target_recall", "0.9", "--limit", "1500"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("is not tuned"), std::string::npos) << run.stderr_text;
  EXPECT_EQ(StatsOf(dir.Sub("data3"), "v").tuned_ann_params, "");
  // An exact index has nothing to tune.
  run = RunTool(dir, {dir.Sub("base.fvecs"), "--data_dir", dir.Sub("data4"), "--collection", "v",
                      "--ann_spec", "Flat", "--target_recall", "0.9"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("exact, nothing to tune"), std::string::npos) << run.stderr_text;
  EXPECT_EQ(StatsOf(dir.Sub("data4"), "v").tuned_ann_params, "");
  // Too few documents to measure a recall on: stored, not tuned, exit 0;
  // an exact index at that size still has nothing to tune.
  WriteFvecs(dir.Sub("few.fvecs"), testing::RandomUnitRows(rng, 9, 16), 16);
  run = RunTool(dir, {dir.Sub("few.fvecs"), "--data_dir", dir.Sub("data5"), "--collection", "v",
                      "--ann_spec", "HNSW32,Flat", "--target_recall", "0.9"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("the ANN index is not tuned: tuning needs at least 12"),
            std::string::npos)
      << run.stderr_text;
  EXPECT_EQ(StatsOf(dir.Sub("data5"), "v").num_documents, 9u);
  run = RunTool(dir, {dir.Sub("few.fvecs"), "--data_dir", dir.Sub("data6"), "--collection", "v",
                      "--ann_spec", "Flat", "--target_recall", "0.9"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("exact, nothing to tune"), std::string::npos) << run.stderr_text;
}

TEST(IndexerToolTest, TargetRecallTunesTheIndexOnline) {
  TempDir dir;
  std::mt19937 rng(32);
  WriteFvecs(dir.Sub("base.fvecs"), testing::RandomUnitRows(rng, 1500, 16), 16);
  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("data"));
  ASSERT_FALSE(address.empty());
  const ToolRun run = RunTool(dir, {dir.Sub("base.fvecs"), "--server", address, "--collection", "v",
                                    "--target_recall", "0.95", "--checkpoint", dir.Sub("ckpt")});
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  const std::string printed = PrintedTuning(run.stderr_text);
  EXPECT_EQ(printed.rfind("efSearch=", 0), 0u) << run.stderr_text;
  const v1::CollectionInfo info = InfoOf(address, "v");
  EXPECT_EQ(info.num_documents(), 1500u);
  EXPECT_EQ(info.tuned_ann_params(), printed);
  EXPECT_DOUBLE_EQ(info.tuned_target_recall(), 0.95);
  server.Kill(SIGTERM);
  server.Wait();
}

TEST(IndexerToolTest, UsageErrors) {
  TempDir dir;
  WriteLines(dir.Sub("in.jsonl"), Corpus(5, 5));
  // Neither mode.
  EXPECT_EQ(RunTool(dir, {dir.Sub("in.jsonl"), "--collection", "c"}).exit_code(), 1);
  // Unknown flag.
  EXPECT_EQ(RunTool(dir, {dir.Sub("in.jsonl"), "--collection", "c", "--bogus"}).exit_code(), 1);
  // A new collection takes the dim its first record states...
  ToolRun run =
      RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("(dim 8, from the first record)"), std::string::npos)
      << run.stderr_text;
  // ... the first that parses, when a bad line comes first (reported with
  // its line, the rest loaded) ...
  std::vector<std::string> lines = Corpus(5, 5);
  lines.insert(lines.begin(), "{not json");
  WriteLines(dir.Sub("bad_first.jsonl"), lines);
  run = RunTool(dir,
                {dir.Sub("bad_first.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c2"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("bad_first.jsonl:1: bad JSON"), std::string::npos)
      << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("(dim 8, from the first record)"), std::string::npos)
      << run.stderr_text;
  EXPECT_EQ(ReadBack(dir.Sub("data"), "c2", Ids(5)).documents.size(), 5u);
  // ... and needs --dim when no record states one.
  WriteLines(dir.Sub("all_bad.jsonl"), {"{not json", "[1, 2]"});
  run =
      RunTool(dir, {dir.Sub("all_bad.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c3"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("--dim is needed"), std::string::npos);
  EXPECT_NE(run.stderr_text.find("hold no record that states a dim"), std::string::npos)
      << run.stderr_text;
  // A directory as JSON lines input is named as such.
  std::filesystem::create_directories(dir.Sub("a_folder"));
  run = RunTool(dir, {dir.Sub("a_folder"), "--format", "jsonl", "--data_dir", dir.Sub("data"),
                      "--collection", "c5", "--dim", "8"});
  EXPECT_NE(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("a_folder: a directory"), std::string::npos) << run.stderr_text;
  // Thread counts that cannot be made; a checkpoint or rejects file that
  // cannot be written: usage errors before anything is loaded.
  run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data4"), "--collection", "c",
                      "--threads", "100000"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("--threads must be 0..256"), std::string::npos);
  for (const char* flag : {"--rejects", "--checkpoint"}) {
    run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data4"), "--collection", "c",
                        flag, dir.Sub("no_such_folder/file")});
    EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
    EXPECT_NE(run.stderr_text.find(std::string(flag) + " " + dir.Sub("no_such_folder/file") +
                                   ": the folder"),
              std::string::npos)
        << run.stderr_text;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("data4")));
  // A missing input is an input error.
  EXPECT_EQ(RunTool(dir, {dir.Sub("nope.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c",
                          "--dim", "8"})
                .exit_code(),
            2);
  // --dim contradicting the existing collection.
  ASSERT_EQ(RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c",
                          "--dim", "8"})
                .exit_code(),
            0);
  run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c",
                      "--dim", "16", "--restart"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("has dim 8, not 16"), std::string::npos) << run.stderr_text;
}

// A creating flag that contradicts the existing collection is a usage
// error naming the flag, offline and online; the same flags as the
// collection's, or none, load; nothing is written by a refused run.
TEST(IndexerToolTest, CreationFlagsContradictingTheCollectionAreRefused) {
  TempDir dir;
  WriteLines(dir.Sub("base.jsonl"), Corpus(50, 33));
  std::vector<std::string> more = Corpus(20, 34);
  for (std::string& line : more) line.replace(line.find("doc-"), 4, "more-");
  WriteLines(dir.Sub("more.jsonl"), more);
  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("online"));
  ASSERT_FALSE(address.empty());
  for (const bool online : {false, true}) {
    SCOPED_TRACE(online ? "online" : "offline");
    const std::vector<std::string> target =
        online ? std::vector<std::string>{"--server", address}
               : std::vector<std::string>{"--data_dir", dir.Sub("offline")};
    auto run = [&](const std::string& input, const std::vector<std::string>& flags) {
      std::vector<std::string> args = {
          dir.Sub(input), "--collection", "c", "--checkpoint", dir.Sub(online ? "ck_on" : "ck_off"),
          "--restart"};
      args.insert(args.end(), target.begin(), target.end());
      args.insert(args.end(), flags.begin(), flags.end());
      return RunTool(dir, args);
    };
    ToolRun r = run("base.jsonl", {"--dtype", "int8", "--ann_spec", "HNSW16,Flat"});
    ASSERT_EQ(r.exit_code(), 0) << r.stderr_text;
    const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
        {{"--dtype", "f32"}, "--dtype: collection 'c' exists with dtype 'int8', not 'f32'"},
        {{"--ann_spec", "Flat"}, "--ann_spec: collection 'c' exists with ann_spec 'HNSW16,Flat'"},
        {{"--numeric_fields", "year"}, "--numeric_fields"},
        {{"--token_codec", "residual"}, "--token_codec"},
        {{"--candidates_from", "fde"}, "--candidates_from"},
    };
    for (const auto& [flags, message] : refused) {
      r = run("more.jsonl", flags);
      EXPECT_EQ(r.exit_code(), 1) << flags[0] << ": " << r.stderr_text;
      EXPECT_NE(r.stderr_text.find(message), std::string::npos) << r.stderr_text;
    }
    // Its own values, or none, load the rest.
    r = run("more.jsonl", {"--dtype", "int8", "--ann_spec", "HNSW16,Flat", "--token_codec", "rows",
                           "--candidates_from", "pooled"});
    EXPECT_EQ(r.exit_code(), 0) << r.stderr_text;
  }
  // A residual codec's flag creating a collection of rows, and an empty
  // numeric field name (which once took the next flags as names), are
  // usage errors too.
  ToolRun bad = RunTool(dir, {dir.Sub("base.jsonl"), "--data_dir", dir.Sub("offline"),
                              "--collection", "fresh", "--code_bits", "4"});
  EXPECT_EQ(bad.exit_code(), 1) << bad.stderr_text;
  EXPECT_NE(bad.stderr_text.find("--code_bits: applies to --token_codec residual only"),
            std::string::npos)
      << bad.stderr_text;
  bad = RunTool(dir, {dir.Sub("base.jsonl"), "--data_dir", dir.Sub("offline"), "--collection",
                      "fresh", "--numeric_fields", ",", "--dtype", "f32"});
  EXPECT_EQ(bad.exit_code(), 1) << bad.stderr_text;
  EXPECT_NE(bad.stderr_text.find("--numeric_fields: an empty name"), std::string::npos)
      << bad.stderr_text;
  // Nothing but the two good loads was written.
  const v1::CollectionInfo info = InfoOf(address, "c");
  EXPECT_EQ(info.num_documents(), 70u);
  EXPECT_EQ(info.config().token_dtype(), v1::TOKEN_DTYPE_INT8);
  server.Kill(SIGTERM);
  server.Wait();
}

// Kill the load (SIGKILL, after N documents were written but before their
// checkpoint), run the same command again, and compare with a load that
// was never interrupted.
TEST(IndexerToolTest, ResumeAfterCrashEqualsUninterruptedLoad) {
  TempDir dir;
  std::vector<std::string> lines = Corpus(2000, 6);
  lines[1500] = "{\"id\":\"doc-1500\",\"pooled\":[1]}";  // one bad line after the crash
  WriteLines(dir.Sub("in.jsonl"), lines);
  const std::vector<std::string> common = {dir.Sub("in.jsonl"),
                                           "--collection",
                                           "c",
                                           "--dim",
                                           "8",
                                           "--batch",
                                           "100",
                                           "--checkpoint_every",
                                           "300",
                                           "--max_errors",
                                           "10"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ToolRun run = RunTool(dir, with({"--data_dir", dir.Sub("whole")}));
  ASSERT_EQ(run.exit_code(), 4) << run.stderr_text;  // the bad line

  // The runs that are killed parse with 1 and with 3 threads: where the
  // checkpoint stands does not depend on it.
  run = RunTool(dir,
                with({"--data_dir", dir.Sub("resumed"), "--stop_after", "1000", "--threads", "1"}));
  ASSERT_TRUE(WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL)
      << DescribeWaitStatus(run.status) << "\n"
      << run.stderr_text;
  run = RunTool(dir,
                with({"--data_dir", dir.Sub("resumed"), "--stop_after", "700", "--threads", "3"}));
  ASSERT_TRUE(WIFSIGNALED(run.status)) << run.stderr_text;
  // Checkpoints every 300 documents: the first run's last was at 900.
  EXPECT_NE(run.stderr_text.find("resuming after line 900"), std::string::npos) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(":1501: pooled: expected 8 values, got 1"), std::string::npos)
      << run.stderr_text;
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed")}));
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;  // the bad line, reported earlier
  EXPECT_NE(run.stderr_text.find("resuming after line"), std::string::npos) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("1 bad records (1 of them reported by an earlier run)"),
            std::string::npos)
      << run.stderr_text;

  const GetResult whole = ReadBack(dir.Sub("whole"), "c", Ids(2000));
  EXPECT_EQ(whole.documents.size(), 1999u);
  ExpectSameDocuments(ReadBack(dir.Sub("resumed"), "c", Ids(2000)), whole);

  // Everything is loaded: a re-run does nothing; another input starts over
  // (and --restart ignores the checkpoint).
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed")}));
  EXPECT_NE(run.stderr_text.find("0 documents written (2000 records skipped"), std::string::npos)
      << run.stderr_text;
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed"), "--restart", "--limit", "10"}));
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("10 documents written"), std::string::npos) << run.stderr_text;
  WriteLines(dir.Sub("in.jsonl"), Corpus(50, 7));
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed")}));
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("is for another input"), std::string::npos) << run.stderr_text;
}

// --numeric_fields declares range-filterable keys when the collection is
// created, offline and online; JSON numbers in metadata work; a record with
// a non-number is reported at its line and the rest is loaded.
TEST(IndexerToolTest, NumericFieldsOfflineAndOnline) {
  TempDir dir;
  std::vector<std::string> lines;
  for (int i = 0; i < 100; ++i) {
    lines.push_back("{\"id\":\"doc-" + std::to_string(i) + "\",\"pooled\":[1,2,3,4,5,6,7," +
                    std::to_string(i + 1) + "],\"metadata\":{\"price\":" + std::to_string(i) +
                    ".5,\"year\":\"" + std::to_string(1900 + i) + "\"}}");
  }
  lines[41] = "{\"id\":\"doc-41\",\"pooled\":[1,2,3,4,5,6,7,8],\"metadata\":{\"price\":\"abc\"}}";
  WriteLines(dir.Sub("in.jsonl"), lines);
  const std::string f = dir.Sub("in.jsonl");

  ToolRun run =
      RunTool(dir, {f, "--data_dir", dir.Sub("data"), "--collection", "c", "--dim", "8",
                    "--numeric_fields", "price,year", "--max_errors", "3", "--batch", "16"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  const std::string reason = "metadata[\"price\"]: \"abc\" is not a number (numeric field)";
  const std::string expected = f + ":42: rejected by the engine: " + reason;
  EXPECT_NE(run.stderr_text.find(expected), std::string::npos) << run.stderr_text;
  {
    CatalogOptions o;
    o.data_dir = dir.Sub("data");
    auto catalog = Catalog::Open(o);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    auto c = (*catalog)->Get("c");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->config().numeric_fields, (std::vector<std::string>{"price", "year"}));
    EXPECT_EQ((*c)->Stats().num_documents, 99u);
    SearchQuery q;
    q.pooled = {1, 2, 3, 4, 5, 6, 7, 8};
    q.top_k = 100;
    q.mode = RerankMode::kNone;
    q.ranges = {RangeCondition{"price", 10.0, std::nullopt, std::nullopt, 20.0}};
    auto r = (*c)->Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->hits.size(), 10u);  // 10.5 .. 19.5
  }

  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("online"));
  ASSERT_FALSE(address.empty());
  run = RunTool(dir, {f, "--server", address, "--collection", "c", "--dim", "8", "--numeric_fields",
                      "price", "--max_errors", "3", "--checkpoint", dir.Sub("ckpt")});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  // Rejected by the server: listed with the document's id.
  const auto listed = ReadRejects(dir.Sub("ckpt.rejects.jsonl"));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0], std::make_tuple(uint64_t{42}, std::string("doc-41"),
                                       "rejected by the server: " + reason));
  EXPECT_NE(run.stderr_text.find(f + ":42: rejected by the server: " + reason), std::string::npos)
      << run.stderr_text;
  auto stub = testing::NewSearchStub(address);
  grpc::ClientContext ctx;
  v1::GetCollectionRequest req;
  req.set_name("c");
  v1::GetCollectionResponse info;
  ASSERT_TRUE(stub->GetCollection(&ctx, req, &info).ok());
  EXPECT_EQ(info.collection().num_documents(), 99u);
  ASSERT_EQ(info.collection().config().numeric_fields_size(), 1);
  EXPECT_EQ(info.collection().config().numeric_fields(0), "price");
  // A bad name is a usage error.
  run = RunTool(dir, {f, "--data_dir", dir.Sub("data2"), "--collection", "c", "--dim", "8",
                      "--numeric_fields", "a b"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("config.numeric_fields[0]"), std::string::npos) << run.stderr_text;
}

// A document whose message is over the server's --max_message_mb is
// rejected by its line, and the load goes on (it used to stop the load,
// and every re-run, at the client's own send limit); a batch of several
// over the limit is sent again in halves.
TEST(IndexerToolTest, OnlineDocumentOverTheServersMessageLimitIsRejectedByItsLine) {
  TempDir dir;
  std::vector<std::string> lines = Corpus(40, 8);
  // About 2.5 MiB of text: over a 2 MiB server limit, within --batch_mb 4.
  std::string big = "{\"id\":\"big\",\"pooled\":[1,2,3,4,5,6,7,8],\"text\":\"";
  for (int i = 0; i < 500000; ++i) big += "word ";
  big += "\"}";
  lines[20] = big;
  const std::string f = dir.Sub("in.jsonl");
  WriteLines(f, lines);
  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("online"), {"--max_message_mb", "2"});
  ASSERT_FALSE(address.empty());
  ToolRun run = RunTool(dir, {f, "--server", address, "--collection", "c", "--dim", "8",
                              "--checkpoint", dir.Sub("ckpt")});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(f + ":21: rejected by the server: its message is"),
            std::string::npos)
      << run.stderr_text;
  const auto listed = ReadRejects(dir.Sub("ckpt.rejects.jsonl"));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(std::get<1>(listed[0]), "big");
  const v1::CollectionInfo loaded = InfoOf(address, "c");
  EXPECT_EQ(loaded.num_documents(), 39u);
  EXPECT_EQ(loaded.num_tombstones(), 0u);
  // Batches of many documents over the limit are sent again in halves.
  std::vector<std::string> many = Corpus(40, 8);
  for (size_t k = 0; k < many.size(); ++k) {
    const std::string text = "\"text\":\"text " + std::to_string(k) + "\"";
    const size_t at = many[k].find(text);
    ASSERT_NE(at, std::string::npos) << many[k];
    many[k].replace(at, text.size(), "\"text\":\"" + std::string(100000, 'x') + "\"");
  }
  WriteLines(dir.Sub("many.jsonl"), many);
  run = RunTool(dir, {dir.Sub("many.jsonl"), "--server", address, "--collection", "m", "--dim", "8",
                      "--batch_mb", "3"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_EQ(InfoOf(address, "m").num_documents(), 40u);
}

TEST(IndexerToolTest, OnlineLoadThroughTheServer) {
  TempDir dir;
  std::vector<std::string> lines = Corpus(1500, 8);
  lines[100] = "{\"id\":\"doc-100\",\"pooled\":[1,2,3,4,5,6,7,\"Inf\"]}";
  WriteLines(dir.Sub("in.jsonl"), lines);
  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("data"));
  ASSERT_FALSE(address.empty());
  const std::vector<std::string> common = {dir.Sub("in.jsonl"),
                                           "--server",
                                           address,
                                           "--collection",
                                           "c",
                                           "--dim",
                                           "8",
                                           "--batch",
                                           "50",
                                           "--max_inflight_mb",
                                           "0.05",
                                           "--max_errors",
                                           "3",
                                           "--checkpoint",
                                           dir.Sub("ckpt")};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  // Killed midway, then resumed.
  ToolRun run = RunTool(dir, with({"--stop_after", "600"}));
  ASSERT_TRUE(WIFSIGNALED(run.status)) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(":101: pooled[7]: expected a number, got string \"Inf\""),
            std::string::npos)
      << run.stderr_text;
  run = RunTool(dir, with({}));
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("resuming after line"), std::string::npos) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("1 bad records (1 of them reported by an earlier run)"),
            std::string::npos)
      << run.stderr_text;

  auto stub = testing::NewSearchStub(address);
  grpc::ClientContext ctx;
  v1::GetCollectionRequest req;
  req.set_name("c");
  v1::GetCollectionResponse info;
  ASSERT_TRUE(stub->GetCollection(&ctx, req, &info).ok());
  EXPECT_EQ(info.collection().num_documents(), 1499u);
  grpc::ClientContext gctx;
  v1::GetRequest get;
  get.set_collection("c");
  get.add_ids("doc-1");
  get.add_ids("doc-100");
  get.add_ids("doc-1499");
  v1::GetResponse got;
  ASSERT_TRUE(stub->Get(&gctx, get, &got).ok());
  ASSERT_EQ(got.documents_size(), 2);
  EXPECT_EQ(got.documents(0).text(), "text 1");
  EXPECT_EQ(got.not_found_ids(0), "doc-100");
  server.Kill(SIGTERM);
  server.Wait();
}

// The same input loaded offline and online stores the same documents. For
// a bfloat16 collection the indexer sends the token rows packed as
// bfloat16: the server's normalisation may then move a value by one
// bfloat16 step, rarely; an f32 collection gets floats, bit for bit.
TEST(IndexerToolTest, OnlineLoadStoresWhatOfflineStores) {
  for (const std::string dtype : {"bf16", "f32"}) {
    SCOPED_TRACE(dtype);
    TempDir dir;
    WriteLines(dir.Sub("in.jsonl"), Corpus(600, 21));
    ToolRun run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("offline"),
                                "--collection", "c", "--dtype", dtype});
    ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
    testing::ServerProcess server;
    const std::string address = server.Start(dir.Sub("online"));
    ASSERT_FALSE(address.empty());
    run = RunTool(dir, {dir.Sub("in.jsonl"), "--server", address, "--collection", "c", "--dtype",
                        dtype, "--batch", "50"});
    ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
    server.Kill(SIGTERM);
    server.Wait();

    const GetResult offline = ReadBack(dir.Sub("offline"), "c", Ids(600));
    const GetResult online = ReadBack(dir.Sub("online"), "c", Ids(600));
    ASSERT_EQ(offline.documents.size(), 600u);
    if (dtype == "f32") {
      ExpectSameDocuments(offline, online);
      continue;
    }
    ASSERT_EQ(online.documents.size(), 600u);
    size_t values = 0, moved = 0;
    for (size_t i = 0; i < 600; ++i) {
      const Document& a = offline.documents[i];
      const Document& b = online.documents[i];
      EXPECT_EQ(a.id, b.id);
      EXPECT_EQ(a.pooled, b.pooled) << a.id;
      ASSERT_EQ(a.tokens.size(), b.tokens.size()) << a.id;
      for (size_t j = 0; j < a.tokens.size(); ++j, ++values) {
        if (a.tokens[j] == b.tokens[j]) continue;
        ++moved;
        // One bfloat16 step: 8 significant bits.
        EXPECT_LE(std::fabs(a.tokens[j] - b.tokens[j]),
                  std::ldexp(std::max(std::fabs(a.tokens[j]), std::fabs(b.tokens[j])), -7))
            << a.id << " value " << j;
      }
    }
    std::printf("bf16: %zu of %zu token values one step apart online\n", moved, values);
    EXPECT_GT(values, 1000u);
    EXPECT_LE(moved * 100, values) << moved << " of " << values << " values moved";
  }
}

// --- Text-only corpora and the built-in encoder ---

// A word no other document of TextCorpus has: "zq" + three consonants + "x"
// (no vowels, so no stemmer changes it, and no vocabulary word equals it).
// The number of documents of `collection` on the server at `address`, or
// -1 when it cannot be asked.
int64_t ServerCount(const std::string& address, const std::string& collection) {
  auto stub = testing::NewSearchStub(address);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetCollectionRequest req;
  req.set_name(collection);
  v1::GetCollectionResponse info;
  if (!stub->GetCollection(&ctx, req, &info).ok()) return -1;
  return int64_t(info.collection().num_documents());
}

// The server is killed (SIGKILL) while several streams are in flight and
// started again on the same port: the load retries, sends again what was
// not acknowledged, and every document is stored once.
TEST(IndexerToolTest, OnlineLoadSurvivesAServerKilledMidway) {
  TempDir dir;
  const int n = 12000;
  WriteLines(dir.Sub("in.jsonl"), Corpus(n, 9));
  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("data"));
  ASSERT_FALSE(address.empty());
  const pid_t tool = testing::StartTool(
      dir, {dir.Sub("in.jsonl"), "--server", address, "--collection", "c", "--dim", "8", "--batch",
            "20", "--max_inflight_mb", "0.02", "--streams", "3", "--backoff_ms", "100",
            "--checkpoint", dir.Sub("ckpt")});
  // Until a good part is stored (or the tool is done: then the kill below
  // tests nothing, and the test says so).
  int64_t stored = 0;
  for (int i = 0; i < 3000 && stored < n / 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stored = std::max<int64_t>(stored, ServerCount(address, "c"));
  }
  ASSERT_LT(stored, n) << "the load ended before the server could be killed";
  server.Kill(SIGKILL);
  server.Wait();
  ASSERT_EQ(server.Start(dir.Sub("data"), {"--listen", address}), address);
  ToolRun run = testing::WaitTool(dir, tool);
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("server unavailable"), std::string::npos) << run.stderr_text;
  EXPECT_EQ(ServerCount(address, "c"), n);
  auto stub = testing::NewSearchStub(address);
  const std::vector<std::string> ids = Ids(n);
  for (int first = 0; first < n; first += 10000) {  // a Get's limit
    grpc::ClientContext ctx;
    v1::GetRequest get;
    get.set_collection("c");
    for (int i = first; i < std::min(n, first + 10000); ++i) get.add_ids(ids[size_t(i)]);
    v1::GetResponse got;
    ASSERT_TRUE(stub->Get(&ctx, get, &got).ok());
    EXPECT_EQ(got.documents_size(), std::min(n, first + 10000) - first);
    EXPECT_EQ(got.not_found_ids_size(), 0);
  }
  server.Kill(SIGTERM);
  server.Wait();
}

std::string UniqueWord(int i) {
  static const char kLetters[] = "bcdfghjklmnpqrstvwxz";
  std::string w = "zq";
  for (int k = 0, v = i; k < 3; ++k, v /= 20) w += kLetters[v % 20];
  return w + "x";
}

// A text-only JSON lines corpus of n documents "t-<i>" with only id, title
// (every other one) and text: ~30 words of a made-up vocabulary of 300 and
// UniqueWord(i) somewhere in the text. Seeded.
std::vector<std::string> TextCorpus(int n, uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  const std::vector<std::string> syllables = {"ba", "de", "ki", "lo", "mu",
                                              "ne", "ri", "so", "ta", "vu"};
  std::uniform_int_distribution<int> syllable(0, int(syllables.size()) - 1);
  std::vector<std::string> vocabulary;
  while (vocabulary.size() < 300) {
    std::string w;
    const int len = 2 + int(rng() % 2);
    for (int k = 0; k < len; ++k) w += syllables[syllable(rng)];
    vocabulary.push_back(w);
  }
  std::uniform_int_distribution<int> word(0, int(vocabulary.size()) - 1);
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> words;
    for (int k = 0; k < 30; ++k) words.push_back(vocabulary[word(rng)]);
    words.insert(words.begin() + long(rng() % words.size()), UniqueWord(i));
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    std::string l = "{\"id\":\"t-" + std::to_string(i) + "\"";
    if (i % 2 == 0) {
      l += ",\"title\":\"" + vocabulary[word(rng)] + " " + vocabulary[word(rng)] + "\"";
    }
    lines.push_back(l + ",\"text\":\"" + text + "\"}");
  }
  return lines;
}

std::vector<std::string> TextIds(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("t-" + std::to_string(i));
  return ids;
}

// What an offline collection holds, read through the engine (and closed
// again, so the tool can open the data directory).
struct OfflineView {
  CollectionStats stats;
  uint32_t dim = 0;
  TokenDtype dtype = TokenDtype::kBF16;
  GetResult docs;
  // Per query: the ids of the hits of a text search (top 5), or the status.
  std::vector<absl::StatusOr<std::vector<std::string>>> searches;
};

OfflineView ReadOffline(const std::string& data_dir, const std::string& collection,
                        const std::vector<std::string>& ids,
                        const std::vector<std::string>& queries, bool include_vectors = true) {
  OfflineView v;
  CatalogOptions o;
  o.data_dir = data_dir;
  auto catalog = Catalog::Open(o);
  EXPECT_TRUE(catalog.ok()) << catalog.status();
  if (!catalog.ok()) return v;
  auto c = (*catalog)->Get(collection);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return v;
  v.stats = (*c)->Stats();
  v.dim = (*c)->config().dim;
  v.dtype = (*c)->config().token_dtype;
  auto r = (*c)->Get(ids, include_vectors);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) v.docs = *r;
  for (const std::string& q : queries) {
    SearchQuery query;
    query.text = q;
    query.top_k = 5;
    query.candidates = 1000;  // every document: the reranker is the judge
    absl::StatusOr<SearchResult> res = (*c)->Search(query);
    if (!res.ok()) {
      v.searches.push_back(res.status());
      continue;
    }
    std::vector<std::string> hits;
    for (const SearchHit& h : res->hits) hits.push_back(h.id);
    v.searches.push_back(hits);
  }
  return v;
}

// The oracle: the document holding a word no other document has is the top
// hit of a search for that word.
void ExpectUniqueWordsFindTheirDocuments(const OfflineView& v, const std::vector<int>& docs) {
  ASSERT_EQ(v.searches.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    ASSERT_TRUE(v.searches[i].ok()) << v.searches[i].status();
    ASSERT_FALSE(v.searches[i]->empty()) << UniqueWord(docs[i]);
    EXPECT_EQ(v.searches[i]->front(), "t-" + std::to_string(docs[i])) << UniqueWord(docs[i]);
  }
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

const std::vector<int> kProbes = {0, 57, 123, 199};

std::vector<std::string> ProbeWords() {
  std::vector<std::string> words;
  for (int k : kProbes) words.push_back(UniqueWord(k));
  return words;
}

TEST(IndexerToolTest, OfflineTextOnlyLoadTrainsTheEncoder) {
  TempDir dir;
  WriteLines(dir.Sub("docs.jsonl"), TextCorpus(200, 11));
  const ToolRun run = RunTool(dir, {dir.Sub("docs.jsonl"), "--data_dir", dir.Sub("data"),
                                    "--collection", "c", "--batch", "64"});
  ASSERT_EQ(run.exit_code(), 0) << DescribeWaitStatus(run.status) << "\n" << run.stderr_text;
  for (const std::string& expected :
       {std::string("new collection 'c' (dim 256, the default for text-only input)"),
        std::string("done: 200 documents written"), std::string("encoder v1: vocabulary "),
        std::string("trained on 200 documents in "), std::string("200 documents encoded in "),
        std::string("200 vectors added")}) {
    EXPECT_NE(run.stderr_text.find(expected), std::string::npos)
        << "missing '" << expected << "' in:\n"
        << run.stderr_text;
  }
  const OfflineView v = ReadOffline(dir.Sub("data"), "c", TextIds(200), ProbeWords());
  EXPECT_EQ(v.dim, 256u);
  EXPECT_EQ(v.dtype, TokenDtype::kInt8);  // the default for text-only input
  EXPECT_EQ(v.stats.encoder_version, 1u);
  EXPECT_GT(v.stats.encoder_vocabulary, 300u);  // the made-up words and the unique ones
  EXPECT_EQ(v.stats.num_documents, 200u);
  ASSERT_EQ(v.docs.documents.size(), 200u);
  EXPECT_NE(v.docs.documents[0].text.find("\n\n"), std::string::npos);  // "title\n\ntext"
  EXPECT_EQ(v.docs.documents[1].text.find("\n\n"), std::string::npos);  // no title
  for (const Document& d : v.docs.documents) EXPECT_EQ(d.pooled.size(), 256u) << d.id;
  ExpectUniqueWordsFindTheirDocuments(v, kProbes);
}

// An explicit --dtype wins over the text-only default (int8).
TEST(IndexerToolTest, ExplicitDtypeForTextOnlyInput) {
  TempDir dir;
  WriteLines(dir.Sub("docs.jsonl"), TextCorpus(60, 12));
  const ToolRun run = RunTool(dir, {dir.Sub("docs.jsonl"), "--data_dir", dir.Sub("data"),
                                    "--collection", "c", "--dtype", "bf16"});
  ASSERT_EQ(run.exit_code(), 0) << DescribeWaitStatus(run.status) << "\n" << run.stderr_text;
  const OfflineView v = ReadOffline(dir.Sub("data"), "c", TextIds(60), {});
  EXPECT_EQ(v.dim, 256u);
  EXPECT_EQ(v.dtype, TokenDtype::kBF16);
  EXPECT_EQ(v.stats.encoder_version, 1u);
}

TEST(IndexerToolTest, TrainEncoderNeverLeavesItUntrainedAndAReRunTrainsIt) {
  TempDir dir;
  WriteLines(dir.Sub("docs.jsonl"), TextCorpus(200, 12));
  const std::vector<std::string> common = {dir.Sub("docs.jsonl"), "--data_dir", dir.Sub("data"),
                                           "--collection", "c"};
  std::vector<std::string> args = common;
  args.insert(args.end(), {"--train_encoder", "never"});
  ToolRun run = RunTool(dir, args);
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("--train_encoder=never: 200 text-only documents are stored "
                                 "awaiting the built-in encoder"),
            std::string::npos)
      << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find("encoder v1"), std::string::npos) << run.stderr_text;
  OfflineView v = ReadOffline(dir.Sub("data"), "c", TextIds(200), ProbeWords(),
                              /*include_vectors=*/false);
  EXPECT_EQ(v.stats.encoder_version, 0u);
  EXPECT_EQ(v.stats.num_documents, 200u);
  EXPECT_EQ(v.docs.documents.size(), 200u);
  ASSERT_EQ(v.searches.size(), kProbes.size());
  EXPECT_TRUE(absl::IsFailedPrecondition(v.searches[0].status())) << v.searches[0].status();

  // The same command with --train_encoder=auto (the default): the load is
  // complete, so nothing is written, but the collection holds this input's
  // text-only documents and has no encoder: it is trained now.
  run = RunTool(dir, common);
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("0 documents written (200 records skipped"), std::string::npos)
      << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("encoder v1: vocabulary"), std::string::npos) << run.stderr_text;
  v = ReadOffline(dir.Sub("data"), "c", TextIds(200), ProbeWords());
  EXPECT_EQ(v.stats.encoder_version, 1u);
  ExpectUniqueWordsFindTheirDocuments(v, kProbes);

  // Once trained, auto does not train again; always does (version 2).
  run = RunTool(dir, common);
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find("encoder v"), std::string::npos) << run.stderr_text;
  args = common;
  args.insert(args.end(),
              {"--train_encoder", "always", "--stem_language", "none", "--semantic_share", "0.5"});
  run = RunTool(dir, args);
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("semantic_share 0.5, stem_language none"), std::string::npos)
      << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("encoder v2: vocabulary"), std::string::npos) << run.stderr_text;
  v = ReadOffline(dir.Sub("data"), "c", TextIds(200), ProbeWords());
  EXPECT_EQ(v.stats.encoder_version, 2u);
  ExpectUniqueWordsFindTheirDocuments(v, kProbes);
}

TEST(IndexerToolTest, TextOnlyBadLinesAndEncoderFlags) {
  TempDir dir;
  std::vector<std::string> lines = TextCorpus(20, 13);
  lines[4] = "{\"id\":\"t-4\",\"text\":\"caf\xE9 au lait\"}";  // Latin-1: line 5
  lines[9] = "{\"id\":\"t-9\",\"title\":\"\",\"text\":\"\"}";  // line 10
  lines[14] = "{\"id\":\"t-14\",\"text\":\"--- !!!\"}";        // line 15
  WriteLines(dir.Sub("bad.jsonl"), lines);
  const std::string f = dir.Sub("bad.jsonl");
  ToolRun run =
      RunTool(dir, {f, "--data_dir", dir.Sub("data"), "--collection", "c", "--max_errors", "3"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  for (const std::string& expected :
       {f + ":5: text: invalid UTF-8 at byte 3", f + ":10: no text, pooled vector or tokens",
        f + ":15: text: contains no words", std::string("encoder v1: vocabulary")}) {
    EXPECT_NE(run.stderr_text.find(expected), std::string::npos)
        << "missing '" << expected << "' in:\n"
        << run.stderr_text;
  }
  const OfflineView v = ReadOffline(dir.Sub("data"), "c", TextIds(20), {});
  EXPECT_EQ(v.docs.documents.size(), 17u);
  EXPECT_EQ(v.stats.encoder_version, 1u);

  // A load stopped early (--limit) does not train; the re-run that finishes
  // the input does.
  run = RunTool(dir, {f, "--data_dir", dir.Sub("data3"), "--collection", "c", "--max_errors", "3",
                      "--limit", "3"});
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("the built-in encoder is not trained: the load did not reach "
                                 "the end of its input"),
            std::string::npos)
      << run.stderr_text;
  EXPECT_EQ(ReadOffline(dir.Sub("data3"), "c", {}, {}).stats.encoder_version, 0u);
  run = RunTool(dir, {f, "--data_dir", dir.Sub("data3"), "--collection", "c", "--max_errors", "3"});
  EXPECT_EQ(run.exit_code(), 4) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("trained on 17 documents"), std::string::npos) << run.stderr_text;
  EXPECT_EQ(ReadOffline(dir.Sub("data3"), "c", {}, {}).stats.encoder_version, 1u);

  // Encoder settings are checked before anything is loaded.
  run = RunTool(
      dir, {f, "--data_dir", dir.Sub("data2"), "--collection", "c", "--semantic_share", "1.5"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("--semantic_share: must be in [0, 1]"), std::string::npos)
      << run.stderr_text;
  run = RunTool(
      dir, {f, "--data_dir", dir.Sub("data2"), "--collection", "c", "--stem_language", "klingon"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("klingon"), std::string::npos) << run.stderr_text;
  EXPECT_EQ(RunTool(dir, {f, "--data_dir", dir.Sub("data2"), "--collection", "c", "--train_encoder",
                          "sometimes"})
                .exit_code(),
            1);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("data2") + "/c"));
}

// Killed midway (before training), then resumed: the same documents as an
// uninterrupted load, and the encoder trained once, at the end of the run
// that finished the input.
TEST(IndexerToolTest, TextOnlyResumeAfterCrashTrainsOnceAtTheEnd) {
  TempDir dir;
  WriteLines(dir.Sub("docs.jsonl"), TextCorpus(1000, 14));
  const std::vector<std::string> common = {
      dir.Sub("docs.jsonl"), "--collection", "c", "--batch", "100", "--checkpoint_every", "200"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ToolRun run = RunTool(dir, with({"--data_dir", dir.Sub("whole")}));
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;

  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed"), "--stop_after", "500"}));
  ASSERT_TRUE(WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL)
      << DescribeWaitStatus(run.status) << "\n"
      << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find("encoder"), std::string::npos) << run.stderr_text;
  // Stored awaiting the encoder (no vectors yet).
  OfflineView v = ReadOffline(dir.Sub("resumed"), "c", TextIds(1000), {},
                              /*include_vectors=*/false);
  EXPECT_EQ(v.stats.encoder_version, 0u);
  EXPECT_GE(v.docs.documents.size(), 400u);  // the last checkpoint was at 400
  EXPECT_EQ(v.stats.num_documents, v.docs.documents.size());

  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed")}));
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("resuming after line 400"), std::string::npos) << run.stderr_text;
  EXPECT_EQ(Count(run.stderr_text, "encoder v"), 1u) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("encoder v1: vocabulary"), std::string::npos) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("trained on 1000 documents"), std::string::npos)
      << run.stderr_text;

  const std::vector<int> probes = {0, 401, 450, 999};
  std::vector<std::string> words;
  for (int k : probes) words.push_back(UniqueWord(k));
  const OfflineView whole = ReadOffline(dir.Sub("whole"), "c", TextIds(1000), words);
  v = ReadOffline(dir.Sub("resumed"), "c", TextIds(1000), words);
  EXPECT_EQ(whole.stats.encoder_version, 1u);
  EXPECT_EQ(v.stats.encoder_version, 1u);
  EXPECT_EQ(v.stats.num_documents, 1000u);  // no duplicates
  ASSERT_EQ(v.docs.documents.size(), 1000u);
  ASSERT_EQ(whole.docs.documents.size(), 1000u);
  for (size_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(v.docs.documents[i].id, whole.docs.documents[i].id);
    EXPECT_EQ(v.docs.documents[i].text, whole.docs.documents[i].text);
    EXPECT_EQ(v.docs.documents[i].pooled.size(), 256u) << v.docs.documents[i].id;
  }
  ExpectUniqueWordsFindTheirDocuments(whole, probes);
  ExpectUniqueWordsFindTheirDocuments(v, probes);

  // Complete and trained: a re-run writes nothing and does not train.
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed")}));
  ASSERT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("0 documents written (1000 records skipped"), std::string::npos)
      << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find("encoder v"), std::string::npos) << run.stderr_text;
  v = ReadOffline(dir.Sub("resumed"), "c", {}, {});
  EXPECT_EQ(v.stats.encoder_version, 1u);
  EXPECT_EQ(v.stats.num_documents, 1000u);
}

TEST(IndexerToolTest, OnlineTextOnlyLoadTrainsTheEncoder) {
  TempDir dir;
  WriteLines(dir.Sub("docs.jsonl"), TextCorpus(200, 15));
  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("data"));
  ASSERT_FALSE(address.empty());
  const ToolRun run = RunTool(dir, {dir.Sub("docs.jsonl"), "--server", address, "--collection", "c",
                                    "--batch", "50", "--checkpoint", dir.Sub("ckpt")});
  ASSERT_EQ(run.exit_code(), 0) << DescribeWaitStatus(run.status) << "\n" << run.stderr_text;
  for (const std::string& expected :
       {std::string("(dim 256, the default for text-only input)"),
        std::string("encoder v1: vocabulary "), std::string("trained on 200 documents"),
        std::string("200 documents encoded"), std::string("holds 200 documents")}) {
    EXPECT_NE(run.stderr_text.find(expected), std::string::npos)
        << "missing '" << expected << "' in:\n"
        << run.stderr_text;
  }

  auto stub = testing::NewSearchStub(address);
  grpc::ClientContext ctx;
  v1::GetCollectionRequest req;
  req.set_name("c");
  v1::GetCollectionResponse info;
  ASSERT_TRUE(stub->GetCollection(&ctx, req, &info).ok());
  EXPECT_EQ(info.collection().num_documents(), 200u);
  EXPECT_EQ(info.collection().encoder_version(), 1u);
  EXPECT_EQ(info.collection().config().dim(), 256u);
  EXPECT_EQ(info.collection().config().token_dtype(), v1::TOKEN_DTYPE_INT8);
  for (int k : kProbes) {
    grpc::ClientContext sctx;
    v1::SearchRequest search;
    search.set_collection("c");
    search.set_text(UniqueWord(k));
    search.set_top_k(5);
    search.set_candidates(200);
    v1::SearchResponse found;
    const grpc::Status s = stub->Search(&sctx, search, &found);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_GT(found.hits_size(), 0) << UniqueWord(k);
    EXPECT_EQ(found.hits(0).id(), "t-" + std::to_string(k)) << UniqueWord(k);
  }
  server.Kill(SIGTERM);
  server.Wait();
}

}  // namespace
}  // namespace attnsearch
