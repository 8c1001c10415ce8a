// Running attnsearch-index in tests: the real binary as a child process,
// and reading a collection back through the engine.
#ifndef ATTNSEARCH_TESTS_INDEXER_INDEXER_TOOL_H_
#define ATTNSEARCH_TESTS_INDEXER_INDEXER_TOOL_H_

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/catalog.h"
#include "gtest/gtest.h"
#include "test_util.h"

#ifndef ATTN_INDEXER_BINARY
#error "ATTN_INDEXER_BINARY must name the attnsearch-index binary"
#endif

namespace attnsearch::testing {

struct ToolRun {
  int status = -1;  // waitpid status
  std::string stderr_text;
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

// Starts attnsearch-index with `args` without waiting, stderr going to
// dir/tool.stderr; -1 after recording a failure.
inline pid_t StartTool(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), ATTN_INDEXER_BINARY);
  args.push_back("--progress");
  args.push_back("off");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string err_path = dir.Sub("tool.stderr");
  const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    ADD_FAILURE() << "open " << err_path;
    return -1;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::dup2(fd, STDERR_FILENO) < 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(125);
  }
  ::close(fd);
  return pid;
}

// Waits for a StartTool child and reads what it printed.
inline ToolRun WaitTool(const TempDir& dir, pid_t pid) {
  ToolRun run;
  if (pid < 0) return run;
  while (::waitpid(pid, &run.status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream in(dir.Sub("tool.stderr"));
  std::stringstream ss;
  ss << in.rdbuf();
  run.stderr_text = ss.str();
  return run;
}

// Runs attnsearch-index with `args`, stderr captured in a file of `dir`.
inline ToolRun RunTool(const TempDir& dir, std::vector<std::string> args) {
  return WaitTool(dir, StartTool(dir, std::move(args)));
}

// The documents of `collection` in data_dir (with vectors), by id.
// A collection of a data directory, opened through the engine (null, after
// recording a failure, when it cannot be).
struct OpenedCollection {
  std::unique_ptr<Catalog> catalog;
  std::shared_ptr<Collection> collection;
};
inline OpenedCollection OpenCollection(const std::string& data_dir, const std::string& name) {
  CatalogOptions o;
  o.data_dir = data_dir;
  auto catalog = Catalog::Open(o);
  EXPECT_TRUE(catalog.ok()) << catalog.status();
  if (!catalog.ok()) return {};
  auto c = (*catalog)->Get(name);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  return {*std::move(catalog), *std::move(c)};
}

inline GetResult ReadBack(const std::string& data_dir, const std::string& collection,
                          const std::vector<std::string>& ids) {
  OpenedCollection c = OpenCollection(data_dir, collection);
  if (c.collection == nullptr) return {};
  auto r = c.collection->Get(ids, /*include_vectors=*/true);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : GetResult{};
}

inline void ExpectSameDocuments(const GetResult& a, const GetResult& b) {
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

}  // namespace attnsearch::testing

#endif  // ATTNSEARCH_TESTS_INDEXER_INDEXER_TOOL_H_
