// LexicalIndex: BM25 over a collection's texts, on Xapian: the index behind
// the lexical candidate generator.
//
// It is derived state, like the ANN index: the collection's store stays the
// one source of truth. The index holds, per document with text, its words
// under the document's label, and the store sequence it is current to
// (applied()). Words are what the built-in encoder reads: text::Tokenizer's
// tokens stemmed by text::Stemmer, so the lexical and the semantic stage see
// the same words. The owner keeps it current (Put and Remove on each write,
// Commit once its own write is durable) and rebuilds it from the store when
// Open reports it damaged or applied() is behind the store.
//
//   ATTN_ASSIGN_OR_RETURN(auto index, LexicalIndex::Open(dir, {}));
//   ATTN_RETURN_IF_ERROR(index->Put(label, "The wind turbine feeds the grid."));
//   ATTN_RETURN_IF_ERROR(index->Commit(sequence));
//   ATTN_ASSIGN_OR_RETURN(std::vector<LexicalHit> hits, index->Search("turbines", 10));
//
// Scores are Xapian's BM25Weight(k1, k2 = 0, k3 = 1, b, min_normlen = 0.5):
// per query word t (counted once per occurrence in the query, qf),
//   idf' = log(r < 2 ? r / 2 + 1 : r), r = (N - n_t + 0.5) / (n_t + 0.5)
//   part = idf' · (k1 + 1) · 2·qf/(1 + qf) · tf / (k1 · ((1 - b) + b · L) + tf)
// with N documents, n_t of them holding t, tf its count in the document and
// L = max(doc length / mean doc length, 0.5); a document scores the sum.
//
// Thread safety: every method may be called from any thread; calls are
// serialised inside (Xapian's database objects are not thread-safe).
#ifndef ATTNSEARCH_LEXICAL_LEXICAL_INDEX_H_
#define ATTNSEARCH_LEXICAL_LEXICAL_INDEX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/types.h"

namespace attnsearch {

struct LexicalOptions {
  // Snowball stemmer of the words ("english"), or "none". Default: "english".
  std::string stem_language = "english";
  // BM25's term frequency saturation and length normalisation. Defaults:
  // 0.9 and 0.4 (as BEIR's BM25 baselines use).
  double k1 = 0.9;
  double b = 0.4;

  // INVALID_ARGUMENT naming the field: k1 < 0 or not finite, b outside
  // [0, 1], an unknown stemmer.
  absl::Status Validate() const;
};

struct LexicalHit {
  Label label = 0;
  double score = 0;
};

class LexicalIndex {
 public:
  // Opens the index in folder `dir`, creating it when absent.
  // INVALID_ARGUMENT for bad options; DATA_LOSS when the folder holds an
  // index that cannot be opened (damaged: delete it and rebuild).
  static absl::StatusOr<std::unique_ptr<LexicalIndex>> Open(const std::string& dir,
                                                            const LexicalOptions& options);
  ~LexicalIndex();
  LexicalIndex(const LexicalIndex&) = delete;
  LexicalIndex& operator=(const LexicalIndex&) = delete;

  // Indexes `text` as document `label`, in place of what it held; a text
  // without words leaves the label out. INVALID_ARGUMENT for invalid UTF-8
  // (nothing changes).
  absl::Status Put(Label label, std::string_view text);
  // Leaves `label` out (nothing to do when it is not indexed).
  absl::Status Remove(Label label);
  // `text` at label `to` in place of label `from`: when `from` holds the
  // same text (an overwrite that kept it, a re-encoding), only its label
  // changes, without indexing the words again; otherwise Remove(from) then
  // Put(to, text).
  absl::Status Move(Label from, Label to, std::string_view text);
  // Makes every change so far durable, and records that the index is current
  // up to the owner's sequence `applied`.
  absl::Status Commit(uint64_t applied);
  // The sequence of the last Commit (0: never committed).
  uint64_t applied() const;
  // Documents indexed, committed or not.
  uint64_t documents() const;

  // The best `k` documents for `query` by BM25, best first (equal scores by
  // label), changes not yet committed included; only labels `accept` takes
  // when it is set. Empty when the query has no word. INVALID_ARGUMENT for
  // invalid UTF-8.
  absl::StatusOr<std::vector<LexicalHit>> Search(
      std::string_view query, size_t k, const std::function<bool(Label)>* accept = nullptr) const;

  // The words `text` is indexed and searched as, in text order.
  absl::StatusOr<std::vector<std::string>> Terms(std::string_view text) const;

 private:
  struct Rep;
  explicit LexicalIndex(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_LEXICAL_LEXICAL_INDEX_H_
