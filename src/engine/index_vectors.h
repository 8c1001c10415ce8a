// IndexVectors: what a collection's ANN index holds per document, fixed by
// its config's candidates_from.
//
//   pooled, centroids  the document's unit pooled vector (dim values);
//   fde                the fixed dimensional encoding (ann/fde.h) of its
//                      token rows, averaged per partition; a document with
//                      a pooled vector only is encoded as that one row. A
//                      query is encoded from its tokens, summed with their
//                      weights. Both are scaled to unit length: an HNSW
//                      graph over raw encodings (inner products of very
//                      different norms) misses many of their exact
//                      neighbours (scifact text, 100 candidates: two-stage
//                      nDCG@10 0.40 raw, 0.47 unit, 0.61-0.62 exact either
//                      way), and on clustered vectors unit encodings also
//                      rank better (0.94 against 0.90 of the exhaustive top
//                      10 at 100 candidates, 20k documents).
//
// The FDE options and seed are the same for every fde collection and never
// change (kFdeOptions), so encodings made at any time, by any process, stay
// comparable: a rebuild recomputes them from the stored token rows.
//
// Thread safety: immutable; every method may run from any thread.
#ifndef ATTNSEARCH_ENGINE_INDEX_VECTORS_H_
#define ATTNSEARCH_ENGINE_INDEX_VECTORS_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "ann/fde.h"
#include "core/types.h"
#include "storage/doc_store.h"

namespace attnsearch {

// The encodings of fde collections: 20 repetitions of 16 SimHash partitions
// of 8 projected values (2,560 values; fewer when dim < 8), seed fixed.
FdeOptions FdeOptionsFor(uint32_t dim);

class IndexVectors {
 public:
  explicit IndexVectors(const CollectionConfig& config);

  // Values per index vector.
  uint32_t dim() const { return dim_; }
  // The FDE encoder; null unless candidates_from is fde.
  const FdeEncoder* fde() const { return fde_.get(); }

  // The index vector of a document with vectors (num_tokens x config.dim
  // rows and/or a pooled vector) into out (dim() values). Its rows are
  // first rounded to the stored token_dtype, as a rebuild reads them,
  // unless `as_stored` says they were read from the store.
  void OfDocument(const Document& doc, float* out, bool as_stored = false) const;
  // The query's: from its tokens (n x config.dim, weights or null) when it
  // has any, else its pooled vector.
  void OfQuery(const float* tokens, const float* weights, uint32_t n, const float* pooled,
               float* out) const;

  using VectorFn = std::function<absl::Status(Label, const float*)>;
  // Calls fn(label, index vector) for every label >= from that has vectors,
  // in label order (DocStore::ScanPooled, with fde the documents read back
  // in batches). Stops at the first error fn returns.
  absl::Status Scan(const DocStore& store, Label from, const VectorFn& fn) const;

 private:
  const uint32_t token_dim_;
  const TokenDtype token_dtype_;
  std::shared_ptr<const FdeEncoder> fde_;
  uint32_t dim_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_INDEX_VECTORS_H_
