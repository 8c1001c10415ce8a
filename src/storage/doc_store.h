// DocStore: one collection's durable state in one RocksDB instance.
//
// RocksDB is the only durable truth of a collection; everything else (the ANN
// index, filter indexes) is derived from it. Column families, as in
// DESIGN.md "Storage schema":
//
//   meta        config, next label, live count, schema version, the tuned
//               ANN knobs ("ann_tuning", when TuneIndex stored some)
//   ids         external id            -> label (8 bytes, big-endian)
//   docs        label                  -> id, text, metadata, token texts
//   pooled      label                  -> unit pooled vector (f32)
//   tokens      label                  -> token matrix in the collection dtype
//   tombstones  label                  -> empty (deleted/superseded labels), or
//                                         "p": superseded, its data kept until
//                                         Purge (see Commit)
//   encoder     the built-in encoder: "model" (Encoder::Serialize), "version",
//               "reencode_below" (a re-encoding in progress); the token
//               codec: "codec.model", "codec.version", "codec.encoder_version"
//               (the encoder whose vocabulary its centroids are; 0: k-means)
//   codes       label                  -> token codes (the collection's token
//                                         codec; absent until it is trained)
//
// Every Commit is one RocksDB WriteBatch: a crash leaves either all of it or
// none of it. With StorageOptions::sync_writes (the default) the write-ahead
// log is synced before Commit returns, so an acknowledged write survives a
// crash of the process or of the machine.
//
// I/O errors: a write that fails (an I/O error, a full disk, a failed fsync)
// returns UNAVAILABLE, or RESOURCE_EXHAUSTED for a full disk; it was not
// acknowledged, and is applied whole or not at all. Writes then stop (reads
// go on; writes answer UNAVAILABLE) until Recover() reopens the store; a
// failed background flush or compaction stops writes the same way.
//
// Disk space: StorageOptions::min_free_bytes is kept free. Below it writes
// answer RESOURCE_EXHAUSTED before anything is written (the store is not
// stopped), and Open opens the store read-only with writes stopped until a
// Recover finds the space back.
//
// Reads see each Commit whole or not at all. A series of reads that must
// agree with each other (a label found by one read and fetched by the next)
// goes through one ReadView, a RocksDB snapshot.
//
// Thread safety: reads may run concurrently with each other and with one
// Commit. Commit calls must be serialised by the caller (labels are assigned
// by the caller in increasing order).
#ifndef ATTNSEARCH_STORAGE_DOC_STORE_H_
#define ATTNSEARCH_STORAGE_DOC_STORE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/types.h"
#include "storage/storage_faults.h"

namespace attnsearch {

// A RocksDB block cache that several stores share, so that their hot blocks
// compete for one memory budget (the server keeps one for all its
// collections). Memory is taken as blocks are read, up to the capacity.
class BlockCache {
 public:
  explicit BlockCache(size_t capacity_bytes);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  size_t capacity() const;
  // Bytes held now, by every store using the cache.
  size_t usage() const;

 private:
  friend class DocStore;
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

struct StorageOptions {
  // Sync the write-ahead log before a Commit returns. Turning it off keeps a
  // process crash safe but may lose the last writes on a power failure.
  // Default: true.
  bool sync_writes = true;
  // Size of the store's own LRU block cache (shared by its column
  // families), used when `block_cache` is null. Token matrices of reranked
  // candidates are read from it. Default: 256 MiB.
  size_t block_cache_bytes = size_t{256} << 20;
  // A block cache shared with other stores; replaces the store's own.
  // Default: none.
  std::shared_ptr<BlockCache> block_cache;
  // Total size of live WAL files before the column families holding the
  // oldest are flushed. Default: 256 MiB.
  size_t max_wal_bytes = size_t{256} << 20;
  // Memtable size per column family. Default: 64 MiB.
  size_t write_buffer_bytes = size_t{64} << 20;
  // Skip the write-ahead log. Writes are then durable only after Flush();
  // for bulk loads that checkpoint their progress at Flush. Default: false.
  bool disable_wal = false;
  // Free space the store keeps in reserve on its file system: a write that
  // would start with less free answers RESOURCE_EXHAUSTED (nothing is
  // written), a store is not created, and an existing one opens read-only
  // (writes resume once space is freed). RocksDB is thus kept away from a
  // full disk, where some of its paths (e.g. creating files) are fragile;
  // keep it above the memtables' total. 0 turns the check off. Default:
  // 512 MiB.
  uint64_t min_free_bytes = uint64_t{512} << 20;
  // Fault injection (tests, the fault drill): when set, every file write and
  // sync of the store consults these switches. Default: none.
  std::shared_ptr<StorageFaults> faults;

  // For bulk loading: no WAL, no per-write sync, larger memtables. Call
  // DocStore::Flush (Collection::Flush) to make the loaded data durable.
  static StorageOptions ForBulkLoad() {
    StorageOptions o;
    o.sync_writes = false;
    o.disable_wal = true;
    o.write_buffer_bytes = size_t{256} << 20;
    return o;
  }
};

// One new document version. `doc` must already be validated and normalised,
// with at least one token row (a document without tokens stores its pooled
// vector as one token). Must outlive the Commit call.
struct DocWrite {
  Label label = 0;
  // The label this version supersedes (same external id), if any.
  std::optional<Label> replaces;
  const Document* doc = nullptr;
  // The document's token codes (the `codes` record), when the collection
  // has a trained token codec; null: none.
  const std::string* codes = nullptr;
  // With codes: store only them, not the token rows (a collection that
  // does not keep full precision).
  bool codes_only = false;
};

// A document to delete: its external id and current label.
struct DocDelete {
  std::string id;
  Label label = 0;
};

// Token matrices of several documents back to back in the collection's
// dtype: document i occupies rows [offsets[i], offsets[i] + rows[i]).
// An allocator whose value-less construct leaves the elements
// uninitialised: a buffer about to be overwritten is not zeroed first.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <typename U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

struct TokenBlock {
  // Raw elements (f32 or bf16). Stored in floats so the buffer is 4-byte
  // aligned whatever the dtype; not zeroed when it grows (every row is
  // written). Reusing a block keeps its capacity.
  std::vector<float, UninitializedAllocator<float>> storage;
  // int8 only: one scale per row, total_rows values.
  std::vector<float> scales;
  std::vector<uint32_t> rows;   // 0 for a label that was not found
  std::vector<size_t> offsets;  // first row of each document
  std::vector<bool> found;
  size_t total_rows = 0;
  const void* data() const { return storage.data(); }
};

class DocStore {
 public:
  // A consistent view for a series of reads: every read through it sees the
  // store as it was when the view was taken (a RocksDB snapshot). It holds
  // the open RocksDB instance shared, so a Recover waits until it is
  // released: keep it for the reads of one request. Must not outlive the
  // store.
  class ReadView {
   public:
    ReadView(ReadView&&) noexcept;
    ReadView& operator=(ReadView&&) noexcept;
    ~ReadView();

    struct Rep;  // doc_store.cc
    const Rep& rep() const { return *rep_; }

   private:
    friend class DocStore;
    explicit ReadView(std::unique_ptr<Rep> rep);
    std::unique_ptr<Rep> rep_;
  };

  // Creates a new store in directory `path`, which must not exist yet.
  static absl::StatusOr<std::unique_ptr<DocStore>> Create(const std::string& path,
                                                          const CollectionConfig& config,
                                                          const StorageOptions& options);
  // Opens an existing store; DATA_LOSS if it holds no valid configuration.
  static absl::StatusOr<std::unique_ptr<DocStore>> Open(const std::string& path,
                                                        const StorageOptions& options);

  ~DocStore();
  DocStore(const DocStore&) = delete;
  DocStore& operator=(const DocStore&) = delete;

  const CollectionConfig& config() const { return config_; }
  // The first label never assigned.
  Label next_label() const { return next_label_.load(); }
  // Number of live documents.
  uint64_t live_count() const { return live_count_.load(); }

  // A view of the store as it is now (see ReadView).
  absl::StatusOr<ReadView> NewReadView() const;

  // The reads below take an optional view: with one they read the store as
  // the view saw it; without, as it is.

  // Current label of each external id, or nullopt.
  absl::StatusOr<std::vector<std::optional<Label>>> LookupIds(const std::vector<std::string>& ids,
                                                              const ReadView* view = nullptr) const;

  // Atomically applies new versions and deletions: the id map, the next
  // label and the live count are updated in the same batch, and every
  // superseded or deleted label gains a tombstone record. A deleted label
  // loses its data at once. A superseded label keeps its data, its
  // tombstone marked "purge pending", until Purge: a reader that found the
  // old label (in an index not yet updated) can still read it, so it sees
  // the old version or the new one, never neither. Tombstones() lists the
  // pending labels, so a purge interrupted by a crash is redone.
  // REQUIRES: labels of `writes` are >= next_label(), increasing, and no two
  // entries concern the same external id; no concurrent Commit.
  //
  // With `defer_sync`, the batch reaches the WAL (it survives a crash of the
  // process) without waiting for the disk: the caller calls SyncWal before
  // acknowledging it, once it let other writers in, so that the disk's wait
  // overlaps their work and batches committed meanwhile share one sync.
  absl::Status Commit(const std::vector<DocWrite>& writes, const std::vector<DocDelete>& deletes,
                      bool defer_sync = false);

  // Makes every batch committed so far durable (syncs the WAL) when the
  // store syncs its writes (StorageOptions::sync_writes, with a WAL);
  // otherwise does nothing.
  absl::Status SyncWal();

  // Deletes the data of superseded labels (see Commit) and clears their
  // purge marks, in one batch; the tombstone records stay. Not synced: a
  // purge lost in a crash is pending again after it. May run beside a
  // Commit (which never concerns labels already superseded). REQUIRES: no
  // concurrent Purge or DropTombstones.
  absl::Status Purge(const std::vector<Label>& labels);

  // Rebuilds a document's token rows from its codes record (a collection
  // that keeps only codes): fills tokens and num_tokens.
  using CodesDecoder = std::function<absl::Status(std::string_view codes, Document* doc)>;

  // Documents by label; a missing label yields nullopt. With
  // `include_vectors`, pooled and tokens are filled (decoded to f32); a
  // document stored as codes only has its tokens from `decode_codes`
  // (without one it reads as absent, like a document whose vectors a
  // concurrent overwrite removed).
  absl::Status GetDocuments(const std::vector<Label>& labels, bool include_vectors,
                            std::vector<std::optional<Document>>* out,
                            const ReadView* view = nullptr,
                            const CodesDecoder& decode_codes = nullptr) const;
  // Which vectors GetDocuments fills: none, the pooled vector alone (no
  // token matrix is read), or both.
  enum class Vectors { kNone, kPooled, kAll };
  absl::Status GetDocuments(const std::vector<Label>& labels, Vectors vectors,
                            std::vector<std::optional<Document>>* out,
                            const ReadView* view = nullptr,
                            const CodesDecoder& decode_codes = nullptr) const;

  // The codes records of `labels` (one MultiGet); nullopt where a label has
  // none.
  absl::StatusOr<std::vector<std::optional<std::string>>> GetCodes(
      const std::vector<Label>& labels, const ReadView* view = nullptr) const;

  // Token matrices of `labels` into one contiguous block (one MultiGet).
  // When `admit` is given it is called with the block's total rows once
  // they are known and before the block is allocated; an error it returns
  // is returned (and nothing is copied), so a caller can bound the memory
  // a request takes by the stored token counts.
  absl::Status GetTokens(const std::vector<Label>& labels, TokenBlock* out,
                         const std::function<absl::Status(size_t total_rows)>& admit = nullptr,
                         const ReadView* view = nullptr) const;

  // Calls fn(label, unit pooled vector) for every label >= from that has
  // data (live, or superseded with its purge pending), in label order.
  // Stops at the first error fn returns.
  absl::Status ScanPooled(Label from,
                          const std::function<absl::Status(Label, const float*)>& fn) const;

  // Calls fn(label, record) for every document with a label >= from that
  // has data (as ScanPooled; vectors not filled), in label order.
  absl::Status ScanDocRecords(Label from,
                              const std::function<absl::Status(Label, const Document&)>& fn) const;

  // Calls fn(label, encoded token matrix, rows) for every label >= from
  // that has token rows (as ScanPooled, less those stored as codes only),
  // in label order; the value is the `tokens` record (codec::EncodeTokens),
  // valid during the call.
  absl::Status ScanTokens(
      Label from,
      const std::function<absl::Status(Label, std::string_view, uint32_t rows)>& fn) const;

  // Calls fn(label, codes record) for every label >= from that has token
  // codes (the `codes` column family: what the collection's token codec
  // made of its matrix, see DocWrite::codes), in label order.
  absl::Status ScanCodes(Label from,
                         const std::function<absl::Status(Label, std::string_view)>& fn) const;
  // Writes the codes records of labels (a re-encoding with a new codec),
  // replacing earlier ones, in one batch; with `drop_rows`, their token
  // rows are deleted in the same batch. REQUIRES: the labels have data and
  // are not deleted meanwhile (the caller's writer lock).
  absl::Status PutCodes(const std::vector<std::pair<Label, std::string>>& codes,
                        bool drop_rows = false);

  // Every tombstoned label, in increasing order; those whose purge is
  // pending also go to *purge_pending when given.
  absl::StatusOr<std::vector<Label>> Tombstones(std::vector<Label>* purge_pending = nullptr) const;
  // Removes the tombstone records of `labels`: once no ANN snapshot holds a
  // label, its record is no longer needed (the label's data is gone, so a
  // rebuild from the store never adds it). REQUIRES: their purges done; no
  // concurrent Commit.
  absl::Status DropTombstones(const std::vector<Label>& labels);

  // The built-in encoder's state (the `encoder` column family): a value by
  // key, nullopt when absent.
  absl::StatusOr<std::optional<std::string>> GetEncoderState(const std::string& key) const;
  // Writes encoder state entries atomically and durably (synced, even for a
  // bulk-load store); an empty value deletes its key.
  absl::Status PutEncoderState(const std::vector<std::pair<std::string, std::string>>& entries);

  // The collection's tuned ANN search knobs (the `meta` key "ann_tuning"),
  // nullopt when none were stored; DATA_LOSS when the record is malformed.
  absl::StatusOr<std::optional<AnnTuning>> GetAnnTuning() const;
  // Stores them durably (synced, even for a bulk-load store), replacing the
  // earlier ones.
  absl::Status PutAnnTuning(const AnnTuning& tuning);

  // Makes every committed write durable: flushes the memtables to SST files
  // and syncs the WAL.
  absl::Status Flush();

  // Compacts every column family, so that the deletion markers of deleted
  // and overwritten documents stop costing reads (after mass deletes).
  // Runs alongside reads and writes.
  absl::Status Compact();
  // Compacts the `tokens` column family alone: gives back the disk of rows
  // deleted by PutCodes(.., drop_rows). Setting *canceled stops it early
  // (an error, with nothing lost).
  absl::Status CompactTokens(std::atomic<bool>* canceled = nullptr);

  // Whether writes are stopped after an I/O error (until Recover).
  bool write_stopped() const;
  // Makes a stopped store writable again: closes RocksDB and opens it anew,
  // which replays the write-ahead log and starts a new one. A failed batch
  // that reached the log whole is applied then, whole, so next_label() and
  // live_count() may move; callers that assign labels call this (when
  // write_stopped()) before choosing them. If the store cannot be opened for
  // writing yet, it is opened read-only so reads go on, and the error is
  // returned. No-op when not stopped. REQUIRES: no concurrent write.
  absl::Status Recover();

  // Writes a consistent, openable copy of the store into `dir`, which must
  // not exist (its parent must): RocksDB's checkpoint, with table files
  // hard-linked when `dir` is on the same file system and copied otherwise,
  // and the write-ahead log copied up to the last committed batch. Runs
  // alongside reads and writes; the copy holds every batch acknowledged
  // before the call and possibly some that commit during it, each whole.
  // DocStore::Open(dir) opens it.
  absl::Status Checkpoint(const std::string& dir) const;

  // Reads every table file of the store whole and checks its block
  // checksums (RocksDB's VerifyChecksum). DATA_LOSS naming the store and the
  // damage when a block does not match.
  absl::Status VerifyChecksums() const;

  // The store's files on disk, by kind (sizes of the files in its folder).
  struct DiskUsage {
    uint64_t table_files = 0;  // RocksDB's table (SST) files: the data
    uint64_t log_files = 0;    // the write-ahead log, until its data is flushed
    uint64_t other_files = 0;  // manifest, options, RocksDB's own info logs
  };
  DiskUsage Disk() const;

  // RocksDB's memory, from its properties.
  struct MemoryUsage {
    uint64_t block_cache = 0;    // the block cache's charge (rocksdb.block-cache-usage)
    uint64_t memtables = 0;      // active and unflushed memtables, all column families
    uint64_t table_readers = 0;  // index and filter blocks held outside the cache
  };
  MemoryUsage Memory() const;

 private:
  struct Rep;
  DocStore(std::unique_ptr<Rep> rep, CollectionConfig config);
  static absl::StatusOr<std::unique_ptr<DocStore>> OpenImpl(const std::string& path,
                                                            const StorageOptions& options,
                                                            bool create,
                                                            const CollectionConfig* config);
  // Reads next_label_ and live_count_ from the meta column family.
  absl::Status LoadCounters();
  // For every write: holds the instance shared; UNAVAILABLE while stopped;
  // with `needs_space`, RESOURCE_EXHAUSTED below the free-space reserve.
  absl::Status PrepareWrite(std::shared_lock<std::shared_mutex>* lock, absl::string_view what,
                            bool needs_space = true);

  std::unique_ptr<Rep> rep_;
  const CollectionConfig config_;
  std::atomic<Label> next_label_{0};
  std::atomic<uint64_t> live_count_{0};
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_STORAGE_DOC_STORE_H_
