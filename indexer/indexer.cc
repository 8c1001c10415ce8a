#include "indexer/indexer.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "indexer/checkpoint.h"
#include "indexer/rejects.h"
#include "indexer/sink.h"
#include "text/encoder.h"

namespace attnsearch::indexer {
namespace {

namespace fs = std::filesystem;

void Say(const std::string& message) {
  std::fprintf(stderr, "attnsearch-index: %s\n", message.c_str());
}

int Fail(int code, const std::string& message) {
  Say(absl::StrCat("error: ", message));
  return code;
}

// Usage errors (a bad name or config, a dim that contradicts the
// collection) versus failures of the target.
int TargetExitCode(const absl::Status& s) {
  return absl::IsInvalidArgument(s) || absl::IsFailedPrecondition(s) || absl::IsAlreadyExists(s)
             ? kExitUsage
             : kExitTarget;
}

std::string InputBasename(const std::string& input) {
  fs::path p(input);
  if (!p.has_filename()) p = p.parent_path();  // "folder/"
  return p.filename().string();
}

// The state of one run.
class Load {
 public:
  explicit Load(const IndexerOptions& options)
      : options_(options), progress_(options.progress, options.progress_seconds) {}

  int Run();

 private:
  // What the loop over the records ended with.
  struct Outcome {
    uint64_t consumed = 0;  // every record up to here is batched or reported
    uint64_t skipped = 0;   // records loaded by an earlier run
    bool stopped = false;   // --max_errors
    bool limited = false;   // --limit
    bool reached_end = false;
    absl::Status target_status;
    absl::Status read_status;
  };

  // The phases of Run; each returns an exit code to stop with, or nullopt.
  std::optional<int> CheckFlags();
  // The format, the data file, the checkpoint to resume from and the
  // rejects file.
  std::optional<int> OpenInput();
  // The sink (creating the collection when missing) and the source.
  std::optional<int> OpenTarget();
  // Reads, checks and batches every record; sends the last batch.
  Outcome LoadRecords();
  // Syncs, checkpoints, reports, trains the encoder, builds and tunes the
  // index; returns the exit code.
  int Finish(const Outcome& r);

  // Reports a bad record on stderr and in the rejects file; returns whether
  // to go on (--max_errors).
  bool ReportBad(uint64_t position, const std::string& id, const std::string& reason) {
    progress_.Clear();
    const std::string location = source_->Location(position);
    std::fprintf(stderr, "%s: %s\n", location.c_str(), reason.c_str());
    if (rejects_status_.ok()) rejects_status_ = rejects_->Add(location, position, id, reason);
    ++errors_;
    error_positions_.insert(position);
    return !options_.max_errors || errors_ <= *options_.max_errors;
  }

  // After the load: trains the built-in encoder when options_.train_encoder
  // says so. `reached_end`: the whole input was processed. Returns an exit
  // code, or nullopt to go on.
  std::optional<int> MaybeTrainEncoder(bool reached_end);

  // After Finish: tunes the ANN index when --target_recall asks and the
  // load reached the end of its input. Returns an exit code, or nullopt to
  // go on.
  std::optional<int> MaybeTuneIndex(bool reached_end);

  // Everything up to `position` is durable: checkpoint it.
  absl::Status OnDurable(uint64_t position, uint64_t documents) {
    if (rejects_status_.ok()) rejects_status_ = rejects_->Flush();
    ATTN_RETURN_IF_ERROR(rejects_status_);
    auto end = error_positions_.upper_bound(position);
    durable_errors_ += uint64_t(std::distance(error_positions_.begin(), end));
    error_positions_.erase(error_positions_.begin(), end);
    checkpoint_.position = position;
    checkpoint_.documents = prior_documents_ + documents;
    checkpoint_.errors = durable_errors_;
    return SaveCheckpoint(checkpoint_path_, checkpoint_);
  }

  absl::Status Send(Batch* batch, uint64_t end_position) {
    batch->end_position = end_position;
    absl::Status s = sink_->Add(std::move(*batch));
    *batch = Batch();
    if (!s.ok()) return s;
    if (options_.stop_after > 0 && sink_->documents_written() >= options_.stop_after) {
      progress_.Clear();
      Say(absl::StrCat("--stop_after ", options_.stop_after, ": ", sink_->documents_written(),
                       " documents written; killing myself"));
      std::fflush(stderr);
      ::raise(SIGKILL);
    }
    if (options_.server.empty() &&
        sink_->documents_written() - synced_documents_ >= options_.checkpoint_every) {
      synced_documents_ = sink_->documents_written();
      return sink_->Sync();
    }
    return absl::OkStatus();
  }

  const IndexerOptions& options_;
  Progress progress_;
  std::unique_ptr<RecordSource> source_;
  std::unique_ptr<Sink> sink_;
  std::unique_ptr<RejectsFile> rejects_;
  absl::Status rejects_status_;  // the first error writing the rejects file
  InputFormat format_ = InputFormat::kAuto;
  std::string data_file_;  // the file the checkpoint identifies
  uint64_t skip_to_ = 0;   // the checkpoint resumed from
  std::string checkpoint_path_;
  Checkpoint checkpoint_;
  uint64_t prior_documents_ = 0;
  uint64_t errors_ = 0;                 // bad records, earlier runs included
  uint64_t durable_errors_ = 0;         // of those, at or before the checkpoint
  uint64_t prior_errors_ = 0;           // of those, reported by earlier runs
  std::set<uint64_t> error_positions_;  // reported, after the checkpoint
  uint64_t synced_documents_ = 0;
  // Valid text-only documents (no vectors) of the input: written by this
  // run, and skipped because an earlier run (the checkpoint) loaded them.
  uint64_t text_only_written_ = 0;
  uint64_t text_only_earlier_ = 0;
};

std::optional<int> Load::MaybeTrainEncoder(bool reached_end) {
  const TrainEncoderMode mode = options_.train_encoder;
  const uint64_t text_only = text_only_written_ + text_only_earlier_;
  if (mode != TrainEncoderMode::kAlways && text_only == 0) return std::nullopt;
  absl::StatusOr<EncoderState> state = sink_->GetEncoderState();
  if (!state.ok()) return Fail(kExitTarget, std::string(state.status().message()));
  bool train = mode == TrainEncoderMode::kAlways;
  if (mode == TrainEncoderMode::kAuto && state->version == 0) {
    if (reached_end) {
      train = true;
    } else {
      Say("the built-in encoder is not trained: the load did not reach the end of its input, "
          "so text-only documents are stored awaiting it (not searchable); re-running the load "
          "to the end trains it (or --train_encoder=always)");
    }
  } else if (mode == TrainEncoderMode::kAuto && text_only_written_ > 0) {
    Say(absl::StrFormat(
        "%llu text-only documents were encoded by the collection's encoder v%llu "
        "(--train_encoder=always retrains it on every document's text)",
        (unsigned long long)text_only_written_, (unsigned long long)state->version));
  } else if (mode == TrainEncoderMode::kNever && state->version == 0) {
    Say(
        absl::StrFormat("--train_encoder=never: %llu text-only documents are stored awaiting the "
                        "built-in encoder (not searchable until it is trained)",
                        (unsigned long long)text_only));
  }
  if (!train) return std::nullopt;

  const text::EncoderOverrides& settings = options_.encoder;
  Say(absl::StrFormat(
      "training the built-in encoder (v%llu) on the collection's text (semantic_share %s, "
      "stem_language %s)",
      (unsigned long long)state->version + 1,
      settings.semantic_share == 0.f ? "default" : absl::StrFormat("%g", settings.semantic_share),
      settings.stem_language.empty() ? "default" : settings.stem_language));
  absl::StatusOr<EncoderTraining> t = sink_->TrainEncoder(settings);
  if (!t.ok()) {
    return Fail(TargetExitCode(t.status()),
                absl::StrCat("training the encoder: ", t.status().message(),
                             " (the documents are stored; re-run the load to train it)"));
  }
  if (t->reply_lost) {
    Say(
        absl::StrFormat("encoder v%llu: vocabulary %u; trained, but the server's reply was lost "
                        "(it became unavailable meanwhile), so no figures",
                        (unsigned long long)t->version, t->vocabulary));
  } else {
    Say(absl::StrFormat(
        "encoder v%llu: vocabulary %u, trained on %llu documents in %.2f s; "
        "%llu documents encoded in %.2f s",
        (unsigned long long)t->version, t->vocabulary, (unsigned long long)t->documents,
        t->train_seconds, (unsigned long long)t->encoded, t->encode_seconds));
    if (!t->wordnet.empty()) Say(t->wordnet);
  }
  return std::nullopt;
}

std::optional<int> Load::MaybeTuneIndex(bool reached_end) {
  const double target = options_.target_recall;
  if (target <= 0) return std::nullopt;
  if (!reached_end) {
    Say("--target_recall: the load did not reach the end of its input, so the ANN index is not "
        "tuned (re-run the load to the end)");
    return std::nullopt;
  }
  Say(absl::StrFormat("tuning the ANN index for a mean recall@10 of %g", target));
  absl::StatusOr<IndexTuning> t = sink_->TuneIndex(target);
  if (t.status().code() == absl::StatusCode::kFailedPrecondition) {
    // Too few documents to measure a recall on: the load itself is done.
    Say(absl::StrCat("--target_recall: the ANN index is not tuned: ", t.status().message(),
                     " (the documents are stored; tune it once the collection is larger)"));
    return std::nullopt;
  }
  if (!t.ok()) {
    return Fail(TargetExitCode(t.status()),
                absl::StrCat("tuning the ANN index: ", t.status().message(),
                             " (the documents are stored)"));
  }
  if (t->ann_params.empty()) {
    Say("ANN index: exact, nothing to tune");
  } else {
    Say(absl::StrFormat(
        "ANN index tuned: %s (recall@10 %.3f on %llu held-out vectors, %.2f s); the "
        "collection's searches use it unless they give ann_params",
        t->ann_params, t->sample_recall, (unsigned long long)t->sample_queries, t->seconds));
  }
  return std::nullopt;
}

// The parse threads `threads` asks for (0: one per hardware thread).
uint32_t ParseThreads(uint32_t threads) {
  return threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
}

std::optional<int> Load::CheckFlags() {
  const IndexerOptions& o = options_;
  if (o.collection.empty()) return Fail(kExitUsage, "--collection is required");
  if (o.input.empty()) return Fail(kExitUsage, "an input file or folder is required");
  if (o.data_dir.empty() == o.server.empty()) {
    return Fail(kExitUsage, "give exactly one of --data_dir (offline) and --server (online)");
  }
  if (o.batch_documents == 0 || o.batch_documents > 10000) {
    return Fail(kExitUsage, "--batch must be 1..10000");
  }
  if (o.dim > kMaxDim) return Fail(kExitUsage, absl::StrCat("--dim must be 1..", kMaxDim));
  if (o.max_streams == 0 || o.max_streams > 8) return Fail(kExitUsage, "--streams must be 1..8");
  if (o.threads > 256) {
    return Fail(kExitUsage, "--threads must be 0..256 (0: one per hardware thread)");
  }

  if (!(o.target_recall >= 0 && o.target_recall <= 1)) {
    return Fail(kExitUsage, "--target_recall must be in [0, 1] (0: no tuning)");
  }
  if (o.train_encoder != TrainEncoderMode::kNever) {
    // Checked now rather than after the load.
    absl::Status s = o.encoder.Apply().Validate();
    if (!s.ok()) return Fail(kExitUsage, absl::StrCat("--", s.message()));
  }

  return std::nullopt;
}

std::optional<int> Load::OpenInput() {
  const IndexerOptions& o = options_;
  format_ = o.format == InputFormat::kAuto ? DetectFormat(o.input) : o.format;
  absl::StatusOr<std::string> data_file = DataFile(o.input, format_);
  if (!data_file.ok()) return Fail(kExitInput, std::string(data_file.status().message()));
  absl::StatusOr<InputFingerprint> fingerprint =
      format_ == InputFormat::kNpy ? FingerprintFolder(o.input) : FingerprintFile(*data_file);
  if (!fingerprint.ok()) return Fail(kExitInput, std::string(fingerprint.status().message()));

  // --- Checkpoint ---
  checkpoint_path_ = o.checkpoint.empty() ? DefaultCheckpointPath(o) : o.checkpoint;
  const std::string rejects_path =
      o.rejects.empty() ? DefaultRejectsPath(checkpoint_path_) : o.rejects;
  // The files the load writes: their folders must exist and take files,
  // before anything is loaded.
  for (const auto& [flag, path] :
       {std::pair<const char*, std::string>{"--checkpoint", checkpoint_path_},
        std::pair<const char*, std::string>{"--rejects", rejects_path}}) {
    const fs::path parent = fs::path(path).parent_path();
    const std::string folder = parent.empty() ? "." : parent.string();
    if (!o.data_dir.empty() && parent.lexically_normal() ==
                                   (fs::path(o.data_dir) / "x").parent_path().lexically_normal()) {
      continue;  // the data directory, made by the load when new
    }
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) {
      return Fail(kExitUsage,
                  absl::StrCat(flag, " ", path, ": the folder ", folder, " does not exist"));
    }
    if (::access(folder.c_str(), W_OK) != 0) {
      return Fail(kExitUsage, absl::StrCat(flag, " ", path, ": cannot write in ", folder,
                                           " (give another path)"));
    }
  }
  data_file_ = *data_file;
  checkpoint_.input = *data_file;
  checkpoint_.collection = o.collection;
  checkpoint_.fingerprint = *fingerprint;
  if (!o.restart) {
    absl::StatusOr<std::optional<Checkpoint>> prior = LoadCheckpoint(checkpoint_path_);
    if (!prior.ok()) return Fail(kExitUsage, std::string(prior.status().message()));
    if (prior->has_value()) {
      const Checkpoint& c = **prior;
      if (!(c.fingerprint == *fingerprint) || c.collection != o.collection) {
        Say(absl::StrCat("checkpoint ", checkpoint_path_, " is for ",
                         c.collection != o.collection ? "another collection"
                                                      : "another input (size, time or "
                                                        "content differ)",
                         "; starting over"));
      } else {
        skip_to_ = c.position;
        prior_documents_ = c.documents;
        errors_ = durable_errors_ = prior_errors_ = c.errors;
        checkpoint_ = c;
        Say(absl::StrCat("resuming after ",
                         format_ == InputFormat::kFvecs ? "record "
                         : format_ == InputFormat::kNpy ? "document "
                                                        : "line ",
                         c.position, " (", c.documents, " documents stored and ", c.errors,
                         " bad records in earlier runs; --restart starts over)"));
      }
    }
  }

  // --- Rejects file ---
  {
    absl::StatusOr<std::unique_ptr<RejectsFile>> r = RejectsFile::Open(
        rejects_path, skip_to_ > 0 ? std::optional<uint64_t>(skip_to_) : std::nullopt);
    if (!r.ok()) return Fail(kExitUsage, std::string(r.status().message()));
    rejects_ = *std::move(r);
  }

  return std::nullopt;
}

std::optional<int> Load::OpenTarget() {
  const IndexerOptions& o = options_;
  // How a new collection's dim was chosen when --dim was not given.
  std::string dim_origin = ", the file's";
  // --- Target ---
  TargetOptions t;
  t.collection = o.collection;
  t.create_config.dim = o.dim;
  t.create_config.token_dtype = o.dtype.value_or(TokenDtype::kBF16);
  t.create_config.ann_spec = o.ann_spec;
  t.create_config.numeric_fields = o.numeric_fields;
  t.create_config.token_codec = o.token_codec;
  t.create_config.candidates_from = o.candidates_from;
  t.creation_flags = o.creation_flags;
  if (format_ == InputFormat::kFvecs && o.dim == 0) {
    absl::StatusOr<uint32_t> d = PeekFvecsDim(data_file_);
    if (!d.ok()) return Fail(kExitInput, std::string(d.status().message()));
    t.create_config.dim = *d;
  } else if (format_ == InputFormat::kNpy ||
             (format_ != InputFormat::kFvecs && (o.dim == 0 || !o.dtype))) {
    // npy: the folder's structure is checked before anything is created.
    absl::StatusOr<FirstDocument> first = PeekFirstDocument(o.input, format_);
    if (!first.ok()) return Fail(kExitInput, std::string(first.status().message()));
    // A new collection takes the dim the first record states.
    if (o.dim == 0) t.default_dim = first->text_only ? kTextOnlyDim : first->dim;
    dim_origin = first->text_only               ? ", the default for text-only input"
                 : format_ == InputFormat::kNpy ? ", the arrays' row length"
                                                : ", from the first record";
    // Nothing says what a new collection's dim would be: no record, or
    // none that parses, among the first lines.
    if (!first->text_only && first->dim == 0) t.empty_input = true;
    if (first->text_only && !o.dtype) t.create_config.token_dtype = TokenDtype::kInt8;
  }
  t.data_dir = o.data_dir;
  t.server = o.server;
  t.api_key_file = o.api_key_file;
  t.tls_ca_file = o.tls_ca_file;
  t.max_message_bytes = o.batch_bytes;
  t.max_inflight_bytes = o.max_inflight_bytes;
  t.max_streams = o.max_streams;
  t.max_retries = o.max_retries;
  t.initial_backoff_ms = o.initial_backoff_ms;
  RejectFn reject = [this](uint64_t position, const std::string& id, const std::string& reason) {
    return ReportBad(position, id, reason);
  };
  DurableFn durable = [this](uint64_t position, uint64_t documents) {
    return OnDurable(position, documents);
  };
  absl::StatusOr<std::unique_ptr<Sink>> sink =
      o.server.empty() ? OpenEngineSink(t, reject, durable) : OpenServerSink(t, reject, durable);
  if (!sink.ok()) {
    return Fail(TargetExitCode(sink.status()), std::string(sink.status().message()));
  }
  sink_ = *std::move(sink);

  ParseOptions po;
  po.dim = sink_->dim();
  po.threads = o.threads;
  po.skip_to = skip_to_;
  absl::StatusOr<std::unique_ptr<RecordSource>> source = OpenSource(o.input, format_, po);
  if (!source.ok()) return Fail(kExitInput, std::string(source.status().message()));
  source_ = *std::move(source);
  Say(absl::StrCat("loading ", data_file_, " (", InputFormatName(format_), ") into ",
                   sink_->created() ? "new" : "existing", " collection '", o.collection, "' (dim ",
                   sink_->dim(), sink_->created() && t.create_config.dim == 0 ? dim_origin : "",
                   ") ", o.server.empty() ? "in " + o.data_dir : "on " + o.server, "; checkpoint ",
                   checkpoint_path_,
                   format_ == InputFormat::kFvecs ? ""
                   : format_ == InputFormat::kNpy
                       ? absl::StrCat("; ", ParseThreads(o.threads), " conversion threads")
                       : absl::StrCat("; ", ParseThreads(o.threads), " parse threads")));

  return std::nullopt;
}

Load::Outcome Load::LoadRecords() {
  const IndexerOptions& o = options_;
  const bool dedup = format_ != InputFormat::kFvecs;  // fvecs ids are row numbers
  absl::flat_hash_map<std::string, uint64_t> first_seen;
  Batch batch;
  InputRecord rec;
  Outcome r;
  r.consumed = skip_to_;
  uint64_t accepted = 0;  // valid documents of this run
  while (!r.stopped && !r.limited && source_->Next(&rec)) {
    if (rec.position <= skip_to_) {
      // Already loaded; ids still count for duplicate detection.
      if (dedup && rec.status.ok()) first_seen.emplace(rec.doc.id, rec.position);
      if (rec.status.ok() && IsTextOnly(rec.doc)) ++text_only_earlier_;
      ++r.skipped;
      continue;
    }
    if (rec.status.ok() && dedup) {
      auto [it, fresh] = first_seen.emplace(rec.doc.id, rec.position);
      if (!fresh) {
        rec.status = absl::InvalidArgumentError(absl::StrCat(
            "id: duplicate id '", rec.doc.id, "' (first at ", source_->Location(it->second), ")"));
      }
    }
    if (!rec.status.ok()) {
      if (!ReportBad(rec.position, rec.doc.id, std::string(rec.status.message()))) {
        r.stopped = true;
        break;  // this record is not consumed: a re-run starts at it
      }
      r.consumed = rec.position;
      continue;
    }
    const size_t bytes = EstimateWireBytes(rec.doc);
    const bool text_only = IsTextOnly(rec.doc);
    if (!batch.docs.empty() &&
        (batch.docs.size() >= o.batch_documents || batch.bytes + bytes > o.batch_bytes)) {
      r.target_status = Send(&batch, r.consumed);
      if (!r.target_status.ok() || sink_->stopped()) break;
    }
    batch.docs.push_back(std::move(rec.doc));
    batch.positions.push_back(rec.position);
    batch.bytes += bytes;
    r.consumed = rec.position;
    ++accepted;
    text_only_written_ += text_only;
    if (o.limit > 0 && accepted >= o.limit) r.limited = true;
    progress_.Update(
        sink_->documents_written() + batch.docs.size(),
        checkpoint_.documents > prior_documents_ ? checkpoint_.documents - prior_documents_ : 0,
        errors_, source_->bytes_read(), source_->file_size());
  }
  r.read_status = source_->status();
  r.reached_end =
      !r.stopped && !r.limited && r.target_status.ok() && !sink_->stopped() && r.read_status.ok();
  if (r.target_status.ok() && !sink_->stopped()) {
    // The last batch (possibly empty: it advances the checkpoint past
    // trailing bad records).
    r.target_status = Send(&batch, r.consumed);
  }
  return r;
}

int Load::Finish(const Outcome& r) {
  const IndexerOptions& o = options_;
  absl::Status target_status = r.target_status;
  const bool reached_end = r.reached_end;
  if (target_status.ok()) target_status = sink_->Sync();
  if (target_status.ok() && rejects_status_.ok()) rejects_status_ = rejects_->Flush();
  if (target_status.ok()) target_status = rejects_status_;
  progress_.Clear();
  if (!target_status.ok()) {
    return Fail(kExitTarget, absl::StrCat(target_status.message(), " (",
                                          prior_documents_ + sink_->documents_written(),
                                          " documents were sent; what was acknowledged stays "
                                          "stored; re-run to resume)"));
  }
  if (reached_end) {
    checkpoint_.complete = true;
    absl::Status s = SaveCheckpoint(checkpoint_path_, checkpoint_);
    if (!s.ok()) return Fail(kExitTarget, std::string(s.message()));
  }
  const double secs = progress_.Elapsed();
  const uint64_t written = sink_->documents_written();
  Say(absl::StrFormat(
      "%s: %llu documents written%s, %llu bad records%s, %.2f s, %.0f docs/s, %.1f MB/s "
      "(%llu input bytes)",
      reached_end ? "done" : "stopped", (unsigned long long)written,
      r.skipped > 0 ? absl::StrFormat(" (%llu records skipped: loaded by an earlier run)",
                                      (unsigned long long)r.skipped)
                    : "",
      (unsigned long long)errors_,
      prior_errors_ == 0 ? ""
                         : absl::StrFormat(" (%llu of them reported by an earlier run)",
                                           (unsigned long long)prior_errors_),
      secs, written / std::max(secs, 1e-9), source_->bytes_read() / std::max(secs, 1e-9) / 1e6,
      (unsigned long long)source_->bytes_read()));
  // Offline, before the ANN index is built: it then holds the encoded
  // documents.
  if (std::optional<int> code = MaybeTrainEncoder(reached_end)) return *code;
  absl::StatusOr<std::string> finish = sink_->Finish();
  if (!finish.ok()) return Fail(kExitTarget, std::string(finish.status().message()));
  Say(absl::StrFormat("%s; %.2f s in all", *finish, progress_.Elapsed()));
  if (std::optional<int> code = MaybeTuneIndex(reached_end)) return *code;
  if (!r.read_status.ok()) {
    return Fail(kExitInput,
                absl::StrCat(r.read_status.message(), "; the records before it are stored"));
  }
  if (r.stopped || sink_->stopped()) {
    return Fail(kExitInput,
                absl::StrCat("stopped: more than ", o.max_errors.value_or(0),
                             " bad records (--max_errors); the documents before the last one "
                             "are stored; fix the input or raise --max_errors and re-run "
                             "(the bad records are listed in ",
                             rejects_->path(), ")"));
  }
  if (r.limited) Say(absl::StrCat("--limit ", o.limit, " reached; re-run without it to go on"));
  if (errors_ == 0) return kExitOk;
  Say(absl::StrFormat("done with %llu bad records rejected (skipped): see %s (exit status %d)",
                      (unsigned long long)errors_, rejects_->path(), int(kExitRejected)));
  return kExitRejected;
}

int Load::Run() {
  if (std::optional<int> code = CheckFlags()) return *code;
  if (std::optional<int> code = OpenInput()) return *code;
  if (std::optional<int> code = OpenTarget()) return *code;
  return Finish(LoadRecords());
}

}  // namespace

std::string DefaultCheckpointPath(const IndexerOptions& options) {
  const std::string name =
      absl::StrCat(options.collection, ".", InputBasename(options.input), ".progress");
  return options.data_dir.empty() ? name : (fs::path(options.data_dir) / name).string();
}

std::string DefaultRejectsPath(const std::string& checkpoint) {
  constexpr std::string_view kSuffix = ".progress";
  std::string base = checkpoint;
  if (base.size() > kSuffix.size() && base.ends_with(kSuffix)) {
    base.resize(base.size() - kSuffix.size());
  }
  return base + ".rejects.jsonl";
}

int RunIndexer(const IndexerOptions& options) {
  Load load(options);
  return load.Run();
}

}  // namespace attnsearch::indexer
