// Collection: one collection's write path and search pipeline.
//
//   write:  validate + normalise -> RocksDB WriteBatch (synced) -> ANN add
//   search: validate + normalise -> ANN candidates (filter and tombstones
//           inside the search) -> RocksDB MultiGet of their token matrices
//           -> rerank -> top_k -> documents of the hits
//
// RocksDB is the truth; the ANN index is rebuilt or caught up from it on
// Open, so a crash at any instant loses no acknowledged write.
//
// Thread safety: every method may be called concurrently. Writes (Upsert,
// Delete; also TuneIndex, TrainEncoder, BuildIndex) are serialised
// internally; searches run in parallel with each other and with writes, and
// see each write entirely or not at all.
#ifndef ATTNSEARCH_ENGINE_COLLECTION_H_
#define ATTNSEARCH_ENGINE_COLLECTION_H_

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ann/ann_index.h"
#include "core/label_bitmap.h"
#include "core/types.h"
#include "engine/filter_index.h"
#include "engine/live_index.h"
#include "engine/search_pipeline.h"
#include "engine/search_types.h"
#include "engine/token_arena.h"
#include "engine/token_codes.h"
#include "lexical/lexical_index.h"
#include "rerank/reranker.h"
#include "storage/doc_store.h"
#include "text/encoder.h"

namespace attnsearch {

struct CollectionOptions {
  StorageOptions storage;
  AnnOptions ann;
  RerankerOptions rerank;
  RequestLimits limits;
  // Write an ANN snapshot once this many vectors were added since the last
  // one (a snapshot is also written on close). Default: 100000.
  size_t snapshot_every = 100000;
  // Bulk loading: Upsert stores documents but leaves them out of the ANN
  // index and the filter index until BuildIndex() (or the next Open), so the
  // index is built once at the end. Searches meanwhile see only documents
  // indexed before; Open leaves the ANN index as its snapshot has it.
  // Default: false.
  bool defer_index = false;
  // Rebuild the ANN index from the live documents, in the background, once
  // the deleted or superseded vectors it still holds reach this share of its
  // vectors (and at least rebuild_min_tombstones of them). Searches and
  // writes go on against the old index meanwhile. 0 disables. Default: 0.2.
  double rebuild_tombstone_ratio = 0.2;
  // See rebuild_tombstone_ratio. Default: 1000.
  size_t rebuild_min_tombstones = 1000;
  // A write returns once its vectors are stored: a background thread links
  // them into the ANN graph, and searches score them exactly until then.
  // A write that finds more than max_pending_vectors waiting waits for it.
  // false: writes link their vectors themselves. Defaults: true, 20000.
  bool background_insert = true;
  size_t max_pending_vectors = 20000;
  // Hold every searchable document's token matrix in memory (TokenArena),
  // loaded from the store at Open and kept current by every write, so that
  // a search reads no token matrix from the store. Off for bulk loads,
  // which do not search. Default: true.
  bool token_arena = true;
  // The memory the token arenas of a process share (the server's; Open
  // fails with RESOURCE_EXHAUSTED naming the sizes when a collection's
  // arena would not fit). Default: none, no limit.
  std::shared_ptr<ArenaBudget> arena_budget;

  // For bulk loads: StorageOptions::ForBulkLoad() and defer_index.
  static CollectionOptions ForBulkLoad() {
    CollectionOptions o;
    o.storage = StorageOptions::ForBulkLoad();
    o.defer_index = true;
    o.token_arena = false;
    return o;
  }
};

struct DeleteResult {
  uint64_t deleted = 0;
  std::vector<std::string> not_found_ids;
};

struct GetResult {
  std::vector<Document> documents;  // in request order, found ids only
  std::vector<std::string> not_found_ids;
};

struct CollectionStats {
  uint64_t num_documents = 0;
  // Deleted or superseded labels the ANN index still holds (searches filter
  // them out; a rebuild drops them).
  uint64_t num_tombstones = 0;
  // Vectors the ANN stage searches, and of them those still waiting to be
  // linked into the graph (searched exactly until then).
  uint64_t ann_vectors = 0;
  uint64_t ann_pending = 0;
  // Bytes on disk: every file of the collection, and its parts.
  uint64_t disk_bytes = 0;
  uint64_t disk_table_bytes = 0;  // the store's table files: documents, vectors, ids
  uint64_t disk_log_bytes = 0;    // the store's write-ahead log, until flushed
  uint64_t disk_ann_bytes = 0;    // the ANN snapshot
  uint64_t disk_other_bytes = 0;  // the store's manifest, options and info logs
  // The store's memory: RocksDB's block cache, memtables and table readers
  // (index and filter blocks).
  uint64_t block_cache_bytes = 0;
  uint64_t memtable_bytes = 0;
  uint64_t table_reader_bytes = 0;
  // The token arena (all 0 without one): the token rows it holds, their
  // records' bytes, and the memory it has allocated (slabs and directory).
  bool token_arena = false;
  uint64_t arena_tokens = 0;
  uint64_t arena_live_bytes = 0;
  uint64_t arena_bytes = 0;
  // The centroid first stage (candidates_from centroids): its lists,
  // tables and centroid graph; 0 without one.
  uint64_t first_stage_bytes = 0;
  // The token codec (residual): 0 until trained, else its version; and the
  // documents whose codes are not of that version yet (held as rows until
  // the re-encoding reaches them).
  uint64_t codec_version = 0;
  uint64_t codec_pending = 0;
  // The built-in encoder: 0 when untrained, else its version.
  uint64_t encoder_version = 0;
  uint32_t encoder_vocabulary = 0;
  // Whether an ANN index rebuild is running, and how many finished since
  // the collection was opened.
  bool rebuild_in_progress = false;
  uint64_t rebuilds = 0;
  // Whether the store's writes are stopped after an I/O error (the next
  // write tries to recover; see RecoverStore).
  bool writes_stopped = false;
  // The ANN knobs TuneIndex chose (empty when never tuned) and the recall
  // they were tuned for.
  std::string tuned_ann_params;
  double tuned_target_recall = 0;
};

// Limits of TuneIndex's arguments.
inline constexpr uint32_t kMaxTuneK = 1000;
inline constexpr uint32_t kMaxTuneSample = 100000;

// What TuneIndex chose.
struct IndexTuningResult {
  // The knob ("efSearch" for HNSW, "nprobe" for IVF) and its value, and the
  // two as ann_params ("efSearch=31"). All empty when the index searches
  // exactly (Flat, or an index not trained yet): nothing to tune, nothing
  // stored.
  std::string knob;
  int value = 0;
  std::string ann_params;
  // Mean recall@k the chosen value reached on the held-out sample, and the
  // sample's size.
  double sample_recall = 1.0;
  uint64_t sample_queries = 0;
  // With candidates_from centroids, once its first stage serves: the
  // smallest probe (1, 2, 4, ... 128) whose candidates (the default 100)
  // hold `target_recall` of the exhaustive rerank's top k, mean over
  // held-out stored documents searched with their own token rows; also in
  // ann_params. 0 otherwise.
  int probe = 0;
  double first_stage_recall = 0;
  uint64_t first_stage_queries = 0;
  double seconds = 0;
};

// Held-out documents TuneIndex searches the centroid first stage with, at
// most (each also costs an exhaustive rerank).
inline constexpr uint32_t kMaxFirstStageTuneSample = 200;

// What TrainCodec did.
struct CodecTrainingResult {
  uint64_t version = 0;  // the new codec's
  uint32_t centroids = 0;
  uint32_t bits = 0;
  size_t code_bytes = 0;       // per token
  uint64_t sample_tokens = 0;  // trained on
  double train_mse = 0;        // mean squared reconstruction error per token
  uint64_t encoded = 0;        // documents whose codes it wrote
  double train_seconds = 0;
  double encode_seconds = 0;
  // Keeping only codes: compacting away the rows the encoding dropped.
  double compact_seconds = 0;
};

// What TrainEncoder did.
struct EncoderTrainingResult {
  text::TrainingStats training;
  uint64_t version = 0;
  uint64_t reencoded = 0;  // documents (re-)encoded with the new encoder
  double reencode_seconds = 0;
};

class Collection {
 public:
  // Creates a collection in directory `path` (which must not exist).
  static absl::StatusOr<std::unique_ptr<Collection>> Create(const std::string& path,
                                                            const CollectionConfig& config,
                                                            const CollectionOptions& options);
  // Opens the collection in `path`: loads the ANN snapshot and adds what was
  // written after it, or rebuilds the index when the snapshot is missing,
  // corrupt or of another configuration.
  static absl::StatusOr<std::unique_ptr<Collection>> Open(const std::string& path,
                                                          const CollectionOptions& options);

  // Stops a background rebuild (it is redone when needed after the next
  // Open) and writes a final ANN snapshot (unless DiscardOnClose was called).
  ~Collection();

  const CollectionConfig& config() const { return store_->config(); }

  // Inserts or replaces `docs` atomically. Errors name the field, as in
  // "documents[3].pooled: expected 128 values, got 12"; on error nothing is
  // stored. Returns the number of documents written.
  //
  // A document with text and no vectors is encoded by the built-in encoder;
  // before the encoder is trained it is stored awaiting it (not searchable
  // until TrainEncoder).
  absl::StatusOr<uint64_t> Upsert(std::vector<Document> docs);

  // Deletes documents by external id; unknown ids are reported.
  absl::StatusOr<DeleteResult> Delete(const std::vector<std::string>& ids);

  // Fetches documents by external id.
  absl::StatusOr<GetResult> Get(const std::vector<std::string>& ids, bool include_vectors) const;

  // BM25 over the live documents' texts (the collection's LexicalIndex):
  // the best `k` as (id, score), best first. INVALID_ARGUMENT for invalid
  // UTF-8; UNAVAILABLE while the lexical index is out of use (an I/O error
  // stopped it; it is rebuilt at the next open).
  absl::StatusOr<std::vector<std::pair<std::string, double>>> LexicalSearch(std::string_view text,
                                                                            size_t k) const;

  // Runs the search pipeline. DEADLINE_EXCEEDED (and no further work) once
  // `deadline` has passed.
  absl::StatusOr<SearchResult> Search(SearchQuery query,
                                      absl::Time deadline = absl::InfiniteFuture()) const;

  CollectionStats Stats() const;

  // Writes an ANN snapshot now.
  absl::Status SaveSnapshot();

  // Writes a consistent copy of the collection into `dir`, which must not
  // exist: a checkpoint of the store (DocStore::Checkpoint) and the current
  // ANN snapshot file, which never holds a label the checkpoint lacks, so
  // Open(dir) loads the snapshot and adds the rest from the store. Writes
  // wait while the copy is taken (hard links on the same file system);
  // searches go on. (collection_backup.cc)
  absl::Status Backup(const std::string& dir);

  // Reads the whole store and checks its checksums (DocStore::VerifyChecksums):
  // DATA_LOSS naming the damage.
  absl::Status VerifyChecksums() const { return store_->VerifyChecksums(); }

  // Makes every acknowledged write durable even without a synced WAL
  // (StorageOptions::ForBulkLoad): flushes the store.
  absl::Status Flush();

  // Adds every stored document the ANN and filter indexes do not hold yet
  // (after a defer_index load) and writes a snapshot. Returns how many.
  absl::StatusOr<uint64_t> BuildIndex();

  // Rebuilds the ANN index from the live documents now, as the background
  // rebuild does (see CollectionOptions::rebuild_tombstone_ratio): the new
  // index is built without blocking searches or writes, then writes made
  // meanwhile are added under the writer mutex, the index is swapped in and
  // a snapshot is written. Waits for a rebuild already running, then runs
  // its own. FAILED_PRECONDITION with defer_index (BuildIndex first).
  absl::Status RebuildIndex();

  // Chooses the ANN search knob for a recall target and makes it the
  // collection's default: the smallest efSearch (HNSW) or nprobe (IVF) whose
  // mean recall@k reaches `target_recall` when `sample` of the index's own
  // vectors, held out of a copy of the index, are searched as queries (see
  // AnnIndex::Tune; it costs about one index build). The choice is stored
  // durably in the store (with the target, k and the recall reached), loaded
  // on Open and kept across index rebuilds; a Search that gives no
  // ann_params uses it, one that gives ann_params uses its own instead.
  // When no value up to the widest tried reaches the target, the widest is
  // chosen (sample_recall tells). Tuning again replaces the choice.
  //
  // With candidates_from centroids, once its first stage serves, the
  // first stage's probe is tuned for the same target too (see
  // IndexTuningResult::probe), on min(sample, kMaxFirstStageTuneSample)
  // documents, and both knobs are stored as one ann_params.
  //
  // It measures the vectors the ANN index holds (with defer_index, call
  // BuildIndex first). An index that searches exactly (Flat, untrained IVF)
  // has nothing to tune: the result's knob is empty and nothing is stored.
  //
  // Writes (and the swap at the end of a background rebuild) wait while it
  // runs; searches go on against the index being tuned.
  //
  // INVALID_ARGUMENT naming `target_recall` (outside (0, 1]), `k` (outside
  // 1..kMaxTuneK) or `sample` (outside 1..kMaxTuneSample);
  // FAILED_PRECONDITION when the index holds fewer than k + 2 vectors.
  absl::StatusOr<IndexTuningResult> TuneIndex(double target_recall, uint32_t k = 10,
                                              uint32_t sample = 1000);

  // The stored tuning, if TuneIndex chose one.
  std::optional<AnnTuning> tuning() const;

  // Trains the built-in encoder on the text of every live document, stores
  // it durably as the next version, then encodes with it every live
  // document whose vectors the encoder owns (text-only documents, awaiting
  // or encoded by an earlier version); client vectors are left alone. Writes
  // wait meanwhile; searches go on. The options' dimensions are derived from
  // the collection's dim (semantic ≈ 3/8, lexical the rest, 1 for the
  // saturation coordinate). A crash midway is finished by the next Open.
  absl::StatusOr<EncoderTrainingResult> TrainEncoder(text::EncoderOptions options);

  // The built-in encoder (null until trained) and its version.
  std::shared_ptr<const text::Encoder> encoder(uint64_t* version = nullptr) const;

  // Trains the collection's token codec (config().token_codec, residual) on
  // a sample of its stored tokens (FAISS k-means for the centroids, or the
  // encoder's vocabulary in a text collection with centroids 0), stores
  // it durably as the next version, then encodes every live document with
  // it: the codes are written to the store and replace the document's rows
  // in the token arena, batch by batch, while searches and writes go on
  // (writes wait only for a batch's hand-over). A crash midway is finished
  // after the next Open, in the background. Waits for a training that
  // runs (e.g. the automatic one, config().token_codec.train_after).
  // FAILED_PRECONDITION naming token_codec when the collection's codec is
  // rows, when it holds too few tokens to train the centroids, or when it
  // keeps only codes (keep_full_precision off) and is trained already.
  absl::StatusOr<CodecTrainingResult> TrainCodec();
  // Encodes, with the current codec, every live document that has no codes
  // of it (what a crash or a load after training left), as TrainCodec's
  // second half; nothing to do without a trained codec.
  absl::StatusOr<CodecTrainingResult> FinishCodec();
  // The trained token codec, null until trained.
  std::shared_ptr<const TokenCodecState> codec() const;
  // While a retrained codec re-encodes the collection, the one before it
  // (the documents not yet re-encoded hold its codes); else null.
  std::shared_ptr<const TokenCodecState> previous_codec() const;

  // The built-in encoder's dimensions for a collection of dimension `dim`.
  static absl::Status DeriveEncoderDims(uint32_t dim, text::EncoderOptions* options);

  // The collection is being dropped: skip the final snapshot and abandon a
  // rebuild.
  void DiscardOnClose() {
    discard_on_close_ = true;
    stopping_ = true;
    index_.Stop();
  }
  // ABORTED once DiscardOnClose was called: a long call (TrainEncoder's
  // re-encoding) stops there.
  absl::Status CheckNotDropped() const {
    if (!discard_on_close_) return absl::OkStatus();
    return absl::AbortedError("the collection was dropped");
  }

 private:
  Collection(std::string path, std::unique_ptr<DocStore> store, std::unique_ptr<Reranker> reranker,
             const CollectionOptions& options);
  absl::Status LoadDerivedState();
  // TuneIndex's part for the centroid first stage: fills result->probe and
  // its recall. REQUIRES: it serves.
  absl::Status TuneFirstStage(double target_recall, uint32_t k, uint32_t sample,
                              IndexTuningResult* result) const;
  // Adds stored documents with labels >= from to the ANN index (when
  // add_vectors) and those >= metadata_from to the filter index; returns how
  // many vectors were added. REQUIRES: both writer mutexes (or
  // construction).
  absl::StatusOr<uint64_t> CatchUp(Label from, Label metadata_from, bool add_vectors)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_, index_mu_);
  absl::Status PrepareDocument(size_t index, const text::Encoder* encoder, uint64_t encoder_version,
                               Document* doc) const;
  // A batch committed to the store and not yet to the indexes.
  struct StoreCommit {
    Label first = 0;                // the batch's first label
    std::vector<Label> superseded;  // labels the batch replaced
    // Per document of the batch, the label it replaced, if any.
    std::vector<std::optional<Label>> previous;
    std::vector<Label> labels;       // those with vectors, for the ANN index
    std::vector<float> vectors;      // their index vectors (IndexVectors)
    std::vector<std::string> codes;  // per document: its codes record, or empty
  };
  // Commits prepared documents to the store (labels from next_label()); with
  // `defer_sync` the caller syncs it (DocStore::Commit). REQUIRES: write_mu_
  // held, the store not stopped (RecoverStore).
  absl::StatusOr<StoreCommit> CommitToStore(const std::vector<Document>& docs,
                                            bool defer_sync = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Brings the indexes up to date with a batch CommitToStore committed, in
  // commit order, and purges what it replaced. REQUIRES: index_mu_ held.
  absl::Status CommitToIndex(const std::vector<Document>& docs, const StoreCommit& commit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // Both of the above. REQUIRES: both writer mutexes.
  absl::Status CommitPrepared(std::vector<Document>& docs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_, index_mu_);
  // Purges the data of superseded labels (DocStore::Purge) once the index
  // has dropped them; a failure is logged (the next RecoverStore or Open
  // purges them). REQUIRES: index_mu_ held.
  void PurgeSuperseded(const std::vector<Label>& labels) ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // REQUIRES: both writer mutexes. Reopens a store whose writes stopped
  // after an I/O error (DocStore::Recover) and brings the ANN, filter and
  // tombstone state up to date with a failed batch the reopen may have
  // applied. Every write path calls it before choosing labels or writing.
  absl::Status RecoverStore() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_, index_mu_);
  // Encodes with the current encoder every live document below `below`
  // that the encoder owns. REQUIRES: both writer mutexes.
  absl::StatusOr<uint64_t> Reencode(Label below)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_, index_mu_);
  // Adds to the token arena the stored matrices of labels >= from that the
  // index searches (not tombstoned) and the arena lacks. At Open, when the
  // budget refuses, counts the rest and names the sizes. REQUIRES:
  // index_mu_ (or construction).
  absl::Status LoadArena(Label from) ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // Adds a committed batch's new matrices to the arena (a refusal is
  // logged: those documents' searches read the store).
  // Holds the live documents' codes of the current codec from label `from`
  // on in its centroid first stage, if it has one.
  absl::Status LoadFirstStage(Label from);
  // Whether searches may take candidates from the centroid first stage:
  // the codec has one and every live document holds its codes.
  bool FirstStageReady() const;
  void AddToArena(const std::vector<Document>& docs, const StoreCommit& commit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  void RemoveFromArena(const std::vector<Label>& labels) ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // TrainEncoder's work (it takes the writer locks), before the codec's.
  absl::StatusOr<EncoderTrainingResult> TrainAndReencode(text::EncoderOptions options)
      ABSL_LOCKS_EXCLUDED(write_mu_, index_mu_);
  // Loads the stored token codec.
  absl::Status LoadCodec();
  // The codec's work: trains it when `train` (else only re-encodes), then
  // encodes every live document whose codes are not of the current
  // version. REQUIRES: codec_run_mu_.
  absl::StatusOr<CodecTrainingResult> RunCodec(bool train)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(codec_run_mu_) ABSL_LOCKS_EXCLUDED(write_mu_, index_mu_);
  // A codec whose centroids are an older encoder's vocabulary, in a
  // collection that keeps the rows to train a new one on.
  bool CodecIsStale() const;
  // Starts the background codec thread for a re-encoding (after Open) or
  // the automatic training, when one is due and none runs.
  void MaybeStartCodecWork(bool train);
  // Loads the stored encoder and finishes an interrupted re-encoding.
  absl::Status LoadEncoder();
  // Loads the stored ANN tuning.
  absl::Status LoadTuning();
  // The ANN knobs of a search that gives none: the tuned ones, else the
  // index's defaults.
  AnnSearchParams DefaultSearchParams() const;
  // INVALID_ARGUMENT when a Get or Delete names more ids than a batch may.
  absl::Status CheckIdCount(size_t n) const;
  // Opens the lexical index, rebuilding it from the store unless a clean
  // close left it current (its applied() is the store's next label).
  // REQUIRES: both writer mutexes (or construction).
  absl::Status LoadLexical() ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // Indexes a committed batch's texts (documents[i] at first + i, in place
  // of previous[i] when the batch replaced one: moved without indexing again
  // when its text is the same) and drops `dropped` (what the batch
  // superseded, or the deleted labels). A failure stops the lexical index
  // until the next open (logged; the store stays the truth). REQUIRES:
  // index_mu_.
  void LexicalApply(const std::vector<Document>& docs, Label first,
                    const std::vector<std::optional<Label>>& previous,
                    const std::vector<Label>& dropped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // Indexes the live stored texts of labels >= from into `index`; returns
  // how many. REQUIRES: index_mu_ (or construction).
  absl::StatusOr<uint64_t> LexicalCatchUp(LexicalIndex* index, Label from)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // The lexical index, or null when an error stopped it.
  std::shared_ptr<LexicalIndex> lexical() const;

  const std::string path_;
  const std::unique_ptr<DocStore> store_;
  const std::unique_ptr<Reranker> reranker_;
  const CollectionOptions options_;
  std::atomic<bool> discard_on_close_{false};

  // Serialises writers: label assignment and commit to the store.
  absl::Mutex write_mu_;
  // Orders changes to the derived state (the ANN and filter indexes, the
  // tombstones): LiveIndex's writer mutex. Taken after write_mu_. An Upsert
  // takes it before letting go of write_mu_ and updates the indexes under it
  // alone, so the next Upsert commits to the store meanwhile; every other
  // writer holds both.
  absl::Mutex index_mu_ ABSL_ACQUIRED_AFTER(write_mu_);

  // The built-in encoder (null until trained) and its version.
  mutable absl::Mutex encoder_mu_;
  std::shared_ptr<const text::Encoder> encoder_ ABSL_GUARDED_BY(encoder_mu_);
  uint64_t encoder_version_ ABSL_GUARDED_BY(encoder_mu_) = 0;

  // The trained token codec (null until trained).
  mutable absl::Mutex codec_mu_;
  std::shared_ptr<const TokenCodecState> codec_ ABSL_GUARDED_BY(codec_mu_);
  // The codec before it, while the collection is re-encoded (else null).
  std::shared_ptr<const TokenCodecState> previous_codec_ ABSL_GUARDED_BY(codec_mu_);
  // One codec job at a time (TrainCodec, the background thread).
  absl::Mutex codec_run_mu_ ABSL_ACQUIRED_BEFORE(write_mu_);
  std::thread codec_thread_;  // started and joined under codec_thread_mu_
  absl::Mutex codec_thread_mu_;
  std::atomic<bool> codec_thread_busy_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> codec_pending_{0};
  // The encoder version whose automatic codec retraining failed (0: none).
  std::atomic<uint64_t> stale_retrain_failed_{0};

  // The tuned ANN knobs (TuneIndex), parsed; unset until tuned.
  mutable absl::Mutex tuning_mu_;
  std::optional<AnnTuning> tuning_ ABSL_GUARDED_BY(tuning_mu_);
  AnnSearchParams tuned_params_ ABSL_GUARDED_BY(tuning_mu_);

  // The token matrices of searchable documents (null with token_arena
  // off); changed under index_mu_, before the index adds a label and after
  // it drops one.
  const std::unique_ptr<TokenArena> arena_;
  // The ANN index and the tombstones (its own reader/writer lock; changes
  // under index_mu_).
  LiveIndex index_;
  // The metadata filters' index (its own lock).
  FilterIndex filter_;
  // BM25 over the texts (<path>/lexical; its own lock; changes under
  // index_mu_). Derived state: rebuilt from the store at an open that finds
  // it missing, damaged or not current. Null once an error stopped it.
  mutable absl::Mutex lexical_mu_;
  std::shared_ptr<LexicalIndex> lexical_ ABSL_GUARDED_BY(lexical_mu_);
  // The search, over the parts above.
  const SearchPipeline search_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_COLLECTION_H_
