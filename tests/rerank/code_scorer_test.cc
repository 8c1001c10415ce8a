// Scoring on residual codes: the AVX-512 decodings (code bits gathered by
// BITALG's bit shuffle, or by pext) against the portable one,
// the scores against the reference reranker on exactly the values the
// scorer sees, and against the codec's float decoding for a trained codec.
#include "rerank/code_scorer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "ann/residual_codec.h"
#include "core/vector_math.h"
#include "rerank/reference.h"

namespace attnsearch {
namespace {

// A code book of random unit centroids and increasing bucket values, with a
// gain byte when gain_max > 0.
Int8CodeBook RandomBook(std::mt19937& rng, uint32_t dim, uint32_t bits, uint32_t k,
                        float gain_max = 0.f) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> centroids(size_t(k) * dim);
  for (float& x : centroids) x = g(rng);
  for (uint32_t c = 0; c < k; ++c) NormalizeInPlace(centroids.data() + size_t(c) * dim, dim);
  const uint32_t levels = 1u << bits;
  std::vector<float> values(size_t(dim) * levels);
  for (uint32_t t = 0; t < dim; ++t) {
    for (uint32_t b = 0; b < levels; ++b) {
      values[size_t(t) * levels + b] =
          0.05f * (float(b) - 0.5f * float(levels - 1)) + 0.01f * g(rng);
    }
  }
  auto book = Int8CodeBook::Make(dim, bits, 2, centroids, values, gain_max);
  EXPECT_TRUE(book.ok()) << book.status();
  return *std::move(book);
}

std::vector<uint8_t> RandomCodes(std::mt19937& rng, const Int8CodeBook& book, size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<uint32_t> id(0, book.num_centroids - 1);
  std::vector<uint8_t> codes(n * book.code_bytes());
  for (size_t i = 0; i < n; ++i) {
    uint8_t* code = codes.data() + i * book.code_bytes();
    const uint32_t k = id(rng);
    std::memcpy(code, &k, book.id_bytes);
    for (size_t j = book.id_bytes; j < book.code_bytes(); ++j) code[j] = uint8_t(byte(rng));
  }
  return codes;
}

// Where each of `rows` candidates' codes start when they lie back to back;
// *total gets their sum.
std::vector<size_t> Offsets(const std::vector<uint32_t>& rows, size_t* total) {
  std::vector<size_t> offsets;
  *total = 0;
  for (uint32_t r : rows) {
    offsets.push_back(*total);
    *total += r;
  }
  return offsets;
}

TEST(CodeScorerTest, VectorDecodingEqualsPortable) {
  std::mt19937 rng(1);
  for (float gain_max : {0.f, 0.9f}) {
    for (uint32_t dim : {8u, 32u, 64u, 96u, 100u, 128u, 200u}) {
      for (uint32_t bits : {1u, 2u, 4u}) {
        SCOPED_TRACE(testing::Message()
                     << "dim " << dim << " bits " << bits << " gain " << gain_max);
        const Int8CodeBook book = RandomBook(rng, dim, bits, 50, gain_max);
        const size_t n = 37;
        const std::vector<uint8_t> codes = RandomCodes(rng, book, n);
        std::vector<int8_t> fast(n * dim), pext(n * dim), avx2(n * dim), slow(n * dim);
        book.Decode(codes.data(), n, fast.data());
        book.DecodeWithoutBitalg(codes.data(), n, pext.data());
        book.DecodeAvx2Version(codes.data(), n, avx2.data());
        book.DecodePortable(codes.data(), n, slow.data());
        ASSERT_EQ(fast, slow);
        ASSERT_EQ(pext, slow);
        ASSERT_EQ(avx2, slow);
        // The portable decoding is centroid (times gain/256, rounded) + level,
        // in steps.
        const uint32_t mask = (1u << bits) - 1;
        const size_t gain_bytes = gain_max > 0.f ? 1 : 0;
        for (size_t i = 0; i < n; ++i) {
          const uint8_t* code = codes.data() + i * book.code_bytes();
          uint32_t k = 0;
          std::memcpy(&k, code, 2);
          for (uint32_t t = 0; t < dim; ++t) {
            const size_t bit = size_t(t) * bits;
            const uint32_t b = (code[2 + gain_bytes + bit / 8] >> (bit % 8)) & mask;
            double c = book.centroids[size_t(k) * dim + t];
            if (gain_bytes > 0) c = std::floor(c * code[2] / 256.0 + 0.5);
            const int want = std::clamp(int(c) + int(book.levels[size_t(b) * dim + t]), -128, 127);
            ASSERT_EQ(slow[i * dim + t], want) << "token " << i << " dim " << t;
          }
        }
      }
    }
  }
}

// The scorer's scores equal the reference reranker's on the values it sees:
// the decoded bytes, and the query in steps (q_i[t]·σ_t) quantized to s8
// with one scale per query token, as the int8 reranker quantizes it.
TEST(CodeScorerTest, ScoresEqualTheReferenceOnTheDecodedValues) {
  std::mt19937 rng(2);
  const uint32_t dim = 128, m = 20;
  for (const auto& [bits, gain_max] :
       std::vector<std::pair<uint32_t, float>>{{1, 0.f}, {2, 0.f}, {4, 0.f}, {2, 1.2f}}) {
    SCOPED_TRACE(testing::Message() << "bits " << bits << " gain " << gain_max);
    const Int8CodeBook book = RandomBook(rng, dim, bits, 200, gain_max);
    std::vector<uint32_t> rows = {5, 1, 180, 64, 33, 1500, 2, 90};
    size_t total = 0;
    const std::vector<size_t> offsets = Offsets(rows, &total);
    const std::vector<uint8_t> codes = RandomCodes(rng, book, total);
    std::normal_distribution<float> g(0.f, 1.f);
    std::vector<float> q(size_t(m) * dim), w(m, 1.f / m);
    for (float& x : q) x = g(rng);
    for (uint32_t i = 0; i < m; ++i) NormalizeInPlace(q.data() + size_t(i) * dim, dim);
    auto scorer = CodeScorer::Create(book, RerankerOptions());
    ASSERT_TRUE(scorer.ok()) << scorer.status();
    // What the scorer sees.
    std::vector<int8_t> x8(total * dim);
    book.DecodePortable(codes.data(), total, x8.data());
    std::vector<float> docs(x8.begin(), x8.end());
    std::vector<float> seen(q.size());
    for (uint32_t i = 0; i < m; ++i) {
      std::vector<float> stepped(dim);
      for (uint32_t t = 0; t < dim; ++t) stepped[t] = q[size_t(i) * dim + t] * book.dim_scale[t];
      std::vector<int8_t> s8(dim);
      const float scale = QuantizeInt8(stepped.data(), s8.data(), dim);
      DequantizeInt8(s8.data(), scale, seen.data() + size_t(i) * dim, dim);
    }
    for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
      const RerankQuery query{q.data(), m, w.data(), mode, 0.1f};
      const CandidateCodes cand{codes.data(), total, rows.data(), offsets.data(), rows.size()};
      std::vector<float> scores(rows.size());
      ASSERT_TRUE((*scorer)->Score(query, cand, scores.data()).ok());
      for (size_t c = 0; c < rows.size(); ++c) {
        const double want = ReferenceScore(seen.data(), m, w.data(), docs.data() + offsets[c] * dim,
                                           rows[c], dim, mode, 0.1f);
        EXPECT_NEAR(scores[c], want, 1e-5 * std::max(1.0, std::fabs(want))) << "candidate " << c;
      }
    }
  }
}

// The codec's codes of `tokens` (n x dim) scored by CodeScorer for a random
// query, in each mode, against the reference on the codec's float decoding
// (60 candidates of 100 tokens): equal within the int8 steps' rounding.
void ExpectScoresFollowTheFloatDecoding(const ResidualCodec& codec,
                                        const std::vector<float>& tokens, std::mt19937& rng,
                                        const std::vector<RerankMode>& modes) {
  const uint32_t dim = codec.dim(), m = 16;
  const size_t n = tokens.size() / dim;
  auto book = Int8CodeBook::Make(dim, codec.bits(), codec.id_bytes(), codec.centroids(),
                                 codec.bucket_values(), codec.gain_max());
  ASSERT_TRUE(book.ok()) << book.status();
  ASSERT_EQ(book->code_bytes(), codec.code_bytes());
  std::vector<uint8_t> codes(n * codec.code_bytes());
  codec.Encode(tokens.data(), n, codes.data());
  std::vector<float> decoded(tokens.size());
  codec.Decode(codes.data(), n, decoded.data());
  const std::vector<uint32_t> rows(60, 100);
  std::vector<size_t> offsets;
  for (size_t c = 0; c < rows.size(); ++c) offsets.push_back(c * 100);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> q(size_t(m) * dim), w(m, 1.f / m);
  for (float& x : q) x = g(rng);
  for (uint32_t i = 0; i < m; ++i) NormalizeInPlace(q.data() + size_t(i) * dim, dim);
  auto scorer = CodeScorer::Create(*std::move(book), RerankerOptions());
  ASSERT_TRUE(scorer.ok());
  for (RerankMode mode : modes) {
    const RerankQuery query{q.data(), m, w.data(), mode, 0.1f};
    const CandidateCodes cand{codes.data(), n, rows.data(), offsets.data(), rows.size()};
    std::vector<float> scores(rows.size());
    ASSERT_TRUE((*scorer)->Score(query, cand, scores.data()).ok());
    for (size_t c = 0; c < rows.size(); ++c) {
      const double want = ReferenceScore(q.data(), m, w.data(), decoded.data() + offsets[c] * dim,
                                         rows[c], dim, mode, 0.1f);
      EXPECT_NEAR(scores[c], want, 0.01) << "candidate " << c;
    }
  }
}

// With a trained codec, the scores on codes are those of the codec's float
// decoding within the int8 steps' rounding.
TEST(CodeScorerTest, ScoresFollowTheCodecsFloatDecoding) {
  std::mt19937 rng(3);
  const uint32_t dim = 128, n = 6000;
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> tokens(size_t(n) * dim);
  for (float& x : tokens) x = g(rng);
  for (uint32_t i = 0; i < n; ++i) NormalizeInPlace(tokens.data() + size_t(i) * dim, dim);
  auto codec = ResidualCodec::Train(tokens.data(), n, dim, ResidualCodecOptions());
  ASSERT_TRUE(codec.ok()) << codec.status();
  ExpectScoresFollowTheFloatDecoding(**codec, tokens, rng, {RerankMode::kAttention});
}

// A codec with fixed centroids and a gain, on tokens that are scaled
// centroids plus noise: the scores on codes follow its float decoding too.
TEST(CodeScorerTest, GainCodesFollowTheCodecsFloatDecoding) {
  std::mt19937 rng(4);
  const uint32_t dim = 128, k = 300, n = 6000;
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> scale(0.1f, 1.f);
  std::vector<float> table(size_t(k) * dim);
  for (float& x : table) x = g(rng);
  for (uint32_t c = 0; c < k; ++c) NormalizeInPlace(table.data() + size_t(c) * dim, dim);
  std::vector<float> tokens(size_t(n) * dim);
  for (uint32_t i = 0; i < n; ++i) {
    const float s = scale(rng);
    const float* c = table.data() + size_t(i % k) * dim;
    for (uint32_t t = 0; t < dim; ++t) tokens[size_t(i) * dim + t] = s * c[t] + 0.02f * g(rng);
  }
  ResidualCodecOptions options;
  options.gain = true;
  auto codec = ResidualCodec::TrainWithCentroids(tokens.data(), n, dim, table, options);
  ASSERT_TRUE(codec.ok()) << codec.status();
  ExpectScoresFollowTheFloatDecoding(**codec, tokens, rng,
                                     {RerankMode::kAttention, RerankMode::kMaxSim});
}

// Codes read where each candidate's lie (CandidateCodes::sources, as a
// search reads them in the token arena) score as the same codes back to
// back, on AMX tiles (a candidate at a time) and through oneDNN's matmul
// pieces (which span candidates).
TEST(CodeScorerTest, CodesInPlaceScoreAsCodesBackToBack) {
  std::mt19937 rng(6);
  const uint32_t dim = 128, m = 24;
  const Int8CodeBook book = RandomBook(rng, dim, 2, 100, 1.1f);
  const std::vector<uint32_t> rows = {7, 0, 2100, 64, 1, 300};
  size_t total = 0;
  const std::vector<size_t> offsets = Offsets(rows, &total);
  const std::vector<uint8_t> codes = RandomCodes(rng, book, total);
  // Each candidate's codes in a buffer of its own.
  std::vector<std::vector<uint8_t>> apart;
  std::vector<const uint8_t*> sources;
  for (size_t c = 0; c < rows.size(); ++c) {
    const uint8_t* from = codes.data() + offsets[c] * book.code_bytes();
    apart.emplace_back(from, from + rows[c] * book.code_bytes());
  }
  for (const auto& a : apart) sources.push_back(a.data());
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> q(size_t(m) * dim), w(m, 1.f / m);
  for (float& x : q) x = g(rng);
  for (uint32_t i = 0; i < m; ++i) NormalizeInPlace(q.data() + size_t(i) * dim, dim);
  for (bool tiles : {true, false}) {
    SCOPED_TRACE(testing::Message() << "tile kernel " << tiles);
    RerankerOptions options;
    options.tile_kernel = tiles;
    options.max_rows_per_gemm = 1000;  // chunks and pieces across candidates
    auto scorer = CodeScorer::Create(book, options);
    ASSERT_TRUE(scorer.ok()) << scorer.status();
    const RerankQuery query{q.data(), m, w.data(), RerankMode::kAttention, 0.1f};
    const CandidateCodes together{codes.data(), total, rows.data(), offsets.data(), rows.size()};
    const CandidateCodes in_place{nullptr,        total,       rows.data(),
                                  offsets.data(), rows.size(), sources.data()};
    std::vector<float> a(rows.size()), b(rows.size());
    ASSERT_TRUE((*scorer)->Score(query, together, a.data()).ok());
    ASSERT_TRUE((*scorer)->Score(query, in_place, b.data()).ok());
    EXPECT_EQ(a, b);
    EXPECT_EQ(b[1], -std::numeric_limits<float>::infinity());
  }
}

TEST(CodeScorerTest, RefusesBadBooks) {
  const std::vector<float> centroids(128, 0.1f), values(128 * 4, 0.f);
  EXPECT_EQ(Int8CodeBook::Make(128, 3, 2, centroids, values).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Int8CodeBook::Make(64, 2, 2, centroids, values).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Int8CodeBook::Make(128, 2, 3, centroids, values).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Int8CodeBook::Make(128, 2, 2, centroids, values, -1.f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Int8CodeBook::Make(128, 2, 2, centroids, values, std::nanf("")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Int8CodeBook::Make(128, 2, 2, centroids, values).ok());
  EXPECT_TRUE(Int8CodeBook::Make(128, 2, 2, centroids, values, 1.f).ok());
}

}  // namespace
}  // namespace attnsearch
