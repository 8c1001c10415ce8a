#include "indexer/rejects.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace attnsearch::indexer {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// The entries of `path` at or before `last` (a missing file has none).
std::string KeptEntries(const std::string& path, uint64_t last) {
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("position") || !j["position"].is_number_unsigned()) {
      continue;  // not an entry of ours
    }
    if (j["position"].get<uint64_t>() <= last) kept += line + "\n";
  }
  return kept;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RejectsFile>> RejectsFile::Open(
    const std::string& path, std::optional<uint64_t> resume_after) {
  const std::string kept = resume_after ? KeptEntries(path, *resume_after) : std::string();
  std::unique_ptr<RejectsFile> file(new RejectsFile(path));
  std::error_code ec;
  std::filesystem::remove(path, ec);  // a stale list must not outlive a clean load
  if (ec) return absl::UnavailableError(absl::StrCat("removing ", path, ": ", ec.message()));
  if (!kept.empty()) {
    if (absl::Status s = file->Create(); !s.ok()) return s;
    if (std::fwrite(kept.data(), 1, kept.size(), file->file_) != kept.size()) {
      return Errno(absl::StrCat("writing ", path));
    }
  }
  return file;
}

RejectsFile::~RejectsFile() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status RejectsFile::Create() {
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) return Errno(absl::StrCat("creating the rejects file ", path_));
  return absl::OkStatus();
}

absl::Status RejectsFile::Add(const std::string& location, uint64_t position, const std::string& id,
                              const std::string& reason) {
  if (file_ == nullptr) {
    if (absl::Status s = Create(); !s.ok()) return s;
  }
  nlohmann::ordered_json j = {{"location", location}, {"position", position}};
  if (!id.empty()) j["id"] = id;
  j["reason"] = reason;
  // Bytes that are not UTF-8 (from a broken input) become U+FFFD.
  const std::string line =
      j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size()) {
    return Errno(absl::StrCat("writing ", path_));
  }
  return absl::OkStatus();
}

absl::Status RejectsFile::Flush() {
  if (file_ != nullptr && std::fflush(file_) != 0) return Errno(absl::StrCat("writing ", path_));
  return absl::OkStatus();
}

}  // namespace attnsearch::indexer
