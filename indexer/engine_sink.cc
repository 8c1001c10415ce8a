// The offline sink: the engine in-process.
#include <chrono>
#include <cstdio>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "engine/catalog.h"
#include "indexer/sink.h"
#include "text/encoder.h"

namespace attnsearch::indexer {

std::optional<size_t> RejectedDocument(const std::string& message, std::string* reason) {
  static const std::regex kDoc(R"(documents\[(\d+)\][.:]?\s*)");
  std::smatch m;
  if (!std::regex_search(message, m, kDoc)) return std::nullopt;
  *reason = m.suffix().str();
  return size_t(std::stoull(m[1].str()));
}

absl::Status CheckCreationFlags(const std::string& collection, const CollectionConfig& existing,
                                const CollectionConfig& wanted,
                                const std::vector<std::string>& flags) {
  const bool residual = existing.token_codec.kind == TokenCodecKind::kResidual;
  // A flag's value on either side, as the command line writes it.
  auto value = [&](const CollectionConfig& c, const std::string& flag) -> std::string {
    if (flag == "--dtype") return std::string(TokenDtypeName(c.token_dtype));
    if (flag == "--ann_spec") return c.ann_spec;
    if (flag == "--numeric_fields") return absl::StrJoin(c.numeric_fields, ",");
    if (flag == "--token_codec") return std::string(TokenCodecName(c.token_codec.kind));
    if (flag == "--candidates_from") return std::string(CandidateSourceName(c.candidates_from));
    // The residual codec's own flags say nothing of a collection of rows;
    // their --token_codec is compared instead.
    if (!residual) return "";
    if (flag == "--code_bits") return absl::StrCat(c.token_codec.bits);
    if (flag == "--exact_tier") return c.token_codec.keep_full_precision ? "true" : "false";
    if (flag == "--code_train_after") return absl::StrCat(c.token_codec.train_after);
    return "";
  };
  for (const std::string& flag : flags) {
    const std::string have = value(existing, flag), want = value(wanted, flag);
    if (have != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": collection '", collection, "' exists with ", flag.substr(2), " '",
                       have, "', not '", want,
                       "' (its config is fixed at creation; drop the flag or use "
                       "another collection)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckFlagsForNewCollection(const CollectionConfig& wanted,
                                        const std::vector<std::string>& flags) {
  if (wanted.token_codec.kind == TokenCodecKind::kResidual) return absl::OkStatus();
  for (const std::string& flag : flags) {
    if (flag == "--code_bits" || flag == "--exact_tier" || flag == "--code_train_after") {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": applies to --token_codec residual only, not to rows"));
    }
  }
  return absl::OkStatus();
}

absl::Status NoDimForNewCollection(const TargetOptions& options) {
  return absl::InvalidArgumentError(absl::StrCat(
      "collection '", options.collection, "' does not exist; --dim is needed to create it",
      options.empty_input ? " (the input's first lines hold no record that states a dim)" : ""));
}

bool ApplyRejection(Batch* batch, size_t i, const std::string& reason, const RejectFn& reject) {
  const uint64_t position = batch->positions[i];
  if (reject(position, batch->docs[i].id, reason)) {
    batch->docs.erase(batch->docs.begin() + long(i));
    batch->positions.erase(batch->positions.begin() + long(i));
    return true;
  }
  batch->docs.resize(i);
  batch->positions.resize(i);
  batch->end_position = position - 1;
  return false;
}

namespace {

class EngineSink : public Sink {
 public:
  EngineSink(std::unique_ptr<Catalog> catalog, std::shared_ptr<Collection> collection, bool created,
             RejectFn reject, DurableFn durable)
      : catalog_(std::move(catalog)),
        collection_(std::move(collection)),
        created_(created),
        reject_(std::move(reject)),
        durable_(std::move(durable)) {}

  uint32_t dim() const override { return collection_->config().dim; }
  bool created() const override { return created_; }
  bool stopped() const override { return stopped_; }
  uint64_t documents_written() const override { return written_; }

  absl::Status Add(Batch batch) override {
    while (!batch.docs.empty()) {
      // Upsert consumes its argument; keep the batch to retry it without a
      // rejected document.
      absl::StatusOr<uint64_t> n = collection_->Upsert(batch.docs);
      if (n.ok()) {
        written_ += *n;
        unflushed_ = true;
        ATTN_RETURN_IF_ERROR(MaybeTrainCodecEarly());
        break;
      }
      std::string reason;
      const std::optional<size_t> i = RejectedDocument(std::string(n.status().message()), &reason);
      if (!absl::IsInvalidArgument(n.status()) || !i || *i >= batch.docs.size()) {
        return n.status();
      }
      if (!ApplyRejection(&batch, *i, absl::StrCat("rejected by the engine: ", reason), reject_)) {
        stopped_ = true;
      }
    }
    position_ = batch.end_position;
    return absl::OkStatus();
  }

  // A collection that keeps only codes trains its codec once train_after
  // documents are in, as the server does, so that the rest of the load
  // stores codes alone and its rows never reach the disk. (One that keeps
  // its rows trains at the end, on the whole load.) Tried once: documents
  // without tokens yet (text awaiting the encoder) leave it to the end.
  absl::Status MaybeTrainCodecEarly() {
    const TokenCodecConfig& tc = collection_->config().token_codec;
    if (tried_early_ || tc.kind != TokenCodecKind::kResidual || tc.keep_full_precision ||
        tc.train_after == 0 || written_ < tc.train_after) {
      return absl::OkStatus();
    }
    tried_early_ = true;
    if (collection_->codec() != nullptr) return absl::OkStatus();
    std::fprintf(stderr,
                 "attnsearch-index: %llu documents in: training the token codec; the rest of "
                 "the load is stored as codes alone ...\n",
                 (unsigned long long)written_);
    absl::StatusOr<CodecTrainingResult> r = collection_->TrainCodec();
    if (absl::IsFailedPrecondition(r.status())) return absl::OkStatus();  // at the end, then
    ATTN_RETURN_IF_ERROR(r.status());
    early_ = *r;
    early_documents_ = written_;
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (unflushed_) ATTN_RETURN_IF_ERROR(Annotate(collection_->Flush(), "flushing"));
    unflushed_ = false;
    return durable_(position_, written_);
  }

  absl::StatusOr<EncoderState> GetEncoderState() override {
    const CollectionStats stats = collection_->Stats();
    return EncoderState{stats.encoder_version, stats.encoder_vocabulary};
  }

  absl::StatusOr<EncoderTraining> TrainEncoder(const text::EncoderOverrides& overrides) override {
    ATTN_ASSIGN_OR_RETURN(EncoderTrainingResult r, collection_->TrainEncoder(overrides.Apply()));
    EncoderTraining t;
    t.version = r.version;
    t.vocabulary = r.training.vocabulary;
    t.documents = r.training.documents;
    t.train_seconds = r.training.seconds;
    t.encoded = r.reencoded;
    t.encode_seconds = r.reencode_seconds;
    t.wordnet = r.training.wordnet;
    return t;
  }

  absl::StatusOr<IndexTuning> TuneIndex(double target_recall) override {
    ATTN_ASSIGN_OR_RETURN(IndexTuningResult r, collection_->TuneIndex(target_recall));
    return IndexTuning{r.ann_params, r.sample_recall, r.sample_queries, r.seconds};
  }

  absl::StatusOr<std::string> Finish() override {
    const auto start = std::chrono::steady_clock::now();
    // What runs now, on a large load, takes minutes: say so.
    std::fprintf(stderr, "attnsearch-index: building the ANN index (%s) ...\n",
                 collection_->config().ann_spec.c_str());
    ATTN_ASSIGN_OR_RETURN(uint64_t added, collection_->BuildIndex());
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string codes;
    if (collection_->config().token_codec.kind == TokenCodecKind::kResidual) {
      // Offline, the codec trains on the whole load and every document's
      // codes are written now, so the server opens with them. A collection
      // that keeps only codes trains once: a later load (or one resumed
      // after a crash) encodes what it added with the codec it has.
      const TokenCodecConfig& tc = collection_->config().token_codec;
      const bool train = collection_->codec() == nullptr || tc.keep_full_precision;
      const bool trained_early = early_documents_ > 0;
      std::fprintf(stderr, "attnsearch-index: ANN index built in %.1f s; %s ...\n",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                   train ? "training the token codec and encoding every document"
                         : "encoding the documents with the collection's token codec");
      ATTN_ASSIGN_OR_RETURN(CodecTrainingResult r,
                            train ? collection_->TrainCodec() : collection_->FinishCodec());
      ATTN_RETURN_IF_ERROR(collection_->Flush());
      codes = absl::StrFormat(
          "; token codec v%llu (%u centroids, %u bits, %zu bytes a token) %s, %llu documents "
          "encoded in %.1f s",
          (unsigned long long)r.version, r.centroids, r.bits, r.code_bytes,
          train ? absl::StrFormat("trained on %llu tokens in %.1f s",
                                  (unsigned long long)r.sample_tokens, r.train_seconds)
          : trained_early
              ? absl::StrFormat("trained after %llu documents on %llu tokens in "
                                "%.1f s, with their %llu encoded in %.1f s",
                                (unsigned long long)early_documents_,
                                (unsigned long long)early_.sample_tokens, early_.train_seconds,
                                (unsigned long long)early_.encoded, early_.encode_seconds)
              : std::string("as trained before"),
          (unsigned long long)r.encoded, r.encode_seconds);
      if (r.compact_seconds > 0) {
        codes += absl::StrFormat(" (their rows dropped, compacted in %.1f s)", r.compact_seconds);
      }
    }
    const CollectionStats stats = collection_->Stats();
    return absl::StrFormat(
        "ANN index (%s): %llu vectors added in %.2f s%s; collection holds %llu documents",
        collection_->config().ann_spec, (unsigned long long)added, s, codes,
        (unsigned long long)stats.num_documents);
  }

 private:
  std::unique_ptr<Catalog> catalog_;
  std::shared_ptr<Collection> collection_;
  const bool created_;
  const RejectFn reject_;
  const DurableFn durable_;
  bool stopped_ = false;
  bool unflushed_ = false;
  uint64_t written_ = 0;
  uint64_t position_ = 0;
  // The codec's training during the load (MaybeTrainCodecEarly).
  bool tried_early_ = false;
  CodecTrainingResult early_;
  uint64_t early_documents_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Sink>> OpenEngineSink(const TargetOptions& options, RejectFn reject,
                                                     DurableFn durable) {
  CatalogOptions co;
  co.data_dir = options.data_dir;
  co.collection = CollectionOptions::ForBulkLoad();
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Catalog> catalog, Catalog::Open(co));
  absl::StatusOr<std::shared_ptr<Collection>> c = catalog->Get(options.collection);
  bool created = false;
  if (absl::IsNotFound(c.status())) {
    ATTN_RETURN_IF_ERROR(CheckFlagsForNewCollection(options.create_config, options.creation_flags));
    CollectionConfig config = options.create_config;
    if (config.dim == 0) config.dim = options.default_dim;
    if (config.dim == 0) {
      return NoDimForNewCollection(options);
    }
    c = catalog->Create(options.collection, config);
    created = true;
  }
  if (!c.ok()) return c.status();
  if (!created && options.create_config.dim != 0 &&
      (*c)->config().dim != options.create_config.dim) {
    return absl::InvalidArgumentError(absl::StrCat("collection '", options.collection, "' has dim ",
                                                   (*c)->config().dim, ", not ",
                                                   options.create_config.dim));
  }
  if (!created) {
    ATTN_RETURN_IF_ERROR(CheckCreationFlags(options.collection, (*c)->config(),
                                            options.create_config, options.creation_flags));
  }
  return std::unique_ptr<Sink>(new EngineSink(std::move(catalog), *std::move(c), created,
                                              std::move(reject), std::move(durable)));
}

}  // namespace attnsearch::indexer
