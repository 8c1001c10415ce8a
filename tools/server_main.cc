// attnsearch-server: serves the collections of one data directory over gRPC.
//
//   attnsearch-server --data_dir DIR [--listen 127.0.0.1:50051] [--workers N]
//
// Listens at once, then opens (and recovers) the collections: meanwhile the
// health service reports NOT_SERVING and calls answer UNAVAILABLE. Prints
// "attnsearch-server listening on HOST:PORT" once it serves (with --listen
// HOST:0 the port is chosen by the system; --port_file also writes it to a
// file then). SIGINT or SIGTERM stops it gracefully: the health service
// turns NOT_SERVING (for "" and for attnsearch.v1.SearchService), calls are
// still served for --drain_s seconds (default 0) so load balancers can move
// away, then calls in flight finish (up to --shutdown_grace_s) and every
// collection flushes its store, writes its ANN snapshot and closes. Logs are JSON lines on stderr
// (see server/observe.h);
// --metrics_listen serves Prometheus metrics.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "core/file_sync.h"
#include "core/log.h"
#include "engine/catalog.h"
#include "grpc/support/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/auth.h"
#include "server/metrics_http.h"
#include "server/observe.h"
#include "server/service.h"
#include "server/worker_pool.h"

namespace {

// gRPC's own messages go through the process's logger too, so stderr holds
// JSON lines only.
void LogGrpcMessage(gpr_log_func_args* args) {
  const attnsearch::LogLevel level =
      args->severity == GPR_LOG_SEVERITY_ERROR  ? attnsearch::LogLevel::kError
      : args->severity == GPR_LOG_SEVERITY_INFO ? attnsearch::LogLevel::kInfo
                                                : attnsearch::LogLevel::kWarn;
  attnsearch::Log(level, args->message,
                  {{"source", "grpc"}, {"file", args->file}, {"line", args->line}});
}

// The memory this process may use, in MiB: the machine's, or its control
// group's limit when lower (cgroup v2 memory.max, v1 memory.limit_in_bytes).
uint64_t AvailableMemoryMb() {
  uint64_t bytes = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
  for (const char* path :
       {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(path);
    uint64_t limit = 0;
    if (in >> limit && limit > 0) bytes = std::min(bytes, limit);  // "max" does not parse
  }
  return bytes >> 20;
}

}  // namespace

int main(int argc, char** argv) {
  gpr_set_log_function(LogGrpcMessage);
  // OpenMP threads that spin while they wait steal whole scheduler slices
  // from the gRPC workers on a busy machine (a 0.5 ms rerank became 16 ms);
  // they must sleep instead. The OpenMP runtime reads its environment when
  // it loads, so the setting takes a re-exec to apply.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    // If the re-exec fails, run on with the spinning default.
  }
  attnsearch::CatalogOptions catalog_options;
  std::string listen = "127.0.0.1:50051";
  std::string port_file;
  size_t workers = std::max(1u, std::thread::hardware_concurrency());
  int max_message_mb = 64;
  int shutdown_grace_s = 10;
  double drain_s = 0;
  bool no_sync = false;
  auto& limits = catalog_options.collection.limits;

  CLI::App app{"attnsearch-server: semantic search over gRPC"};
  app.add_option("--data_dir", catalog_options.data_dir, "directory holding the collections")
      ->required();
  app.add_option("--listen", listen, "address to listen on (HOST:PORT; PORT 0 picks one)")
      ->capture_default_str();
  app.add_option("--port_file", port_file, "write the chosen port to this file");
  app.add_option("--workers", workers, "threads doing engine work")->capture_default_str();
  app.add_option("--max_message_mb", max_message_mb, "largest request message, MiB")
      ->capture_default_str();
  app.add_option("--max_top_k", limits.max_top_k, "largest top_k")->capture_default_str();
  app.add_option("--max_candidates", limits.max_candidates, "largest candidates")
      ->capture_default_str();
  app.add_option("--max_batch_documents", limits.max_batch_documents,
                 "largest number of documents per upsert message")
      ->capture_default_str();
  app.add_option("--snapshot_every", catalog_options.collection.snapshot_every,
                 "write an ANN snapshot after this many additions")
      ->capture_default_str();
  app.add_option("--rebuild_tombstone_ratio", catalog_options.collection.rebuild_tombstone_ratio,
                 "rebuild a collection's ANN index in the background once deleted or "
                 "superseded vectors are this share of it (0: never)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--rebuild_min_tombstones", catalog_options.collection.rebuild_min_tombstones,
                 "... and at least this many")
      ->capture_default_str();
  app.add_option("--shutdown_grace_s", shutdown_grace_s,
                 "seconds calls in flight get to finish at shutdown")
      ->capture_default_str();
  app.add_option("--drain_s", drain_s,
                 "seconds to keep serving after a stop signal while the health service says "
                 "NOT_SERVING, so load balancers move away first")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  // One block cache for all collections, an eighth of the available memory
  // by default (at least 256 MiB): the candidates' token matrices are read
  // from it, and a cache smaller than the queries' hot set turns reranking
  // reads into file reads whose cost varies with the machine.
  size_t block_cache_mb = size_t(std::max<uint64_t>(256, AvailableMemoryMb() / 8));
  uint64_t min_free_disk_mb = catalog_options.collection.storage.min_free_bytes >> 20;
  app.add_option("--block_cache_mb", block_cache_mb,
                 "RocksDB block cache shared by all collections, MiB (candidates' tokens are "
                 "read from it; default: an eighth of the memory, or of the cgroup's limit)")
      ->capture_default_str();
  app.add_option("--min_free_disk_mb", min_free_disk_mb,
                 "free disk space kept in reserve: below it writes answer RESOURCE_EXHAUSTED "
                 "and collections open read-only (0: no reserve)")
      ->capture_default_str();
  app.add_flag("--no_sync", no_sync,
               "acknowledge writes before the WAL is synced (survives a process crash, "
               "not a power failure)");
  int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--cores", cores, "cores the reranker's threads share among concurrent queries")
      ->capture_default_str();
  app.add_option("--rerank_threads", catalog_options.collection.rerank.max_threads,
                 "most threads one query's reranking uses (0: --cores)")
      ->capture_default_str();
  std::string tls_cert, tls_key, api_keys_file;
  app.add_option("--tls_cert", tls_cert,
                 "serve TLS with this PEM certificate chain (with --tls_key)");
  app.add_option("--tls_key", tls_key, "the PEM private key of --tls_cert");
  app.add_option("--api_keys", api_keys_file,
                 "require API keys: a file of lines 'KEY read' or 'KEY write' ('#' comments); "
                 "clients send 'authorization: Bearer KEY'");
  app.add_option("--max_query_tokens", limits.max_query_tokens, "most token rows per query")
      ->capture_default_str();
  app.add_option("--max_document_tokens", limits.max_document_tokens,
                 "most token rows per document")
      ->capture_default_str();
  size_t max_request_mb = 1024;
  app.add_option("--max_request_mb", max_request_mb,
                 "most memory one request may hold, MiB: a Search's fetched token matrices "
                 "and similarities, an Upsert batch's documents (0: no limit)")
      ->capture_default_str();
  std::string log_calls = "errors";
  app.add_option("--log_calls", log_calls, "log calls as JSON lines on stderr: all, errors or none")
      ->check(CLI::IsMember({"all", "errors", "none"}))
      ->capture_default_str();
  std::string metrics_listen, metrics_port_file;
  app.add_option("--metrics_listen", metrics_listen,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (PORT 0 picks one)");
  app.add_option("--metrics_port_file", metrics_port_file,
                 "write the metrics port to this file once it listens");
  CLI11_PARSE(app, argc, argv);
  limits.max_request_bytes = max_request_mb << 20;
  if (tls_cert.empty() != tls_key.empty()) {
    attnsearch::LogError("--tls_cert and --tls_key go together");
    return 2;
  }
  attnsearch::ApiKeys api_keys;
  if (!api_keys_file.empty()) {
    auto loaded = attnsearch::ApiKeys::Load(api_keys_file);
    if (!loaded.ok()) {
      attnsearch::LogError(std::string(loaded.status().message()));
      return 2;
    }
    api_keys = *std::move(loaded);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    for (auto [path, out] :
         {std::pair{&tls_cert, &pair.cert_chain}, std::pair{&tls_key, &pair.private_key}}) {
      std::ifstream in(*path, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      if (!in || ss.str().empty()) {
        attnsearch::LogError("cannot read a TLS file", {{"file", *path}});
        return 2;
      }
      *out = ss.str();
    }
    ssl.pem_key_cert_pairs.push_back(std::move(pair));
    credentials = grpc::SslServerCredentials(ssl);
  }
  // One budget for the whole process: an idle server gives a query every
  // core; under load queries share them (see core/core_budget.h).
  attnsearch::CoreBudget core_budget(cores);
  catalog_options.collection.rerank.cores = &core_budget;
  catalog_options.collection.storage.sync_writes = !no_sync;
  catalog_options.collection.storage.block_cache =
      std::make_shared<attnsearch::BlockCache>(block_cache_mb << 20);
  catalog_options.collection.storage.min_free_bytes = min_free_disk_mb << 20;

  // Block the stop signals in every thread; one thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The server listens before the collections are open (health reports
  // NOT_SERVING and calls answer UNAVAILABLE meanwhile); the "listening on"
  // line is printed once it serves.
  auto pool = std::make_unique<attnsearch::WorkerPool>(workers, &core_budget);
  std::atomic<attnsearch::Catalog*> open_catalog{nullptr};
  attnsearch::ServerMetrics metrics(log_calls == "all"      ? attnsearch::CallLogging::kAll
                                    : log_calls == "errors" ? attnsearch::CallLogging::kErrors
                                                            : attnsearch::CallLogging::kNone,
                                    [&open_catalog] {
                                      std::vector<attnsearch::CollectionGauges> out;
                                      attnsearch::Catalog* c = open_catalog.load();
                                      if (c == nullptr) return out;
                                      for (const auto& [name, collection] : c->List()) {
                                        out.push_back({name, collection->Stats()});
                                      }
                                      return out;
                                    });
  std::unique_ptr<attnsearch::MetricsHttpServer> metrics_http;
  if (!metrics_listen.empty()) {
    metrics_http =
        std::make_unique<attnsearch::MetricsHttpServer>([&metrics] { return metrics.Render(); });
    auto metrics_port = metrics_http->Start(metrics_listen);
    if (!metrics_port.ok()) {
      attnsearch::LogError(std::string(metrics_port.status().message()));
      return 2;
    }
    attnsearch::LogInfo("metrics listening",
                        {{"address", metrics_listen.substr(0, metrics_listen.rfind(':')) + ":" +
                                         std::to_string(*metrics_port)}});
    if (!metrics_port_file.empty()) {
      attnsearch::WriteFileAtomically(metrics_port_file, std::to_string(*metrics_port) + "\n")
          .IgnoreError();  // best effort, as the port is also logged
    }
  }
  attnsearch::ServiceOptions service_options;
  if (api_keys.enabled()) service_options.keys = &api_keys;
  service_options.observer = &metrics;
  attnsearch::SearchServiceImpl service(nullptr, pool.get(), service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, credentials, &port);
  builder.SetMaxReceiveMessageSize(max_message_mb << 20);
  builder.SetMaxSendMessageSize(max_message_mb << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    attnsearch::LogError("cannot listen", {{"address", listen}});
    return 1;
  }
  // The standard health service answers for the whole server ("") and for
  // the service by name, as probes and load balancers ask: NOT_SERVING while
  // the collections open and from the start of a shutdown.
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(attnsearch::v1::SearchService::service_full_name(), false);
  health->SetServingStatus(false);
  const std::string host = listen.substr(0, listen.rfind(':'));
  attnsearch::LogInfo("opening the collections", {{"address", host + ":" + std::to_string(port)},
                                                  {"data_dir", catalog_options.data_dir},
                                                  {"tls", tls_cert.empty() ? "off" : "on"},
                                                  {"api_keys", int64_t(api_keys.size())}});

  const bool loopback =
      host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
  if (!loopback && !api_keys.enabled()) {
    attnsearch::LogWarn(
        "listening beyond loopback without --api_keys: anyone who can "
        "reach this address can read and write");
  }
  if (!loopback && api_keys.enabled() && tls_cert.empty()) {
    attnsearch::LogWarn(
        "API keys travel in plaintext beyond loopback; serve TLS with "
        "--tls_cert/--tls_key");
  }
  const auto open_start = std::chrono::steady_clock::now();
  auto catalog = attnsearch::Catalog::Open(catalog_options);
  if (!catalog.ok()) {
    attnsearch::LogError(std::string(catalog.status().message()));
    server->Shutdown();
    return 1;
  }
  service.SetCatalog(catalog->get());
  open_catalog.store(catalog->get());
  health->SetServingStatus(true);
  attnsearch::LogInfo("serving", {{"collections", int64_t((*catalog)->List().size())},
                                  {"open_ms", std::chrono::duration<double, std::milli>(
                                                  std::chrono::steady_clock::now() - open_start)
                                                  .count()}});
  if (!port_file.empty()) {
    attnsearch::WriteFileAtomically(port_file, std::to_string(port) + "\n").IgnoreError();
  }
  std::printf("attnsearch-server listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  attnsearch::LogInfo("shutting down", {{"signal", sig}});
  health->Shutdown();  // every name NOT_SERVING from now on
  if (drain_s > 0) {
    attnsearch::LogInfo("draining", {{"seconds", drain_s}});
    std::this_thread::sleep_for(std::chrono::duration<double>(drain_s));
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(shutdown_grace_s));
  server->Wait();
  pool.reset();  // finishes queued jobs
  metrics_http.reset();
  open_catalog.store(nullptr);
  catalog->reset();  // snapshots and closes every collection
  attnsearch::LogInfo("stopped");
  return 0;
}
