// StorageFaults: switches that make a store's files fail, for fault-injection
// tests and the fault drill (`attnsearch-faults`).
//
// A DocStore opened with StorageOptions::faults set does all its file I/O
// through a RocksDB FileSystem wrapper that consults these switches on every
// write, sync and file creation. While a fault is armed, the affected
// operations fail the way a real disk would:
//
//   kWriteError  an append writes the first half of its bytes, then fails
//                with an I/O error (a torn write)
//   kDiskFull    an append writes the first half, then fails with
//                "No space left on device"; creating a file fails too
//   kSyncError   fsync/fdatasync fails with an I/O error (the data may or
//                may not have reached the disk)
//
// Clear() ends the fault. The store then recovers on its next write (see
// DocStore::Commit); nothing acknowledged before, during or after the fault
// is lost.
//
// Thread safety: all methods may be called concurrently with store I/O.
#ifndef ATTNSEARCH_STORAGE_STORAGE_FAULTS_H_
#define ATTNSEARCH_STORAGE_STORAGE_FAULTS_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

namespace attnsearch {

class StorageFaults {
 public:
  enum class Kind : int { kNone = 0, kWriteError, kDiskFull, kSyncError };
  // Which files a fault hits, by RocksDB's file naming.
  enum class Files : int {
    kAll = 0,
    kWal,       // write-ahead logs (*.log): foreground writes
    kTables,    // table files (*.sst): memtable flushes and compactions
    kManifest,  // MANIFEST-*, CURRENT, OPTIONS-*: metadata
  };

  // Arms a fault; it stays until Clear() or the next Arm().
  void Arm(Kind kind, Files files = Files::kAll) {
    files_.store(static_cast<int>(files));
    kind_.store(static_cast<int>(kind));
  }
  void Clear() { kind_.store(static_cast<int>(Kind::kNone)); }
  Kind armed() const { return static_cast<Kind>(kind_.load()); }

  // Operations failed so far (all kinds).
  uint64_t failures() const { return failures_.load(); }

  // Makes the store see `bytes` free on its file system instead of what
  // statvfs says (nullopt: the real figure), for its free-space reserve
  // (StorageOptions::min_free_bytes).
  void SetFreeSpace(std::optional<uint64_t> bytes) {
    free_bytes_.store(bytes ? int64_t(*bytes) : -1);
  }
  std::optional<uint64_t> free_space() const {
    const int64_t v = free_bytes_.load();
    return v < 0 ? std::nullopt : std::optional<uint64_t>(uint64_t(v));
  }

  // For the file system wrapper: whether an operation on the file named
  // `fname` must fail now (counted when it must).
  enum class Op : int { kAppend, kSync, kCreate };
  bool ShouldFail(Op op, std::string_view fname);

 private:
  std::atomic<int> kind_{0};
  std::atomic<int> files_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<int64_t> free_bytes_{-1};
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_STORAGE_STORAGE_FAULTS_H_
