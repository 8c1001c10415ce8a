#include "core/types.h"

#include "absl/strings/str_cat.h"

namespace attnsearch {

std::string_view TokenDtypeName(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kF32:
      return "f32";
    case TokenDtype::kBF16:
      return "bf16";
    case TokenDtype::kInt8:
      return "int8";
  }
  return "unknown";
}

size_t TokenDtypeSize(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kF32:
      return 4;
    case TokenDtype::kBF16:
      return 2;
    case TokenDtype::kInt8:
      return 1;
  }
  return 4;
}

size_t TokenRowBytes(TokenDtype dtype, uint32_t dim) {
  return size_t(dim) * TokenDtypeSize(dtype) + (dtype == TokenDtype::kInt8 ? 4 : 0);
}

absl::Status CollectionConfig::Validate() const {
  if (dim == 0 || dim > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.dim: must be in 1..", kMaxDim, ", got ", dim));
  }
  if (token_dtype != TokenDtype::kF32 && token_dtype != TokenDtype::kBF16 &&
      token_dtype != TokenDtype::kInt8) {
    return absl::InvalidArgumentError("config.token_dtype: unknown dtype");
  }
  if (ann_spec.empty()) {
    return absl::InvalidArgumentError("config.ann_spec: must not be empty");
  }
  return absl::OkStatus();
}

}  // namespace attnsearch
