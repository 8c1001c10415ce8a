#include "dataset/vecs.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/types.h"
#include "dataset/input_file.h"

namespace attnsearch {
namespace {

template <typename T>
absl::StatusOr<VecsData<T>> ReadVecs(const std::string& path, size_t max_rows) {
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> in, InputFile::Open(path));
  VecsData<T> out;
  int32_t dim = 0;
  while ((max_rows == 0 || out.rows < max_rows) && in->ReadExact(&dim, 4)) {
    if (dim <= 0 || uint32_t(dim) > kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": record ", out.rows, ": dimension ",
                                                     dim, " is not in 1..", kMaxDim));
    }
    if (out.rows == 0) out.dim = uint32_t(dim);
    if (uint32_t(dim) != out.dim) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": record ", out.rows, ": dimension ",
                                                     dim, " differs from ", out.dim));
    }
    const size_t at = out.values.size();
    out.values.resize(at + out.dim);
    if (!in->ReadExact(out.values.data() + at, out.dim * sizeof(T))) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": record ", out.rows, ": truncated"));
    }
    ++out.rows;
  }
  ATTN_RETURN_IF_ERROR(in->status());
  return out;
}

}  // namespace

absl::StatusOr<VecsData<float>> ReadFvecs(const std::string& path, size_t max_rows) {
  return ReadVecs<float>(path, max_rows);
}

absl::StatusOr<VecsData<int32_t>> ReadIvecs(const std::string& path, size_t max_rows) {
  return ReadVecs<int32_t>(path, max_rows);
}

}  // namespace attnsearch
