#include "dataset.h"

#include <algorithm>
#include <cmath>

#include "dataset/vecs.h"

namespace attnsearch::bench {
namespace {

constexpr uint64_t kCentreSalt = 0x1234;
constexpr uint64_t kDocSalt = 0x5151;
constexpr uint64_t kTokenSalt = 0x7777;
constexpr uint64_t kQuerySalt = 0x9a9a;
constexpr uint64_t kQueryTokenSalt = 0xbcbc;

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t SeedFor(uint64_t seed, uint64_t salt, uint64_t i) {
  return Mix(Mix(seed ^ Mix(salt)) ^ i);
}

}  // namespace

uint64_t Rng::Next() {
  state_ += 0x9e3779b97f4a7c15ull;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double Rng::Uniform() { return double(Next() >> 11) * (1.0 / 9007199254740992.0); }

double Rng::Normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = Uniform();
  while (u1 <= 0.0) u1 = Uniform();
  const double u2 = Uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * M_PI * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * M_PI * u2);
}

uint64_t Rng::Between(uint64_t lo, uint64_t hi) {
  if (hi <= lo) return lo;
  return lo + Next() % (hi - lo + 1);
}

void Normalize(float* x, size_t n) {
  double ss = 0.0;
  for (size_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  if (!(ss > 0.0)) return;
  const double inv = 1.0 / std::sqrt(ss);
  for (size_t i = 0; i < n; ++i) x[i] = float(x[i] * inv);
}

SyntheticDataset::SyntheticDataset(const SyntheticOptions& options) : options_(options) {
  const uint32_t d = options_.dim;
  const uint32_t c = std::max<uint32_t>(1, options_.clusters);
  centres_.resize(size_t(c) * d);
  Rng rng(SeedFor(options_.seed, kCentreSalt, 0));
  for (uint32_t k = 0; k < c; ++k) {
    float* v = centres_.data() + size_t(k) * d;
    for (uint32_t j = 0; j < d; ++j) v[j] = float(rng.Normal());
    Normalize(v, d);
  }
}

uint32_t SyntheticDataset::Cluster(uint64_t i) const {
  if (options_.distribution == Distribution::kUniform) return 0;
  Rng rng(SeedFor(options_.seed, kDocSalt, i));
  return uint32_t(rng.Next() % std::max<uint32_t>(1, options_.clusters));
}

void SyntheticDataset::Base(uint64_t i, uint64_t salt, float* out) const {
  const uint32_t d = options_.dim;
  Rng rng(SeedFor(options_.seed, salt, i));
  const uint32_t cluster = uint32_t(rng.Next() % std::max<uint32_t>(1, options_.clusters));
  if (options_.distribution == Distribution::kUniform) {
    for (uint32_t j = 0; j < d; ++j) out[j] = float(rng.Normal());
    return;
  }
  const float* c = centres_.data() + size_t(cluster) * d;
  const double sd = options_.spread / std::sqrt(double(d));
  for (uint32_t j = 0; j < d; ++j) out[j] = float(c[j] + sd * rng.Normal());
}

void SyntheticDataset::Pooled(uint64_t i, float* out) const {
  Base(i, kDocSalt, out);
  Normalize(out, options_.dim);
}

void SyntheticDataset::PooledBlock(uint64_t first, size_t n, float* out) const {
  for (size_t k = 0; k < n; ++k) Pooled(first + k, out + k * options_.dim);
}

uint32_t SyntheticDataset::NumTokens(uint64_t i) const {
  const uint32_t lo = std::max<uint32_t>(1, options_.tokens_min);
  const uint32_t hi = std::max(lo, options_.tokens_max);
  Rng rng(SeedFor(options_.seed, kTokenSalt, i));
  if (options_.token_counts == TokenCountDistribution::kUniform) {
    return uint32_t(rng.Between(lo, hi));
  }
  const double mu = 0.5 * (std::log(double(lo)) + std::log(double(hi)));
  const double sigma = (std::log(double(hi)) - std::log(double(lo))) / 4.0;
  const double n = std::round(std::exp(mu + sigma * rng.Normal()));
  return uint32_t(std::clamp(n, double(lo), double(hi)));
}

void SyntheticDataset::TokenRows(const float* base, Rng* rng, uint32_t n, float* out) const {
  const uint32_t d = options_.dim;
  const bool uniform = options_.distribution == Distribution::kUniform;
  const double sd = options_.token_spread / std::sqrt(double(d));
  for (uint32_t r = 0; r < n; ++r) {
    float* row = out + size_t(r) * d;
    for (uint32_t j = 0; j < d; ++j) {
      row[j] = uniform ? float(rng->Normal()) : float(base[j] + sd * rng->Normal());
    }
    Normalize(row, d);
  }
}

uint32_t SyntheticDataset::Tokens(uint64_t i, std::vector<float>* out) const {
  const uint32_t d = options_.dim;
  const uint32_t n = NumTokens(i);
  std::vector<float> base(d);
  Base(i, kDocSalt, base.data());
  Normalize(base.data(), d);
  out->resize(size_t(n) * d);
  Rng rng(SeedFor(options_.seed, kTokenSalt, i) ^ 0x55);
  TokenRows(base.data(), &rng, n, out->data());
  return n;
}

void SyntheticDataset::QueryPooled(uint64_t j, float* out) const {
  Base(j, kQuerySalt, out);
  Normalize(out, options_.dim);
}

void SyntheticDataset::QueryTokens(uint64_t j, uint32_t m, std::vector<float>* out) const {
  const uint32_t d = options_.dim;
  std::vector<float> base(d);
  QueryPooled(j, base.data());
  out->resize(size_t(m) * d);
  Rng rng(SeedFor(options_.seed, kQueryTokenSalt, j));
  TokenRows(base.data(), &rng, m, out->data());
}

absl::StatusOr<VectorSet> LoadFvecsNormalized(const std::string& path, size_t max_rows) {
  auto data = ReadFvecs(path, max_rows);
  if (!data.ok()) return data.status();
  VectorSet set;
  set.dim = data->dim;
  set.rows = data->rows;
  set.values = std::move(data->values);
  for (size_t i = 0; i < set.rows; ++i) Normalize(set.values.data() + i * set.dim, set.dim);
  return set;
}

absl::StatusOr<std::vector<std::vector<int64_t>>> LoadIvecs(const std::string& path) {
  auto data = ReadIvecs(path);
  if (!data.ok()) return data.status();
  std::vector<std::vector<int64_t>> rows(data->rows);
  for (size_t i = 0; i < data->rows; ++i) {
    rows[i].assign(data->row(i), data->row(i) + data->dim);
  }
  return rows;
}

}  // namespace attnsearch::bench
