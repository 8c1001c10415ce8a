#include "ann/fde.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"

namespace attnsearch {
namespace {

// Random values from mt19937_64's standard-fixed sequence.
class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed) {}
  // Uniform in (0, 1).
  double Uniform() { return (double(rng_() >> 11) + 0.5) * 0x1.0p-53; }
  // Standard normal (Box-Muller; the second value is dropped).
  float Normal() {
    const double u = Uniform(), v = Uniform();
    return float(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
  }
  bool Coin() { return (rng_() >> 63) != 0; }
  uint32_t Below(uint32_t n) { return uint32_t(rng_() % n); }

 private:
  std::mt19937_64 rng_;
};

float DotRow(const float* a, const float* b, uint32_t n) {
  float s = 0.f;
  for (uint32_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

FdeEncoder::FdeEncoder(uint32_t dim, const FdeOptions& options) : dim_(dim), options_(options) {}

absl::StatusOr<std::unique_ptr<FdeEncoder>> FdeEncoder::Create(uint32_t dim,
                                                               const FdeOptions& options) {
  if (dim == 0) return absl::InvalidArgumentError("fde: dim must be at least 1");
  if (options.repetitions < 1 || options.repetitions > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("fde: repetitions must be 1..64, not ", options.repetitions));
  }
  if (options.simhash_bits > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("fde: simhash_bits must be 0..8, not ", options.simhash_bits));
  }
  if (options.projection_dim > dim) {
    return absl::InvalidArgumentError(absl::StrCat("fde: projection_dim ", options.projection_dim,
                                                   " exceeds the token dimension ", dim));
  }
  std::unique_ptr<FdeEncoder> e(new FdeEncoder(dim, options));
  e->block_ = options.projection_dim > 0 ? options.projection_dim : dim;
  e->partitions_ = 1u << options.simhash_bits;
  const uint64_t full = uint64_t(options.repetitions) * e->partitions_ * e->block_;
  if (full > (uint64_t{1} << 20) || options.final_dim > (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fde: an encoding of ", full,
                     " values (repetitions x 2^simhash_bits x projection_dim) "
                     "or final_dim above 1,048,576"));
  }
  Draw draw(options.seed);
  e->planes_.resize(size_t(options.repetitions) * options.simhash_bits * dim);
  for (float& x : e->planes_) x = draw.Normal();
  if (options.projection_dim > 0) {
    const float scale = 1.f / std::sqrt(float(e->block_));
    e->projection_.resize(size_t(options.repetitions) * e->block_ * dim);
    for (float& x : e->projection_) x = draw.Coin() ? scale : -scale;
  }
  if (options.final_dim > 0) {
    e->sketch_to_.resize(full);
    e->sketch_sign_.resize(full);
    for (uint64_t i = 0; i < full; ++i) {
      e->sketch_to_[i] = draw.Below(options.final_dim);
      e->sketch_sign_[i] = draw.Coin() ? 1.f : -1.f;
    }
  }
  return e;
}

uint32_t FdeEncoder::output_dim() const {
  return options_.final_dim > 0 ? options_.final_dim : options_.repetitions * partitions_ * block_;
}

uint32_t FdeEncoder::Partition(uint32_t r, const float* x) const {
  const uint32_t bits = options_.simhash_bits;
  uint32_t p = 0;
  for (uint32_t b = 0; b < bits; ++b) {
    const float* plane = planes_.data() + (size_t(r) * bits + b) * dim_;
    if (DotRow(plane, x, dim_) > 0.f) p |= 1u << b;
  }
  return p;
}

void FdeEncoder::Project(uint32_t r, const float* x, float* out) const {
  if (options_.projection_dim == 0) {
    std::copy(x, x + dim_, out);
    return;
  }
  const float* s = projection_.data() + size_t(r) * block_ * dim_;
  for (uint32_t j = 0; j < block_; ++j) out[j] = DotRow(s + size_t(j) * dim_, x, dim_);
}

void FdeEncoder::Finish(const std::vector<float>& full, float* out) const {
  if (options_.final_dim == 0) {
    std::copy(full.begin(), full.end(), out);
    return;
  }
  std::fill(out, out + options_.final_dim, 0.f);
  for (size_t i = 0; i < full.size(); ++i) out[sketch_to_[i]] += sketch_sign_[i] * full[i];
}

void FdeEncoder::EncodeQuery(const float* tokens, const float* weights, size_t n,
                             float* out) const {
  std::vector<float> full(size_t(options_.repetitions) * partitions_ * block_, 0.f);
  std::vector<float> projected(block_);
  for (uint32_t r = 0; r < options_.repetitions; ++r) {
    for (size_t t = 0; t < n; ++t) {
      const float* x = tokens + t * dim_;
      const uint32_t p = Partition(r, x);
      Project(r, x, projected.data());
      const float w = weights != nullptr ? weights[t] : 1.f;
      float* block = full.data() + (size_t(r) * partitions_ + p) * block_;
      for (uint32_t j = 0; j < block_; ++j) block[j] += w * projected[j];
    }
  }
  Finish(full, out);
}

void FdeEncoder::EncodeDocument(const float* tokens, size_t n, float* out) const {
  std::vector<float> full(size_t(options_.repetitions) * partitions_ * block_, 0.f);
  std::vector<float> projected(n * block_);
  std::vector<uint32_t> part(n), count(partitions_);
  for (uint32_t r = 0; r < options_.repetitions; ++r) {
    std::fill(count.begin(), count.end(), 0);
    float* blocks = full.data() + size_t(r) * partitions_ * block_;
    for (size_t t = 0; t < n; ++t) {
      part[t] = Partition(r, tokens + t * dim_);
      Project(r, tokens + t * dim_, projected.data() + t * block_);
      ++count[part[t]];
      float* block = blocks + size_t(part[t]) * block_;
      for (uint32_t j = 0; j < block_; ++j) block[j] += projected[t * block_ + j];
    }
    for (uint32_t p = 0; p < partitions_; ++p) {
      float* block = blocks + size_t(p) * block_;
      if (count[p] > 0) {
        const float inv = 1.f / float(count[p]);
        for (uint32_t j = 0; j < block_; ++j) block[j] *= inv;
      } else if (options_.fill_empty && n > 0) {
        // The token whose partition differs in the fewest hyperplanes.
        size_t nearest = 0;
        int fewest = std::numeric_limits<int>::max();
        for (size_t t = 0; t < n; ++t) {
          const int d = std::popcount(part[t] ^ p);
          if (d < fewest) {
            fewest = d;
            nearest = t;
          }
        }
        std::copy(projected.begin() + long(nearest * block_),
                  projected.begin() + long((nearest + 1) * block_), block);
      }
    }
  }
  Finish(full, out);
}

}  // namespace attnsearch
