// LiveIndex: one collection's ANN index over its live documents' index
// vectors (their pooled vectors, or their FDEs: engine/index_vectors.h), with the tombstones of
// deleted and superseded labels, the index's snapshots and its background rebuild. It is derived
// state: the store is the truth, and Load + CatchUp rebuild it from there.
//
//   - Searches filter the tombstones out inside the ANN search, so a delete
//     or an overwrite takes effect at once; the index keeps the dead vectors
//     until a rebuild.
//   - Background insertion (background_insert, the default): a write hands
//     its vectors over and returns; an inserter thread links them into the
//     graph in chunks. Until then they wait in a pending list that every
//     search scores exactly, so a write is searchable as soon as it returns.
//     A write that finds max_pending vectors waiting waits for the inserter.
//   - Rebuild: once the dead vectors the index holds reach
//     rebuild_tombstone_ratio of it (and rebuild_min_tombstones), a
//     background thread builds a fresh index from the store's live vectors
//     with no lock held, then, under the writer mutex, adds what was
//     committed meanwhile, swaps it in, saves a snapshot and drops the
//     store's tombstone records of labels the new snapshot no longer holds.
//   - Snapshots: written every snapshot_every added vectors, after a
//     rebuild, and when asked (close, BuildIndex), by an atomic rename. They
//     hold the graph; what was pending is caught up from the store at open.
//
// Thread safety: two reader/writer locks. The graph lock guards the ANN
// graph's contents: searches share it; the inserter, CatchUp and the
// rebuild's swap hold it exclusively. The state lock guards the tombstones,
// the pending list and which labels the index holds: searches and stats
// share it; Apply and the inserter's hand-over hold it exclusively, so a
// search sees each change whole. The graph lock is taken first. Every
// change is also serialised by the collection's writer mutex (given at
// construction), except the inserter's: the methods that say so REQUIRE it.
#ifndef ATTNSEARCH_ENGINE_LIVE_INDEX_H_
#define ATTNSEARCH_ENGINE_LIVE_INDEX_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ann/ann_index.h"
#include "core/label_bitmap.h"
#include "engine/index_vectors.h"
#include "storage/doc_store.h"

namespace attnsearch {

struct LiveIndexOptions {
  AnnOptions ann;
  // Write a snapshot once this many vectors were added since the last one
  // (0: only when asked). Default: 100000.
  size_t snapshot_every = 100000;
  // Rebuild when the dead vectors held reach this share of the index (0:
  // never) and at least rebuild_min_tombstones. Defaults: 0.2 and 1000.
  double rebuild_tombstone_ratio = 0.2;
  size_t rebuild_min_tombstones = 1000;
  // A bulk load adds vectors only at BuildIndex: no background rebuild.
  // Default: false.
  bool defer_index = false;
  // Link added vectors into the graph on a background thread, so that a
  // write need not wait for it (searches score them exactly meanwhile).
  // false: Apply links them itself. Default: true.
  bool background_insert = true;
  // Most vectors waiting for the inserter: a write that finds more waits
  // until it has caught up to this. Bounds the exact part of a search.
  // Default: 20000.
  size_t max_pending = 20000;
  // Vectors the inserter links per hold of the graph lock (searches wait
  // for one chunk at most), at up to 256 values a vector; wider ones go in
  // proportionally smaller chunks. Default: 256.
  size_t insert_chunk = 256;
};

class LiveIndex {
 public:
  // The index of the collection in `dir` (its snapshot is dir/ann.snapshot)
  // over `store`. `writer_mu` orders changes to the index (the methods that
  // need it say so); `store_writer_mu` orders commits to the store and is
  // taken before `writer_mu`: the background rebuild holds both while it
  // reads the store's last label and swaps the index in, so that every
  // label committed by then was also handed to the index. `store`,
  // `writer_mu` and `store_writer_mu` must outlive it.
  LiveIndex(DocStore* store, std::string dir, const LiveIndexOptions& options,
            absl::Mutex* writer_mu, absl::Mutex* store_writer_mu);
  // Stops a background rebuild. Saves nothing.
  ~LiveIndex();
  LiveIndex(const LiveIndex&) = delete;
  LiveIndex& operator=(const LiveIndex&) = delete;

  // Loads the store's tombstones (those whose purge is pending also into
  // *purge_pending) and the snapshot; a snapshot that is missing, corrupt,
  // of another configuration or newer than the store leaves an empty index
  // (with a warning unless it was missing). Returns the first label the
  // index lacks: CatchUp from there. REQUIRES: the writer mutex.
  absl::StatusOr<Label> Load(std::vector<Label>* purge_pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(*writer_mu_);

  // Adds the store's vectors of labels >= `from` (a vector that is not
  // finite, which only an older version could store, is left out with a
  // warning). Returns how many. REQUIRES: the writer mutex.
  absl::StatusOr<uint64_t> CatchUp(Label from) ABSL_EXCLUSIVE_LOCKS_REQUIRED(*writer_mu_);

  // One committed change, seen whole by searches: tombstones `dead`, adds
  // `labels` with their index vectors (labels.size() x vectors().dim()) and runs
  // `also` (the filter index's update), all under the exclusive lock; with
  // background_insert the vectors join the pending list, and the call waits
  // while more than max_pending are pending. Then writes a snapshot when
  // snapshot_every is reached (a failure is logged) and starts a rebuild
  // when the tombstones reach the threshold. An error of the add (with
  // background_insert: the inserter's last error, until a rebuild clears
  // it) is returned, saying what became of the change: durable in the store
  // either way, with background_insert also searchable (scored exactly);
  // the next open links it. REQUIRES: the writer mutex.
  absl::Status Apply(const std::vector<Label>& dead, const std::vector<Label>& labels,
                     const std::vector<float>& pooled, const std::function<void()>& also = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(*writer_mu_);

  // Tells the lock checker that the writer mutex is held: it is the
  // collection's, locked under its own name there. Checks it in debug
  // builds.
  void AssertWriterHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK(*writer_mu_) {
    writer_mu_->AssertHeld();
  }

  // Writes the snapshot now. REQUIRES: the writer mutex.
  absl::Status SaveSnapshot() ABSL_EXCLUSIVE_LOCKS_REQUIRED(*writer_mu_);
  // Whether vectors were added since the last snapshot. REQUIRES: the
  // writer mutex.
  bool changed_since_snapshot() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(*writer_mu_) {
    return added_since_snapshot_ > 0;
  }
  const std::string& snapshot_path() const { return snapshot_path_; }
  // What the index holds per document, and how a query is encoded for it.
  const IndexVectors& vectors() const { return vectors_; }

  // The first label after every one the index holds or has pending.
  Label next_unindexed() const;

  // Links every pending vector into the graph now (TuneIndex and CatchUp
  // do, so that they see the whole index).
  absl::Status Drain() ABSL_LOCKS_EXCLUDED(graph_mu_, mu_);

  // The ANN stage of a search, under the shared lock. `prelude` runs first
  // under that lock (a search takes its store view there, so that every
  // label it gets back is readable in that view); then up to `k` nearest
  // live labels, admitted by the labels `matches` returns when given (a
  // filter's, evaluated under the same lock, so that it agrees with the
  // tombstones; they are removed here).
  absl::Status Search(const float* query, uint32_t k, const AnnSearchParams& params,
                      const std::function<LabelBitmap()>& matches,
                      const std::function<absl::Status()>& prelude,
                      std::vector<AnnNeighbor>* out) const;

  bool IsTombstoned(Label label) const;

  // AnnIndex::Tune over the index, under the shared lock.
  absl::StatusOr<AnnTuneResult> Tune(double target_recall, uint32_t k, uint32_t sample) const;

  struct Stats {
    uint64_t vectors = 0;     // vectors the index holds, pending ones included
    uint64_t tombstones = 0;  // of them, dead
    uint64_t pending = 0;     // of them, waiting for the inserter
    bool rebuild_in_progress = false;
    uint64_t rebuilds = 0;  // since construction
  };
  Stats stats() const;

  // Rebuilds now, as the background rebuild does; waits for one running.
  // FAILED_PRECONDITION with defer_index. REQUIRES: the writer mutex not
  // held.
  absl::Status Rebuild() ABSL_LOCKS_EXCLUDED(*writer_mu_);

  // Starts the background rebuild when the dead vectors reach the threshold
  // (Apply calls it; Open, after CatchUp). REQUIRES: the writer mutex.
  void MaybeScheduleRebuild() ABSL_EXCLUSIVE_LOCKS_REQUIRED(*writer_mu_);

  // The collection is being dropped or closed: no rebuild starts, one
  // running stops between batches and saves nothing; the inserter stops
  // after its chunk (what is pending is linked at the next open).
  void Stop();

 private:
  // REQUIRES: mu_ held exclusively, and the writer mutex.
  void Tombstone(Label label) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_, *writer_mu_);
  // Whether `label` is pending.
  bool IsPending(Label label) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  size_t pending_count() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return pending_labels_.size() - pending_begin_;
  }
  // Adds `labels` to `index` (the graph, or a fresh one) and records them
  // as held. REQUIRES: graph_mu_ held exclusively.
  absl::Status AddToGraph(AnnIndex* index, const std::vector<Label>& labels,
                          const std::vector<float>& vectors)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(graph_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Links up to `limit` pending vectors (0: all). REQUIRES: graph_mu_
  // held exclusively.
  absl::Status LinkPending(size_t limit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(graph_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Scores the pending vectors admitted (by `admitted` when given, else not
  // tombstoned) and merges the best into `out` (best first, at most k).
  void SearchPending(const float* query, uint32_t k, const LabelBitmap* admitted,
                     std::vector<AnnNeighbor>* out) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void InsertThread();
  // Vectors per chunk the inserter links (see insert_chunk).
  static constexpr uint32_t kChunkDim = 256;
  size_t InsertChunk() const;
  void StartInserter();
  // Await conditions, evaluated under mu_.
  bool InserterHasWork() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool PendingWithinLimit() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Dead labels `index` holds.
  uint64_t CountTombstonesIn(const AnnIndex& index) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // held_ := the labels `index` holds.
  void HoldLabelsOf(const AnnIndex& index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a stored vector may enter an index (see CatchUp).
  bool Usable(Label label, const float* v) const;
  void RebuildThread();
  // compact_always: compact the store after it always (an explicit Rebuild), or
  // at most once a kMinCompactionInterval (a background one).
  absl::Status RebuildLocked(bool compact_always) ABSL_EXCLUSIVE_LOCKS_REQUIRED(rebuild_run_mu_)
      ABSL_LOCKS_EXCLUDED(*writer_mu_);
  // Drops the store's tombstone records of labels the index does not hold.
  // REQUIRES: the writer mutex, the snapshot saved.
  absl::Status DropTombstoneRecords() ABSL_EXCLUSIVE_LOCKS_REQUIRED(*writer_mu_);

  DocStore* const store_;
  const std::string dir_;
  const std::string snapshot_path_;
  const LiveIndexOptions options_;
  const IndexVectors vectors_;
  absl::Mutex* const writer_mu_;
  absl::Mutex* const store_writer_mu_;
  mutable std::atomic<bool> warned_nonfinite_{false};

  // The graph lock (taken before mu_) guards what ann_ points to; mu_
  // guards the pointer (replaced holding both).
  mutable absl::Mutex graph_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::unique_ptr<AnnIndex> ann_ ABSL_GUARDED_BY(mu_) ABSL_PT_GUARDED_BY(graph_mu_);
  // The labels ann_ holds.
  LabelBitmap held_ ABSL_GUARDED_BY(mu_);
  // Vectors stored but not yet in ann_, labels increasing and above every
  // label it holds; entries before pending_begin_ are linked already.
  std::vector<Label> pending_labels_ ABSL_GUARDED_BY(mu_);
  std::vector<float> pending_vectors_ ABSL_GUARDED_BY(mu_);
  size_t pending_begin_ ABSL_GUARDED_BY(mu_) = 0;
  // The inserter's last error (it then stops until a rebuild clears it).
  absl::Status insert_error_ ABSL_GUARDED_BY(mu_);
  std::once_flag inserter_started_;
  std::thread insert_thread_;
  // Every deleted or superseded label.
  LabelBitmap tombstones_ ABSL_GUARDED_BY(mu_);
  // How many of them ann_ holds or has pending.
  uint64_t ann_tombstones_ ABSL_GUARDED_BY(mu_) = 0;
  // Those whose tombstone record the store still keeps.
  LabelBitmap tombstone_records_ ABSL_GUARDED_BY(*writer_mu_);
  size_t added_since_snapshot_ ABSL_GUARDED_BY(*writer_mu_) = 0;

  // The background rebuild: one thread, started on the first need.
  absl::Mutex rebuild_mu_;  // the request state below
  absl::CondVar rebuild_cv_;
  bool rebuild_requested_ ABSL_GUARDED_BY(rebuild_mu_) = false;
  std::thread rebuild_thread_;
  std::atomic<bool> stop_{false};
  absl::Mutex rebuild_run_mu_;  // one rebuild at a time
  std::atomic<bool> rebuild_in_progress_{false};
  std::atomic<uint64_t> rebuilds_{0};
  // When the store was last compacted after a rebuild (none: the epoch).
  std::chrono::steady_clock::time_point last_compaction_ ABSL_GUARDED_BY(rebuild_run_mu_);
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_LIVE_INDEX_H_
