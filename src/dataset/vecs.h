// TEXMEX .fvecs / .ivecs files (plain or gzip): each record is a little-endian
// int32 dimension followed by that many float32 (fvecs) or int32 (ivecs)
// values. Every record of a file must have the same dimension.
#ifndef ATTNSEARCH_DATASET_VECS_H_
#define ATTNSEARCH_DATASET_VECS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnsearch {

template <typename T>
struct VecsData {
  uint32_t rows = 0;
  uint32_t dim = 0;
  std::vector<T> values;  // rows x dim, row-major
  const T* row(size_t i) const { return values.data() + i * dim; }
};

// Reads up to max_rows records (all when 0). Errors name the file and the
// record: a bad dimension, a dimension differing from the first record's, a
// truncated record.
absl::StatusOr<VecsData<float>> ReadFvecs(const std::string& path, size_t max_rows = 0);
absl::StatusOr<VecsData<int32_t>> ReadIvecs(const std::string& path, size_t max_rows = 0);

}  // namespace attnsearch

#endif  // ATTNSEARCH_DATASET_VECS_H_
