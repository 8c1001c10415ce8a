// FAISS storage indexes that score with attnsearch's SIMD kernels
// (simd_distance.h): the flat f32 index, and the scalar-quantiser index for
// 8-bit ("SQ8") and half-precision ("SQfp16") codes.
//
// They are subclasses of FAISS's IndexFlat and IndexScalarQuantizer with the
// same codes and the same serialised form; only get_distance_computer()
// differs. Installed as the storage of an IndexHNSW they serve both FAISS's
// graph construction (hnsw_add_vertices scores through the storage's
// distance computer) and AnnIndex's graph search.
#ifndef ATTNSEARCH_ANN_SIMD_STORAGE_H_
#define ATTNSEARCH_ANN_SIMD_STORAGE_H_

#include <faiss/Index.h>

#include <memory>
#include <string>

#include "ann/simd_distance.h"

namespace attnsearch {

// Replaces the distance scoring of `index` by the SIMD kernels where it is
// one of the kinds above, or an IndexHNSW whose storage is; other indexes
// are returned unchanged. Codes, training and counts carry over.
std::unique_ptr<faiss::Index> UseSimdDistances(std::unique_ptr<faiss::Index> index);

// Describes the scoring of `index` after UseSimdDistances, e.g.
// "simd-avx512 f32" or "faiss" (FAISS's own code).
std::string DistanceImplementation(const faiss::Index& index);

// Inner products of one query with stored codes of a SIMD storage index,
// callable without virtual dispatch (the graph search's inner loop).
class CodeScorer {
 public:
  // Binds `query` to the codes of `storage`; false when `storage` is not a
  // trained SIMD storage index with the inner-product metric. `storage` and
  // `query` must outlive the scorer's use; codes added later are not seen.
  bool Bind(const faiss::Index& storage, const float* query);
  // After Bind: scores against stored row i instead of the query (decoded
  // into *buffer when the codes are not f32). For graph construction.
  void BindRow(size_t i, std::vector<float>* buffer);

  float operator()(size_t i) const {
    const uint8_t* c = codes_ + i * code_size_;
    switch (kind_) {
      case Kind::kF32:
        return kernels_->dot_f32(query_, reinterpret_cast<const float*>(c), d_);
      case Kind::kF16:
        return kernels_->dot_f16(query_, reinterpret_cast<const uint16_t*>(c), d_);
      case Kind::kSq8:
        break;
    }
    return sq8_.constant + kernels_->dot_u8(sq8_.scale.data(), c, d_);
  }
  // Start of the codes of row i and their size in bytes (for prefetching).
  const uint8_t* row(size_t i) const { return codes_ + i * code_size_; }
  size_t code_size() const { return code_size_; }

 private:
  enum class Kind { kF32, kF16, kSq8 };
  Kind kind_ = Kind::kF32;
  const uint8_t* codes_ = nullptr;
  size_t code_size_ = 0;
  size_t d_ = 0;
  const simd::Kernels* kernels_ = nullptr;
  const float* query_ = nullptr;
  const float* vmin_ = nullptr;  // 8-bit ranges
  const float* vdiff_ = nullptr;
  simd::Sq8Query sq8_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ANN_SIMD_STORAGE_H_
