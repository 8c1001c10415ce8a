// NumPy .npy arrays (format versions 1.0, 2.0 and 3.0), memory-mapped
// read-only: what numpy.save writes.
//
// Supported: C order, little-endian or byte-order-free element types —
// floats ('<f4' float32, '<f2' float16, '<V2' bfloat16: what ml_dtypes'
// bfloat16 and torch's bfloat16 viewed as 'V2' are saved as), integers
// ('<i1'..'<i8', '<u1'..'<u8') and fixed-width strings ('<U<n>' UTF-32,
// '|S<n>' bytes). Anything else is refused when opened, naming the file
// and what it holds; so is a file shorter than its header says.
#ifndef ATTNSEARCH_DATASET_NPY_H_
#define ATTNSEARCH_DATASET_NPY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnsearch {

class NpyArray {
 public:
  // The element type's family: descr()'s letter ('f', 'V', 'i', 'u', 'U',
  // 'S').
  enum class Kind { kFloat32, kFloat16, kBFloat16, kSigned, kUnsigned, kUnicode, kBytes };

  // Maps `path` and reads its header. NOT_FOUND if missing; DATA_LOSS when
  // the file is shorter than its header says (truncated); INVALID_ARGUMENT
  // for a file that is not .npy, Fortran order, big-endian, a structured
  // or object dtype, or a type not listed above. Messages start with the
  // path.
  static absl::StatusOr<NpyArray> Open(const std::string& path);

  NpyArray(NpyArray&& other) noexcept;
  NpyArray& operator=(NpyArray&& other) noexcept;
  NpyArray(const NpyArray&) = delete;
  NpyArray& operator=(const NpyArray&) = delete;
  ~NpyArray();

  const std::string& path() const { return path_; }
  // The header's dtype, e.g. "<f4", "<U12", "|S8".
  const std::string& descr() const { return descr_; }
  Kind kind() const { return kind_; }
  // Bytes per element (per character times width for strings).
  size_t item_bytes() const { return item_bytes_; }
  const std::vector<uint64_t>& shape() const { return shape_; }
  // shape[0] (1 for a 0-d array).
  uint64_t rows() const { return shape_.empty() ? 1 : shape_[0]; }
  // Elements per row: the product of shape[1..] (1 for a 1-D array).
  uint64_t cols() const;
  // "1000 x 128 '<f4'": for messages.
  std::string Describe() const;

  // Element i (row-major) of an integer array.
  int64_t IntAt(uint64_t i) const;
  // Row i of a float array converted to f32 into out[0..cols()); rows
  // [first, first + count) with RowsToFloat.
  void RowsToFloat(uint64_t first, uint64_t count, float* out) const;
  // Element i of a string array as UTF-8, trailing NULs removed. False when a
  // '<U' element holds a value that is not a Unicode scalar value.
  bool StringAt(uint64_t i, std::string* out) const;

 private:
  NpyArray() = default;
  const uint8_t* element(uint64_t i) const { return data_ + i * item_bytes_; }

  std::string path_;
  std::string descr_;
  Kind kind_ = Kind::kFloat32;
  size_t item_bytes_ = 0;
  std::vector<uint64_t> shape_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint8_t* data_ = nullptr;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_DATASET_NPY_H_
