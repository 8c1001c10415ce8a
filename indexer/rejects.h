// The rejects file of a load: one JSON line per bad record, so that a load
// can finish past the bad records of a real corpus and still list every one
// of them for whoever fixes the input:
//
//   {"location": "corpus.jsonl:471", "position": 471, "id": "471",
//    "reason": "no text, pooled vector or tokens"}
//
// `position` is the record's line (JSON lines, BEIR) or record number
// (fvecs), as in the checkpoint; `id` is present when the record had one.
#ifndef ATTNSEARCH_INDEXER_REJECTS_H_
#define ATTNSEARCH_INDEXER_REJECTS_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace attnsearch::indexer {

class RejectsFile {
 public:
  // Opens `path` for a load. A fresh load (resume_after unset) removes an
  // earlier file; a load resuming after a checkpoint keeps its entries at or
  // before `resume_after` (the records after it are read again, and
  // reported again if bad). The file exists only while it lists something:
  // it is created at the first entry. Errors name the path.
  static absl::StatusOr<std::unique_ptr<RejectsFile>> Open(const std::string& path,
                                                           std::optional<uint64_t> resume_after);
  ~RejectsFile();
  RejectsFile(const RejectsFile&) = delete;
  RejectsFile& operator=(const RejectsFile&) = delete;

  // Appends one entry (`id` empty: none known).
  absl::Status Add(const std::string& location, uint64_t position, const std::string& id,
                   const std::string& reason);
  // Writes buffered entries to the file.
  absl::Status Flush();

  const std::string& path() const { return path_; }

 private:
  explicit RejectsFile(std::string path) : path_(std::move(path)) {}
  absl::Status Create();
  const std::string path_;
  std::FILE* file_ = nullptr;  // null until the first entry
};

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_REJECTS_H_
