// API keys: who may call the SearchService.
//
// A key file holds one key per line, `KEY read` or `KEY write`; blank lines
// and lines starting with `#` are ignored. A key is 16..512 printable ASCII
// characters without spaces. Clients send `authorization: Bearer KEY`.
// A read key may call the read RPCs (GetCollection, ListCollections, Get,
// Search); a write key may call every RPC, including the administrative
// ones (Backup, which writes files on the server's machine).
//
// Keys never appear in error messages or logs: a bad line is reported by
// its file and line number only, and a rejected call is told only that its
// key is missing, unknown or read-only. Keys are compared in constant time
// (every stored key is compared with every byte of the presented one).
#ifndef ATTNSEARCH_SERVER_AUTH_H_
#define ATTNSEARCH_SERVER_AUTH_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace attnsearch {

enum class Access { kNone = 0, kRead = 1, kWrite = 2 };

class ApiKeys {
 public:
  // No keys: every call is allowed (the server runs without --api_keys).
  ApiKeys() = default;

  // Parses a key file. INVALID_ARGUMENT naming "FILE:LINE" for a malformed
  // line (or a key given twice), NOT_FOUND when the file cannot be read,
  // INVALID_ARGUMENT when it holds no key.
  static absl::StatusOr<ApiKeys> Load(const std::string& path);
  // The same from text; `name` stands for the file in messages.
  static absl::StatusOr<ApiKeys> Parse(std::string_view text, const std::string& name);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // The access `key` grants (kNone for an unknown key). Constant time in
  // the key's content.
  Access Lookup(std::string_view key) const;

  // OK when the call's `authorization` metadata carries a key granting
  // `need` (always OK when no keys are configured); else UNAUTHENTICATED
  // (no or unknown key) or PERMISSION_DENIED (a read key on a write RPC).
  grpc::Status Check(const grpc::ServerContextBase& ctx, Access need) const;
  // The same for an authorization value (null: none was sent), e.g. an
  // HTTP Authorization header.
  grpc::Status CheckAuthorization(const std::string_view* authorization, Access need) const;

 private:
  struct Entry {
    std::string key;
    Access access;
  };
  std::vector<Entry> keys_;
  size_t max_len_ = 0;
};

// Compares a and b in time that depends only on their lengths' maximum.
bool ConstantTimeEquals(std::string_view a, std::string_view b, size_t span);

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_AUTH_H_
