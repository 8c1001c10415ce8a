// Fault injection below RocksDB, seen over gRPC: a real server on a loopback
// port serves a catalog whose stores do their file I/O through
// StorageFaults. While a fault lasts, writes fail with UNAVAILABLE or
// RESOURCE_EXHAUSTED naming it and reads go on; once it clears the server
// writes again; every acknowledged write is there with its exact content,
// nothing deleted comes back, and the index agrees with the store, before
// and after a restart. Also: ANN snapshots that cannot be written, or are
// truncated, corrupted or missing at start.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "engine/catalog.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/service.h"
#include "server/worker_pool.h"
#include "server_process.h"
#include "storage/storage_faults.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using ::attnsearch::testing::MakeUpsertRequest;
using ::attnsearch::testing::RandomUnitRows;
using ::attnsearch::testing::TempDir;
using ::attnsearch::testing::WithStderrTo;

constexpr uint32_t kDim = 16;
constexpr char kName[] = "c";

// The in-process server: catalog, worker pool, service and gRPC server on
// 127.0.0.1:<ephemeral>.
class Server {
 public:
  Server(const std::string& data_dir, std::shared_ptr<StorageFaults> faults,
         size_t snapshot_every = 100000) {
    CatalogOptions options;
    options.data_dir = data_dir;
    options.collection.storage.faults = std::move(faults);
    // Small memtables: flushes happen within a few hundred documents.
    options.collection.storage.write_buffer_bytes = size_t{1} << 20;
    options.collection.snapshot_every = snapshot_every;
    auto catalog = Catalog::Open(options);
    EXPECT_TRUE(catalog.ok()) << catalog.status();
    if (!catalog.ok()) return;
    catalog_ = std::move(catalog).value();
    pool_ = std::make_unique<WorkerPool>(2);
    service_ = std::make_unique<SearchServiceImpl>(catalog_.get(), pool_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port, 0);
    stub_ = v1::SearchService::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                           grpc::InsecureChannelCredentials()));
  }
  ~Server() {
    if (server_) server_->Shutdown();
    server_.reset();
    service_.reset();
    pool_.reset();
    catalog_.reset();
  }
  bool ok() const { return stub_ != nullptr; }
  Catalog& catalog() { return *catalog_; }
  v1::SearchService::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<SearchServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::SearchService::Stub> stub_;
};

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

// A document with unit token rows and a unit pooled vector (stored exactly:
// f32 collection).
v1::Document Doc(std::mt19937& rng, const std::string& id, int version) {
  v1::Document d;
  d.set_id(id);
  d.set_text("version " + std::to_string(version) + " of " + id);
  (*d.mutable_metadata())["v"] = std::to_string(version);
  const uint32_t rows = 1 + rng() % 3;
  std::vector<float> tokens = RandomUnitRows(rng, rows, kDim);
  d.mutable_tokens()->set_rows(rows);
  d.mutable_tokens()->set_cols(kDim);
  d.mutable_tokens()->mutable_values()->Assign(tokens.begin(), tokens.end());
  std::vector<float> pooled = RandomUnitRows(rng, 1, kDim);
  d.mutable_pooled()->Assign(pooled.begin(), pooled.end());
  return d;
}

// The acknowledged state, and the writes whose outcome is in doubt (they
// failed: each applied whole or not at all).
class Oracle {
 public:
  std::map<std::string, v1::Document> live;
  std::set<std::string> deleted;
  struct Doubt {
    std::vector<v1::Document> upserts;
    std::vector<std::string> deletes;
  };
  std::vector<Doubt> doubts;

  void Upserted(const std::vector<v1::Document>& docs) {
    for (const auto& d : docs) {
      live[d.id()] = d;
      deleted.erase(d.id());
    }
  }
  void Deleted(const std::vector<std::string>& ids) {
    for (const auto& id : ids) {
      if (live.erase(id)) deleted.insert(id);
    }
  }
};

void ExpectSameDocument(const v1::Document& got, const v1::Document& want) {
  EXPECT_EQ(got.text(), want.text()) << want.id();
  EXPECT_EQ(got.metadata().at("v"), want.metadata().at("v")) << want.id();
  ASSERT_EQ(got.pooled_size(), want.pooled_size()) << want.id();
  for (int i = 0; i < want.pooled_size(); ++i) {
    ASSERT_NEAR(got.pooled(i), want.pooled(i), 1e-6) << want.id();
  }
  ASSERT_EQ(got.tokens().values_size(), want.tokens().values_size()) << want.id();
  for (int i = 0; i < want.tokens().values_size(); ++i) {
    ASSERT_NEAR(got.tokens().values(i), want.tokens().values(i), 1e-6) << want.id();
  }
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    faults_ = std::make_shared<StorageFaults>();
    Start();
    v1::CreateCollectionRequest req;
    req.set_name(kName);
    req.mutable_config()->set_dim(kDim);
    req.mutable_config()->set_token_dtype(v1::TOKEN_DTYPE_F32);
    req.mutable_config()->set_ann_spec("Flat");
    v1::CreateCollectionResponse resp;
    ASSERT_TRUE(server_->stub().CreateCollection(Context().get(), req, &resp).ok());
  }

  void Start(size_t snapshot_every = 100000) {
    server_.reset();
    server_ = std::make_unique<Server>(tmp_.Sub("data"), faults_, snapshot_every);
    ASSERT_TRUE(server_->ok());
  }
  bool WritesStopped() {
    auto collection = server_->catalog().Get(kName);
    EXPECT_TRUE(collection.ok());
    return collection.ok() && (*collection)->Stats().writes_stopped;
  }
  std::string SnapshotPath() const {
    return tmp_.Sub("data") + "/collections/" + kName + "/ann.snapshot";
  }

  grpc::Status Upsert(const std::vector<v1::Document>& docs) {
    v1::UpsertRequest req = MakeUpsertRequest(kName, docs);
    v1::UpsertResponse resp;
    grpc::Status s = server_->stub().Upsert(Context().get(), req, &resp);
    if (s.ok()) {
      oracle_.Upserted(docs);
    } else {
      oracle_.doubts.push_back({docs, {}});
    }
    return s;
  }
  grpc::Status Delete(const std::vector<std::string>& ids) {
    v1::DeleteRequest req;
    req.set_collection(kName);
    for (const auto& id : ids) req.add_ids(id);
    v1::DeleteResponse resp;
    grpc::Status s = server_->stub().Delete(Context().get(), req, &resp);
    if (s.ok()) {
      oracle_.Deleted(ids);
    } else {
      oracle_.doubts.push_back({{}, ids});
    }
    return s;
  }
  std::vector<v1::Document> NewDocs(int n) {
    std::vector<v1::Document> docs;
    for (int i = 0; i < n; ++i) docs.push_back(Doc(rng_, "doc" + std::to_string(next_++), 1));
    return docs;
  }
  std::vector<v1::Document> Overwrites(int n) {
    std::vector<v1::Document> docs;
    for (const auto& [id, d] : oracle_.live) {
      if (int(docs.size()) == n) break;
      if (rng_() % 3 == 0) docs.push_back(Doc(rng_, id, std::stoi(d.metadata().at("v")) + 1));
    }
    return docs;
  }
  std::vector<std::string> SomeLiveIds(int n) {
    std::vector<std::string> ids;
    for (const auto& [id, d] : oracle_.live) {
      if (int(ids.size()) == n) break;
      if (rng_() % 4 == 0) ids.push_back(id);
    }
    return ids;
  }

  std::map<std::string, v1::Document> GetAll(const std::vector<std::string>& ids) {
    std::map<std::string, v1::Document> out;
    for (size_t begin = 0; begin < ids.size(); begin += 500) {
      v1::GetRequest req;
      req.set_collection(kName);
      for (size_t i = begin; i < std::min(ids.size(), begin + 500); ++i) req.add_ids(ids[i]);
      req.set_include_vectors(true);
      v1::GetResponse resp;
      grpc::Status s = server_->stub().Get(Context().get(), req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      for (const auto& d : resp.documents()) out[d.id()] = d;
    }
    return out;
  }

  // Once writes succeed again: a failed write is applied whole or not at
  // all; fold each into the oracle as the store has it.
  void SettleDoubts() {
    for (const Oracle::Doubt& doubt : oracle_.doubts) {
      if (!doubt.upserts.empty()) {
        std::vector<std::string> ids;
        for (const auto& d : doubt.upserts) ids.push_back(d.id());
        std::map<std::string, v1::Document> got = GetAll(ids);
        // Applied iff every document is at that version (later acknowledged
        // writes in this test never touch a doubtful batch's ids).
        size_t at_version = 0;
        for (const auto& d : doubt.upserts) {
          auto it = got.find(d.id());
          if (it != got.end() && it->second.text() == d.text()) ++at_version;
        }
        EXPECT_TRUE(at_version == 0 || at_version == doubt.upserts.size())
            << "a failed batch was applied in part: " << at_version << " of "
            << doubt.upserts.size();
        if (at_version == doubt.upserts.size()) {
          oracle_.Upserted(doubt.upserts);
          ++applied_doubts_;
        }
      } else {
        std::map<std::string, v1::Document> got = GetAll(doubt.deletes);
        EXPECT_TRUE(got.empty() || got.size() == doubt.deletes.size())
            << "a failed delete was applied in part";
        if (got.empty()) {
          oracle_.Deleted(doubt.deletes);
          ++applied_doubts_;
        }
      }
    }
    oracle_.doubts.clear();
  }

  // The store and the index against the oracle.
  void ExpectMatchesOracle(const std::string& when) {
    SCOPED_TRACE(when);
    ASSERT_TRUE(oracle_.doubts.empty());
    std::vector<std::string> ids;
    for (const auto& [id, d] : oracle_.live) ids.push_back(id);
    std::map<std::string, v1::Document> got = GetAll(ids);
    ASSERT_EQ(got.size(), ids.size()) << "acknowledged documents missing";
    for (const auto& [id, d] : oracle_.live) ExpectSameDocument(got[id], d);
    EXPECT_TRUE(GetAll({oracle_.deleted.begin(), oracle_.deleted.end()}).empty())
        << "a deleted document came back";
    v1::GetCollectionRequest info_req;
    info_req.set_name(kName);
    v1::GetCollectionResponse info;
    ASSERT_TRUE(server_->stub().GetCollection(Context().get(), info_req, &info).ok());
    EXPECT_EQ(info.collection().num_documents(), oracle_.live.size());
    // Every live document is found first by its own vector (exact index),
    // and a full ranking holds exactly the live ids.
    const uint32_t n = uint32_t(oracle_.live.size());
    for (const auto& [id, d] : oracle_.live) {
      v1::SearchResponse resp = SearchByPooled(d, 1, n);
      ASSERT_EQ(resp.hits_size(), 1);
      EXPECT_EQ(resp.hits(0).id(), id);
      if (::testing::Test::HasFailure()) return;
    }
    v1::SearchResponse all = SearchByPooled(oracle_.live.begin()->second, n, n);
    std::set<std::string> hit_ids, want;
    for (const auto& h : all.hits()) hit_ids.insert(h.id());
    for (const auto& [id, d] : oracle_.live) want.insert(id);
    EXPECT_EQ(hit_ids, want);
  }

  v1::SearchResponse SearchByPooled(const v1::Document& d, uint32_t top_k, uint32_t candidates) {
    v1::SearchRequest req;
    req.set_collection(kName);
    req.mutable_vectors()->mutable_pooled()->CopyFrom(d.pooled());
    req.set_top_k(top_k);
    req.set_candidates(candidates);
    req.set_rerank(v1::RERANK_MODE_NONE);
    v1::SearchResponse resp;
    grpc::Status s = server_->stub().Search(Context().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  TempDir tmp_;
  std::shared_ptr<StorageFaults> faults_;
  std::unique_ptr<Server> server_;
  Oracle oracle_;
  std::mt19937 rng_{2024};
  int next_ = 0;
  int applied_doubts_ = 0;
};

struct FaultCase {
  const char* name;
  StorageFaults::Kind kind;
  StorageFaults::Files files;
  grpc::StatusCode code;
};

class StorageFaultTest : public FaultTest, public ::testing::WithParamInterface<FaultCase> {};

TEST_P(StorageFaultTest, WritesFailCleanlyAndResumeAfterTheFault) {
  const FaultCase& fc = GetParam();
  for (int b = 0; b < 4; ++b) ASSERT_TRUE(Upsert(NewDocs(15)).ok());
  ASSERT_TRUE(Upsert(Overwrites(8)).ok());
  ASSERT_TRUE(Delete(SomeLiveIds(6)).ok());
  ExpectMatchesOracle("before the fault");
  const std::map<std::string, v1::Document> before = oracle_.live;

  faults_->Arm(fc.kind, fc.files);
  std::string first_error;
  for (int attempt = 0; attempt < 3; ++attempt) {
    grpc::Status s = Upsert(NewDocs(5));
    EXPECT_EQ(s.error_code(), fc.code) << s.error_message();
    EXPECT_NE(s.error_message().find("injected fault"), std::string::npos) << s.error_message();
    if (attempt == 0) first_error = s.error_message();
    // Reads go on. Only fresh ids are in doubt, so the acknowledged ones
    // read exactly.
    std::vector<std::string> ids;
    for (const auto& [id, d] : before) ids.push_back(id);
    std::map<std::string, v1::Document> got = GetAll(ids);
    EXPECT_EQ(got.size(), before.size());
    for (const auto& [id, d] : before) ExpectSameDocument(got[id], d);
    v1::SearchResponse resp = SearchByPooled(before.begin()->second, 3, 100);
    ASSERT_GT(resp.hits_size(), 0);
    EXPECT_EQ(resp.hits(0).id(), before.begin()->first);
  }
  std::printf("[ %s ] code %d: %s\n", fc.name, int(fc.code), first_error.c_str());
  EXPECT_TRUE(WritesStopped()) << "the metrics gauge shows the fault";
  EXPECT_GT(faults_->failures(), 0u);

  faults_->Clear();
  ASSERT_TRUE(Upsert(NewDocs(10)).ok());
  EXPECT_FALSE(WritesStopped());
  SettleDoubts();
  ASSERT_TRUE(Upsert(Overwrites(5)).ok());
  ASSERT_TRUE(Delete(SomeLiveIds(4)).ok());
  ExpectMatchesOracle("after the fault cleared");
  std::printf("[ %s ] failed operations %llu, failed writes applied whole on recovery %d\n",
              fc.name, static_cast<unsigned long long>(faults_->failures()), applied_doubts_);

  Start();
  ExpectMatchesOracle("after a restart");
  ASSERT_TRUE(Upsert(NewDocs(5)).ok());
  ExpectMatchesOracle("writing after the restart");
}

INSTANTIATE_TEST_SUITE_P(
    Faults, StorageFaultTest,
    ::testing::Values(FaultCase{"WalWriteError", StorageFaults::Kind::kWriteError,
                                StorageFaults::Files::kWal, grpc::StatusCode::UNAVAILABLE},
                      FaultCase{"WalSyncError", StorageFaults::Kind::kSyncError,
                                StorageFaults::Files::kWal, grpc::StatusCode::UNAVAILABLE},
                      FaultCase{"DiskFull", StorageFaults::Kind::kDiskFull,
                                StorageFaults::Files::kAll, grpc::StatusCode::RESOURCE_EXHAUSTED},
                      FaultCase{"EveryWriteFails", StorageFaults::Kind::kWriteError,
                                StorageFaults::Files::kAll, grpc::StatusCode::UNAVAILABLE}),
    [](const ::testing::TestParamInfo<FaultCase>& info) { return info.param.name; });

// A full disk for table files only: writes are acknowledged (the WAL still
// takes them) until a memtable flush fails; then they fail too, and resume
// once space returns.
TEST_F(FaultTest, FailedFlushesStopWritesUntilSpaceReturns) {
  ASSERT_TRUE(Upsert(NewDocs(20)).ok());
  faults_->Arm(StorageFaults::Kind::kDiskFull, StorageFaults::Files::kTables);
  // Batches of 16 KiB documents fill the 1 MiB memtables in a few writes.
  bool refused = false;
  for (int b = 0; b < 100 && !refused; ++b) {
    std::vector<v1::Document> docs;
    for (int i = 0; i < 20; ++i) {
      v1::Document d = Doc(rng_, "big" + std::to_string(next_++), 1);
      std::vector<float> tokens = RandomUnitRows(rng_, 256, kDim);
      d.mutable_tokens()->set_rows(256);
      d.mutable_tokens()->mutable_values()->Assign(tokens.begin(), tokens.end());
      docs.push_back(d);
    }
    grpc::Status s = Upsert(docs);
    if (!s.ok()) {
      refused = true;
      EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    }
  }
  EXPECT_TRUE(refused) << "no flush was attempted";
  faults_->Clear();
  ASSERT_TRUE(Upsert(NewDocs(5)).ok());
  SettleDoubts();
  ExpectMatchesOracle("after space returned");
  Start();
  ExpectMatchesOracle("after a restart");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// ANN snapshots: one that cannot be written costs nothing but the time to
// rebuild at the next start; a truncated, corrupted or missing one is
// reported by name and rebuilt from the store. Writes continue after each.
TEST_F(FaultTest, BadSnapshotsAreRebuiltFromTheStore) {
  Start(/*snapshot_every=*/10);
  for (int b = 0; b < 5; ++b) ASSERT_TRUE(Upsert(NewDocs(12)).ok());
  ASSERT_TRUE(std::filesystem::exists(SnapshotPath()));

  // The snapshot cannot be written (its temporary path is taken): writes
  // are still acknowledged.
  std::filesystem::create_directory(SnapshotPath() + ".tmp");
  const std::string log = tmp_.Sub("stderr.txt");
  WithStderrTo(log, [&] {
    ASSERT_TRUE(Upsert(NewDocs(12)).ok());
    ASSERT_TRUE(Delete(SomeLiveIds(3)).ok());
  });
  EXPECT_NE(ReadFile(log).find("ann.snapshot.tmp"), std::string::npos) << ReadFile(log);
  ExpectMatchesOracle("while snapshots cannot be written");
  std::filesystem::remove(SnapshotPath() + ".tmp");
  Start(10);
  ExpectMatchesOracle("after a restart");

  const std::string good = ReadFile(SnapshotPath());
  ASSERT_GT(good.size(), 100u);
  struct Damage {
    const char* what;
    std::string bytes;
  };
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x5a;
  const Damage damages[] = {
      {"truncated", good.substr(0, good.size() / 2)}, {"corrupted", flipped}, {"empty", ""}};
  for (const Damage& damage : damages) {
    SCOPED_TRACE(damage.what);
    server_.reset();
    WriteFile(SnapshotPath(), damage.bytes);
    WithStderrTo(log, [&] { Start(10); });
    const std::string said = ReadFile(log);
    EXPECT_NE(said.find(SnapshotPath()), std::string::npos) << said;
    EXPECT_NE(said.find("rebuilding the ANN index from the store"), std::string::npos) << said;
    ExpectMatchesOracle("after starting with a damaged snapshot");
    ASSERT_TRUE(Upsert(NewDocs(4)).ok());
    ASSERT_TRUE(Delete(SomeLiveIds(2)).ok());
    ExpectMatchesOracle("writing after it");
  }
  // Missing: rebuilt silently.
  server_.reset();
  std::filesystem::remove(SnapshotPath());
  Start(10);
  ExpectMatchesOracle("after starting without a snapshot");
}

// Disk space below the reserve: writes get RESOURCE_EXHAUSTED naming it and
// reads go on; a restart meanwhile opens the collection read-only; writes
// resume once space is back; nothing acknowledged is lost.
TEST_F(FaultTest, LowDiskSpaceRefusesWritesUntilSpaceReturns) {
  for (int b = 0; b < 3; ++b) ASSERT_TRUE(Upsert(NewDocs(10)).ok());
  faults_->SetFreeSpace(uint64_t{64} << 20);
  grpc::Status s = Upsert(NewDocs(5));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("disk nearly full"), std::string::npos) << s.error_message();
  s = Delete(SomeLiveIds(2));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  SettleDoubts();  // refused before anything was written: nothing applied
  ExpectMatchesOracle("while space is low");
  EXPECT_EQ(applied_doubts_, 0);

  Start();
  EXPECT_TRUE(WritesStopped()) << "opened read-only";
  ExpectMatchesOracle("restarted while space is low");
  EXPECT_EQ(Upsert(NewDocs(3)).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  faults_->SetFreeSpace(std::nullopt);
  ASSERT_TRUE(Upsert(NewDocs(5)).ok());
  EXPECT_FALSE(WritesStopped());
  SettleDoubts();
  ASSERT_TRUE(Delete(SomeLiveIds(3)).ok());
  ExpectMatchesOracle("after space came back");
  Start();
  ExpectMatchesOracle("after a restart");
}

}  // namespace
}  // namespace attnsearch
