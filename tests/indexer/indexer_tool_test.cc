// End-to-end tests of attnsearch-index: the real binary runs as a child
// process on seeded inputs written here; the result is read back through
// the engine (offline) or the real server (online).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/catalog.h"
#include "gtest/gtest.h"
#include "server/server_process.h"
#include "test_util.h"

#ifndef ATTN_INDEXER_BINARY
#error "ATTN_INDEXER_BINARY must name the attnsearch-index binary"
#endif

namespace attnsearch {
namespace {

using ::attnsearch::testing::DescribeWaitStatus;
using ::attnsearch::testing::TempDir;

constexpr uint32_t kDim = 8;

struct ToolRun {
  int status = -1;     // waitpid status
  std::string stderr_text;
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

// Runs attnsearch-index with `args`, stderr captured in a file of `dir`.
ToolRun RunTool(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), ATTN_INDEXER_BINARY);
  args.push_back("--progress");
  args.push_back("off");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string err_path = dir.Sub("tool.stderr");
  const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ToolRun run;
  if (fd < 0) {
    ADD_FAILURE() << "open " << err_path;
    return run;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::dup2(fd, STDERR_FILENO) < 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(125);
  }
  ::close(fd);
  while (::waitpid(pid, &run.status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  run.stderr_text = ss.str();
  return run;
}

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

std::vector<std::string> Ids(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("doc-" + std::to_string(i));
  return ids;
}

// The documents of `collection` in data_dir (with vectors), by id.
GetResult ReadBack(const std::string& data_dir, const std::string& collection,
                   const std::vector<std::string>& ids) {
  CatalogOptions o;
  o.data_dir = data_dir;
  auto catalog = Catalog::Open(o);
  EXPECT_TRUE(catalog.ok()) << catalog.status();
  if (!catalog.ok()) return {};
  auto c = (*catalog)->Get(collection);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  auto r = (*c)->Get(ids, /*include_vectors=*/true);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : GetResult{};
}

void ExpectSameDocuments(const GetResult& a, const GetResult& b) {
  ASSERT_EQ(a.documents.size(), b.documents.size());
  EXPECT_EQ(a.not_found_ids, b.not_found_ids);
  for (size_t i = 0; i < a.documents.size(); ++i) {
    const Document& x = a.documents[i];
    const Document& y = b.documents[i];
    EXPECT_EQ(x.id, y.id);
    EXPECT_EQ(x.text, y.text) << x.id;
    EXPECT_EQ(x.metadata, y.metadata) << x.id;
    EXPECT_EQ(x.pooled, y.pooled) << x.id;
    EXPECT_EQ(x.num_tokens, y.num_tokens) << x.id;
    EXPECT_EQ(x.tokens, y.tokens) << x.id;
    EXPECT_EQ(x.token_texts, y.token_texts) << x.id;
  }
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
    const ToolRun run = RunTool(dir, {dir.Sub(name), "--data_dir", dir.Sub(name + std::string(".d")),
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
  lines[3] = "{\"id\":\"doc-3\",\"pooled\":[1,2]}";                       // line 4: dim
  lines[7] = "{\"id\":\"doc-7\",\"pooled\":[1,2,3,4,5,6,7,";               // line 8: JSON
  lines[10] = "{\"id\":\"doc-2\",\"pooled\":[1,2,3,4,5,6,7,8]}";           // line 11: dup
  lines[12] = "{\"pooled\":[1,2,3,4,5,6,7,8]}";                            // line 13: no id
  lines[15] = "{\"id\":\"doc-15\",\"pooled\":[1,\"NaN\",3,4,5,6,7,8]}";   // line 16: NaN
  return lines;
}

TEST(IndexerToolTest, StopsAtTheFirstBadLineByDefault) {
  TempDir dir;
  WriteLines(dir.Sub("bad.jsonl"), CorpusWithBadLines());
  const ToolRun run = RunTool(dir, {dir.Sub("bad.jsonl"), "--data_dir", dir.Sub("data"),
                                    "--collection", "c", "--dim", "8"});
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(dir.Sub("bad.jsonl") + ":4: pooled: expected 8 values, got 2"),
            std::string::npos)
      << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find(":8: "), std::string::npos) << run.stderr_text;
  // The lines before the bad one are stored; nothing after it.
  const GetResult r = ReadBack(dir.Sub("data"), "c", Ids(20));
  EXPECT_EQ(r.documents.size(), 3u);
}

TEST(IndexerToolTest, MaxErrorsReportsEveryBadLineAsFileLine) {
  TempDir dir;
  WriteLines(dir.Sub("bad.jsonl"), CorpusWithBadLines());
  const std::string f = dir.Sub("bad.jsonl");
  ToolRun run = RunTool(dir, {f, "--data_dir", dir.Sub("data"), "--collection", "c", "--dim",
                              "8", "--max_errors", "5", "--batch", "4"});
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;  // bad lines, even within the limit
  for (const std::string& expected :
       {f + ":4: pooled: expected 8 values, got 2", f + ":8: bad JSON:",
        f + ":11: id: duplicate id 'doc-2' (first at " + f + ":3)", f + ":13: id: missing",
        f + ":16: pooled[1]: expected a number, got string \"NaN\""}) {
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
  EXPECT_NE(run.stderr_text.find("more than 4 bad records"), std::string::npos)
      << run.stderr_text;
  r = ReadBack(dir2.Sub("data"), "c", Ids(20));
  EXPECT_EQ(r.documents.size(), 11u);  // lines 1..15 minus 4 bad
  run = RunTool(dir2, {f, "--data_dir", dir2.Sub("data"), "--collection", "c", "--max_errors",
                       "5"});
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("resuming after line 15"), std::string::npos)
      << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(f + ":16: "), std::string::npos) << run.stderr_text;
  EXPECT_EQ(run.stderr_text.find(f + ":4: "), std::string::npos) << run.stderr_text;
  ExpectSameDocuments(ReadBack(dir2.Sub("data"), "c", Ids(20)),
                      ReadBack(dir.Sub("data"), "c", Ids(20)));
}

TEST(IndexerToolTest, UsageErrors) {
  TempDir dir;
  WriteLines(dir.Sub("in.jsonl"), Corpus(5, 5));
  // Neither mode.
  EXPECT_EQ(RunTool(dir, {dir.Sub("in.jsonl"), "--collection", "c"}).exit_code(), 1);
  // Unknown flag.
  EXPECT_EQ(RunTool(dir, {dir.Sub("in.jsonl"), "--collection", "c", "--bogus"}).exit_code(), 1);
  // A new collection needs --dim.
  ToolRun run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"),
                              "--collection", "c"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("--dim is needed"), std::string::npos);
  // A missing input is an input error.
  EXPECT_EQ(RunTool(dir, {dir.Sub("nope.jsonl"), "--data_dir", dir.Sub("data"), "--collection",
                          "c", "--dim", "8"})
                .exit_code(),
            2);
  // --dim contradicting the existing collection.
  ASSERT_EQ(RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"), "--collection",
                          "c", "--dim", "8"})
                .exit_code(),
            0);
  run = RunTool(dir, {dir.Sub("in.jsonl"), "--data_dir", dir.Sub("data"), "--collection", "c",
                      "--dim", "16", "--restart"});
  EXPECT_EQ(run.exit_code(), 1) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("has dim 8, not 16"), std::string::npos) << run.stderr_text;
}

// Kill the load (SIGKILL, after N documents were written but before their
// checkpoint), run the same command again, and compare with a load that
// was never interrupted.
TEST(IndexerToolTest, ResumeAfterCrashEqualsUninterruptedLoad) {
  TempDir dir;
  std::vector<std::string> lines = Corpus(2000, 6);
  lines[1500] = "{\"id\":\"doc-1500\",\"pooled\":[1]}";  // one bad line after the crash
  WriteLines(dir.Sub("in.jsonl"), lines);
  const std::vector<std::string> common = {dir.Sub("in.jsonl"), "--collection", "c", "--dim",
                                           "8", "--batch", "100", "--checkpoint_every", "300",
                                           "--max_errors", "10"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ToolRun run = RunTool(dir, with({"--data_dir", dir.Sub("whole")}));
  ASSERT_EQ(run.exit_code(), 2) << run.stderr_text;  // the bad line

  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed"), "--stop_after", "1000"}));
  ASSERT_TRUE(WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL)
      << DescribeWaitStatus(run.status) << "\n" << run.stderr_text;
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed"), "--stop_after", "700"}));
  ASSERT_TRUE(WIFSIGNALED(run.status)) << run.stderr_text;
  // Checkpoints every 300 documents: the first run's last was at 900.
  EXPECT_NE(run.stderr_text.find("resuming after line 900"), std::string::npos)
      << run.stderr_text;
  EXPECT_NE(run.stderr_text.find(":1501: pooled: expected 8 values, got 1"), std::string::npos)
      << run.stderr_text;
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed")}));
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;  // the bad line, reported earlier
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
  EXPECT_NE(run.stderr_text.find("0 documents written (2000 records skipped"),
            std::string::npos)
      << run.stderr_text;
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed"), "--restart", "--limit", "10"}));
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("10 documents written"), std::string::npos) << run.stderr_text;
  WriteLines(dir.Sub("in.jsonl"), Corpus(50, 7));
  run = RunTool(dir, with({"--data_dir", dir.Sub("resumed")}));
  EXPECT_EQ(run.exit_code(), 0) << run.stderr_text;
  EXPECT_NE(run.stderr_text.find("is for another input"), std::string::npos) << run.stderr_text;
}

TEST(IndexerToolTest, OnlineLoadThroughTheServer) {
  TempDir dir;
  std::vector<std::string> lines = Corpus(1500, 8);
  lines[100] = "{\"id\":\"doc-100\",\"pooled\":[1,2,3,4,5,6,7,\"Inf\"]}";
  WriteLines(dir.Sub("in.jsonl"), lines);
  testing::ServerProcess server;
  const std::string address = server.Start(dir.Sub("data"));
  ASSERT_FALSE(address.empty());
  const std::vector<std::string> common = {
      dir.Sub("in.jsonl"), "--server", address, "--collection", "c", "--dim", "8",
      "--batch", "50", "--max_inflight_mb", "0.05", "--max_errors", "3",
      "--checkpoint", dir.Sub("ckpt")};
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
  EXPECT_EQ(run.exit_code(), 2) << run.stderr_text;
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

}  // namespace
}  // namespace attnsearch
