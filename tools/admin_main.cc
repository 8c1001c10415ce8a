// attnsearch-admin: administrative commands.
//
//   attnsearch-admin backup --server HOST:PORT --dest DIR [--collection NAME]
//       [--timeout_s 3600] [--api_key_file FILE] [--tls_ca FILE]
//
// Asks a running attnsearch-server to write a backup of one collection (or
// of every collection) into DIR, a directory on the server's machine that
// must not exist yet (an absolute path); the Backup RPC, which needs a write
// key. Prints the directory, each collection with its document count, the
// bytes and the time taken. Writes go on meanwhile (each collection's writes
// wait only while its copy is taken).
//
//   attnsearch-admin restore --backup DIR --data_dir DIR
//
// Offline: makes --data_dir (new, or an empty directory) a data directory
// holding the backup (Catalog::Restore: checks the manifest, copies, opens
// every collection to check its document count, then renames into place).
// No server may run on --data_dir meanwhile; start one on it afterwards.
//
//   attnsearch-admin collections --server HOST:PORT [--api_key_file FILE] [--tls_ca FILE]
//
// Lists the server's collections, one line each: name, live documents,
// tombstones the ANN index still holds, dim, token dtype, ANN spec, and what
// the collection takes on disk: in all, per document, and by kind (table
// files, write-ahead log, ANN snapshot, the rest).
//
// Exit status: 0 on success, 1 when the command failed, 2 for bad usage.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "attnsearch/v1/search.grpc.pb.h"
#include "cli/parse_flags.h"
#include "client/client_channel.h"
#include "engine/catalog.h"
#include "grpcpp/grpcpp.h"

namespace v1 = attnsearch::v1;

namespace {

// A stub for `server`, or null after printing why (for `command`).
std::unique_ptr<v1::SearchService::Stub> NewStub(const std::string& server,
                                                 const attnsearch::ClientSecurity& security,
                                                 const char* command) {
  auto channel = attnsearch::NewClientChannel(server, security);
  if (!channel.ok()) {
    std::fprintf(stderr, "attnsearch-admin %s: %s\n", command,
                 std::string(channel.status().message()).c_str());
    return nullptr;
  }
  return v1::SearchService::NewStub(*channel);
}

int Backup(const std::string& server, const attnsearch::ClientSecurity& security,
           const std::string& dest, const std::string& collection, int timeout_s) {
  if (dest.empty() || dest[0] != '/') {
    std::fprintf(stderr,
                 "attnsearch-admin backup: --dest: must be an absolute path on the server's "
                 "machine, got '%s'\n",
                 dest.c_str());
    return 2;
  }
  auto stub = NewStub(server, security, "backup");
  if (stub == nullptr) return 2;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  v1::BackupRequest req;
  req.set_destination(dest);
  req.set_collection(collection);
  v1::BackupResponse resp;
  const grpc::Status s = stub->Backup(&ctx, req, &resp);
  if (!s.ok()) {
    std::fprintf(stderr, "attnsearch-admin backup: %s: %s\n",
                 absl::StatusCodeToString(absl::StatusCode(s.error_code())).c_str(),
                 s.error_message().c_str());
    return 1;
  }
  std::printf("backup written to %s (on the server's machine)\n", resp.destination().c_str());
  for (const v1::BackedUpCollection& c : resp.collections()) {
    std::printf("  collection %s: %llu documents\n", c.name().c_str(),
                static_cast<unsigned long long>(c.documents()));
  }
  std::printf("%d collections, %s bytes, %llu ms\n", resp.collections_size(),
              absl::StrFormat("%d", resp.bytes()).c_str(),
              static_cast<unsigned long long>(resp.elapsed_ms()));
  return 0;
}

int Collections(const std::string& server, const attnsearch::ClientSecurity& security) {
  auto stub = NewStub(server, security, "collections");
  if (stub == nullptr) return 2;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::ListCollectionsResponse resp;
  const grpc::Status s = stub->ListCollections(&ctx, {}, &resp);
  if (!s.ok()) {
    std::fprintf(stderr, "attnsearch-admin collections: %s: %s\n",
                 absl::StatusCodeToString(absl::StatusCode(s.error_code())).c_str(),
                 s.error_message().c_str());
    return 1;
  }
  if (resp.collections_size() == 0) std::fprintf(stderr, "no collections on %s\n", server.c_str());
  for (const v1::CollectionInfo& c : resp.collections()) {
    const v1::DiskUsage& d = c.disk();
    const v1::MemoryUsage& m = c.memory();
    std::printf(
        "%s documents=%llu tombstones=%llu dim=%u dtype=%s ann_spec=%s disk_bytes=%llu "
        "bytes_per_document=%.0f (tables=%llu log=%llu ann_snapshot=%llu other=%llu) "
        "arena_bytes=%llu arena_tokens=%llu bytes_per_token=%.1f token_codec=%s%s "
        "candidates_from=%s first_stage_bytes=%llu\n",
        c.name().c_str(), static_cast<unsigned long long>(c.num_documents()),
        static_cast<unsigned long long>(c.num_tombstones()), c.config().dim(),
        v1::TokenDtype_Name(c.config().token_dtype()).c_str(), c.config().ann_spec().c_str(),
        static_cast<unsigned long long>(d.total_bytes()), d.bytes_per_document(),
        static_cast<unsigned long long>(d.table_bytes()),
        static_cast<unsigned long long>(d.log_bytes()),
        static_cast<unsigned long long>(d.ann_snapshot_bytes()),
        static_cast<unsigned long long>(d.other_bytes()),
        static_cast<unsigned long long>(m.arena_bytes()),
        static_cast<unsigned long long>(m.arena_tokens()), m.arena_bytes_per_token(),
        c.config().token_codec().name().empty() ? "rows" : c.config().token_codec().name().c_str(),
        c.config().token_codec().name() == "residual"
            ? absl::StrFormat("(%u bits, v%llu, %llu pending)", c.config().token_codec().bits(),
                              static_cast<unsigned long long>(c.codec_version()),
                              static_cast<unsigned long long>(c.codec_pending()))
                  .c_str()
            : "",
        c.config().candidates_from().empty() ? "pooled" : c.config().candidates_from().c_str(),
        static_cast<unsigned long long>(m.first_stage_bytes()));
  }
  return 0;
}

int Restore(const std::string& backup, const std::string& data_dir) {
  const auto start = std::chrono::steady_clock::now();
  auto restored = attnsearch::Catalog::Restore(backup, data_dir);
  if (!restored.ok()) {
    std::fprintf(stderr, "attnsearch-admin restore: %s\n", restored.status().ToString().c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("restored %zu collections from %s (made %s) into %s\n", restored->collections.size(),
              backup.c_str(),
              absl::FormatTime(absl::RFC3339_sec, restored->created, absl::UTCTimeZone()).c_str(),
              data_dir.c_str());
  for (const attnsearch::BackupEntry& e : restored->collections) {
    std::printf("  collection %s: %llu documents\n", e.name.c_str(),
                static_cast<unsigned long long>(e.documents));
  }
  std::printf("%.2f s\n", seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "attnsearch-admin: list a running server's collections, back them up, restore a backup"};
  app.require_subcommand(1);

  std::string server = "127.0.0.1:50051", dest, collection;
  int timeout_s = 3600;
  attnsearch::ClientSecurity security;
  CLI::App* backup = app.add_subcommand(
      "backup", "ask a running server to write a backup into a new directory on its machine");
  backup->add_option("--server", server, "server address")->capture_default_str();
  backup->add_option("--dest", dest, "directory to create on the server's machine (absolute)")
      ->required();
  backup->add_option("--collection", collection, "collection to back up (default: all)");
  backup->add_option("--timeout_s", timeout_s, "deadline of the call in seconds")
      ->check(CLI::Range(1, 7 * 86400))
      ->capture_default_str();
  backup->add_option("--api_key_file", security.api_key_file,
                     "file holding a write API key (default: the environment variable "
                     "ATTNSEARCH_API_KEY)");
  backup->add_option("--tls_ca", security.tls_ca_file,
                     "connect with TLS, trusting the PEM certificates in this file");

  std::string backup_dir, data_dir;
  CLI::App* restore = app.add_subcommand(
      "restore", "offline: make a new data directory of a backup (no server may run on it)");
  restore->add_option("--backup", backup_dir, "the backup directory")->required();
  restore->add_option("--data_dir", data_dir, "data directory to create (new or empty)")
      ->required();

  CLI::App* list = app.add_subcommand("collections", "list a running server's collections");
  list->add_option("--server", server, "server address")->capture_default_str();
  list->add_option("--api_key_file", security.api_key_file,
                   "file holding an API key (default: the environment variable "
                   "ATTNSEARCH_API_KEY)");
  list->add_option("--tls_ca", security.tls_ca_file,
                   "connect with TLS, trusting the PEM certificates in this file");

  const std::string first = argc > 1 ? argv[1] : "";
  if (!first.empty() && first[0] != '-' && first != "backup" && first != "restore" &&
      first != "collections") {
    std::fprintf(stderr,
                 "attnsearch-admin: unknown command '%s' (collections, backup or restore; "
                 "--help lists them)\n",
                 argv[1]);
    return 2;
  }
  if (const std::optional<int> done = attnsearch::ParseFlags(app, argc, argv, 2)) return *done;
  if (backup->parsed()) return Backup(server, security, dest, collection, timeout_s);
  if (list->parsed()) return Collections(server, security);
  return Restore(backup_dir, data_dir);
}
