#include "server/service.h"

#include <chrono>
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/status.h"
#include "server/convert.h"

namespace attnsearch {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  const auto d = ctx->deadline();
  if (d >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

// Reads an UpsertStream: each message is one atomic batch, applied on the
// pool in arrival order; the first error ends the call. The next message is
// read while one is applied (at most kReadAhead wait), so receiving and
// parsing overlap the engine's work.
class UpsertStreamReactor : public grpc::ServerReadReactor<v1::UpsertRequest> {
 public:
  UpsertStreamReactor(SearchServiceImpl* service, grpc::CallbackServerContext* ctx,
                      v1::UpsertResponse* resp)
      : service_(service), ctx_(ctx), resp_(resp) {
    call_ = service_->StartCall(ctx, "UpsertStream", "");
    const grpc::Status admitted = service_->Admit(*ctx, Access::kWrite);
    if (!admitted.ok()) {
      {
        absl::MutexLock lock(&mu_);
        finished_ = true;
      }
      End(admitted);
      return;
    }
    v1::UpsertRequest* next;
    {
      absl::MutexLock lock(&mu_);
      next = NextReadLocked();
    }
    StartRead(next);
  }

  void OnReadDone(bool ok) override {
    v1::UpsertRequest* next = nullptr;
    bool apply = false, end = false;
    grpc::Status done;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (finished_) return;
      if (!ok) {  // the client half-closed, or cancelled the call
        half_closed_ = true;
        cancelled_ = ctx_->IsCancelled();
        end = EndIfDoneLocked(&done);
      } else {
        if (call_.collection.empty()) call_.collection = incoming_->collection();
        received_.push_back(std::move(incoming_));
        if (received_.size() < kReadAhead) next = NextReadLocked();
        apply = StartApplyLocked();
      }
    }
    if (next != nullptr) StartRead(next);
    if (apply) service_->pool()->Submit([this] { Apply(); });
    if (end) End(done);
  }

  void OnDone() override { delete this; }

 private:
  // Messages received and not yet applied, at most.
  static constexpr size_t kReadAhead = 2;

  // Applies the oldest received message (on the pool).
  void Apply() {
    v1::UpsertRequest* req;
    {
      absl::MutexLock lock(&mu_);
      req = received_.front().get();
    }
    absl::StatusOr<uint64_t> n;
    try {
      n = service_->ApplyUpsert(*req);
    } catch (const std::exception& e) {
      n = absl::InternalError(e.what());
    }
    v1::UpsertRequest* next = nullptr;
    bool apply = false, end = false;
    grpc::Status error, done;
    {
      absl::MutexLock lock(&mu_);
      received_.pop_front();
      applying_ = false;
      if (!n.ok()) {
        finished_ = true;
        error = ToGrpc(
            Annotate(n.status(), absl::StrCat("message ", messages_, " of the stream (", total_,
                                              " documents from earlier messages are "
                                              "stored)")));
      } else {
        total_ += *n;
        ++messages_;
        if (!reading_ && !half_closed_) next = NextReadLocked();
        apply = StartApplyLocked();
        end = EndIfDoneLocked(&done);
      }
    }
    if (!error.ok()) {
      End(error);
      return;
    }
    if (next != nullptr) StartRead(next);
    if (apply) service_->pool()->Submit([this] { Apply(); });
    if (end) End(done);
  }

  // A buffer for the next read, which the caller starts once it has let go
  // of the lock.
  v1::UpsertRequest* NextReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    incoming_ = std::make_unique<v1::UpsertRequest>();
    reading_ = true;
    return incoming_.get();
  }
  // Whether the caller should submit Apply for the next received message.
  bool StartApplyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (applying_ || received_.empty()) return false;
    applying_ = true;
    return true;
  }
  // Whether every message is applied and the client is done: then the
  // caller ends the call with *status (OK, or CANCELLED when the client
  // cancelled it; what it sent before is applied either way).
  bool EndIfDoneLocked(grpc::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!half_closed_ || applying_ || !received_.empty() || finished_) return false;
    finished_ = true;
    resp_->set_upserted(total_);
    *status = cancelled_
                  ? grpc::Status(grpc::StatusCode::CANCELLED,
                                 absl::StrCat("cancelled by the client (", total_, " documents of ",
                                              messages_, " messages were stored)"))
                  : grpc::Status::OK;
    return true;
  }
  // Called without the lock, once: nothing touches the reactor after
  // Finish.
  void End(const grpc::Status& status) {
    service_->EndCall(call_, status);
    Finish(status);
  }

  SearchServiceImpl* const service_;
  grpc::CallbackServerContext* const ctx_;
  CallRecord call_;
  v1::UpsertResponse* const resp_;
  absl::Mutex mu_;
  std::unique_ptr<v1::UpsertRequest> incoming_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<v1::UpsertRequest>> received_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool applying_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t messages_ ABSL_GUARDED_BY(mu_) = 0;
};

// A request id from the client's metadata: printable ASCII, at most 128
// bytes; anything else is replaced by a generated one.
bool UsableRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id) {
    if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

}  // namespace

CallRecord SearchServiceImpl::StartCall(grpc::CallbackServerContext* ctx, const char* rpc,
                                        const std::string& collection) {
  CallRecord call;
  call.rpc = rpc;
  call.collection = collection.size() <= 256 ? collection : collection.substr(0, 256);
  call.start = std::chrono::steady_clock::now();
  const auto& md = ctx->client_metadata();
  auto it = md.find("x-request-id");
  if (it != md.end() && UsableRequestId({it->second.data(), it->second.size()})) {
    call.request_id.assign(it->second.data(), it->second.size());
  } else {
    static const uint64_t boot = uint64_t(std::chrono::system_clock::now().time_since_epoch() /
                                          std::chrono::microseconds(1));
    call.request_id = absl::StrCat(absl::Hex(boot), "-", next_request_id_.fetch_add(1));
  }
  ctx->AddInitialMetadata("x-request-id", call.request_id);
  return call;
}

grpc::Status SearchServiceImpl::Admit(const grpc::CallbackServerContext& ctx, Access need) const {
  if (options_.keys != nullptr) {
    grpc::Status s = options_.keys->Check(ctx, need);
    if (!s.ok()) return s;
  }
  if (catalog_.load() == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is still opening its collections; retry shortly");
  }
  return grpc::Status::OK;
}

void SearchServiceImpl::EndCall(const CallRecord& call, const grpc::Status& status) const {
  if (options_.observer != nullptr) options_.observer->CallDone(call, status);
}

template <typename F>
grpc::ServerUnaryReactor* SearchServiceImpl::Run(grpc::CallbackServerContext* ctx, const char* rpc,
                                                 Access need, const std::string& collection, F fn,
                                                 Dispatch dispatch) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  CallRecord call = StartCall(ctx, rpc, collection);
  grpc::Status admitted = Admit(*ctx, need);
  if (!admitted.ok()) {
    EndCall(call, admitted);
    reactor->Finish(admitted);
    return reactor;
  }
  std::function<void()> job = [this, reactor, ctx, call = std::move(call),
                               fn = std::move(fn)]() mutable {
    call.dequeued = std::chrono::steady_clock::now();
    grpc::Status status;
    if (ctx->IsCancelled()) {
      status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    } else {
      absl::Status s;
      try {
        s = fn(call);
      } catch (const std::bad_alloc&) {
        s = absl::ResourceExhaustedError("out of memory");
      } catch (const std::exception& e) {
        s = absl::InternalError(e.what());
      }
      status = ToGrpc(s);
    }
    EndCall(call, status);
    reactor->Finish(status);
  };
  if (dispatch == Dispatch::kHereWhenIdle) {
    pool_->RunHereOrSubmit(std::move(job));
  } else {
    pool_->Submit(std::move(job));
  }
  return reactor;
}

grpc::ServerUnaryReactor* SearchServiceImpl::CreateCollection(
    grpc::CallbackServerContext* ctx, const v1::CreateCollectionRequest* req,
    v1::CreateCollectionResponse* resp) {
  return Run(ctx, "CreateCollection", Access::kWrite, req->name(),
             [this, req, resp](const CallRecord&) -> absl::Status {
               ATTN_ASSIGN_OR_RETURN(CollectionConfig config, FromProto(req->config()));
               ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                                     catalog()->Create(req->name(), config));
               ToProto(req->name(), *c, resp->mutable_collection());
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* SearchServiceImpl::GetCollection(grpc::CallbackServerContext* ctx,
                                                           const v1::GetCollectionRequest* req,
                                                           v1::GetCollectionResponse* resp) {
  return Run(ctx, "GetCollection", Access::kRead, req->name(),
             [this, req, resp](const CallRecord&) -> absl::Status {
               ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                                     FindCollection(req->name(), "name"));
               ToProto(req->name(), *c, resp->mutable_collection());
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* SearchServiceImpl::ListCollections(grpc::CallbackServerContext* ctx,
                                                             const v1::ListCollectionsRequest* req,
                                                             v1::ListCollectionsResponse* resp) {
  return Run(ctx, "ListCollections", Access::kRead, "",
             [this, resp](const CallRecord&) -> absl::Status {
               for (const auto& [name, c] : catalog()->List())
                 ToProto(name, *c, resp->add_collections());
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* SearchServiceImpl::DropCollection(grpc::CallbackServerContext* ctx,
                                                            const v1::DropCollectionRequest* req,
                                                            v1::DropCollectionResponse* resp) {
  return Run(ctx, "DropCollection", Access::kWrite, req->name(),
             [this, req](const CallRecord&) -> absl::Status {
               ATTN_RETURN_IF_ERROR(FindCollection(req->name(), "name").status());
               return catalog()->Drop(req->name());
             });
}

absl::StatusOr<std::shared_ptr<Collection>> SearchServiceImpl::FindCollection(
    const std::string& name, absl::string_view field) const {
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must name a collection"));
  }
  return catalog()->Get(name);
}

absl::StatusOr<uint64_t> SearchServiceImpl::ApplyUpsert(const v1::UpsertRequest& req) {
  ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                        FindCollection(req.collection(), "collection"));
  std::vector<Document> docs(size_t(req.documents_size()));
  for (int i = 0; i < req.documents_size(); ++i) {
    ATTN_RETURN_IF_ERROR(FromProto(req.documents(i), absl::StrCat("documents[", i, "]"),
                                   c->config().dim, &docs[size_t(i)]));
  }
  return c->Upsert(std::move(docs));
}

grpc::ServerUnaryReactor* SearchServiceImpl::Upsert(grpc::CallbackServerContext* ctx,
                                                    const v1::UpsertRequest* req,
                                                    v1::UpsertResponse* resp) {
  return Run(ctx, "Upsert", Access::kWrite, req->collection(),
             [this, req, resp](const CallRecord&) -> absl::Status {
               ATTN_ASSIGN_OR_RETURN(uint64_t n, ApplyUpsert(*req));
               resp->set_upserted(n);
               return absl::OkStatus();
             });
}

grpc::ServerReadReactor<v1::UpsertRequest>* SearchServiceImpl::UpsertStream(
    grpc::CallbackServerContext* ctx, v1::UpsertResponse* resp) {
  return new UpsertStreamReactor(this, ctx, resp);
}

grpc::ServerUnaryReactor* SearchServiceImpl::Delete(grpc::CallbackServerContext* ctx,
                                                    const v1::DeleteRequest* req,
                                                    v1::DeleteResponse* resp) {
  return Run(
      ctx, "Delete", Access::kWrite, req->collection(),
      [this, req, resp](const CallRecord&) -> absl::Status {
        ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                              FindCollection(req->collection(), "collection"));
        ATTN_ASSIGN_OR_RETURN(DeleteResult r, c->Delete({req->ids().begin(), req->ids().end()}));
        resp->set_deleted(r.deleted);
        for (auto& id : r.not_found_ids) resp->add_not_found_ids(std::move(id));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SearchServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                                 const v1::GetRequest* req, v1::GetResponse* resp) {
  return Run(
      ctx, "Get", Access::kRead, req->collection(),
      [this, req, resp](const CallRecord&) -> absl::Status {
        ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                              FindCollection(req->collection(), "collection"));
        ATTN_ASSIGN_OR_RETURN(
            GetResult r, c->Get({req->ids().begin(), req->ids().end()}, req->include_vectors()));
        for (auto& d : r.documents)
          ToProto(std::move(d), req->include_vectors(), resp->add_documents());
        for (auto& id : r.not_found_ids) resp->add_not_found_ids(std::move(id));
        return absl::OkStatus();
      },
      Dispatch::kHereWhenIdle);
}

grpc::ServerUnaryReactor* SearchServiceImpl::TrainEncoder(grpc::CallbackServerContext* ctx,
                                                          const v1::TrainEncoderRequest* req,
                                                          v1::TrainEncoderResponse* resp) {
  return Run(ctx, "TrainEncoder", Access::kWrite, req->collection(),
             [this, req, resp](const CallRecord&) -> absl::Status {
               ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                                     FindCollection(req->collection(), "collection"));
               const v1::EncoderParams& p = req->params();
               text::EncoderOverrides overrides;
               overrides.semantic_share = p.semantic_share();
               overrides.stem_language = p.stem_language();
               overrides.window = p.window();
               overrides.min_count = p.min_count();
               overrides.temperature = p.temperature();
               overrides.expansion_weight = p.expansion_weight();
               overrides.wordnet_weight = p.wordnet_weight();
               ATTN_ASSIGN_OR_RETURN(EncoderTrainingResult r, c->TrainEncoder(overrides.Apply()));
               resp->set_version(r.version);
               resp->set_vocabulary(r.training.vocabulary);
               resp->set_documents(r.training.documents);
               resp->set_tokens(r.training.tokens);
               resp->set_train_seconds(r.training.seconds);
               resp->set_reencoded(r.reencoded);
               resp->set_reencode_seconds(r.reencode_seconds);
               resp->set_wordnet_relations(r.training.wordnet_relations);
               resp->set_wordnet(r.training.wordnet);
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* SearchServiceImpl::TrainCodec(grpc::CallbackServerContext* ctx,
                                                        const v1::TrainCodecRequest* req,
                                                        v1::TrainCodecResponse* resp) {
  return Run(ctx, "TrainCodec", Access::kWrite, req->collection(),
             [this, req, resp](const CallRecord&) -> absl::Status {
               ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                                     FindCollection(req->collection(), "collection"));
               ATTN_ASSIGN_OR_RETURN(CodecTrainingResult r, c->TrainCodec());
               resp->set_version(r.version);
               resp->set_centroids(r.centroids);
               resp->set_bits(r.bits);
               resp->set_bytes_per_token(uint32_t(r.code_bytes));
               resp->set_sample_tokens(r.sample_tokens);
               resp->set_train_mse(r.train_mse);
               resp->set_encoded(r.encoded);
               resp->set_train_seconds(r.train_seconds);
               resp->set_encode_seconds(r.encode_seconds);
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* SearchServiceImpl::TuneIndex(grpc::CallbackServerContext* ctx,
                                                       const v1::TuneIndexRequest* req,
                                                       v1::TuneIndexResponse* resp) {
  return Run(ctx, "TuneIndex", Access::kWrite, req->collection(),
             [this, req, resp](const CallRecord&) -> absl::Status {
               ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                                     FindCollection(req->collection(), "collection"));
               ATTN_ASSIGN_OR_RETURN(
                   IndexTuningResult r,
                   c->TuneIndex(req->target_recall(), req->k() == 0 ? 10 : req->k(),
                                req->sample() == 0 ? 1000 : req->sample()));
               resp->set_ann_params(r.ann_params);
               resp->set_knob(r.knob);
               resp->set_value(r.value);
               resp->set_sample_recall(r.sample_recall);
               resp->set_sample_queries(r.sample_queries);
               resp->set_seconds(r.seconds);
               resp->set_probe(uint32_t(r.probe));
               resp->set_first_stage_recall(r.first_stage_recall);
               resp->set_first_stage_queries(r.first_stage_queries);
               return absl::OkStatus();
             });
}

grpc::ServerUnaryReactor* SearchServiceImpl::Backup(grpc::CallbackServerContext* ctx,
                                                    const v1::BackupRequest* req,
                                                    v1::BackupResponse* resp) {
  return Run(
      ctx, "Backup", Access::kWrite, req->collection(),
      [this, req, resp](const CallRecord&) -> absl::Status {
        const std::string& dest = req->destination();
        if (dest.empty()) {
          return absl::InvalidArgumentError(
              "destination: must name a directory on the server's machine (an absolute path)");
        }
        if (dest[0] != '/') {
          return absl::InvalidArgumentError(absl::StrCat(
              "destination: must be an absolute path, got '", dest.substr(0, 256), "'"));
        }
        ATTN_ASSIGN_OR_RETURN(BackupResult r, catalog()->Backup(dest, req->collection()));
        for (const BackupEntry& e : r.manifest.collections) {
          v1::BackedUpCollection* c = resp->add_collections();
          c->set_name(e.name);
          c->set_documents(e.documents);
        }
        resp->set_bytes(r.bytes);
        resp->set_elapsed_ms(uint64_t(absl::ToInt64Milliseconds(r.elapsed)));
        resp->set_destination(r.path);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SearchServiceImpl::Search(grpc::CallbackServerContext* ctx,
                                                    const v1::SearchRequest* req,
                                                    v1::SearchResponse* resp) {
  return Run(
      ctx, "Search", Access::kRead, req->collection(),
      [this, ctx, req, resp](const CallRecord& call) -> absl::Status {
        ATTN_ASSIGN_OR_RETURN(std::shared_ptr<Collection> c,
                              FindCollection(req->collection(), "collection"));
        SearchQuery q;
        ATTN_RETURN_IF_ERROR(FromProto(*req, c->config().dim, &q));
        ATTN_ASSIGN_OR_RETURN(SearchResult r, c->Search(std::move(q), DeadlineOf(ctx)));
        r.timing.queue_us =
            std::chrono::duration_cast<std::chrono::microseconds>(call.dequeued - call.start)
                .count();
        if (options_.observer != nullptr) options_.observer->SearchDone(call, r.timing);
        ToProto(std::move(r), resp);
        return absl::OkStatus();
      },
      Dispatch::kHereWhenIdle);
}

}  // namespace attnsearch
