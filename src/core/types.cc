#include "core/types.h"

#include "absl/strings/str_cat.h"

namespace attnsearch {

std::string_view TokenDtypeName(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kF32:
      return "f32";
    case TokenDtype::kBF16:
      return "bf16";
  }
  return "unknown";
}

size_t TokenDtypeSize(TokenDtype dtype) {
  return dtype == TokenDtype::kF32 ? 4 : 2;
}

absl::Status CollectionConfig::Validate() const {
  if (dim == 0 || dim > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.dim: must be in 1..", kMaxDim, ", got ", dim));
  }
  if (token_dtype != TokenDtype::kF32 && token_dtype != TokenDtype::kBF16) {
    return absl::InvalidArgumentError("config.token_dtype: unknown dtype");
  }
  if (ann_spec.empty()) {
    return absl::InvalidArgumentError("config.ann_spec: must not be empty");
  }
  return absl::OkStatus();
}

}  // namespace attnsearch
