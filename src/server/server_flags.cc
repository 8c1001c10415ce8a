#include "server/server_flags.h"

#include <algorithm>

#include "CLI/CLI.hpp"

namespace attnsearch {

void AddServerFlags(CLI::App* app, ServerOptions* o) {
  RequestLimits& limits = o->collection.limits;
  CollectionOptions& collection = o->collection;
  app->add_option("--data_dir", o->data_dir, "directory holding the collections")->required();
  app->add_option("--listen", o->listen, "address to listen on (HOST:PORT; PORT 0 picks one)")
      ->capture_default_str();
  app->add_option("--workers", o->workers, "threads doing engine work (0: one per core)")
      ->check(CLI::Range(size_t(0), ServerOptions::kMaxWorkers))
      ->capture_default_str();
  app->add_option("--inline_reads", o->inline_reads,
                  "Searches and Gets run at once on gRPC's callback thread when a worker is "
                  "idle and no call waits, at most this many at a time (0: all calls go through "
                  "the workers' queue; -1: as many as gRPC has callback threads, half the "
                  "cores and at least 2, at most --workers)")
      ->capture_default_str();
  app->add_option("--max_message_mb", o->max_message_mb, "largest request message, MiB")
      ->capture_default_str();
  app->add_option("--max_top_k", limits.max_top_k, "largest top_k")->capture_default_str();
  app->add_option("--max_attention_cells", limits.max_attention_cells,
                  "most attention weights one Search returns with attention_map (its hits' "
                  "query tokens x document tokens)")
      ->capture_default_str();
  app->add_option("--max_candidates", limits.max_candidates, "largest candidates")
      ->capture_default_str();
  app->add_option("--max_batch_documents", limits.max_batch_documents,
                  "largest number of documents per upsert message")
      ->capture_default_str();
  app->add_option("--max_query_tokens", limits.max_query_tokens,
                  "most token rows per query (a text query: its distinct words, then as many "
                  "of their expansions as fit, the weightiest)")
      ->capture_default_str();
  app->add_option("--max_document_tokens", limits.max_document_tokens,
                  "most token rows per document")
      ->capture_default_str();
  app->add_option_function<size_t>(
         "--max_request_mb", [&limits](size_t mb) { limits.max_request_bytes = mb << 20; },
         "most memory one request may hold, MiB: a Search's fetched token matrices and "
         "similarities, an Upsert batch's documents (0: no limit)")
      ->default_str(std::to_string(limits.max_request_bytes >> 20));
  app->add_option("--snapshot_every", collection.snapshot_every,
                  "write an ANN snapshot after this many additions")
      ->capture_default_str();
  app->add_option("--rebuild_tombstone_ratio", collection.rebuild_tombstone_ratio,
                  "rebuild a collection's ANN index in the background once deleted or "
                  "superseded vectors are this share of it (0: never)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app->add_option("--rebuild_min_tombstones", collection.rebuild_min_tombstones,
                  "... and at least this many")
      ->capture_default_str();
  app->add_option("--max_pending_vectors", collection.max_pending_vectors,
                  "vectors written but not yet linked into a collection's ANN graph (searches "
                  "score them exactly) before writes wait for the background inserter")
      ->capture_default_str();
  app->add_flag_callback(
      "--sync_insert", [o] { o->collection.background_insert = false; },
      "writes link their vectors into the ANN graph before they return, instead of a "
      "background inserter doing it");
  app->add_option("--shutdown_grace_s", o->shutdown_grace_s,
                  "seconds calls in flight get to finish at shutdown")
      ->capture_default_str();
  app->add_option("--drain_s", o->drain_s,
                  "seconds to keep serving after a stop signal while the health service says "
                  "NOT_SERVING, so load balancers move away first")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app->add_option("--block_cache_mb", o->block_cache_mb,
                  "RocksDB block cache shared by all collections, MiB (candidates' tokens are "
                  "read from it; 0: an eighth of the memory, or of the cgroup's limit, at least "
                  "256)")
      ->capture_default_str();
  app->add_option("--arena_budget_mb", o->arena_budget_mb,
                  "memory the collections' token arenas may take together, MiB (every "
                  "searchable document's token matrix is held in memory; a collection that "
                  "does not fit is refused at start, naming the sizes; 0: three quarters of "
                  "the memory, or of the cgroup's limit, less the block cache)")
      ->capture_default_str();
  app->add_flag_callback(
      "--no_token_arena", [&collection] { collection.token_arena = false; },
      "keep token matrices on disk only: searches read their candidates' matrices from "
      "RocksDB (less memory, slower searches)");
  StorageOptions& storage = collection.storage;
  app->add_option_function<uint64_t>(
         "--min_free_disk_mb", [&storage](uint64_t mb) { storage.min_free_bytes = mb << 20; },
         "free disk space kept in reserve: below it writes answer RESOURCE_EXHAUSTED and "
         "collections open read-only (0: no reserve)")
      ->default_str(std::to_string(storage.min_free_bytes >> 20));
  app->add_flag_callback(
      "--no_sync", [o] { o->sync_writes = false; },
      "acknowledge writes before the WAL is synced (survives a process crash, not a power "
      "failure)");
  app->add_option("--cores", o->cores,
                  "cores the reranker's threads share among concurrent queries (0: one per core)")
      ->capture_default_str();
  app->add_option("--rerank_threads", collection.rerank.max_threads,
                  "most threads one query's reranking uses (0: --cores)")
      ->capture_default_str();
  app->add_option("--tls_cert", o->tls_cert,
                  "serve TLS with this PEM certificate chain (with --tls_key)");
  app->add_option("--tls_key", o->tls_key, "the PEM private key of --tls_cert");
  app->add_option("--api_keys", o->api_keys_file,
                  "require API keys: a file of lines 'KEY read' or 'KEY write' ('#' comments); "
                  "clients send 'authorization: Bearer KEY'");
  app->add_option_function<std::string>(
         "--log_calls",
         [o](const std::string& v) {
           o->log_calls = v == "all"      ? CallLogging::kAll
                          : v == "errors" ? CallLogging::kErrors
                                          : CallLogging::kNone;
         },
         "log calls as JSON lines on stderr: all, errors or none")
      ->check(CLI::IsMember({"all", "errors", "none"}))
      ->default_str("errors");
  app->add_option("--metrics_listen", o->metrics_listen,
                  "serve Prometheus metrics at http://HOST:PORT/metrics (PORT 0 picks one)");
  app->add_option("--http_listen", o->http_listen,
                  "serve the JSON API (every RPC at POST http://HOST:PORT/v1/<Rpc>, bodies in "
                  "protobuf's JSON mapping; the same API keys and limits), e.g. 127.0.0.1:8080 "
                  "(PORT 0 picks one); HTTPS with --tls_cert");
}

absl::StatusOr<ServerOptions> ParseServerFlags(const std::vector<std::string>& args) {
  ServerOptions options;
  CLI::App app;
  AddServerFlags(&app, &options);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 pops from the back
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return options;
}

}  // namespace attnsearch
