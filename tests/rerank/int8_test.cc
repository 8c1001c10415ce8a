// int8 token storage: the codec's round trip, the reranker's s8 matmul
// against the reference on the same quantized values, and how often bf16 and
// int8 keep f32's top 10.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "core/vector_math.h"
#include "rerank/reference.h"
#include "rerank/reranker.h"
#include "storage/codec.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using testing::RandomUnitRows;

TEST(Int8Test, QuantizeBoundsTheErrorByHalfAStep) {
  std::mt19937 rng(1);
  const std::vector<float> x = RandomUnitRows(rng, 1, 300);
  std::vector<int8_t> q(x.size());
  const float scale = QuantizeInt8(x.data(), q.data(), x.size());
  float max_abs = 0.f;
  for (float v : x) max_abs = std::max(max_abs, std::fabs(v));
  EXPECT_FLOAT_EQ(scale, max_abs / 127.f);
  std::vector<float> back(x.size());
  DequantizeInt8(q.data(), scale, back.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(back[i] - x[i]), scale * 0.5f + 1e-7f);
  std::vector<float> zeros(8, 0.f);
  std::vector<int8_t> qz(8, 5);
  EXPECT_EQ(QuantizeInt8(zeros.data(), qz.data(), 8), 0.f);
  EXPECT_EQ(qz, std::vector<int8_t>(8, 0));
}

// Values are rounded to the nearest step, ties to even, as nearbyint does.
TEST(Int8Test, QuantizeRoundsHalfwayToEven) {
  const std::vector<float> x = {127.f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 126.5f, -3.49f, 0.f};
  std::vector<int8_t> q(x.size());
  EXPECT_EQ(QuantizeInt8(x.data(), q.data(), x.size()), 1.f);
  EXPECT_EQ(q, (std::vector<int8_t>{127, 0, 2, 2, 0, -2, 126, -3, 0}));
  std::mt19937 rng(5);
  const std::vector<float> r = RandomUnitRows(rng, 1, 1000);
  std::vector<int8_t> got(r.size());
  QuantizeInt8(r.data(), got.data(), r.size());
  float max_abs = 0.f;
  for (float v : r) max_abs = std::max(max_abs, std::fabs(v));
  for (size_t i = 0; i < r.size(); ++i) {
    ASSERT_EQ(got[i], int8_t(std::nearbyint(double(r[i]) * (127.0 / double(max_abs))))) << i;
  }
  // Every length (the vector path's partial tails), with a NaN and an
  // infinity among the values.
  for (size_t n = 1; n <= 40; ++n) {
    std::vector<float> x = RandomUnitRows(rng, 1, uint32_t(n));
    if (n > 3) {
      x[1] = std::numeric_limits<float>::quiet_NaN();
      x[n - 1] = -std::numeric_limits<float>::infinity();
    }
    float top = 0.f;
    for (float v : x) {
      if (std::isfinite(v)) top = std::max(top, std::fabs(v));
    }
    std::vector<int8_t> out(n);
    EXPECT_FLOAT_EQ(QuantizeInt8(x.data(), out.data(), n), top / 127.f);
    for (size_t i = 0; i < n; ++i) {
      const double want = std::nearbyint(double(x[i]) * (127.0 / double(top)));
      ASSERT_EQ(out[i], std::isnan(want) ? 0 : int8_t(std::clamp(want, -127.0, 127.0)))
          << "n " << n << " i " << i;
    }
  }
}

TEST(Int8Test, QuantizeIsDefinedForNonFiniteAndSubnormalRows) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {0.5f, -1.f, nan, inf, -inf, 0.25f};
  std::vector<int8_t> q(x.size());
  EXPECT_FLOAT_EQ(QuantizeInt8(x.data(), q.data(), x.size()), 1.f / 127.f);
  EXPECT_EQ(q, (std::vector<int8_t>{64, -127, 0, 127, -127, 32}));

  // The smallest subnormals: 127 / max|x| would overflow a float.
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<float> t = {tiny, -2 * tiny, 0.f};
  std::vector<int8_t> qt(t.size());
  const float scale = QuantizeInt8(t.data(), qt.data(), t.size());
  EXPECT_EQ(qt, (std::vector<int8_t>{64, -127, 0}));
  EXPECT_GE(scale, 0.f);
  EXPECT_LE(scale, tiny);

  const std::vector<float> all_nan(4, nan);
  std::vector<int8_t> qn(4, 9);
  EXPECT_EQ(QuantizeInt8(all_nan.data(), qn.data(), 4), 0.f);
  EXPECT_EQ(qn, std::vector<int8_t>(4, 0));
}

TEST(Int8Test, CodecRoundTripAndSize) {
  std::mt19937 rng(2);
  const uint32_t dim = 24, rows = 5;
  const std::vector<float> t = RandomUnitRows(rng, rows, dim);
  const std::string v = codec::EncodeTokens(t.data(), rows, dim, TokenDtype::kInt8);
  EXPECT_EQ(v.size(), 4 + rows * (dim + 4));
  EXPECT_EQ(TokenRowBytes(TokenDtype::kInt8, dim), dim + 4);
  std::vector<float> back;
  uint32_t got_rows = 0;
  ASSERT_TRUE(codec::DecodeTokens(v, dim, TokenDtype::kInt8, &back, &got_rows).ok());
  ASSERT_EQ(got_rows, rows);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(back[i], t[i], 1.f / 127.f);
  EXPECT_FALSE(codec::TokenRows(v.substr(0, v.size() - 1), dim, TokenDtype::kInt8).ok());
}

// Candidates encoded by the codec, laid out as DocStore::GetTokens does.
struct Int8Block {
  std::vector<int8_t> data;
  std::vector<float> scales, dequantized;
  std::vector<uint32_t> rows;
  std::vector<size_t> offsets;
  CandidateTokens View() const {
    return {data.data(), scales.size(), rows.data(), offsets.data(), rows.size(), scales.data()};
  }
};

Int8Block MakeBlock(const std::vector<std::vector<float>>& docs, uint32_t dim) {
  Int8Block b;
  for (const auto& d : docs) {
    const uint32_t n = uint32_t(d.size() / dim);
    const std::string v = codec::EncodeTokens(d.data(), n, dim, TokenDtype::kInt8);
    b.offsets.push_back(b.scales.size());
    b.rows.push_back(n);
    const auto* sc = reinterpret_cast<const float*>(codec::TokenScales(v));
    b.scales.insert(b.scales.end(), sc, sc + n);
    const auto* el = reinterpret_cast<const int8_t*>(codec::TokenData(v, TokenDtype::kInt8, n));
    b.data.insert(b.data.end(), el, el + size_t(n) * dim);
    std::vector<float> deq;
    uint32_t rows;
    EXPECT_TRUE(codec::DecodeTokens(v, dim, TokenDtype::kInt8, &deq, &rows).ok());
    b.dequantized.insert(b.dequantized.end(), deq.begin(), deq.end());
  }
  return b;
}

TEST(Int8Test, ScoreMatchesReferenceOnQuantizedValues) {
  std::mt19937 rng(3);
  const uint32_t dim = 64;
  auto reranker = Reranker::Create(dim, TokenDtype::kInt8, RerankerOptions{});
  ASSERT_TRUE(reranker.ok()) << reranker.status();
  for (size_t count : {1u, 9u, 300u}) {
    std::vector<std::vector<float>> docs;
    for (size_t c = 0; c < count; ++c) docs.push_back(RandomUnitRows(rng, 1 + rng() % 40, dim));
    const Int8Block b = MakeBlock(docs, dim);
    const uint32_t m = 1 + rng() % 16;
    const std::vector<float> q = RandomUnitRows(rng, m, dim);
    std::vector<float> w(m, 1.f / float(m));
    // The query as the s8 matmul sees it: one scale per query token.
    std::vector<int8_t> q8(q.size());
    std::vector<float> qd(q.size());
    for (uint32_t i = 0; i < m; ++i) {
      const float qs = QuantizeInt8(q.data() + i * dim, q8.data() + i * dim, dim);
      DequantizeInt8(q8.data() + i * dim, qs, qd.data() + i * dim, dim);
    }
    for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
      const RerankQuery rq{q.data(), m, w.data(), mode, 0.1f};
      std::vector<float> scores(count);
      ASSERT_TRUE((*reranker)->Score(rq, b.View(), scores.data()).ok());
      for (size_t c = 0; c < count; ++c) {
        const double want =
            ReferenceScore(qd.data(), m, w.data(), b.dequantized.data() + b.offsets[c] * dim,
                           b.rows[c], dim, mode, 0.1f);
        EXPECT_NEAR(scores[c], want, 1e-4) << "count " << count << " candidate " << c;
        std::vector<TokenEvidence> ev;
        ASSERT_TRUE((*reranker)
                        ->Explain(rq, b.data.data() + b.offsets[c] * dim, b.rows[c], &ev,
                                  b.scales.data() + b.offsets[c])
                        .ok());
        float sum = 0.f;
        for (const auto& e : ev) sum += e.contribution;
        EXPECT_NEAR(sum, scores[c], 1e-4);
      }
    }
  }
}

// Over 1,000 random queries against clustered documents: of the 10,000
// top-10 positions, the fraction holding a document of f32's top 10 (the
// set kept), and the fraction holding the very same document (the order
// kept, which also counts swaps of near-ties).
// On AMX or AVX-512 VNNI machines Score and Explain compute each
// candidate's similarities in L1, in tiles or in registers
// (RerankerOptions::tile_kernel); elsewhere, or with the option off, through
// oneDNN's matmul pieces. Both sum the same int8 products exactly and reduce
// them alike: the scores are equal to the bit, and so is the evidence.
// (Without either, as under ONEDNN_MAX_CPU_ISA=AVX2, both rerankers take
// the matmul path.) m = 70 takes more column blocks than the VNNI kernel
// holds in registers at once; the row counts cover its partial blocks.
TEST(Int8Test, TileKernelEqualsTheMatmulPath) {
  std::mt19937 rng(11);
  for (uint32_t dim : {64u, 128u, 100u}) {
    for (uint32_t m : {1u, 16u, 20u, 33u, 70u}) {
      SCOPED_TRACE(::testing::Message() << "dim " << dim << " m " << m);
      std::vector<std::vector<float>> docs;
      for (uint32_t n : {1u, 15u, 16u, 17u, 0u, 32u, 180u, 1500u, 3u}) {
        docs.push_back(RandomUnitRows(rng, n, dim));
      }
      const Int8Block block = MakeBlock(docs, dim);
      const std::vector<float> q = RandomUnitRows(rng, m, dim);
      std::vector<float> w(m, 1.f / float(m));
      RerankerOptions tiles, matmul;
      matmul.tile_kernel = false;
      auto a = Reranker::Create(dim, TokenDtype::kInt8, tiles);
      auto b = Reranker::Create(dim, TokenDtype::kInt8, matmul);
      ASSERT_TRUE(a.ok() && b.ok());
      for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
        const RerankQuery query{q.data(), m, w.data(), mode, 0.05f};
        std::vector<float> sa(docs.size()), sb(docs.size());
        ASSERT_TRUE((*a)->Score(query, block.View(), sa.data()).ok());
        ASSERT_TRUE((*b)->Score(query, block.View(), sb.data()).ok());
        EXPECT_EQ(sa, sb);
        EXPECT_EQ(sa[4], -std::numeric_limits<float>::infinity());
        for (size_t c = 0; c < docs.size(); ++c) {
          if (block.rows[c] == 0) continue;
          const double want = ReferenceScore(q.data(), m, w.data(),
                                             block.dequantized.data() + block.offsets[c] * dim,
                                             block.rows[c], dim, mode, 0.05f);
          EXPECT_NEAR(sa[c], want, 0.02) << "candidate " << c;
        }
        std::vector<std::vector<TokenEvidence>> ea, eb;
        ASSERT_TRUE((*a)->Explain(query, block.View(), &ea).ok());
        ASSERT_TRUE((*b)->Explain(query, block.View(), &eb).ok());
        ASSERT_EQ(ea.size(), eb.size());
        for (size_t c = 0; c < ea.size(); ++c) {
          ASSERT_EQ(ea[c].size(), eb[c].size()) << "candidate " << c;
          float sum = 0.f;
          for (size_t i = 0; i < ea[c].size(); ++i) {
            EXPECT_EQ(ea[c][i].doc_token, eb[c][i].doc_token);
            EXPECT_FLOAT_EQ(ea[c][i].contribution, eb[c][i].contribution);
            sum += ea[c][i].contribution;
          }
          if (block.rows[c] > 0) EXPECT_NEAR(sum, sa[c], 1e-4f * std::max(1.f, std::fabs(sa[c])));
        }
        // The maps, with the evidence from the same pass: equal too, and
        // the evidence is Explain's.
        std::vector<std::vector<float>> ma, mb;
        std::vector<std::vector<TokenEvidence>> ma_ev;
        ASSERT_TRUE((*a)->AttentionMaps(query, block.View(), &ma, &ma_ev).ok());
        ASSERT_TRUE((*b)->AttentionMaps(query, block.View(), &mb).ok());
        ASSERT_EQ(ma.size(), docs.size());
        ASSERT_EQ(mb.size(), docs.size());
        for (size_t c = 0; c < docs.size(); ++c) {
          ASSERT_EQ(ma[c].size(), size_t(m) * block.rows[c]) << "candidate " << c;
          ASSERT_EQ(mb[c].size(), ma[c].size()) << "candidate " << c;
          for (size_t x = 0; x < ma[c].size(); ++x) {
            ASSERT_FLOAT_EQ(ma[c][x], mb[c][x]) << "candidate " << c << " cell " << x;
          }
          ASSERT_EQ(ma_ev[c].size(), ea[c].size());
          for (size_t i = 0; i < ea[c].size(); ++i) {
            EXPECT_EQ(ma_ev[c][i].doc_token, ea[c][i].doc_token);
            EXPECT_EQ(ma_ev[c][i].contribution, ea[c][i].contribution);
          }
        }
      }
    }
  }
}

TEST(Int8Test, Bf16AndInt8KeepTheF32Top10) {
  std::mt19937 rng(4);
  const uint32_t dim = 128, kDocs = 400, kQueries = 1000;
  // Documents around 20 topics, 8..48 tokens each.
  const std::vector<float> centres = RandomUnitRows(rng, 20, dim);
  std::normal_distribution<float> noise(0.f, 0.08f);
  auto around = [&](size_t topic) {
    std::vector<float> v(centres.begin() + topic * dim, centres.begin() + (topic + 1) * dim);
    for (float& x : v) x += noise(rng);
    NormalizeInPlace(v.data(), dim);
    return v;
  };
  std::vector<std::vector<float>> docs;
  for (uint32_t d = 0; d < kDocs; ++d) {
    const size_t topic = rng() % 20, n = 8 + rng() % 41;
    std::vector<float> t;
    for (size_t j = 0; j < n; ++j) {
      auto v = around(rng() % 4 == 0 ? rng() % 20 : topic);
      t.insert(t.end(), v.begin(), v.end());
    }
    docs.push_back(std::move(t));
  }
  // The same documents in the three dtypes.
  std::vector<uint32_t> rows;
  std::vector<size_t> offsets;
  std::vector<float> f32;
  for (const auto& d : docs) {
    offsets.push_back(f32.size() / dim);
    rows.push_back(uint32_t(d.size() / dim));
    f32.insert(f32.end(), d.begin(), d.end());
  }
  std::vector<uint16_t> bf16(f32.size());
  FloatToBf16(f32.data(), bf16.data(), f32.size());
  const Int8Block i8 = MakeBlock(docs, dim);
  auto r32 = Reranker::Create(dim, TokenDtype::kF32, {});
  auto r16 = Reranker::Create(dim, TokenDtype::kBF16, {});
  auto r8 = Reranker::Create(dim, TokenDtype::kInt8, {});
  ASSERT_TRUE(r32.ok() && r16.ok() && r8.ok());
  const CandidateTokens c32{f32.data(), f32.size() / dim, rows.data(), offsets.data(), kDocs};
  const CandidateTokens c16{bf16.data(), f32.size() / dim, rows.data(), offsets.data(), kDocs};
  auto top10 = [](const std::vector<float>& s) {
    std::vector<uint32_t> idx(s.size());
    for (uint32_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + 10, idx.end(),
                      [&](uint32_t a, uint32_t b) { return s[a] > s[b]; });
    idx.resize(10);
    return idx;
  };
  size_t same16 = 0, same8 = 0, kept16 = 0, kept8 = 0;
  for (uint32_t qi = 0; qi < kQueries; ++qi) {
    const uint32_t m = 4 + rng() % 29;
    std::vector<float> q;
    const size_t topic = rng() % 20;
    for (uint32_t i = 0; i < m; ++i) {
      auto v = around(rng() % 3 == 0 ? rng() % 20 : topic);
      q.insert(q.end(), v.begin(), v.end());
    }
    std::vector<float> w(m, 1.f / float(m));
    const RerankQuery rq{q.data(), m, w.data(), RerankMode::kAttention, 0.1f};
    std::vector<float> s32(kDocs), s16(kDocs), s8(kDocs);
    ASSERT_TRUE((*r32)->Score(rq, c32, s32.data()).ok());
    ASSERT_TRUE((*r16)->Score(rq, c16, s16.data()).ok());
    ASSERT_TRUE((*r8)->Score(rq, i8.View(), s8.data()).ok());
    const auto t32 = top10(s32), t16 = top10(s16), t8 = top10(s8);
    for (int p = 0; p < 10; ++p) {
      same16 += t16[p] == t32[p];
      same8 += t8[p] == t32[p];
      kept16 += std::count(t32.begin(), t32.end(), t16[p]);
      kept8 += std::count(t32.begin(), t32.end(), t8[p]);
    }
  }
  const double total = kQueries * 10.0;
  std::printf("top-10 set kept: bf16 %.4f, int8 %.4f; same order: bf16 %.4f, int8 %.4f\n",
              kept16 / total, kept8 / total, same16 / total, same8 / total);
  EXPECT_GE(kept16 / total, 0.98);
  EXPECT_GE(kept8 / total, 0.98);
}

}  // namespace
}  // namespace attnsearch
