// Vectors at the edges of float: subnormal values are normalised to finite
// unit vectors (in double), zero and cancelling vectors are refused naming
// the field and the row, query knobs that would overflow are refused, and a
// search never returns a NaN or infinite score, even over vectors stored
// unvalidated (as an older version could write them).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/collection.h"
#include "engine_test_util.h"
#include "storage/doc_store.h"

namespace attnsearch {
namespace {

using testing::MakeDoc;
using testing::TempDir;

constexpr float kTiny = 1e-45f;  // the smallest subnormal float

CollectionConfig Config(uint32_t dim, TokenDtype dtype = TokenDtype::kBF16,
                        const std::string& spec = std::string(kDefaultAnnSpec)) {
  CollectionConfig c;
  c.dim = dim;
  c.token_dtype = dtype;
  c.ann_spec = spec;
  return c;
}

std::unique_ptr<Collection> MustCreate(const std::string& path, const CollectionConfig& config) {
  auto c = Collection::Create(path, config, {});
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(c).value();
}

double Norm(const float* v, size_t n) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += double(v[i]) * v[i];
  return std::sqrt(ss);
}

// Every row of `v` (rows x dim) is finite with unit norm.
void ExpectUnitRows(const std::vector<float>& v, uint32_t dim, const std::string& what) {
  ASSERT_FALSE(v.empty()) << what;
  ASSERT_EQ(v.size() % dim, 0u) << what;
  for (size_t r = 0; r < v.size() / dim; ++r) {
    ASSERT_TRUE(AllFinite(v.data() + r * dim, dim)) << what << " row " << r;
    EXPECT_NEAR(Norm(v.data() + r * dim, dim), 1.0, 1e-2) << what << " row " << r;
  }
}

void ExpectFiniteScores(const SearchResult& r, const std::string& what) {
  for (const SearchHit& h : r.hits) {
    EXPECT_TRUE(std::isfinite(h.score)) << what << ": " << h.id << " scored " << h.score;
    EXPECT_TRUE(std::isfinite(h.ann_score)) << what << ": " << h.id << " ann " << h.ann_score;
  }
  for (size_t i = 1; i < r.hits.size(); ++i) {
    EXPECT_GE(r.hits[i - 1].score, r.hits[i].score) << what << ": hits out of order at " << i;
  }
}

SearchQuery PooledQuery(std::vector<float> pooled, uint32_t top_k, uint32_t candidates,
                        RerankMode mode) {
  SearchQuery q;
  q.pooled = std::move(pooled);
  q.top_k = top_k;
  q.candidates = candidates;
  q.mode = mode;
  return q;
}

TEST(VectorValidationTest, SubnormalPooledVectorIsStoredAsAFiniteUnitVector) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), Config(4));
  Document tiny;
  tiny.id = "tiny";
  tiny.pooled = {kTiny, kTiny, kTiny, kTiny};
  Document a, b;
  a.id = "a";
  a.pooled = {1, 0, 0, 0};
  b.id = "b";
  b.pooled = {0, 1, 0, 0};
  ASSERT_TRUE(c->Upsert({tiny, a, b}).ok());

  auto got = c->Get({"tiny"}, /*include_vectors=*/true);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->documents.size(), 1u);
  ExpectUnitRows(got->documents[0].pooled, 4, "pooled");
  ExpectUnitRows(got->documents[0].tokens, 4, "tokens");
  for (float v : got->documents[0].pooled) EXPECT_NEAR(v, 0.5f, 1e-3);

  for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim, RerankMode::kNone}) {
    for (uint32_t candidates : {2u, 3u}) {  // through the graph, and exact
      auto r = c->Search(PooledQuery({0.9f, 0.1f, 0, 0}, candidates, candidates, mode));
      ASSERT_TRUE(r.ok()) << r.status();
      ExpectFiniteScores(*r, "search");
      ASSERT_FALSE(r->hits.empty());
      EXPECT_EQ(r->hits[0].id, "a");
    }
  }
  // The query of the document itself finds it first, scoring 1.
  auto r = c->Search(PooledQuery({1, 1, 1, 1}, 3, 3, RerankMode::kAttention));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->hits.size(), 3u);
  EXPECT_EQ(r->hits[0].id, "tiny");
  EXPECT_NEAR(r->hits[0].score, 1.0, 1e-2);
  ExpectFiniteScores(*r, "self");
}

TEST(VectorValidationTest, SubnormalTokenRowsAreStoredAsFiniteUnitRows) {
  TempDir dir;
  for (TokenDtype dtype : {TokenDtype::kF32, TokenDtype::kBF16, TokenDtype::kInt8}) {
    auto c = MustCreate(dir.Sub("c" + std::to_string(int(dtype))), Config(4, dtype));
    Document d;
    d.id = "subnormal-rows";
    d.pooled = {1, 0, 0, 0};
    d.num_tokens = 2;
    d.tokens = {kTiny, kTiny, kTiny, kTiny, 3e-39f, 0, 0, 0};
    Document without_pooled = d;
    without_pooled.id = "subnormal-rows-pooled-from-them";
    without_pooled.pooled.clear();
    ASSERT_TRUE(c->Upsert({d, without_pooled}).ok());
    auto got = c->Get({d.id, without_pooled.id}, true);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->documents.size(), 2u);
    for (const Document& g : got->documents) {
      ExpectUnitRows(g.tokens, 4, g.id + " tokens");
      ExpectUnitRows(g.pooled, 4, g.id + " pooled");
    }
    auto r = c->Search(PooledQuery({1, 0.5f, 0, 0}, 2, 2, RerankMode::kAttention));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->hits.size(), 2u);
    ExpectFiniteScores(*r, "dtype " + std::to_string(int(dtype)));
  }
}

TEST(VectorValidationTest, SubnormalQueryVectorsScoreLikeTheirDirection) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), Config(4, TokenDtype::kF32, "Flat"));
  std::mt19937 rng(5);
  std::vector<Document> docs;
  for (int i = 0; i < 20; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), 4, 1, 4));
  ASSERT_TRUE(c->Upsert(docs).ok());

  SearchQuery normal = PooledQuery({1, 1, 1, 1}, 10, 20, RerankMode::kAttention);
  SearchQuery tiny = PooledQuery({1e-40f, 1e-40f, 1e-40f, 1e-40f}, 10, 20, RerankMode::kAttention);
  SearchQuery tiny_tokens;
  tiny_tokens.num_tokens = 2;
  tiny_tokens.tokens = {1e-40f, 1e-40f, 1e-40f, 1e-40f, kTiny, kTiny, kTiny, kTiny};
  tiny_tokens.top_k = 10;
  tiny_tokens.candidates = 20;
  auto want = c->Search(normal);
  ASSERT_TRUE(want.ok()) << want.status();
  for (const SearchQuery& q : {tiny, tiny_tokens}) {
    auto got = c->Search(q);
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectFiniteScores(*got, "subnormal query");
    ASSERT_EQ(got->hits.size(), want->hits.size());
    for (size_t i = 0; i < want->hits.size(); ++i) {
      EXPECT_EQ(got->hits[i].id, want->hits[i].id) << i;
      EXPECT_NEAR(got->hits[i].score, want->hits[i].score, 1e-4) << i;
    }
  }
}

TEST(VectorValidationTest, VectorsWithoutADirectionAreRefusedNamingFieldAndRow) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), Config(4));
  Document good;
  good.id = "good";
  good.pooled = {1, 2, 3, 4};
  ASSERT_TRUE(c->Upsert({good}).ok());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::function<void(Document&)> mutate;
    std::string message;
  } cases[] = {
      {[](Document& d) {
         d.pooled = {0, 0, -0.f, 0};
       },
       "documents[1].pooled: row 0 has zero norm"},
      {[&](Document& d) {
         d.pooled = {kTiny, inf, 0, 0};
       },
       "documents[1].pooled: row 0 has a NaN or infinite value"},
      {[](Document& d) {
         d.num_tokens = 2;
         d.tokens = {kTiny, 0, 0, 0, 0, 0, 0, 0};
       },
       "documents[1].tokens: row 1 has zero norm"},
      {[&](Document& d) {
         d.num_tokens = 2;
         d.tokens = {kTiny, 0, 0, 0, nan, 0, 0, 0};
       },
       "documents[1].tokens: row 1 has a NaN or infinite value"},
      {[](Document& d) {
         d.num_tokens = 2;
         d.tokens = {1, 0, 0, 0, -1, 0, 0, 0};  // no pooled: the mean is zero
       },
       "documents[1].tokens: the token vectors cancel out"},
  };
  for (const Case& k : cases) {
    Document bad;
    bad.id = "bad";
    k.mutate(bad);
    Document replacement = good;  // in the same batch: nothing is stored
    replacement.pooled = {4, 3, 2, 1};
    auto s = c->Upsert({replacement, bad});
    ASSERT_TRUE(absl::IsInvalidArgument(s.status())) << k.message << ": " << s.status();
    EXPECT_NE(s.status().message().find(k.message), std::string::npos) << s.status();
  }
  auto got = c->Get({"good", "bad"}, true);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->documents.size(), 1u);
  EXPECT_GT(got->documents[0].pooled[3], got->documents[0].pooled[0]);  // unchanged
  EXPECT_EQ(got->not_found_ids, std::vector<std::string>{"bad"});
}

TEST(VectorValidationTest, QueryKnobsThatWouldOverflowAreRefused) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), Config(4, TokenDtype::kF32, "Flat"));
  Document d;
  d.id = "d";
  d.pooled = {1, 0, 0, 0};
  ASSERT_TRUE(c->Upsert({d}).ok());

  SearchQuery q = PooledQuery({1, 0, 0, 0}, 1, 1, RerankMode::kAttention);
  q.temperature = 1e-40f;  // 1/τ overflows float
  auto r = c->Search(q);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("temperature:"), std::string::npos) << r.status();
  q.temperature = kMinTemperature;
  r = c->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectFiniteScores(*r, "smallest temperature");

  SearchQuery w;
  w.num_tokens = 2;
  w.tokens = {1, 0, 0, 0, 0, 1, 0, 0};
  w.token_weights = {3e38f, 3e38f};  // a score of 6e38 overflows float
  w.top_k = 1;
  r = c->Search(w);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("query.token_weights: they sum to"), std::string::npos)
      << r.status();
  w.token_weights = {1e30f, 0};  // the documented limit, as a float rounds it
  r = c->Search(w);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectFiniteScores(*r, "weights summing to the limit");
  w.token_weights = {1e30f, 1e25f};
  r = c->Search(w);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  w.token_weights = {0, 0};
  r = c->Search(w);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();  // nothing to pool
  w.pooled = {1, 0, 0, 0};
  r = c->Search(w);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectFiniteScores(*r, "zero weights");
}

// A store written before vectors were normalised in double may hold
// infinite vectors. Searches leave those documents out and rank the others
// exactly as the reference does.
TEST(VectorValidationTest, SearchNeverReturnsANonFiniteScore) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  constexpr uint32_t kDim = 8;
  std::mt19937 rng(11);
  std::vector<Document> docs;
  for (int i = 0; i < 30; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 1, 6));
  {
    auto c = MustCreate(path, Config(kDim, TokenDtype::kF32, "Flat"));
    ASSERT_TRUE(c->Upsert(docs).ok());
  }
  {
    // Written past the engine's validation, straight into the store.
    auto store = DocStore::Open(path + "/store", {});
    ASSERT_TRUE(store.ok()) << store.status();
    const float inf = std::numeric_limits<float>::infinity();
    Document all_inf;
    all_inf.id = "all-inf";
    all_inf.pooled.assign(kDim, inf);
    all_inf.num_tokens = 1;
    all_inf.tokens = all_inf.pooled;
    Document nan_tokens;
    nan_tokens.id = "nan-tokens";
    nan_tokens.pooled = testing::RandomUnitRows(rng, 1, kDim);
    nan_tokens.num_tokens = 2;
    nan_tokens.tokens.assign(2 * kDim, std::numeric_limits<float>::quiet_NaN());
    const Label next = (*store)->next_label();
    ASSERT_TRUE(
        (*store)
            ->Commit({{next, std::nullopt, &all_inf}, {next + 1, std::nullopt, &nan_tokens}}, {})
            .ok());
  }
  auto c = Collection::Open(path, {});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<float> query = testing::RandomUnitRows(rng, 3, kDim);
  for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim, RerankMode::kNone}) {
    SearchQuery q;
    q.num_tokens = 3;
    q.tokens = query;
    q.top_k = 32;
    q.candidates = 32;
    q.mode = mode;
    auto r = (*c)->Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectFiniteScores(*r, "mode " + std::to_string(int(mode)));
    for (const SearchHit& h : r->hits) {
      EXPECT_NE(h.id, "all-inf");
      if (mode != RerankMode::kNone) EXPECT_NE(h.id, "nan-tokens");
    }
    if (mode == RerankMode::kNone) continue;
    const auto want = testing::ReferenceRanking(docs, query, 3, kDim, mode, kDefaultTemperature,
                                                /*bf16=*/false);
    ASSERT_EQ(r->hits.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(r->hits[i].id, want[i].id) << i;
      EXPECT_NEAR(r->hits[i].score, want[i].score, 1e-4) << i;
    }
  }
}

}  // namespace
}  // namespace attnsearch
