// Sink: where validated batches go. Two implementations:
//
//   OpenEngineSink  offline: the engine in-process on a data directory
//                   (CollectionOptions::ForBulkLoad(); Upsert per batch,
//                   Collection::Flush() at Sync, Collection::TrainEncoder()
//                   at TrainEncoder, Collection::BuildIndex() at Finish,
//                   Collection::TuneIndex() at TuneIndex).
//   OpenServerSink  online: a running attnsearch-server, through
//                   UpsertStream. Batches are written to a stream until it
//                   carried max_inflight_bytes / max_streams; the stream is
//                   then closed, and its reply (awaited while the next
//                   stream is written) acknowledges them.
//                   UNAVAILABLE is retried with exponential backoff (the
//                   unacknowledged batches are sent again: upserts are
//                   idempotent by id). TrainEncoder is the rpc of that
//                   name, without a deadline, and so is TuneIndex.
//
// Both create the collection when it is missing (that needs a dim). Every
// batch is atomic: a document the target rejects (its error names
// documents[i]) is reported through RejectFn and the batch is written
// again without it, or, when RejectFn says stop, only the documents before
// it are written and the sink stops.
#ifndef ATTNSEARCH_INDEXER_SINK_H_
#define ATTNSEARCH_INDEXER_SINK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/types.h"
#include "text/encoder.h"

namespace attnsearch::indexer {

// A batch of validated documents and where they came from.
struct Batch {
  std::vector<Document> docs;
  std::vector<uint64_t> positions;  // input position of each document
  // Every input unit up to this position is in this or an earlier batch, or
  // was reported as bad.
  uint64_t end_position = 0;
  size_t bytes = 0;  // EstimateWireBytes summed
};

// Reports a document the target rejected (its input position, its id and
// the reason) and returns whether to go on.
using RejectFn =
    std::function<bool(uint64_t position, const std::string& id, const std::string& reason)>;
// Called whenever everything up to `position` is durable (flushed or
// acknowledged); `documents` counts the documents this sink made durable.
// A non-OK return stops the load.
using DurableFn = std::function<absl::Status(uint64_t position, uint64_t documents)>;

// The collection's built-in encoder.
struct EncoderState {
  uint64_t version = 0;  // 0: not trained
  uint32_t vocabulary = 0;
};

// What training the encoder did.
struct EncoderTraining {
  uint64_t version = 0;
  uint32_t vocabulary = 0;
  uint64_t documents = 0;  // texts trained on
  double train_seconds = 0;
  uint64_t encoded = 0;  // documents encoded with the new version
  double encode_seconds = 0;
  // What WordNet contributed, or why nothing (TrainingStats::wordnet).
  std::string wordnet;
  // Online: the reply was lost (the server became unavailable) but the
  // encoder's version shows the training happened; only version and
  // vocabulary are known.
  bool reply_lost = false;
};

// What tuning the ANN index chose (Collection::TuneIndex).
struct IndexTuning {
  std::string ann_params;  // "efSearch=31"; empty: the index is exact
  double sample_recall = 0;
  uint64_t sample_queries = 0;
  double seconds = 0;
};

struct TargetOptions {
  std::string collection;
  // Configuration used when the collection is created. dim 0: unknown (then
  // the collection must exist, unless default_dim is set). A non-zero dim
  // must match an existing collection's.
  CollectionConfig create_config;
  // The creating flags the command line gave ("--dtype", "--ann_spec", ...;
  // see CheckCreationFlags): each must match an existing collection's
  // config.
  std::vector<std::string> creation_flags;
  // The dim a missing collection is created with when create_config.dim is
  // 0 (text-only input: kTextOnlyDim of indexer.h); never compared with an existing
  // collection's. Default: 0 (none).
  uint32_t default_dim = 0;
  // The input's first lines hold no record stating a dim (for the message
  // when a new collection has none).
  bool empty_input = false;
  // Offline: the data directory.
  std::string data_dir;
  // Online: "host:port".
  std::string server;
  // Online: the API key's file (empty: ATTNSEARCH_API_KEY) and the PEM
  // certificates to trust for TLS (empty: plaintext).
  std::string api_key_file;
  std::string tls_ca_file;
  // Online: largest UpsertRequest message. Default: 4 MiB.
  size_t max_message_bytes = size_t{4} << 20;
  // Online: unacknowledged bytes after which a stream is closed and its
  // acknowledgement awaited. Default: 32 MiB.
  size_t max_inflight_bytes = size_t{32} << 20;
  // Online: UpsertStreams in flight at once. With more than one, a stream
  // is closed once it carried max_inflight_bytes / max_streams, and the next
  // batches go out on a new stream while the server applies it; the
  // checkpoint advances as streams are acknowledged, oldest first. Default: 3.
  size_t max_streams = 3;
  // Online: attempts after an UNAVAILABLE before giving up. Default: 8.
  int max_retries = 8;
  // Online: first backoff; doubled per retry, capped at 10 s. Default: 200 ms.
  int initial_backoff_ms = 200;
};

class Sink {
 public:
  virtual ~Sink() = default;
  // The collection's dimension.
  virtual uint32_t dim() const = 0;
  // Whether the collection was created by this sink.
  virtual bool created() const = 0;
  // Hands over a batch (possibly empty, to advance the position). Non-OK on
  // an error of the target (not of the input).
  virtual absl::Status Add(Batch batch) = 0;
  // Makes everything handed over durable, then calls DurableFn.
  virtual absl::Status Sync() = 0;
  // The collection's built-in encoder, as it is now.
  virtual absl::StatusOr<EncoderState> GetEncoderState() = 0;
  // After the last Sync: trains the built-in encoder on the text of every
  // document of the collection and encodes the text-only ones with it
  // (Collection::TrainEncoder). Call before Finish (offline, the ANN index is
  // then built once, with the encoded documents).
  virtual absl::StatusOr<EncoderTraining> TrainEncoder(const text::EncoderOverrides& overrides) = 0;
  // After the last Sync: offline, builds the ANN index. Returns a line for
  // the summary.
  virtual absl::StatusOr<std::string> Finish() = 0;
  // After Finish: chooses the collection's default ANN search knob for a
  // mean recall@10 of `target_recall` (Collection::TuneIndex; online the
  // rpc of that name, without a deadline) and stores it with the collection.
  virtual absl::StatusOr<IndexTuning> TuneIndex(double target_recall) = 0;
  // RejectFn asked to stop: nothing after the rejected document was written.
  virtual bool stopped() const = 0;
  // Documents written (acknowledged or not yet).
  virtual uint64_t documents_written() const = 0;
};

absl::StatusOr<std::unique_ptr<Sink>> OpenEngineSink(const TargetOptions& options, RejectFn reject,
                                                     DurableFn durable);
absl::StatusOr<std::unique_ptr<Sink>> OpenServerSink(const TargetOptions& options, RejectFn reject,
                                                     DurableFn durable);

// The index i of "documents[i]" in an error message of the target, if any,
// and the reason after it ("pooled: expected 128 values, got 12").
std::optional<size_t> RejectedDocument(const std::string& message, std::string* reason);

// INVALID_ARGUMENT naming the first of `flags` (--dtype, --ann_spec,
// --numeric_fields, --token_codec, --candidates_from, --code_bits,
// --exact_tier, --code_train_after) whose value in `wanted` differs from
// the existing collection's config: an existing collection keeps its own,
// so a flag that says otherwise is a usage error, not ignored.
absl::Status CheckCreationFlags(const std::string& collection, const CollectionConfig& existing,
                                const CollectionConfig& wanted,
                                const std::vector<std::string>& flags);

// INVALID_ARGUMENT naming a residual codec's flag (--code_bits,
// --exact_tier, --code_train_after) given to create a collection of rows.
absl::Status CheckFlagsForNewCollection(const CollectionConfig& wanted,
                                        const std::vector<std::string>& flags);

// Applies a rejection of batch->docs[i]: asks `reject`; on "go on" removes
// the document, otherwise truncates the batch to the documents before it
// (end_position just before it). Returns whether to go on.
bool ApplyRejection(Batch* batch, size_t i, const std::string& reason, const RejectFn& reject);

// INVALID_ARGUMENT: the collection does not exist and nothing gives the dim
// to create it with (saying so when the input states none).
absl::Status NoDimForNewCollection(const TargetOptions& options);

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_SINK_H_
