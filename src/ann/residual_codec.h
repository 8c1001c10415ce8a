// ResidualCodec: token vectors compressed to a centroid id and a residual of
// 1, 2 or 4 bits per dimension, in the manner of ColBERTv2.
//
// Training (on a sample of a collection's unit token vectors):
//   - k-means centroids with FAISS's clustering (spherical: unit centroids,
//     assignment by inner product);
//   - per dimension t, 2^b bucket values: the residuals' (x - c) quantiles
//     at the middles of 2^b equal-mass slices of their distribution;
//     the cut-offs between buckets are the midpoints of adjacent values.
// Encoding a token: its nearest centroid c (largest inner product), then
// per dimension the bucket whose value is nearest to x_t - c_t (so the
// error of each dimension is the distance to its nearest bucket value).
// Decoding: c_t + value_t[code_t].
//
// With a gain (ResidualCodecOptions::gain), a token is coded as g·c plus
// the residual: g, the token's projection on its centroid <x, c> / <c, c>,
// is kept in one byte j as ĝ = gain_max · j / 256 (gain_max from the
// training sample), and the buckets are fitted to x - ĝ·c. Tokens that are
// a scaled copy of a centroid (the built-in text encoder's rows are a
// word's vector times its BM25 saturation) are then coded almost exactly.
//
// Fixed centroids (TrainWithCentroids) replace k-means by a table the
// caller knows to fit the tokens, e.g. the built-in text encoder's
// vocabulary of word vectors: each token's nearest centroid is then its
// own word. Such a codec also finds a token's centroid without a search
// when the token repeats a centroid's signs (FindBySigns), as a word's row
// does: the search of a large vocabulary is left to the rest.
//
// Code layout, code_bytes() per token: the centroid id (2 bytes little
// endian when there are at most 65,536 centroids, else 4), the gain byte
// j (with a gain only), then d·b bits, dimension t at bits [t·b, t·b + b)
// counted from the low bit of the first residual byte. At d = 128: 34
// bytes with 2 bits, 18 with 1 bit (35 and 19 with a gain).
//
// Thread safety: immutable after Train / TrainWithCentroids / Deserialize;
// any number of threads may encode and decode at once.
#ifndef ATTNSEARCH_ANN_RESIDUAL_CODEC_H_
#define ATTNSEARCH_ANN_RESIDUAL_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace faiss {
struct IndexFlatIP;
}  // namespace faiss

namespace attnsearch {

struct ResidualCodecOptions {
  // Residual bits per dimension: 1, 2 or 4. Default: 2.
  uint32_t bits = 2;
  // Number of centroids; 0 picks a power of two near 4·sqrt(tokens),
  // between 64 and 65,536 and at most tokens / 8. Default: 0.
  uint32_t centroids = 0;
  // k-means iterations. Default: 10.
  uint32_t iterations = 10;
  // Most training tokens k-means sees per centroid (FAISS subsamples
  // beyond it). Default: 64.
  uint32_t max_tokens_per_centroid = 64;
  // Seed of k-means and its subsampling. Default: 1234.
  uint32_t seed = 1234;
  // A per-token gain byte (see the file comment). Default: off.
  bool gain = false;
  // How k-means (and the bucket fitting) finds each training token's nearest centroid (largest
  // inner product): out[i] for rows[i] (n x dim) among the k rows of
  // `table` (e.g. on a matmul engine). Default: null, FAISS's exact flat
  // search.
  using NearestFn =
      std::function<void(const float* table, size_t k, const float* rows, size_t n, uint32_t* out)>;
  NearestFn nearest;
};

// The fewest training tokens per centroid Train accepts.
inline constexpr size_t kMinTokensPerCentroid = 4;
// The fewest training tokens TrainWithCentroids accepts (for the buckets).
inline constexpr size_t kMinFixedCentroidTokens = 256;

class ResidualCodec {
 public:
  // Trains on n unit token vectors of `dim` values. INVALID_ARGUMENT names
  // the option that is out of range (bits, centroids, dim);
  // FAILED_PRECONDITION when there are too few tokens for the centroids
  // (fewer than kMinTokensPerCentroid per centroid).
  static absl::StatusOr<std::unique_ptr<ResidualCodec>> Train(const float* tokens, size_t n,
                                                              uint32_t dim,
                                                              const ResidualCodecOptions& options);
  // Trains only the gain and the buckets, with fixed centroids (k x dim
  // values, not necessarily unit; `options.centroids` and the k-means
  // settings are ignored). INVALID_ARGUMENT as Train, or when there are no
  // centroids or more than 2^24; FAILED_PRECONDITION for fewer than
  // kMinFixedCentroidTokens training tokens.
  static absl::StatusOr<std::unique_ptr<ResidualCodec>> TrainWithCentroids(
      const float* tokens, size_t n, uint32_t dim, std::vector<float> centroids,
      const ResidualCodecOptions& options);
  // The codec Serialize wrote; DATA_LOSS when the bytes are not one.
  static absl::StatusOr<std::unique_ptr<ResidualCodec>> Deserialize(std::string_view bytes);
  std::string Serialize() const;

  uint32_t dim() const { return dim_; }
  uint32_t bits() const { return bits_; }
  uint32_t num_centroids() const { return num_centroids_; }
  // Bytes of one token's code: id_bytes() + gain_bytes() + residual_bytes().
  size_t code_bytes() const { return id_bytes() + gain_bytes() + residual_bytes(); }
  size_t id_bytes() const { return num_centroids_ <= 65536 ? 2 : 4; }
  size_t gain_bytes() const { return gain_max_ > 0.f ? 1 : 0; }
  // The largest gain a byte holds (ĝ = gain_max · j / 256); 0 without a gain.
  float gain_max() const { return gain_max_; }
  size_t residual_bytes() const { return (size_t(dim_) * bits_ + 7) / 8; }
  // num_centroids() x dim rows (unit for k-means; a fixed table as given).
  const std::vector<float>& centroids() const { return centroids_; }
  // dim x 2^bits bucket values, dimension after dimension, increasing.
  const std::vector<float>& bucket_values() const { return values_; }
  // Mean squared reconstruction error per token over the training sample.
  double train_mse() const { return train_mse_; }

  // codes: n x code_bytes(). Tokens need not be unit vectors.
  void Encode(const float* tokens, size_t n, uint8_t* codes) const;
  // The same with each token's centroid chosen by the caller (ids[i]; one
  // beyond num_centroids() counts as 0), e.g. by a faster search of the
  // centroids than Encode's exact one.
  void EncodeWithCentroids(const float* tokens, size_t n, const uint32_t* ids,
                           uint8_t* codes) const;
  // out: n x dim.
  void Decode(const uint8_t* codes, size_t n, float* out) const;
  // The centroid id of one token's code.
  uint32_t CentroidOf(const uint8_t* code) const;

  // Fixed centroids only: for each of n tokens, the centroid whose signs it
  // repeats in every dimension where no centroid is 0 (found by a hash of
  // those signs), into ids[i]. For a positive multiple of a unit centroid
  // plus components where every centroid is 0 (a text row), that is its
  // nearest centroid. Returns the indices of the tokens it could not place
  // (all of them for a k-means codec), for the caller's search.
  std::vector<size_t> FindBySigns(const float* tokens, size_t n, uint32_t* ids) const;
  // Each token's nearest centroid into ids[i]: FindBySigns, then for the
  // rest `nearest` (called once, on those rows gathered; null: the exact
  // FAISS search).
  void FindCentroids(const float* tokens, size_t n, uint32_t* ids,
                     const ResidualCodecOptions::NearestFn& nearest) const;

 private:
  ResidualCodec() = default;
  // sign_dims_ and by_signs_, for fixed centroids.
  void MakeSignIndex();
  // The hash of a token's signs over sign_dims_; false when one is 0.
  bool SignKey(const float* x, uint64_t* key) const;
  // Checks the options shared by both ways of training.
  static absl::Status CheckOptions(uint32_t dim, const ResidualCodecOptions& options);
  // With the centroids set: the gain range and the buckets from (a sample
  // of) the n training tokens, then the training error.
  void FitCodes(const float* tokens, size_t n, const ResidualCodecOptions& options);
  // Bucket values from the residuals of the sample (n x dim_).
  void FitBuckets(const std::vector<float>& residuals, size_t n);
  // The gain byte of a token on centroid c, and the gain it stands for.
  uint8_t GainLevel(const float* x, const float* c) const;
  float GainOf(uint8_t level) const { return gain_max_ * float(level) / 256.f; }
  // Nearest centroids (by inner product) of n tokens.
  std::vector<uint32_t> Assign(const float* tokens, size_t n) const;
  // assigner_ := an exact inner-product index of the centroids.
  void MakeAssigner() const;

  uint32_t dim_ = 0;
  uint32_t bits_ = 0;
  uint32_t num_centroids_ = 0;
  std::vector<float> centroids_;  // num_centroids_ x dim_
  float gain_max_ = 0.f;          // 0: no gain byte
  bool fixed_ = false;            // centroids given, not trained
  // Fixed centroids: the dimensions where no centroid is 0, and the
  // centroid of each sign pattern over them (kAmbiguous when shared).
  std::vector<uint32_t> sign_dims_;
  absl::flat_hash_map<uint64_t, uint32_t> by_signs_;
  std::vector<float> values_;   // dim_ x 2^bits_
  std::vector<float> cutoffs_;  // dim_ x (2^bits_ - 1)
  // The centroids in a FAISS flat index (a copy of the table), made on the
  // first Assign: callers that find the centroids themselves
  // (EncodeWithCentroids) never pay its memory. Searched concurrently.
  mutable absl::once_flag assigner_once_;
  mutable std::shared_ptr<const faiss::IndexFlatIP> assigner_;
  double train_mse_ = 0;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ANN_RESIDUAL_CODEC_H_
