// SearchServiceImpl: the attnsearch.v1.SearchService on gRPC's callback API.
//
// Each handler returns at once and hands its work to a WorkerPool, whose
// job validates, calls the engine and finishes the reactor. Every engine
// status is mapped to a gRPC status in one place (ToGrpc). Deadlines are
// passed to the engine, which abandons a search once its deadline passes.
#ifndef ATTNSEARCH_SERVER_SERVICE_H_
#define ATTNSEARCH_SERVER_SERVICE_H_

#include "attnsearch/v1/search.grpc.pb.h"
#include "engine/catalog.h"
#include "server/worker_pool.h"

namespace attnsearch {

class SearchServiceImpl final : public v1::SearchService::CallbackService {
 public:
  // `catalog` and `pool` must outlive the service and the gRPC server.
  SearchServiceImpl(Catalog* catalog, WorkerPool* pool) : catalog_(catalog), pool_(pool) {}

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
  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* ctx,
                                   const v1::UpsertRequest* req,
                                   v1::UpsertResponse* resp) override;
  grpc::ServerReadReactor<v1::UpsertRequest>* UpsertStream(
      grpc::CallbackServerContext* ctx, v1::UpsertResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx,
                                   const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                                v1::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* ctx,
                                   const v1::SearchRequest* req,
                                   v1::SearchResponse* resp) override;
  grpc::ServerUnaryReactor* TrainEncoder(grpc::CallbackServerContext* ctx,
                                         const v1::TrainEncoderRequest* req,
                                         v1::TrainEncoderResponse* resp) override;
  grpc::ServerUnaryReactor* TuneIndex(grpc::CallbackServerContext* ctx,
                                      const v1::TuneIndexRequest* req,
                                      v1::TuneIndexResponse* resp) override;

  // Applies one upsert batch; the number of documents written.
  absl::StatusOr<uint64_t> ApplyUpsert(const v1::UpsertRequest& req);

  WorkerPool* pool() const { return pool_; }

 private:
  Catalog* const catalog_;
  WorkerPool* const pool_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_SERVICE_H_
