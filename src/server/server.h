// Server: attnsearch-server as a library. Start listens on a real port,
// opens (and recovers) the collections of one data directory and serves
// the attnsearch.v1.SearchService, the standard health service and
// reflection over gRPC, plus Prometheus metrics over HTTP when asked.
//
//   ServerOptions options;
//   options.data_dir = "/var/lib/attnsearch";
//   options.listen = "127.0.0.1:0";
//   ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Server> server, Server::Start(options));
//   auto stub = v1::SearchService::NewStub(server->InProcessChannel());
//   ...
//   server->Stop();  // or let it go out of scope
//
// attnsearch-server (tools/server_main.cc) is this class behind flags
// (server/server_flags.h) and a stop signal.
//
// Health: NOT_SERVING (for "" and attnsearch.v1.SearchService) while the
// collections open and from the first moment of Stop; SERVING in between.
// Calls that arrive while the collections open answer UNAVAILABLE.
//
// Thread safety: every method may be called from any thread; Stop is
// idempotent.
#ifndef ATTNSEARCH_SERVER_SERVER_H_
#define ATTNSEARCH_SERVER_SERVER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "core/core_budget.h"
#include "engine/catalog.h"
#include "grpcpp/grpcpp.h"
#include "server/observe.h"

namespace attnsearch {

class HttpServer;
class SearchServiceImpl;
class WorkerPool;
class ApiKeys;

// CollectionOptions' defaults, with one request's memory limited to 1 GiB
// (a server answers many clients at once).
inline CollectionOptions ServedCollectionOptions() {
  CollectionOptions o;
  o.limits.max_request_bytes = size_t(1) << 30;
  return o;
}

struct ServerOptions {
  // Directory holding the collections; created if missing. Required.
  std::string data_dir;
  // Address to listen on, HOST:PORT; port 0 lets the system choose (see
  // Server::port). Default: 127.0.0.1:50051.
  std::string listen = "127.0.0.1:50051";
  // Threads doing engine work, at most kMaxWorkers. Default: 0, one per
  // hardware thread.
  static constexpr size_t kMaxWorkers = 1024;
  size_t workers = 0;
  // Searches and Gets run on gRPC's own callback thread, without the
  // hand-off to a worker, when a worker is idle and no call waits; at most
  // this many at once (each takes an idle worker's place). 0: every call
  // goes through the workers' queue. Default: -1, as many as gRPC has
  // callback threads (half the cores, at least 2), at most the workers.
  int inline_reads = -1;
  // Cores the reranker's threads share among concurrent queries (an idle
  // server gives one query all of them). Default: 0, one per hardware
  // thread.
  int cores = 0;
  // Largest request and response message, MiB. Default: 64.
  int max_message_mb = 64;
  // Every collection's options: request limits, snapshots, background
  // rebuilds, the reranker's threads, the free-disk reserve. Default:
  // CollectionOptions' defaults with a request memory limit
  // (limits.max_request_bytes) of 1 GiB. The server sets the fields it
  // owns: the shared core budget, the block cache and sync_writes below.
  CollectionOptions collection = ServedCollectionOptions();
  // RocksDB block cache shared by all collections, MiB (the candidates'
  // token matrices are read from it). Default: 0, an eighth of the memory
  // (of the control group's limit when lower), at least 256.
  size_t block_cache_mb = 0;
  // Memory the collections' token arenas may take together, MiB (see
  // CollectionOptions::token_arena): a collection whose arena would not fit
  // is refused at open, and a write that would not fit is refused, both
  // naming the sizes. Default: 0, three quarters of the memory (of the
  // control group's limit when lower) less the block cache, at least 256.
  size_t arena_budget_mb = 0;
  // Acknowledge a write only once its WAL is synced (survives a power
  // failure; false survives a process crash only). Default: true.
  bool sync_writes = true;
  // At Stop: seconds to keep serving while health says NOT_SERVING, so load
  // balancers move away first. Default: 0.
  double drain_s = 0;
  // At Stop: seconds calls in flight get to finish. Default: 10.
  double shutdown_grace_s = 10;
  // TLS: a PEM certificate chain and its private key, both or neither.
  // Default: none, plaintext.
  std::string tls_cert;
  std::string tls_key;
  // Require API keys: a file of lines "KEY read" or "KEY write" (see
  // server/auth.h). Default: none, anyone who can connect may call.
  std::string api_keys_file;
  // Which calls are logged as JSON lines. Default: the failed ones.
  CallLogging log_calls = CallLogging::kErrors;
  // Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: the
  // system chooses, see Server::metrics_port). Default: none.
  std::string metrics_listen;
  // Serve the JSON API (server/json_gateway.h: every RPC at POST
  // http://HOST:PORT/v1/<Rpc>) here, e.g. "127.0.0.1:8080"; HTTPS with
  // tls_cert and tls_key when given. Default: none.
  std::string http_listen;

  // INVALID_ARGUMENT naming the option when unusable: no data_dir, an
  // address that is not HOST:PORT, half of the TLS pair, a value out of
  // range.
  absl::Status Validate() const;
};

// The memory this process may use, in MiB: the machine's, or its control
// group's limit when lower (cgroup v2 memory.max, v1 memory.limit_in_bytes).
uint64_t AvailableMemoryMb();

class Server {
 public:
  // Validates the options, reads the TLS and key files, listens, then
  // opens the collections (health NOT_SERVING meanwhile) and returns once
  // it serves. INVALID_ARGUMENT for unusable options or files (named),
  // UNAVAILABLE when an address cannot be bound, else the error of opening
  // the collections; nothing keeps running after an error.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);

  // Stop().
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The gRPC port, and HOST:PORT of the listen address.
  int port() const { return port_; }
  std::string address() const;
  // The metrics port; 0 without metrics_listen.
  int metrics_port() const { return metrics_port_; }
  // The JSON API's port; 0 without http_listen.
  int http_port() const { return http_port_; }

  // A channel to this server that bypasses the network (and TLS and API
  // keys' transport, not their checks: keys still travel as metadata).
  std::shared_ptr<grpc::Channel> InProcessChannel(
      const grpc::ChannelArguments& args = grpc::ChannelArguments());

  // The open collections.
  Catalog* catalog() const { return catalog_.get(); }

  // Health turns NOT_SERVING; calls are still served for drain_s seconds;
  // then new calls are refused, calls in flight get shutdown_grace_s to
  // finish, and every collection flushes its store, writes its ANN
  // snapshot and closes. Returns when all that is done.
  void Stop();

 private:
  Server() = default;
  absl::Status Listen();
  absl::Status StartMetrics();
  // The JSON API's listener, once the collections are open (http_listen).
  absl::Status StartJsonApi();
  absl::Status OpenCollections();

  ServerOptions options_;
  int port_ = 0;
  int metrics_port_ = 0;
  int http_port_ = 0;
  std::unique_ptr<HttpServer> json_http_;
  std::unique_ptr<ApiKeys> api_keys_;
  std::unique_ptr<CoreBudget> core_budget_;
  std::unique_ptr<WorkerPool> pool_;
  std::atomic<Catalog*> open_catalog_{nullptr};  // for the metrics' gauges
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<SearchServiceImpl> service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<Catalog> catalog_;
  std::once_flag stopped_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_SERVER_H_
