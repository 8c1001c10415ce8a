// The ANN index rebuild: triggered in the background by tombstones, or run
// by RebuildIndex; writes and deletes made while it runs are all reflected
// afterwards; the rebuilt index survives a reopen.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/collection.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::TempDir;

constexpr uint32_t kDim = 16;
// Exhaustive searches score every live document: writes during a rebuild
// may take the collection past the default limit of candidates.
constexpr uint32_t kMaxCandidates = 60000;

CollectionConfig Config() {
  CollectionConfig c;
  c.dim = kDim;
  c.ann_spec = "HNSW32,Flat";
  c.token_dtype = TokenDtype::kF32;
  return c;
}

Document PooledDoc(std::mt19937& rng, const std::string& id) {
  Document d;
  d.id = id;
  d.pooled = testing::RandomUnitRows(rng, 1, kDim);
  return d;
}

// Upserts n documents "<prefix>i" in batches; records their vectors.
void Load(Collection* c, std::mt19937& rng, size_t n, const std::string& prefix,
          std::map<std::string, std::vector<float>>* live) {
  std::vector<Document> batch;
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(PooledDoc(rng, absl::StrCat(prefix, i)));
    (*live)[batch.back().id] = batch.back().pooled;
    if (batch.size() == 2000 || i + 1 == n) {
      ASSERT_TRUE(c->Upsert(std::move(batch)).ok());
      batch.clear();
    }
  }
}

// Polls Stats until `done` holds or 120 s pass.
template <typename Pred>
bool WaitFor(const Collection& c, Pred done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done(c.Stats())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// The top hits of a query: with `exhaustive`, candidates >= the live
// documents (every indexed vector is scored), else the graph search with a
// wide beam.
std::vector<SearchHit> Top(const Collection& c, const std::vector<float>& query, uint32_t k,
                           bool exhaustive, size_t live) {
  SearchQuery q;
  q.pooled = query;
  q.top_k = k;
  q.candidates = exhaustive ? uint32_t(std::clamp<size_t>(live, k, kMaxCandidates))
                            : std::max<uint32_t>(k, 10);
  q.ann_params = exhaustive ? "" : "efSearch=256";
  q.mode = RerankMode::kNone;
  auto r = c.Search(q);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->hits : std::vector<SearchHit>();
}

// Every live document is its own top hit (with the graph for nearly all,
// exhaustively for the rest); no deleted id comes back for random queries.
void CheckContents(const Collection& c, const std::map<std::string, std::vector<float>>& live,
                   const std::set<std::string>& deleted, std::mt19937& rng) {
  ASSERT_LE(live.size(), kMaxCandidates);
  size_t graph_found = 0;
  for (const auto& [id, v] : live) {
    const auto graph = Top(c, v, 1, false, live.size());
    if (!graph.empty() && graph[0].id == id) {
      ++graph_found;
      continue;
    }
    const auto exact = Top(c, v, 1, true, live.size());
    ASSERT_EQ(exact.size(), 1u) << id;
    ASSERT_EQ(exact[0].id, id);
  }
  EXPECT_GE(double(graph_found), 0.99 * double(live.size()));
  for (int t = 0; t < 50; ++t) {
    for (bool exhaustive : {false, true}) {
      const auto hits = Top(c, testing::RandomUnitRows(rng, 1, kDim), 100, exhaustive, live.size());
      EXPECT_EQ(hits.size(), std::min<size_t>(100, live.size()));
      for (const auto& h : hits) {
        ASSERT_EQ(deleted.count(h.id), 0u) << h.id << " was deleted";
        ASSERT_EQ(live.count(h.id), 1u) << h.id;
      }
    }
  }
  std::vector<std::string> gone(deleted.begin(), deleted.end());
  if (gone.size() > 10000) gone.resize(10000);
  auto got = c.Get(gone, false);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->documents.empty());
}

TEST(RebuildTest, TombstonesTriggerABackgroundRebuild) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_candidates = kMaxCandidates;
  options.rebuild_min_tombstones = 100;  // ratio: the default 0.2
  std::mt19937 rng(201);
  std::map<std::string, std::vector<float>> live;
  std::set<std::string> deleted;
  {
    auto created = Collection::Create(dir.Sub("c"), Config(), options);
    ASSERT_TRUE(created.ok()) << created.status();
    Collection& c = **created;
    Load(&c, rng, 5000, "d", &live);
    // 15% deleted: below the ratio, nothing happens.
    std::vector<std::string> doomed;
    for (int i = 0; i < 750; ++i) doomed.push_back(absl::StrCat("d", i * 4));
    ASSERT_TRUE(c.Delete(doomed).ok());
    CollectionStats s = c.Stats();
    EXPECT_EQ(s.num_tombstones, 750u);
    EXPECT_EQ(s.ann_vectors, 5000u);
    EXPECT_EQ(s.rebuilds, 0u);
    // 25%: over it.
    std::vector<std::string> more;
    for (int i = 0; i < 500; ++i) more.push_back(absl::StrCat("d", i * 4 + 1));
    doomed.insert(doomed.end(), more.begin(), more.end());
    for (const auto& id : doomed) {
      live.erase(id);
      deleted.insert(id);
    }
    ASSERT_TRUE(c.Delete(more).ok());
    ASSERT_TRUE(WaitFor(c, [](const CollectionStats& s) {
      return s.rebuilds >= 1 && !s.rebuild_in_progress;
    })) << "no rebuild within 120 s";
    s = c.Stats();
    EXPECT_EQ(s.rebuilds, 1u);
    EXPECT_EQ(s.num_documents, 3750u);
    EXPECT_EQ(s.ann_vectors, 3750u);
    EXPECT_EQ(s.num_tombstones, 0u);
    CheckContents(c, live, deleted, rng);
  }
  // The store kept no tombstone record: the rebuilt snapshot holds none of
  // those labels.
  {
    auto store = DocStore::Open(dir.Sub("c") + "/store", StorageOptions());
    ASSERT_TRUE(store.ok()) << store.status();
    auto tombstones = (*store)->Tombstones();
    ASSERT_TRUE(tombstones.ok());
    EXPECT_TRUE(tombstones->empty()) << tombstones->size();
  }
  // Reopened: the rebuilt snapshot is loaded as it is.
  auto reopened = Collection::Open(dir.Sub("c"), options);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  const CollectionStats s = (*reopened)->Stats();
  EXPECT_EQ(s.ann_vectors, 3750u);
  EXPECT_EQ(s.num_tombstones, 0u);
  EXPECT_EQ(s.rebuilds, 0u);
  CheckContents(**reopened, live, deleted, rng);
}

TEST(RebuildTest, WritesAndDeletesDuringARebuildAreKept) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_candidates = kMaxCandidates;
  options.rebuild_tombstone_ratio = 0;  // only the explicit rebuilds below
  auto created = Collection::Create(dir.Sub("c"), Config(), options);
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  std::mt19937 rng(202);
  std::map<std::string, std::vector<float>> live;
  std::set<std::string> deleted;
  Load(&c, rng, 20000, "d", &live);
  std::vector<std::string> doomed;
  for (int i = 0; i < 20000; i += 3) doomed.push_back(absl::StrCat("d", i));
  ASSERT_TRUE(c.Delete(doomed).ok());
  for (const auto& id : doomed) {
    live.erase(id);
    deleted.insert(id);
  }

  std::atomic<bool> rebuilt{false};
  absl::Status rebuild_status;
  std::thread rebuilder([&] {
    rebuild_status = c.RebuildIndex();
    rebuilt = true;
  });
  // Upserts of new ids, overwrites and deletes of old ones, each
  // acknowledged before it is recorded, until the rebuild is over (and a
  // few rounds after it).
  int rounds = 0, rounds_during = 0, after = 0;
  std::mt19937 wrng(203);
  while (after < 3) {
    if (rebuilt) ++after;
    std::vector<Document> batch;
    for (int i = 0; i < 20; ++i)
      batch.push_back(PooledDoc(wrng, absl::StrCat("n", rounds, "_", i)));
    for (int i = 0; i < 5; ++i) {
      const std::string id = absl::StrCat("d", 1 + 3 * (rounds * 5 + i));  // live ones
      batch.push_back(PooledDoc(wrng, id));
    }
    std::vector<std::string> dels;
    for (int i = 0; i < 5; ++i) dels.push_back(absl::StrCat("d", 2 + 3 * (rounds * 5 + i)));
    std::vector<Document> copy = batch;
    ASSERT_TRUE(c.Upsert(std::move(batch)).ok());
    for (const auto& d : copy) live[d.id] = d.pooled;
    auto del = c.Delete(dels);
    ASSERT_TRUE(del.ok());
    for (const auto& id : dels) {
      live.erase(id);
      deleted.insert(id);
    }
    if (!rebuilt) ++rounds_during;
    ++rounds;
  }
  rebuilder.join();
  ASSERT_TRUE(rebuild_status.ok()) << rebuild_status;
  EXPECT_GE(rounds_during, 1);
  std::printf("%d write rounds, %d during the rebuild\n", rounds, rounds_during);
  CollectionStats s = c.Stats();
  EXPECT_EQ(s.rebuilds, 1u);
  EXPECT_EQ(s.num_documents, live.size());
  // The index holds the live documents plus the tombstones it counts.
  EXPECT_EQ(s.ann_vectors, s.num_documents + s.num_tombstones);
  // Only this loop's deletes and overwrites (10 a round) can be dead in the
  // rebuilt index: the 6,667 before it are gone.
  EXPECT_LE(s.num_tombstones, 10u * uint64_t(rounds));
  CheckContents(c, live, deleted, rng);
  // A second rebuild leaves exactly the live documents.
  ASSERT_TRUE(c.RebuildIndex().ok());
  s = c.Stats();
  EXPECT_EQ(s.ann_vectors, live.size());
  EXPECT_EQ(s.num_tombstones, 0u);
  CheckContents(c, live, deleted, rng);
  // And survives a reopen.
  created->reset();
  auto reopened = Collection::Open(dir.Sub("c"), options);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  s = (*reopened)->Stats();
  EXPECT_EQ(s.ann_vectors, live.size());
  EXPECT_EQ(s.num_documents, live.size());
  EXPECT_EQ(s.num_tombstones, 0u);
  CheckContents(**reopened, live, deleted, rng);
}

// Deletes that cross the threshold while a rebuild runs (which asks for no
// second one then) get their rebuild once it is over, with no write after.
TEST(RebuildTest, ThresholdCrossedDuringARebuildRebuildsAfterIt) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_candidates = kMaxCandidates;
  options.rebuild_min_tombstones = 100;  // ratio: the default 0.2
  auto created = Collection::Create(dir.Sub("c"), Config(), options);
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  std::mt19937 rng(205);
  std::map<std::string, std::vector<float>> live;
  Load(&c, rng, 20000, "d", &live);
  std::atomic<bool> rebuilt{false};
  absl::Status rebuild_status;
  std::thread rebuilder([&] {
    rebuild_status = c.RebuildIndex();
    rebuilt = true;
  });
  while (!c.Stats().rebuild_in_progress && !rebuilt) std::this_thread::yield();
  // 30% deleted, a batch at a time, while it runs.
  std::set<std::string> deleted;
  for (int i = 0; i < 20000 && !rebuilt; i += 10) {
    std::vector<std::string> dels;
    for (int j = i; j < i + 10; j += 10 / 3) dels.push_back(absl::StrCat("d", j));
    ASSERT_TRUE(c.Delete(dels).ok());
    for (const auto& id : dels) {
      live.erase(id);
      deleted.insert(id);
    }
    if (deleted.size() >= 6000) break;
  }
  const bool during = !rebuilt;
  rebuilder.join();
  ASSERT_TRUE(rebuild_status.ok()) << rebuild_status;
  if (!during) GTEST_SKIP() << "the rebuild ended before the deletes: nothing to check";
  ASSERT_TRUE(WaitFor(c,
                      [&](const CollectionStats& s) {
                        return s.rebuilds >= 2 && !s.rebuild_in_progress && s.num_tombstones == 0;
                      }))
      << "tombstones " << c.Stats().num_tombstones << " of " << c.Stats().ann_vectors
      << " left after the rebuild, none scheduled";
  const CollectionStats s = c.Stats();
  EXPECT_EQ(s.num_documents, live.size());
  EXPECT_EQ(s.ann_vectors, live.size());
  CheckContents(c, live, deleted, rng);
}

TEST(RebuildTest, CloseDuringABackgroundRebuild) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_candidates = kMaxCandidates;
  options.rebuild_min_tombstones = 10;
  std::mt19937 rng(204);
  std::map<std::string, std::vector<float>> live;
  std::set<std::string> deleted;
  {
    auto created = Collection::Create(dir.Sub("c"), Config(), options);
    ASSERT_TRUE(created.ok()) << created.status();
    Load(created->get(), rng, 20000, "d", &live);
    // All in the graph first, so that the deletes leave half of it dead.
    ASSERT_TRUE((*created)->BuildIndex().ok());
    std::vector<std::string> doomed;
    for (int i = 0; i < 20000; i += 2) doomed.push_back(absl::StrCat("d", i));
    ASSERT_TRUE((*created)->Delete(doomed).ok());
    for (const auto& id : doomed) {
      live.erase(id);
      deleted.insert(id);
    }
    // Closed at once: the rebuild is abandoned, not waited for to the end.
  }
  auto reopened = Collection::Open(dir.Sub("c"), options);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  Collection& c = **reopened;
  // Either the rebuild finished before the close, or the reopened
  // collection (still over the threshold) starts one.
  ASSERT_TRUE(WaitFor(
      c, [](const CollectionStats& s) { return s.num_tombstones == 0 && !s.rebuild_in_progress; }));
  EXPECT_EQ(c.Stats().ann_vectors, 10000u);
  CheckContents(c, live, deleted, rng);
}

TEST(RebuildTest, DeferredIndexRefusesARebuild) {
  TempDir dir;
  auto c = Collection::Create(dir.Sub("c"), Config(), CollectionOptions::ForBulkLoad());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->RebuildIndex().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace attnsearch
