// FilterIndex: the index of one collection's metadata filters, in memory
// (derived from the store, rebuilt on open like the ANN index):
//
//   postings  metadata key -> value -> the labels carrying it, increasing
//             (labels are assigned increasing, so indexing appends)
//   numeric   numeric field -> (value, label) ordered by value, so a range
//             is one walk: O(log n + matches)
//
// Dead labels stay in it; searches remove the tombstones from a match.
//
// Thread safety: every method may be called concurrently (a reader/writer
// lock of its own).
#ifndef ATTNSEARCH_ENGINE_FILTER_INDEX_H_
#define ATTNSEARCH_ENGINE_FILTER_INDEX_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/label_bitmap.h"
#include "core/types.h"

namespace attnsearch {

// A metadata condition: the document's value for `key` is one of `values`.
struct MetadataCondition {
  std::string key;
  std::vector<std::string> values;
};

// A range condition on a numeric field (CollectionConfig::numeric_fields):
// the document's value lies within every bound given. At least one bound;
// not both gt and gte, nor both lt and lte; no NaN; lower <= upper. A
// document without the field does not match.
struct RangeCondition {
  std::string key;
  std::optional<double> gte, gt, lte, lt;
};

class FilterIndex {
 public:
  // `config` gives the numeric fields; it must outlive the index.
  explicit FilterIndex(const CollectionConfig& config) : config_(config) {}

  // INVALID_ARGUMENT naming the condition (`filter.must[0].key: must not be
  // empty`, `filter.ranges[1].key: "size" is not a numeric field of this
  // collection`, ...) when a filter is malformed.
  static absl::Status Check(const std::vector<MetadataCondition>& must,
                            const std::vector<RangeCondition>& ranges,
                            const CollectionConfig& config);

  // Indexes the metadata of document `label`. Adding a label again (a
  // catch-up may) changes nothing.
  void Add(Label label, const Document& doc);

  // The labels passing every condition (all of `must`, all of `ranges`),
  // tombstoned ones included. REQUIRES: at least one condition.
  LabelBitmap Match(const std::vector<MetadataCondition>& must,
                    const std::vector<RangeCondition>& ranges) const;

 private:
  const CollectionConfig& config_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, std::vector<Label>>> postings_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::btree_set<std::pair<double, Label>>> numeric_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_FILTER_INDEX_H_
