// The rules every stored document follows, one copy for the engine
// (Collection::Upsert) and the batch indexer (attnsearch-index checks each
// record before it enters a batch, so the engine and the tool refuse the
// same documents with the same words).
#ifndef ATTNSEARCH_ENGINE_DOCUMENT_CHECK_H_
#define ATTNSEARCH_ENGINE_DOCUMENT_CHECK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/types.h"

namespace attnsearch {

struct DocumentRules {
  // The collection's dimension. Required.
  uint32_t dim = 0;
  // Most token rows a document may have. Default: 16384.
  uint32_t max_tokens = 16384;
  // Metadata keys whose values must parse as finite numbers. Default: none.
  std::vector<std::string> numeric_fields;
};

// The reason given for a document with neither text nor vectors.
inline constexpr char kNoContentReason[] = "no text, pooled vector or tokens";

// Whether the document has no vectors (the built-in encoder makes them).
inline bool IsTextOnly(const Document& doc) {
  return doc.pooled.empty() && doc.num_tokens == 0 && doc.tokens.empty();
}

// Checks `doc` against the rules and puts its vectors in their stored form:
// every row normalised (NormalizeInPlace: a row of zeros, NaN or infinity
// is refused), a missing pooled vector pooled from the rows (PoolRows:
// refused when they cancel out), a missing token matrix the pooled vector
// as one row. A text-only document needs text with a word (its vectors are
// the encoder's; it may carry no token texts or spans). Also: the id (1 to
// kMaxIdBytes bytes), valid UTF-8 text, numeric fields that are numbers,
// token texts and spans one per row, spans inside the text.
//
// INVALID_ARGUMENT naming the field within the document after `where`
// ("documents[3]"): "documents[3].tokens: row 5 has zero norm"; with an
// empty `where`, "tokens: row 5 has zero norm".
absl::Status CheckDocument(Document* doc, const DocumentRules& rules, absl::string_view where);

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_DOCUMENT_CHECK_H_
