// Catalog: the collections of one data directory.
//
// Layout: <data_dir>/collections/<name>/ holds one collection (its RocksDB
// store and ANN snapshot). Creation builds the collection under a temporary
// name and renames it into place, and a drop renames it away before removing
// it, so a crash at any instant leaves each collection either whole or
// absent; leftovers of interrupted creates and drops are removed on Open.
//
// Thread safety: all methods may be called concurrently.
#ifndef ATTNSEARCH_ENGINE_CATALOG_H_
#define ATTNSEARCH_ENGINE_CATALOG_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/collection.h"

namespace attnsearch {

struct CatalogOptions {
  // Directory holding every collection; created if missing. Required.
  std::string data_dir;
  // Options every collection is opened with.
  CollectionOptions collection;
};

class Catalog {
 public:
  // Opens (or initialises) data_dir and every collection in it. Fails, naming
  // the collection, if one cannot be opened.
  static absl::StatusOr<std::unique_ptr<Catalog>> Open(const CatalogOptions& options);

  // INVALID_ARGUMENT for a bad name or config, ALREADY_EXISTS if taken.
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
  mutable std::mutex mu_;
  std::map<std::string, Slot> collections_;  // guarded by mu_
  uint64_t temp_counter_ = 0;                                        // guarded by mu_
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_CATALOG_H_
