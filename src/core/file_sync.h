// Durability of files the engine writes outside RocksDB (snapshots,
// manifests, backups).
#ifndef ATTNSEARCH_CORE_FILE_SYNC_H_
#define ATTNSEARCH_CORE_FILE_SYNC_H_

#include <string>

#include "absl/status/status.h"

namespace attnsearch {

// fsyncs the file at `path`, or with `directory` the directory, which makes
// the creations, renames and deletions inside it durable. INTERNAL, naming
// the path and the OS error, when it cannot be opened or synced.
absl::Status SyncPath(const std::string& path, bool directory);

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_FILE_SYNC_H_
