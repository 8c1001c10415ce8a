#include "engine/index_vectors.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "core/status.h"
#include "core/vector_math.h"
#include "storage/codec.h"

namespace attnsearch {
namespace {

// Documents read back per batch by an fde scan.
constexpr size_t kScanBatch = 256;

}  // namespace

FdeOptions FdeOptionsFor(uint32_t dim) {
  return FdeOptions{.repetitions = 20,
                    .simhash_bits = 4,
                    .projection_dim = std::min<uint32_t>(8, dim),
                    .final_dim = 0,
                    .fill_empty = true,
                    .seed = 0x6174746e66646531ull};  // never changes: stored encodings use it
}

IndexVectors::IndexVectors(const CollectionConfig& config)
    : token_dim_(config.dim), token_dtype_(config.token_dtype), dim_(config.dim) {
  if (config.candidates_from != CandidateSource::kFde || config.dim == 0) return;
  // The options are valid for every dim >= 1.
  fde_ = FdeEncoder::Create(config.dim, FdeOptionsFor(config.dim)).value();
  dim_ = fde_->output_dim();
}

void IndexVectors::OfDocument(const Document& doc, float* out, bool as_stored) const {
  if (fde_ == nullptr) {
    std::copy(doc.pooled.begin(), doc.pooled.end(), out);
  } else if (doc.num_tokens > 0 && !as_stored && token_dtype_ != TokenDtype::kF32) {
    // The rows as the store keeps them, so that a rebuild encodes the same.
    std::vector<float> rows;
    uint32_t n = 0;
    const absl::Status decoded = codec::DecodeTokens(
        codec::EncodeTokens(doc.tokens.data(), doc.num_tokens, token_dim_, token_dtype_),
        token_dim_, token_dtype_, &rows, &n);
    fde_->EncodeDocument(decoded.ok() ? rows.data() : doc.tokens.data(), doc.num_tokens, out);
  } else if (doc.num_tokens > 0) {
    fde_->EncodeDocument(doc.tokens.data(), doc.num_tokens, out);
  } else {
    fde_->EncodeDocument(doc.pooled.data(), 1, out);
  }
  if (fde_ != nullptr) NormalizeInPlace(out, dim_);
}

void IndexVectors::OfQuery(const float* tokens, const float* weights, uint32_t n,
                           const float* pooled, float* out) const {
  if (fde_ == nullptr) {
    std::copy(pooled, pooled + dim_, out);
  } else if (n > 0) {
    fde_->EncodeQuery(tokens, weights, n, out);
  } else {
    fde_->EncodeQuery(pooled, nullptr, 1, out);
  }
  if (fde_ != nullptr) NormalizeInPlace(out, dim_);
}

absl::Status IndexVectors::Scan(const DocStore& store, Label from, const VectorFn& fn) const {
  if (fde_ == nullptr) return store.ScanPooled(from, fn);
  std::vector<Label> labels;
  std::vector<std::optional<Document>> docs;
  std::vector<float> v(dim_);
  const auto flush = [&]() -> absl::Status {
    ATTN_RETURN_IF_ERROR(store.GetDocuments(labels, /*include_vectors=*/true, &docs));
    for (size_t i = 0; i < labels.size(); ++i) {
      // A document deleted since the scan saw it is left out: its
      // tombstone would drop it anyway.
      if (!docs[i] || docs[i]->pooled.empty()) continue;
      OfDocument(*docs[i], v.data(), /*as_stored=*/true);
      ATTN_RETURN_IF_ERROR(fn(labels[i], v.data()));
    }
    labels.clear();
    return absl::OkStatus();
  };
  ATTN_RETURN_IF_ERROR(store.ScanPooled(from, [&](Label l, const float*) {
    labels.push_back(l);
    return labels.size() >= kScanBatch ? flush() : absl::OkStatus();
  }));
  return flush();
}

}  // namespace attnsearch
