// A folder of NumPy arrays as the indexer's input (--format npy), the way
// an ML stack writes embeddings:
//
//   tokens.npy       T x dim float32, float16 or bfloat16 (saved as 'V2'):
//                    every document's token rows, one document after another
//   offsets.npy      N + 1 integers: document i's rows are
//                    [offsets[i], offsets[i + 1]) (offsets[0] = 0, never
//                    decreasing, offsets[N] = T); or instead
//   lengths.npy      N non-negative integers summing to T
//   ids.npy          N strings ('<U' or '|S'), or ids.txt: one id per line
//   pooled.npy       optional: N x dim, one pooled vector per document
//   docs.jsonl[.gz]  optional: one JSON object per line with an "id" (one
//                    of ids) and any of "title", "text", "metadata",
//                    "token_texts", as in JSON lines input
//
// tokens.npy (with offsets.npy or lengths.npy), pooled.npy, or both. The
// arrays are memory-mapped and checked when the folder is opened (dtypes,
// shapes, offsets, counts): what is wrong is named by file and index, and
// nothing is loaded. Each document is then converted and validated like a
// JSON line; a bad one (a NaN, a zero row) is reported at "DIR:document I"
// with the file and row that hold the bad value.
#ifndef ATTNSEARCH_INDEXER_NPY_SOURCE_H_
#define ATTNSEARCH_INDEXER_NPY_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "indexer/input_source.h"

namespace attnsearch::indexer {

// Whether `dir` is a folder holding tokens.npy or pooled.npy.
bool IsNpyFolder(const std::string& dir);

struct NpyFolderInfo {
  uint64_t documents = 0;
  uint32_t dim = 0;
  // The file whose identity the checkpoint records: tokens.npy, else
  // pooled.npy.
  std::string data_file;
};

// Opens the folder and checks its structure (see above). INVALID_ARGUMENT
// or DATA_LOSS naming the file and the index; NOT_FOUND for a missing
// required file.
absl::StatusOr<NpyFolderInfo> InspectNpyFolder(const std::string& dir);

// The records of the folder: positions are document counts (document i has
// position i + 1). options.dim must equal the arrays' row length.
// Documents at or before options.skip_to carry only their id and token
// count (they are not converted: a resumed load skips them).
absl::StatusOr<std::unique_ptr<RecordSource>> OpenNpySource(const std::string& dir,
                                                            const ParseOptions& options);

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_NPY_SOURCE_H_
