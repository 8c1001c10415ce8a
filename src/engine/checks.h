// Checks the engine's write path and search pipeline share: vectors
// normalised with the field and row of a bad one named, pooling, and the
// request memory limit.
#ifndef ATTNSEARCH_ENGINE_CHECKS_H_
#define ATTNSEARCH_ENGINE_CHECKS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/types.h"

namespace attnsearch {

// Normalises `rows` rows of `dim` values at `v` in place (NormalizeInPlace).
// INVALID_ARGUMENT "FIELD: row R has a NaN or infinite value" or "... has
// zero norm" for the first row that has no direction.
absl::Status NormalizeRows(float* v, size_t rows, uint32_t dim, absl::string_view field);

// The weighted mean of `rows` unit token rows, normalised, into *out
// (PoolRows); false when they cancel out.
bool PoolTokens(const std::vector<float>& tokens, uint32_t rows, uint32_t dim, const float* weights,
                std::vector<float>* out);

// RESOURCE_EXHAUSTED when `bytes` exceed `limit` (0: no limit): "WHAT would
// hold X MiB, over the request memory limit (max_request_mb) of Y MiB".
absl::Status CheckRequestBytes(size_t bytes, size_t limit, absl::string_view what);

// Bytes one stored token row takes in `config`'s dtype (int8: with its
// scale).
size_t StoredRowBytes(const CollectionConfig& config);

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_CHECKS_H_
