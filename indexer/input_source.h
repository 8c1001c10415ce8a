// RecordSource: the records of one input, in order, each either a parsed
// and validated Document or the reason it is bad.
//
// Formats (InputFormat::kAuto picks by name: a directory is BEIR, a name
// ending in .fvecs or .fvecs.gz is fvecs, anything else JSON lines):
//   kJsonLines  one JSON object per line (record_parser.h); blank lines are
//               skipped. Positions are line numbers.
//   kBeir       a directory holding corpus.jsonl (or corpus.jsonl.gz) with
//               `_id` (or `id`), `title`, `text`: text-only documents.
//               Positions are line numbers.
//   kFvecs      TEXMEX .fvecs: pooled vectors only; the id of record i
//               (0-based) is "i". Positions are record counts (record i has
//               position i + 1).
//   kNpy        a folder of NumPy arrays (npy_source.h): token matrix,
//               offsets or lengths, ids, optional pooled vectors and a side
//               file of text and metadata. Positions are document counts.
//               kAuto picks it for a folder holding tokens.npy or
//               pooled.npy.
// Gzip-compressed input is read directly (dataset/input_file.h).
#ifndef ATTNSEARCH_INDEXER_INPUT_SOURCE_H_
#define ATTNSEARCH_INDEXER_INPUT_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/types.h"
#include "indexer/record_parser.h"

namespace attnsearch::indexer {

enum class InputFormat { kAuto, kJsonLines, kBeir, kFvecs, kNpy };

// "jsonl", "beir", "fvecs", "npy", "auto"; and back (false for another name).
const char* InputFormatName(InputFormat f);
bool ParseInputFormat(const std::string& name, InputFormat* out);

// The format kAuto resolves to for `input`.
InputFormat DetectFormat(const std::string& input);

// The file actually read for `input` in `format` (corpus.jsonl for BEIR;
// tokens.npy, else pooled.npy, for npy), whose identity the checkpoint
// records. NOT_FOUND when a BEIR folder has no corpus.
absl::StatusOr<std::string> DataFile(const std::string& input, InputFormat format);

// The dimension of the first record of an fvecs file (plain or gzip).
absl::StatusOr<uint32_t> PeekFvecsDim(const std::string& path);

// What the first document of a JSON lines or BEIR input says about the
// collection to create.
struct FirstDocument {
  // It has no vectors (its first non-blank line is an object without a
  // non-null "pooled" or "tokens"): the input is taken to be text-only.
  bool text_only = false;
  // The length of its pooled vector, else of its first token row (or the
  // "cols" of a {"rows", "cols", "values"} matrix); 0 when it has none.
  uint32_t dim = 0;
};

// The first document of `input` that parses and states its vectors' length
// or has none (text only), among its first 10,000 non-blank lines: {false,
// 0} for fvecs and when there is none. For npy, {false, the arrays' row length},
// after checking the whole folder's structure (InspectNpyFolder: its errors
// are returned). NOT_FOUND when the input cannot be read.
absl::StatusOr<FirstDocument> PeekFirstDocument(const std::string& input, InputFormat format);

struct InputRecord {
  // Input units consumed up to and including this record: the line number
  // (JSON lines) or the record count (fvecs).
  uint64_t position = 0;
  // OK: `doc` holds a valid document. Otherwise the reason the record is
  // bad (INVALID_ARGUMENT, without location).
  absl::Status status;
  Document doc;
};

class RecordSource {
 public:
  virtual ~RecordSource() = default;
  // Reads the next record. Returns false at the end of the input or on an
  // error that makes the rest unreadable (see status()).
  virtual bool Next(InputRecord* record) = 0;
  // OK, or why reading stopped early (DATA_LOSS for a truncated or
  // corrupt file).
  virtual absl::Status status() const = 0;
  // "FILE:LINE" (JSON lines), "FILE:record N" (fvecs, N = the id) or
  // "FOLDER:document N" (npy, N the 0-based index) for the record at
  // `position`.
  virtual std::string Location(uint64_t position) const = 0;
  // Bytes of the file consumed so far (compressed bytes for gzip) and its
  // size on disk, for progress reports.
  virtual uint64_t bytes_read() const = 0;
  virtual uint64_t file_size() const = 0;
};

// Opens `input` (a file, or a folder for BEIR). `options.dim` is the
// collection's dimension. NOT_FOUND if missing; INVALID_ARGUMENT for an
// unusable format.
absl::StatusOr<std::unique_ptr<RecordSource>> OpenSource(const std::string& input,
                                                         InputFormat format,
                                                         const ParseOptions& options);

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_INPUT_SOURCE_H_
