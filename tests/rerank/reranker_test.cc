#include "rerank/reranker.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/vector_math.h"
#include "gtest/gtest.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "rerank/reference.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using ::attnsearch::testing::RandomUnitRows;

constexpr uint32_t kDim = 64;

// The value the reranker computes with: bf16 storage rounds.
float AsSeen(float v, TokenDtype dtype) {
  return dtype == TokenDtype::kF32 ? v : Bf16ToFloat(FloatToBf16(v));
}

std::vector<float> AsSeen(const std::vector<float>& v, TokenDtype dtype) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = AsSeen(v[i], dtype);
  return out;
}

// A query: m unit token rows and positive weights summing to one.
struct Query {
  uint32_t m = 0;
  std::vector<float> tokens;
  std::vector<float> weights;

  RerankQuery View(RerankMode mode, float temperature) const {
    RerankQuery q;
    q.tokens = tokens.data();
    q.num_tokens = m;
    q.weights = weights.data();
    q.mode = mode;
    q.temperature = temperature;
    return q;
  }
};

Query MakeQuery(std::mt19937& rng, uint32_t m) {
  Query q;
  q.m = m;
  q.tokens = RandomUnitRows(rng, m, kDim);
  std::uniform_real_distribution<float> w(0.2f, 1.f);
  float sum = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    q.weights.push_back(w(rng));
    sum += q.weights.back();
  }
  for (float& x : q.weights) x /= sum;
  return q;
}

// Candidates' token matrices back to back, in f32 and in bf16, with the
// contiguous rows/offsets arrays CandidateTokens needs.
struct Candidates {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<uint32_t> rows;
  std::vector<size_t> offsets;
  size_t total_rows = 0;

  void Append(const std::vector<float>& doc, uint32_t n) {
    offsets.push_back(total_rows);
    rows.push_back(n);
    total_rows += n;
    f32.insert(f32.end(), doc.begin(), doc.end());
    for (float v : doc) bf16.push_back(FloatToBf16(v));
  }
  size_t count() const { return rows.size(); }
  const float* doc_f32(size_t c) const { return f32.data() + offsets[c] * kDim; }
  const void* doc(size_t c, TokenDtype dtype) const {
    if (dtype == TokenDtype::kF32) return f32.data() + offsets[c] * kDim;
    return bf16.data() + offsets[c] * kDim;
  }
  CandidateTokens View(TokenDtype dtype) const {
    CandidateTokens t;
    t.data = dtype == TokenDtype::kF32 ? static_cast<const void*>(f32.data())
                                       : static_cast<const void*>(bf16.data());
    t.total_rows = total_rows;
    t.rows = rows.data();
    t.offsets = offsets.data();
    t.count = rows.size();
    return t;
  }
};

Candidates MakeCandidates(std::mt19937& rng, const std::vector<uint32_t>& row_counts) {
  Candidates c;
  for (uint32_t n : row_counts) c.Append(RandomUnitRows(rng, n, kDim), n);
  return c;
}

std::vector<uint32_t> RandomRowCounts(std::mt19937& rng, size_t count, uint32_t max_rows) {
  std::uniform_int_distribution<uint32_t> rows(1, max_rows);
  std::vector<uint32_t> out;
  for (size_t i = 0; i < count; ++i) out.push_back(rows(rng));
  // Always include one-token documents.
  if (count > 2) out[1] = 1;
  return out;
}

// The oracle: ReferenceScore on the values the reranker works with (for bf16
// both the documents and the query rounded to bf16).
double Oracle(const Query& q, const Candidates& c, size_t k, TokenDtype dtype, RerankMode mode,
              float temperature) {
  const std::vector<float> query = AsSeen(q.tokens, dtype);
  const std::vector<float> doc =
      AsSeen(std::vector<float>(c.doc_f32(k), c.doc_f32(k) + size_t(c.rows[k]) * kDim), dtype);
  return ReferenceScore(query.data(), q.m, q.weights.data(), doc.data(), c.rows[k], kDim, mode,
                        temperature);
}

// The unrounded oracle.
double ExactOracle(const Query& q, const Candidates& c, size_t k, RerankMode mode,
                   float temperature) {
  return ReferenceScore(q.tokens.data(), q.m, q.weights.data(), c.doc_f32(k), c.rows[k], kDim, mode,
                        temperature);
}

std::unique_ptr<Reranker> MakeReranker(TokenDtype dtype, size_t max_rows_per_gemm = 32768) {
  RerankerOptions options;
  options.max_rows_per_gemm = max_rows_per_gemm;
  auto r = Reranker::Create(kDim, dtype, options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(r).value() : nullptr;
}

std::vector<float> ScoreOrDie(const Reranker& r, const RerankQuery& q, const Candidates& c,
                              TokenDtype dtype) {
  std::vector<float> scores(c.count(), std::numeric_limits<float>::quiet_NaN());
  absl::Status s = r.Score(q, c.View(dtype), scores.data());
  EXPECT_TRUE(s.ok()) << s;
  return scores;
}

struct ModeCase {
  RerankMode mode;
  float temperature;
  std::string Name() const {
    return mode == RerankMode::kMaxSim ? std::string("MAXSIM")
                                       : absl::StrCat("ATTENTION(tau=", temperature, ")");
  }
};
const ModeCase kModes[] = {{RerankMode::kAttention, 0.05f},
                           {RerankMode::kAttention, 0.1f},
                           {RerankMode::kAttention, 1.0f},
                           {RerankMode::kMaxSim, 0.1f}};

class RerankerTest : public ::testing::TestWithParam<TokenDtype> {
 protected:
  TokenDtype dtype() const { return GetParam(); }
  bool bf16() const { return dtype() == TokenDtype::kBF16; }
  // Against the oracle on the values the reranker sees.
  double tolerance() const { return bf16() ? 1e-3 : 1e-4; }
  // Against the unrounded f32 oracle.
  double loose_tolerance() const { return bf16() ? 1e-2 : 1e-4; }

  // Scores every candidate and compares with both oracles.
  void CheckAgainstOracle(const Reranker& r, const Query& q, const Candidates& c) {
    for (const ModeCase& mc : kModes) {
      SCOPED_TRACE(mc.Name());
      const std::vector<float> scores = ScoreOrDie(r, q.View(mc.mode, mc.temperature), c, dtype());
      for (size_t k = 0; k < c.count(); ++k) {
        const double want = Oracle(q, c, k, dtype(), mc.mode, mc.temperature);
        ASSERT_NEAR(scores[k], want, tolerance())
            << "candidate " << k << " of " << c.count() << " rows " << c.rows[k] << " query tokens "
            << q.m;
        ASSERT_NEAR(scores[k], ExactOracle(q, c, k, mc.mode, mc.temperature), loose_tolerance())
            << "candidate " << k;
      }
    }
  }
};

TEST_P(RerankerTest, MatchesReferenceForVariousCandidateCounts) {
  auto r = MakeReranker(dtype());
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->dim(), kDim);
  EXPECT_EQ(r->dtype(), dtype());
  std::mt19937 rng(bf16() ? 101 : 100);
  std::uniform_int_distribution<uint32_t> query_len(2, 12);
  for (size_t count : {size_t{1}, size_t{7}, size_t{300}}) {
    for (int trial = 0; trial < 3; ++trial) {
      SCOPED_TRACE(absl::StrCat(count, " candidates, trial ", trial));
      // Trial 0 uses a one-token query.
      const Query q = MakeQuery(rng, trial == 0 ? 1 : query_len(rng));
      const Candidates c = MakeCandidates(rng, RandomRowCounts(rng, count, 40));
      CheckAgainstOracle(*r, q, c);
    }
  }
}

TEST_P(RerankerTest, OneTokenDocuments) {
  auto r = MakeReranker(dtype());
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(102);
  const Query q = MakeQuery(rng, 5);
  const Candidates c = MakeCandidates(rng, std::vector<uint32_t>(20, 1));
  CheckAgainstOracle(*r, q, c);
  // With one document token every mode reduces to the weighted similarity.
  const auto att = ScoreOrDie(*r, q.View(RerankMode::kAttention, 0.1f), c, dtype());
  const auto max = ScoreOrDie(*r, q.View(RerankMode::kMaxSim, 0.1f), c, dtype());
  for (size_t k = 0; k < c.count(); ++k) EXPECT_NEAR(att[k], max[k], 1e-6);
}

TEST_P(RerankerTest, ChunksAcrossMaxRowsPerGemm) {
  auto r = MakeReranker(dtype(), /*max_rows_per_gemm=*/50);
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(103);
  for (int trial = 0; trial < 3; ++trial) {
    SCOPED_TRACE(absl::StrCat("trial ", trial));
    const Query q = MakeQuery(rng, trial == 0 ? 1 : 6);
    // Many candidates of up to 40 rows: chunk boundaries fall everywhere.
    CheckAgainstOracle(*r, q, MakeCandidates(rng, RandomRowCounts(rng, 120, 40)));
  }
  // Candidates with more rows than a chunk, alone, first, in the middle and
  // last.
  const Query q = MakeQuery(rng, 4);
  for (const std::vector<uint32_t>& counts :
       {std::vector<uint32_t>{130}, std::vector<uint32_t>{51, 10, 20},
        std::vector<uint32_t>{10, 120, 30, 45, 5}, std::vector<uint32_t>{49, 1, 50, 50, 77},
        std::vector<uint32_t>{25, 25, 25, 200}}) {
    SCOPED_TRACE(absl::StrCat("rows ", counts[0], ", ", counts.size(), " candidates"));
    CheckAgainstOracle(*r, q, MakeCandidates(rng, counts));
  }
  // Chunked and unchunked scoring agree.
  auto whole = MakeReranker(dtype());
  ASSERT_NE(whole, nullptr);
  const Candidates c = MakeCandidates(rng, RandomRowCounts(rng, 80, 40));
  for (const ModeCase& mc : kModes) {
    const auto a = ScoreOrDie(*r, q.View(mc.mode, mc.temperature), c, dtype());
    const auto b = ScoreOrDie(*whole, q.View(mc.mode, mc.temperature), c, dtype());
    for (size_t k = 0; k < c.count(); ++k) EXPECT_NEAR(a[k], b[k], 1e-5) << mc.Name();
  }
}

TEST_P(RerankerTest, ZeroRowCandidateScoresMinusInfinity) {
  std::mt19937 rng(104);
  const Query q = MakeQuery(rng, 3);
  for (size_t max_rows : {size_t{50}, size_t{32768}}) {
    auto r = MakeReranker(dtype(), max_rows);
    ASSERT_NE(r, nullptr);
    for (const std::vector<uint32_t>& counts :
         {std::vector<uint32_t>{0}, std::vector<uint32_t>{0, 0}, std::vector<uint32_t>{3, 0, 2},
          std::vector<uint32_t>{0, 60, 0, 7}, std::vector<uint32_t>{40, 10, 0, 0, 30}}) {
      const Candidates c = MakeCandidates(rng, counts);
      for (const ModeCase& mc : kModes) {
        const auto scores = ScoreOrDie(*r, q.View(mc.mode, mc.temperature), c, dtype());
        for (size_t k = 0; k < c.count(); ++k) {
          if (c.rows[k] == 0) {
            EXPECT_EQ(scores[k], -std::numeric_limits<float>::infinity())
                << "candidate " << k << " " << mc.Name();
          } else {
            EXPECT_NEAR(scores[k], Oracle(q, c, k, dtype(), mc.mode, mc.temperature), tolerance())
                << "candidate " << k << " " << mc.Name();
          }
        }
      }
    }
  }
}

// Smallest gap, over query tokens, between the best and second best
// similarity with a document (on the values the reranker sees); infinity for
// a one-row document.
double MinTopTwoGap(const std::vector<float>& query, uint32_t m, const float* doc, uint32_t n,
                    TokenDtype dtype) {
  double min_gap = std::numeric_limits<double>::infinity();
  for (uint32_t i = 0; i < m; ++i) {
    double best = -2, second = -2;
    for (uint32_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (uint32_t k = 0; k < kDim; ++k) {
        s += double(query[i * kDim + k]) * double(AsSeen(doc[j * kDim + k], dtype));
      }
      if (s > best) {
        second = best;
        best = s;
      } else if (s > second) {
        second = s;
      }
    }
    if (n > 1) min_gap = std::min(min_gap, best - second);
  }
  return min_gap;
}

TEST_P(RerankerTest, AttentionAtTinyTemperatureEqualsMaxSim) {
  auto r = MakeReranker(dtype());
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(105);
  const Query q = MakeQuery(rng, 6);
  const std::vector<float> seen_query = AsSeen(q.tokens, dtype());
  // Documents without near-ties: the best similarity of every query token
  // beats the second best by at least 20 temperatures, so the softmax puts
  // all but e^-20 of its weight on the maximum.
  Candidates c;
  std::uniform_int_distribution<uint32_t> rows(1, 30);
  while (c.count() < 60) {
    const uint32_t n = rows(rng);
    const std::vector<float> doc = RandomUnitRows(rng, n, kDim);
    if (MinTopTwoGap(seen_query, q.m, doc.data(), n, dtype()) < 2e-3) continue;
    c.Append(doc, n);
  }
  const auto att = ScoreOrDie(*r, q.View(RerankMode::kAttention, 1e-4f), c, dtype());
  const auto max = ScoreOrDie(*r, q.View(RerankMode::kMaxSim, 1e-4f), c, dtype());
  for (size_t k = 0; k < c.count(); ++k) {
    EXPECT_NEAR(att[k], max[k], 1e-4) << "candidate " << k;
    EXPECT_NEAR(att[k], Oracle(q, c, k, dtype(), RerankMode::kMaxSim, 1.f), tolerance());
  }
}

TEST_P(RerankerTest, ExplainAddsUpToScoreAndPointsAtArgmax) {
  auto r = MakeReranker(dtype());
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(106);
  const double sum_tolerance = bf16() ? 2e-3 : 1e-4;
  for (const ModeCase& mc : kModes) {
    SCOPED_TRACE(mc.Name());
    const Query q = MakeQuery(rng, 7);
    const std::vector<float> seen_query = AsSeen(q.tokens, dtype());
    const Candidates c = MakeCandidates(rng, RandomRowCounts(rng, 12, 30));
    const RerankQuery rq = q.View(mc.mode, mc.temperature);
    const auto scores = ScoreOrDie(*r, rq, c, dtype());
    for (size_t k = 0; k < c.count(); ++k) {
      SCOPED_TRACE(absl::StrCat("candidate ", k, " rows ", c.rows[k]));
      std::vector<TokenEvidence> ev;
      ASSERT_TRUE(r->Explain(rq, c.doc(k, dtype()), c.rows[k], &ev).ok());
      ASSERT_EQ(ev.size(), q.m);
      double sum = 0.0;
      for (uint32_t i = 0; i < q.m; ++i) {
        EXPECT_EQ(ev[i].query_token, i);
        sum += ev[i].contribution;
        // The similarity row of query token i, on the values seen.
        std::vector<double> s(c.rows[k]);
        for (uint32_t j = 0; j < c.rows[k]; ++j) {
          s[j] = 0.0;
          for (uint32_t d = 0; d < kDim; ++d) {
            s[j] += double(seen_query[i * kDim + d]) *
                    double(AsSeen(c.doc_f32(k)[j * kDim + d], dtype()));
          }
        }
        const size_t argmax = size_t(std::max_element(s.begin(), s.end()) - s.begin());
        ASSERT_LT(ev[i].doc_token, c.rows[k]);
        std::vector<double> sorted = s;
        std::sort(sorted.rbegin(), sorted.rend());
        if (sorted.size() < 2 || sorted[0] - sorted[1] > 1e-5) {
          EXPECT_EQ(ev[i].doc_token, argmax) << "query token " << i;
        } else {
          EXPECT_NEAR(s[ev[i].doc_token], sorted[0], 1e-5) << "query token " << i;
        }
        // Its weight: 1 for MAXSIM, the softmax weight of the maximum for
        // ATTENTION.
        double want_weight = 1.0;
        if (mc.mode == RerankMode::kAttention) {
          double z = 0.0;
          for (double v : s) z += std::exp((v - sorted[0]) / mc.temperature);
          want_weight = 1.0 / z;
        }
        EXPECT_NEAR(ev[i].weight, want_weight, 1e-4) << "query token " << i;
        // Each contribution is the one-token reference score.
        const double want_contribution = ReferenceScore(
            seen_query.data() + i * kDim, 1, &q.weights[i],
            AsSeen(std::vector<float>(c.doc_f32(k), c.doc_f32(k) + c.rows[k] * kDim), dtype())
                .data(),
            c.rows[k], kDim, mc.mode, mc.temperature);
        EXPECT_NEAR(ev[i].contribution, want_contribution, 1e-5) << "query token " << i;
      }
      EXPECT_NEAR(sum, scores[k], sum_tolerance);
      EXPECT_NEAR(sum, Oracle(q, c, k, dtype(), mc.mode, mc.temperature), 1e-4);
    }
  }
  // No rows, no evidence.
  const Query q = MakeQuery(rng, 2);
  std::vector<TokenEvidence> ev = {TokenEvidence()};
  ASSERT_TRUE(r->Explain(q.View(RerankMode::kMaxSim, 0.1f), nullptr, 0, &ev).ok());
  EXPECT_TRUE(ev.empty());
}

// ExplainScored gives what Explain gives for the same candidates, from the
// similarities Score kept (one matmul) and, when Score used several matmuls,
// by gathering the chosen candidates' rows; the kept scores equal Score's.
// AttentionMapsScored's maps equal the reference's on the values the
// reranker sees and AttentionMaps' own; the evidence that comes with them is
// Explain's, and each row's weight at its argmax is the evidence's weight.
// 21 query tokens: a full and a partial block of 16.
TEST_P(RerankerTest, ExplainScoredAndAttentionMapsScoredEqualTheirReferences) {
  std::mt19937 rng(131);
  for (size_t max_rows : {size_t{32768}, size_t{40}}) {
    SCOPED_TRACE(absl::StrCat("max_rows_per_gemm ", max_rows));
    auto r = MakeReranker(dtype(), max_rows);
    ASSERT_NE(r, nullptr);
    for (const ModeCase& mc : kModes) {
      SCOPED_TRACE(mc.Name());
      const Query q = MakeQuery(rng, 21);
      const Candidates c = MakeCandidates(rng, RandomRowCounts(rng, 30, 35));
      const RerankQuery rq = q.View(mc.mode, mc.temperature);
      ScoredSimilarities kept;
      std::vector<float> scores(c.count());
      ASSERT_TRUE(r->Score(rq, c.View(dtype()), scores.data(), &kept).ok());
      EXPECT_EQ(kept.valid, max_rows == 32768);
      EXPECT_EQ(scores, ScoreOrDie(*r, rq, c, dtype()));
      const std::vector<size_t> which = {7, 0, 29, 1, 7};
      std::vector<std::vector<TokenEvidence>> got;
      ASSERT_TRUE(r->ExplainScored(rq, c.View(dtype()), kept, which, &got).ok());
      ASSERT_EQ(got.size(), which.size());
      for (size_t i = 0; i < which.size(); ++i) {
        std::vector<TokenEvidence> want;
        ASSERT_TRUE(r->Explain(rq, c.doc(which[i], dtype()), c.rows[which[i]], &want).ok());
        ASSERT_EQ(got[i].size(), want.size());
        for (size_t t = 0; t < want.size(); ++t) {
          EXPECT_EQ(got[i][t].query_token, want[t].query_token);
          EXPECT_EQ(got[i][t].doc_token, want[t].doc_token);
          EXPECT_NEAR(got[i][t].weight, want[t].weight, 1e-5);
          EXPECT_NEAR(got[i][t].contribution, want[t].contribution, 1e-5);
        }
      }
      std::vector<std::vector<float>> maps, all_maps;
      std::vector<std::vector<TokenEvidence>> evidence;
      ASSERT_TRUE(r->AttentionMapsScored(rq, c.View(dtype()), kept, which, &maps, &evidence).ok());
      ASSERT_TRUE(r->AttentionMaps(rq, c.View(dtype()), &all_maps).ok());
      ASSERT_EQ(maps.size(), which.size());
      ASSERT_EQ(evidence.size(), which.size());
      ASSERT_EQ(all_maps.size(), c.count());
      const std::vector<float> query = AsSeen(q.tokens, dtype());
      for (size_t i = 0; i < which.size(); ++i) {
        const size_t k = which[i];
        const uint32_t n = c.rows[k];
        SCOPED_TRACE(absl::StrCat("map of candidate ", k, " of ", n, " rows"));
        const std::vector<float> doc =
            AsSeen(std::vector<float>(c.doc_f32(k), c.doc_f32(k) + size_t(n) * kDim), dtype());
        const std::vector<double> want =
            ReferenceAttention(query.data(), q.m, doc.data(), n, kDim, mc.mode, mc.temperature);
        ASSERT_EQ(maps[i].size(), size_t(q.m) * n);
        for (size_t x = 0; x < want.size(); ++x) {
          ASSERT_NEAR(maps[i][x], want[x], 1e-4) << "cell " << x;
          ASSERT_NEAR(all_maps[k][x], maps[i][x], 1e-5) << "cell " << x;
        }
        std::vector<TokenEvidence> explained;
        ASSERT_TRUE(r->Explain(rq, c.doc(k, dtype()), n, &explained).ok());
        ASSERT_EQ(evidence[i].size(), explained.size());
        for (uint32_t t = 0; t < q.m; ++t) {
          const TokenEvidence& e = evidence[i][t];
          EXPECT_EQ(e.query_token, t);
          EXPECT_EQ(e.doc_token, explained[t].doc_token);
          EXPECT_NEAR(e.weight, explained[t].weight, 1e-5);
          EXPECT_NEAR(e.contribution, explained[t].contribution, 1e-5);
          EXPECT_NEAR(maps[i][size_t(t) * n + e.doc_token], e.weight, 1e-6);
          double sum = 0;
          for (uint32_t j = 0; j < n; ++j) sum += maps[i][size_t(t) * n + j];
          EXPECT_NEAR(sum, 1.0, 1e-5);
        }
      }
    }
  }
  // A candidate index out of range is refused.
  auto r = MakeReranker(dtype());
  const Query q = MakeQuery(rng, 3);
  const Candidates c = MakeCandidates(rng, {4, 5});
  ScoredSimilarities kept;
  std::vector<std::vector<TokenEvidence>> out;
  EXPECT_FALSE(
      r->ExplainScored(q.View(RerankMode::kMaxSim, 0.1f), c.View(dtype()), kept, {2}, &out).ok());
}

TEST_P(RerankerTest, ScoreIsSafeFromSeveralThreads) {
  auto r = MakeReranker(dtype(), /*max_rows_per_gemm=*/256);
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(107);
  constexpr int kThreads = 4;
  constexpr int kIterations = 25;
  // Each thread has its own query, mode and candidates; results are
  // precomputed single-threaded.
  std::vector<Query> queries;
  std::vector<Candidates> cands;
  std::vector<std::vector<float>> expected;
  for (int t = 0; t < kThreads; ++t) {
    queries.push_back(MakeQuery(rng, 1 + 3 * t));
    cands.push_back(MakeCandidates(rng, RandomRowCounts(rng, 50 + 40 * t, 40)));
    const ModeCase& mc = kModes[t % 4];
    expected.push_back(ScoreOrDie(*r, queries[t].View(mc.mode, mc.temperature), cands[t], dtype()));
    for (size_t k = 0; k < cands[t].count(); ++k) {
      ASSERT_NEAR(expected[t][k], Oracle(queries[t], cands[t], k, dtype(), mc.mode, mc.temperature),
                  tolerance());
    }
  }
  std::atomic<int> failures{0};
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const ModeCase& mc = kModes[t % 4];
      const RerankQuery q = queries[t].View(mc.mode, mc.temperature);
      std::vector<float> scores(cands[t].count());
      for (int it = 0; it < kIterations; ++it) {
        if (!r->Score(q, cands[t].View(dtype()), scores.data()).ok()) {
          ++failures;
          continue;
        }
        for (size_t k = 0; k < scores.size(); ++k) {
          if (!(std::fabs(scores[k] - expected[t][k]) <= 1e-5f)) ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_P(RerankerTest, OtherDimensions) {
  // Dimensions that are not multiples of any vector width, scored against
  // the reference with the same rounding of the inputs.
  std::mt19937 rng(109);
  for (uint32_t dim : {1u, 13u, 300u}) {
    SCOPED_TRACE(absl::StrCat("dim ", dim));
    auto r = Reranker::Create(dim, dtype(), RerankerOptions());
    ASSERT_TRUE(r.ok()) << r.status();
    const uint32_t m = 3;
    const std::vector<float> query = RandomUnitRows(rng, m, dim);
    const std::vector<float> weights = {0.5f, 0.3f, 0.2f};
    const std::vector<uint32_t> rows = {4, 1, 9};
    const std::vector<size_t> offsets = {0, 4, 5};
    const std::vector<float> docs = RandomUnitRows(rng, 14, dim);
    std::vector<uint16_t> docs_bf16(docs.size());
    FloatToBf16(docs.data(), docs_bf16.data(), docs.size());
    CandidateTokens c;
    c.data =
        bf16() ? static_cast<const void*>(docs_bf16.data()) : static_cast<const void*>(docs.data());
    c.total_rows = 14;
    c.rows = rows.data();
    c.offsets = offsets.data();
    c.count = 3;
    const std::vector<float> seen_query = AsSeen(query, dtype());
    const std::vector<float> seen_docs = AsSeen(docs, dtype());
    for (const ModeCase& mc : kModes) {
      RerankQuery q;
      q.tokens = query.data();
      q.num_tokens = m;
      q.weights = weights.data();
      q.mode = mc.mode;
      q.temperature = mc.temperature;
      float scores[3];
      ASSERT_TRUE((*r)->Score(q, c, scores).ok());
      for (size_t k = 0; k < 3; ++k) {
        const double want = ReferenceScore(seen_query.data(), m, weights.data(),
                                           seen_docs.data() + offsets[k] * dim, rows[k], dim,
                                           mc.mode, mc.temperature);
        EXPECT_NEAR(scores[k], want, tolerance()) << mc.Name() << " candidate " << k;
      }
    }
  }
}

TEST_P(RerankerTest, OffsetsNeedNotStartAtZero) {
  // Scoring a contiguous sub-range of a block: offsets index rows of `data`.
  auto r = MakeReranker(dtype(), /*max_rows_per_gemm=*/50);
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(110);
  const Query q = MakeQuery(rng, 4);
  const Candidates c = MakeCandidates(rng, RandomRowCounts(rng, 30, 40));
  const RerankQuery rq = q.View(RerankMode::kAttention, 0.1f);
  const auto all = ScoreOrDie(*r, rq, c, dtype());
  CandidateTokens sub = c.View(dtype());
  sub.rows += 11;
  sub.offsets += 11;
  sub.count = 12;
  std::vector<float> scores(sub.count);
  ASSERT_TRUE(r->Score(rq, sub, scores.data()).ok());
  for (size_t k = 0; k < sub.count; ++k) {
    EXPECT_NEAR(scores[k], all[11 + k], 1e-5) << k;
    EXPECT_NEAR(scores[k], Oracle(q, c, 11 + k, dtype(), RerankMode::kAttention, 0.1f),
                tolerance());
  }
}

// Rows made on demand (rows_from) score and explain as rows read in place;
// the rows asked for are exactly the candidates' rows, each once.
TEST_P(RerankerTest, RowsMadeOnDemandEqualRowsInPlace) {
  auto r = MakeReranker(dtype());
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(112);
  const Query q = MakeQuery(rng, 20);
  const Candidates c = MakeCandidates(rng, RandomRowCounts(rng, 40, 120));
  const RerankQuery rq = q.View(RerankMode::kAttention, 0.1f);
  const CandidateTokens in_place = c.View(dtype());
  const size_t row_bytes = size_t(kDim) * TokenDtypeSize(dtype());
  std::vector<int> asked(in_place.total_rows, 0);
  const std::function<void(size_t, size_t, void*)> make = [&](size_t first, size_t n, void* out) {
    for (size_t i = first; i < first + n; ++i) ++asked[i];
    std::memcpy(out, static_cast<const char*>(in_place.data) + first * row_bytes, n * row_bytes);
  };
  CandidateTokens made = in_place;
  made.data = nullptr;
  made.rows_from = &make;
  const std::vector<float> want = ScoreOrDie(*r, rq, c, dtype());
  std::vector<float> got(c.count());
  ASSERT_TRUE(r->Score(rq, made, got.data()).ok());
  for (size_t k = 0; k < c.count(); ++k) EXPECT_EQ(got[k], want[k]) << k;
  EXPECT_EQ(std::count(asked.begin(), asked.end(), 1), long(asked.size()));
  // Explaining chosen candidates without kept similarities gathers rows.
  ScoredSimilarities none;
  std::vector<std::vector<TokenEvidence>> a, b;
  ASSERT_TRUE(r->ExplainScored(rq, in_place, none, {3, 17}, &a).ok());
  ASSERT_TRUE(r->ExplainScored(rq, made, none, {3, 17}, &b).ok());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size());
    for (size_t t = 0; t < a[i].size(); ++t) {
      EXPECT_EQ(a[i][t].doc_token, b[i][t].doc_token);
      EXPECT_EQ(a[i][t].contribution, b[i][t].contribution);
    }
  }
}

// Rows that already lie somewhere, one block per candidate (sources, as in a
// token arena), score as rows back to back; the tile path reads them there
// and asks rows_from for none.
TEST_P(RerankerTest, RowsAtSourcesEqualRowsBackToBack) {
  auto r = MakeReranker(dtype());
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(113);
  const Query q = MakeQuery(rng, 20);
  const Candidates c = MakeCandidates(rng, RandomRowCounts(rng, 40, 120));
  const CandidateTokens in_place = c.View(dtype());
  const size_t row_bytes = size_t(kDim) * TokenDtypeSize(dtype());
  // Each candidate's rows in an allocation of its own.
  std::vector<std::vector<char>> blocks(in_place.count);
  std::vector<const char*> sources(in_place.count);
  for (size_t k = 0; k < in_place.count; ++k) {
    const char* from = static_cast<const char*>(in_place.data) + in_place.offsets[k] * row_bytes;
    blocks[k].assign(from, from + in_place.rows[k] * row_bytes);
    sources[k] = blocks[k].data();
  }
  size_t asked = 0;
  const std::function<void(size_t, size_t, void*)> make = [&](size_t first, size_t n, void* out) {
    asked += n;
    std::memcpy(out, static_cast<const char*>(in_place.data) + first * row_bytes, n * row_bytes);
  };
  CandidateTokens at = in_place;
  at.data = nullptr;
  at.rows_from = &make;
  at.sources = sources.data();
  for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
    const RerankQuery rq = q.View(mode, 0.1f);
    std::vector<float> want(c.count()), got(c.count());
    ASSERT_TRUE(r->Score(rq, in_place, want.data()).ok());
    asked = 0;
    ASSERT_TRUE(r->Score(rq, at, got.data()).ok());
    for (size_t k = 0; k < c.count(); ++k) EXPECT_EQ(got[k], want[k]) << k;
    if (r->tile_kernel()) {
      EXPECT_EQ(asked, 0u);
    } else {
      EXPECT_EQ(asked, in_place.total_rows);
    }
  }
}

TEST_P(RerankerTest, RejectsBadRequests) {
  auto r = MakeReranker(dtype());
  ASSERT_NE(r, nullptr);
  std::mt19937 rng(108);
  const Query q = MakeQuery(rng, 2);
  const Candidates c = MakeCandidates(rng, {3, 4});
  float scores[2];
  EXPECT_EQ(r->Score(q.View(RerankMode::kNone, 0.1f), c.View(dtype()), scores).code(),
            absl::StatusCode::kInvalidArgument);
  RerankQuery empty = q.View(RerankMode::kMaxSim, 0.1f);
  empty.num_tokens = 0;
  EXPECT_EQ(r->Score(empty, c.View(dtype()), scores).code(), absl::StatusCode::kInvalidArgument);
  // No candidates: nothing to do.
  CandidateTokens none;
  EXPECT_TRUE(r->Score(q.View(RerankMode::kMaxSim, 0.1f), none, nullptr).ok());
}

// Enough work for the call to use two threads (each computing a run of
// fixed-shape pieces), with documents longer than a piece, so that
// documents straddle pieces and the two threads' runs.
TEST_P(RerankerTest, LongDocumentsAcrossPiecesAndThreads) {
  RerankerOptions options;
  options.max_threads = 2;
  auto made = Reranker::Create(kDim, dtype(), options);
  ASSERT_TRUE(made.ok()) << made.status();
  std::mt19937 rng(bf16() ? 111 : 110);
  std::uniform_int_distribution<uint32_t> long_rows(900, 2600);
  for (int trial = 0; trial < 2; ++trial) {
    SCOPED_TRACE(absl::StrCat("trial ", trial));
    std::vector<uint32_t> rows(12);
    for (uint32_t& n : rows) n = long_rows(rng);
    rows[3] = 0;
    rows[7] = 1;
    const Query q = MakeQuery(rng, 40);  // 40 query tokens: two lane blocks and a partial one
    const Candidates c = MakeCandidates(rng, rows);
    for (const ModeCase& mc : kModes) {
      SCOPED_TRACE(mc.Name());
      const auto scores = ScoreOrDie(**made, q.View(mc.mode, mc.temperature), c, dtype());
      for (size_t k = 0; k < c.count(); ++k) {
        if (c.rows[k] == 0) {
          EXPECT_EQ(scores[k], -std::numeric_limits<float>::infinity());
          continue;
        }
        ASSERT_NEAR(scores[k], Oracle(q, c, k, dtype(), mc.mode, mc.temperature), tolerance())
            << "candidate " << k << " rows " << c.rows[k];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RerankerTest,
                         ::testing::Values(TokenDtype::kF32, TokenDtype::kBF16),
                         [](const ::testing::TestParamInfo<TokenDtype>& info) {
                           return std::string(TokenDtypeName(info.param));
                         });

// The fixed-shape matmul runs on the best kernel oneDNN has for this CPU
// (as ONEDNN_MAX_CPU_ISA limits it): AMX where there is AMX, else AVX-512
// brgemm where the CPU has AVX-512 with the dtype's dot products; never the
// generic "gemm:jit" there.
TEST(RerankerKernelTest, FixedShapeMatmulRunsOnTheBestKernel) {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  const bool amx = isa == dnnl::cpu_isa::avx512_core_amx;
  for (TokenDtype dtype : {TokenDtype::kF32, TokenDtype::kBF16, TokenDtype::kInt8}) {
    auto r = Reranker::Create(128, dtype, RerankerOptions());
    ASSERT_TRUE(r.ok()) << r.status();
    auto kernel = (*r)->MatmulKernel(32);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    SCOPED_TRACE(std::string(TokenDtypeName(dtype)) + ": " + *kernel);
    const bool has_dot = dtype == TokenDtype::kF32    ? isa >= dnnl::cpu_isa::avx512_core
                         : dtype == TokenDtype::kBF16 ? isa >= dnnl::cpu_isa::avx512_core_bf16
                                                      : isa >= dnnl::cpu_isa::avx512_core_vnni;
    if (amx && dtype != TokenDtype::kF32) {
      EXPECT_NE(kernel->find("amx"), std::string::npos);
    } else if (has_dot) {
      EXPECT_EQ(kernel->rfind("brg:", 0), 0u);
    }
    // Below AVX-512 (bf16) or without VNNI (int8) the rows are widened to
    // f32 and run on the f32 matmul; never otherwise.
    const bool bf16_matmul = (unsigned(isa) & unsigned(dnnl::cpu_isa::avx512_core)) ==
                             unsigned(dnnl::cpu_isa::avx512_core);
    const auto has = [isa](dnnl::cpu_isa want) {
      return (unsigned(isa) & unsigned(want)) == unsigned(want);
    };
    const bool vnni = has(dnnl::cpu_isa::avx512_core_vnni) || has(dnnl::cpu_isa::avx2_vnni);
    EXPECT_EQ((*r)->widened(), dtype == TokenDtype::kBF16   ? !bf16_matmul
                               : dtype == TokenDtype::kInt8 ? !vnni
                                                            : false);
    std::printf("%s on isa %d: %s\n", std::string(TokenDtypeName(dtype)).c_str(), int(isa),
                kernel->c_str());
  }
}

// int8 runs on AMX tiles where oneDNN would run AMX, and in AVX-512 VNNI
// registers where oneDNN would run VNNI (the ctest entries under
// ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 and AVX2 check the other sides); bf16
// and f32 keep oneDNN's matmul (a bf16 tile kernel measured 12-14% slower
// than oneDNN's AMX brgemm, which streams the larger rows better).
TEST(RerankerKernelTest, Int8RunsOnTilesWhereAmxOrVnniIs) {
  const auto isa = unsigned(dnnl::get_effective_cpu_isa());
  const bool amx = isa == unsigned(dnnl::cpu_isa::avx512_core_amx);
  const auto vnni_bits = unsigned(dnnl::cpu_isa::avx512_core_vnni);
  const bool vnni = (isa & vnni_bits) == vnni_bits;
  for (TokenDtype dtype : {TokenDtype::kF32, TokenDtype::kBF16, TokenDtype::kInt8}) {
    auto r = Reranker::Create(kDim, dtype, RerankerOptions());
    ASSERT_TRUE(r.ok()) << r.status();
    const bool on_tiles = dtype == TokenDtype::kInt8 && (amx || vnni);
    EXPECT_EQ((*r)->tile_kernel(), on_tiles) << TokenDtypeName(dtype);
    EXPECT_EQ((*r)->TileKernelName(), !on_tiles ? ""
                                      : amx     ? "amx tiles (TDPBSSD)"
                                                : "avx512 vnni (VPDPBUSD)")
        << TokenDtypeName(dtype);
  }
  RerankerOptions off;
  off.tile_kernel = false;
  auto r = Reranker::Create(kDim, TokenDtype::kInt8, off);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->tile_kernel());
}

TEST(RerankerCreateTest, RejectsBadDim) {
  EXPECT_EQ(Reranker::Create(0, TokenDtype::kF32, RerankerOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reranker::Create(kMaxDim + 1, TokenDtype::kBF16, RerankerOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnsearch
