// Backup and restore through the real binaries: attnsearch-server (with API
// keys) takes writes over gRPC from one writer, which logs every
// acknowledged write with the times it began and was acknowledged, while
// the Backup RPC runs; `attnsearch-admin restore` makes a new data directory
// of the backup and a second server started on it must hold a prefix of the
// writer's log that includes every write acknowledged before the backup
// began and none begun after it returned. Also: `attnsearch-admin backup`,
// INVALID_ARGUMENT for an empty or relative destination, ALREADY_EXISTS for
// an existing one, PERMISSION_DENIED for a read key, and the admin tool's
// exit status on a refused restore.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "attnsearch/v1/search.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/grpc_status_matchers.h"
#include "server/server_process.h"
#include "test_util.h"

#ifndef ATTN_ADMIN_BINARY
#error "ATTN_ADMIN_BINARY must name the attnsearch-admin binary"
#endif

namespace attnsearch::testing {
namespace {

namespace fs = std::filesystem;
namespace v1 = attnsearch::v1;
using grpc::StatusCode;
using Clock = std::chrono::steady_clock;

constexpr char kReadKey[] = "read-key-0123456789abcdef";
constexpr char kWriteKey[] = "write-key-fedcba9876543210";
constexpr uint32_t kDim = 4;
constexpr int kIds = 80;

std::string Id(int i) { return "doc-" + std::to_string(i); }

std::unique_ptr<grpc::ClientContext> Context(const std::string& key) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  ctx->AddMetadata("authorization", "Bearer " + key);
  return ctx;
}

// One acknowledged write: upserted id -> text, or deleted ids.
struct Op {
  std::map<std::string, std::string> upserts;
  std::vector<std::string> deletes;
  Clock::time_point start, end;
};
using State = std::map<std::string, std::string>;

State Replay(const std::vector<Op>& ops, size_t n) {
  State s;
  for (size_t i = 0; i < n; ++i) {
    for (const auto& [id, text] : ops[i].upserts) s[id] = text;
    for (const std::string& id : ops[i].deletes) s.erase(id);
  }
  return s;
}

v1::Document Doc(std::mt19937& rng, const std::string& id, const std::string& text) {
  v1::Document d;
  d.set_id(id);
  d.set_text(text);
  std::normal_distribution<float> g(0.f, 1.f);
  for (uint32_t k = 0; k < kDim; ++k) d.add_pooled(g(rng) + (k == 0 ? 3.f : 0.f));
  return d;
}

// The documents of `collection` as id -> text.
State Contents(v1::SearchService::Stub* stub, const std::string& collection) {
  v1::GetRequest req;
  req.set_collection(collection);
  for (int i = 0; i < kIds; ++i) req.add_ids(Id(i));
  v1::GetResponse resp;
  const grpc::Status s = stub->Get(Context(kWriteKey).get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  State out;
  for (const v1::Document& d : resp.documents()) out[d.id()] = d.text();
  return out;
}

class BackupServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_file_ = dir_.Sub("keys");
    std::ofstream(keys_file_) << kReadKey << " read\n" << kWriteKey << " write\n";
    write_key_file_ = dir_.Sub("write.key");
    std::ofstream(write_key_file_) << kWriteKey << "\n";
  }

  TempDir dir_;
  std::string keys_file_, write_key_file_;
};

TEST_F(BackupServerTest, BackupWhileWritingThenRestoreAndServe) {
  ServerProcess server;
  const std::string address = server.Start(dir_.Sub("data"), {"--api_keys", keys_file_});
  ASSERT_FALSE(address.empty());
  auto stub = NewSearchStub(address);
  {
    v1::CreateCollectionRequest req;
    req.set_name("docs");
    req.mutable_config()->set_dim(kDim);
    req.mutable_config()->set_ann_spec("Flat");
    v1::CreateCollectionResponse resp;
    ASSERT_OK(stub->CreateCollection(Context(kWriteKey).get(), req, &resp));
  }

  // The writer: batches of 1..4 documents (new or overwritten) and deletes.
  std::vector<Op> ops;
  std::atomic<size_t> acked{0};
  std::atomic<bool> stop{false};
  std::string writer_error;
  std::thread writer([&] {
    auto wstub = NewSearchStub(address);
    std::mt19937 rng(11);
    for (size_t n = 0; !stop; ++n) {
      Op op;
      grpc::Status s;
      if (n > 0 && rng() % 4 == 0) {
        v1::DeleteRequest req;
        req.set_collection("docs");
        for (int i = 0, k = 1 + int(rng() % 2); i < k; ++i) {
          op.deletes.push_back(Id(int(rng() % kIds)));
          req.add_ids(op.deletes.back());
        }
        v1::DeleteResponse resp;
        op.start = Clock::now();
        s = wstub->Delete(Context(kWriteKey).get(), req, &resp);
      } else {
        v1::UpsertRequest req;
        req.set_collection("docs");
        const int k = n == 0 ? 30 : 1 + int(rng() % 4);
        for (int i = 0; i < k && int(op.upserts.size()) < k; ++i) {
          const std::string id = Id(n == 0 ? i : int(rng() % kIds));
          if (op.upserts.count(id)) continue;
          const std::string text = id + "@" + std::to_string(n) + "." + std::to_string(i);
          op.upserts[id] = text;
          *req.add_documents() = Doc(rng, id, text);
        }
        v1::UpsertResponse resp;
        op.start = Clock::now();
        s = wstub->Upsert(Context(kWriteKey).get(), req, &resp);
      }
      op.end = Clock::now();
      if (!s.ok()) {
        writer_error = s.error_message();
        return;
      }
      ops.push_back(std::move(op));
      acked.fetch_add(1);
    }
  });
  auto wait_for = [&](size_t n) {
    while (acked.load() < n && writer_error.empty() && !stop) std::this_thread::yield();
  };
  wait_for(100);

  const std::string backup = dir_.Sub("backups/b1");
  v1::BackupResponse backed_up;
  const Clock::time_point backup_start = Clock::now();
  {
    v1::BackupRequest req;
    req.set_destination(backup);
    ASSERT_OK(stub->Backup(Context(kWriteKey).get(), req, &backed_up));
  }
  const Clock::time_point backup_end = Clock::now();
  wait_for(acked.load() + 30);  // writes go on after the backup
  stop = true;
  writer.join();
  ASSERT_TRUE(writer_error.empty()) << writer_error;
  ASSERT_EQ(backed_up.collections_size(), 1);
  EXPECT_EQ(backed_up.collections(0).name(), "docs");
  EXPECT_EQ(backed_up.destination(), backup);
  EXPECT_GT(backed_up.bytes(), 0u);
  std::printf("Backup: %llu bytes in %llu ms\n", static_cast<unsigned long long>(backed_up.bytes()),
              static_cast<unsigned long long>(backed_up.elapsed_ms()));

  // The bad requests.
  {
    v1::BackupRequest req;
    v1::BackupResponse resp;
    EXPECT_TRUE(HasError(stub->Backup(Context(kWriteKey).get(), req, &resp),
                         StatusCode::INVALID_ARGUMENT, "destination"));
    req.set_destination("relative/dir");
    EXPECT_TRUE(HasError(stub->Backup(Context(kWriteKey).get(), req, &resp),
                         StatusCode::INVALID_ARGUMENT, "destination"));
    req.set_destination(backup);
    EXPECT_TRUE(HasError(stub->Backup(Context(kWriteKey).get(), req, &resp),
                         StatusCode::ALREADY_EXISTS, backup));
    req.set_destination(dir_.Sub("backups/read"));
    EXPECT_TRUE(HasError(stub->Backup(Context(kReadKey).get(), req, &resp),
                         StatusCode::PERMISSION_DENIED, ""));
    EXPECT_FALSE(fs::exists(dir_.Sub("backups/read")));
    req.set_destination(dir_.Sub("backups/unknown"));
    req.set_collection("missing");
    EXPECT_TRUE(HasError(stub->Backup(Context(kWriteKey).get(), req, &resp), StatusCode::NOT_FOUND,
                         "missing"));
  }

  // The admin tool's backup, of the final state.
  const std::string backup2 = dir_.Sub("backups/b2");
  ProcessRun run = RunBinary(dir_.Sub("admin.out"),
                             {ATTN_ADMIN_BINARY, "backup", "--server", address, "--dest", backup2,
                              "--collection", "docs", "--api_key_file", write_key_file_});
  EXPECT_EQ(run.exit_code(), 0) << run.output;
  EXPECT_NE(run.output.find("backup written to " + backup2), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("collection docs:"), std::string::npos) << run.output;
  run = RunBinary(dir_.Sub("admin.out"), {ATTN_ADMIN_BINARY, "backup", "--server", address,
                                          "--dest", "relative", "--api_key_file", write_key_file_});
  EXPECT_NE(run.exit_code(), 0) << run.output;
  EXPECT_NE(run.output.find("--dest"), std::string::npos) << run.output;
  // Bad usage exits 2, as the tool says (not CLI11's codes of 100 and up).
  for (const std::vector<std::string>& bad :
       std::vector<std::vector<std::string>>{{"backup", "--dest", "/tmp/x", "--timeout_s", "0"},
                                             {"backup", "--dest", "/tmp/x", "--timeout_s", "-5"},
                                             {"backup"},
                                             {"collections", "--bogus"},
                                             {"bogus"},
                                             {}}) {
    std::vector<std::string> args = {ATTN_ADMIN_BINARY};
    args.insert(args.end(), bad.begin(), bad.end());
    run = RunBinary(dir_.Sub("admin.out"), args);
    EXPECT_EQ(run.exit_code(), 2) << absl::StrJoin(bad, " ") << ": " << run.output;
  }
  EXPECT_NE(run.output.find("subcommand"), std::string::npos) << run.output;  // none given
  run = RunBinary(dir_.Sub("admin.out"), {ATTN_ADMIN_BINARY, "bogus"});
  EXPECT_NE(run.output.find("unknown command 'bogus'"), std::string::npos) << run.output;

  // Restore: refused into a non-empty directory (the live data directory),
  // done into a new one.
  run = RunBinary(dir_.Sub("admin.out"), {ATTN_ADMIN_BINARY, "restore", "--backup", backup,
                                          "--data_dir", dir_.Sub("data")});
  EXPECT_EQ(run.exit_code(), 1) << run.output;
  EXPECT_NE(run.output.find("data_dir"), std::string::npos) << run.output;
  const std::string restored_dir = dir_.Sub("restored");
  run = RunBinary(dir_.Sub("admin.out"),
                  {ATTN_ADMIN_BINARY, "restore", "--backup", backup, "--data_dir", restored_dir});
  ASSERT_EQ(run.exit_code(), 0) << run.output;
  EXPECT_NE(run.output.find("restored 1 collections"), std::string::npos) << run.output;

  // The source still serves and holds every acknowledged write.
  EXPECT_EQ(Contents(stub.get(), "docs"), Replay(ops, ops.size()));

  ServerProcess second;
  const std::string address2 = second.Start(restored_dir, {"--api_keys", keys_file_});
  ASSERT_FALSE(address2.empty());
  auto stub2 = NewSearchStub(address2);
  const State got = Contents(stub2.get(), "docs");
  EXPECT_EQ(uint64_t(got.size()), backed_up.collections(0).documents());
  size_t must = 0, may = 0;
  for (const Op& op : ops) {
    if (op.end < backup_start) ++must;
    if (op.start <= backup_end) ++may;
  }
  std::optional<size_t> prefix;
  for (size_t k = must; k <= may && !prefix; ++k) {
    if (Replay(ops, k) == got) prefix = k;
  }
  ASSERT_TRUE(prefix.has_value()) << "the restored collection (" << got.size()
                                  << " documents) is no prefix of ops " << must << ".." << may;
  std::printf("restored: ops [0, %zu) of %zu (%zu acknowledged before the backup began)\n", *prefix,
              ops.size(), must);

  // Its index finds the documents, and it takes writes.
  if (!got.empty()) {
    v1::SearchRequest req;
    req.set_collection("docs");
    for (uint32_t k = 0; k < kDim; ++k) req.mutable_vectors()->add_pooled(k == 0 ? 1.f : 0.f);
    req.set_top_k(uint32_t(got.size()) + 5);
    req.set_candidates(1000);
    req.set_rerank(v1::RERANK_MODE_NONE);
    v1::SearchResponse resp;
    ASSERT_OK(stub2->Search(Context(kReadKey).get(), req, &resp));
    std::set<std::string> found, expected;
    for (const auto& h : resp.hits()) found.insert(h.id());
    for (const auto& [id, text] : got) expected.insert(id);
    EXPECT_EQ(found, expected);
  }
  {
    std::mt19937 rng(1);
    v1::UpsertResponse resp;
    ASSERT_OK(stub2->Upsert(Context(kWriteKey).get(),
                            MakeUpsertRequest("docs", {Doc(rng, "after", "after restore")}),
                            &resp));
  }
}

}  // namespace
}  // namespace attnsearch::testing
