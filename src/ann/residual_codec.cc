#include "ann/residual_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/checksum.h"
#include "core/status.h"
#include "core/types.h"
#include "faiss/Clustering.h"
#include "faiss/IndexFlat.h"

namespace attnsearch {
namespace {

// A FAISS index whose nearest-row search (k = 1, inner product) is the
// caller's, so that k-means assigns its tokens with it.
struct CallbackIndex : faiss::Index {
  using Nearest = std::function<void(const float*, size_t, const float*, size_t, uint32_t*)>;
  CallbackIndex(int d, const Nearest& fn) : faiss::Index(d, faiss::METRIC_INNER_PRODUCT), fn(fn) {}
  void add(idx_t n, const float* x) override {
    table.insert(table.end(), x, x + size_t(n) * size_t(d));
    ntotal += n;
  }
  void reset() override {
    table.clear();
    ntotal = 0;
  }
  void search(idx_t n, const float* x, idx_t k, float* distances, idx_t* labels,
              const faiss::SearchParameters* = nullptr) const override {
    std::vector<uint32_t> ids(size_t(n), 0);
    if (ntotal > 0) fn(table.data(), size_t(ntotal), x, size_t(n), ids.data());
    for (idx_t i = 0; i < n; ++i) {
      const float* row = x + size_t(i) * size_t(d);
      const float* c = table.data() + size_t(ids[i]) * size_t(d);
      float dot = 0;
      for (int t = 0; t < d; ++t) dot += row[t] * c[t];
      for (idx_t j = 0; j < k; ++j) {
        labels[i * k + j] = j == 0 && ntotal > 0 ? idx_t(ids[i]) : -1;
        distances[i * k + j] = j == 0 ? dot : -std::numeric_limits<float>::infinity();
      }
    }
  }
  const Nearest& fn;
  std::vector<float> table;
};

// Format 1 has no gain; format 2 adds gain_max (f32) and flags (u32, bit 0:
// fixed centroids) after train_mse.
constexpr char kMagic[8] = {'A', 'T', 'R', 'C', 'O', 'D', 'E', '2'};
constexpr char kMagic1[8] = {'A', 'T', 'R', 'C', 'O', 'D', 'E', '1'};

// x's projection on c, <x, c> / <c, c> (0 for a zero c).
float Projection(const float* x, const float* c, uint32_t dim) {
  float xc = 0.f, cc = 0.f;
  for (uint32_t t = 0; t < dim; ++t) {
    xc += x[t] * c[t];
    cc += c[t] * c[t];
  }
  return cc > 0.f ? xc / cc : 0.f;
}

uint32_t FloorPow2(double x) {
  uint32_t p = 1;
  while (double(p) * 2 <= x && p < (1u << 30)) p *= 2;
  return p;
}

// The number of centroids when the options leave it to the codec.
uint32_t AutoCentroids(size_t n) {
  const double want = std::min(4.0 * std::sqrt(double(n)), double(n) / 8.0);
  return std::clamp<uint32_t>(FloorPow2(want), 64, 65536);
}

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
void PutVector(std::string* out, const std::vector<T>& v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

}  // namespace

absl::Status ResidualCodec::CheckOptions(uint32_t dim, const ResidualCodecOptions& options) {
  if (options.bits != 1 && options.bits != 2 && options.bits != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("residual codec: bits must be 1, 2 or 4, not ", options.bits));
  }
  if (dim == 0 || dim > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("residual codec: dim ", dim, " is out of range"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ResidualCodec>> ResidualCodec::Train(
    const float* tokens, size_t n, uint32_t dim, const ResidualCodecOptions& options) {
  ATTN_RETURN_IF_ERROR(CheckOptions(dim, options));
  if (options.centroids > (1u << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("residual codec: centroids ", options.centroids, " is more than ", 1u << 24));
  }
  if (options.iterations == 0) {
    return absl::InvalidArgumentError("residual codec: iterations must be at least 1");
  }
  const uint32_t k = options.centroids > 0 ? options.centroids : AutoCentroids(n);
  if (n < size_t(k) * kMinTokensPerCentroid) {
    return absl::FailedPreconditionError(
        absl::StrCat("residual codec: ", n, " training tokens are too few for ", k,
                     " centroids (it needs at least ", size_t(k) * kMinTokensPerCentroid, ")"));
  }
  std::unique_ptr<ResidualCodec> codec(new ResidualCodec());
  codec->dim_ = dim;
  codec->bits_ = options.bits;
  codec->num_centroids_ = k;
  try {
    faiss::ClusteringParameters cp;
    cp.niter = int(options.iterations);
    cp.spherical = true;  // unit centroids; tokens are assigned by inner product
    cp.seed = int(options.seed);
    cp.max_points_per_centroid = int(options.max_tokens_per_centroid);
    cp.min_points_per_centroid = 1;
    cp.verbose = false;
    faiss::Clustering clustering(int(dim), int(k), cp);
    if (options.nearest) {
      CallbackIndex assigner(int(dim), options.nearest);
      clustering.train(faiss::Index::idx_t(n), tokens, assigner);
    } else {
      faiss::IndexFlatIP assigner{int(dim)};
      clustering.train(faiss::Index::idx_t(n), tokens, assigner);
    }
    codec->centroids_ = std::move(clustering.centroids);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("residual codec: k-means: ", e.what()));
  }
  codec->FitCodes(tokens, n, options);
  return codec;
}

absl::StatusOr<std::unique_ptr<ResidualCodec>> ResidualCodec::TrainWithCentroids(
    const float* tokens, size_t n, uint32_t dim, std::vector<float> centroids,
    const ResidualCodecOptions& options) {
  ATTN_RETURN_IF_ERROR(CheckOptions(dim, options));
  if (centroids.empty() || centroids.size() % dim != 0 ||
      centroids.size() / dim > (size_t(1) << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("residual codec: ", centroids.size(),
                                                   " centroid values are not 1 to ", 1u << 24,
                                                   " rows of dim ", dim));
  }
  if (n < kMinFixedCentroidTokens) {
    return absl::FailedPreconditionError(
        absl::StrCat("residual codec: ", n, " training tokens are too few (it needs at least ",
                     kMinFixedCentroidTokens, ")"));
  }
  std::unique_ptr<ResidualCodec> codec(new ResidualCodec());
  codec->dim_ = dim;
  codec->bits_ = options.bits;
  codec->num_centroids_ = uint32_t(centroids.size() / dim);
  codec->centroids_ = std::move(centroids);
  codec->fixed_ = true;
  codec->MakeSignIndex();
  codec->FitCodes(tokens, n, options);
  return codec;
}

void ResidualCodec::FitCodes(const float* tokens, size_t n, const ResidualCodecOptions& options) {
  const bool gain = options.gain;
  const uint32_t dim = dim_;
  // Buckets from a sample's residuals: every token up to 65,536, else an
  // even stride through them.
  const size_t sample = std::min<size_t>(n, 65536);
  std::vector<float> picked(sample * dim);
  for (size_t i = 0; i < sample; ++i) {
    const size_t from = n == sample ? i : i * (n / sample);
    std::memcpy(picked.data() + i * dim, tokens + from * dim, dim * sizeof(float));
  }
  std::vector<uint32_t> ids(sample, 0);
  FindCentroids(picked.data(), sample, ids.data(), options.nearest);
  gain_max_ = 0.f;
  if (gain) {
    // The largest projection maps to byte 255.
    float most = 0.f;
    for (size_t i = 0; i < sample; ++i) {
      most = std::max(
          most, Projection(picked.data() + i * dim, centroids_.data() + size_t(ids[i]) * dim, dim));
    }
    gain_max_ = most > 0.f ? most * 256.f / 255.f : 1.f;
  }
  std::vector<float> residuals(sample * dim);
  for (size_t i = 0; i < sample; ++i) {
    const float* x = picked.data() + i * dim;
    const float* c = centroids_.data() + size_t(ids[i]) * dim;
    const float g = gain ? GainOf(GainLevel(x, c)) : 1.f;
    for (uint32_t t = 0; t < dim; ++t) residuals[i * dim + t] = x[t] - g * c[t];
  }
  FitBuckets(residuals, sample);
  // The training error, from the codes themselves.
  std::vector<uint8_t> codes(sample * code_bytes());
  std::vector<float> back(sample * dim);
  EncodeWithCentroids(picked.data(), sample, ids.data(), codes.data());
  Decode(codes.data(), sample, back.data());
  double sum = 0;
  for (size_t i = 0; i < sample * dim; ++i) {
    const double e = double(picked[i]) - back[i];
    sum += e * e;
  }
  train_mse_ = sum / double(sample);
}

uint8_t ResidualCodec::GainLevel(const float* x, const float* c) const {
  const float g = Projection(x, c, dim_);
  return uint8_t(std::clamp(std::lround(g / gain_max_ * 256.f), 0L, 255L));
}

void ResidualCodec::FitBuckets(const std::vector<float>& residuals, size_t n) {
  const uint32_t levels = 1u << bits_;
  values_.assign(size_t(dim_) * levels, 0.f);
  cutoffs_.assign(size_t(dim_) * (levels - 1), 0.f);
  std::vector<float> column(n);
  for (uint32_t t = 0; t < dim_; ++t) {
    for (size_t i = 0; i < n; ++i) column[i] = residuals[i * dim_ + t];
    std::sort(column.begin(), column.end());
    float* v = values_.data() + size_t(t) * levels;
    for (uint32_t b = 0; b < levels; ++b) {
      // The middle of slice b of 2^bits equal-mass slices.
      const size_t at = std::min(n - 1, size_t((double(b) + 0.5) / levels * double(n)));
      v[b] = column[at];
    }
    float* cut = cutoffs_.data() + size_t(t) * (levels - 1);
    for (uint32_t b = 0; b + 1 < levels; ++b) cut[b] = 0.5f * (v[b] + v[b + 1]);
  }
}

std::vector<uint32_t> ResidualCodec::Assign(const float* tokens, size_t n) const {
  std::vector<float> scores(n);
  std::vector<faiss::Index::idx_t> labels(n);
  absl::call_once(assigner_once_, [this] { MakeAssigner(); });
  assigner_->search(faiss::Index::idx_t(n), tokens, 1, scores.data(), labels.data());
  std::vector<uint32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = labels[i] < 0 ? 0 : uint32_t(labels[i]);
  return ids;
}

void ResidualCodec::Encode(const float* tokens, size_t n, uint8_t* codes) const {
  std::vector<uint32_t> ids(n, 0);
  FindCentroids(tokens, n, ids.data(), nullptr);
  EncodeWithCentroids(tokens, n, ids.data(), codes);
}

namespace {
constexpr uint32_t kAmbiguous = ~0u;
}  // namespace

void ResidualCodec::MakeSignIndex() {
  sign_dims_.clear();
  by_signs_.clear();
  for (uint32_t t = 0; t < dim_; ++t) {
    bool all = true;
    for (uint32_t k = 0; k < num_centroids_ && all; ++k)
      all = centroids_[size_t(k) * dim_ + t] != 0;
    if (all) sign_dims_.push_back(t);
  }
  // Fewer than 32 such dimensions would not tell a vocabulary apart.
  if (sign_dims_.size() < 32) {
    sign_dims_.clear();
    return;
  }
  by_signs_.reserve(num_centroids_);
  for (uint32_t k = 0; k < num_centroids_; ++k) {
    uint64_t key = 0;
    if (!SignKey(centroids_.data() + size_t(k) * dim_, &key)) continue;
    auto [it, added] = by_signs_.emplace(key, k);
    if (!added) it->second = kAmbiguous;
  }
}

bool ResidualCodec::SignKey(const float* x, uint64_t* key) const {
  uint64_t h = 0x9e3779b97f4a7c15ull, word = 0;
  size_t bits = 0;
  for (uint32_t t : sign_dims_) {
    if (x[t] == 0.f || std::isnan(x[t])) return false;
    word = (word << 1) | (x[t] > 0.f ? 1 : 0);
    if (++bits == 64) {
      h = (h ^ word) * 0xff51afd7ed558ccdull;
      h ^= h >> 32;
      word = 0;
      bits = 0;
    }
  }
  h = (h ^ word ^ (uint64_t(bits) << 56)) * 0xc4ceb9fe1a85ec53ull;
  *key = h ^ (h >> 29);
  return true;
}

std::vector<size_t> ResidualCodec::FindBySigns(const float* tokens, size_t n, uint32_t* ids) const {
  std::vector<size_t> rest;
  if (by_signs_.empty()) {
    rest.resize(n);
    for (size_t i = 0; i < n; ++i) rest[i] = i;
    return rest;
  }
  for (size_t i = 0; i < n; ++i) {
    uint64_t key = 0;
    if (SignKey(tokens + i * dim_, &key)) {
      auto it = by_signs_.find(key);
      if (it != by_signs_.end() && it->second != kAmbiguous) {
        ids[i] = it->second;
        continue;
      }
    }
    rest.push_back(i);
  }
  return rest;
}

void ResidualCodec::FindCentroids(const float* tokens, size_t n, uint32_t* ids,
                                  const ResidualCodecOptions::NearestFn& nearest) const {
  const std::vector<size_t> rest = FindBySigns(tokens, n, ids);
  if (rest.empty()) return;
  std::vector<float> rows;
  const float* search = tokens;
  if (rest.size() < n) {
    rows.resize(rest.size() * dim_);
    for (size_t j = 0; j < rest.size(); ++j) {
      std::memcpy(rows.data() + j * dim_, tokens + rest[j] * dim_, dim_ * sizeof(float));
    }
    search = rows.data();
  }
  std::vector<uint32_t> found(rest.size(), 0);
  if (nearest) {
    nearest(centroids_.data(), num_centroids_, search, rest.size(), found.data());
  } else {
    found = Assign(search, rest.size());
  }
  for (size_t j = 0; j < rest.size(); ++j) ids[rest[j]] = found[j];
}

void ResidualCodec::EncodeWithCentroids(const float* tokens, size_t n, const uint32_t* ids,
                                        uint8_t* codes) const {
  const uint32_t cuts = (1u << bits_) - 1;
  const size_t id_size = id_bytes(), stride = code_bytes();
  for (size_t i = 0; i < n; ++i) {
    uint8_t* code = codes + i * stride;
    const uint32_t id = ids[i] < num_centroids_ ? ids[i] : 0;
    std::memcpy(code, &id, id_size);  // little endian
    const float* x = tokens + i * dim_;
    const float* c = centroids_.data() + size_t(id) * dim_;
    float g = 1.f;
    if (gain_bytes() > 0) {
      code[id_size] = GainLevel(x, c);
      g = GainOf(code[id_size]);
    }
    uint8_t* res = code + id_size + gain_bytes();
    std::memset(res, 0, residual_bytes());
    for (uint32_t t = 0; t < dim_; ++t) {
      const float r = x[t] - g * c[t];
      const float* cut = cutoffs_.data() + size_t(t) * cuts;
      uint32_t b = 0;
      while (b < cuts && r > cut[b]) ++b;
      const size_t bit = size_t(t) * bits_;
      res[bit / 8] |= uint8_t(b << (bit % 8));
    }
  }
}

uint32_t ResidualCodec::CentroidOf(const uint8_t* code) const {
  uint32_t id = 0;
  std::memcpy(&id, code, id_bytes());
  return id;
}

void ResidualCodec::Decode(const uint8_t* codes, size_t n, float* out) const {
  const uint32_t levels = 1u << bits_, mask = levels - 1;
  const size_t stride = code_bytes();
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* code = codes + i * stride;
    const uint8_t* res = code + id_bytes() + gain_bytes();
    uint32_t id = CentroidOf(code);
    if (id >= num_centroids_) id = 0;
    const float* c = centroids_.data() + size_t(id) * dim_;
    const float g = gain_bytes() > 0 ? GainOf(code[id_bytes()]) : 1.f;
    float* x = out + i * dim_;
    for (uint32_t t = 0; t < dim_; ++t) {
      const size_t bit = size_t(t) * bits_;
      const uint32_t b = (res[bit / 8] >> (bit % 8)) & mask;
      x[t] = g * c[t] + values_[size_t(t) * levels + b];
    }
  }
}

std::string ResidualCodec::Serialize() const {
  // Format 1 when it says all (no gain, k-means), which older readers know.
  const bool format1 = gain_max_ == 0.f && !fixed_;
  std::string out(format1 ? kMagic1 : kMagic, sizeof(kMagic));
  Put(&out, dim_);
  Put(&out, bits_);
  Put(&out, num_centroids_);
  Put(&out, train_mse_);
  if (!format1) {
    Put(&out, gain_max_);
    Put(&out, uint32_t(fixed_ ? 1 : 0));
  }
  PutVector(&out, centroids_);
  PutVector(&out, values_);
  PutVector(&out, cutoffs_);
  Put(&out, Checksum64(out.data(), out.size()));
  return out;
}

absl::StatusOr<std::unique_ptr<ResidualCodec>> ResidualCodec::Deserialize(std::string_view bytes) {
  auto corrupt = [](const char* why) {
    return absl::DataLossError(absl::StrCat("residual codec: ", why));
  };
  if (bytes.size() < sizeof(kMagic) + 12 + 8 + 8) return corrupt("truncated");
  uint64_t sum = 0;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  if (Checksum64(bytes.data(), bytes.size() - 8) != sum) return corrupt("bad checksum");
  const bool format1 = std::memcmp(bytes.data(), kMagic1, sizeof(kMagic1)) == 0;
  if (!format1 && std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("bad magic");
  }
  std::unique_ptr<ResidualCodec> codec(new ResidualCodec());
  size_t at = sizeof(kMagic);
  auto get = [&](void* to, size_t size) {
    if (at + size > bytes.size() - 8) return false;
    std::memcpy(to, bytes.data() + at, size);
    at += size;
    return true;
  };
  if (!get(&codec->dim_, 4) || !get(&codec->bits_, 4) || !get(&codec->num_centroids_, 4) ||
      !get(&codec->train_mse_, 8) || (!format1 && !get(&codec->gain_max_, 4))) {
    return corrupt("truncated header");
  }
  uint32_t flags = 0;
  if (!format1 && !get(&flags, 4)) return corrupt("truncated header");
  if (flags > 1) return corrupt("bad flags");
  codec->fixed_ = flags == 1;
  if (!(codec->gain_max_ >= 0.f) || !std::isfinite(codec->gain_max_) || codec->dim_ == 0 ||
      codec->dim_ > kMaxDim || (codec->bits_ != 1 && codec->bits_ != 2 && codec->bits_ != 4) ||
      codec->num_centroids_ == 0 || codec->num_centroids_ > (1u << 24)) {
    return corrupt("bad header");
  }
  const size_t levels = size_t(1) << codec->bits_;
  codec->centroids_.resize(size_t(codec->num_centroids_) * codec->dim_);
  codec->values_.resize(codec->dim_ * levels);
  codec->cutoffs_.resize(codec->dim_ * (levels - 1));
  if (!get(codec->centroids_.data(), codec->centroids_.size() * 4) ||
      !get(codec->values_.data(), codec->values_.size() * 4) ||
      !get(codec->cutoffs_.data(), codec->cutoffs_.size() * 4) || at != bytes.size() - 8) {
    return corrupt("sizes do not match the header");
  }
  if (codec->fixed_) codec->MakeSignIndex();
  return codec;
}

void ResidualCodec::MakeAssigner() const {
  auto index = std::make_shared<faiss::IndexFlatIP>(int(dim_));
  index->add(faiss::Index::idx_t(num_centroids_), centroids_.data());
  assigner_ = std::move(index);
}

}  // namespace attnsearch
