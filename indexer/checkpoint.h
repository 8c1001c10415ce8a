// Checkpoints of a load: how far into its input a load has durably got, so
// that re-running the same command after an interruption resumes there.
//
// A checkpoint is a small JSON file written atomically (a temporary file,
// fsync, rename, fsync of the folder) after every batch the target made
// durable. It names the input by a fingerprint (size, modification time and
// a hash of the first 64 KiB): a checkpoint of another input is not resumed.
#ifndef ATTNSEARCH_INDEXER_CHECKPOINT_H_
#define ATTNSEARCH_INDEXER_CHECKPOINT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace attnsearch::indexer {

struct InputFingerprint {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t head_hash = 0;  // Checksum64 (XXH3) of the first 64 KiB

  bool operator==(const InputFingerprint&) const = default;
};

// Fingerprints the file at `path`; NOT_FOUND if it cannot be read.
absl::StatusOr<InputFingerprint> FingerprintFile(const std::string& path);
// Fingerprints every file in the folder at `path` (an npy folder: its
// pooled, ids, offsets and text files count as much as its tokens): the
// sum of their sizes, the latest time, a hash of each one's name, size,
// time and head.
absl::StatusOr<InputFingerprint> FingerprintFolder(const std::string& path);

struct Checkpoint {
  // The data file read and the collection written, as given.
  std::string input;
  std::string collection;
  InputFingerprint fingerprint;
  // Every input unit (line / fvecs record) up to and including this
  // position is either stored durably or was reported as bad.
  uint64_t position = 0;
  // Documents stored and bad records reported up to `position`.
  uint64_t documents = 0;
  uint64_t errors = 0;
  // The whole input was processed.
  bool complete = false;
};

// The checkpoint in `path`; nullopt when there is none. DATA_LOSS if the
// file exists but cannot be parsed.
absl::StatusOr<std::optional<Checkpoint>> LoadCheckpoint(const std::string& path);

// Replaces `path` atomically with `checkpoint`.
absl::Status SaveCheckpoint(const std::string& path, const Checkpoint& checkpoint);

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_CHECKPOINT_H_
