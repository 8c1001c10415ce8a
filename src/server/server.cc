#include "server/server.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/status.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "http/http_server.h"
#include "server/auth.h"
#include "server/console.h"
#include "server/json_gateway.h"
#include "server/service.h"
#include "server/worker_pool.h"

namespace attnsearch {
namespace {

// OK when `address` is HOST:PORT with a port in 0..65535.
absl::Status CheckHostPort(const std::string& field, const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", address, "' is not HOST:PORT"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& field, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in || ss.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": cannot read '", path, "'"));
  }
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ATTN_ASSIGN_OR_RETURN(pair.cert_chain, ReadWholeFile("tls_cert", o.tls_cert));
  ATTN_ASSIGN_OR_RETURN(pair.private_key, ReadWholeFile("tls_key", o.tls_key));
  // gRPC would only find out when it listens, and say it cannot listen.
  ATTN_RETURN_IF_ERROR(CheckTlsPair(o.tls_cert, o.tls_key));
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(ssl);
}

std::string Host(const std::string& address) { return address.substr(0, address.rfind(':')); }

bool IsLoopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" ||
         host.rfind("127.", 0) == 0;
}

}  // namespace

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

absl::Status ServerOptions::Validate() const {
  if (data_dir.empty()) return absl::InvalidArgumentError("data_dir: required");
  ATTN_RETURN_IF_ERROR(CheckHostPort("listen", listen));
  if (!metrics_listen.empty())
    ATTN_RETURN_IF_ERROR(CheckHostPort("metrics_listen", metrics_listen));
  if (tls_cert.empty() != tls_key.empty()) {
    return absl::InvalidArgumentError("tls_cert, tls_key: give both or neither");
  }
  if (!http_listen.empty()) ATTN_RETURN_IF_ERROR(CheckHostPort("http_listen", http_listen));
  if (max_message_mb < 1 || max_message_mb > 2047) {
    return absl::InvalidArgumentError("max_message_mb: must be in 1..2047");
  }
  if (!(drain_s >= 0 && drain_s <= 3600)) {
    return absl::InvalidArgumentError("drain_s: must be in [0, 3600]");
  }
  if (!(shutdown_grace_s >= 0)) return absl::InvalidArgumentError("shutdown_grace_s: must be >= 0");
  if (cores < 0) return absl::InvalidArgumentError("cores: must be >= 0");
  if (!(collection.rebuild_tombstone_ratio >= 0 && collection.rebuild_tombstone_ratio <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rebuild_tombstone_ratio: must be in [0, 1], got ", collection.rebuild_tombstone_ratio));
  }
  if (collection.limits.max_top_k == 0) {
    return absl::InvalidArgumentError("max_top_k: must be at least 1");
  }
  if (collection.limits.max_candidates == 0) {
    return absl::InvalidArgumentError("max_candidates: must be at least 1");
  }
  if (inline_reads < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("inline_reads: must be -1 (chosen), 0 (none) or more, got ", inline_reads));
  }
  if (workers > kMaxWorkers) {
    return absl::InvalidArgumentError(
        absl::StrCat("workers: must be 0 (one per core) .. ", kMaxWorkers, ", got ", workers));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  ATTN_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Server> s(new Server());
  s->options_ = std::move(options);
  const ServerOptions& o = s->options_;
  s->api_keys_ = std::make_unique<ApiKeys>();
  if (!o.api_keys_file.empty()) {
    absl::StatusOr<ApiKeys> keys = ApiKeys::Load(o.api_keys_file);
    if (!keys.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("api_keys: ", keys.status().message()));
    }
    *s->api_keys_ = *std::move(keys);
  }
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  s->core_budget_ = std::make_unique<CoreBudget>(o.cores > 0 ? o.cores : int(hardware));
  const size_t workers = o.workers > 0 ? o.workers : hardware;
  // gRPC 1.51 runs callbacks on max(2, cores / 2) threads of its own.
  const size_t inline_reads = o.inline_reads >= 0
                                  ? size_t(o.inline_reads)
                                  : std::min(workers, std::max<size_t>(2, hardware / 2));
  s->pool_ = std::make_unique<WorkerPool>(workers, s->core_budget_.get(), inline_reads);
  Server* self = s.get();
  s->metrics_ = std::make_unique<ServerMetrics>(o.log_calls, [self] {
    std::vector<CollectionGauges> out;
    Catalog* c = self->open_catalog_.load();
    if (c == nullptr) return out;
    for (const auto& [name, collection] : c->List()) out.push_back({name, collection->Stats()});
    return out;
  });
  ATTN_RETURN_IF_ERROR(s->StartMetrics());
  ATTN_RETURN_IF_ERROR(s->Listen());
  absl::Status opened = s->OpenCollections();
  if (opened.ok()) opened = s->StartJsonApi();
  if (!opened.ok()) {
    s->grpc_->Shutdown();
    return opened;
  }
  return s;
}

absl::Status Server::StartMetrics() {
  if (options_.metrics_listen.empty()) return absl::OkStatus();
  http_ = std::make_unique<HttpServer>();
  http_->Get("/metrics", [this](const HttpRequest&) {
    return HttpResponse{.content_type = "text/plain; version=0.0.4; charset=utf-8",
                        .body = metrics_->Render(),
                        .headers = {}};
  });
  absl::StatusOr<int> port = http_->Start(options_.metrics_listen);
  if (!port.ok()) return Annotate(port.status(), "metrics_listen");
  metrics_port_ = *port;
  LogInfo("metrics listening",
          {{"address", absl::StrCat(Host(options_.metrics_listen), ":", metrics_port_)}});
  return absl::OkStatus();
}

absl::Status Server::StartJsonApi() {
  if (options_.http_listen.empty()) return absl::OkStatus();
  HttpServerOptions http_options;
  // A client that stalls mid-request holds a thread until the read timeout
  // (each read's, so a slow but steady upload is not cut): enough threads
  // and a short timeout keep a few such clients from holding up the rest.
  http_options.threads = 16;
  http_options.read_timeout_s = 10;
  http_options.max_body_bytes = size_t(options_.max_message_mb) << 20;
  // HTTPS with the gRPC port's certificate, when it has one.
  http_options.tls_cert = options_.tls_cert;
  http_options.tls_key = options_.tls_key;
  json_http_ = std::make_unique<HttpServer>(http_options);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  RegisterJsonGateway(json_http_.get(), InProcessChannel(args), api_keys_.get());
  RegisterConsole(json_http_.get());
  absl::StatusOr<int> port = json_http_->Start(options_.http_listen);
  if (!port.ok()) return Annotate(port.status(), "http_listen");
  http_port_ = *port;
  LogInfo("JSON API listening",
          {{"address", absl::StrCat(Host(options_.http_listen), ":", http_port_)},
           {"tls", options_.tls_cert.empty() ? "off" : "on"}});
  if (!IsLoopback(Host(options_.http_listen))) {
    if (!api_keys_->enabled()) {
      LogWarn(
          "the JSON API serves beyond loopback without --api_keys: anyone who can reach it can "
          "read and write");
    } else if (options_.tls_cert.empty()) {
      LogWarn("the JSON API serves beyond loopback in plaintext: API keys travel unencrypted");
    }
  }
  return absl::OkStatus();
}

absl::Status Server::Listen() {
  const ServerOptions& o = options_;
  ATTN_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, Credentials(o));
  ServiceOptions service_options;
  if (api_keys_->enabled()) service_options.keys = api_keys_.get();
  service_options.observer = metrics_.get();
  service_ = std::make_unique<SearchServiceImpl>(nullptr, pool_.get(), service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen, credentials, &port_);
  // gRPC sets SO_REUSEPORT by default on Linux, which lets a second server
  // bind a port in use and take a share of its connections: refuse instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(o.max_message_mb << 20);
  builder.SetMaxSendMessageSize(o.max_message_mb << 20);
  builder.RegisterService(service_.get());
  grpc_ = builder.BuildAndStart();
  if (!grpc_ || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("listen: cannot listen on ", o.listen));
  }
  // The standard health service answers for the whole server ("") and for
  // the service by name, as probes and load balancers ask.
  grpc::HealthCheckServiceInterface* health = grpc_->GetHealthCheckService();
  health->SetServingStatus(v1::SearchService::service_full_name(), false);
  health->SetServingStatus(false);
  const std::string host = Host(o.listen);
  LogInfo("opening the collections", {{"address", address()},
                                      {"data_dir", o.data_dir},
                                      {"tls", o.tls_cert.empty() ? "off" : "on"},
                                      {"api_keys", int64_t(api_keys_->size())}});
  if (!IsLoopback(host) && !api_keys_->enabled()) {
    LogWarn(
        "listening beyond loopback without --api_keys: anyone who can reach this address "
        "can read and write");
  }
  if (!IsLoopback(host) && api_keys_->enabled() && o.tls_cert.empty()) {
    LogWarn("API keys travel in plaintext beyond loopback; serve TLS with --tls_cert/--tls_key");
  }
  return absl::OkStatus();
}

absl::Status Server::OpenCollections() {
  const auto start = std::chrono::steady_clock::now();
  CatalogOptions catalog_options;
  catalog_options.data_dir = options_.data_dir;
  catalog_options.collection = options_.collection;
  StorageOptions& storage = catalog_options.collection.storage;
  storage.sync_writes = options_.sync_writes;
  const size_t cache_mb = options_.block_cache_mb > 0
                              ? options_.block_cache_mb
                              : size_t(std::max<uint64_t>(256, AvailableMemoryMb() / 8));
  storage.block_cache = std::make_shared<BlockCache>(cache_mb << 20);
  const uint64_t memory_mb = AvailableMemoryMb();
  const uint64_t arena_mb =
      options_.arena_budget_mb > 0
          ? options_.arena_budget_mb
          : std::max<uint64_t>(256,
                               memory_mb * 3 / 4 - std::min<uint64_t>(memory_mb * 3 / 4, cache_mb));
  catalog_options.collection.arena_budget = std::make_shared<ArenaBudget>(arena_mb << 20);
  catalog_options.collection.rerank.cores = core_budget_.get();
  ATTN_ASSIGN_OR_RETURN(catalog_, Catalog::Open(catalog_options));
  service_->SetCatalog(catalog_.get());
  open_catalog_.store(catalog_.get());
  grpc_->GetHealthCheckService()->SetServingStatus(true);
  LogInfo("serving", {{"collections", int64_t(catalog_->List().size())},
                      {"open_ms", std::chrono::duration<double, std::milli>(
                                      std::chrono::steady_clock::now() - start)
                                      .count()}});
  return absl::OkStatus();
}

std::string Server::address() const { return absl::StrCat(Host(options_.listen), ":", port_); }

std::shared_ptr<grpc::Channel> Server::InProcessChannel(const grpc::ChannelArguments& args) {
  return grpc_->InProcessChannel(args);
}

void Server::Stop() {
  std::call_once(stopped_, [this] {
    grpc_->GetHealthCheckService()->Shutdown();  // every name NOT_SERVING from now on
    if (options_.drain_s > 0) {
      LogInfo("draining", {{"seconds", options_.drain_s}});
      std::this_thread::sleep_for(std::chrono::duration<double>(options_.drain_s));
    }
    // The JSON API first: its calls in flight finish through gRPC, which
    // is still up.
    json_http_.reset();
    grpc_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::microseconds(int64_t(options_.shutdown_grace_s * 1e6)));
    grpc_->Wait();
    pool_.reset();  // finishes queued jobs
    http_.reset();
    open_catalog_.store(nullptr);
    catalog_.reset();  // snapshots and closes every collection
    LogInfo("stopped");
  });
}

Server::~Server() {
  if (grpc_ != nullptr && catalog_ != nullptr) Stop();
}

}  // namespace attnsearch
