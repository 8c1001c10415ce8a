// The residual codec against brute-force oracles: nearest centroid, nearest
// bucket value per dimension, errors that shrink with the bit width, the
// byte budget, rankings of decoded tokens against exact ones, and its
// refusals.
#include "ann/residual_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "core/checksum.h"
#include "core/vector_math.h"
#include "rerank/reference.h"

namespace attnsearch {
namespace {

constexpr uint32_t kDim = 128;

// n unit tokens near `clusters` random unit centres; the centres depend on
// `clusters` only (so two calls share them), the tokens on `seed`.
std::vector<float> ClusteredTokens(size_t n, uint32_t clusters, uint32_t seed,
                                   float spread = 0.6f) {
  std::mt19937 centre_rng(clusters);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> centres(size_t(clusters) * kDim);
  for (float& x : centres) x = g(centre_rng);
  std::mt19937 rng(seed);
  for (uint32_t c = 0; c < clusters; ++c) NormalizeInPlace(centres.data() + size_t(c) * kDim, kDim);
  std::uniform_int_distribution<uint32_t> pick(0, clusters - 1);
  std::vector<float> tokens(n * kDim);
  for (size_t i = 0; i < n; ++i) {
    const float* c = centres.data() + size_t(pick(rng)) * kDim;
    float* x = tokens.data() + i * kDim;
    for (uint32_t t = 0; t < kDim; ++t) x[t] = c[t] + spread * g(rng) / std::sqrt(float(kDim));
    NormalizeInPlace(x, kDim);
  }
  return tokens;
}

double SquaredError(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s;
}

TEST(ResidualCodecTest, BytesPerToken) {
  const std::vector<float> train = ClusteredTokens(4096, 32, 1);
  for (uint32_t bits : {1u, 2u, 4u}) {
    ResidualCodecOptions options;
    options.bits = bits;
    auto codec = ResidualCodec::Train(train.data(), 4096, kDim, options);
    ASSERT_TRUE(codec.ok()) << codec.status();
    EXPECT_EQ((*codec)->code_bytes(), 2 + kDim * bits / 8);
  }
  // The budgets at d = 128, centroid id included: 2 bits ≤ 36 B, 1 bit ≤ 20 B.
  ResidualCodecOptions two;
  EXPECT_LE((*ResidualCodec::Train(train.data(), 4096, kDim, two))->code_bytes(), 36u);
  ResidualCodecOptions one;
  one.bits = 1;
  EXPECT_LE((*ResidualCodec::Train(train.data(), 4096, kDim, one))->code_bytes(), 20u);
}

// Each code holds the nearest centroid (largest inner product, checked by
// brute force) and, per dimension, the bucket value nearest to the
// residual; decoding gives centroid + values.
TEST(ResidualCodecTest, CodesAreNearestCentroidAndNearestBuckets) {
  const std::vector<float> train = ClusteredTokens(8192, 40, 2);
  const std::vector<float> held_out = ClusteredTokens(500, 40, 2 + 100);
  for (uint32_t bits : {1u, 2u, 4u}) {
    SCOPED_TRACE(bits);
    ResidualCodecOptions options;
    options.bits = bits;
    auto made = ResidualCodec::Train(train.data(), 8192, kDim, options);
    ASSERT_TRUE(made.ok()) << made.status();
    const ResidualCodec& codec = **made;
    const uint32_t levels = 1u << bits;
    const size_t n = 500;
    std::vector<uint8_t> codes(n * codec.code_bytes());
    std::vector<float> back(n * kDim);
    codec.Encode(held_out.data(), n, codes.data());
    codec.Decode(codes.data(), n, back.data());
    for (size_t i = 0; i < n; ++i) {
      const float* x = held_out.data() + i * kDim;
      const uint32_t id = codec.CentroidOf(codes.data() + i * codec.code_bytes());
      ASSERT_LT(id, codec.num_centroids());
      float best = -std::numeric_limits<float>::infinity();
      for (uint32_t c = 0; c < codec.num_centroids(); ++c) {
        best = std::max(best, Dot(x, codec.centroids().data() + size_t(c) * kDim, kDim));
      }
      EXPECT_NEAR(Dot(x, codec.centroids().data() + size_t(id) * kDim, kDim), best, 1e-5);
      const float* c = codec.centroids().data() + size_t(id) * kDim;
      for (uint32_t t = 0; t < kDim; ++t) {
        const float r = x[t] - c[t];
        const float* v = codec.bucket_values().data() + size_t(t) * levels;
        float nearest = std::numeric_limits<float>::infinity();
        for (uint32_t b = 0; b < levels; ++b) nearest = std::min(nearest, std::fabs(r - v[b]));
        ASSERT_NEAR(std::fabs(back[i * kDim + t] - x[t]), nearest, 1e-6)
            << "token " << i << " dim " << t;
      }
    }
  }
}

// The error shrinks as bits grow, is far below the centroid's alone, and
// held-out tokens are reconstructed about as well as the training sample.
TEST(ResidualCodecTest, ErrorShrinksWithBitsAndGeneralises) {
  const size_t n_train = 16384, n = 2000;
  const std::vector<float> train = ClusteredTokens(n_train, 64, 3);
  const std::vector<float> held_out = ClusteredTokens(n, 64, 3 + 100);
  double previous = std::numeric_limits<double>::infinity();
  for (uint32_t bits : {1u, 2u, 4u}) {
    SCOPED_TRACE(bits);
    ResidualCodecOptions options;
    options.bits = bits;
    auto made = ResidualCodec::Train(train.data(), n_train, kDim, options);
    ASSERT_TRUE(made.ok()) << made.status();
    const ResidualCodec& codec = **made;
    std::vector<uint8_t> codes(n * codec.code_bytes());
    std::vector<float> back(n * kDim);
    codec.Encode(held_out.data(), n, codes.data());
    codec.Decode(codes.data(), n, back.data());
    double centroid_only = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t id = codec.CentroidOf(codes.data() + i * codec.code_bytes());
      centroid_only += SquaredError(held_out.data() + i * kDim,
                                    codec.centroids().data() + size_t(id) * kDim, kDim);
    }
    const double mse = SquaredError(held_out.data(), back.data(), n * kDim) / double(n);
    centroid_only /= double(n);
    EXPECT_LT(mse, previous);
    EXPECT_LT(mse, 0.6 * centroid_only);
    EXPECT_LT(mse, 1.25 * codec.train_mse());
    EXPECT_GT(mse, 0.75 * codec.train_mse());
    previous = mse;
  }
}

// k-means may assign its tokens with the caller's search (e.g. a matmul
// engine's): it is called, and with an exact search the codec is as good as
// with FAISS's own.
TEST(ResidualCodecTest, KMeansUsesTheCallersNearestSearch) {
  const size_t n = 8192;
  const std::vector<float> train = ClusteredTokens(n, 64, 7);
  ResidualCodecOptions faiss_options;
  auto plain = ResidualCodec::Train(train.data(), n, kDim, faiss_options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  size_t calls = 0;
  ResidualCodecOptions options;
  options.nearest = [&](const float* table, size_t k, const float* rows, size_t m, uint32_t* out) {
    ++calls;
    for (size_t i = 0; i < m; ++i) {
      double best = -1e30;
      for (size_t j = 0; j < k; ++j) {
        double dot = 0;
        for (uint32_t t = 0; t < kDim; ++t) dot += double(rows[i * kDim + t]) * table[j * kDim + t];
        if (dot > best) best = dot, out[i] = uint32_t(j);
      }
    }
  };
  auto made = ResidualCodec::Train(train.data(), n, kDim, options);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_GE(calls, size_t(options.iterations));
  EXPECT_EQ((*made)->num_centroids(), (*plain)->num_centroids());
  EXPECT_LT((*made)->train_mse(), 1.05 * (*plain)->train_mse());
  EXPECT_GT((*made)->train_mse(), 0.95 * (*plain)->train_mse());
}

// Documents of clustered tokens ranked by MaxSim on exact and on decoded
// tokens (the reference reranker): the top 10 agree more with more bits.
// (These tokens are centre + isotropic noise, a hard case: their residuals
// have no structure for the buckets to catch.)
TEST(ResidualCodecTest, RankingOnDecodedTokensKeepsTheExactTopTen) {
  const uint32_t docs = 400, per_doc = 24, queries = 20, m = 8;
  const std::vector<float> tokens = ClusteredTokens(size_t(docs) * per_doc, 60, 4);
  const std::vector<float> query_tokens = ClusteredTokens(size_t(queries) * m, 60, 4 + 100);
  const std::vector<float> weights(m, 1.f / m);
  double previous = 0;
  for (uint32_t bits : {1u, 2u, 4u}) {
    ResidualCodecOptions options;
    options.bits = bits;
    auto made = ResidualCodec::Train(tokens.data(), tokens.size() / kDim, kDim, options);
    ASSERT_TRUE(made.ok()) << made.status();
    const ResidualCodec& codec = **made;
    std::vector<uint8_t> codes(tokens.size() / kDim * codec.code_bytes());
    std::vector<float> decoded(tokens.size());
    codec.Encode(tokens.data(), tokens.size() / kDim, codes.data());
    codec.Decode(codes.data(), tokens.size() / kDim, decoded.data());
    double overlap = 0;
    for (uint32_t q = 0; q < queries; ++q) {
      const float* qt = query_tokens.data() + size_t(q) * m * kDim;
      auto top10 = [&](const std::vector<float>& all) {
        std::vector<std::pair<double, uint32_t>> scored;
        for (uint32_t d = 0; d < docs; ++d) {
          scored.push_back(
              {-ReferenceScore(qt, m, weights.data(), all.data() + size_t(d) * per_doc * kDim,
                               per_doc, kDim, RerankMode::kMaxSim, 0.1f),
               d});
        }
        std::sort(scored.begin(), scored.end());
        std::set<uint32_t> ids;
        for (int i = 0; i < 10; ++i) ids.insert(scored[i].second);
        return ids;
      };
      const std::set<uint32_t> exact = top10(tokens), approx = top10(decoded);
      for (uint32_t d : exact) overlap += approx.count(d);
    }
    overlap /= 10.0 * queries;
    std::printf("%u bits: top-10 overlap %.3f\n", bits, overlap);
    EXPECT_GE(overlap, previous) << bits << " bits";
    EXPECT_GE(overlap, bits == 1 ? 0.6 : bits == 2 ? 0.8 : 0.93) << bits << " bits";
    previous = overlap;
  }
}

TEST(ResidualCodecTest, SerializeRoundTripsAndDetectsCorruption) {
  const std::vector<float> train = ClusteredTokens(4096, 32, 5);
  auto made = ResidualCodec::Train(train.data(), 4096, kDim, ResidualCodecOptions());
  ASSERT_TRUE(made.ok());
  const std::string bytes = (*made)->Serialize();
  auto back = ResidualCodec::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->num_centroids(), (*made)->num_centroids());
  EXPECT_EQ((*back)->train_mse(), (*made)->train_mse());
  std::vector<uint8_t> a(100 * (*made)->code_bytes()), b(a.size());
  (*made)->Encode(train.data(), 100, a.data());
  (*back)->Encode(train.data(), 100, b.data());
  EXPECT_EQ(a, b);
  std::string bad = bytes;
  bad[bad.size() / 2] ^= 0x10;
  EXPECT_EQ(ResidualCodec::Deserialize(bad).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ResidualCodec::Deserialize(bytes.substr(0, 20)).status().code(),
            absl::StatusCode::kDataLoss);
}

// Text-like tokens: each a word's unit vector w (from a fixed table, last
// coordinate 0) scaled by s in (0, 1], the last coordinate completing the
// unit norm, as the built-in encoder makes document rows. With the table as
// fixed centroids and a gain, every code names its word, its gain byte is
// the rounded projection, each dimension's error is the distance to the
// nearest bucket of x - ĝ·w, and scores against any word are kept within
// the gain's half step.
TEST(ResidualCodecTest, FixedCentroidsWithGainCodeScaledWords) {
  const uint32_t words = 700;
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> table(size_t(words) * kDim, 0.f);
  for (uint32_t k = 0; k < words; ++k) {
    float* w = table.data() + size_t(k) * kDim;
    for (uint32_t t = 0; t + 1 < kDim; ++t) w[t] = g(rng);
    NormalizeInPlace(w, kDim - 1);
  }
  std::uniform_int_distribution<uint32_t> pick(0, words - 1);
  std::uniform_real_distribution<float> saturation(0.05f, 1.f);
  const size_t n = 5000;
  std::vector<float> tokens(n * kDim);
  std::vector<uint32_t> word(n);
  std::vector<float> scale(n);
  for (size_t i = 0; i < n; ++i) {
    word[i] = pick(rng);
    scale[i] = saturation(rng);
    float* x = tokens.data() + i * kDim;
    for (uint32_t t = 0; t + 1 < kDim; ++t) x[t] = scale[i] * table[size_t(word[i]) * kDim + t];
    x[kDim - 1] = std::sqrt(1.f - scale[i] * scale[i]);
  }
  for (uint32_t bits : {1u, 2u, 4u}) {
    SCOPED_TRACE(bits);
    ResidualCodecOptions options;
    options.bits = bits;
    options.gain = true;
    auto made = ResidualCodec::TrainWithCentroids(tokens.data(), n, kDim, table, options);
    ASSERT_TRUE(made.ok()) << made.status();
    const ResidualCodec& codec = **made;
    EXPECT_EQ(codec.num_centroids(), words);
    EXPECT_EQ(codec.code_bytes(), 2 + 1 + kDim * bits / 8);
    EXPECT_GT(codec.gain_max(), 0.99f);
    const float half_step = codec.gain_max() / 512.f;
    const uint32_t levels = 1u << bits;
    std::vector<uint8_t> codes(n * codec.code_bytes());
    std::vector<float> back(n * kDim);
    codec.Encode(tokens.data(), n, codes.data());
    codec.Decode(codes.data(), n, back.data());
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* code = codes.data() + i * codec.code_bytes();
      ASSERT_EQ(codec.CentroidOf(code), word[i]) << "token " << i;
      const float gain = codec.gain_max() * float(code[2]) / 256.f;
      ASSERT_NEAR(gain, scale[i], half_step + 1e-6f) << "token " << i;
      const float* x = tokens.data() + i * kDim;
      const float* w = table.data() + size_t(word[i]) * kDim;
      for (uint32_t t = 0; t < kDim; ++t) {
        const float r = x[t] - gain * w[t];
        const float* v = codec.bucket_values().data() + size_t(t) * levels;
        float nearest = std::numeric_limits<float>::infinity();
        for (uint32_t b = 0; b < levels; ++b) nearest = std::min(nearest, std::fabs(r - v[b]));
        ASSERT_NEAR(std::fabs(back[i * kDim + t] - x[t]), nearest, 1e-6)
            << "token " << i << " dim " << t;
      }
      // A query word's similarity, s·<w_q, w>, within the half step (plus
      // the buckets' error, near 0 here: the residual is 0 but for the
      // last coordinate, which queries do not see).
      const float* q = table.data() + size_t(pick(rng)) * kDim;
      EXPECT_NEAR(Dot(q, back.data() + i * kDim, kDim), Dot(q, x, kDim), half_step + 0.01f)
          << "token " << i;
    }
    // Every scaled word is found by its signs, without a search, also after
    // rounding to bf16; a token of no word's signs is left to the search.
    std::vector<uint32_t> by_signs(n, ~0u);
    std::vector<float> rounded(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) rounded[i] = Bf16ToFloat(FloatToBf16(tokens[i]));
    EXPECT_TRUE(codec.FindBySigns(rounded.data(), n, by_signs.data()).empty());
    EXPECT_EQ(by_signs, word);
    std::vector<float> stranger(tokens.begin(), tokens.begin() + kDim);
    stranger[3] = -stranger[3];
    uint32_t unused = 0;
    EXPECT_EQ(codec.FindBySigns(stranger.data(), 1, &unused), std::vector<size_t>{0});
    // Round trip of a codec with a gain.
    auto again = ResidualCodec::Deserialize(codec.Serialize());
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ((*again)->gain_max(), codec.gain_max());
    std::vector<uint8_t> codes2(codes.size());
    (*again)->Encode(tokens.data(), n, codes2.data());
    EXPECT_EQ(codes2, codes);
    std::vector<uint32_t> again_ids(n, ~0u);
    EXPECT_TRUE((*again)->FindBySigns(tokens.data(), n, again_ids.data()).empty());
  }
  // A k-means codec leaves every token to the search.
  const std::vector<float> clustered = ClusteredTokens(4096, 32, 12);
  auto kmeans = ResidualCodec::Train(clustered.data(), 4096, kDim, ResidualCodecOptions());
  ASSERT_TRUE(kmeans.ok());
  std::vector<uint32_t> ids(10);
  EXPECT_EQ((*kmeans)->FindBySigns(clustered.data(), 10, ids.data()).size(), 10u);
}

// A codec without a gain or fixed centroids is written in format 1, which
// readers from before gains know; one with a gain in format 2.
TEST(ResidualCodecTest, WritesFormatOneWithoutGain) {
  const std::vector<float> train = ClusteredTokens(4096, 32, 8);
  auto plain = ResidualCodec::Train(train.data(), 4096, kDim, ResidualCodecOptions());
  ASSERT_TRUE(plain.ok());
  const std::string bytes = (*plain)->Serialize();
  EXPECT_EQ(bytes.substr(0, 8), "ATRCODE1");
  auto back = ResidualCodec::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->gain_max(), 0.f);
  std::vector<uint8_t> a(100 * (*plain)->code_bytes()), b(a.size());
  (*plain)->Encode(train.data(), 100, a.data());
  (*back)->Encode(train.data(), 100, b.data());
  EXPECT_EQ(a, b);
  ResidualCodecOptions gain;
  gain.gain = true;
  auto with_gain = ResidualCodec::Train(train.data(), 4096, kDim, gain);
  ASSERT_TRUE(with_gain.ok());
  EXPECT_EQ((*with_gain)->Serialize().substr(0, 8), "ATRCODE2");
  EXPECT_GT((*ResidualCodec::Deserialize((*with_gain)->Serialize()))->gain_max(), 0.f);
}

TEST(ResidualCodecTest, FixedCentroidsRefuseBadTablesAndTooFewTokens) {
  const std::vector<float> train = ClusteredTokens(1000, 8, 9);
  const std::vector<float> table(10 * kDim, 0.1f);
  ResidualCodecOptions options;
  options.gain = true;
  auto s = ResidualCodec::TrainWithCentroids(train.data(), 1000, kDim, {}, options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("centroid"), std::string::npos) << s;
  s = ResidualCodec::TrainWithCentroids(train.data(), 1000, kDim,
                                        std::vector<float>(kDim + 1, 0.1f), options)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = ResidualCodec::TrainWithCentroids(train.data(), 100, kDim, table, options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("too few"), std::string::npos) << s;
  options.bits = 3;
  s = ResidualCodec::TrainWithCentroids(train.data(), 1000, kDim, table, options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("bits"), std::string::npos) << s;
  options.bits = 2;
  EXPECT_TRUE(ResidualCodec::TrainWithCentroids(train.data(), 1000, kDim, table, options).ok());
}

TEST(ResidualCodecTest, RefusesBadOptionsAndTooFewTokens) {
  const std::vector<float> train = ClusteredTokens(1000, 8, 6);
  ResidualCodecOptions options;
  options.bits = 3;
  auto s = ResidualCodec::Train(train.data(), 1000, kDim, options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("bits"), std::string::npos) << s;
  options.bits = 2;
  EXPECT_EQ(ResidualCodec::Train(train.data(), 1000, 0, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  // 64 centroids need 256 tokens.
  s = ResidualCodec::Train(train.data(), 100, kDim, options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("too few"), std::string::npos) << s;
  options.centroids = 1000;
  EXPECT_EQ(ResidualCodec::Train(train.data(), 1000, kDim, options).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace attnsearch
