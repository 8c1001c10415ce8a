// Catalog: the collections of one data directory.
//
// Layout: <data_dir>/collections/<name>/ holds one collection (its RocksDB
// store and ANN snapshot). Creation builds the collection under a temporary
// name and renames it into place, and a drop renames it away before removing
// it, so a crash at any instant leaves each collection either whole or
// absent; leftovers of interrupted creates and drops are removed on Open.
//
// Backups (Backup, Restore): a backup directory holds
//
//   <dest>/collections/<name>/   each collection as Collection::Backup
//                                writes it (a store checkpoint and the ANN
//                                snapshot)
//   <dest>/BACKUP                the manifest, written last: format version,
//                                creation time, each collection's name and
//                                document count
//
// It is built under a temporary name next to <dest> and renamed into place
// at the end, so a crash leaves either a whole backup at <dest> or none
// (a hidden ".<dest>.backup-*" leftover may remain beside it). Consistency
// is per collection: each collection's copy holds every write acknowledged
// before its own backup began and possibly some that overlapped it, each
// batch whole or absent; collections are copied one after another, so two
// collections' copies are not of one instant.
//
// Thread safety: all methods may be called concurrently.
#ifndef ATTNSEARCH_ENGINE_CATALOG_H_
#define ATTNSEARCH_ENGINE_CATALOG_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/collection.h"

namespace attnsearch {

struct CatalogOptions {
  // Directory holding every collection; created if missing. Required.
  std::string data_dir;
  // Options every collection is opened with.
  CollectionOptions collection;
};

// One collection of a backup.
struct BackupEntry {
  std::string name;
  // Live documents in the copy (its store's count, read from the copy).
  uint64_t documents = 0;
};

// A backup's manifest (its BACKUP file).
struct BackupManifest {
  // Format version of the backup directory.
  static constexpr int kFormatVersion = 1;
  int format_version = kFormatVersion;
  // When the backup was made.
  absl::Time created = absl::UnixEpoch();
  // Ordered by name.
  std::vector<BackupEntry> collections;
};

// What Catalog::Backup wrote.
struct BackupResult {
  std::string path;  // the backup directory
  BackupManifest manifest;
  uint64_t bytes = 0;  // sum of the sizes of its files
  absl::Duration elapsed;
};

class Catalog {
 public:
  // Opens (or initialises) data_dir and every collection in it. Fails, naming
  // the collection, if one cannot be opened.
  static absl::StatusOr<std::unique_ptr<Catalog>> Open(const CatalogOptions& options);

  // INVALID_ARGUMENT for a bad name or config, ALREADY_EXISTS if taken,
  // UNAVAILABLE while a dropped collection of that name is still held open by
  // a call (e.g. a TrainEncoder) that has not finished.
  absl::StatusOr<std::shared_ptr<Collection>> Create(const std::string& name,
                                                     const CollectionConfig& config);
  // NOT_FOUND for an unknown name.
  absl::StatusOr<std::shared_ptr<Collection>> Get(const std::string& name) const;
  // Every collection, ordered by name.
  std::vector<std::pair<std::string, std::shared_ptr<Collection>>> List() const;
  // Removes a collection at once: it leaves the catalog and its directory is
  // renamed away; its files are deleted when the last call still using it
  // (if any) finishes.
  absl::Status Drop(const std::string& name);

  // Writes a backup of collection `collection` (empty: of every collection)
  // into `dest_dir`, which must not exist (ALREADY_EXISTS naming it) nor lie
  // inside the data directory (INVALID_ARGUMENT); its parent directories
  // are created (FAILED_PRECONDITION when they cannot be). Writes to a collection wait only while
  // its copy is taken (hard links when `dest_dir` is on the data
  // directory's file system, copies otherwise); searches go on. NOT_FOUND
  // for an unknown `collection`. A collection dropped while a backup of
  // every collection runs is left out. On error nothing is left at
  // `dest_dir`; errors name the path.
  absl::StatusOr<BackupResult> Backup(const std::string& dest_dir, const std::string& collection);

  // Reads and checks a backup's manifest (`backup_dir`/BACKUP): its format
  // version and that every collection it lists is in the backup.
  // NOT_FOUND when there is no manifest; DATA_LOSS naming the file, line and
  // field when it is malformed or a listed collection is missing.
  static absl::StatusOr<BackupManifest> ReadBackupManifest(const std::string& backup_dir);

  // Makes `data_dir` a data directory holding the backup in `backup_dir`:
  // checks the manifest, copies the backup into a temporary directory next
  // to `data_dir`, opens it as a catalog (with `options`) to check that
  // every collection opens and holds the document count the manifest
  // gives, then renames it into place. FAILED_PRECONDITION naming
  // `data_dir` if it exists and is not empty; the manifest's errors as
  // ReadBackupManifest; DATA_LOSS naming the collection when it does not
  // open, its count differs or a file's checksums do not match (every block
  // of the copy is read and checked). On error `data_dir` is left as it was. No
  // server may run on `data_dir` meanwhile. Returns the manifest.
  static absl::StatusOr<BackupManifest> Restore(const std::string& backup_dir,
                                                const std::string& data_dir,
                                                const CollectionOptions& options = {});

  // "name: ..." INVALID_ARGUMENT unless 1..64 characters of [A-Za-z0-9_-].
  static absl::Status ValidateName(const std::string& name);

 private:
  explicit Catalog(CatalogOptions options) : options_(std::move(options)) {}
  std::string CollectionsDir() const { return options_.data_dir + "/collections"; }

  struct Slot {
    std::shared_ptr<Collection> collection;
    // Set by Drop: the directory to delete once the collection is closed.
    std::shared_ptr<std::string> remove_on_close;
  };
  // Shares an opened collection; its last owner closes it and, after a
  // Drop, deletes its files.
  static Slot Share(std::unique_ptr<Collection> c);

  const CatalogOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Slot> collections_ ABSL_GUARDED_BY(mu_);
  // Dropped collections, until the last call holding one lets go: its open
  // store still has files under the name's old path.
  std::map<std::string, std::weak_ptr<Collection>> dropped_ ABSL_GUARDED_BY(mu_);
  uint64_t temp_counter_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_CATALOG_H_
