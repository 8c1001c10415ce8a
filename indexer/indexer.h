// The batch indexing tool's driver: reads an input (input_source.h),
// validates every record before it enters a batch, writes batches to a sink
// (sink.h: the engine in-process, or a server), reports bad records as
// FILE:LINE: reason, checkpoints its progress (checkpoint.h) and prints
// progress and a summary on stderr. At the end it trains the collection's
// built-in text encoder when the load brought text-only documents (see
// TrainEncoderMode). main.cc only parses flags.
#ifndef ATTNSEARCH_INDEXER_INDEXER_H_
#define ATTNSEARCH_INDEXER_INDEXER_H_

#include <cstdint>
#include <optional>
#include <string>

#include "core/types.h"
#include "indexer/input_source.h"
#include "indexer/progress.h"
#include "text/encoder.h"

namespace attnsearch::indexer {

// Exit codes of attnsearch-index.
enum ExitCode : int {
  kExitOk = 0,        // every record loaded
  kExitUsage = 1,     // bad flags, or a collection that contradicts them
  kExitInput = 2,     // the load stopped early on its input: more bad records
                      // than --max_errors, or an unreadable input
  kExitTarget = 3,    // the engine or the server failed
  kExitRejected = 4,  // done: every good record loaded, the bad ones
                      // reported, written to the rejects file and skipped
};

// The dim of a collection created for text-only input without --dim: the
// built-in encoder's default size (96 semantic + 159 lexical + 1).
inline constexpr uint32_t kTextOnlyDim = 256;

// When to train the built-in encoder after a load (--train_encoder).
enum class TrainEncoderMode {
  // When the load reached the end of its input, the input holds text-only
  // documents (written by this run or, resumed, by the runs before it) and
  // the collection's encoder is untrained. A load that stopped early
  // (--limit, too many bad records, an unreadable input) does not train:
  // re-running it to the end does.
  kAuto,
  // After every load that did not fail on the target (a trained encoder is
  // replaced by the next version, trained on every document's text).
  kAlways,
  // Never: text-only documents stay stored awaiting the encoder, not
  // searchable.
  kNever,
};

struct IndexerOptions {
  // --- What to load where ---
  // A JSON lines file, a BEIR folder or an .fvecs file (optionally gzip).
  std::string input;
  // Default: kAuto (by name; see input_source.h).
  InputFormat format = InputFormat::kAuto;
  // Target collection. Required.
  std::string collection;
  // Exactly one of data_dir (offline, in-process) and server (online).
  std::string data_dir;
  std::string server;
  // Online: the API key's file (empty: the environment variable
  // ATTNSEARCH_API_KEY, if set) and the PEM certificates to trust for TLS
  // (empty: plaintext). See src/client/client_channel.h.
  std::string api_key_file;
  std::string tls_ca_file;

  // JSON lines: threads parsing and validating records beside the one
  // reading the input (ParseOptions::threads). Default: 0, one per
  // hardware thread.
  uint32_t threads = 0;

  // --- Creating the collection (when missing) ---
  // 0: the existing collection's dim; for a new one, the dim the first
  // record states (fvecs: the file's; JSON lines: its pooled vector's or
  // token rows' length; a text-only first document: kTextOnlyDim).
  uint32_t dim = 0;
  // Unset: bf16, or int8 when the first document is text-only (the built-in
  // encoder's rows lose no measurable quality in int8, and a query fetches
  // half the bytes).
  std::optional<TokenDtype> dtype;
  // FAISS factory string. Default: kDefaultAnnSpec ("HNSW32,SQfp16").
  std::string ann_spec = std::string(kDefaultAnnSpec);
  // Metadata keys declared numeric (filterable by range). Default: none.
  std::vector<std::string> numeric_fields;
  // The token codec when creating (CollectionConfig::token_codec). Offline
  // (--data_dir) a residual codec is trained at the end of the load, after
  // the ANN index is built, and every document's codes are written.
  // Default: rows.
  TokenCodecConfig token_codec;
  // Where searches take candidates from, when creating
  // (CollectionConfig::candidates_from; centroids needs the residual codec).
  CandidateSource candidates_from = CandidateSource::kPooled;
  // The creating flags given ("--dtype", ...): with an existing collection
  // each must match its config, else kExitUsage (TargetOptions).
  std::vector<std::string> creation_flags;

  // --- Batching ---
  // Documents per batch (1..10000). Default: 1000.
  size_t batch_documents = 1000;
  // Bytes per batch (a batch is one gRPC message online). Default: 4 MiB.
  size_t batch_bytes = size_t{4} << 20;
  // Online: unacknowledged bytes in flight at most. Default: 32 MiB.
  size_t max_inflight_bytes = size_t{32} << 20;
  // Online: UpsertStreams in flight at once (1..8; see TargetOptions).
  // Default: 3.
  size_t max_streams = 3;
  // Online: retries of UNAVAILABLE. Default: 8.
  int max_retries = 8;
  // Online: first retry backoff. Default: 200 ms.
  int initial_backoff_ms = 200;

  // --- The built-in encoder ---
  TrainEncoderMode train_encoder = TrainEncoderMode::kAuto;
  // The training's settings (attnsearch-index sets semantic_share,
  // stem_language and wordnet_weight). Default: every field unset, the encoder's defaults.
  text::EncoderOverrides encoder;

  // --- Tuning the ANN index ---
  // When > 0: after a load that reached the end of its input (and the index
  // is built), tune the collection's default ANN search knob to reach this
  // mean recall@10 (Collection::TuneIndex offline, the TuneIndex rpc
  // online) and print what was chosen. Must be in [0, 1]. Default: 0 (off).
  double target_recall = 0;

  // --- Errors ---
  // Bad records (a record that does not parse or validate, or that the
  // engine or server rejects) are reported on stderr as FILE:LINE: reason,
  // written to the rejects file and skipped; the load goes on to the end.
  // When set, more than this many stop the load (exit kExitInput; the
  // checkpoint points at the last one, so a re-run resumes there). Default:
  // unset (no limit).
  std::optional<uint64_t> max_errors;
  // The rejects file: one JSON line per bad record, {"location", "line" (or
  // "record" for fvecs), "id" (when known), "reason"}. A fresh load
  // replaces it; a resumed one keeps the entries at or before its
  // checkpoint. Default: the checkpoint's path with ".rejects.jsonl" for
  // ".progress".
  std::string rejects;

  // --- Checkpoints ---
  // Default: <data_dir>/<collection>.<input basename>.progress offline,
  // ./<collection>.<input basename>.progress online.
  std::string checkpoint;
  // Ignore an existing checkpoint and start over. Default: false.
  bool restart = false;
  // Offline: flush and checkpoint every this many documents. Default: 100000.
  uint64_t checkpoint_every = 100000;

  // --- Stopping early ---
  // Load at most this many documents, then finish normally. 0: all.
  uint64_t limit = 0;
  // Testing: once this many documents were written, kill the process with
  // SIGKILL (before their checkpoint), like a crash. 0: never.
  uint64_t stop_after = 0;

  // --- Reporting ---
  ProgressMode progress = ProgressMode::kAuto;
  double progress_seconds = 5.0;
};

// Runs a load; returns an ExitCode. Everything is reported on stderr.
int RunIndexer(const IndexerOptions& options);

// The default checkpoint path for `options` (see IndexerOptions::checkpoint).
std::string DefaultCheckpointPath(const IndexerOptions& options);

// The default rejects file beside `checkpoint` (see IndexerOptions::rejects).
std::string DefaultRejectsPath(const std::string& checkpoint);

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_INDEXER_H_
