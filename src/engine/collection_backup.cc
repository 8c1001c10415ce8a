// Collection::Backup: a checkpoint of the store and a link to the ANN
// snapshot, both taken under the writer mutex.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/file_sync.h"
#include "core/status.h"
#include "engine/collection.h"

namespace attnsearch {
namespace {

namespace fs = std::filesystem;

// Hard-links `from` to `to`, or copies it (synced) when a link cannot be
// made (another file system, or links not supported). NOT_FOUND when `from`
// does not exist.
absl::Status LinkOrCopy(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return absl::OkStatus();
  const int err = errno;
  if (err == ENOENT) return absl::NotFoundError(absl::StrCat(from, " does not exist"));
  if (err != EXDEV && err != EPERM && err != EMLINK && err != ENOTSUP) {
    return absl::InternalError(
        absl::StrCat("linking ", from, " to ", to, ": ", std::strerror(err)));
  }
  // Copying reads the inode `from` names when it is opened; a snapshot
  // saved meanwhile replaces the name, not that inode.
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::none, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory && !fs::exists(from)) {
      return absl::NotFoundError(absl::StrCat(from, " does not exist"));
    }
    return absl::InternalError(absl::StrCat("copying ", from, " to ", to, ": ", ec.message()));
  }
  return SyncPath(to, /*directory=*/false);
}

}  // namespace

absl::Status Collection::Backup(const std::string& dir) {
  std::error_code ec;
  if (!fs::create_directory(dir, ec)) {
    return ec ? absl::InternalError(absl::StrCat("creating ", dir, ": ", ec.message()))
              : absl::AlreadyExistsError(absl::StrCat(dir, " already exists"));
  }
  auto fail = [&](const absl::Status& s) {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
    return Annotate(s, absl::StrCat("backing up ", path_, " to ", dir));
  };
  // The checkpoint links table files but copies the write-ahead log (up to
  // 64 MiB of it); flushing the memtables first, while writes go on, leaves
  // little log to copy while they wait.
  absl::Status flushed = store_->Flush();
  if (!flushed.ok()) return fail(flushed);
  {
    // Every writer, and every snapshot save (the background rebuild saves
    // its snapshot under this mutex too), waits here: the checkpoint holds
    // every committed batch, and the snapshot on disk was saved from an
    // index holding only committed labels, so it never names a label the
    // checkpoint lacks. The store's tombstone records cover every deleted
    // label that snapshot holds (they are dropped only for labels the saved
    // index no longer holds).
    absl::MutexLock write_lock(&write_mu_);
    absl::MutexLock index_lock(&index_mu_);
    absl::Status s = store_->Checkpoint(dir + "/store");
    if (!s.ok()) return fail(s);
    s = LinkOrCopy(index_.snapshot_path(), dir + "/ann.snapshot");
    // No snapshot yet: Open builds the index from the store.
    if (!s.ok() && !absl::IsNotFound(s)) return fail(s);
  }
  absl::Status s = SyncPath(dir, /*directory=*/true);
  if (!s.ok()) return fail(s);
  return absl::OkStatus();
}

}  // namespace attnsearch
