#include "engine/catalog.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/file_sync.h"
#include "core/log.h"
#include "core/status.h"
#include "storage/doc_store.h"

namespace attnsearch {
namespace fs = std::filesystem;
namespace {

constexpr char kTempPrefix[] = ".creating-";
constexpr char kTrashPrefix[] = ".dropping-";

// Makes a rename in `dir` durable (best effort).
void SyncDir(const std::string& dir) { SyncPath(dir, /*directory=*/true).IgnoreError(); }

constexpr char kManifestName[] = "BACKUP";
constexpr char kManifestMagic[] = "attnsearch-backup";

// fsyncs every file and directory under `root`, and `root`.
absl::Status SyncTree(const std::string& root) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink()) continue;
    const bool dir = it->is_directory();
    if (dir || it->is_regular_file()) ATTN_RETURN_IF_ERROR(SyncPath(it->path().string(), dir));
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", root, ": ", ec.message()));
  return SyncPath(root, /*directory=*/true);
}

// Sum of the sizes of the regular files under `root`.
uint64_t TreeBytes(const std::string& root) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const uintmax_t n = it->file_size(size_ec);
      if (!size_ec) total += n;
    }
  }
  return total;
}

// `path` without a trailing separator ("/a/b/" -> "/a/b").
fs::path Normalised(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

// A hidden sibling of `target`: "<parent>/.<name><tag><pid>-<n>".
fs::path TempSibling(const fs::path& target, const char* tag, uint64_t n) {
  return target.parent_path() /
         absl::StrCat(".", target.filename().string(), tag, ::getpid(), "-", n);
}

// Removes what a process that died while it built `target` left: the
// TempSibling folders of `tag` whose process no longer runs (a crash skips
// RemoveOnFailure). Those of a live process, this one included, stay.
void RemoveStaleTempSiblings(const fs::path& target, const char* tag) {
  const std::string prefix = absl::StrCat(".", target.filename().string(), tag);
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(target.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::vector<std::string> parts = absl::StrSplit(name.substr(prefix.size()), '-');
    int pid = 0;
    uint64_t n = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &pid) || !absl::SimpleAtoi(parts[1], &n) ||
        pid <= 0) {
      continue;
    }
    if (::kill(pid, 0) == -1 && errno == ESRCH) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) {
    fs::remove_all(p, ec);
    LogInfo("removed what an interrupted backup or restore left", {{"path", p.string()}});
  }
}

// Removes a directory tree unless released: the partial result of a failed
// backup or restore.
class RemoveOnFailure {
 public:
  explicit RemoveOnFailure(fs::path path) : path_(std::move(path)) {}
  ~RemoveOnFailure() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  void Release() { path_.clear(); }

 private:
  fs::path path_;
};

// Renames the finished `temp` to `dest`, keeps it (releases `cleanup`) and
// makes the rename durable.
absl::Status RenameIntoPlace(const fs::path& temp, const fs::path& dest, RemoveOnFailure* cleanup) {
  std::error_code ec;
  fs::rename(temp, dest, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("renaming ", temp.string(), " to ", dest.string(), ": ", ec.message()));
  }
  cleanup->Release();
  if (dest.has_parent_path()) SyncDir(dest.parent_path().string());
  return absl::OkStatus();
}

std::string FormatManifest(const BackupManifest& m) {
  std::string out = absl::StrCat(kManifestMagic, "\n");
  absl::StrAppend(&out, "format_version ", m.format_version, "\n");
  absl::StrAppend(&out, "created_unix_micros ", absl::ToUnixMicros(m.created), "\n");
  absl::StrAppend(&out, "created ",
                  absl::FormatTime(absl::RFC3339_sec, m.created, absl::UTCTimeZone()), "\n");
  absl::StrAppend(&out, "collections ", m.collections.size(), "\n");
  for (const BackupEntry& e : m.collections) {
    absl::StrAppend(&out, "collection ", e.name, " ", e.documents, "\n");
  }
  return out;
}

}  // namespace

absl::Status Catalog::ValidateName(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError("name: must be 1..64 characters of [A-Za-z0-9_-]");
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
      return absl::InvalidArgumentError(
          absl::StrCat("name: '", name, "' may only hold the characters [A-Za-z0-9_-]"));
    }
  }
  return absl::OkStatus();
}

Catalog::Slot Catalog::Share(std::unique_ptr<Collection> c) {
  auto remove = std::make_shared<std::string>();
  std::shared_ptr<Collection> shared(c.release(), [remove](Collection* p) {
    delete p;
    if (!remove->empty()) {
      std::error_code ec;
      fs::remove_all(*remove, ec);
    }
  });
  return {std::move(shared), std::move(remove)};
}

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::Open(const CatalogOptions& options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("data_dir: must not be empty");
  }
  std::unique_ptr<Catalog> catalog(new Catalog(options));
  const std::string dir = catalog->CollectionsDir();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("creating ", dir, ": ", ec.message()));
  }
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e.path());
  if (ec) return absl::InternalError(absl::StrCat("listing ", dir, ": ", ec.message()));
  for (const auto& p : entries) {
    const std::string name = p.filename().string();
    if (name.rfind(kTempPrefix, 0) == 0 || name.rfind(kTrashPrefix, 0) == 0) {
      fs::remove_all(p, ec);  // an interrupted create or drop
      continue;
    }
    if (const absl::Status valid = ValidateName(name); !valid.ok()) {
      // Not a collection this server made (copied in by hand?): left alone,
      // and said so.
      LogWarn("skipping an entry of the collections folder whose name is not a collection name",
              {{"path", p.string()}, {"why", valid.message()}});
      continue;
    }
    auto c = Collection::Open(p.string(), options.collection);
    if (!c.ok()) return Annotate(c.status(), absl::StrCat("collection '", name, "'"));
    absl::MutexLock lock(&catalog->mu_);
    catalog->collections_.emplace(name, Share(std::move(c).value()));
  }
  return catalog;
}

absl::StatusOr<std::shared_ptr<Collection>> Catalog::Create(const std::string& name,
                                                            const CollectionConfig& config) {
  ATTN_RETURN_IF_ERROR(ValidateName(name));
  ATTN_RETURN_IF_ERROR(config.Validate());
  absl::MutexLock lock(&mu_);
  if (collections_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("collection '", name, "' already exists"));
  }
  if (auto it = dropped_.find(name); it != dropped_.end()) {
    if (!it->second.expired()) {
      return absl::UnavailableError(
          absl::StrCat("collection '", name,
                       "' was dropped and a call still holds it open (e.g. a TrainEncoder); "
                       "create it again once that call has ended"));
    }
    dropped_.erase(it);
  }
  const std::string temp =
      absl::StrCat(CollectionsDir(), "/", kTempPrefix, name, "-", ++temp_counter_);
  const std::string final_path = absl::StrCat(CollectionsDir(), "/", name);
  std::error_code ec;
  fs::remove_all(temp, ec);
  {
    auto built = Collection::Create(temp, config, options_.collection);
    if (!built.ok()) {
      fs::remove_all(temp, ec);
      return built.status();
    }
  }  // closed here, so its files can move
  fs::rename(temp, final_path, ec);
  if (ec) {
    const std::string reason = ec.message();
    fs::remove_all(temp, ec);
    return absl::InternalError(absl::StrCat("renaming into ", final_path, ": ", reason));
  }
  SyncDir(CollectionsDir());
  absl::StatusOr<std::unique_ptr<Collection>> opened =
      Collection::Open(final_path, options_.collection);
  if (!opened.ok()) {
    // Not created after all: nothing of it may reappear at the next start.
    const std::string trash =
        absl::StrCat(CollectionsDir(), "/", kTrashPrefix, name, "-", ++temp_counter_);
    fs::rename(final_path, trash, ec);
    if (!ec) {
      SyncDir(CollectionsDir());
      fs::remove_all(trash, ec);
    }
    return opened.status();
  }
  Slot slot = Share(std::move(opened).value());
  std::shared_ptr<Collection> c = slot.collection;
  collections_.emplace(name, std::move(slot));
  return c;
}

absl::StatusOr<std::shared_ptr<Collection>> Catalog::Get(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = collections_.find(name);
  if (it == collections_.end()) {
    return absl::NotFoundError(absl::StrCat("collection '", name, "' not found"));
  }
  return it->second.collection;
}

std::vector<std::pair<std::string, std::shared_ptr<Collection>>> Catalog::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, std::shared_ptr<Collection>>> out;
  for (const auto& [name, slot] : collections_) out.emplace_back(name, slot.collection);
  return out;
}

absl::Status Catalog::Drop(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = collections_.find(name);
  if (it == collections_.end()) {
    return absl::NotFoundError(absl::StrCat("collection '", name, "' not found"));
  }
  const std::string path = absl::StrCat(CollectionsDir(), "/", name);
  const std::string trash =
      absl::StrCat(CollectionsDir(), "/", kTrashPrefix, name, "-", ++temp_counter_);
  // The rename is the drop's commit point. Calls still holding the
  // collection finish against its open files (or fail); the files go when
  // the last of them lets go.
  std::error_code ec;
  fs::rename(path, trash, ec);
  if (ec) return absl::InternalError(absl::StrCat("removing ", path, ": ", ec.message()));
  SyncDir(CollectionsDir());
  Slot slot = std::move(it->second);
  collections_.erase(it);
  slot.collection->DiscardOnClose();
  *slot.remove_on_close = trash;
  dropped_[name] = slot.collection;
  return absl::OkStatus();
}

absl::StatusOr<BackupResult> Catalog::Backup(const std::string& dest_dir,
                                             const std::string& collection) {
  const absl::Time start = absl::Now();
  if (dest_dir.empty()) return absl::InvalidArgumentError("destination: must not be empty");
  // The system would read the path only up to a NUL, and the temporary
  // folder beside it, removed on failure, would then be another one.
  if (dest_dir.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("destination: holds a NUL byte");
  }
  const fs::path dest = Normalised(dest_dir);
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dest, ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat("destination: ", dest.string(), " already exists"));
  }
  {
    // Inside the data directory, the copy would be taken for a collection
    // (or its leftovers) at the next start.
    std::error_code ec_data, ec_dest;
    const fs::path data = fs::weakly_canonical(options_.data_dir, ec_data);
    const fs::path where = fs::weakly_canonical(fs::absolute(dest, ec_dest), ec_dest);
    if (!ec_data && !ec_dest &&
        std::mismatch(data.begin(), data.end(), where.begin(), where.end()).first == data.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "destination: ", dest.string(), " is inside the data directory ", options_.data_dir));
    }
  }
  std::vector<std::pair<std::string, std::shared_ptr<Collection>>> targets;
  if (collection.empty()) {
    targets = List();
  } else {
    ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c, Get(collection));
    targets.emplace_back(collection, std::move(c));
  }
  if (dest.has_parent_path()) {
    fs::create_directories(dest.parent_path(), ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "destination: cannot create ", dest.parent_path().string(), ": ", ec.message()));
    }
  }
  uint64_t n;
  {
    absl::MutexLock lock(&mu_);
    n = ++temp_counter_;
  }
  RemoveStaleTempSiblings(dest, ".backup-");
  const fs::path temp = TempSibling(dest, ".backup-", n);
  fs::remove_all(temp, ec);
  RemoveOnFailure cleanup(temp);
  fs::create_directories(temp / "collections", ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("destination: cannot create ", temp.string(), ": ", ec.message()));
  }

  BackupResult result;
  result.manifest.created = start;
  StorageOptions count_options;
  count_options.block_cache_bytes = size_t{8} << 20;
  for (const auto& [name, c] : targets) {
    const std::string dir = (temp / "collections" / name).string();
    absl::Status s = c->Backup(dir);
    if (!s.ok()) {
      // Dropped since it was listed: not part of the catalog any more.
      if (collection.empty() && absl::IsNotFound(Get(name).status())) {
        fs::remove_all(dir, ec);
        continue;
      }
      return Annotate(s, absl::StrCat("collection '", name, "'"));
    }
    // The count the copy itself holds (not the live collection's, which
    // may have moved on).
    auto copy = DocStore::Open(dir + "/store", count_options);
    if (!copy.ok()) {
      return Annotate(copy.status(),
                      absl::StrCat("reading the copy of collection '", name, "' in ", dir));
    }
    result.manifest.collections.push_back({name, (*copy)->live_count()});
  }
  ATTN_RETURN_IF_ERROR(SyncPath((temp / "collections").string(), /*directory=*/true));
  ATTN_RETURN_IF_ERROR(
      WriteFileAtomically((temp / kManifestName).string(), FormatManifest(result.manifest)));
  if (fs::exists(fs::symlink_status(dest, ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat("destination: ", dest.string(), " already exists"));
  }
  ATTN_RETURN_IF_ERROR(RenameIntoPlace(temp, dest, &cleanup));
  result.path = dest.string();
  result.bytes = TreeBytes(result.path);
  result.elapsed = absl::Now() - start;
  return result;
}

absl::StatusOr<BackupManifest> Catalog::ReadBackupManifest(const std::string& backup_dir) {
  const std::string path = backup_dir + "/" + kManifestName;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": no backup manifest (is ", backup_dir, " a backup?)"));
  }
  BackupManifest m;
  std::string line;
  int line_no = 0;
  int64_t expected = -1;
  bool have_version = false, have_created = false;
  auto bad = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(path, ": line ", line_no, ": ", what));
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1) {
      if (line != kManifestMagic) return bad(absl::StrCat("expected '", kManifestMagic, "'"));
      continue;
    }
    if (line.empty()) continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    const std::string& key = f[0];
    if (key == "format_version") {
      if (f.size() != 2 || !absl::SimpleAtoi(f[1], &m.format_version)) {
        return bad("format_version: expected one integer");
      }
      if (m.format_version != BackupManifest::kFormatVersion) {
        return absl::FailedPreconditionError(absl::StrCat(
            path, ": format_version ", m.format_version, " is not the version this build reads (",
            BackupManifest::kFormatVersion, ")"));
      }
      have_version = true;
    } else if (key == "created_unix_micros") {
      int64_t us = 0;
      if (f.size() != 2 || !absl::SimpleAtoi(f[1], &us)) {
        return bad("created_unix_micros: expected one integer");
      }
      m.created = absl::FromUnixMicros(us);
      have_created = true;
    } else if (key == "created") {
      // For people; created_unix_micros is the value read.
    } else if (key == "collections") {
      if (f.size() != 2 || !absl::SimpleAtoi(f[1], &expected) || expected < 0) {
        return bad("collections: expected one count");
      }
    } else if (key == "collection") {
      BackupEntry e;
      if (f.size() != 3 || !absl::SimpleAtoi(f[2], &e.documents)) {
        return bad("collection: expected a name and a document count");
      }
      e.name = f[1];
      absl::Status valid = ValidateName(e.name);
      if (!valid.ok()) return bad(absl::StrCat("collection ", valid.message()));
      for (const BackupEntry& seen : m.collections) {
        if (seen.name == e.name) return bad(absl::StrCat("collection '", e.name, "' twice"));
      }
      m.collections.push_back(std::move(e));
    } else {
      return bad(absl::StrCat("unknown field '", key, "'"));
    }
  }
  if (line_no == 0) return absl::DataLossError(absl::StrCat(path, ": empty"));
  if (!have_version) return absl::DataLossError(absl::StrCat(path, ": format_version missing"));
  if (!have_created) {
    return absl::DataLossError(absl::StrCat(path, ": created_unix_micros missing"));
  }
  if (expected < 0) return absl::DataLossError(absl::StrCat(path, ": collections missing"));
  if (size_t(expected) != m.collections.size()) {
    return absl::DataLossError(
        absl::StrCat(path, ": collections: says ", expected, " but lists ", m.collections.size()));
  }
  for (const BackupEntry& e : m.collections) {
    const std::string store = absl::StrCat(backup_dir, "/collections/", e.name, "/store");
    std::error_code ec;
    if (!fs::is_directory(store, ec)) {
      return absl::DataLossError(
          absl::StrCat(path, ": collection '", e.name, "' is listed but ", store, " is missing"));
    }
  }
  return m;
}

absl::StatusOr<BackupManifest> Catalog::Restore(const std::string& backup_dir,
                                                const std::string& data_dir,
                                                const CollectionOptions& options) {
  if (backup_dir.empty()) return absl::InvalidArgumentError("backup: must not be empty");
  if (data_dir.empty()) return absl::InvalidArgumentError("data_dir: must not be empty");
  for (const auto& [field, path] :
       {std::pair<const char*, const std::string&>{"backup", backup_dir}, {"data_dir", data_dir}}) {
    if (path.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": holds a NUL byte"));
    }
  }
  const fs::path dest = Normalised(data_dir);
  std::error_code ec;
  const bool dest_exists = fs::exists(fs::symlink_status(dest, ec));
  if (dest_exists && !fs::is_directory(dest, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data_dir: ", dest.string(), " exists and is not a directory; restore into a new one"));
  }
  if (dest_exists && !fs::is_empty(dest, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data_dir: ", dest.string(), " exists and is not empty; restore into a new directory"));
  }
  ATTN_ASSIGN_OR_RETURN(BackupManifest manifest, ReadBackupManifest(backup_dir));

  if (dest.has_parent_path()) {
    fs::create_directories(dest.parent_path(), ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "destination: cannot create ", dest.parent_path().string(), ": ", ec.message()));
    }
  }
  RemoveStaleTempSiblings(dest, ".restoring-");
  const fs::path temp = TempSibling(dest, ".restoring-", 0);
  fs::remove_all(temp, ec);
  RemoveOnFailure cleanup(temp);
  fs::create_directories(temp / "collections", ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("destination: cannot create ", temp.string(), ": ", ec.message()));
  }
  for (const BackupEntry& e : manifest.collections) {
    const fs::path from = fs::path(backup_dir) / "collections" / e.name;
    fs::copy(from, temp / "collections" / e.name, fs::copy_options::recursive, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("copying ", from.string(), " to ",
                                              (temp / "collections" / e.name).string(), ": ",
                                              ec.message()));
    }
  }
  // A message about the copy names the backup's own files.
  const auto in_backup = [&](absl::string_view message) {
    return absl::StrReplaceAll(message, {{temp.string(), backup_dir}});
  };
  {
    CatalogOptions catalog_options;
    catalog_options.data_dir = temp.string();
    catalog_options.collection = options;
    auto catalog = Catalog::Open(catalog_options);
    if (!catalog.ok()) {
      return absl::DataLossError(absl::StrCat(
          "the backup in ", backup_dir, " does not open: ", in_backup(catalog.status().message())));
    }
    for (const BackupEntry& e : manifest.collections) {
      auto c = (*catalog)->Get(e.name);
      if (!c.ok()) {
        return absl::DataLossError(absl::StrCat("collection '", e.name, "' of the backup in ",
                                                backup_dir, " did not open"));
      }
      const uint64_t n = (*c)->Stats().num_documents;
      if (n != e.documents) {
        return absl::DataLossError(absl::StrCat("collection '", e.name, "': the manifest of ",
                                                backup_dir, " says ", e.documents,
                                                " documents, the restored copy holds ", n));
      }
      // Damage inside a file shows only when its blocks are read: read them all.
      if (absl::Status s = (*c)->VerifyChecksums(); !s.ok()) {
        return absl::DataLossError(absl::StrCat("collection '", e.name, "' of the backup in ",
                                                backup_dir,
                                                " is damaged: ", in_backup(s.message())));
      }
    }
  }  // closed: snapshots written, files ready to move
  ATTN_RETURN_IF_ERROR(SyncTree(temp.string()));
  if (dest_exists) {
    fs::remove(dest, ec);  // empty (checked above)
    if (ec)
      return absl::InternalError(absl::StrCat("replacing ", dest.string(), ": ", ec.message()));
  }
  ATTN_RETURN_IF_ERROR(RenameIntoPlace(temp, dest, &cleanup));
  return manifest;
}

}  // namespace attnsearch
