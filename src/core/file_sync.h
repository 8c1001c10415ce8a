// Durability of files written outside RocksDB (ANN snapshots, backup
// manifests, the indexer's checkpoints).
#ifndef ATTNSEARCH_CORE_FILE_SYNC_H_
#define ATTNSEARCH_CORE_FILE_SYNC_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace attnsearch {

// fsyncs the file at `path`, or with `directory` the directory, which makes
// the creations, renames and deletions inside it durable. INTERNAL, naming
// the path and the OS error, when it cannot be opened or synced.
absl::Status SyncPath(const std::string& path, bool directory);

// Replaces the file at `path` with `data`, atomically and durably: the bytes
// go to `path`.tmp, which is fsynced and renamed over `path`, then the
// directory is fsynced. A crash at any instant leaves the old file or the
// new one, whole. INTERNAL naming the path and the OS error; on failure the
// temporary file is removed and `path` is untouched.
absl::Status WriteFileAtomically(const std::string& path, std::string_view data);

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_FILE_SYNC_H_
