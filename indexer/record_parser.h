// Parsing and validation of one input record (a JSON line) into a Document.
//
// JSON lines: one object per line,
//
//   {"id": "d1", "title": "...", "text": "...", "metadata": {"lang": "en"},
//    "pooled": [0.1, ...],                        // dim numbers
//    "tokens": [[...], [...]]                      // rows of dim numbers, or
//    "tokens": {"rows": 2, "cols": 128, "values": [...]},
//    "token_texts": ["first", "second"]}          // one per token row
//
// `id` is required (a non-empty string of at most kMaxIdBytes bytes); every
// other field is optional, but a document needs a pooled vector and/or
// tokens (there is no built-in text encoder yet). `title` and `text` are
// joined into the document text ("title\n\ntext"). Metadata values are
// strings; numbers and booleans are converted to their JSON spelling.
// Unknown fields are ignored. BEIR corpus lines use `_id` instead of `id`.
//
// Every error is INVALID_ARGUMENT with a reason naming the field
// ("pooled[3]: expected a number, got string \"NaN\""); the caller adds the
// FILE:LINE location.
#ifndef ATTNSEARCH_INDEXER_RECORD_PARSER_H_
#define ATTNSEARCH_INDEXER_RECORD_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "core/types.h"

namespace attnsearch::indexer {

struct ParseOptions {
  // Dimension of the target collection: pooled vectors and token rows must
  // have exactly this many values. Required (> 0).
  uint32_t dim = 0;
  // BEIR corpus.jsonl: the id field is `_id`. Default: false (`id`).
  bool beir = false;
  // Most token rows accepted per document (the engine's limit).
  // Default: 16384.
  uint32_t max_tokens = 16384;
};

// The reason given for a document without vectors.
inline constexpr char kNoVectorsReason[] =
    "no pooled vector or tokens; text-only documents need the built-in encoder, "
    "which is not available yet";

// Parses one JSON line into *out (cleared first) and validates it with
// ValidateDocument. INVALID_ARGUMENT with the reason on any problem.
absl::Status ParseJsonLine(std::string_view line, const ParseOptions& options, Document* out);

// Checks what the engine would reject, so that a bad document never enters a
// batch: a valid id, vectors present, pooled of `dim` values, a token matrix
// of rows x dim, every value finite and representable as a float, no
// all-zero vector, a non-zero token mean when pooled is absent, and one
// token text per token row.
absl::Status ValidateDocument(const Document& doc, const ParseOptions& options);

// Approximate size of the document as a protobuf message, for batching by
// bytes.
size_t EstimateWireBytes(const Document& doc);

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_RECORD_PARSER_H_
