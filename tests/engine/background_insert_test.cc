// Background insertion into the ANN graph: a write is searchable as soon as
// it returns, whether its vectors are linked yet or still pending (scored
// exactly), held to a brute-force oracle; deletes, overwrites and filters
// apply to pending vectors too; writes wait once max_pending_vectors are
// pending; a close with vectors pending loses none of them.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/collection.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::TempDir;

constexpr uint32_t kDim = 32;

CollectionConfig Config() {
  CollectionConfig c;
  c.dim = kDim;
  c.ann_spec = "HNSW32,Flat";  // f32 storage: graph and pending scores agree exactly
  c.token_dtype = TokenDtype::kF32;
  return c;
}

CollectionOptions Options(size_t max_pending = 1000000) {
  CollectionOptions o;
  o.max_pending_vectors = max_pending;
  o.limits.max_candidates = 100000;
  return o;
}

// Documents "<prefix><i>" with random unit pooled vectors and a tag
// ("even" / "odd" by i).
std::vector<Document> Docs(std::mt19937& rng, const std::string& prefix, size_t first, size_t n) {
  std::vector<Document> docs(n);
  for (size_t i = 0; i < n; ++i) {
    docs[i].id = absl::StrCat(prefix, first + i);
    docs[i].pooled = testing::RandomUnitRows(rng, 1, kDim);
    docs[i].metadata["tag"] = (first + i) % 2 == 0 ? "even" : "odd";
  }
  return docs;
}

// The oracle: the ids of the k live documents with the highest inner
// product with `query` (among those tagged `tag` when not empty).
std::vector<std::string> ExactTop(const std::map<std::string, Document>& live,
                                  const std::vector<float>& query, size_t k,
                                  const std::string& tag = "") {
  std::vector<std::pair<double, std::string>> scored;
  for (const auto& [id, d] : live) {
    if (!tag.empty() && d.metadata.at("tag") != tag) continue;
    double s = 0;
    for (uint32_t j = 0; j < kDim; ++j) s += double(query[j]) * d.pooled[j];
    scored.emplace_back(-s, id);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> ids;
  for (size_t i = 0; i < std::min(k, scored.size()); ++i) ids.push_back(scored[i].second);
  return ids;
}

// An exhaustive ANN-stage search (candidates cover every live document, so
// the graph returns all it holds and the pending vectors are all scored).
std::vector<std::string> SearchAll(const Collection& c, const std::vector<float>& query, uint32_t k,
                                   size_t live, const std::string& tag = "") {
  SearchQuery q;
  q.pooled = query;
  q.top_k = k;
  q.candidates = uint32_t(std::max<size_t>(live, k));
  q.ann_params = "efSearch=" + std::to_string(std::max<size_t>(live, 16));
  q.mode = RerankMode::kNone;
  if (!tag.empty()) q.filter.push_back({"tag", {tag}});
  return testing::SearchIds(c, q);
}

// Upserts `docs` in batches of 5,000 (the default batch limit is 10,000).
void Upsert(Collection* c, const std::vector<Document>& docs,
            std::map<std::string, Document>* live) {
  for (size_t i = 0; i < docs.size(); i += 5000) {
    std::vector<Document> batch(docs.begin() + ptrdiff_t(i),
                                docs.begin() + ptrdiff_t(std::min(docs.size(), i + 5000)));
    for (const auto& d : batch) (*live)[d.id] = d;
    const auto written = c->Upsert(std::move(batch));
    ASSERT_TRUE(written.ok()) << written.status();
  }
}

// Nothing pending, the index holding every live document, and `queries`
// random queries ranked as the oracle ranks them.
void ExpectAllLinked(const Collection& c, const std::map<std::string, Document>& live,
                     std::mt19937& rng, int queries) {
  const CollectionStats s = c.Stats();
  EXPECT_EQ(s.ann_pending, 0u);
  EXPECT_EQ(s.ann_vectors, live.size());
  for (int t = 0; t < queries; ++t) {
    const std::vector<float> q = testing::RandomUnitRows(rng, 1, kDim);
    EXPECT_EQ(SearchAll(c, q, 20, live.size()), ExactTop(live, q, 20));
  }
}

TEST(BackgroundInsertTest, EveryWriteIsSearchableAtOnceAgainstTheOracle) {
  TempDir dir;
  auto created = Collection::Create(dir.Sub("c"), Config(), Options());
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  std::mt19937 rng(1);
  std::map<std::string, Document> live;
  uint64_t saw_pending = 0;
  for (int round = 0; round < 8; ++round) {
    Upsert(&c, Docs(rng, "d", size_t(round) * 3000, 3000), &live);
    const CollectionStats s = c.Stats();
    EXPECT_EQ(s.ann_vectors, live.size());
    saw_pending += s.ann_pending;
    // The documents just written are their own top hit, and every ranking
    // equals the oracle's, whatever the inserter has linked by now.
    for (int t = 0; t < 5; ++t) {
      const Document& own = live.at(absl::StrCat("d", round * 3000 + t * 599));
      EXPECT_EQ(SearchAll(c, own.pooled, 1, live.size()), std::vector<std::string>{own.id});
      const std::vector<float> q = testing::RandomUnitRows(rng, 1, kDim);
      EXPECT_EQ(SearchAll(c, q, 20, live.size()), ExactTop(live, q, 20));
      EXPECT_EQ(SearchAll(c, q, 20, live.size(), "odd"), ExactTop(live, q, 20, "odd"));
    }
  }
  // 24,000 links take far longer than 8 writes: some searches met vectors
  // still pending.
  EXPECT_GT(saw_pending, 0u);
  ASSERT_TRUE(c.BuildIndex().ok());  // links everything pending
  ExpectAllLinked(c, live, rng, 1);
}

TEST(BackgroundInsertTest, DeletesAndOverwritesOfPendingVectorsApplyAtOnce) {
  TempDir dir;
  auto created = Collection::Create(dir.Sub("c"), Config(), Options());
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  std::mt19937 rng(2);
  std::map<std::string, Document> live;
  Upsert(&c, Docs(rng, "d", 0, 20000), &live);
  // At once, while most are likely pending: delete a third, overwrite a
  // third with new vectors.
  std::vector<std::string> doomed;
  for (size_t i = 0; i < 20000; i += 3) doomed.push_back(absl::StrCat("d", i));
  ASSERT_TRUE(c.Delete(doomed).ok());
  for (const auto& id : doomed) live.erase(id);
  std::vector<Document> renewed;
  for (size_t i = 1; i < 20000; i += 3) {
    renewed.push_back(Docs(rng, "d", i, 1)[0]);
  }
  Upsert(&c, renewed, &live);
  for (int t = 0; t < 10; ++t) {
    const std::vector<float> q = testing::RandomUnitRows(rng, 1, kDim);
    EXPECT_EQ(SearchAll(c, q, 30, live.size()), ExactTop(live, q, 30));
  }
  for (size_t i = 0; i < renewed.size(); i += 97) {
    const Document& d = renewed[i];
    EXPECT_EQ(SearchAll(c, d.pooled, 1, live.size()), std::vector<std::string>{d.id});
  }
  // Linked or pending, the dead versions are counted: the index holds the
  // live documents plus its tombstones.
  CollectionStats s = c.Stats();
  EXPECT_EQ(s.num_documents, live.size());
  EXPECT_EQ(s.ann_vectors, s.num_documents + s.num_tombstones);
  ASSERT_TRUE(c.BuildIndex().ok());
  s = c.Stats();
  EXPECT_EQ(s.ann_pending, 0u);
  EXPECT_EQ(s.ann_vectors, s.num_documents + s.num_tombstones);
}

TEST(BackgroundInsertTest, WritesWaitOnceMaxPendingVectorsArePending) {
  TempDir dir;
  auto created = Collection::Create(dir.Sub("c"), Config(), Options(/*max_pending=*/1000));
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  std::mt19937 rng(3);
  std::map<std::string, Document> live;
  for (int round = 0; round < 20; ++round) {
    Upsert(&c, Docs(rng, "d", size_t(round) * 700, 700), &live);
    // The write returned only once the inserter had brought the pending
    // vectors down to the limit; nothing else adds any.
    EXPECT_LE(c.Stats().ann_pending, 1000u) << "round " << round;
  }
  EXPECT_EQ(c.Stats().ann_vectors, live.size());
}

TEST(BackgroundInsertTest, SyncInsertLinksBeforeTheWriteReturns) {
  TempDir dir;
  CollectionOptions options = Options();
  options.background_insert = false;
  auto created = Collection::Create(dir.Sub("c"), Config(), options);
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  std::mt19937 rng(4);
  std::map<std::string, Document> live;
  for (int round = 0; round < 3; ++round) {
    Upsert(&c, Docs(rng, "d", size_t(round) * 2000, 2000), &live);
    const CollectionStats s = c.Stats();
    EXPECT_EQ(s.ann_pending, 0u);
    EXPECT_EQ(s.ann_vectors, live.size());
  }
  const std::vector<float> q = testing::RandomUnitRows(rng, 1, kDim);
  EXPECT_EQ(SearchAll(c, q, 20, live.size()), ExactTop(live, q, 20));
}

TEST(BackgroundInsertTest, ACloseWithVectorsPendingLosesNone) {
  TempDir dir;
  std::mt19937 rng(5);
  std::map<std::string, Document> live;
  {
    auto created = Collection::Create(dir.Sub("c"), Config(), Options());
    ASSERT_TRUE(created.ok()) << created.status();
    Upsert(created->get(), Docs(rng, "d", 0, 30000), &live);
    // Closed at once: what the inserter has not linked stays in the store.
  }
  auto reopened = Collection::Open(dir.Sub("c"), Options());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  Collection& c = **reopened;
  EXPECT_EQ(c.Stats().num_documents, live.size());
  ExpectAllLinked(c, live, rng, 10);  // the open links what the snapshot lacks
}

}  // namespace
}  // namespace attnsearch
