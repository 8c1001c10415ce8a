#include "indexer/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace attnsearch::indexer {
namespace {

constexpr size_t kHeadBytes = 64 << 10;

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(absl::StrCat("writing ", path));
    }
    done += size_t(n);
  }
  return absl::OkStatus();
}

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
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : head) {
    h ^= c;
    h *= 1099511628211ull;
  }
  fp.head_hash = h;
  return fp;
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
    if (j.at("version").get<int>() != 1) {
      return absl::DataLossError(absl::StrCat(path, ": unknown checkpoint version"));
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
  j["version"] = 1;
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

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(absl::StrCat("creating ", tmp));
  absl::Status s = WriteAll(fd, data, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Errno(absl::StrCat("syncing ", tmp));
  ::close(fd);
  if (!s.ok()) return s;
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Errno(absl::StrCat("renaming ", tmp, " to ", path));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace attnsearch::indexer
