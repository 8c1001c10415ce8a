// Byte encodings of the values stored in RocksDB (see DESIGN.md, "Storage
// schema"). Decoders never trust their input: a truncated or malformed value
// is a DATA_LOSS error, never a crash.
#ifndef ATTNSEARCH_STORAGE_CODEC_H_
#define ATTNSEARCH_STORAGE_CODEC_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/types.h"

namespace attnsearch::codec {

// 8-byte big-endian key of a label, so that keys sort in label order.
std::string LabelKey(Label label);
absl::StatusOr<Label> DecodeLabelKey(std::string_view key);

// The `docs` value: external id, text, metadata and token surface forms.
// Vectors are not part of it.
std::string EncodeDocRecord(const Document& doc);
// Fills id, text, metadata and token_texts of *doc.
absl::Status DecodeDocRecord(std::string_view value, Document* doc);

// The `tokens` value: u32 rows, then (int8 only) rows f32 scales, then
// rows x dim elements of `dtype`.
std::string EncodeTokens(const float* tokens, uint32_t rows, uint32_t dim, TokenDtype dtype);
// Number of rows of an encoded token matrix, after checking its size.
absl::StatusOr<uint32_t> TokenRows(std::string_view value, uint32_t dim, TokenDtype dtype);
// The elements of an encoded token matrix of `rows` rows.
inline const char* TokenData(std::string_view value, TokenDtype dtype, uint32_t rows) {
  return value.data() + 4 + (dtype == TokenDtype::kInt8 ? size_t(rows) * 4 : 0);
}
// The per-row scales of an encoded int8 token matrix.
inline const char* TokenScales(std::string_view value) { return value.data() + 4; }
// Decodes an encoded token matrix into f32 values.
absl::Status DecodeTokens(std::string_view value, uint32_t dim, TokenDtype dtype,
                          std::vector<float>* out, uint32_t* rows);

// The `pooled` value: dim little-endian f32 values.
std::string EncodePooled(const float* pooled, uint32_t dim);
absl::Status DecodePooled(std::string_view value, uint32_t dim, std::vector<float>* out);

// The collection configuration kept in `meta`.
std::string EncodeConfig(const CollectionConfig& config);
absl::StatusOr<CollectionConfig> DecodeConfig(std::string_view value);

// The tuned ANN knobs kept in `meta` (versioned: a newer version is
// DATA_LOSS for this build rather than misread).
std::string EncodeAnnTuning(const AnnTuning& tuning);
absl::StatusOr<AnnTuning> DecodeAnnTuning(std::string_view value);

// A u64 kept in `meta`.
std::string EncodeU64(uint64_t v);
absl::StatusOr<uint64_t> DecodeU64(std::string_view value);

}  // namespace attnsearch::codec

#endif  // ATTNSEARCH_STORAGE_CODEC_H_
