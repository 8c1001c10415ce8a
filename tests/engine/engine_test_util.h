// Helpers for the engine tests: seeded documents and the exhaustive
// reference ranking that Search is held to.
#ifndef ATTNSEARCH_TESTS_ENGINE_ENGINE_TEST_UTIL_H_
#define ATTNSEARCH_TESTS_ENGINE_ENGINE_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/types.h"
#include "core/vector_math.h"
#include "engine/collection.h"
#include "gtest/gtest.h"
#include "rerank/reference.h"
#include "test_util.h"

namespace attnsearch::testing {

// out (dim values) = centre + noise / √dim per value, normalised: a token
// row near a cluster centre, as trained embeddings cluster.
inline void NoisyUnitRow(const float* centre, uint32_t dim, std::normal_distribution<float>& noise,
                         std::mt19937& rng, float* out) {
  float norm = 0;
  for (uint32_t t = 0; t < dim; ++t) {
    out[t] = centre[t] + noise(rng) / std::sqrt(float(dim));
    norm += out[t] * out[t];
  }
  for (uint32_t t = 0; t < dim; ++t) out[t] /= std::sqrt(norm);
}

// A document "<prefix><i>" with unit token rows (token count drawn from
// [min_tokens, max_tokens]) and no pooled vector (the engine pools them).
inline Document MakeDoc(std::mt19937& rng, const std::string& id, uint32_t dim, uint32_t min_tokens,
                        uint32_t max_tokens) {
  Document d;
  d.id = id;
  d.num_tokens = std::uniform_int_distribution<uint32_t>(min_tokens, max_tokens)(rng);
  d.tokens = RandomUnitRows(rng, d.num_tokens, dim);
  d.text = "text of " + id;
  return d;
}

// Rounds every value through bf16, as bf16 storage does.
inline std::vector<float> RoundBf16(std::vector<float> v) {
  for (float& x : v) x = Bf16ToFloat(FloatToBf16(x));
  return v;
}

struct RefHit {
  std::string id;
  double score;
};

// The exact ranking of `docs` for a query (uniform weights), best first.
inline std::vector<RefHit> ReferenceRanking(const std::vector<Document>& docs,
                                            const std::vector<float>& query, uint32_t m,
                                            uint32_t dim, RerankMode mode, float tau, bool bf16) {
  std::vector<float> w(m, 1.f / float(m));
  const std::vector<float> q = bf16 ? RoundBf16(query) : query;
  std::vector<RefHit> out;
  for (const Document& d : docs) {
    const std::vector<float> t = bf16 ? RoundBf16(d.tokens) : d.tokens;
    out.push_back(
        {d.id, ReferenceScore(q.data(), m, w.data(), t.data(), d.num_tokens, dim, mode, tau)});
  }
  std::sort(out.begin(), out.end(),
            [](const RefHit& a, const RefHit& b) { return a.score > b.score; });
  return out;
}

// The ids of `q`'s hits on `c`, best first (none, with a test failure, when
// the search fails).
inline std::vector<std::string> SearchIds(const Collection& c, const SearchQuery& q) {
  auto r = c.Search(q);
  EXPECT_TRUE(r.ok()) << r.status();
  std::vector<std::string> ids;
  if (r.ok()) {
    for (const auto& h : r->hits) ids.push_back(h.id);
  }
  return ids;
}

}  // namespace attnsearch::testing

#endif  // ATTNSEARCH_TESTS_ENGINE_ENGINE_TEST_UTIL_H_
