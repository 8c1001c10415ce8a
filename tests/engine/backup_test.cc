// Collection::Backup, Catalog::Backup and Catalog::Restore against an
// oracle: one writer thread upserts, overwrites and deletes while a backup
// is taken, and logs every acknowledged operation with the times it began
// and was acknowledged. The writer's operations are serialised, so the
// restored collection must equal the replay of some prefix of the log that
// holds every operation acknowledged before the backup began and none that
// began after it returned; each document present carries exactly the
// content of the version that prefix gives it. The restored ANN index must
// agree with the store (an exact "Flat" index: every live document is the
// top hit for its own vectors, and nothing else is found).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "engine/catalog.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

namespace fs = std::filesystem;
using testing::MakeDoc;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kDim = 8;
constexpr int kIds = 120;

// One acknowledged operation of the writer.
struct Op {
  std::vector<Document> upserts;  // empty for a delete
  std::vector<std::string> deletes;
  Clock::time_point start, end;
};

// id -> text (the text names the version: "<id>@<op>.<i>").
using State = std::map<std::string, std::string>;

State Replay(const std::vector<Op>& ops, size_t n) {
  State s;
  for (size_t i = 0; i < n; ++i) {
    for (const Document& d : ops[i].upserts) s[d.id] = d.text;
    for (const std::string& id : ops[i].deletes) s.erase(id);
  }
  return s;
}

std::string Id(int i) { return "doc-" + std::to_string(i); }

CatalogOptions Options(const std::string& data_dir) {
  CatalogOptions o;
  o.data_dir = data_dir;
  // Frequent snapshots and background rebuilds while the backup is taken.
  o.collection.snapshot_every = 16;
  o.collection.rebuild_tombstone_ratio = 0.2;
  o.collection.rebuild_min_tombstones = 10;
  return o;
}

CollectionConfig Config() {
  CollectionConfig c;
  c.dim = kDim;
  c.token_dtype = TokenDtype::kF32;
  c.ann_spec = "Flat";
  return c;
}

// Writes until told to stop: batches of 1..5 documents (new ids or
// overwrites) and deletes of 1..3 ids, each logged once acknowledged.
class Writer {
 public:
  explicit Writer(std::shared_ptr<Collection> c) : c_(std::move(c)) {}
  ~Writer() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t acknowledged() const { return acked_.load(); }
  // Waits until `n` operations are acknowledged (or the writer failed).
  void WaitFor(size_t n) const {
    while (acked_.load() < n && !failed_.load()) std::this_thread::yield();
  }
  // REQUIRES: stopped.
  const std::vector<Op>& ops() const { return ops_; }
  const std::string& error() const { return error_; }
  bool failed() const { return failed_.load(); }
  // The content each version's text stands for.
  const std::map<std::string, Document>& versions() const { return versions_; }

 private:
  void Run() {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> pick_id(0, kIds - 1);
    for (size_t op_no = 0; !stop_; ++op_no) {
      Op op;
      // A first batch of 40 documents, then mostly upserts.
      const bool del = op_no > 0 && rng() % 4 == 0;
      if (del) {
        const int n = 1 + int(rng() % 3);
        for (int i = 0; i < n; ++i) op.deletes.push_back(Id(pick_id(rng)));
      } else {
        const int n = op_no == 0 ? 40 : 1 + int(rng() % 5);
        std::set<int> ids;
        while (int(ids.size()) < n) ids.insert(op_no == 0 ? int(ids.size()) : pick_id(rng));
        int i = 0;
        for (int id : ids) {
          Document d = MakeDoc(rng, Id(id), kDim, 1, 4);
          d.text = Id(id) + "@" + std::to_string(op_no) + "." + std::to_string(i++);
          op.upserts.push_back(d);
        }
      }
      op.start = Clock::now();
      absl::Status s;
      if (del) {
        s = c_->Delete(op.deletes).status();
      } else {
        s = c_->Upsert(op.upserts).status();
      }
      op.end = Clock::now();
      if (!s.ok()) {
        error_ = s.ToString();
        failed_ = true;
        return;
      }
      for (const Document& d : op.upserts) versions_[d.text] = d;
      ops_.push_back(std::move(op));
      acked_.fetch_add(1);
    }
  }

  std::shared_ptr<Collection> c_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<size_t> acked_{0};
  std::vector<Op> ops_;
  std::map<std::string, Document> versions_;
  std::string error_;
};

std::vector<std::string> AllIds() {
  std::vector<std::string> ids;
  for (int i = 0; i < kIds; ++i) ids.push_back(Id(i));
  return ids;
}

// The collection's documents, with vectors.
std::map<std::string, Document> Contents(const Collection& c) {
  auto got = c.Get(AllIds(), /*include_vectors=*/true);
  EXPECT_TRUE(got.ok()) << got.status();
  std::map<std::string, Document> out;
  if (!got.ok()) return out;
  for (Document& d : got->documents) out[d.id] = std::move(d);
  return out;
}

State TextsOf(const std::map<std::string, Document>& docs) {
  State s;
  for (const auto& [id, d] : docs) s[id] = d.text;
  return s;
}

// Every live document is the top hit for its own vectors, and a search for
// everything finds exactly the live documents.
void ExpectIndexAgreesWithStore(const Collection& c, const std::map<std::string, Document>& live) {
  for (const auto& [id, d] : live) {
    SearchQuery q;
    q.pooled = d.pooled;
    q.num_tokens = d.num_tokens;
    q.tokens = d.tokens;
    q.top_k = 1;
    q.candidates = 1000;
    q.mode = RerankMode::kMaxSim;
    auto r = c.Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->hits.size(), 1u) << id;
    EXPECT_EQ(r->hits[0].id, id);
  }
  if (live.empty()) return;
  SearchQuery all;
  all.pooled = live.begin()->second.pooled;
  all.top_k = uint32_t(live.size()) + 5;
  all.candidates = 1000;
  all.mode = RerankMode::kNone;
  auto r = c.Search(all);
  ASSERT_TRUE(r.ok()) << r.status();
  std::set<std::string> found, expected;
  for (const SearchHit& h : r->hits) found.insert(h.id);
  for (const auto& [id, d] : live) expected.insert(id);
  EXPECT_EQ(found, expected);
}

void ExpectSameVectors(const std::vector<float>& got, const std::vector<float>& want,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-5) << what << "[" << i << "]";
}

TEST(BackupTest, RestoredCollectionIsAPrefixOfTheAcknowledgedWrites) {
  TempDir dir;
  const std::string backup = dir.Sub("backups/first");
  std::unique_ptr<Catalog> catalog;
  {
    auto opened = Catalog::Open(Options(dir.Sub("data")));
    ASSERT_TRUE(opened.ok()) << opened.status();
    catalog = std::move(opened).value();
  }
  auto docs = catalog->Create("docs", Config());
  ASSERT_TRUE(docs.ok()) << docs.status();
  auto other = catalog->Create("other", Config());
  ASSERT_TRUE(other.ok()) << other.status();
  std::mt19937 rng(3);
  std::vector<Document> small;
  for (int i = 0; i < 5; ++i) small.push_back(MakeDoc(rng, "o" + std::to_string(i), kDim, 1, 2));
  ASSERT_TRUE((*other)->Upsert(small).ok());

  Writer writer(*docs);
  writer.Start();
  writer.WaitFor(150);
  ASSERT_FALSE(writer.failed()) << writer.error();
  const Clock::time_point backup_start = Clock::now();
  auto result = catalog->Backup(backup, "");
  const Clock::time_point backup_end = Clock::now();
  ASSERT_TRUE(result.ok()) << result.status();
  // The source keeps taking writes after the backup.
  writer.WaitFor(writer.acknowledged() + 50);
  writer.Stop();
  ASSERT_FALSE(writer.failed()) << writer.error();
  const std::vector<Op>& ops = writer.ops();

  EXPECT_EQ(result->path, backup);
  EXPECT_GT(result->bytes, 0u);
  ASSERT_EQ(result->manifest.collections.size(), 2u);
  EXPECT_EQ(result->manifest.collections[0].name, "docs");
  EXPECT_EQ(result->manifest.collections[1].name, "other");
  EXPECT_EQ(result->manifest.collections[1].documents, 5u);
  EXPECT_TRUE(fs::exists(backup + "/BACKUP"));
  // Nothing but the backup beside it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.Sub("backups")), fs::directory_iterator()), 1);

  // Every op acknowledged before the backup began is in; every op begun
  // after it returned is out; those overlapping it form a prefix.
  size_t must = 0, may = 0;
  for (const Op& op : ops) {
    if (op.end < backup_start) ++must;
    if (op.start <= backup_end) ++may;
  }
  ASSERT_GT(must, 100u);
  ASSERT_LT(may, ops.size()) << "no write after the backup";

  // A second backup to the same place fails and leaves the first alone.
  auto again = catalog->Backup(backup, "");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  EXPECT_NE(again.status().message().find(backup), std::string::npos) << again.status();
  // Restoring into a non-empty directory fails, naming it.
  const std::string busy = dir.Sub("busy");
  fs::create_directories(busy);
  std::ofstream(busy + "/file") << "x";
  auto refused = Catalog::Restore(backup, busy);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find(busy), std::string::npos) << refused.status();
  EXPECT_TRUE(fs::exists(busy + "/file"));
  auto over_source = Catalog::Restore(backup, dir.Sub("data"));
  EXPECT_EQ(over_source.status().code(), absl::StatusCode::kFailedPrecondition);

  // Restore into a new directory and open it.
  const std::string restored_dir = dir.Sub("restored");
  auto restored_manifest = Catalog::Restore(backup, restored_dir);
  ASSERT_TRUE(restored_manifest.ok()) << restored_manifest.status();
  EXPECT_EQ(restored_manifest->collections.size(), 2u);
  auto restored = Catalog::Open(Options(restored_dir));
  ASSERT_TRUE(restored.ok()) << restored.status();
  auto copy = (*restored)->Get("docs");
  ASSERT_TRUE(copy.ok()) << copy.status();
  const std::map<std::string, Document> contents = Contents(**copy);
  const State got = TextsOf(contents);
  EXPECT_EQ(result->manifest.collections[0].documents, got.size());
  EXPECT_EQ((*copy)->Stats().num_documents, got.size());

  std::optional<size_t> prefix;
  for (size_t k = must; k <= may && !prefix; ++k) {
    if (Replay(ops, k) == got) prefix = k;
  }
  ASSERT_TRUE(prefix.has_value()) << "the restored collection (" << got.size()
                                  << " documents) is no prefix of ops " << must << ".." << may
                                  << " of " << ops.size();
  std::printf(
      "backup holds ops [0, %zu): %zu acknowledged before it began, %zu begun before "
      "it returned, %zu in all\n",
      *prefix, must, may, ops.size());
  // Each document present has exactly the content of its version.
  for (const auto& [id, d] : contents) {
    auto v = writer.versions().find(d.text);
    ASSERT_NE(v, writer.versions().end()) << id << ": unknown version " << d.text;
    EXPECT_EQ(d.num_tokens, v->second.num_tokens) << d.text;
    ExpectSameVectors(d.tokens, v->second.tokens, d.text + " tokens");
  }
  ExpectIndexAgreesWithStore(**copy, contents);

  // The other collection came along, whole.
  auto other_copy = (*restored)->Get("other");
  ASSERT_TRUE(other_copy.ok()) << other_copy.status();
  EXPECT_EQ((*other_copy)->Stats().num_documents, 5u);

  // The restored copy takes writes of its own.
  ASSERT_TRUE((*copy)->Upsert({MakeDoc(rng, "new-in-copy", kDim, 1, 2)}).ok());

  // The source kept serving: it holds every acknowledged write, its index
  // agrees, and it takes more.
  const std::map<std::string, Document> source = Contents(**docs);
  EXPECT_EQ(TextsOf(source), Replay(ops, ops.size()));
  ExpectIndexAgreesWithStore(**docs, source);
  ASSERT_TRUE((*docs)->Upsert({MakeDoc(rng, Id(0), kDim, 1, 2)}).ok());
}

// What a backup or restore killed midway left beside its destination (its
// process gone) is removed by the next one to that destination; a folder
// of a live process stays.
TEST(BackupTest, LeftoversOfADeadProcessAreRemoved) {
  TempDir dir;
  auto catalog = Catalog::Open(Options(dir.Sub("data")));
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  std::mt19937 rng(6);
  auto c = (*catalog)->Create("a", Config());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Upsert({MakeDoc(rng, Id(0), kDim, 1, 2)}).ok());
  // A process that has ended.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  const std::string dead = absl::StrCat(dir.Sub(".bk.backup-"), child, "-3");
  const std::string live = absl::StrCat(dir.Sub(".bk.backup-"), ::getppid(), "-4");
  const std::string dead_restore = absl::StrCat(dir.Sub(".rs.restoring-"), child, "-0");
  for (const std::string& d : {dead, live, dead_restore}) {
    fs::create_directories(d + "/collections/a");
    std::ofstream(d + "/collections/a/file") << "partial\n";
  }
  auto made = (*catalog)->Backup(dir.Sub("bk"), "");
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  auto restored = Catalog::Restore(dir.Sub("bk"), dir.Sub("rs"));
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_FALSE(fs::exists(dead_restore));
  // A file where the data directory would be: named as such.
  std::ofstream(dir.Sub("a_file")) << "x";
  auto onto_file = Catalog::Restore(dir.Sub("bk"), dir.Sub("a_file"));
  EXPECT_EQ(onto_file.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(onto_file.status().message().find("is not a directory"), std::string::npos)
      << onto_file.status();
}

TEST(BackupTest, OneCollectionUnknownCollectionAndBadManifests) {
  TempDir dir;
  auto catalog = Catalog::Open(Options(dir.Sub("data")));
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  std::mt19937 rng(5);
  for (const char* name : {"a", "b"}) {
    auto c = (*catalog)->Create(name, Config());
    ASSERT_TRUE(c.ok()) << c.status();
    std::vector<Document> batch;
    for (int i = 0; i < 3; ++i) batch.push_back(MakeDoc(rng, Id(i), kDim, 1, 2));
    ASSERT_TRUE((*c)->Upsert(batch).ok());
  }
  // Unknown collection: NOT_FOUND, nothing written.
  auto unknown = (*catalog)->Backup(dir.Sub("nope"), "missing");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir.Sub("nope")));
  EXPECT_EQ((*catalog)->Backup("", "").status().code(), absl::StatusCode::kInvalidArgument);
  // Inside the data directory (by any spelling of it), the copy would be
  // read as a collection at the next open: refused, nothing written.
  for (const std::string& inside : {dir.Sub("data/collections/zz"), dir.Sub("data/x/../bk")}) {
    auto in = (*catalog)->Backup(inside, "b");
    EXPECT_EQ(in.status().code(), absl::StatusCode::kInvalidArgument) << inside;
    EXPECT_NE(in.status().message().find("inside the data directory"), std::string::npos)
        << in.status();
  }
  EXPECT_FALSE(fs::exists(dir.Sub("data/collections/zz")));
  EXPECT_FALSE(fs::exists(dir.Sub("data/bk")));
  // A NUL byte: the system would read the path only up to it, and the
  // temporary folder removed on failure would be another, existing one.
  fs::create_directories(dir.Sub(".bk/important"));
  std::ofstream(dir.Sub(".bk/important/file")) << "precious\n";
  auto nul = (*catalog)->Backup(dir.Sub("bk") + std::string("\0zzz", 4), "b");
  EXPECT_EQ(nul.status().code(), absl::StatusCode::kInvalidArgument) << nul.status();
  EXPECT_NE(nul.status().message().find("destination: holds a NUL"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir.Sub(".bk/important/file")));
  auto restore_nul = Catalog::Restore(dir.Sub("bk") + std::string("\0", 1), dir.Sub("r"), {});
  EXPECT_EQ(restore_nul.status().code(), absl::StatusCode::kInvalidArgument);
  // A destination that cannot be made: FAILED_PRECONDITION naming it.
  auto unmakeable = (*catalog)->Backup("/proc/attnsearch-backup", "b");
  EXPECT_EQ(unmakeable.status().code(), absl::StatusCode::kFailedPrecondition)
      << unmakeable.status();
  EXPECT_NE(unmakeable.status().message().find("destination: "), std::string::npos);
  // Beside it (a name that only begins like it) is fine.
  auto beside = (*catalog)->Backup(dir.Sub("data-backup"), "b");
  EXPECT_TRUE(beside.ok()) << beside.status();

  // One collection (a trailing slash is fine).
  auto one = (*catalog)->Backup(dir.Sub("one") + "/", "b");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->manifest.collections.size(), 1u);
  EXPECT_EQ(one->manifest.collections[0].name, "b");
  EXPECT_EQ(one->manifest.collections[0].documents, 3u);
  EXPECT_FALSE(fs::exists(dir.Sub("one/collections/a")));
  auto manifest = Catalog::ReadBackupManifest(dir.Sub("one"));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->collections.size(), 1u);
  EXPECT_LE(absl::Now() - manifest->created, absl::Minutes(5));

  // Restoring into an existing empty directory is fine.
  fs::create_directories(dir.Sub("empty"));
  auto restored = Catalog::Restore(dir.Sub("one"), dir.Sub("empty"));
  ASSERT_TRUE(restored.ok()) << restored.status();
  {
    auto opened = Catalog::Open(Options(dir.Sub("empty")));
    ASSERT_TRUE(opened.ok()) << opened.status();
    ASSERT_EQ((*opened)->List().size(), 1u);
    auto b = (*opened)->Get("b");
    ASSERT_TRUE(b.ok());
    EXPECT_EQ((*b)->Stats().num_documents, 3u);
  }

  // No manifest, a damaged one, a count that lies, a missing collection.
  EXPECT_EQ(Catalog::Restore(dir.Sub("data"), dir.Sub("r1")).status().code(),
            absl::StatusCode::kNotFound);
  const std::string manifest_path = dir.Sub("one/BACKUP");
  std::string text;
  {
    std::ifstream in(manifest_path);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    const size_t at = t.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) t.replace(at, from.size(), to);
    std::ofstream(manifest_path, std::ios::trunc) << t;
  };
  with("format_version 1", "format_version x");
  auto bad = Catalog::Restore(dir.Sub("one"), dir.Sub("r2"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("format_version"), std::string::npos) << bad.status();
  with("collection b 3", "collection b 4");
  bad = Catalog::Restore(dir.Sub("one"), dir.Sub("r3"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("'b'"), std::string::npos) << bad.status();
  EXPECT_FALSE(fs::exists(dir.Sub("r3")));
  with("collection b 3", "collection c 3");
  bad = Catalog::Restore(dir.Sub("one"), dir.Sub("r4"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("'c'"), std::string::npos) << bad.status();
  // Nothing left behind by the failed restores.
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename().string().find(".restoring-"), std::string::npos) << e.path();
  }
}

// A backup whose bytes were damaged inside a table file opens (RocksDB reads
// only a file's index at open), so Restore reads every block: it refuses the
// backup with DATA_LOSS naming the collection, and leaves nothing behind.
TEST(BackupTest, RestoreRefusesABackupWithFlippedBytes) {
  TempDir dir;
  {
    auto catalog = Catalog::Open(Options(dir.Sub("data")));
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    auto c = (*catalog)->Create("a", Config());
    ASSERT_TRUE(c.ok()) << c.status();
    std::mt19937 rng(9);
    for (int b = 0; b < 4; ++b) {
      std::vector<Document> batch;
      for (int i = 0; i < 500; ++i) batch.push_back(MakeDoc(rng, Id(b * 500 + i), kDim, 4, 8));
      ASSERT_TRUE((*c)->Upsert(batch).ok());
    }
    ASSERT_TRUE((*catalog)->Backup(dir.Sub("backup"), "").ok());  // flushes: table files
  }
  // The largest table file: the token matrices.
  fs::path sst;
  uintmax_t largest = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir.Sub("backup"))) {
    if (e.path().extension() == ".sst" && e.file_size() > largest) {
      largest = e.file_size();
      sst = e.path();
    }
  }
  ASSERT_FALSE(sst.empty());
  ASSERT_GT(largest, 64u << 10);
  // A hard link shares its bytes with the live store: damage a copy only.
  const fs::path copy = sst.string() + ".copy";
  fs::copy_file(sst, copy);
  fs::remove(sst);
  fs::rename(copy, sst);
  {
    std::fstream f(sst, std::ios::in | std::ios::out | std::ios::binary);
    for (uintmax_t at : {largest / 3, largest / 3 + 1}) {
      f.seekg(std::streamoff(at));
      const char c = char(f.get());
      f.seekp(std::streamoff(at));
      f.put(char(c ^ 0x5a));
    }
  }
  auto restored = Catalog::Restore(dir.Sub("backup"), dir.Sub("restored"));
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kDataLoss) << restored.status();
  EXPECT_NE(restored.status().message().find("collection 'a'"), std::string::npos)
      << restored.status();
  EXPECT_NE(restored.status().message().find("checksum"), std::string::npos) << restored.status();
  // Files are named where they are in the backup, not in the removed copy.
  EXPECT_EQ(restored.status().message().find(".restoring-"), std::string::npos)
      << restored.status();
  EXPECT_FALSE(fs::exists(dir.Sub("restored")));
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename().string().find(".restoring-"), std::string::npos) << e.path();
  }
  // The live data directory was not touched.
  auto catalog = Catalog::Open(Options(dir.Sub("data")));
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  auto c = (*catalog)->Get("a");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE((*c)->VerifyChecksums().ok());
  EXPECT_EQ((*c)->Stats().num_documents, 2000u);
}

}  // namespace
}  // namespace attnsearch
