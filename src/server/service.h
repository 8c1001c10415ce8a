// SearchServiceImpl: the attnsearch.v1.SearchService on gRPC's callback API.
//
// Each handler returns at once and hands its work to a WorkerPool, whose
// job validates, calls the engine and finishes the reactor (Search and Get
// run their job on the handler's thread instead when a worker is idle). Every engine
// status is mapped to a gRPC status in one place (ToGrpc). Deadlines are
// passed to the engine, which abandons a search once its deadline passes.
#ifndef ATTNSEARCH_SERVER_SERVICE_H_
#define ATTNSEARCH_SERVER_SERVICE_H_

#include <atomic>
#include <chrono>
#include <string>

#include "attnsearch/v1/search.grpc.pb.h"
#include "engine/catalog.h"
#include "server/auth.h"
#include "server/worker_pool.h"

namespace attnsearch {

// One call, as the observer sees it.
struct CallRecord {
  const char* rpc = "";    // "Search"
  std::string collection;  // empty for ListCollections
  std::string request_id;  // the client's x-request-id, or generated
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::time_point dequeued;  // when a worker took the call
};

// Told about every finished call, e.g. to log it and count it. Must be
// thread-safe; called on gRPC and worker threads.
class CallObserver {
 public:
  virtual ~CallObserver() = default;
  virtual void CallDone(const CallRecord& call, const grpc::Status& status) = 0;
  // A successful Search's stage timings.
  virtual void SearchDone(const CallRecord& call, const SearchTiming& timing) = 0;
};

struct ServiceOptions {
  // Callers must present one of these keys (none configured: anyone may
  // call). Must outlive the service.
  const ApiKeys* keys = nullptr;
  // Must outlive the service; may be null.
  CallObserver* observer = nullptr;
};

class SearchServiceImpl final : public v1::SearchService::CallbackService {
 public:
  // `pool` must outlive the service and the gRPC server, and so must
  // `catalog`, which may be null until SetCatalog: calls meanwhile answer
  // UNAVAILABLE (the server listens while it opens its collections).
  SearchServiceImpl(Catalog* catalog, WorkerPool* pool, ServiceOptions options = {})
      : catalog_(catalog), pool_(pool), options_(options) {}

  // Makes the service answer calls with `catalog` (see the constructor).
  void SetCatalog(Catalog* catalog) { catalog_.store(catalog); }

  grpc::ServerUnaryReactor* CreateCollection(grpc::CallbackServerContext* ctx,
                                             const v1::CreateCollectionRequest* req,
                                             v1::CreateCollectionResponse* resp) override;
  grpc::ServerUnaryReactor* GetCollection(grpc::CallbackServerContext* ctx,
                                          const v1::GetCollectionRequest* req,
                                          v1::GetCollectionResponse* resp) override;
  grpc::ServerUnaryReactor* ListCollections(grpc::CallbackServerContext* ctx,
                                            const v1::ListCollectionsRequest* req,
                                            v1::ListCollectionsResponse* resp) override;
  grpc::ServerUnaryReactor* DropCollection(grpc::CallbackServerContext* ctx,
                                           const v1::DropCollectionRequest* req,
                                           v1::DropCollectionResponse* resp) override;
  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* ctx, const v1::UpsertRequest* req,
                                   v1::UpsertResponse* resp) override;
  grpc::ServerReadReactor<v1::UpsertRequest>* UpsertStream(grpc::CallbackServerContext* ctx,
                                                           v1::UpsertResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                                v1::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* ctx, const v1::SearchRequest* req,
                                   v1::SearchResponse* resp) override;
  grpc::ServerUnaryReactor* TrainEncoder(grpc::CallbackServerContext* ctx,
                                         const v1::TrainEncoderRequest* req,
                                         v1::TrainEncoderResponse* resp) override;
  grpc::ServerUnaryReactor* TrainCodec(grpc::CallbackServerContext* ctx,
                                       const v1::TrainCodecRequest* req,
                                       v1::TrainCodecResponse* resp) override;
  grpc::ServerUnaryReactor* TuneIndex(grpc::CallbackServerContext* ctx,
                                      const v1::TuneIndexRequest* req,
                                      v1::TuneIndexResponse* resp) override;
  // Catalog::Backup into an absolute `destination` (a write RPC).
  grpc::ServerUnaryReactor* Backup(grpc::CallbackServerContext* ctx, const v1::BackupRequest* req,
                                   v1::BackupResponse* resp) override;

  // Applies one upsert batch; the number of documents written.
  absl::StatusOr<uint64_t> ApplyUpsert(const v1::UpsertRequest& req);

  WorkerPool* pool() const { return pool_; }

  // Starts the record of a call: its rpc, collection and request id (the
  // client's x-request-id metadata, else a generated one, also sent back as
  // x-request-id initial metadata).
  CallRecord StartCall(grpc::CallbackServerContext* ctx, const char* rpc,
                       const std::string& collection);
  // OK when the call may proceed: its key grants `need` and the catalog is
  // open.
  grpc::Status Admit(const grpc::CallbackServerContext& ctx, Access need) const;
  // Tells the observer. Call before finishing the reactor.
  void EndCall(const CallRecord& call, const grpc::Status& status) const;

 private:
  // Where a call's job runs: always on a worker, or on gRPC's thread when
  // a worker is idle (WorkerPool::RunHereOrSubmit; for reads that take at
  // most a search's time, never for writes, which wait for the disk, or
  // for training and tuning).
  enum class Dispatch { kWorker, kHereWhenIdle };
  // Admits the call, then runs fn on the pool and finishes the call with
  // its status. No exception leaves the job.
  template <typename F>
  grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* ctx, const char* rpc, Access need,
                                const std::string& collection, F fn,
                                Dispatch dispatch = Dispatch::kWorker);
  // The catalog. REQUIRES: Admit returned OK.
  Catalog* catalog() const { return catalog_.load(); }
  // The collection a request names in `field`: INVALID_ARGUMENT naming the
  // field when empty, else the catalog's answer (NOT_FOUND naming it).
  absl::StatusOr<std::shared_ptr<Collection>> FindCollection(const std::string& name,
                                                             absl::string_view field) const;

  std::atomic<Catalog*> catalog_;
  WorkerPool* const pool_;
  const ServiceOptions options_;
  std::atomic<uint64_t> next_request_id_{1};
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_SERVICE_H_
