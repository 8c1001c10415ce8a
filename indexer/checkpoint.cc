#include "indexer/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/checksum.h"
#include "core/file_sync.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace attnsearch::indexer {
namespace {

constexpr size_t kHeadBytes = 64 << 10;

// Version 1 fingerprinted the input's head with FNV-1a; its checkpoints
// are refused (re-run with --restart; the load writes the same again).
constexpr int kCheckpointVersion = 2;

}  // namespace

absl::StatusOr<InputFingerprint> FingerprintFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  InputFingerprint fp;
  fp.size = uint64_t(st.st_size);
  fp.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string head(kHeadBytes, '\0');
  in.read(head.data(), std::streamsize(head.size()));
  head.resize(size_t(in.gcount()));
  fp.head_hash = Checksum64(head.data(), head.size());
  return fp;
}

absl::StatusOr<InputFingerprint> FingerprintFolder(const std::string& path) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
    if (e.is_regular_file(ec)) files.push_back(e.path());
  }
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  std::sort(files.begin(), files.end());
  InputFingerprint folder;
  std::string fold;
  for (const auto& f : files) {
    ATTN_ASSIGN_OR_RETURN(const InputFingerprint fp, FingerprintFile(f.string()));
    folder.size += fp.size;
    folder.mtime_ns = std::max(folder.mtime_ns, fp.mtime_ns);
    absl::StrAppend(&fold, f.filename().string(), ":", fp.size, ":", fp.mtime_ns, ":", fp.head_hash,
                    ";");
  }
  folder.head_hash = Checksum64(fold.data(), fold.size());
  return folder;
}

absl::StatusOr<std::optional<Checkpoint>> LoadCheckpoint(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<Checkpoint>();
  std::ifstream in(path);
  if (!in) return absl::DataLossError(absl::StrCat(path, ": cannot read the checkpoint"));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    const nlohmann::json j = nlohmann::json::parse(ss.str());
    if (const int version = j.at("version").get<int>(); version != kCheckpointVersion) {
      return absl::DataLossError(absl::StrCat(
          path, ": checkpoint version ", version, " (this attnsearch-index writes ",
          kCheckpointVersion, "); re-run with --restart (the load writes the same again)"));
    }
    Checkpoint c;
    c.input = j.at("input").get<std::string>();
    c.collection = j.at("collection").get<std::string>();
    c.fingerprint.size = j.at("size").get<uint64_t>();
    c.fingerprint.mtime_ns = j.at("mtime_ns").get<int64_t>();
    c.fingerprint.head_hash = std::stoull(j.at("head_hash").get<std::string>(), nullptr, 16);
    c.position = j.at("position").get<uint64_t>();
    c.documents = j.at("documents").get<uint64_t>();
    c.errors = j.at("errors").get<uint64_t>();
    c.complete = j.at("complete").get<bool>();
    return std::optional<Checkpoint>(std::move(c));
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat(path, ": not a valid checkpoint (", e.what(), "); use --restart"));
  }
}

absl::Status SaveCheckpoint(const std::string& path, const Checkpoint& c) {
  nlohmann::json j;
  j["version"] = kCheckpointVersion;
  j["input"] = c.input;
  j["collection"] = c.collection;
  j["size"] = c.fingerprint.size;
  j["mtime_ns"] = c.fingerprint.mtime_ns;
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)c.fingerprint.head_hash);
  j["head_hash"] = hash;
  j["position"] = c.position;
  j["documents"] = c.documents;
  j["errors"] = c.errors;
  j["complete"] = c.complete;
  const std::string data = j.dump(2) + "\n";

  return WriteFileAtomically(path, data);
}

}  // namespace attnsearch::indexer
