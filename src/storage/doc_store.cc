#include "storage/doc_store.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <shared_mutex>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/status.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/codec.h"
#include "storage/fault_file_system.h"

namespace attnsearch {
namespace {

enum Cf { kMeta = 1, kIds, kDocs, kPooled, kTokens, kTombstones, kEncoder, kCodes, kNumCf };
const char* const kCfNames[kNumCf] = {"default", "meta",       "ids",     "docs", "pooled",
                                      "tokens",  "tombstones", "encoder", "codes"};

constexpr char kConfigKey[] = "config";
constexpr char kNextLabelKey[] = "next_label";
constexpr char kLiveCountKey[] = "live_count";
constexpr char kSchemaKey[] = "schema_version";
constexpr char kAnnTuningKey[] = "ann_tuning";
constexpr uint64_t kSchemaVersion = 1;
// The value of a tombstone record whose label's data awaits Purge.
constexpr char kPurgePending[] = "p";

// The one place RocksDB statuses become absl statuses.
absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsNoSpace() || s.IsMemoryLimit()) return absl::ResourceExhaustedError(msg);
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut() || s.IsIOError()) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

// Notes that RocksDB stopped accepting writes after a background error.
class StopListener : public rocksdb::EventListener {
 public:
  explicit StopListener(std::atomic<bool>* stopped) : stopped_(stopped) {}
  void OnBackgroundError(rocksdb::BackgroundErrorReason, rocksdb::Status* error) override {
    if (error != nullptr && !error->ok()) stopped_->store(true);
  }

 private:
  std::atomic<bool>* const stopped_;
};

rocksdb::Slice AsSlice(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace

struct BlockCache::Rep {
  std::shared_ptr<rocksdb::Cache> cache;
};

BlockCache::BlockCache(size_t capacity_bytes) : rep_(std::make_unique<Rep>()) {
  rep_->cache = rocksdb::NewLRUCache(capacity_bytes);
}
BlockCache::~BlockCache() = default;
size_t BlockCache::capacity() const { return rep_->cache->GetCapacity(); }
size_t BlockCache::usage() const { return rep_->cache->GetUsage(); }

struct DocStore::ReadView::Rep {
  // Declared first: released last, after the snapshot.
  std::shared_lock<std::shared_mutex> lock;
  rocksdb::DB* db = nullptr;
  const rocksdb::Snapshot* snapshot = nullptr;
  ~Rep() {
    if (snapshot != nullptr) db->ReleaseSnapshot(snapshot);
  }
};

struct DocStore::Rep {
  std::string path;
  uint64_t min_free_bytes = 0;
  std::shared_ptr<StorageFaults> faults;
  rocksdb::Options db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  // With fault injection: the Env over the faulty file system. Declared
  // before `db`, which uses it until closed.
  std::unique_ptr<rocksdb::Env> env;

  // Guards `db` and `cfs`: every use holds it shared; Recover replaces them
  // holding it exclusively. `db` is null after a failed recovery.
  mutable std::shared_mutex db_mu;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;  // indexed by Cf
  // The open instance is read-only (a recovery could not open it for writing).
  bool read_only = false;

  rocksdb::WriteOptions write_options;
  // Set when a write, flush or compaction failed: RocksDB refuses writes
  // until the store is recovered.
  std::atomic<bool> stopped{false};

  ~Rep() { CloseDb(); }

  // A new store's meta: its config, schema version and zero counters.
  absl::Status WriteNewMeta(const CollectionConfig& config);
  // The stored config. DATA_LOSS when meta lacks it, FAILED_PRECONDITION
  // for another schema version.
  absl::StatusOr<CollectionConfig> ReadConfig();

  absl::Status OpenDb(bool for_read_only) {
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s;
    if (!for_read_only) {
      // A store written before a column family existed gains it here.
      rocksdb::DBOptions o = db_options;
      o.create_missing_column_families = true;
      s = rocksdb::DB::Open(o, path, descriptors, &cfs, &raw);
    } else {
      // Read-only, a column family the store lacks stays null (its reads
      // find nothing).
      std::vector<std::string> existing;
      s = rocksdb::DB::ListColumnFamilies(db_options, path, &existing);
      std::vector<rocksdb::ColumnFamilyDescriptor> present;
      std::vector<int> which;
      for (int i = 0; i < kNumCf && s.ok(); ++i) {
        if (std::find(existing.begin(), existing.end(), descriptors[i].name) != existing.end()) {
          present.push_back(descriptors[i]);
          which.push_back(i);
        }
      }
      std::vector<rocksdb::ColumnFamilyHandle*> handles;
      if (s.ok()) s = rocksdb::DB::OpenForReadOnly(db_options, path, present, &handles, &raw);
      cfs.assign(kNumCf, nullptr);
      for (size_t j = 0; j < handles.size(); ++j) cfs[which[j]] = handles[j];
    }
    ATTN_RETURN_IF_ERROR(FromRocks(s, absl::StrCat("opening store ", path)));
    db.reset(raw);
    read_only = for_read_only;
    return absl::OkStatus();
  }

  void CloseDb() {
    if (!db) return;
    for (auto* h : cfs) {
      if (h != nullptr) db->DestroyColumnFamilyHandle(h);
    }
    cfs.clear();
    db->Close().PermitUncheckedError();
    db.reset();
  }

  // RESOURCE_EXHAUSTED, naming the figures, when the file system holding
  // the store has less than the reserve free.
  absl::Status CheckFreeSpace(absl::string_view what) const {
    if (min_free_bytes == 0) return absl::OkStatus();
    uint64_t free_bytes = 0;
    if (faults != nullptr && faults->free_space()) {
      free_bytes = *faults->free_space();
    } else {
      struct statvfs st;
      if (::statvfs(path.c_str(), &st) != 0) return absl::OkStatus();  // cannot tell
      free_bytes = uint64_t(st.f_bavail) * st.f_frsize;
    }
    if (free_bytes >= min_free_bytes) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": disk nearly full: ", free_bytes >> 20, " MiB free on the file system of ", path,
        ", below the reserve of ", min_free_bytes >> 20,
        " MiB (--min_free_disk_mb); writes resume once space is freed"));
  }

  // Takes `db_mu` shared; UNAVAILABLE when no instance is open.
  absl::Status LockForUse(std::shared_lock<std::shared_mutex>* lock) const {
    *lock = std::shared_lock<std::shared_mutex>(db_mu);
    if (db) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat(
        "store ", path, " is closed after a write error and could not be reopened yet"));
  }

  // Holds the open instance for one read: through `view`, which holds it
  // already (the read options then name its snapshot), or else by taking
  // `db_mu` shared into *lock.
  absl::Status LockForRead(const ReadView* view, std::shared_lock<std::shared_mutex>* lock,
                           rocksdb::ReadOptions* ro) const {
    if (view == nullptr) return LockForUse(lock);
    ro->snapshot = view->rep().snapshot;
    return absl::OkStatus();
  }

  // Writes `batch` (REQUIRES: the store not stopped, `db_mu` held shared). A
  // failure stops writes.
  absl::Status Write(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                     absl::string_view what) {
    rocksdb::Status s = db->Write(wo, batch);
    if (s.ok()) return absl::OkStatus();
    stopped.store(true);
    return FromRocks(s, absl::StrCat(what,
                                     " failed; not acknowledged (a batch is "
                                     "applied whole or not at all)"));
  }

  // A failed flush or compaction leaves RocksDB refusing writes too.
  absl::Status Check(const rocksdb::Status& s, absl::string_view what) {
    if (s.ok()) return absl::OkStatus();
    if (!s.IsNotSupported() && !s.IsInvalidArgument()) stopped.store(true);
    return FromRocks(s, what);
  }
};

DocStore::ReadView::ReadView(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
DocStore::ReadView::ReadView(ReadView&&) noexcept = default;
DocStore::ReadView& DocStore::ReadView::operator=(ReadView&&) noexcept = default;
DocStore::ReadView::~ReadView() = default;

absl::StatusOr<DocStore::ReadView> DocStore::NewReadView() const {
  auto rep = std::make_unique<ReadView::Rep>();
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&rep->lock));
  rep->db = rep_->db.get();
  rep->snapshot = rep->db->GetSnapshot();
  return ReadView(std::move(rep));
}

DocStore::DocStore(std::unique_ptr<Rep> rep, CollectionConfig config)
    : rep_(std::move(rep)), config_(std::move(config)) {}

DocStore::~DocStore() = default;

absl::StatusOr<std::unique_ptr<DocStore>> DocStore::Create(const std::string& path,
                                                           const CollectionConfig& config,
                                                           const StorageOptions& options) {
  ATTN_RETURN_IF_ERROR(config.Validate());
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    return absl::AlreadyExistsError(absl::StrCat("store already exists: ", path));
  }
  return OpenImpl(path, options, /*create=*/true, &config);
}

absl::StatusOr<std::unique_ptr<DocStore>> DocStore::Open(const std::string& path,
                                                         const StorageOptions& options) {
  return OpenImpl(path, options, /*create=*/false, nullptr);
}

namespace {

// The database's options (the environment and listeners are the caller's).
rocksdb::Options DbOptions(const StorageOptions& options, bool create) {
  rocksdb::Options db_options;
  db_options.create_if_missing = create;
  db_options.create_missing_column_families = create;
  db_options.error_if_exists = create;
  db_options.paranoid_checks = true;
  db_options.max_background_jobs = 2;
  // RocksDB's info LOG: at most 4 old files of 8 MiB beside the current
  // one (without a size, a file rolled only at open and grew without end).
  db_options.keep_log_file_num = 4;
  db_options.max_log_file_size = size_t{8} << 20;
  // Column families written rarely (meta, tombstones) would otherwise pin
  // every old WAL file: past this size RocksDB flushes them so the WAL can
  // be recycled.
  db_options.max_total_wal_size = options.max_wal_bytes;
  // Without a WAL, the column families must reach disk together, or a crash
  // could keep a document's id mapping without its data.
  db_options.atomic_flush = options.disable_wal;
  return db_options;
}

// Every column family's options, over `table`.
rocksdb::ColumnFamilyOptions CfOptions(const StorageOptions& options,
                                       const rocksdb::BlockBasedTableOptions& table) {
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size = options.write_buffer_bytes;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf_options.compression = rocksdb::kNoCompression;  // vectors do not compress
  return cf_options;
}

}  // namespace

absl::Status DocStore::Rep::WriteNewMeta(const CollectionConfig& config) {
  rocksdb::WriteBatch batch;
  batch.Put(cfs[kMeta], kConfigKey, codec::EncodeConfig(config));
  batch.Put(cfs[kMeta], kSchemaKey, codec::EncodeU64(kSchemaVersion));
  batch.Put(cfs[kMeta], kNextLabelKey, codec::EncodeU64(0));
  batch.Put(cfs[kMeta], kLiveCountKey, codec::EncodeU64(0));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db->Write(wo, &batch), "writing config");
}

absl::StatusOr<CollectionConfig> DocStore::Rep::ReadConfig() {
  auto read_meta = [&](const char* key) -> absl::StatusOr<std::string> {
    std::string v;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), cfs[kMeta], key, &v);
    if (s.IsNotFound()) {
      return absl::DataLossError(absl::StrCat("store ", path, " has no '", key, "'"));
    }
    ATTN_RETURN_IF_ERROR(FromRocks(s, "reading meta"));
    return v;
  };
  ATTN_ASSIGN_OR_RETURN(std::string config_value, read_meta(kConfigKey));
  ATTN_ASSIGN_OR_RETURN(CollectionConfig stored, codec::DecodeConfig(config_value));
  ATTN_ASSIGN_OR_RETURN(std::string schema_value, read_meta(kSchemaKey));
  ATTN_ASSIGN_OR_RETURN(uint64_t schema, codec::DecodeU64(schema_value));
  if (schema != kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("store ", path, " has schema version ",
                                                      schema, "; this build reads version ",
                                                      kSchemaVersion));
  }
  return stored;
}

absl::StatusOr<std::unique_ptr<DocStore>> DocStore::OpenImpl(const std::string& path,
                                                             const StorageOptions& options,
                                                             bool create,
                                                             const CollectionConfig* config) {
  rocksdb::Options db_options = DbOptions(options, create);
  auto rep = std::make_unique<Rep>();
  rep->path = path;
  rep->min_free_bytes = options.min_free_bytes;
  rep->faults = options.faults;
  if (options.faults != nullptr) {
    rep->env =
        rocksdb::NewCompositeEnv(WrapWithFaults(rocksdb::FileSystem::Default(), options.faults));
    db_options.env = rep->env.get();
  }
  db_options.listeners.push_back(std::make_shared<StopListener>(&rep->stopped));

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = options.block_cache != nullptr
                          ? options.block_cache->rep_->cache
                          : rocksdb::NewLRUCache(options.block_cache_bytes);
  table.cache_index_and_filter_blocks = true;
  // Table blocks are checksummed with XXH3 rather than the default CRC32C,
  // which the packaged RocksDB computes without the CPU's instruction (a
  // tenth of a load's time). Each file records its checksum type, so
  // stores written with CRC32C read as before.
  table.checksum = rocksdb::kXXH3;
  const rocksdb::ColumnFamilyOptions cf_options = CfOptions(options, table);
  for (int i = 0; i < kNumCf; ++i) rep->descriptors.emplace_back(kCfNames[i], cf_options);

  rep->write_options.sync = options.sync_writes && !options.disable_wal;
  rep->write_options.disableWAL = options.disable_wal;
  rep->db_options = db_options;
  // Below the free-space reserve a new store is not created, and an
  // existing one opens read-only with writes stopped (Recover reopens it for
  // writing once space is back).
  bool low_space = false;
  if (create) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    absl::Status space = rep->CheckFreeSpace(absl::StrCat("creating store ", path));
    if (!space.ok()) {
      std::filesystem::remove(path, ec);  // still empty
      return space;
    }
  } else if (absl::Status space = rep->CheckFreeSpace(absl::StrCat("opening store ", path));
             !space.ok()) {
    LogWarn("opening the store read-only", {{"store", path}, {"reason", space.message()}});
    low_space = true;
  }
  ATTN_RETURN_IF_ERROR(rep->OpenDb(/*for_read_only=*/low_space));
  rep->stopped = low_space;
  // Later opens (Recover) never create.
  rep->db_options.create_if_missing = false;
  rep->db_options.create_missing_column_families = false;
  rep->db_options.error_if_exists = false;

  if (create) ATTN_RETURN_IF_ERROR(rep->WriteNewMeta(*config));
  ATTN_ASSIGN_OR_RETURN(CollectionConfig stored, rep->ReadConfig());
  std::unique_ptr<DocStore> store(new DocStore(std::move(rep), std::move(stored)));
  ATTN_RETURN_IF_ERROR(store->LoadCounters());
  return store;
}

absl::Status DocStore::LoadCounters() {
  uint64_t values[2] = {0, 0};
  const char* const keys[2] = {kNextLabelKey, kLiveCountKey};
  for (int k = 0; k < 2; ++k) {
    std::string v;
    rocksdb::Status s = rep_->db->Get(rocksdb::ReadOptions(), rep_->cfs[kMeta], keys[k], &v);
    if (s.IsNotFound()) {
      return absl::DataLossError(absl::StrCat("store ", rep_->path, " has no '", keys[k], "'"));
    }
    ATTN_RETURN_IF_ERROR(FromRocks(s, "reading meta"));
    ATTN_ASSIGN_OR_RETURN(values[k], codec::DecodeU64(v));
  }
  next_label_ = values[0];
  live_count_ = values[1];
  return absl::OkStatus();
}

absl::Status DocStore::Recover() {
  if (!rep_->stopped.load()) return absl::OkStatus();
  // Not even trying while the disk is nearly full: the current instance
  // keeps serving reads.
  ATTN_RETURN_IF_ERROR(rep_->CheckFreeSpace("recovering the store for writing"));
  std::unique_lock<std::shared_mutex> lock(rep_->db_mu);
  if (!rep_->stopped.load()) return absl::OkStatus();
  rep_->CloseDb();
  absl::Status opened = rep_->OpenDb(/*for_read_only=*/false);
  if (opened.ok()) opened = LoadCounters();
  if (opened.ok()) {
    rep_->stopped.store(false);
    return absl::OkStatus();
  }
  // Keep serving reads from a read-only instance, which writes nothing.
  rep_->CloseDb();
  if (rep_->OpenDb(/*for_read_only=*/true).ok() && !LoadCounters().ok()) rep_->CloseDb();
  return Annotate(opened, "recovering from an earlier write error");
}

bool DocStore::write_stopped() const { return rep_->stopped.load(); }

absl::Status DocStore::PrepareWrite(std::shared_lock<std::shared_mutex>* lock,
                                    absl::string_view what, bool needs_space) {
  if (needs_space) ATTN_RETURN_IF_ERROR(rep_->CheckFreeSpace(absl::StrCat(what, ": not applied")));
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(lock));
  if (rep_->stopped.load() || rep_->read_only) {
    return absl::UnavailableError(
        absl::StrCat(what,
                     ": not applied; writes are stopped after an earlier write error until the "
                     "store recovers"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::optional<Label>>> DocStore::LookupIds(
    const std::vector<std::string>& ids, const ReadView* view) const {
  std::shared_lock<std::shared_mutex> lock;
  rocksdb::ReadOptions ro;
  ATTN_RETURN_IF_ERROR(rep_->LockForRead(view, &lock, &ro));
  std::vector<rocksdb::Slice> keys;
  keys.reserve(ids.size());
  for (const auto& id : ids) keys.push_back(AsSlice(id));
  std::vector<rocksdb::PinnableSlice> values(ids.size());
  std::vector<rocksdb::Status> statuses(ids.size());
  rep_->db->MultiGet(ro, rep_->cfs[kIds], keys.size(), keys.data(), values.data(), statuses.data());
  std::vector<std::optional<Label>> out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    ATTN_RETURN_IF_ERROR(FromRocks(statuses[i], "looking up ids"));
    ATTN_ASSIGN_OR_RETURN(out[i], codec::DecodeLabelKey(values[i].ToStringView()));
  }
  return out;
}

absl::Status DocStore::Commit(const std::vector<DocWrite>& writes,
                              const std::vector<DocDelete>& deletes, bool defer_sync) {
  if (writes.empty() && deletes.empty()) return absl::OkStatus();
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "writing the batch"));
  if (!writes.empty() && writes.front().label < next_label_.load()) {
    return absl::AbortedError(absl::StrCat(
        "writing the batch: not applied; the store recovered from a write error and its "
        "next label is now ",
        next_label_.load(), "; assign labels again"));
  }
  rocksdb::WriteBatch batch;
  auto& cf = rep_->cfs;
  Label next = next_label_.load();
  int64_t live_delta = 0;
  auto drop_label = [&](Label label) {
    const std::string key = codec::LabelKey(label);
    batch.Delete(cf[kDocs], key);
    batch.Delete(cf[kPooled], key);
    batch.Delete(cf[kTokens], key);
    batch.Delete(cf[kCodes], key);
    batch.Put(cf[kTombstones], key, rocksdb::Slice());
  };
  // The data stays readable until Purge.
  auto supersede_label = [&](Label label) {
    batch.Put(cf[kTombstones], codec::LabelKey(label), kPurgePending);
  };
  for (const DocWrite& w : writes) {
    const Document& d = *w.doc;
    const std::string key = codec::LabelKey(w.label);
    batch.Put(cf[kIds], d.id, key);
    batch.Put(cf[kDocs], key, codec::EncodeDocRecord(d));
    // A text-only document awaiting the encoder has no vectors yet.
    if (!d.pooled.empty() || d.num_tokens > 0) {
      batch.Put(cf[kPooled], key, codec::EncodePooled(d.pooled.data(), config_.dim));
      if (w.codes == nullptr || !w.codes_only) {
        batch.Put(
            cf[kTokens], key,
            codec::EncodeTokens(d.tokens.data(), d.num_tokens, config_.dim, config_.token_dtype));
      }
      if (w.codes != nullptr) batch.Put(cf[kCodes], key, *w.codes);
    }
    if (w.replaces) {
      supersede_label(*w.replaces);
    } else {
      ++live_delta;
    }
    next = std::max(next, w.label + 1);
  }
  for (const DocDelete& del : deletes) {
    batch.Delete(cf[kIds], del.id);
    drop_label(del.label);
    --live_delta;
  }
  const uint64_t live = uint64_t(int64_t(live_count_.load()) + live_delta);
  batch.Put(cf[kMeta], kNextLabelKey, codec::EncodeU64(next));
  batch.Put(cf[kMeta], kLiveCountKey, codec::EncodeU64(live));
  rocksdb::WriteOptions wo = rep_->write_options;
  if (defer_sync) wo.sync = false;
  ATTN_RETURN_IF_ERROR(rep_->Write(wo, &batch, "writing the batch"));
  next_label_ = next;
  live_count_ = live;
  return absl::OkStatus();
}

absl::Status DocStore::SyncWal() {
  if (!rep_->write_options.sync) return absl::OkStatus();
  // Not refused when writes stopped meanwhile (a flush failed): what the
  // WAL holds is made durable all the same.
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  return rep_->Check(rep_->db->SyncWAL(),
                     "syncing the WAL (the batch is written, but not known to be durable: not "
                     "acknowledged)");
}

absl::Status DocStore::Purge(const std::vector<Label>& labels) {
  if (labels.empty()) return absl::OkStatus();
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "purging superseded documents", false));
  rocksdb::WriteBatch batch;
  auto& cf = rep_->cfs;
  for (Label label : labels) {
    const std::string key = codec::LabelKey(label);
    batch.Delete(cf[kDocs], key);
    batch.Delete(cf[kPooled], key);
    batch.Delete(cf[kTokens], key);
    batch.Delete(cf[kCodes], key);
    batch.Put(cf[kTombstones], key, rocksdb::Slice());
  }
  rocksdb::WriteOptions wo = rep_->write_options;
  wo.sync = false;
  return rep_->Write(wo, &batch, "purging superseded documents");
}

absl::Status DocStore::GetDocuments(const std::vector<Label>& labels, bool include_vectors,
                                    std::vector<std::optional<Document>>* out, const ReadView* view,
                                    const CodesDecoder& decode_codes) const {
  return GetDocuments(labels, include_vectors ? Vectors::kAll : Vectors::kNone, out, view,
                      decode_codes);
}

absl::Status DocStore::GetDocuments(const std::vector<Label>& labels, Vectors vectors,
                                    std::vector<std::optional<Document>>* out, const ReadView* view,
                                    const CodesDecoder& decode_codes) const {
  const bool include_vectors = vectors != Vectors::kNone;
  const bool include_tokens = vectors == Vectors::kAll;
  std::shared_lock<std::shared_mutex> lock;
  rocksdb::ReadOptions ro;
  ATTN_RETURN_IF_ERROR(rep_->LockForRead(view, &lock, &ro));
  const size_t n = labels.size();
  std::vector<std::string> key_bytes;
  key_bytes.reserve(n);
  for (Label l : labels) key_bytes.push_back(codec::LabelKey(l));
  std::vector<rocksdb::Slice> keys(key_bytes.begin(), key_bytes.end());
  auto multi_get = [&](Cf which, std::vector<rocksdb::PinnableSlice>* values,
                       std::vector<rocksdb::Status>* statuses) {
    values->resize(n);
    statuses->resize(n);
    rep_->db->MultiGet(ro, rep_->cfs[which], n, keys.data(), values->data(), statuses->data());
  };
  std::vector<rocksdb::PinnableSlice> docs, pooled, tokens, codes;
  std::vector<rocksdb::Status> doc_st, pooled_st, tokens_st, codes_st;
  multi_get(kDocs, &docs, &doc_st);
  if (include_vectors) {
    multi_get(kPooled, &pooled, &pooled_st);
  }
  if (include_tokens) {
    multi_get(kTokens, &tokens, &tokens_st);
    if (decode_codes && rep_->cfs[kCodes] != nullptr) multi_get(kCodes, &codes, &codes_st);
  }
  out->assign(n, std::nullopt);
  for (size_t i = 0; i < n; ++i) {
    if (doc_st[i].IsNotFound()) continue;
    ATTN_RETURN_IF_ERROR(FromRocks(doc_st[i], "reading documents"));
    Document d;
    ATTN_RETURN_IF_ERROR(codec::DecodeDocRecord(docs[i].ToStringView(), &d));
    if (include_vectors && d.encoded_by != kAwaitingEncoder) {
      // A concurrent overwrite may have removed the vectors after the record
      // was read; report the document as gone rather than half-filled.
      if (pooled_st[i].IsNotFound()) continue;
      ATTN_RETURN_IF_ERROR(FromRocks(pooled_st[i], "reading pooled vectors"));
      ATTN_RETURN_IF_ERROR(codec::DecodePooled(pooled[i].ToStringView(), config_.dim, &d.pooled));
      if (!include_tokens) {
        // The pooled vector alone.
      } else if (tokens_st[i].IsNotFound()) {
        // Stored as codes only (or gone meanwhile, as above).
        if (codes_st.empty() || codes_st[i].IsNotFound()) continue;
        ATTN_RETURN_IF_ERROR(FromRocks(codes_st[i], "reading token codes"));
        ATTN_RETURN_IF_ERROR(decode_codes(codes[i].ToStringView(), &d));
      } else {
        ATTN_RETURN_IF_ERROR(FromRocks(tokens_st[i], "reading token matrices"));
        ATTN_RETURN_IF_ERROR(codec::DecodeTokens(tokens[i].ToStringView(), config_.dim,
                                                 config_.token_dtype, &d.tokens, &d.num_tokens));
      }
    }
    (*out)[i] = std::move(d);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> DocStore::GetEncoderState(const std::string& key) const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  std::string value;
  rocksdb::Status s = rep_->db->Get(rocksdb::ReadOptions(), rep_->cfs[kEncoder], key, &value);
  if (s.IsNotFound()) return std::nullopt;
  ATTN_RETURN_IF_ERROR(FromRocks(s, "reading encoder state"));
  return value;
}

absl::Status DocStore::PutEncoderState(
    const std::vector<std::pair<std::string, std::string>>& entries) {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "writing encoder state"));
  rocksdb::WriteBatch batch;
  for (const auto& [k, v] : entries) {
    if (v.empty()) {
      batch.Delete(rep_->cfs[kEncoder], k);
    } else {
      batch.Put(rep_->cfs[kEncoder], k, v);
    }
  }
  rocksdb::WriteOptions wo;
  wo.sync = !rep_->write_options.disableWAL;
  wo.disableWAL = rep_->write_options.disableWAL;
  ATTN_RETURN_IF_ERROR(rep_->Write(wo, &batch, "writing encoder state"));
  // Without a WAL only a flush makes it durable.
  lock.unlock();
  if (wo.disableWAL) return Flush();
  return absl::OkStatus();
}

absl::StatusOr<std::optional<AnnTuning>> DocStore::GetAnnTuning() const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  std::string value;
  rocksdb::Status s =
      rep_->db->Get(rocksdb::ReadOptions(), rep_->cfs[kMeta], kAnnTuningKey, &value);
  if (s.IsNotFound()) return std::nullopt;
  ATTN_RETURN_IF_ERROR(FromRocks(s, "reading the ANN tuning"));
  ATTN_ASSIGN_OR_RETURN(AnnTuning tuning, codec::DecodeAnnTuning(value));
  return tuning;
}

absl::Status DocStore::PutAnnTuning(const AnnTuning& tuning) {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "writing the ANN tuning"));
  rocksdb::WriteBatch batch;
  batch.Put(rep_->cfs[kMeta], kAnnTuningKey, codec::EncodeAnnTuning(tuning));
  rocksdb::WriteOptions wo;
  wo.sync = !rep_->write_options.disableWAL;
  wo.disableWAL = rep_->write_options.disableWAL;
  ATTN_RETURN_IF_ERROR(rep_->Write(wo, &batch, "writing the ANN tuning"));
  // Without a WAL only a flush makes it durable.
  lock.unlock();
  if (wo.disableWAL) return Flush();
  return absl::OkStatus();
}

absl::Status DocStore::GetTokens(const std::vector<Label>& labels, TokenBlock* out,
                                 const std::function<absl::Status(size_t total_rows)>& admit,
                                 const ReadView* view) const {
  std::shared_lock<std::shared_mutex> lock;
  rocksdb::ReadOptions ro;
  ATTN_RETURN_IF_ERROR(rep_->LockForRead(view, &lock, &ro));
  const size_t n = labels.size();
  std::vector<std::string> key_bytes;
  key_bytes.reserve(n);
  for (Label l : labels) key_bytes.push_back(codec::LabelKey(l));
  std::vector<rocksdb::Slice> keys(key_bytes.begin(), key_bytes.end());
  std::vector<rocksdb::PinnableSlice> values(n);
  std::vector<rocksdb::Status> statuses(n);
  rep_->db->MultiGet(ro, rep_->cfs[kTokens], n, keys.data(), values.data(), statuses.data());
  out->rows.assign(n, 0);
  out->offsets.assign(n, 0);
  out->found.assign(n, false);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    out->offsets[i] = total;
    if (statuses[i].IsNotFound()) continue;
    ATTN_RETURN_IF_ERROR(FromRocks(statuses[i], "reading token matrices"));
    ATTN_ASSIGN_OR_RETURN(uint32_t rows, codec::TokenRows(values[i].ToStringView(), config_.dim,
                                                          config_.token_dtype));
    out->rows[i] = rows;
    out->found[i] = true;
    total += rows;
  }
  out->total_rows = total;
  if (admit) ATTN_RETURN_IF_ERROR(admit(total));
  const TokenDtype dtype = config_.token_dtype;
  const size_t row_bytes = size_t(config_.dim) * TokenDtypeSize(dtype);
  out->storage.resize((total * row_bytes + 3) / 4);
  out->scales.resize(dtype == TokenDtype::kInt8 ? total : 0);
  char* base = reinterpret_cast<char*>(out->storage.data());
  for (size_t i = 0; i < n; ++i) {
    if (!out->found[i]) continue;
    const std::string_view v = values[i].ToStringView();
    std::memcpy(base + out->offsets[i] * row_bytes, codec::TokenData(v, dtype, out->rows[i]),
                size_t(out->rows[i]) * row_bytes);
    if (dtype == TokenDtype::kInt8) {
      std::memcpy(out->scales.data() + out->offsets[i], codec::TokenScales(v),
                  size_t(out->rows[i]) * 4);
    }
  }
  return absl::OkStatus();
}

absl::Status DocStore::ScanPooled(
    Label from, const std::function<absl::Status(Label, const float*)>& fn) const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  std::unique_ptr<rocksdb::Iterator> it(
      rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->cfs[kPooled]));
  std::vector<float> v;
  const std::string start = codec::LabelKey(from);
  for (it->Seek(start); it->Valid(); it->Next()) {
    ATTN_ASSIGN_OR_RETURN(Label label, codec::DecodeLabelKey(it->key().ToStringView()));
    ATTN_RETURN_IF_ERROR(codec::DecodePooled(it->value().ToStringView(), config_.dim, &v));
    ATTN_RETURN_IF_ERROR(fn(label, v.data()));
  }
  return FromRocks(it->status(), "scanning pooled vectors");
}

absl::Status DocStore::ScanDocRecords(
    Label from, const std::function<absl::Status(Label, const Document&)>& fn) const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  std::unique_ptr<rocksdb::Iterator> it(
      rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->cfs[kDocs]));
  for (it->Seek(codec::LabelKey(from)); it->Valid(); it->Next()) {
    ATTN_ASSIGN_OR_RETURN(Label label, codec::DecodeLabelKey(it->key().ToStringView()));
    Document d;
    ATTN_RETURN_IF_ERROR(codec::DecodeDocRecord(it->value().ToStringView(), &d));
    ATTN_RETURN_IF_ERROR(fn(label, d));
  }
  return FromRocks(it->status(), "scanning documents");
}

absl::Status DocStore::ScanTokens(
    Label from, const std::function<absl::Status(Label, std::string_view, uint32_t)>& fn) const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  rocksdb::ReadOptions ro;
  // A scan of every matrix once: keep it out of the block cache.
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(ro, rep_->cfs[kTokens]));
  for (it->Seek(codec::LabelKey(from)); it->Valid(); it->Next()) {
    ATTN_ASSIGN_OR_RETURN(Label label, codec::DecodeLabelKey(it->key().ToStringView()));
    const std::string_view v = it->value().ToStringView();
    ATTN_ASSIGN_OR_RETURN(uint32_t rows, codec::TokenRows(v, config_.dim, config_.token_dtype));
    ATTN_RETURN_IF_ERROR(fn(label, v, rows));
  }
  return FromRocks(it->status(), "scanning token matrices");
}

absl::Status DocStore::ScanCodes(
    Label from, const std::function<absl::Status(Label, std::string_view)>& fn) const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  if (rep_->cfs[kCodes] == nullptr) return absl::OkStatus();
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(ro, rep_->cfs[kCodes]));
  for (it->Seek(codec::LabelKey(from)); it->Valid(); it->Next()) {
    ATTN_ASSIGN_OR_RETURN(Label label, codec::DecodeLabelKey(it->key().ToStringView()));
    ATTN_RETURN_IF_ERROR(fn(label, it->value().ToStringView()));
  }
  return FromRocks(it->status(), "scanning token codes");
}

absl::Status DocStore::PutCodes(const std::vector<std::pair<Label, std::string>>& codes,
                                bool drop_rows) {
  if (codes.empty()) return absl::OkStatus();
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "writing token codes"));
  rocksdb::WriteBatch batch;
  for (const auto& [label, value] : codes) {
    const std::string key = codec::LabelKey(label);
    batch.Put(rep_->cfs[kCodes], key, value);
    if (drop_rows) batch.Delete(rep_->cfs[kTokens], key);
  }
  return rep_->Write(rep_->write_options, &batch, "writing token codes");
}

absl::StatusOr<std::vector<std::optional<std::string>>> DocStore::GetCodes(
    const std::vector<Label>& labels, const ReadView* view) const {
  std::shared_lock<std::shared_mutex> lock;
  rocksdb::ReadOptions ro;
  ATTN_RETURN_IF_ERROR(rep_->LockForRead(view, &lock, &ro));
  std::vector<std::optional<std::string>> out(labels.size());
  if (labels.empty() || rep_->cfs[kCodes] == nullptr) return out;
  std::vector<std::string> key_bytes;
  key_bytes.reserve(labels.size());
  for (Label l : labels) key_bytes.push_back(codec::LabelKey(l));
  std::vector<rocksdb::Slice> keys(key_bytes.begin(), key_bytes.end());
  std::vector<rocksdb::PinnableSlice> values(labels.size());
  std::vector<rocksdb::Status> statuses(labels.size());
  rep_->db->MultiGet(ro, rep_->cfs[kCodes], labels.size(), keys.data(), values.data(),
                     statuses.data());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    ATTN_RETURN_IF_ERROR(FromRocks(statuses[i], "reading token codes"));
    out[i] = values[i].ToString();
  }
  return out;
}

absl::StatusOr<std::vector<Label>> DocStore::Tombstones(std::vector<Label>* purge_pending) const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  std::unique_ptr<rocksdb::Iterator> it(
      rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->cfs[kTombstones]));
  std::vector<Label> out;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ATTN_ASSIGN_OR_RETURN(Label label, codec::DecodeLabelKey(it->key().ToStringView()));
    out.push_back(label);
    if (purge_pending != nullptr && it->value() == kPurgePending) {
      purge_pending->push_back(label);
    }
  }
  ATTN_RETURN_IF_ERROR(FromRocks(it->status(), "scanning tombstones"));
  return out;
}

absl::Status DocStore::DropTombstones(const std::vector<Label>& labels) {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "dropping tombstones"));
  constexpr size_t kPerBatch = 65536;
  for (size_t begin = 0; begin < labels.size(); begin += kPerBatch) {
    rocksdb::WriteBatch batch;
    const size_t end = std::min(labels.size(), begin + kPerBatch);
    for (size_t i = begin; i < end; ++i) {
      batch.Delete(rep_->cfs[kTombstones], codec::LabelKey(labels[i]));
    }
    ATTN_RETURN_IF_ERROR(rep_->Write(rep_->write_options, &batch, "dropping tombstones"));
  }
  return absl::OkStatus();
}

absl::Status DocStore::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "flushing", /*needs_space=*/false));
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  for (auto* h : rep_->cfs) {
    if (h != nullptr) cfs.push_back(h);
  }
  ATTN_RETURN_IF_ERROR(rep_->Check(rep_->db->Flush(fo, cfs), "flushing"));
  return rep_->Check(rep_->db->FlushWAL(/*sync=*/true), "syncing the WAL");
}

absl::Status DocStore::Compact() {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "compacting", /*needs_space=*/false));
  rocksdb::CompactRangeOptions options;
  for (rocksdb::ColumnFamilyHandle* cf : rep_->cfs) {
    if (cf == nullptr) continue;
    ATTN_RETURN_IF_ERROR(
        rep_->Check(rep_->db->CompactRange(options, cf, nullptr, nullptr), "compacting"));
  }
  return absl::OkStatus();
}

absl::Status DocStore::CompactTokens(std::atomic<bool>* canceled) {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(PrepareWrite(&lock, "compacting token rows", /*needs_space=*/false));
  rocksdb::CompactRangeOptions options;
  options.canceled = canceled;
  const rocksdb::Status s = rep_->db->CompactRange(options, rep_->cfs[kTokens], nullptr, nullptr);
  // A canceled compaction is no fault of the store.
  if (canceled != nullptr && *canceled) return FromRocks(s, "compacting token rows");
  return rep_->Check(s, "compacting token rows");
}

absl::Status DocStore::Checkpoint(const std::string& dir) const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  rocksdb::Checkpoint* raw = nullptr;
  ATTN_RETURN_IF_ERROR(
      FromRocks(rocksdb::Checkpoint::Create(rep_->db.get(), &raw), "creating a checkpoint"));
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  // With a WAL the log is copied rather than flushed first, unless it is
  // large; without one, a flush is what makes the copy complete.
  const uint64_t flush_above = rep_->write_options.disableWAL ? 0 : uint64_t{64} << 20;
  return FromRocks(checkpoint->CreateCheckpoint(dir, flush_above),
                   absl::StrCat("writing a checkpoint of ", rep_->path, " to ", dir));
}

DocStore::MemoryUsage DocStore::Memory() const {
  MemoryUsage m;
  std::shared_lock<std::shared_mutex> lock(rep_->db_mu);
  if (!rep_->db) return m;
  uint64_t v = 0;
  // One block cache serves every column family: read it once.
  if (rep_->db->GetIntProperty(rep_->cfs[0], "rocksdb.block-cache-usage", &v)) m.block_cache = v;
  if (rep_->db->GetAggregatedIntProperty("rocksdb.size-all-mem-tables", &v)) m.memtables = v;
  if (rep_->db->GetAggregatedIntProperty("rocksdb.estimate-table-readers-mem", &v)) {
    m.table_readers = v;
  }
  return m;
}

absl::Status DocStore::VerifyChecksums() const {
  std::shared_lock<std::shared_mutex> lock;
  ATTN_RETURN_IF_ERROR(rep_->LockForUse(&lock));
  return FromRocks(rep_->db->VerifyChecksum(rocksdb::ReadOptions()),
                   absl::StrCat("verifying the checksums of store ", rep_->path));
}

DocStore::DiskUsage DocStore::Disk() const {
  DiskUsage usage;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(rep_->path, ec)) {
    std::error_code size_ec;
    if (!entry.is_regular_file(size_ec)) continue;
    const uint64_t size = entry.file_size(size_ec);
    if (size_ec) continue;  // removed meanwhile
    const std::string ext = entry.path().extension().string();
    if (ext == ".sst") {
      usage.table_files += size;
    } else if (ext == ".log") {  // numbered WAL files; the info log is "LOG"
      usage.log_files += size;
    } else {
      usage.other_files += size;
    }
  }
  return usage;
}

}  // namespace attnsearch
