#include "engine/catalog.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace attnsearch {
namespace fs = std::filesystem;
namespace {

constexpr char kTempPrefix[] = ".creating-";
constexpr char kTrashPrefix[] = ".dropping-";

// Makes a rename in `dir` durable.
void SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

absl::Status Catalog::ValidateName(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError("name: must be 1..64 characters of [A-Za-z0-9_-]");
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "name: '", name, "' may only hold the characters [A-Za-z0-9_-]"));
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
    if (!ValidateName(name).ok()) continue;
    auto c = Collection::Open(p.string(), options.collection);
    if (!c.ok()) return Annotate(c.status(), absl::StrCat("collection '", name, "'"));
    catalog->collections_.emplace(name, Share(std::move(c).value()));
  }
  return catalog;
}

absl::StatusOr<std::shared_ptr<Collection>> Catalog::Create(const std::string& name,
                                                            const CollectionConfig& config) {
  ATTN_RETURN_IF_ERROR(ValidateName(name));
  ATTN_RETURN_IF_ERROR(config.Validate());
  std::lock_guard<std::mutex> lock(mu_);
  if (collections_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("collection '", name, "' already exists"));
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
    fs::remove_all(temp, ec);
    return absl::InternalError(absl::StrCat("renaming into ", final_path, ": ", ec.message()));
  }
  SyncDir(CollectionsDir());
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> opened,
                        Collection::Open(final_path, options_.collection));
  Slot slot = Share(std::move(opened));
  std::shared_ptr<Collection> c = slot.collection;
  collections_.emplace(name, std::move(slot));
  return c;
}

absl::StatusOr<std::shared_ptr<Collection>> Catalog::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = collections_.find(name);
  if (it == collections_.end()) {
    return absl::NotFoundError(absl::StrCat("collection '", name, "' not found"));
  }
  return it->second.collection;
}

std::vector<std::pair<std::string, std::shared_ptr<Collection>>> Catalog::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, std::shared_ptr<Collection>>> out;
  for (const auto& [name, slot] : collections_) out.emplace_back(name, slot.collection);
  return out;
}

absl::Status Catalog::Drop(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
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
  return absl::OkStatus();
}

}  // namespace attnsearch
