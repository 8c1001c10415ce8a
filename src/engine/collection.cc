#include "engine/collection.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_sync.h"
#include "core/log.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "engine/checks.h"
#include "engine/document_check.h"
#include "storage/codec.h"

namespace attnsearch {
namespace {

// The memory a document holds in a request (counted against
// max_request_bytes): its fields, as Upsert takes them and Get gives them.
size_t DocumentBytes(const Document& d) {
  size_t bytes = sizeof(Document) + d.id.size() + d.text.size() +
                 (d.pooled.size() + d.tokens.size()) * sizeof(float) + d.token_spans.size() * 8;
  for (const auto& [k, v] : d.metadata) bytes += k.size() + v.size() + 64;
  for (const auto& t : d.token_texts) bytes += t.size() + sizeof(std::string);
  return bytes;
}

LiveIndexOptions LiveIndexOptionsOf(const CollectionOptions& o) {
  LiveIndexOptions l;
  l.ann = o.ann;
  l.snapshot_every = o.snapshot_every;
  l.rebuild_tombstone_ratio = o.rebuild_tombstone_ratio;
  l.rebuild_min_tombstones = o.rebuild_min_tombstones;
  l.defer_index = o.defer_index;
  l.background_insert = o.background_insert;
  l.max_pending = o.max_pending_vectors;
  return l;
}

}  // namespace

Collection::Collection(std::string path, std::unique_ptr<DocStore> store,
                       std::unique_ptr<Reranker> reranker, const CollectionOptions& options)
    : path_(std::move(path)),
      store_(std::move(store)),
      reranker_(std::move(reranker)),
      options_(options),
      arena_(options.token_arena
                 ? std::make_unique<TokenArena>(path_, TokenArenaOptions{options.arena_budget})
                 : nullptr),
      index_(store_.get(), path_, LiveIndexOptionsOf(options), &index_mu_, &write_mu_),
      filter_(store_->config()),
      search_(SearchParts{.store = store_.get(),
                          .reranker = reranker_.get(),
                          .index = &index_,
                          .filter = &filter_,
                          .arena = arena_.get(),
                          .codec = [this] { return codec(); },
                          .previous_codec = [this] { return previous_codec(); },
                          .codec_stale = [this] { return CodecIsStale(); },
                          .exact_tier = store_->config().token_codec.keep_full_precision,
                          .first_stage_ready = [this] { return FirstStageReady(); },
                          .limits = options.limits,
                          .max_rows_per_gemm = options.rerank.max_rows_per_gemm,
                          .encoder = [this] { return encoder(); },
                          .default_params = [this] { return DefaultSearchParams(); },
                          .lexical = [this](std::string_view text, size_t k,
                                            const std::function<bool(Label)>& accept)
                              -> absl::StatusOr<std::vector<LexicalHit>> {
                            const std::shared_ptr<LexicalIndex> index = lexical();
                            if (index == nullptr) {
                              return absl::UnavailableError(
                                  "retrieval: the lexical index stopped after an error; it is "
                                  "rebuilt when the collection opens again");
                            }
                            return index->Search(text, k, &accept);
                          },
                          .name = path_}) {}

Collection::~Collection() {
  // A codec job stops between batches (a training in progress finishes
  // first); what it did not encode is encoded after the next Open.
  stopping_ = true;
  {
    absl::MutexLock lock(&codec_thread_mu_);
    if (codec_thread_.joinable()) codec_thread_.join();
  }
  index_.Stop();
  if (discard_on_close_) return;
  absl::MutexLock lock(&write_mu_);
  absl::MutexLock index_lock(&index_mu_);
  if (index_.changed_since_snapshot()) {
    absl::Status s = index_.SaveSnapshot();
    if (!s.ok()) LogWarn("ANN snapshot not saved", {{"collection", path_}, {"error", s.message()}});
  }
  // A clean close leaves no write-ahead log behind: the flush moves its data
  // into table files, and RocksDB deletes the log files no longer needed.
  if (!store_->write_stopped()) {
    absl::Status s = store_->Flush();
    if (!s.ok()) {
      LogWarn("store not flushed at close", {{"collection", path_}, {"error", s.message()}});
    } else if (const std::shared_ptr<LexicalIndex> lexical_index = lexical()) {
      // Current with the flushed store: the next open keeps it.
      s = lexical_index->Commit(store_->next_label());
      if (!s.ok()) {
        LogWarn("lexical index not committed at close (rebuilt at the next open)",
                {{"collection", path_}, {"error", s.message()}});
      }
    }
  }
}

absl::StatusOr<std::unique_ptr<Collection>> Collection::Create(const std::string& path,
                                                               const CollectionConfig& config,
                                                               const CollectionOptions& options) {
  ATTN_RETURN_IF_ERROR(config.Validate());
  // Reject an unusable ANN spec before anything is written.
  ATTN_RETURN_IF_ERROR(
      AnnIndex::Create(config.ann_spec, IndexVectors(config).dim(), options.ann).status());
  std::error_code ec;
  if (!std::filesystem::create_directory(path, ec)) {
    return ec ? absl::InternalError(absl::StrCat("creating ", path, ": ", ec.message()))
              : absl::AlreadyExistsError(absl::StrCat(path, " already exists"));
  }
  ATTN_RETURN_IF_ERROR(DocStore::Create(path + "/store", config, options.storage).status());
  return Open(path, options);
}

absl::StatusOr<std::unique_ptr<Collection>> Collection::Open(const std::string& path,
                                                             const CollectionOptions& options) {
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<DocStore> store,
                        DocStore::Open(path + "/store", options.storage));
  const CollectionConfig& config = store->config();
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Reranker> reranker,
                        Reranker::Create(config.dim, config.token_dtype, options.rerank));
  std::unique_ptr<Collection> c(
      new Collection(path, std::move(store), std::move(reranker), options));
  ATTN_RETURN_IF_ERROR(c->LoadCodec());
  ATTN_RETURN_IF_ERROR(c->LoadDerivedState());
  ATTN_RETURN_IF_ERROR(c->LoadEncoder());
  ATTN_RETURN_IF_ERROR(c->LoadTuning());
  // Codes an interrupted re-encoding left old, or a training now due.
  c->MaybeStartCodecWork(/*train=*/c->codec() == nullptr);
  return c;
}

absl::Status Collection::LoadDerivedState() {
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock index_lock(&index_mu_);
  index_.AssertWriterHeld();
  std::vector<Label> purge_pending;
  ATTN_ASSIGN_OR_RETURN(const Label from, index_.Load(&purge_pending));
  ATTN_RETURN_IF_ERROR(LoadArena(0));
  ATTN_RETURN_IF_ERROR(LoadFirstStage(0));
  // A bulk load builds the ANN index once, at BuildIndex; the filter index
  // is needed at once.
  ATTN_ASSIGN_OR_RETURN(const uint64_t added,
                        CatchUp(from, /*metadata_from=*/0, !options_.defer_index));
  ATTN_RETURN_IF_ERROR(LoadLexical());
  // Overwrites whose purge a crash interrupted (no reader exists yet).
  PurgeSuperseded(purge_pending);
  index_.MaybeScheduleRebuild();
  if (added > 0) {
    // Only a speed-up for the next open: a full disk must not stop this one.
    absl::Status saved = index_.SaveSnapshot();
    if (!saved.ok()) {
      LogWarn("ANN snapshot not saved", {{"collection", path_}, {"error", saved.message()}});
    }
  }
  return absl::OkStatus();
}

absl::Status Collection::LoadLexical() {
  const std::string dir = path_ + "/lexical";
  const LexicalOptions options;  // the built-in encoder's words (English stems)
  absl::StatusOr<std::unique_ptr<LexicalIndex>> opened = LexicalIndex::Open(dir, options);
  const Label next = store_->next_label();
  const bool damaged = absl::IsDataLoss(opened.status());
  // Current only after a clean close: it then recorded the store's next label.
  if (damaged || (opened.ok() && (*opened)->applied() != next)) {
    if (damaged) {
      LogWarn("lexical index damaged; rebuilding it from the store",
              {{"collection", path_}, {"error", opened.status().message()}});
    }
    opened = absl::UnknownError("closed");  // lets go of the folder
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("removing ", dir, ": ", ec.message()));
    opened = LexicalIndex::Open(dir, options);
    ATTN_RETURN_IF_ERROR(opened.status());
    const auto t0 = std::chrono::steady_clock::now();
    ATTN_ASSIGN_OR_RETURN(const uint64_t indexed, LexicalCatchUp(opened->get(), 0));
    ATTN_RETURN_IF_ERROR((*opened)->Commit(next));
    if (indexed > 0) {
      LogInfo("lexical index rebuilt from the store",
              {{"collection", path_},
               {"documents", indexed},
               {"seconds",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}});
    }
  }
  ATTN_RETURN_IF_ERROR(opened.status());
  absl::MutexLock lock(&lexical_mu_);
  lexical_ = *std::move(opened);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Collection::LexicalCatchUp(LexicalIndex* index, Label from) {
  uint64_t indexed = 0;
  ATTN_RETURN_IF_ERROR(store_->ScanDocRecords(from, [&](Label l, const Document& d) {
    if (d.text.empty() || index_.IsTombstoned(l)) return absl::OkStatus();
    ++indexed;
    return index->Put(l, d.text);
  }));
  return indexed;
}

std::shared_ptr<LexicalIndex> Collection::lexical() const {
  absl::MutexLock lock(&lexical_mu_);
  return lexical_;
}

void Collection::LexicalApply(const std::vector<Document>& docs, Label first,
                              const std::vector<std::optional<Label>>& previous,
                              const std::vector<Label>& dropped) {
  const std::shared_ptr<LexicalIndex> index = lexical();
  if (index == nullptr) return;
  absl::Status s;
  for (size_t i = 0; i < docs.size() && s.ok(); ++i) {
    if (docs[i].text.empty()) continue;  // what it replaced is dropped below
    const std::optional<Label> before = i < previous.size() ? previous[i] : std::nullopt;
    s = before ? index->Move(*before, first + i, docs[i].text)
               : index->Put(first + i, docs[i].text);
  }
  // (A label moved above is no longer there to remove.)
  for (size_t i = 0; i < dropped.size() && s.ok(); ++i) s = index->Remove(dropped[i]);
  if (s.ok()) return;
  // The store holds the write: the lexical index is rebuilt from it at the
  // next open, and lexical searches answer UNAVAILABLE until then.
  LogWarn("lexical index stopped until the collection is opened again",
          {{"collection", path_}, {"error", s.message()}});
  absl::MutexLock lock(&lexical_mu_);
  lexical_.reset();
}

absl::StatusOr<std::vector<std::pair<std::string, double>>> Collection::LexicalSearch(
    std::string_view text, size_t k) const {
  const std::shared_ptr<LexicalIndex> index = lexical();
  if (index == nullptr) {
    return absl::UnavailableError(
        "the lexical index stopped after an error; it is rebuilt when the collection opens again");
  }
  const std::function<bool(Label)> live = [this](Label l) { return !index_.IsTombstoned(l); };
  ATTN_ASSIGN_OR_RETURN(const std::vector<LexicalHit> hits, index->Search(text, k, &live));
  std::vector<Label> labels;
  for (const LexicalHit& h : hits) labels.push_back(h.label);
  std::vector<std::optional<Document>> docs;
  ATTN_RETURN_IF_ERROR(store_->GetDocuments(labels, false, &docs));
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < hits.size(); ++i) {
    if (docs[i]) out.emplace_back(std::move(docs[i]->id), hits[i].score);  // else purged since
  }
  return out;
}

absl::StatusOr<uint64_t> Collection::CatchUp(Label from, Label metadata_from, bool add_vectors) {
  index_.AssertWriterHeld();
  uint64_t added = 0;
  if (add_vectors) {
    ATTN_ASSIGN_OR_RETURN(added, index_.CatchUp(from));
  }
  // The filter index (re-adding a label is harmless).
  ATTN_RETURN_IF_ERROR(store_->ScanDocRecords(metadata_from, [&](Label l, const Document& d) {
    filter_.Add(l, d);
    return absl::OkStatus();
  }));
  return added;
}

absl::Status Collection::Flush() {
  {
    absl::MutexLock write_lock(&write_mu_);
    absl::MutexLock index_lock(&index_mu_);
    ATTN_RETURN_IF_ERROR(RecoverStore());
  }
  return store_->Flush();
}

absl::StatusOr<uint64_t> Collection::BuildIndex() {
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock index_lock(&index_mu_);
  index_.AssertWriterHeld();
  const Label from = index_.next_unindexed();
  ATTN_RETURN_IF_ERROR(LoadArena(from));
  ATTN_ASSIGN_OR_RETURN(const uint64_t added, CatchUp(from, /*metadata_from=*/from, true));
  if (index_.changed_since_snapshot()) ATTN_RETURN_IF_ERROR(index_.SaveSnapshot());
  return added;
}

absl::Status Collection::SaveSnapshot() {
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock index_lock(&index_mu_);
  index_.AssertWriterHeld();
  return index_.SaveSnapshot();
}

absl::Status Collection::PrepareDocument(size_t i, const text::Encoder* encoder,
                                         uint64_t encoder_version, Document* doc) const {
  const std::string field = absl::StrCat("documents[", i, "]");
  DocumentRules rules;
  rules.dim = config().dim;
  rules.max_tokens = options_.limits.max_document_tokens;
  rules.numeric_fields = config().numeric_fields;
  ATTN_RETURN_IF_ERROR(CheckDocument(doc, rules, field));
  doc->encoded_by = kClientVectors;
  if (!IsTextOnly(*doc)) return absl::OkStatus();
  if (encoder == nullptr) {
    doc->encoded_by = kAwaitingEncoder;  // TrainEncoder encodes it
    return absl::OkStatus();
  }
  ATTN_ASSIGN_OR_RETURN(text::Encoding e, encoder->EncodeDocument(doc->text, field + ".text"));
  doc->num_tokens = e.num_tokens;
  doc->tokens = std::move(e.tokens);
  doc->pooled = std::move(e.pooled);
  doc->token_texts = std::move(e.token_texts);
  doc->token_spans = std::move(e.token_spans);
  doc->encoded_by = static_cast<uint32_t>(encoder_version);
  if (e.distinct_keys > options_.limits.max_document_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".text: ", e.distinct_keys,
                                                   " distinct words exceed the limit of ",
                                                   options_.limits.max_document_tokens));
  }
  if (e.distinct_keys > doc->num_tokens) {  // never cut without a word
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".text: ", e.distinct_keys,
                     " distinct words exceed the built-in encoder's limit of ", doc->num_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Collection::Upsert(std::vector<Document> docs) {
  if (docs.empty()) return 0;
  if (docs.size() > options_.limits.max_batch_documents) {
    return absl::InvalidArgumentError(absl::StrCat("documents: a batch of ", docs.size(),
                                                   " exceeds the limit of ",
                                                   options_.limits.max_batch_documents));
  }
  // Documents with vectors of their own are checked before the write lock is
  // taken, so concurrent writers check while another commits. Text-only
  // ones are encoded under it, so a concurrent TrainEncoder cannot slip
  // between encoding and commit. Errors are reported in document order all
  // the same: the first bad document with vectors stops the checks, and the
  // loop below reaches it after everything before it.
  size_t first_bad = docs.size();
  absl::Status bad;
  for (size_t i = 0; i < docs.size() && bad.ok(); ++i) {
    if (IsTextOnly(docs[i])) continue;
    bad = PrepareDocument(i, nullptr, 0, &docs[i]);
    if (!bad.ok()) first_bad = i;
  }
  absl::ReleasableMutexLock write_lock(&write_mu_);
  uint64_t version = 0;
  const std::shared_ptr<const text::Encoder> enc = encoder(&version);
  absl::flat_hash_map<std::string_view, size_t> seen;
  // The memory the batch holds, counted as each document is prepared (text
  // documents grow by their encoding).
  const size_t row_bytes = StoredRowBytes(config());
  size_t batch_bytes = 0;
  uint64_t arena_bytes = 0;  // what the batch adds to the token arena
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i == first_bad) return bad;
    if (IsTextOnly(docs[i])) ATTN_RETURN_IF_ERROR(PrepareDocument(i, enc.get(), version, &docs[i]));
    const Document& d = docs[i];
    batch_bytes += DocumentBytes(d) + size_t(d.num_tokens) * row_bytes;
    arena_bytes += size_t(d.num_tokens) * row_bytes + 32;
    ATTN_RETURN_IF_ERROR(CheckRequestBytes(batch_bytes, options_.limits.max_request_bytes,
                                           absl::StrCat("documents: the batch of ", docs.size(),
                                                        " (counted up to documents[", i, "])")));
    auto [it, fresh] = seen.emplace(docs[i].id, i);
    if (!fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat("documents[", i, "].id: '", docs[i].id,
                       "' appears twice in the batch (also documents[", it->second, "])"));
    }
  }
  if (const ArenaBudget* budget = options_.arena_budget.get();
      arena_ != nullptr && budget != nullptr && budget->limit() > 0 &&
      budget->used() + arena_bytes > budget->limit()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "documents: the batch's token matrices (%.1f MiB) do not fit in the memory the token "
        "arenas may use: %.1f of %.1f MiB are taken (attnsearch-server --arena_budget_mb); "
        "nothing was written",
        double(arena_bytes) / (1 << 20), double(budget->used()) / (1 << 20),
        double(budget->limit()) / (1 << 20)));
  }
  if (store_->write_stopped()) {
    absl::MutexLock index_lock(&index_mu_);
    ATTN_RETURN_IF_ERROR(RecoverStore());
  }
  ATTN_ASSIGN_OR_RETURN(const StoreCommit commit, CommitToStore(docs, /*defer_sync=*/true));
  // Hand over: the indexes take the batch under index_mu_ alone, in commit
  // order, while the next writer commits its batch to the store; the WAL is
  // synced after both locks are let go. Synced even when the index could
  // not take the batch: it is stored all the same.
  absl::Status indexed;
  {
    absl::MutexLock index_lock(&index_mu_);
    write_lock.Release();
    indexed = CommitToIndex(docs, commit);
  }
  const absl::Status synced = store_->SyncWal();
  ATTN_RETURN_IF_ERROR(synced);
  ATTN_RETURN_IF_ERROR(indexed);
  MaybeStartCodecWork(/*train=*/true);
  return docs.size();
}

absl::Status Collection::LoadArena(Label from) {
  if (arena_ == nullptr) {
    // No arena to count them in: the live documents without codes of the
    // current codec still wait for the re-encoding.
    const std::shared_ptr<const TokenCodecState> codes = codec();
    if (codes == nullptr || from != 0) return absl::OkStatus();
    uint64_t coded = 0;
    ATTN_RETURN_IF_ERROR(store_->ScanCodes(0, [&](Label l, std::string_view v) {
      if (CodesVersion(v) == codes->version && !index_.IsTombstoned(l)) ++coded;
      return absl::OkStatus();
    }));
    const uint64_t live = store_->live_count();
    codec_pending_ += live > coded ? live - coded : 0;
    return absl::OkStatus();
  }
  absl::Status refused;
  uint64_t docs = 0, rows = 0, bytes = 0;  // what the arena lacked
  auto add = [&](Label l, std::string_view v, uint32_t r, uint32_t tag) -> absl::Status {
    if (refused.ok()) {
      refused = arena_->Add(l, v, r, tag);
      if (!refused.ok() && !absl::IsResourceExhausted(refused)) return refused;
    }
    ++docs;
    rows += r;
    bytes += v.size();
    return absl::OkStatus();
  };
  // Codes of the current codec first; the rows of the rest.
  const std::shared_ptr<const TokenCodecState> codes = codec();
  if (codes != nullptr) {
    const size_t code_bytes = codes->codec->code_bytes();
    ATTN_RETURN_IF_ERROR(store_->ScanCodes(from, [&](Label l, std::string_view v) {
      if (CodesVersion(v) != codes->version || index_.IsTombstoned(l)) return absl::OkStatus();
      ATTN_ASSIGN_OR_RETURN(const CodesView c, ParseCodes(v, code_bytes));
      return add(l, v, c.rows, kCodesRecord);
    }));
  }
  uint64_t as_rows = 0;
  ATTN_RETURN_IF_ERROR(store_->ScanTokens(from, [&](Label l, std::string_view v, uint32_t r) {
    if (index_.IsTombstoned(l) || !arena_->Find(l).empty()) return absl::OkStatus();
    ++as_rows;
    return add(l, v, r, kRowsRecord);
  }));
  if (codes != nullptr) codec_pending_ += as_rows;
  if (refused.ok()) return absl::OkStatus();
  const ArenaBudget& budget = *options_.arena_budget;
  const uint64_t mine = arena_->stats().allocated_bytes;
  const uint64_t others = budget.used() - std::min(budget.used(), mine);
  return absl::ResourceExhaustedError(absl::StrFormat(
      "%s: the token arena does not fit in memory: %d documents (%d token rows) need %.1f MiB, "
      "and the token arenas' budget is %.1f MiB, of which other collections hold %.1f MiB "
      "(attnsearch-server --arena_budget_mb)",
      path_, docs, rows, double(bytes) / (1 << 20), double(budget.limit()) / (1 << 20),
      double(others) / (1 << 20)));
}

absl::Status Collection::LoadFirstStage(Label from) {
  const std::shared_ptr<const TokenCodecState> state = codec();
  if (state == nullptr || state->first_stage == nullptr) return absl::OkStatus();
  return store_->ScanCodes(from, [&](Label l, std::string_view v) {
    if (!index_.IsTombstoned(l)) state->HoldCodes(l, v);
    return absl::OkStatus();
  });
}

bool Collection::FirstStageReady() const {
  if (codec_pending_.load() > 0) return false;
  absl::MutexLock lock(&codec_mu_);
  return codec_ != nullptr && codec_->first_stage != nullptr && previous_codec_ == nullptr;
}

void Collection::AddToArena(const std::vector<Document>& docs, const StoreCommit& c) {
  if (arena_ == nullptr) return;
  for (size_t i = 0; i < docs.size(); ++i) {
    const Document& d = docs[i];
    if (d.pooled.empty()) continue;  // awaiting the encoder: no matrix
    absl::Status s;
    if (!c.codes.empty() && !c.codes[i].empty()) {
      s = arena_->Add(c.first + i, c.codes[i], d.num_tokens, kCodesRecord);
    } else {
      const std::string record =
          codec::EncodeTokens(d.tokens.data(), d.num_tokens, config().dim, config().token_dtype);
      s = arena_->Add(c.first + i, record, d.num_tokens, kRowsRecord);
    }
    if (!s.ok()) {
      // Stored and searchable all the same: its searches read the store.
      LogWarn("document left out of the token arena",
              {{"collection", path_}, {"id", d.id}, {"error", s.message()}});
    }
  }
}

void Collection::RemoveFromArena(const std::vector<Label>& labels) {
  if (const std::shared_ptr<const TokenCodecState> state = codec()) state->Forget(labels);
  if (const std::shared_ptr<const TokenCodecState> state = previous_codec()) state->Forget(labels);
  if (arena_ == nullptr) return;
  for (Label l : labels) arena_->Remove(l);
}

void Collection::PurgeSuperseded(const std::vector<Label>& labels) {
  absl::Status s = store_->Purge(labels);
  if (!s.ok()) {
    // The write itself is committed. The store stopped; the next write's
    // RecoverStore (or the next Open) purges them.
    LogWarn("superseded documents not purged yet", {{"collection", path_}, {"error", s.message()}});
  }
}

absl::Status Collection::RecoverStore() {
  if (!store_->write_stopped()) return absl::OkStatus();
  const Label before = store_->next_label();
  ATTN_RETURN_IF_ERROR(store_->Recover());
  LogInfo("store reopened after a write error", {{"collection", path_}});
  // A batch whose write failed may have reached the log whole, and the
  // reopen then applied it: bring the derived state up to date with it.
  std::vector<Label> purge_pending;
  ATTN_ASSIGN_OR_RETURN(std::vector<Label> dead, store_->Tombstones(&purge_pending));
  index_.AssertWriterHeld();
  ATTN_RETURN_IF_ERROR(index_.Apply(dead, {}, {}));
  LexicalApply({}, 0, {}, dead);
  RemoveFromArena(dead);
  if (store_->next_label() > before) {
    ATTN_RETURN_IF_ERROR(LoadArena(before));
    ATTN_RETURN_IF_ERROR(LoadFirstStage(before));
    ATTN_RETURN_IF_ERROR(CatchUp(before, before, !options_.defer_index).status());
    if (const std::shared_ptr<LexicalIndex> lexical_index = lexical()) {
      ATTN_RETURN_IF_ERROR(LexicalCatchUp(lexical_index.get(), before).status());
    }
  }
  // The index no longer holds the superseded labels for new searches.
  return store_->Purge(purge_pending);
}

absl::StatusOr<Collection::StoreCommit> Collection::CommitToStore(const std::vector<Document>& docs,
                                                                  bool defer_sync) {
  std::vector<std::string> ids;
  ids.reserve(docs.size());
  for (const auto& d : docs) ids.push_back(d.id);
  ATTN_ASSIGN_OR_RETURN(std::vector<std::optional<Label>> existing, store_->LookupIds(ids));
  StoreCommit c;
  c.first = store_->next_label();
  std::vector<DocWrite> writes(docs.size());
  const IndexVectors& vectors = index_.vectors();
  c.vectors.reserve(docs.size() * vectors.dim());
  // With a trained codec, the codes are written with the rows.
  if (const std::shared_ptr<const TokenCodecState> codes = codec()) {
    std::vector<std::pair<const float*, uint32_t>> matrices;
    for (const Document& d : docs) matrices.emplace_back(d.tokens.data(), d.num_tokens);
    c.codes = codes->EncodeMany(matrices);
  }
  for (size_t i = 0; i < docs.size(); ++i) {
    writes[i] = {c.first + i, existing[i], &docs[i]};
    if (!c.codes.empty() && docs[i].num_tokens > 0) {
      writes[i].codes = &c.codes[i];
      writes[i].codes_only = !config().token_codec.keep_full_precision;
    }
    // Awaiting the encoder; or a bulk load, whose index is built at the end.
    if (docs[i].pooled.empty() || options_.defer_index) continue;
    c.labels.push_back(c.first + i);
    c.vectors.resize(c.vectors.size() + vectors.dim());
    vectors.OfDocument(docs[i], c.vectors.data() + c.vectors.size() - vectors.dim());
  }
  ATTN_RETURN_IF_ERROR(store_->Commit(writes, {}, defer_sync));
  for (const auto& e : existing) {
    if (e) c.superseded.push_back(*e);
  }
  c.previous = std::move(existing);
  // Replaced labels leave the results at once (with defer_index too, which
  // adds the new vectors only at BuildIndex).
  return c;
}

absl::Status Collection::CommitToIndex(const std::vector<Document>& docs, const StoreCommit& c) {
  index_.AssertWriterHeld();
  // The arena holds a label before the index gives it to a search.
  AddToArena(docs, c);
  if (const std::shared_ptr<const TokenCodecState> state = codec(); state && !c.codes.empty()) {
    for (size_t i = 0; i < docs.size(); ++i) {
      if (!docs[i].pooled.empty() && !c.codes[i].empty()) state->HoldCodes(c.first + i, c.codes[i]);
    }
  }
  // The filter index changes with the ANN index, under its lock: a
  // filtered search sees both as of one instant. An error says what became
  // of the stored documents.
  const absl::Status added = index_.Apply(c.superseded, c.labels, c.vectors, [&] {
    for (size_t i = 0; i < docs.size(); ++i) filter_.Add(c.first + i, docs[i]);
  });
  // A search that began before the index switched labels reads the old
  // versions through its store view, taken before this point (from the
  // arena while it still holds them, else from the view).
  LexicalApply(docs, c.first, c.previous, c.superseded);
  RemoveFromArena(c.superseded);
  PurgeSuperseded(c.superseded);
  return added;
}

absl::Status Collection::CommitPrepared(std::vector<Document>& docs) {
  ATTN_RETURN_IF_ERROR(RecoverStore());
  ATTN_ASSIGN_OR_RETURN(const StoreCommit commit, CommitToStore(docs));
  return CommitToIndex(docs, commit);
}

std::shared_ptr<const text::Encoder> Collection::encoder(uint64_t* version) const {
  absl::MutexLock lock(&encoder_mu_);
  if (version != nullptr) *version = encoder_version_;
  return encoder_;
}

absl::Status Collection::DeriveEncoderDims(uint32_t dim, text::EncoderOptions* options) {
  if (dim < 16) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dim: the built-in encoder needs a collection of at least 16 dimensions, not ", dim));
  }
  options->semantic_dims = (dim * 3 + 4) / 8;
  options->lexical_dims = dim - 1 - options->semantic_dims;
  return absl::OkStatus();
}

absl::Status Collection::LoadEncoder() {
  ATTN_ASSIGN_OR_RETURN(std::optional<std::string> model, store_->GetEncoderState("model"));
  if (!model) return absl::OkStatus();
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<text::Encoder> enc, text::Encoder::Deserialize(*model));
  if (enc->dim() != config().dim) {
    return absl::DataLossError(absl::StrCat("encoder: dimension ", enc->dim(),
                                            " differs from the collection's ", config().dim));
  }
  ATTN_ASSIGN_OR_RETURN(std::optional<std::string> version, store_->GetEncoderState("version"));
  uint64_t v = 1;
  if (version && !absl::SimpleAtoi(*version, &v)) {
    return absl::DataLossError("encoder: bad version");
  }
  {
    absl::MutexLock lock(&encoder_mu_);
    encoder_ = std::move(enc);
    encoder_version_ = v;
  }
  ATTN_ASSIGN_OR_RETURN(std::optional<std::string> below,
                        store_->GetEncoderState("reencode_below"));
  if (below) {
    Label b;
    if (!absl::SimpleAtoi(*below, &b)) return absl::DataLossError("encoder: bad reencode_below");
    absl::MutexLock write_lock(&write_mu_);
    absl::MutexLock index_lock(&index_mu_);
    ATTN_RETURN_IF_ERROR(Reencode(b).status());
    ATTN_RETURN_IF_ERROR(store_->PutEncoderState({{"reencode_below", ""}}));
  }
  return absl::OkStatus();
}

std::shared_ptr<const TokenCodecState> Collection::codec() const {
  absl::MutexLock lock(&codec_mu_);
  return codec_;
}

std::shared_ptr<const TokenCodecState> Collection::previous_codec() const {
  absl::MutexLock lock(&codec_mu_);
  return previous_codec_;
}

absl::Status Collection::LoadCodec() {
  ATTN_ASSIGN_OR_RETURN(std::optional<std::string> model, store_->GetEncoderState("codec.model"));
  if (!model) return absl::OkStatus();
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<ResidualCodec> codec, ResidualCodec::Deserialize(*model));
  ATTN_ASSIGN_OR_RETURN(std::optional<std::string> version,
                        store_->GetEncoderState("codec.version"));
  uint64_t v = 0;
  if (!version || !absl::SimpleAtoi(*version, &v) || v == 0 || codec->dim() != config().dim) {
    return absl::DataLossError("token codec: bad version or dimension");
  }
  ATTN_ASSIGN_OR_RETURN(std::optional<std::string> from,
                        store_->GetEncoderState("codec.encoder_version"));
  uint64_t encoder_version = 0;
  if (from && !from->empty() && !absl::SimpleAtoi(*from, &encoder_version)) {
    return absl::DataLossError("token codec: bad encoder version");
  }
  ATTN_ASSIGN_OR_RETURN(
      std::shared_ptr<const TokenCodecState> state,
      TokenCodecState::Make(std::move(codec), v, options_.rerank, encoder_version,
                            config().candidates_from == CandidateSource::kCentroids));
  absl::MutexLock lock(&codec_mu_);
  codec_ = std::move(state);
  return absl::OkStatus();
}

namespace {

// Token rows a codec trains on, at most.
constexpr size_t kCodecSampleRows = 262144;
// Documents per re-encoding batch.
constexpr size_t kCodecBatch = 512;

}  // namespace

bool Collection::CodecIsStale() const {
  const std::shared_ptr<const TokenCodecState> state = codec();
  if (state == nullptr || state->encoder_version == 0) return false;
  if (!config().token_codec.keep_full_precision) return false;  // no rows to retrain on
  uint64_t version = 0;
  encoder(&version);
  return version != state->encoder_version && version != stale_retrain_failed_.load();
}

void Collection::MaybeStartCodecWork(bool train) {
  const TokenCodecConfig& tc = config().token_codec;
  if (tc.kind != TokenCodecKind::kResidual || stopping_ || codec_thread_busy_) return;
  const bool trained = codec() != nullptr;
  // Documents with vectors: text awaiting the encoder has no rows to train
  // on (TrainEncoder starts the training after it).
  const LiveIndex::Stats index = index_.stats();
  const uint64_t with_vectors = index.vectors - std::min(index.vectors, index.tombstones);
  const bool due =
      CodecIsStale() || (trained ? codec_pending_.load() > 0
                                 : train && tc.train_after > 0 && with_vectors >= tc.train_after);
  if (!due || options_.defer_index) return;  // a bulk load trains at its end (attnsearch-index)
  absl::MutexLock lock(&codec_thread_mu_);
  if (codec_thread_busy_.exchange(true)) return;
  if (codec_thread_.joinable()) codec_thread_.join();  // the last one, finished
  codec_thread_ = std::thread([this, trained] {
    {
      absl::MutexLock run(&codec_run_mu_);
      // TrainCodec may have trained it meanwhile. A codec on an older
      // encoder's vocabulary is trained again (rows are kept), also when
      // the encoder changed while this thread was busy.
      bool train_now = (!trained && codec() == nullptr) || CodecIsStale();
      while (!stopping_) {
        uint64_t encoder_version = 0;
        encoder(&encoder_version);
        auto r = RunCodec(train_now);
        if (r.ok()) {
          LogInfo(train_now ? "token codec trained" : "token codes re-encoded",
                  {{"collection", path_},
                   {"version", r->version},
                   {"centroids", r->centroids},
                   {"encoded", r->encoded},
                   {"train_s", r->train_seconds},
                   {"encode_s", r->encode_seconds}});
        } else {
          if (!stopping_) {
            LogWarn("token codec work failed",
                    {{"collection", path_}, {"error", r.status().message()}});
          }
          // Not tried again for this encoder until TrainCodec or a reopen.
          if (train_now) stale_retrain_failed_ = encoder_version;
          break;
        }
        if (!CodecIsStale()) break;
        train_now = true;
      }
    }
    codec_thread_busy_ = false;
  });
}

absl::StatusOr<CodecTrainingResult> Collection::TrainCodec() {
  absl::MutexLock run(&codec_run_mu_);
  stale_retrain_failed_ = 0;
  return RunCodec(/*train=*/true);
}

absl::StatusOr<CodecTrainingResult> Collection::FinishCodec() {
  absl::MutexLock run(&codec_run_mu_);
  return RunCodec(/*train=*/false);
}

absl::StatusOr<CodecTrainingResult> Collection::RunCodec(bool train) {
  using Clock = std::chrono::steady_clock;
  const TokenCodecConfig& tc = config().token_codec;
  if (tc.kind != TokenCodecKind::kResidual) {
    return absl::FailedPreconditionError(
        "token_codec: the collection holds its tokens as rows (config.token_codec.name "
        "'rows'); there is no codec to train");
  }
  const uint32_t dim = config().dim;
  const TokenDtype dtype = config().token_dtype;
  CodecTrainingResult result;
  std::shared_ptr<const TokenCodecState> state = codec();
  if (train && state != nullptr && !tc.keep_full_precision) {
    return absl::FailedPreconditionError(
        "token_codec: the collection keeps only its token codes "
        "(config.token_codec.keep_full_precision is off), so the rows a new codec would learn "
        "from and re-encode are gone; it is trained once");
  }
  if (train) {
    const auto t0 = Clock::now();
    // The encoder before the rows: should TrainEncoder replace it during the
    // scan, the codec is recorded with the older version and is stale.
    uint64_t encoder_version = 0;
    const std::shared_ptr<const text::Encoder> enc = encoder(&encoder_version);
    // A uniform sample of the live documents' token rows (reservoir).
    std::vector<float> sample;
    std::vector<float> rows;
    uint64_t seen = 0;
    std::mt19937_64 rng(tc.bits * 1000003 + dim);
    ATTN_RETURN_IF_ERROR(store_->ScanTokens(0, [&](Label l, std::string_view v, uint32_t r) {
      if (index_.IsTombstoned(l)) return absl::OkStatus();
      uint32_t n = 0;
      ATTN_RETURN_IF_ERROR(codec::DecodeTokens(v, dim, dtype, &rows, &n));
      for (uint32_t i = 0; i < n; ++i) {
        ++seen;
        size_t at = sample.size() / dim;
        if (at >= kCodecSampleRows) {
          at = size_t(rng() % seen);
          if (at >= kCodecSampleRows) continue;
          std::copy_n(rows.data() + size_t(i) * dim, dim, sample.data() + at * dim);
        } else {
          sample.insert(sample.end(), rows.data() + size_t(i) * dim,
                        rows.data() + size_t(i + 1) * dim);
        }
      }
      return absl::OkStatus();
    }));
    const size_t n = sample.size() / dim;
    TokenCodecTraining how{.bits = tc.bits,
                           .centroids = tc.centroids,
                           .collection_tokens = seen,
                           .encoder = enc.get()};
    auto trained = TrainTokenCodec(sample.data(), n, dim, how);
    if (!trained.ok()) {
      return Annotate(trained.status(),
                      absl::StrCat("token_codec: training on ", n, " token rows of ",
                                   store_->live_count(), " documents"));
    }
    result.sample_tokens = n;
    result.train_mse = (*trained)->train_mse();
    const uint64_t version = (state ? state->version : 0) + 1;
    const std::string model = (*trained)->Serialize();
    // Centroids from the vocabulary belong to this encoder version.
    if (!UsesVocabulary(how, dim)) encoder_version = 0;
    ATTN_ASSIGN_OR_RETURN(
        state, TokenCodecState::Make(std::move(*trained), version, options_.rerank, encoder_version,
                                     config().candidates_from == CandidateSource::kCentroids));
    {
      // From here on, writes encode with the new codec.
      absl::MutexLock write_lock(&write_mu_);
      absl::MutexLock index_lock(&index_mu_);
      ATTN_RETURN_IF_ERROR(RecoverStore());
      ATTN_RETURN_IF_ERROR(
          store_->PutEncoderState({{"codec.model", model},
                                   {"codec.version", absl::StrCat(version)},
                                   {"codec.encoder_version", absl::StrCat(encoder_version)}}));
      absl::MutexLock lock(&codec_mu_);
      // Searches score the documents not yet re-encoded with the codec
      // they were encoded with, until the re-encoding is done.
      previous_codec_ = codec_;
      codec_ = state;
    }
    codec_pending_ = store_->live_count();
    result.train_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  if (state == nullptr) return result;
  result.version = state->version;
  result.centroids = state->codec->num_centroids();
  result.bits = state->codec->bits();
  result.code_bytes = state->codec->code_bytes();
  // Encode every live document whose codes are older: outside the locks,
  // batch by batch; each batch is handed over under the writer locks, for
  // the documents still live then.
  const auto t1 = Clock::now();
  LabelBitmap current;
  ATTN_RETURN_IF_ERROR(store_->ScanCodes(0, [&](Label l, std::string_view v) {
    if (CodesVersion(v) == state->version) current.Set(l);
    return absl::OkStatus();
  }));
  std::vector<std::pair<Label, std::string>> batch;
  std::vector<uint32_t> batch_rows;
  std::vector<float> batch_floats;  // the batch's rows, back to back
  auto hand_over = [&]() -> absl::Status {
    if (batch.empty()) return absl::OkStatus();
    {
      // Encoded with no lock held.
      std::vector<std::pair<const float*, uint32_t>> matrices;
      size_t at = 0;
      for (uint32_t n : batch_rows) {
        matrices.emplace_back(batch_floats.data() + at * dim, n);
        at += n;
      }
      std::vector<std::string> records = state->EncodeMany(matrices);
      for (size_t i = 0; i < batch.size(); ++i) batch[i].second = std::move(records[i]);
      batch_floats.clear();
    }
    absl::MutexLock write_lock(&write_mu_);
    absl::MutexLock index_lock(&index_mu_);
    std::vector<std::pair<Label, std::string>> live;
    std::vector<uint32_t> live_rows;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (index_.IsTombstoned(batch[i].first)) continue;
      live.push_back(std::move(batch[i]));
      live_rows.push_back(batch_rows[i]);
    }
    ATTN_RETURN_IF_ERROR(store_->PutCodes(live, /*drop_rows=*/!tc.keep_full_precision));
    for (const auto& [label, record] : live) state->HoldCodes(label, record);
    if (arena_ != nullptr) {
      for (size_t i = 0; i < live.size(); ++i) {
        absl::Status s = arena_->Replace(live[i].first, live[i].second, live_rows[i], kCodesRecord);
        if (absl::IsNotFound(s)) {
          s = arena_->Add(live[i].first, live[i].second, live_rows[i], kCodesRecord);
        }
        if (!s.ok()) {
          LogWarn("document's codes left out of the token arena",
                  {{"collection", path_}, {"label", live[i].first}, {"error", s.message()}});
        }
      }
    }
    result.encoded += live.size();
    const uint64_t pending = codec_pending_.load();
    codec_pending_ = pending - std::min<uint64_t>(pending, live.size());
    batch.clear();
    batch_rows.clear();
    return absl::OkStatus();
  };
  // The scan stops at each full batch, which is handed over with no store
  // read in progress (a writer's recovery of the store waits for reads).
  std::vector<float> rows;
  for (Label from = 0;;) {
    std::optional<Label> full;
    const absl::Status scanned =
        store_->ScanTokens(from, [&](Label l, std::string_view v, uint32_t) -> absl::Status {
          if (stopping_) return absl::CancelledError("the collection is closing");
          if (current.Test(l) || index_.IsTombstoned(l)) return absl::OkStatus();
          uint32_t n = 0;
          ATTN_RETURN_IF_ERROR(codec::DecodeTokens(v, dim, dtype, &rows, &n));
          batch_floats.insert(batch_floats.end(), rows.begin(), rows.begin() + size_t(n) * dim);
          batch.emplace_back(l, std::string());
          batch_rows.push_back(n);
          if (batch.size() < kCodecBatch) return absl::OkStatus();
          full = l;
          return absl::AbortedError("batch full");
        });
    if (!full) {
      ATTN_RETURN_IF_ERROR(scanned);
      break;
    }
    ATTN_RETURN_IF_ERROR(hand_over());
    from = *full + 1;
  }
  ATTN_RETURN_IF_ERROR(hand_over());
  codec_pending_ = 0;
  {
    // Every live document now holds this codec's codes.
    absl::MutexLock lock(&codec_mu_);
    previous_codec_.reset();
  }
  // The codes replaced rows eight times their size: the slabs they left
  // half empty are packed now rather than held until the next open.
  if (arena_ != nullptr && result.encoded > 0) arena_->Compact(0.9);
  result.encode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  // Keeping only codes: the disk of the rows just dropped comes back now,
  // not at some later compaction (which may still do it, if this fails or
  // the collection closes meanwhile: the codes are stored either way).
  if (!tc.keep_full_precision && result.encoded > 0) {
    const auto t2 = Clock::now();
    const absl::Status compacted = store_->CompactTokens(&stopping_);
    result.compact_seconds = std::chrono::duration<double>(Clock::now() - t2).count();
    if (!compacted.ok() && !stopping_) {
      LogWarn("token rows not compacted away",
              {{"collection", path_}, {"error", compacted.message()}});
    }
  }
  return result;
}

absl::Status Collection::LoadTuning() {
  ATTN_ASSIGN_OR_RETURN(std::optional<AnnTuning> stored, store_->GetAnnTuning());
  if (!stored) return absl::OkStatus();
  auto params = AnnSearchParams::Parse(stored->ann_params);
  if (!params.ok()) {
    // Only a default knob: searches still work without it.
    LogWarn("stored ANN tuning ignored", {{"collection", path_},
                                          {"ann_params", stored->ann_params},
                                          {"error", params.status().message()}});
    return absl::OkStatus();
  }
  absl::MutexLock lock(&tuning_mu_);
  tuning_ = std::move(stored);
  tuned_params_ = *params;
  return absl::OkStatus();
}

std::optional<AnnTuning> Collection::tuning() const {
  absl::MutexLock lock(&tuning_mu_);
  return tuning_;
}

AnnSearchParams Collection::DefaultSearchParams() const {
  absl::MutexLock lock(&tuning_mu_);
  return tuned_params_;
}

absl::StatusOr<IndexTuningResult> Collection::TuneIndex(double target_recall, uint32_t k,
                                                        uint32_t sample) {
  if (!(target_recall > 0 && target_recall <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_recall: ", target_recall, " is not in (0, 1]"));
  }
  if (k < 1 || k > kMaxTuneK) {
    return absl::InvalidArgumentError(absl::StrCat("k: ", k, " is not in 1..", kMaxTuneK));
  }
  if (sample < 1 || sample > kMaxTuneSample) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: ", sample, " is not in 1..", kMaxTuneSample));
  }
  const auto start = std::chrono::steady_clock::now();
  // The writer mutex keeps every Add (and a rebuild's swap) out while the
  // index is read; with nothing pending, the inserter does not take the
  // graph lock either, so the shared lock here never holds up searches.
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock index_lock(&index_mu_);
  ATTN_RETURN_IF_ERROR(index_.Drain());
  AnnTuneResult tuned;
  { ATTN_ASSIGN_OR_RETURN(tuned, index_.Tune(target_recall, k, sample)); }
  IndexTuningResult result;
  result.knob = tuned.knob;
  result.value = tuned.value;
  result.ann_params = tuned.ann_params;
  result.sample_recall = tuned.sample_recall;
  result.sample_queries = tuned.sample_queries;
  if (config().candidates_from == CandidateSource::kCentroids && FirstStageReady()) {
    ATTN_RETURN_IF_ERROR(
        TuneFirstStage(target_recall, k, std::min(sample, kMaxFirstStageTuneSample), &result));
    result.ann_params = absl::StrCat(result.ann_params, result.ann_params.empty() ? "" : ",",
                                     "probe=", result.probe);
  }
  if (!result.ann_params.empty()) {
    AnnTuning t;
    t.ann_params = result.ann_params;
    t.target_recall = target_recall;
    t.k = k;
    t.sample_recall = tuned.sample_recall;
    t.sample_queries = tuned.sample_queries;
    ATTN_ASSIGN_OR_RETURN(AnnSearchParams params, AnnSearchParams::Parse(t.ann_params));
    ATTN_RETURN_IF_ERROR(RecoverStore());
    ATTN_RETURN_IF_ERROR(store_->PutAnnTuning(t));
    absl::MutexLock lock(&tuning_mu_);
    tuning_ = std::move(t);
    tuned_params_ = params;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

absl::Status Collection::TuneFirstStage(double target_recall, uint32_t k, uint32_t sample,
                                        IndexTuningResult* result) const {
  // Held-out queries: stored documents' own rows (at most 32), drawn with a
  // fixed seed; each one is left out of its own top k and candidates.
  constexpr uint32_t kQueryRows = 32;
  constexpr uint32_t kCandidates = 100;
  std::vector<SearchQuery> queries;
  std::vector<std::string> own;
  std::mt19937_64 rng(0x7475);
  const Label end = store_->next_label();
  for (uint32_t tries = 0; queries.size() < sample && tries < 20 * sample && end > 0; ++tries) {
    const Label l = rng() % end;
    if (index_.IsTombstoned(l)) continue;
    std::vector<std::optional<Document>> got;
    ATTN_RETURN_IF_ERROR(store_->GetDocuments({l}, /*include_vectors=*/true, &got));
    if (!got[0] || got[0]->num_tokens == 0) continue;
    SearchQuery q;
    q.num_tokens = std::min(got[0]->num_tokens, kQueryRows);
    q.tokens.assign(got[0]->tokens.begin(),
                    got[0]->tokens.begin() + ptrdiff_t(size_t(q.num_tokens) * config().dim));
    queries.push_back(std::move(q));
    own.push_back(got[0]->id);
  }
  if (queries.empty()) return absl::OkStatus();
  const uint64_t live = store_->live_count();
  // The exhaustive rerank's top k of each, less the document itself: every
  // live document a candidate, whatever the request limits.
  SearchParts unlimited = search_.parts();
  unlimited.limits.max_candidates = std::numeric_limits<uint32_t>::max();
  unlimited.limits.max_request_bytes = 0;
  const SearchPipeline exhaustive(std::move(unlimited));
  std::vector<std::set<std::string>> truth(queries.size());
  for (size_t i = 0; i < queries.size(); ++i) {
    SearchQuery q = queries[i];
    q.top_k = uint32_t(std::min<uint64_t>(k + 1, live));
    q.candidates = uint32_t(live);
    ATTN_ASSIGN_OR_RETURN(const SearchResult r, exhaustive.Run(q, absl::InfiniteFuture()));
    for (const SearchHit& h : r.hits) {
      if (h.id != own[i] && truth[i].size() < k) truth[i].insert(h.id);
    }
  }
  // Probing every centroid is the most there is to try.
  const std::shared_ptr<const TokenCodecState> codes = codec();
  const int most = int(std::min<uint32_t>(
      128, codes && codes->first_stage ? codes->first_stage->num_centroids() : 128));
  for (int probe = 1;; probe = std::min(2 * probe, most)) {
    double sum = 0;
    for (size_t i = 0; i < queries.size(); ++i) {
      SearchQuery q = queries[i];
      q.candidates = q.top_k = uint32_t(std::min<uint64_t>(kCandidates + 1, live));
      q.mode = RerankMode::kNone;
      q.ann_params = absl::StrCat("probe=", probe);
      ATTN_ASSIGN_OR_RETURN(const SearchResult r, search_.Run(q, absl::InfiniteFuture()));
      size_t found = 0, taken = 0;
      for (const SearchHit& h : r.hits) {
        if (h.id == own[i] || taken == kCandidates) continue;
        ++taken;
        found += truth[i].contains(h.id);
      }
      sum += truth[i].empty() ? 1.0 : double(found) / double(truth[i].size());
    }
    result->probe = probe;
    result->first_stage_recall = sum / double(queries.size());
    result->first_stage_queries = queries.size();
    if (result->first_stage_recall >= target_recall || probe >= most) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<EncoderTrainingResult> Collection::TrainEncoder(text::EncoderOptions options) {
  ATTN_RETURN_IF_ERROR(DeriveEncoderDims(config().dim, &options));
  absl::StatusOr<EncoderTrainingResult> result = TrainAndReencode(std::move(options));
  // The codec trains now that the text has rows (once train_after
  // documents have them), or again if it was on the old vocabulary; in the
  // background.
  if (result.ok()) MaybeStartCodecWork(/*train=*/true);
  return result;
}

absl::StatusOr<EncoderTrainingResult> Collection::TrainAndReencode(text::EncoderOptions options) {
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock index_lock(&index_mu_);
  ATTN_RETURN_IF_ERROR(options.Validate());  // the request's errors before the data's
  EncoderTrainingResult result;
  uint64_t texts = 0;
  auto source = [&](const std::function<absl::Status(std::string_view)>& sink) {
    return store_->ScanDocRecords(0, [&](Label l, const Document& d) {
      ATTN_RETURN_IF_ERROR(CheckNotDropped());
      if (index_.IsTombstoned(l)) return absl::OkStatus();
      if (d.text.empty()) return absl::OkStatus();
      ++texts;
      return sink(d.text);
    });
  };
  absl::StatusOr<std::unique_ptr<text::Encoder>> trained =
      text::Encoder::Train(source, options, &result.training);
  if (!trained.ok() && texts == 0 &&
      trained.status().code() == absl::StatusCode::kInvalidArgument) {
    return absl::FailedPreconditionError(
        "collection: no stored document has text to train the encoder on; upsert text first");
  }
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<text::Encoder> enc, std::move(trained));
  ATTN_RETURN_IF_ERROR(CheckNotDropped());
  uint64_t version = 0;
  encoder(&version);
  result.version = version + 1;
  ATTN_RETURN_IF_ERROR(RecoverStore());
  const Label below = store_->next_label();
  ATTN_RETURN_IF_ERROR(store_->PutEncoderState({{"model", enc->Serialize()},
                                                {"version", absl::StrCat(result.version)},
                                                {"reencode_below", absl::StrCat(below)}}));
  {
    absl::MutexLock lock(&encoder_mu_);
    encoder_ = std::move(enc);
    encoder_version_ = result.version;
  }
  const auto start = std::chrono::steady_clock::now();
  ATTN_ASSIGN_OR_RETURN(result.reencoded, Reencode(below));
  ATTN_RETURN_IF_ERROR(store_->PutEncoderState({{"reencode_below", ""}}));
  result.reencode_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

absl::StatusOr<uint64_t> Collection::Reencode(Label below) {
  uint64_t version = 0;
  const std::shared_ptr<const text::Encoder> enc = encoder(&version);
  if (enc == nullptr) return 0;
  uint64_t count = 0;
  std::vector<Document> batch;
  auto flush = [&]() -> absl::Status {
    if (batch.empty()) return absl::OkStatus();
    write_mu_.AssertHeld();  // held by Reencode's caller, for the lock checker
    index_mu_.AssertHeld();
    ATTN_RETURN_IF_ERROR(CommitPrepared(batch));
    count += batch.size();
    batch.clear();
    return absl::OkStatus();
  };
  ATTN_RETURN_IF_ERROR(store_->ScanDocRecords(0, [&](Label l, const Document& d) {
    ATTN_RETURN_IF_ERROR(CheckNotDropped());
    if (l >= below) return absl::OkStatus();
    if (d.encoded_by == kClientVectors || d.encoded_by == version) return absl::OkStatus();
    if (index_.IsTombstoned(l)) return absl::OkStatus();
    Document doc;
    doc.id = d.id;
    doc.text = d.text;
    doc.metadata = d.metadata;
    if (absl::Status s = PrepareDocument(batch.size(), enc.get(), version, &doc); !s.ok()) {
      // Left as it is (awaiting, or encoded by the older version) rather than
      // failing the whole collection.
      LogWarn("document not encoded",
              {{"collection", path_}, {"id", d.id}, {"error", s.message()}});
      return absl::OkStatus();
    }
    batch.push_back(std::move(doc));
    return batch.size() >= 512 ? flush() : absl::OkStatus();
  }));
  ATTN_RETURN_IF_ERROR(flush());
  return count;
}

absl::Status Collection::CheckIdCount(size_t n) const {
  if (n > options_.limits.max_batch_documents) {
    return absl::InvalidArgumentError(
        absl::StrCat("ids: ", n, " ids exceed the limit of ", options_.limits.max_batch_documents));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeleteResult> Collection::Delete(const std::vector<std::string>& ids) {
  ATTN_RETURN_IF_ERROR(CheckIdCount(ids.size()));
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: must not be empty"));
    }
  }
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock index_lock(&index_mu_);
  ATTN_RETURN_IF_ERROR(RecoverStore());
  ATTN_ASSIGN_OR_RETURN(std::vector<std::optional<Label>> labels, store_->LookupIds(ids));
  DeleteResult result;
  std::vector<DocDelete> deletes;
  absl::flat_hash_set<std::string_view> seen;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!seen.insert(ids[i]).second) continue;
    if (labels[i]) {
      deletes.push_back({ids[i], *labels[i]});
    } else {
      result.not_found_ids.push_back(ids[i]);
    }
  }
  ATTN_RETURN_IF_ERROR(store_->Commit({}, deletes));
  std::vector<Label> dead;
  for (const auto& d : deletes) dead.push_back(d.label);
  index_.AssertWriterHeld();
  ATTN_RETURN_IF_ERROR(index_.Apply(dead, {}, {}));
  LexicalApply({}, 0, {}, dead);
  RemoveFromArena(dead);
  result.deleted = deletes.size();
  return result;
}

absl::StatusOr<GetResult> Collection::Get(const std::vector<std::string>& ids,
                                          bool include_vectors) const {
  ATTN_RETURN_IF_ERROR(CheckIdCount(ids.size()));
  // An id asked for twice would be read and sent twice: one request of a
  // few kilobytes could make the server hold gigabytes.
  absl::flat_hash_map<std::string_view, size_t> seen;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i].empty()) {  // as Delete says: no document has it
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: must not be empty"));
    }
    auto [it, fresh] = seen.emplace(ids[i], i);
    if (!fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat("ids[", i, "]: '", ids[i], "' repeats ids[", it->second, "]"));
    }
  }
  // One view for both reads: the labels found are those it reads.
  ATTN_ASSIGN_OR_RETURN(const DocStore::ReadView view, store_->NewReadView());
  ATTN_ASSIGN_OR_RETURN(std::vector<std::optional<Label>> labels, store_->LookupIds(ids, &view));
  std::vector<Label> found;
  for (const auto& l : labels) {
    if (l) found.push_back(*l);
  }
  std::vector<std::optional<Document>> docs;
  // A document kept as codes only gives back its decoded rows.
  DocStore::CodesDecoder decode;
  if (const std::shared_ptr<const TokenCodecState> codes = codec()) {
    decode = [codes](std::string_view record, Document* d) {
      return codes->DecodeRecord(record, d);
    };
  }
  // Read a few documents at a time, and stop once they hold more than a
  // request may (max_request_bytes): nothing is read beyond the limit.
  constexpr size_t kReadBatch = 16;
  size_t bytes = 0;
  for (size_t first = 0; first < found.size(); first += kReadBatch) {
    const std::vector<Label> some(found.begin() + first,
                                  found.begin() + std::min(found.size(), first + kReadBatch));
    std::vector<std::optional<Document>> read;
    ATTN_RETURN_IF_ERROR(store_->GetDocuments(some, include_vectors, &read, &view, decode));
    for (auto& d : read) {
      if (d) bytes += DocumentBytes(*d);
      docs.push_back(std::move(d));
    }
    ATTN_RETURN_IF_ERROR(CheckRequestBytes(
        bytes, options_.limits.max_request_bytes,
        absl::StrCat("ids: the documents of the first ", first + some.size(), " found of ",
                     found.size(),
                     include_vectors ? " (ask for fewer, or without include_vectors)"
                                     : " (ask for fewer)")));
  }
  GetResult result;
  size_t k = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (labels[i] && docs[k]) {
      result.documents.push_back(std::move(*docs[k]));
    } else {
      result.not_found_ids.push_back(ids[i]);
    }
    if (labels[i]) ++k;
  }
  return result;
}

absl::StatusOr<SearchResult> Collection::Search(SearchQuery q, absl::Time deadline) const {
  return search_.Run(std::move(q), deadline);
}

CollectionStats Collection::Stats() const {
  CollectionStats stats;
  stats.num_documents = store_->live_count();
  const LiveIndex::Stats index = index_.stats();
  stats.num_tombstones = index.tombstones;
  stats.ann_vectors = index.vectors;
  stats.ann_pending = index.pending;
  stats.rebuild_in_progress = index.rebuild_in_progress;
  stats.rebuilds = index.rebuilds;
  const DocStore::DiskUsage disk = store_->Disk();
  std::error_code ec;
  const uintmax_t snapshot = std::filesystem::file_size(index_.snapshot_path(), ec);
  stats.disk_ann_bytes = ec ? 0 : uint64_t(snapshot);
  stats.disk_table_bytes = disk.table_files;
  stats.disk_log_bytes = disk.log_files;
  stats.disk_other_bytes = disk.other_files;
  stats.disk_bytes = disk.table_files + disk.log_files + disk.other_files + stats.disk_ann_bytes;
  const DocStore::MemoryUsage memory = store_->Memory();
  stats.block_cache_bytes = memory.block_cache;
  stats.memtable_bytes = memory.memtables;
  stats.table_reader_bytes = memory.table_readers;
  if (arena_ != nullptr) {
    const TokenArena::Stats a = arena_->stats();
    stats.token_arena = true;
    stats.arena_tokens = a.rows;
    stats.arena_live_bytes = a.live_bytes;
    stats.arena_bytes = a.allocated_bytes;
  }
  stats.writes_stopped = store_->write_stopped();
  if (const std::shared_ptr<const TokenCodecState> codes = codec(); codes && codes->first_stage) {
    stats.first_stage_bytes = codes->first_stage->memory_bytes();
  }
  if (const std::shared_ptr<const TokenCodecState> codes = codec()) {
    stats.codec_version = codes->version;
    stats.codec_pending = codec_pending_.load();
  }
  const std::shared_ptr<const text::Encoder> enc = encoder(&stats.encoder_version);
  if (enc != nullptr) stats.encoder_vocabulary = enc->vocabulary_size();
  if (const std::optional<AnnTuning> t = tuning()) {
    stats.tuned_ann_params = t->ann_params;
    stats.tuned_target_recall = t->target_recall;
  }
  return stats;
}

absl::Status Collection::RebuildIndex() { return index_.Rebuild(); }

}  // namespace attnsearch
