#include "engine/checks.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/vector_math.h"

namespace attnsearch {

absl::Status NormalizeRows(float* v, size_t rows, uint32_t dim, absl::string_view field) {
  for (size_t r = 0; r < rows; ++r) {
    float* row = v + r * dim;
    // The sum of squares is finite exactly when every value is, so the
    // finiteness check is needed only to say why a row was refused.
    if (NormalizeInPlace(row, dim)) continue;
    if (!AllFinite(row, dim)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": row ", r, " has a NaN or infinite value"));
    }
    return absl::InvalidArgumentError(absl::StrCat(field, ": row ", r, " has zero norm"));
  }
  return absl::OkStatus();
}

bool PoolTokens(const std::vector<float>& tokens, uint32_t rows, uint32_t dim, const float* weights,
                std::vector<float>* out) {
  out->assign(dim, 0.f);
  return PoolRows(tokens.data(), rows, dim, weights, out->data());
}

absl::Status CheckRequestBytes(size_t bytes, size_t limit, absl::string_view what) {
  if (limit == 0 || bytes <= limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "%s would hold %.1f MiB, over the request memory limit (max_request_mb) of %.1f MiB", what,
      double(bytes) / (1 << 20), double(limit) / (1 << 20)));
}

size_t StoredRowBytes(const CollectionConfig& config) {
  return size_t(config.dim) * TokenDtypeSize(config.token_dtype) +
         (config.token_dtype == TokenDtype::kInt8 ? 4 : 0);
}

}  // namespace attnsearch
