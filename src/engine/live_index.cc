#include "engine/live_index.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ann/simd_distance.h"
#include "core/file_sync.h"
#include "core/log.h"
#include "core/status.h"
#include "core/vector_math.h"

namespace attnsearch {
namespace {

constexpr size_t kScanBatch = 4096;

// The least time between two compactions of the store after background
// rebuilds (see RebuildLocked).
constexpr std::chrono::seconds kMinCompactionInterval{60};

// Collects stored vectors in batches of kScanBatch into an index.
class Batcher {
 public:
  Batcher(AnnIndex* index, uint32_t dim) : index_(index), dim_(dim) {}
  absl::Status Take(Label l, const float* v) {
    labels_.push_back(l);
    vectors_.insert(vectors_.end(), v, v + dim_);
    return labels_.size() >= kScanBatch ? Flush() : absl::OkStatus();
  }
  absl::Status Flush() {
    ATTN_RETURN_IF_ERROR(index_->Add(labels_.data(), vectors_.data(), labels_.size()));
    added_ += labels_.size();
    labels_.clear();
    vectors_.clear();
    return absl::OkStatus();
  }
  uint64_t added() const { return added_; }

 private:
  AnnIndex* const index_;
  const uint32_t dim_;
  std::vector<Label> labels_;
  std::vector<float> vectors_;
  uint64_t added_ = 0;
};

}  // namespace

LiveIndex::LiveIndex(DocStore* store, std::string dir, const LiveIndexOptions& options,
                     absl::Mutex* writer_mu, absl::Mutex* store_writer_mu)
    : store_(store),
      dir_(std::move(dir)),
      snapshot_path_(dir_ + "/ann.snapshot"),
      options_(options),
      vectors_(store->config()),
      writer_mu_(writer_mu),
      store_writer_mu_(store_writer_mu) {}

size_t LiveIndex::InsertChunk() const {
  // Linking a vector costs about its dimension: wider vectors (FDEs) go in
  // smaller chunks, so that a search waits no longer for the graph lock.
  const size_t chunk = std::max<size_t>(options_.insert_chunk, 1);
  const uint32_t dim = vectors_.dim();
  return dim <= kChunkDim ? chunk : std::max<size_t>(1, chunk * kChunkDim / dim);
}

LiveIndex::~LiveIndex() {
  Stop();
  if (rebuild_thread_.joinable()) rebuild_thread_.join();
  if (insert_thread_.joinable()) insert_thread_.join();
}

void LiveIndex::Stop() {
  {
    absl::MutexLock lock(&rebuild_mu_);
    stop_ = true;
  }
  rebuild_cv_.SignalAll();
  // Wakes the inserter and writes waiting for it: their conditions are
  // evaluated again when mu_ is released.
  absl::MutexLock lock(&mu_);
}

absl::StatusOr<Label> LiveIndex::Load(std::vector<Label>* purge_pending) {
  const CollectionConfig& config = store_->config();
  ATTN_ASSIGN_OR_RETURN(std::vector<Label> dead, store_->Tombstones(purge_pending));
  auto loaded = AnnIndex::Load(snapshot_path_, config.ann_spec, vectors_.dim(), options_.ann);
  if (loaded.ok() && (*loaded)->has_labels() && (*loaded)->max_label() >= store_->next_label()) {
    // A snapshot newer than the store (e.g. a store restored from an older
    // copy beside a newer snapshot) would index labels the store lacks.
    loaded = absl::FailedPreconditionError(
        absl::StrCat(snapshot_path_, " holds label ", (*loaded)->max_label(),
                     " but the store has assigned labels only below ", store_->next_label()));
  }
  if (!loaded.ok()) {
    if (!absl::IsNotFound(loaded.status())) {
      LogWarn("rebuilding the ANN index from the store",
              {{"collection", dir_}, {"reason", loaded.status().message()}});
    }
    ATTN_ASSIGN_OR_RETURN(loaded, AnnIndex::Create(config.ann_spec, vectors_.dim(), options_.ann));
  }
  absl::WriterMutexLock graph_lock(&graph_mu_);
  absl::WriterMutexLock lock(&mu_);
  ann_ = std::move(loaded).value();
  HoldLabelsOf(*ann_);
  pending_labels_.clear();
  pending_vectors_.clear();
  pending_begin_ = 0;
  for (Label l : dead) Tombstone(l);
  ann_tombstones_ = CountTombstonesIn(*ann_);
  added_since_snapshot_ = 0;
  return ann_->has_labels() ? ann_->max_label() + 1 : 0;
}

absl::StatusOr<uint64_t> LiveIndex::CatchUp(Label from) {
  // What is pending comes first (labels increase); the writer mutex, held,
  // keeps more from arriving.
  ATTN_RETURN_IF_ERROR(Drain());
  AnnIndex* index;
  {
    absl::ReaderMutexLock lock(&mu_);
    index = ann_.get();  // replaced only under the writer mutex, which is held
  }
  // Each batch is added under the exclusive graph lock, which searches share.
  std::vector<Label> labels;
  std::vector<float> vectors;
  uint64_t added = 0;
  const uint32_t dim = vectors_.dim();
  auto flush = [&]() -> absl::Status {
    absl::WriterMutexLock graph_lock(&graph_mu_);
    ATTN_RETURN_IF_ERROR(AddToGraph(index, labels, vectors));
    added += labels.size();
    labels.clear();
    vectors.clear();
    return absl::OkStatus();
  };
  ATTN_RETURN_IF_ERROR(vectors_.Scan(*store_, from, [&](Label l, const float* v) {
    if (!Usable(l, v)) return absl::OkStatus();
    labels.push_back(l);
    vectors.insert(vectors.end(), v, v + dim);
    return labels.size() >= kScanBatch ? flush() : absl::OkStatus();
  }));
  ATTN_RETURN_IF_ERROR(flush());
  added_since_snapshot_ += added;
  return added;
}

absl::Status LiveIndex::Apply(const std::vector<Label>& dead, const std::vector<Label>& labels,
                              const std::vector<float>& pooled, const std::function<void()>& also) {
  absl::Status added;
  if (!options_.background_insert) {
    absl::WriterMutexLock graph_lock(&graph_mu_);
    absl::WriterMutexLock lock(&mu_);
    for (Label l : dead) Tombstone(l);
    if (also) also();
    if (!labels.empty()) added = ann_->Add(labels.data(), pooled.data(), labels.size());
    if (added.ok()) {
      for (Label l : labels) held_.Set(l);
    } else {
      added = Annotate(added, "stored, but not yet searchable");
    }
  } else {
    if (!labels.empty()) StartInserter();
    absl::WriterMutexLock lock(&mu_);
    for (Label l : dead) Tombstone(l);
    if (also) also();
    pending_labels_.insert(pending_labels_.end(), labels.begin(), labels.end());
    pending_vectors_.insert(pending_vectors_.end(), pooled.begin(), pooled.end());
    // Waiting releases mu_: searches and the inserter go on meanwhile.
    mu_.Await(absl::Condition(this, &LiveIndex::PendingWithinLimit));
    if (!insert_error_.ok()) {
      added = Annotate(insert_error_,
                       "stored and searchable (scored exactly), but not linked into the ANN "
                       "graph until a rebuild");
    }
  }
  ATTN_RETURN_IF_ERROR(added);
  added_since_snapshot_ += labels.size();
  MaybeScheduleRebuild();
  if (options_.snapshot_every > 0 && added_since_snapshot_ >= options_.snapshot_every) {
    absl::Status s = SaveSnapshot();
    if (!s.ok()) LogWarn("ANN snapshot not saved", {{"collection", dir_}, {"error", s.message()}});
  }
  return absl::OkStatus();
}

absl::Status LiveIndex::SaveSnapshot() {
  absl::ReaderMutexLock graph_lock(&graph_mu_);
  absl::ReaderMutexLock lock(&mu_);
  ATTN_RETURN_IF_ERROR(ann_->Save(snapshot_path_));
  added_since_snapshot_ = 0;
  return absl::OkStatus();
}

Label LiveIndex::next_unindexed() const {
  absl::ReaderMutexLock graph_lock(&graph_mu_);
  absl::ReaderMutexLock lock(&mu_);
  if (pending_count() > 0) return pending_labels_.back() + 1;
  return ann_->has_labels() ? ann_->max_label() + 1 : 0;
}

absl::Status LiveIndex::Drain() {
  absl::WriterMutexLock graph_lock(&graph_mu_);
  return LinkPending(0);
}

absl::Status LiveIndex::AddToGraph(AnnIndex* index, const std::vector<Label>& labels,
                                   const std::vector<float>& vectors) {
  ATTN_RETURN_IF_ERROR(index->Add(labels.data(), vectors.data(), labels.size()));
  absl::WriterMutexLock lock(&mu_);
  for (Label l : labels) held_.Set(l);
  return absl::OkStatus();
}

absl::Status LiveIndex::LinkPending(size_t limit) {
  std::vector<Label> labels;
  std::vector<float> vectors;
  AnnIndex* index;
  {
    // Only holders of the graph lock take pending vectors away, so the
    // first n stay as they are while it is held; writes append behind them.
    absl::ReaderMutexLock lock(&mu_);
    const size_t n = limit == 0 ? pending_count() : std::min(limit, pending_count());
    if (n == 0) return absl::OkStatus();
    const size_t dim = vectors_.dim();
    labels.assign(pending_labels_.begin() + ptrdiff_t(pending_begin_),
                  pending_labels_.begin() + ptrdiff_t(pending_begin_ + n));
    vectors.assign(pending_vectors_.begin() + ptrdiff_t(pending_begin_ * dim),
                   pending_vectors_.begin() + ptrdiff_t((pending_begin_ + n) * dim));
    index = ann_.get();
  }
  absl::Status added = index->Add(labels.data(), vectors.data(), labels.size());
  absl::WriterMutexLock lock(&mu_);
  if (!added.ok()) {
    insert_error_ = Annotate(added, "linking stored vectors into the ANN graph");
    LogWarn("vectors left pending: adding them to the ANN index failed",
            {{"collection", dir_}, {"error", added.message()}});
    return insert_error_;
  }
  // One change for searches: the graph holds them, the pending list not.
  for (Label l : labels) held_.Set(l);
  pending_begin_ += labels.size();
  if (pending_begin_ == pending_labels_.size()) {
    pending_labels_.clear();
    pending_vectors_.clear();
    pending_begin_ = 0;
  } else if (pending_begin_ >= 4096 && pending_begin_ * 2 >= pending_labels_.size()) {
    const size_t dim = vectors_.dim();
    pending_labels_.erase(pending_labels_.begin(),
                          pending_labels_.begin() + ptrdiff_t(pending_begin_));
    pending_vectors_.erase(pending_vectors_.begin(),
                           pending_vectors_.begin() + ptrdiff_t(pending_begin_ * dim));
    pending_begin_ = 0;
  }
  return absl::OkStatus();
}

bool LiveIndex::InserterHasWork() const {
  return stop_ || (pending_count() > 0 && insert_error_.ok());
}

bool LiveIndex::PendingWithinLimit() const {
  return pending_count() <= options_.max_pending || stop_ || !insert_error_.ok();
}

void LiveIndex::StartInserter() {
  std::call_once(inserter_started_,
                 [this] { insert_thread_ = std::thread([this] { InsertThread(); }); });
}

void LiveIndex::InsertThread() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &LiveIndex::InserterHasWork));
      if (stop_) return;
    }
    absl::WriterMutexLock graph_lock(&graph_mu_);
    // An error is kept in insert_error_ and returned to writes.
    LinkPending(InsertChunk()).IgnoreError();
  }
}

bool LiveIndex::IsPending(Label label) const {
  return std::binary_search(pending_labels_.begin() + ptrdiff_t(pending_begin_),
                            pending_labels_.end(), label);
}

void LiveIndex::SearchPending(const float* query, uint32_t k, const LabelBitmap* admitted,
                              std::vector<AnnNeighbor>* out) const {
  const size_t n = pending_count();
  if (n == 0 || k == 0) return;
  const size_t dim = vectors_.dim();
  const simd::Kernels& kern = simd::Active();
  std::vector<AnnNeighbor> all = std::move(*out);
  for (size_t i = pending_begin_; i < pending_labels_.size(); ++i) {
    const Label l = pending_labels_[i];
    if (admitted != nullptr ? !admitted->Test(l) : tombstones_.Test(l)) continue;
    all.push_back({l, kern.dot_f32(query, pending_vectors_.data() + i * dim, dim)});
  }
  // Best first; equal scores by label, so that the order is deterministic.
  auto better = [](const AnnNeighbor& a, const AnnNeighbor& b) {
    return a.score != b.score ? a.score > b.score : a.label < b.label;
  };
  const size_t keep = std::min<size_t>(k, all.size());
  std::partial_sort(all.begin(), all.begin() + ptrdiff_t(keep), all.end(), better);
  all.resize(keep);
  *out = std::move(all);
}

absl::Status LiveIndex::Search(const float* query, uint32_t k, const AnnSearchParams& params,
                               const std::function<LabelBitmap()>& matches,
                               const std::function<absl::Status()>& prelude,
                               std::vector<AnnNeighbor>* out) const {
  absl::ReaderMutexLock graph_lock(&graph_mu_);
  absl::ReaderMutexLock lock(&mu_);
  if (prelude) ATTN_RETURN_IF_ERROR(prelude());
  if (!matches) {
    LabelFilter live;
    // The filter runs inside ann_->Search below, under the lock held here.
    const LabelBitmap* dead = &tombstones_;
    if (!dead->empty()) live = [dead](Label l) { return !dead->Test(l); };
    ATTN_RETURN_IF_ERROR(ann_->Search(query, k, params, live, out));
    SearchPending(query, k, nullptr, out);
    return absl::OkStatus();
  }
  LabelBitmap admitted = matches();
  admitted.AndNot(tombstones_);
  out->clear();
  if (admitted.empty()) return absl::OkStatus();
  ATTN_RETURN_IF_ERROR(ann_->SearchFiltered(query, k, params, admitted, out));
  SearchPending(query, k, &admitted, out);
  return absl::OkStatus();
}

bool LiveIndex::IsTombstoned(Label label) const {
  absl::ReaderMutexLock lock(&mu_);
  return tombstones_.Test(label);
}

absl::StatusOr<AnnTuneResult> LiveIndex::Tune(double target_recall, uint32_t k,
                                              uint32_t sample) const {
  absl::ReaderMutexLock graph_lock(&graph_mu_);
  absl::ReaderMutexLock lock(&mu_);
  return ann_->Tune(target_recall, k, sample);
}

LiveIndex::Stats LiveIndex::stats() const {
  Stats s;
  {
    absl::ReaderMutexLock lock(&mu_);
    s.pending = pending_count();
    s.vectors = held_.count() + s.pending;
    s.tombstones = ann_tombstones_;
  }
  s.rebuild_in_progress = rebuild_in_progress_;
  s.rebuilds = rebuilds_;
  return s;
}

void LiveIndex::Tombstone(Label label) {
  if (!tombstones_.Set(label)) return;
  tombstone_records_.Set(label);
  if (held_.Test(label) || IsPending(label)) ++ann_tombstones_;
}

void LiveIndex::HoldLabelsOf(const AnnIndex& index) {
  held_ = LabelBitmap();
  for (Label l : index.labels()) held_.Set(l);
}

uint64_t LiveIndex::CountTombstonesIn(const AnnIndex& index) const {
  const std::vector<Label>& labels = index.labels();
  uint64_t n = 0;
  if (tombstones_.count() < labels.size()) {
    tombstones_.ForEach([&](Label l) {
      if (std::binary_search(labels.begin(), labels.end(), l)) ++n;
    });
  } else {
    for (Label l : labels) n += tombstones_.Test(l) ? 1 : 0;
  }
  return n;
}

bool LiveIndex::Usable(Label label, const float* v) const {
  if (AllFinite(v, vectors_.dim())) return true;
  if (!warned_nonfinite_.exchange(true)) {
    LogWarn(
        "a stored vector is not finite: the document is left out of the ANN index "
        "until upserted again",
        {{"collection", dir_}, {"label", label}});
  }
  return false;
}

void LiveIndex::MaybeScheduleRebuild() {
  if (options_.rebuild_tombstone_ratio <= 0 || options_.defer_index) return;
  uint64_t dead, total;
  {
    absl::ReaderMutexLock lock(&mu_);
    dead = ann_tombstones_;
    total = held_.count() + pending_count();
  }
  if (dead < options_.rebuild_min_tombstones ||
      double(dead) < options_.rebuild_tombstone_ratio * double(total) || rebuild_in_progress_) {
    return;
  }
  absl::MutexLock lock(&rebuild_mu_);
  if (stop_ || rebuild_requested_) return;
  rebuild_requested_ = true;
  if (!rebuild_thread_.joinable()) rebuild_thread_ = std::thread([this] { RebuildThread(); });
  rebuild_cv_.Signal();
}

void LiveIndex::RebuildThread() {
  for (;;) {
    {
      absl::MutexLock lock(&rebuild_mu_);
      while (!stop_ && !rebuild_requested_) rebuild_cv_.Wait(&rebuild_mu_);
      if (stop_) return;
      rebuild_requested_ = false;
    }
    absl::Status s;
    {
      absl::MutexLock run(&rebuild_run_mu_);
      s = RebuildLocked(/*compact_always=*/false);
    }
    if (!s.ok() && !stop_) {
      LogWarn("rebuilding the ANN index failed", {{"collection", dir_}, {"error", s.message()}});
    }
    // Deletes and overwrites during the rebuild found it in progress and
    // asked for none: if they crossed the threshold, go again.
    if (s.ok()) {
      absl::MutexLock write_lock(writer_mu_);
      MaybeScheduleRebuild();
    }
  }
}

absl::Status LiveIndex::DropTombstoneRecords() {
  std::vector<Label> drop;
  {
    std::vector<Label> records;
    tombstone_records_.ForEach([&](Label l) { records.push_back(l); });
    absl::ReaderMutexLock lock(&mu_);
    for (Label l : records) {
      if (!held_.Test(l) && !IsPending(l)) drop.push_back(l);
    }
  }
  ATTN_RETURN_IF_ERROR(store_->DropTombstones(drop));
  for (Label l : drop) tombstone_records_.Reset(l);
  return absl::OkStatus();
}

absl::Status LiveIndex::Rebuild() {
  if (options_.defer_index) {
    return absl::FailedPreconditionError(
        "the collection defers its index (bulk load); call BuildIndex first");
  }
  {
    absl::MutexLock run(&rebuild_run_mu_);
    ATTN_RETURN_IF_ERROR(RebuildLocked(/*compact_always=*/true));
  }
  absl::MutexLock write_lock(writer_mu_);
  MaybeScheduleRebuild();  // as after a background one
  return absl::OkStatus();
}

absl::Status LiveIndex::RebuildLocked(bool compact_always) {
  const auto start = std::chrono::steady_clock::now();
  rebuild_in_progress_ = true;
  struct ClearOnExit {
    std::atomic<bool>* flag;
    ~ClearOnExit() { *flag = false; }
  } clear{&rebuild_in_progress_};
  const CollectionConfig& config = store_->config();
  // Every label below `upto` is committed; the store scan below sees each
  // one still live when it starts, and later deletes are tombstones, which
  // are kept per label and so apply to the new index as well.
  Label upto;
  {
    absl::MutexLock store_lock(store_writer_mu_);
    absl::MutexLock write_lock(writer_mu_);
    upto = store_->next_label();
  }
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<AnnIndex> fresh,
                        AnnIndex::Create(config.ann_spec, vectors_.dim(), options_.ann));
  Batcher batch(fresh.get(), vectors_.dim());
  auto collect = [&](Label l, const float* v) -> absl::Status {
    if (stop_) return absl::CancelledError("the collection is closing");
    return Usable(l, v) ? batch.Take(l, v) : absl::OkStatus();
  };
  // The long part: no lock held, searches and writes use the old index.
  ATTN_RETURN_IF_ERROR(vectors_.Scan(*store_, 0, [&](Label l, const float* v) {
    return l < upto ? collect(l, v) : absl::OkStatus();
  }));
  ATTN_RETURN_IF_ERROR(batch.Flush());

  // The writes committed meanwhile, then the swap.
  std::unique_ptr<AnnIndex> old;
  {
    // Both: no batch is then between its commit and its index update.
    absl::MutexLock store_lock(store_writer_mu_);
    absl::MutexLock write_lock(writer_mu_);
    ATTN_RETURN_IF_ERROR(vectors_.Scan(*store_, upto, collect));
    ATTN_RETURN_IF_ERROR(batch.Flush());
    {
      absl::WriterMutexLock graph_lock(&graph_mu_);
      absl::WriterMutexLock lock(&mu_);
      old = std::exchange(ann_, std::move(fresh));
      // The fresh index holds every committed live vector: nothing is
      // pending any more.
      HoldLabelsOf(*ann_);
      pending_labels_.clear();
      pending_vectors_.clear();
      pending_begin_ = 0;
      insert_error_ = absl::OkStatus();
      ann_tombstones_ = CountTombstonesIn(*ann_);
      ++rebuilds_;
      LogInfo("ANN index rebuilt",
              {{"collection", dir_},
               {"vectors", uint64_t(ann_->size())},
               {"dropped", uint64_t(old->size() > ann_->size() ? old->size() - ann_->size() : 0)},
               {"seconds",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}});
    }
    if (!stop_) {
      absl::Status s = SaveSnapshot();
      if (s.ok()) s = SyncPath(dir_, /*directory=*/true);
      // Once the snapshot without them is durable, the tombstone records of
      // labels it does not hold are no longer needed.
      if (s.ok()) s = DropTombstoneRecords();
      if (!s.ok()) {
        LogWarn("after rebuilding the ANN index", {{"collection", dir_}, {"error", s.message()}});
      }
    }
  }
  // Deletes that made a rebuild worthwhile left as many deletion markers in
  // the store; compacting them away (writes and searches go on) keeps the
  // fetch stage as fast as before the deletes. Under a steady stream of
  // overwrites a rebuild comes every few seconds, and compacting the whole
  // store each time rewrote it as often (3,000 documents overwritten 400
  // times a second: 1,148 manual compactions in 7 minutes): in the
  // background, at most once a kMinCompactionInterval, RocksDB's own
  // compactions doing the rest.
  const auto now = std::chrono::steady_clock::now();
  if (!stop_ && (compact_always || last_compaction_.time_since_epoch().count() == 0 ||
                 now - last_compaction_ >= kMinCompactionInterval)) {
    last_compaction_ = now;
    absl::Status s = store_->Compact();
    if (!s.ok()) {
      LogWarn("compacting after a rebuild failed", {{"collection", dir_}, {"error", s.message()}});
    }
  }
  return absl::OkStatus();  // the old index is freed outside the locks
}

}  // namespace attnsearch
