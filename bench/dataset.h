// Benchmark datasets: a seeded synthetic generator and TEXMEX fvecs/ivecs.
//
// The synthetic generator is random-access and stateless per item: document
// i's pooled vector, token count and token matrix are pure functions of
// (seed, i), so any size (millions) can be generated in streaming fashion, in
// any order, from any number of threads, and two runs with the same seed see
// the same data.
//
//   clustered  `clusters` random unit centres; a document's vector is its
//              centre plus Gaussian noise of expected norm `spread`; its
//              pooled vector is that, normalised; its tokens are that plus
//              noise of expected norm `token_spread`, each normalised. Token
//              counts are lognormal-ish (median sqrt(min*max), ~95% inside
//              [min, max], clipped) or uniform in [min, max].
//   uniform    pooled vectors and tokens uniform on the unit sphere.
//
// Queries come from a separate stream (same centres), so a query resembles
// the documents of its cluster without being one of them.
#ifndef ATTNSEARCH_BENCH_DATASET_H_
#define ATTNSEARCH_BENCH_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnsearch::bench {

enum class Distribution { kClustered, kUniform };
enum class TokenCountDistribution { kLogNormal, kUniform };

struct SyntheticOptions {
  // Vector dimension. Default: 128.
  uint32_t dim = 128;
  // Distribution of the vectors. Default: clustered.
  Distribution distribution = Distribution::kClustered;
  // Number of cluster centres. Default: 100.
  uint32_t clusters = 100;
  // Expected norm of a document's offset from its centre. Default: 0.5.
  float spread = 0.5f;
  // Expected norm of a token's offset from its document. Default: 0.7.
  float token_spread = 0.7f;
  // Token count range of a document, inclusive. Default: 32..180.
  uint32_t tokens_min = 32;
  uint32_t tokens_max = 180;
  TokenCountDistribution token_counts = TokenCountDistribution::kLogNormal;
  // Seed of everything. Default: 42.
  uint64_t seed = 42;
};

// A small, portable PRNG (splitmix64) with a Box-Muller normal, so the data
// does not depend on the standard library's distributions.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, 1).
  double Uniform();
  // Standard normal.
  double Normal();
  // Uniform integer in [lo, hi].
  uint64_t Between(uint64_t lo, uint64_t hi);

 private:
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

class SyntheticDataset {
 public:
  explicit SyntheticDataset(const SyntheticOptions& options);

  const SyntheticOptions& options() const { return options_; }
  uint32_t dim() const { return options_.dim; }

  // Cluster of document i (0 for uniform data).
  uint32_t Cluster(uint64_t i) const;
  // Pooled unit vector of document i: dim floats into out.
  void Pooled(uint64_t i, float* out) const;
  // Pooled vectors of documents [first, first + n): n x dim floats.
  void PooledBlock(uint64_t first, size_t n, float* out) const;
  // Token count of document i, in [tokens_min, tokens_max].
  uint32_t NumTokens(uint64_t i) const;
  // Token matrix of document i: NumTokens(i) x dim unit rows into *out
  // (resized). Returns the row count.
  uint32_t Tokens(uint64_t i, std::vector<float>* out) const;

  // Query j: pooled unit vector (dim floats) and m unit token rows.
  void QueryPooled(uint64_t j, float* out) const;
  void QueryTokens(uint64_t j, uint32_t m, std::vector<float>* out) const;

 private:
  // The unnormalised vector of item `i` of stream `salt`.
  void Base(uint64_t i, uint64_t salt, float* out) const;
  void TokenRows(const float* base, Rng* rng, uint32_t n, float* out) const;

  const SyntheticOptions options_;
  std::vector<float> centres_;  // clusters x dim, unit rows
};

// Vectors loaded from files, each row normalised to unit length.
struct VectorSet {
  uint32_t dim = 0;
  size_t rows = 0;
  std::vector<float> values;  // rows x dim
  const float* row(size_t i) const { return values.data() + i * dim; }
};

// Reads an .fvecs file (up to max_rows, all when 0) and normalises each row.
absl::StatusOr<VectorSet> LoadFvecsNormalized(const std::string& path, size_t max_rows = 0);
// Reads an .ivecs file as rows of int64 ids (k ids per row).
absl::StatusOr<std::vector<std::vector<int64_t>>> LoadIvecs(const std::string& path);

// Scales n values to unit L2 norm (no-op on a zero vector).
void Normalize(float* x, size_t n);

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_DATASET_H_
