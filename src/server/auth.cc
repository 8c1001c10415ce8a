#include "server/auth.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace attnsearch {
namespace {

constexpr size_t kMinKeyBytes = 16;
constexpr size_t kMaxKeyBytes = 512;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// The whitespace-separated fields of a line.
std::vector<std::string_view> Fields(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    const size_t b = i;
    while (i < s.size() && !IsSpace(s[i])) ++i;
    if (i > b) out.push_back(s.substr(b, i - b));
  }
  return out;
}

bool ValidKeyChars(std::string_view key) {
  for (unsigned char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

bool ConstantTimeEquals(std::string_view a, std::string_view b, size_t span) {
  // Every byte up to `span` is read from both (zero past the end), so the
  // time does not depend on where they first differ.
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < span; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= unsigned(x ^ y);
  }
  return diff == 0;
}

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": a directory, not an API key file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the API key file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

absl::StatusOr<ApiKeys> ApiKeys::Parse(std::string_view text, const std::string& name) {
  ApiKeys keys;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = Trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    const std::string where = absl::StrCat(name, ":", line_no, ": ");
    const std::vector<std::string_view> parts = Fields(line);
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(where, "expected 'KEY read' or 'KEY write' (",
                                                     parts.size(), " fields found)"));
    }
    const std::string_view key = parts[0];
    const std::string_view role = parts[1];
    Access access;
    if (role == "read") {
      access = Access::kRead;
    } else if (role == "write") {
      access = Access::kWrite;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "the access must be 'read' or 'write'"));
    }
    if (key.size() < kMinKeyBytes || key.size() > kMaxKeyBytes) {
      return absl::InvalidArgumentError(absl::StrCat(where, "a key must have ", kMinKeyBytes, "..",
                                                     kMaxKeyBytes, " characters, this one has ",
                                                     key.size()));
    }
    if (!ValidKeyChars(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "a key must be printable ASCII without spaces"));
    }
    for (const Entry& e : keys.keys_) {
      if (e.key == key) {
        return absl::InvalidArgumentError(absl::StrCat(where, "this key was given before"));
      }
    }
    keys.keys_.push_back({std::string(key), access});
    keys.max_len_ = std::max(keys.max_len_, key.size());
  }
  if (keys.keys_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": holds no API key"));
  }
  return keys;
}

Access ApiKeys::Lookup(std::string_view key) const {
  // Every stored key is compared, whatever matches.
  int found = int(Access::kNone);
  const size_t span = std::min(std::max(max_len_, key.size()), kMaxKeyBytes + 1);
  for (const Entry& e : keys_) {
    const bool eq = ConstantTimeEquals(key, e.key, span);
    found |= eq ? int(e.access) : 0;
  }
  return static_cast<Access>(found);
}

grpc::Status ApiKeys::Check(const grpc::ServerContextBase& ctx, Access need) const {
  if (keys_.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return CheckAuthorization(nullptr, need);
  const std::string_view value(it->second.data(), it->second.size());
  return CheckAuthorization(&value, need);
}

grpc::Status ApiKeys::CheckAuthorization(const std::string_view* authorization, Access need) const {
  if (keys_.empty()) return grpc::Status::OK;
  if (authorization == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "an API key is required (metadata 'authorization: Bearer KEY')");
  }
  const std::string_view value = *authorization;
  constexpr std::string_view kBearer = "Bearer ";
  if (value.size() < kBearer.size() || (value.substr(0, kBearer.size()) != kBearer &&
                                        value.substr(0, kBearer.size()) != "bearer ")) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization metadata must be 'Bearer KEY'");
  }
  const Access got = Lookup(Trim(value.substr(kBearer.size())));
  if (got == Access::kNone) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the API key is not valid");
  }
  if (int(got) < int(need)) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "this API key may only read; the call needs a write key");
  }
  return grpc::Status::OK;
}

}  // namespace attnsearch
