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

std::string_view RetrievalName(Retrieval r) {
  switch (r) {
    case Retrieval::kSemantic:
      return "semantic";
    case Retrieval::kLexical:
      return "lexical";
    case Retrieval::kHybrid:
      return "hybrid";
    case Retrieval::kDefault:
      break;
  }
  return "default";
}

std::string_view CandidateSourceName(CandidateSource source) {
  switch (source) {
    case CandidateSource::kCentroids:
      return "centroids";
    case CandidateSource::kFde:
      return "fde";
    case CandidateSource::kPooled:
      break;
  }
  return "pooled";
}

absl::StatusOr<CandidateSource> ParseCandidateSource(std::string_view name,
                                                     std::string_view field) {
  for (CandidateSource s :
       {CandidateSource::kPooled, CandidateSource::kCentroids, CandidateSource::kFde}) {
    if (name == CandidateSourceName(s)) return s;
  }
  if (name.empty()) return CandidateSource::kPooled;
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": unknown source '",
                                                 std::string(name), "' (pooled, centroids, fde)"));
}

std::string_view TokenCodecName(TokenCodecKind kind) {
  return kind == TokenCodecKind::kResidual ? "residual" : "rows";
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
  if (numeric_fields.size() > kMaxNumericFields) {
    return absl::InvalidArgumentError(absl::StrCat("config.numeric_fields: ", numeric_fields.size(),
                                                   " fields exceed the limit of ",
                                                   kMaxNumericFields));
  }
  if (token_codec.kind != TokenCodecKind::kRows && token_codec.kind != TokenCodecKind::kResidual) {
    return absl::InvalidArgumentError("config.token_codec.name: unknown codec");
  }
  if (candidates_from != CandidateSource::kPooled &&
      candidates_from != CandidateSource::kCentroids && candidates_from != CandidateSource::kFde) {
    return absl::InvalidArgumentError("config.candidates_from: unknown source");
  }
  if (candidates_from == CandidateSource::kFde && token_codec.kind == TokenCodecKind::kResidual &&
      !token_codec.keep_full_precision) {
    return absl::InvalidArgumentError(
        "config.candidates_from: fde needs the token rows kept "
        "(config.token_codec.keep_full_precision): its index is rebuilt from them");
  }
  if (candidates_from == CandidateSource::kCentroids &&
      token_codec.kind != TokenCodecKind::kResidual) {
    return absl::InvalidArgumentError(
        "config.candidates_from: centroids needs config.token_codec.name residual (its "
        "centroids are what the first stage probes)");
  }
  if (token_codec.kind == TokenCodecKind::kResidual) {
    const uint32_t b = token_codec.bits;
    if (b != 1 && b != 2 && b != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.token_codec.bits: must be 1, 2 or 4, got ", b));
    }
    const uint32_t k = token_codec.centroids;
    if (k != 0 && (k < 16 || k > 65536)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.token_codec.centroids: must be 0 (chosen) or 16..65536, got ", k));
    }
  }
  for (size_t i = 0; i < numeric_fields.size(); ++i) {
    const std::string& f = numeric_fields[i];
    const std::string field = absl::StrCat("config.numeric_fields[", i, "]");
    if (f.empty() || f.size() > kMaxFieldNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": must be 1..", kMaxFieldNameBytes, " characters"));
    }
    for (char ch : f) {
      const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": \"", f, "\" has a character outside [A-Za-z0-9_.-]"));
      }
    }
    for (size_t j = 0; j < i; ++j) {
      if (numeric_fields[j] == f) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": \"", f, "\" is also config.numeric_fields[", j, "]"));
      }
    }
  }
  return absl::OkStatus();
}

bool CollectionConfig::IsNumericField(std::string_view key) const {
  for (const auto& f : numeric_fields) {
    if (f == key) return true;
  }
  return false;
}

}  // namespace attnsearch
