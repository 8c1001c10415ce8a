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
// other field is optional, but a document needs text and/or vectors (a
// pooled vector and/or tokens). `title` and `text` are joined into the
// document text ("title\n\ntext"). A text-only document (no vectors) is
// encoded by the collection's built-in encoder, so its text must contain a
// word; the engine stores it awaiting the encoder until the encoder is
// trained (attnsearch-index trains it at the end of a load). Metadata values
// are strings; numbers and booleans are converted to their JSON spelling.
// Unknown fields are ignored. BEIR corpus lines use `_id` instead of `id`
// (`id` is accepted when `_id` is absent, and `_id` in JSON lines when `id`
// is).
//
// Every error is INVALID_ARGUMENT with a reason naming the field
// ("pooled[3]: expected a number, got string \"NaN\"", "text: invalid UTF-8
// at byte 17"); the caller adds the FILE:LINE location.
#ifndef ATTNSEARCH_INDEXER_RECORD_PARSER_H_
#define ATTNSEARCH_INDEXER_RECORD_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "core/types.h"
#include "engine/document_check.h"

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
  // JSON lines: threads parsing and validating records, beside the one
  // reading (and decompressing) the input. Records come out in input order
  // whatever the count. Default: 0, one per hardware thread.
  uint32_t threads = 0;
  // A resumed load's checkpoint: records at or before this position were
  // loaded by an earlier run. Sources that can (npy) pass them without
  // converting their vectors. Default: 0.
  uint64_t skip_to = 0;
};

// Parses one JSON line into *out (cleared first) and validates it with
// ValidateDocument. INVALID_ARGUMENT with the reason on any problem. A line
// that is not valid UTF-8 is reported as "FIELD: invalid UTF-8 at byte N",
// FIELD being the top-level field whose string holds the first bad byte and
// N its offset in that string's decoded value ("title", "text", "id",
// "metadata", ...).
//
// Records of the common shape are parsed by simdjson; anything else (every
// malformed record among them) by the full parser, which names the field
// and the reason. Both give the same Document.
//
// `padded`: at least kJsonLinePadding readable bytes follow the line (e.g.
// InputFile::ReadLine's spare capacity), so the fast parser reads it in
// place instead of copying it.
inline constexpr size_t kJsonLinePadding = 64;
absl::Status ParseJsonLine(std::string_view line, const ParseOptions& options, Document* out,
                           bool padded = false);

// The full parser alone: ParseJsonLine's oracle in tests.
absl::Status ParseJsonLineFully(std::string_view line, const ParseOptions& options, Document* out);

// The fields of one JSON line as ParseJsonLine reads them, without
// requiring content or validating the document: for side files that add
// text and metadata to vectors read from elsewhere.
absl::Status ParseJsonLineFields(std::string_view line, const ParseOptions& options, Document* out);

// Checks the document by the engine's own rules (engine/document_check.h:
// CheckDocument, with `dim` and `max_tokens`), so that a bad document never
// enters a batch, and puts its vectors in their stored form.
absl::Status ValidateDocument(Document* doc, const ParseOptions& options);

// Approximate size of the document as a protobuf message, for batching by
// bytes.
size_t EstimateWireBytes(const Document& doc);

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_RECORD_PARSER_H_
