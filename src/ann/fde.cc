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
  std::vector<float> planes(size_t(options.repetitions) * options.simhash_bits * dim);
  for (float& x : planes) x = draw.Normal();
  std::vector<float> projection;
  if (options.projection_dim > 0) {
    const float scale = 1.f / std::sqrt(float(e->block_));
    projection.resize(size_t(options.repetitions) * e->block_ * dim);
    for (float& x : projection) x = draw.Coin() ? scale : -scale;
  }
  // The table of Products: per input value k, per repetition its planes'
  // coefficients then its projection's.
  const uint32_t bits = options.simhash_bits;
  const uint32_t proj = options.projection_dim;
  e->stride_ = bits + proj;
  const size_t width = size_t(options.repetitions) * e->stride_;
  e->table_.assign(size_t(dim) * width, 0.f);
  for (uint32_t r = 0; r < options.repetitions; ++r) {
    for (uint32_t k = 0; k < dim; ++k) {
      float* row = e->table_.data() + size_t(k) * width + size_t(r) * e->stride_;
      for (uint32_t b = 0; b < bits; ++b) row[b] = planes[(size_t(r) * bits + b) * dim + k];
      for (uint32_t j = 0; j < proj; ++j) {
        row[bits + j] = projection[(size_t(r) * proj + j) * dim + k];
      }
    }
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

void FdeEncoder::Products(const float* x, float* out) const {
  // Row k of the table holds every product's coefficient of x[k], so the
  // inner loop runs over contiguous values and vectorises.
  const size_t width = table_.size() / dim_;
  std::fill(out, out + width, 0.f);
  for (uint32_t k = 0; k < dim_; ++k) {
    const float xk = x[k];
    const float* row = table_.data() + size_t(k) * width;
    for (size_t j = 0; j < width; ++j) out[j] += xk * row[j];
  }
}

uint32_t FdeEncoder::Partition(uint32_t r, const float* products) const {
  const float* signs = products + size_t(r) * stride_;
  uint32_t p = 0;
  for (uint32_t b = 0; b < options_.simhash_bits; ++b) {
    if (signs[b] > 0.f) p |= 1u << b;
  }
  return p;
}

const float* FdeEncoder::Projected(uint32_t r, const float* x, const float* products) const {
  return options_.projection_dim == 0 ? x : products + size_t(r) * stride_ + options_.simhash_bits;
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
  std::vector<float> products(size_t(options_.repetitions) * stride_);
  for (size_t t = 0; t < n; ++t) {
    const float* x = tokens + t * dim_;
    Products(x, products.data());
    const float w = weights != nullptr ? weights[t] : 1.f;
    for (uint32_t r = 0; r < options_.repetitions; ++r) {
      const float* projected = Projected(r, x, products.data());
      float* block =
          full.data() + (size_t(r) * partitions_ + Partition(r, products.data())) * block_;
      for (uint32_t j = 0; j < block_; ++j) block[j] += w * projected[j];
    }
  }
  Finish(full, out);
}

void FdeEncoder::EncodeDocument(const float* tokens, size_t n, float* out) const {
  const uint32_t reps = options_.repetitions;
  std::vector<float> full(size_t(reps) * partitions_ * block_, 0.f);
  // Per token, its products, then per repetition its partition.
  std::vector<float> products(n * reps * stride_);
  std::vector<uint32_t> part(n * reps), count(size_t(reps) * partitions_, 0);
  for (size_t t = 0; t < n; ++t) {
    const float* x = tokens + t * dim_;
    float* prod = products.data() + t * reps * stride_;
    Products(x, prod);
    for (uint32_t r = 0; r < reps; ++r) {
      const uint32_t p = Partition(r, prod);
      part[t * reps + r] = p;
      ++count[size_t(r) * partitions_ + p];
      const float* projected = Projected(r, x, prod);
      float* block = full.data() + (size_t(r) * partitions_ + p) * block_;
      for (uint32_t j = 0; j < block_; ++j) block[j] += projected[j];
    }
  }
  for (uint32_t r = 0; r < reps; ++r) {
    for (uint32_t p = 0; p < partitions_; ++p) {
      float* block = full.data() + (size_t(r) * partitions_ + p) * block_;
      if (const uint32_t c = count[size_t(r) * partitions_ + p]; c > 0) {
        const float inv = 1.f / float(c);
        for (uint32_t j = 0; j < block_; ++j) block[j] *= inv;
      } else if (options_.fill_empty && n > 0) {
        // The token whose partition differs in the fewest hyperplanes.
        size_t nearest = 0;
        int fewest = std::numeric_limits<int>::max();
        for (size_t t = 0; t < n; ++t) {
          const int d = std::popcount(part[t * reps + r] ^ p);
          if (d < fewest) {
            fewest = d;
            nearest = t;
          }
        }
        const float* projected =
            Projected(r, tokens + nearest * dim_, products.data() + nearest * reps * stride_);
        std::copy(projected, projected + block_, block);
      }
    }
  }
  Finish(full, out);
}

}  // namespace attnsearch
