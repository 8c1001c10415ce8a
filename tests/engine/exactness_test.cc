// Exactness: with candidates equal to the collection size, Search returns
// the reference reranker's top 10 over the whole collection.
#include <gtest/gtest.h>

#include "engine/collection.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::MakeDoc;
using testing::ReferenceRanking;
using testing::TempDir;

constexpr uint32_t kDim = 128;
constexpr size_t kDocs = 20000;

class ExactnessTest : public ::testing::TestWithParam<TokenDtype> {};

TEST_P(ExactnessTest, FullCandidateSearchMatchesReferenceTop10) {
  const TokenDtype dtype = GetParam();
  const bool bf16 = dtype == TokenDtype::kBF16;
  TempDir dir;
  CollectionOptions options;
  options.storage.sync_writes = false;  // durability is tested elsewhere
  options.limits.max_batch_documents = kDocs;
  // The graph is not walked when every document is a candidate; a cheap
  // build keeps the test quick.
  options.ann.ef_construction = 16;
  CollectionConfig config;
  config.dim = kDim;
  config.token_dtype = dtype;
  auto created = Collection::Create(dir.Sub("c"), config, options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Collection> c = std::move(created).value();

  std::mt19937 rng(bf16 ? 11 : 7);
  std::vector<std::string> ids;
  for (size_t start = 0; start < kDocs; start += 1000) {
    std::vector<Document> batch;
    for (size_t i = start; i < start + 1000; ++i) {
      batch.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 16, 64));
      ids.push_back(batch.back().id);
    }
    ASSERT_TRUE(c->Upsert(std::move(batch)).ok());
  }
  // The reference scores what is stored (normalised, and bf16-rounded for a
  // bf16 collection).
  auto stored = c->Get(ids, /*include_vectors=*/true);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->documents.size(), kDocs);

  for (int qi = 0; qi < 3; ++qi) {
    // A query made of a few noisy tokens of one document, so the ranking
    // has a clear head and a dense tail.
    const Document& target =
        stored->documents[std::uniform_int_distribution<size_t>(0, kDocs - 1)(rng)];
    const uint32_t m = std::uniform_int_distribution<uint32_t>(1, 32)(rng);
    std::vector<float> query = testing::RandomUnitRows(rng, m, kDim);
    for (uint32_t i = 0; i < m; ++i) {
      const float* src = target.tokens.data() + size_t(i % target.num_tokens) * kDim;
      for (uint32_t k = 0; k < kDim; ++k) query[i * kDim + k] = 0.3f * query[i * kDim + k] + src[k];
      NormalizeInPlace(query.data() + i * kDim, kDim);
    }
    for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
      SearchQuery q;
      q.num_tokens = m;
      q.tokens = query;
      q.top_k = 10;
      q.candidates = kDocs;
      q.mode = mode;
      q.temperature = 0.1f;
      auto result = c->Search(q);
      ASSERT_TRUE(result.ok()) << result.status();
      // Reference on exactly what the engine normalised.
      std::vector<float> normalised = query;
      for (uint32_t i = 0; i < m; ++i) NormalizeInPlace(normalised.data() + i * kDim, kDim);
      auto ref = ReferenceRanking(stored->documents, normalised, m, kDim, mode, 0.1f, bf16);
      ASSERT_EQ(result->hits.size(), 10u);
      EXPECT_EQ(result->hits[0].id, target.id);
      for (size_t r = 0; r < 10; ++r) {
        EXPECT_EQ(result->hits[r].id, ref[r].id) << "query " << qi << " rank " << r;
        EXPECT_NEAR(result->hits[r].score, ref[r].score, 1e-4) << "rank " << r;
      }
      if (bf16) {
        // Within 1e-2 of the same math on an f32 query, as bf16 promises.
        std::vector<float> w(m, 1.f / float(m));
        for (size_t r = 0; r < 10; ++r) {
          const auto& doc =
              *std::find_if(stored->documents.begin(), stored->documents.end(),
                            [&](const Document& d) { return d.id == result->hits[r].id; });
          EXPECT_NEAR(result->hits[r].score,
                      ReferenceScore(normalised.data(), m, w.data(), doc.tokens.data(),
                                     doc.num_tokens, kDim, mode, 0.1f),
                      1e-2);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ExactnessTest,
                         ::testing::Values(TokenDtype::kF32, TokenDtype::kBF16),
                         [](const auto& info) { return std::string(TokenDtypeName(info.param)); });

}  // namespace
}  // namespace attnsearch
