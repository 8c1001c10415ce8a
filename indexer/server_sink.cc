// The online sink: a running attnsearch-server, through UpsertStream.
#include <algorithm>
#include <chrono>
#include <deque>
#include <future>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "attnsearch/v1/search.grpc.pb.h"
#include "client/client_channel.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "grpcpp/grpcpp.h"
#include "indexer/sink.h"

namespace attnsearch::indexer {
namespace {

namespace v1 = attnsearch::v1;

// The parts of a collection's config the creating flags set, from the
// server's answer (see CheckCreationFlags).
CollectionConfig ConfigOf(const v1::CollectionConfig& in) {
  CollectionConfig c;
  c.dim = in.dim();
  c.token_dtype = in.token_dtype() == v1::TOKEN_DTYPE_F32    ? TokenDtype::kF32
                  : in.token_dtype() == v1::TOKEN_DTYPE_INT8 ? TokenDtype::kInt8
                                                             : TokenDtype::kBF16;
  c.ann_spec = in.ann_spec();
  c.numeric_fields.assign(in.numeric_fields().begin(), in.numeric_fields().end());
  const v1::TokenCodec& tc = in.token_codec();
  if (tc.name() == "residual") {
    c.token_codec.kind = TokenCodecKind::kResidual;
    c.token_codec.bits = tc.bits();
    c.token_codec.centroids = tc.centroids();
    c.token_codec.train_after = tc.train_after_documents();
    c.token_codec.keep_full_precision = tc.keep_full_precision();
  }
  if (absl::StatusOr<CandidateSource> from =
          ParseCandidateSource(in.candidates_from(), "candidates_from");
      from.ok()) {
    c.candidates_from = *from;
  }
  return c;
}

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(absl::StatusCode(int(s.error_code())),
                      absl::StrCat(what, ": ", s.error_message()));
}

// `bf16`: the token rows go packed as bfloat16 (Matrix.data), half the
// bytes of floats, for a collection that stores bfloat16 anyway.
void ToProto(Document&& in, bool bf16, v1::Document* out) {
  out->set_id(std::move(in.id));
  if (!in.text.empty()) out->set_text(std::move(in.text));
  for (auto& [k, v] : in.metadata) (*out->mutable_metadata())[k] = std::move(v);
  out->mutable_pooled()->Add(in.pooled.begin(), in.pooled.end());
  if (in.num_tokens > 0) {
    v1::Matrix* m = out->mutable_tokens();
    m->set_rows(in.num_tokens);
    m->set_cols(uint32_t(in.tokens.size() / in.num_tokens));
    if (bf16) {
      std::string* data = m->mutable_data();
      data->resize(in.tokens.size() * 2);
      FloatToBf16(in.tokens.data(), reinterpret_cast<uint16_t*>(data->data()), in.tokens.size());
      m->set_encoding(v1::VALUE_ENCODING_BF16);
    } else {
      m->mutable_values()->Add(in.tokens.begin(), in.tokens.end());
    }
  }
  for (auto& t : in.token_texts) out->add_token_texts(std::move(t));
}

// One batch on its way: the request and where its documents came from.
struct Pending {
  v1::UpsertRequest request;
  std::vector<uint64_t> positions;
  uint64_t end_position = 0;
  size_t bytes = 0;
};

class ServerSink : public Sink {
 public:
  ServerSink(const TargetOptions& options, std::shared_ptr<grpc::Channel> channel, RejectFn reject,
             DurableFn durable)
      : options_(options),
        channel_(std::move(channel)),
        stub_(v1::SearchService::NewStub(channel_)),
        reject_(std::move(reject)),
        durable_(std::move(durable)) {}

  ~ServerSink() override {
    for (Closing& c : closing_) {
      c.ctx->TryCancel();
      c.status.wait();
    }
    if (writer_) {
      ctx_->TryCancel();
      writer_->Finish();
    }
  }

  // Finds or creates the collection, retrying while the server is
  // unavailable.
  absl::Status Prepare() {
    v1::GetCollectionRequest get;
    get.set_name(options_.collection);
    v1::GetCollectionResponse info;
    grpc::Status s = CallWithRetry(
        [&](grpc::ClientContext* ctx) { return stub_->GetCollection(ctx, get, &info); });
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      ATTN_RETURN_IF_ERROR(
          CheckFlagsForNewCollection(options_.create_config, options_.creation_flags));
      CollectionConfig c = options_.create_config;
      if (c.dim == 0) c.dim = options_.default_dim;
      if (c.dim == 0) {
        return NoDimForNewCollection(options_);
      }
      v1::CreateCollectionRequest create;
      create.set_name(options_.collection);
      create.mutable_config()->set_dim(c.dim);
      create.mutable_config()->set_token_dtype(
          c.token_dtype == TokenDtype::kF32    ? v1::TOKEN_DTYPE_F32
          : c.token_dtype == TokenDtype::kInt8 ? v1::TOKEN_DTYPE_INT8
                                               : v1::TOKEN_DTYPE_BF16);
      create.mutable_config()->set_ann_spec(c.ann_spec);
      for (const auto& f : c.numeric_fields) create.mutable_config()->add_numeric_fields(f);
      create.mutable_config()->set_candidates_from(
          std::string(CandidateSourceName(c.candidates_from)));
      if (c.token_codec.kind == TokenCodecKind::kResidual) {
        v1::TokenCodec* tc = create.mutable_config()->mutable_token_codec();
        tc->set_name("residual");
        tc->set_bits(c.token_codec.bits);
        tc->set_centroids(c.token_codec.centroids);
        tc->set_train_after_documents(c.token_codec.train_after);
        tc->set_keep_full_precision(c.token_codec.keep_full_precision);
      }
      v1::CreateCollectionResponse created;
      s = CallWithRetry(
          [&](grpc::ClientContext* ctx) { return stub_->CreateCollection(ctx, create, &created); });
      if (s.ok()) {
        created_ = true;
        dim_ = created.collection().config().dim();
        bf16_wire_ = created.collection().config().token_dtype() == v1::TOKEN_DTYPE_BF16;
        return absl::OkStatus();
      }
      if (s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
        return FromGrpc(s, "CreateCollection");
      }
      // Created meanwhile by someone else: use it.
      s = CallWithRetry(
          [&](grpc::ClientContext* ctx) { return stub_->GetCollection(ctx, get, &info); });
    }
    ATTN_RETURN_IF_ERROR(FromGrpc(s, "GetCollection"));
    dim_ = info.collection().config().dim();
    bf16_wire_ = info.collection().config().token_dtype() == v1::TOKEN_DTYPE_BF16;
    if (options_.create_config.dim != 0 && dim_ != options_.create_config.dim) {
      return absl::InvalidArgumentError(absl::StrCat("collection '", options_.collection,
                                                     "' has dim ", dim_, ", not ",
                                                     options_.create_config.dim));
    }
    return CheckCreationFlags(options_.collection, ConfigOf(info.collection().config()),
                              options_.create_config, options_.creation_flags);
  }

  uint32_t dim() const override { return dim_; }
  bool created() const override { return created_; }
  bool stopped() const override { return stopped_; }
  uint64_t documents_written() const override { return written_; }

  absl::Status Add(Batch batch) override {
    Pending p;
    p.request.set_collection(options_.collection);
    for (Document& d : batch.docs) ToProto(std::move(d), bf16_wire_, p.request.add_documents());
    p.positions = std::move(batch.positions);
    p.end_position = batch.end_position;
    p.bytes = p.request.ByteSizeLong();
    written_ += p.positions.size();
    inflight_bytes_ += p.bytes;
    pending_.push_back(std::move(p));
    if (!pending_.back().request.documents().empty()) {
      if (!writer_) OpenStream();
      if (!writer_->Write(pending_.back().request)) return Commit();  // learns the error
      ++written_to_stream_;
      stream_bytes_ += pending_.back().bytes;
    }
    if (options_.max_streams > 1 && writer_ &&
        stream_bytes_ >= options_.max_inflight_bytes / options_.max_streams) {
      return CloseStream();
    }
    if (inflight_bytes_ >= options_.max_inflight_bytes) return Commit();
    return absl::OkStatus();
  }

  absl::Status Sync() override { return Commit(); }

  absl::StatusOr<EncoderState> GetEncoderState() override {
    v1::GetCollectionRequest get;
    get.set_name(options_.collection);
    v1::GetCollectionResponse info;
    grpc::Status s = CallWithRetry(
        [&](grpc::ClientContext* ctx) { return stub_->GetCollection(ctx, get, &info); });
    ATTN_RETURN_IF_ERROR(FromGrpc(s, "GetCollection"));
    return EncoderState{info.collection().encoder_version(),
                        info.collection().encoder_vocabulary()};
  }

  absl::StatusOr<EncoderTraining> TrainEncoder(const text::EncoderOverrides& overrides) override {
    v1::TrainEncoderRequest req;
    req.set_collection(options_.collection);
    v1::EncoderParams* p = req.mutable_params();
    p->set_semantic_share(overrides.semantic_share);
    p->set_stem_language(overrides.stem_language);
    p->set_window(overrides.window);
    p->set_min_count(overrides.min_count);
    p->set_temperature(overrides.temperature);
    p->set_expansion_weight(overrides.expansion_weight);
    p->set_wordnet_weight(overrides.wordnet_weight);
    ATTN_ASSIGN_OR_RETURN(const EncoderState before, GetEncoderState());
    int backoff = options_.initial_backoff_ms;
    for (int attempt = 0;; ++attempt) {
      // No deadline: training takes as long as the collection needs.
      grpc::ClientContext ctx;
      v1::TrainEncoderResponse resp;
      const grpc::Status s = stub_->TrainEncoder(&ctx, req, &resp);
      if (s.ok()) {
        EncoderTraining t;
        t.version = resp.version();
        t.vocabulary = resp.vocabulary();
        t.documents = resp.documents();
        t.train_seconds = resp.train_seconds();
        t.encoded = resp.reencoded();
        t.encode_seconds = resp.reencode_seconds();
        t.wordnet = resp.wordnet();
        return t;
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || attempt >= options_.max_retries) {
        return FromGrpc(s, "TrainEncoder");
      }
      Backoff(&backoff, s.error_message());
      // The server may have trained (and, after a restart, finished
      // encoding) before the reply was lost: do not train twice.
      ATTN_ASSIGN_OR_RETURN(const EncoderState now, GetEncoderState());
      if (now.version > before.version) {
        EncoderTraining t;
        t.version = now.version;
        t.vocabulary = now.vocabulary;
        t.reply_lost = true;
        return t;
      }
    }
  }

  absl::StatusOr<IndexTuning> TuneIndex(double target_recall) override {
    v1::TuneIndexRequest req;
    req.set_collection(options_.collection);
    req.set_target_recall(target_recall);
    int backoff = options_.initial_backoff_ms;
    for (int attempt = 0;; ++attempt) {
      // No deadline: tuning takes about one index build. Tuning twice is
      // harmless, so UNAVAILABLE is simply retried.
      grpc::ClientContext ctx;
      v1::TuneIndexResponse resp;
      const grpc::Status s = stub_->TuneIndex(&ctx, req, &resp);
      if (s.ok()) {
        return IndexTuning{resp.ann_params(), resp.sample_recall(), resp.sample_queries(),
                           resp.seconds()};
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || attempt >= options_.max_retries) {
        return FromGrpc(s, "TuneIndex");
      }
      Backoff(&backoff, s.error_message());
    }
  }

  absl::StatusOr<std::string> Finish() override {
    v1::GetCollectionRequest get;
    get.set_name(options_.collection);
    v1::GetCollectionResponse info;
    grpc::Status s = CallWithRetry(
        [&](grpc::ClientContext* ctx) { return stub_->GetCollection(ctx, get, &info); });
    ATTN_RETURN_IF_ERROR(FromGrpc(s, "GetCollection"));
    return absl::StrCat("collection '", options_.collection, "' on ", options_.server, " holds ",
                        info.collection().num_documents(), " documents");
  }

 private:
  template <typename Call>
  grpc::Status CallWithRetry(Call call) {
    int backoff = options_.initial_backoff_ms;
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      grpc::Status s = call(&ctx);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || attempt >= options_.max_retries) {
        return s;
      }
      Backoff(&backoff, s.error_message());
    }
  }

  void Backoff(int* backoff_ms, const std::string& why) {
    std::fprintf(stderr, "attnsearch-index: server unavailable (%s); retrying in %d ms\n",
                 why.c_str(), *backoff_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(*backoff_ms));
    *backoff_ms = std::min(*backoff_ms * 2, 10000);
  }

  void OpenStream() {
    ctx_ = std::make_unique<grpc::ClientContext>();
    response_ = std::make_unique<v1::UpsertResponse>();
    writer_ = stub_->UpsertStream(ctx_.get(), response_.get());
    written_to_stream_ = 0;
    stream_bytes_ = 0;
  }

  // Closes the open stream without waiting for its reply (a thread waits),
  // so the next batches go out on a new stream while the server applies
  // this one's. Once max_streams are in flight, waits for the oldest.
  absl::Status CloseStream() {
    Closing c;
    c.messages = written_to_stream_;
    writer_->WritesDone();
    c.ctx = std::move(ctx_);
    c.response = std::move(response_);
    c.writer = std::move(writer_);
    grpc::ClientWriter<v1::UpsertRequest>* w = c.writer.get();
    c.status = std::async(std::launch::async, [w] { return w->Finish(); });
    closing_.push_back(std::move(c));
    written_to_stream_ = 0;
    stream_bytes_ = 0;
    while (closing_.size() >= options_.max_streams) {
      ATTN_ASSIGN_OR_RETURN(const bool acked, ResolveOldest());
      if (!acked) return Commit();
    }
    return absl::OkStatus();
  }

  // Waits for the oldest closed stream. Acknowledges its batches and returns
  // true when it succeeded. Otherwise waits for every stream in flight,
  // cancels the open one and returns false: everything unacknowledged is
  // then sent again from the first pending batch (Commit), which is safe
  // because upserts are idempotent by id, and maps an error to its batch.
  absl::StatusOr<bool> ResolveOldest() {
    const grpc::Status status = closing_.front().status.get();
    const size_t messages = closing_.front().messages;
    closing_.pop_front();
    if (status.ok()) {
      ATTN_RETURN_IF_ERROR(Acknowledge(messages));
      return true;
    }
    for (Closing& c : closing_) c.status.wait();
    closing_.clear();
    if (writer_) {
      ctx_->TryCancel();
      writer_->Finish();
      writer_.reset();
    }
    written_to_stream_ = 0;
    stream_bytes_ = 0;
    return false;
  }

  // The first `messages` pending batches with documents (and the empty ones
  // before and among them) are acknowledged: drops them and reports the
  // position reached.
  absl::Status Acknowledge(size_t messages) {
    uint64_t acked_position = 0;
    bool advanced = false;
    while (!pending_.empty()) {
      Pending& p = pending_.front();
      if (!p.request.documents().empty()) {
        if (messages == 0) break;
        --messages;
      }
      acked_position = p.end_position;
      acked_docs_ += p.positions.size();
      inflight_bytes_ -= p.bytes;
      pending_.pop_front();
      advanced = true;
    }
    if (!advanced) return absl::OkStatus();
    return durable_(acked_position, acked_docs_);
  }

  // Closes the stream and waits for its acknowledgement; resolves every
  // pending batch (acknowledged, retried or failed).
  absl::Status Commit() {
    // The streams in flight first, oldest first.
    while (!closing_.empty()) {
      ATTN_ASSIGN_OR_RETURN(const bool acked, ResolveOldest());
      if (!acked) break;
    }
    int retries = 0;
    int backoff = options_.initial_backoff_ms;
    // After a message over the server's limit, one message a stream, so
    // each is acknowledged on its own and none is sent twice.
    bool one_per_stream = false;
    while (true) {
      // Every pending batch with documents must be on the current stream.
      bool any = false;
      for (const Pending& p : pending_) any |= !p.request.documents().empty();
      grpc::Status status;
      size_t acked_messages = 0;
      if (any) {
        if (!writer_) OpenStream();
        size_t on_stream = 0;
        bool broken = false;
        for (const Pending& p : pending_) {
          if (p.request.documents().empty()) continue;
          if (on_stream++ < written_to_stream_) continue;
          if (!writer_->Write(p.request)) {
            broken = true;
            break;
          }
          ++written_to_stream_;
          if (one_per_stream) break;
        }
        if (!broken) writer_->WritesDone();
        status = writer_->Finish();
        writer_.reset();
        if (status.ok()) {
          acked_messages = on_stream;
        } else {
          static const std::regex kMessage(R"(message (\d+) of the stream)");
          std::smatch m;
          const std::string msg = status.error_message();
          if (std::regex_search(msg, m, kMessage)) acked_messages = std::stoull(m[1].str());
        }
      }
      // Drop the acknowledged prefix (and empty batches before it).
      const size_t before = pending_.size();
      ATTN_RETURN_IF_ERROR(Acknowledge(acked_messages));
      if (pending_.size() < before) {
        retries = 0;
        backoff = options_.initial_backoff_ms;
      }
      if (pending_.empty()) {
        if (!status.ok()) return FromGrpc(status, "UpsertStream");
        return absl::OkStatus();
      }
      if (status.ok()) continue;  // cannot happen: an OK stream acknowledges all
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        if (++retries > options_.max_retries) {
          return FromGrpc(status, absl::StrCat("UpsertStream (gave up after ", options_.max_retries,
                                               " retries)"));
        }
        Backoff(&backoff, status.error_message());
        continue;  // everything unacknowledged is sent again
      }
      std::string reason;
      std::optional<size_t> i = RejectedDocument(status.error_message(), &reason);
      size_t at = 0;  // the pending batch holding the rejected document
      if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        // A message over the server's size limit (--max_message_mb): one
        // document alone is rejected; a batch of several is too large.
        at = TooLarge(status.error_message());
        if (at == pending_.size()) return FromGrpc(status, "UpsertStream");
        if (!one_per_stream) {
          // The messages before it may have been stored or not: sent
          // again, one a stream.
          one_per_stream = true;
          written_to_stream_ = 0;
          continue;
        }
        if (pending_[at].request.documents_size() > 1) {
          // Sent again in halves, until the document over the limit is
          // alone in its message.
          SplitPending(at);
          written_to_stream_ = 0;
          continue;
        }
        i = 0;
        reason = absl::StrCat("its message is ", pending_[at].request.ByteSizeLong(),
                              " bytes, above the server's message limit (--max_message_mb)");
      } else if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
        return FromGrpc(status, "UpsertStream");
      }
      Pending& bad = pending_[at];
      if (!i || *i >= size_t(bad.request.documents_size())) {
        return FromGrpc(status, "UpsertStream");
      }
      // Rebuild the batch without the rejected document.
      Batch b;
      b.positions = bad.positions;
      b.end_position = bad.end_position;
      b.docs.resize(b.positions.size());
      b.docs[*i].id = bad.request.documents(int(*i)).id();  // named in the report
      const bool go_on =
          ApplyRejection(&b, *i, absl::StrCat("rejected by the server: ", reason), reject_);
      auto* docs = bad.request.mutable_documents();
      if (go_on) {
        docs->erase(docs->begin() + long(*i));
      } else {
        docs->erase(docs->begin() + long(*i), docs->end());
        while (pending_.size() > at + 1) {
          inflight_bytes_ -= pending_.back().bytes;
          pending_.pop_back();
        }
        stopped_ = true;
      }
      --written_;
      if (!go_on) {
        written_ = acked_docs_;
        for (const Pending& p : pending_) written_ += size_t(p.request.documents_size());
      }
      bad.positions = std::move(b.positions);
      bad.end_position = b.end_position;
      written_to_stream_ = 0;
    }
  }

  // The pending batch gRPC refused for its size ("larger than max (N vs.
  // M)": the one of N bytes); pending_.size() when the message is not of
  // that kind or no batch has that size.
  size_t TooLarge(const std::string& message) const {
    static const std::regex kTooLarge(R"(larger than max \((\d+) vs\. \d+\))");
    std::smatch m;
    if (!std::regex_search(message, m, kTooLarge)) return pending_.size();
    const uint64_t size = std::stoull(m[1].str());
    for (size_t k = 0; k < pending_.size(); ++k) {
      const v1::UpsertRequest& r = pending_[k].request;
      if (!r.documents().empty() && r.ByteSizeLong() == size) return k;
    }
    return pending_.size();
  }

  // Pending batch `at` (of several documents) as two, its first half and
  // the rest.
  void SplitPending(size_t at) {
    Pending& whole = pending_[at];
    const int n = whole.request.documents_size(), half = n / 2;
    Pending first;
    first.request.set_collection(whole.request.collection());
    auto* docs = whole.request.mutable_documents();
    for (int k = 0; k < half; ++k) first.request.add_documents()->Swap(docs->Mutable(k));
    docs->DeleteSubrange(0, half);
    first.positions.assign(whole.positions.begin(), whole.positions.begin() + half);
    whole.positions.erase(whole.positions.begin(), whole.positions.begin() + half);
    first.end_position = first.positions.back();
    first.bytes = first.request.ByteSizeLong();
    whole.bytes -= std::min(whole.bytes, first.bytes);
    pending_.insert(pending_.begin() + long(at), std::move(first));
  }

  const TargetOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SearchService::Stub> stub_;
  const RejectFn reject_;
  const DurableFn durable_;
  uint32_t dim_ = 0;
  // The collection stores bfloat16: token rows are sent packed as such.
  bool bf16_wire_ = false;
  bool created_ = false;
  bool stopped_ = false;

  // The open stream, if any, how many pending batches were written to it
  // (after those of the closing streams) and their bytes.
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<v1::UpsertResponse> response_;
  std::unique_ptr<grpc::ClientWriter<v1::UpsertRequest>> writer_;
  size_t written_to_stream_ = 0;
  size_t stream_bytes_ = 0;

  // Streams closed and awaiting their reply, oldest first: each covers the
  // next `messages` pending batches with documents.
  struct Closing {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<v1::UpsertResponse> response;
    std::unique_ptr<grpc::ClientWriter<v1::UpsertRequest>> writer;
    size_t messages = 0;
    std::future<grpc::Status> status;  // the reply, waited for by a thread
  };
  std::deque<Closing> closing_;

  std::deque<Pending> pending_;  // unacknowledged, in order
  size_t inflight_bytes_ = 0;
  uint64_t written_ = 0;
  uint64_t acked_docs_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Sink>> OpenServerSink(const TargetOptions& options, RejectFn reject,
                                                     DurableFn durable) {
  grpc::ChannelArguments args;
  // Messages of any size are sent: the server's limit (--max_message_mb)
  // decides, and a document over it is rejected by its line (TooLarge).
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(int(
      std::min<size_t>(std::max(options.max_message_bytes, size_t{4} << 20) * 2, size_t{1} << 30)));
  ATTN_ASSIGN_OR_RETURN(
      auto channel,
      NewClientChannel(options.server, {options.api_key_file, options.tls_ca_file}, args));
  auto sink = std::make_unique<ServerSink>(options, std::move(channel), std::move(reject),
                                           std::move(durable));
  ATTN_RETURN_IF_ERROR(sink->Prepare());
  return std::unique_ptr<Sink>(std::move(sink));
}

}  // namespace attnsearch::indexer
