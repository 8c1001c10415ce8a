// Body of the codec fuzz target (see fuzz_targets.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_targets.h"
#include "storage/codec.h"

namespace attnsearch::fuzz {
namespace {

bool SameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], 4) != 0) return false;
  }
  return true;
}

bool SameDoc(const Document& a, const Document& b) {
  return a.id == b.id && a.text == b.text && a.metadata == b.metadata &&
         a.token_texts == b.token_texts && a.token_spans == b.token_spans &&
         a.encoded_by == b.encoded_by;
}

void Tokens(std::string_view value, uint8_t shape) {
  const uint32_t dim = 1 + (shape & 0x1f);
  const TokenDtype dtypes[] = {TokenDtype::kF32, TokenDtype::kBF16, TokenDtype::kInt8,
                               TokenDtype::kBF16};
  const TokenDtype dtype = dtypes[shape >> 6];
  std::vector<float> values;
  uint32_t rows = 0;
  const auto rows_only = codec::TokenRows(value, dim, dtype);
  const absl::Status s = codec::DecodeTokens(value, dim, dtype, &values, &rows);
  ATTN_FUZZ_CHECK(rows_only.ok() == s.ok());
  if (!s.ok()) return;
  ATTN_FUZZ_CHECK(*rows_only == rows);
  ATTN_FUZZ_CHECK(values.size() == size_t(rows) * dim);
  // The encoders take finite values (the engine validates every vector
  // before it is stored); a corrupt int8 scale or bf16 value decodes to a
  // NaN or an infinity, which has no encoding to round-trip through.
  for (float v : values) {
    if (!std::isfinite(v)) return;
  }
  const std::string again = codec::EncodeTokens(values.data(), rows, dim, dtype);
  std::vector<float> values2;
  uint32_t rows2 = 0;
  ATTN_FUZZ_CHECK(codec::DecodeTokens(again, dim, dtype, &values2, &rows2).ok());
  ATTN_FUZZ_CHECK(rows2 == rows);
  if (dtype == TokenDtype::kF32) ATTN_FUZZ_CHECK(again == value);
  // bf16 values widen to f32 and narrow back exactly (NaN payloads aside);
  // int8 is re-quantised with a new scale, so only its shape is compared.
  if (dtype == TokenDtype::kBF16) ATTN_FUZZ_CHECK(SameFloats(values, values2));
}

}  // namespace

int FuzzCodec(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t which = data[0] % 7;
  const uint8_t shape = data[1];
  const std::string_view value(reinterpret_cast<const char*>(data + 2), size - 2);
  switch (which) {
    case 0: {
      const auto label = codec::DecodeLabelKey(value);
      if (label.ok()) ATTN_FUZZ_CHECK(codec::LabelKey(*label) == value);
      break;
    }
    case 1: {
      Document doc;
      if (!codec::DecodeDocRecord(value, &doc).ok()) break;
      const std::string again = codec::EncodeDocRecord(doc);
      Document doc2;
      ATTN_FUZZ_CHECK(codec::DecodeDocRecord(again, &doc2).ok());
      ATTN_FUZZ_CHECK(SameDoc(doc, doc2));
      ATTN_FUZZ_CHECK(codec::EncodeDocRecord(doc2) == again);
      break;
    }
    case 2:
      Tokens(value, shape);
      break;
    case 3: {
      const uint32_t dim = 1 + shape;
      std::vector<float> pooled;
      if (!codec::DecodePooled(value, dim, &pooled).ok()) break;
      ATTN_FUZZ_CHECK(pooled.size() == dim);
      ATTN_FUZZ_CHECK(codec::EncodePooled(pooled.data(), dim) == value);
      break;
    }
    case 4: {
      const auto config = codec::DecodeConfig(value);
      if (!config.ok()) break;
      ATTN_FUZZ_CHECK(config->Validate().ok());
      const std::string again = codec::EncodeConfig(*config);
      const auto config2 = codec::DecodeConfig(again);
      ATTN_FUZZ_CHECK(config2.ok());
      ATTN_FUZZ_CHECK(config2->dim == config->dim && config2->token_dtype == config->token_dtype &&
                      config2->ann_spec == config->ann_spec &&
                      config2->numeric_fields == config->numeric_fields);
      break;
    }
    case 5: {
      const auto tuning = codec::DecodeAnnTuning(value);
      if (tuning.ok()) ATTN_FUZZ_CHECK(codec::EncodeAnnTuning(*tuning) == value);
      break;
    }
    case 6: {
      const auto v = codec::DecodeU64(value);
      if (v.ok()) ATTN_FUZZ_CHECK(codec::EncodeU64(*v) == value);
      break;
    }
  }
  return 0;
}

}  // namespace attnsearch::fuzz
