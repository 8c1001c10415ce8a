// ingest: offline bulk loading through the engine, in-process, and (with
// --ingest_input) through attnsearch-index from a file.
//
//   attnsearch-bench --benchmarks=ingest [--num_docs=100000] [--tokens=64]
//       [--dim=128] [--dtype=bf16|f32|int8] [--batch=1000] [--ann_spec=HNSW32,SQfp16]
//       [--work_dir=DIR (default: a fresh temporary directory, removed after)]
//       [--ingest_input=jsonl,npy --ingest_modes=offline,online --ingest_threads=1,2
//        --indexer=PATH --server_binary=PATH]
//
// --ingest_input: see bench_ingest_input.cc.
//
// Opens a Catalog with CollectionOptions::ForBulkLoad() (no WAL, no sync,
// index deferred), creates one collection and Upserts synthetic clustered
// documents (`tokens` token rows of `dim`, plus the pooled vector, an id and
// a one-line text) in batches of --batch. Reported:
//   - docs/s and MB/s of the Upsert calls alone (document generation is not
//     timed); MB are the f32 vector bytes handed to Upsert (tokens + pooled,
//     what a client would send), 1 MB = 10^6 bytes;
//   - the same including the final Flush() (which makes the load durable);
//   - BuildIndex() separately (the ANN build over every document);
//   - bytes stored per document: the sum of the sizes of every file under
//     the collection's store/ directory after Flush, divided by the number
//     of documents (the ANN snapshot is reported apart).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "benchmarks.h"
#include "core/status.h"
#include "engine/catalog.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t DirBytes(const std::filesystem::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The load's figures.
struct IngestRun {
  uint64_t stored = 0, indexed = 0;
  double upsert_s = 0, flush_s = 0, build_s = 0, wall_s = 0;
  uint64_t store_bytes = 0, snapshot_bytes = 0;
};

// Documents [first, first + n) of the synthetic set.
std::vector<Document> MakeDocuments(const BenchFlags& f, const SyntheticDataset& data, size_t first,
                                    size_t n) {
  std::vector<Document> docs(n);
  for (size_t k = 0; k < n; ++k) {
    Document& d = docs[k];
    const uint64_t i = first + k;
    d.id = "doc-" + std::to_string(i);
    d.text = "synthetic document " + std::to_string(i) + " of cluster " +
             std::to_string(data.Cluster(i));
    d.pooled.resize(f.dim);
    data.Pooled(i, d.pooled.data());
    d.num_tokens = data.Tokens(i, &d.tokens);
  }
  return docs;
}

}  // namespace

SyntheticOptions IngestSynthetic(const BenchFlags& f) {
  SyntheticOptions so = SyntheticFromFlags(f);
  so.tokens_min = so.tokens_max = uint32_t(f.tokens);
  if (!f.ingest_input.empty()) {
    so.tokens_min = uint32_t(f.tokens / 2);
    so.tokens_max = uint32_t(f.tokens * 3 / 2);
    so.token_counts = TokenCountDistribution::kUniform;
  }
  return so;
}

namespace {

// Upserts every document in batches of --batch (only the calls timed).
absl::Status UpsertAll(const BenchFlags& f, Collection* coll, IngestRun* run) {
  SyntheticDataset data(IngestSynthetic(f));
  size_t next_report = 0;
  for (size_t first = 0; first < f.num_docs; first += size_t(f.batch)) {
    const size_t n = std::min(size_t(f.batch), f.num_docs - first);
    std::vector<Document> docs = MakeDocuments(f, data, first, n);
    const auto t0 = Clock::now();
    auto r = coll->Upsert(std::move(docs));
    run->upsert_s += Since(t0);
    if (!r.ok()) return r.status();
    run->stored += *r;
    if (first >= next_report) {
      std::printf("  %zu docs, %.0f docs/s so far\n", first + n,
                  double(run->stored) / run->upsert_s);
      std::fflush(stdout);
      next_report += std::max<size_t>(f.num_docs / 5, 1);
    }
  }
  return absl::OkStatus();
}

// The load into a fresh catalog in `dir`: Upserts, Flush, BuildIndex, and
// the bytes the collection takes.
absl::StatusOr<IngestRun> Ingest(const BenchFlags& f, const std::string& dir) {
  CatalogOptions copts;
  copts.data_dir = dir;
  copts.collection = CollectionOptions::ForBulkLoad();
  const std::string name = "ingest";
  IngestRun run;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Catalog> catalog, Catalog::Open(copts));
  CollectionConfig config;
  config.dim = f.dim;
  config.token_dtype = DtypeFromFlags(f);
  config.ann_spec = f.ann_spec;
  auto coll = catalog->Create(name, config);
  if (!coll.ok()) return coll.status();
  std::printf("ingest: %zu docs x %d tokens x %u dims (%s), batches of %d, into %s\n", f.num_docs,
              f.tokens, f.dim, f.dtype.c_str(), f.batch, dir.c_str());
  std::fflush(stdout);
  const auto w0 = Clock::now();
  ATTN_RETURN_IF_ERROR(UpsertAll(f, &**coll, &run));
  auto t0 = Clock::now();
  absl::Status st = (*coll)->Flush();
  run.flush_s = Since(t0);
  if (!st.ok()) return st;
  run.wall_s = Since(w0);
  t0 = Clock::now();
  auto built = (*coll)->BuildIndex();
  run.build_s = Since(t0);
  if (!built.ok()) return built.status();
  run.indexed = *built;
  const auto cdir = std::filesystem::path(dir) / "collections" / name;
  run.store_bytes = DirBytes(cdir / "store");
  std::error_code ec;
  run.snapshot_bytes = std::filesystem::file_size(cdir / "ann.snapshot", ec);
  if (ec) run.snapshot_bytes = 0;
  return run;
}

// The table, the bytes stored and the record.
BenchOutput ReportIngest(const BenchFlags& f, const IngestRun& r) {
  const TokenDtype dtype = DtypeFromFlags(f);
  const double stored = double(r.stored);
  const double input_bytes = stored * (double(f.tokens) + 1.0) * f.dim * 4.0;
  const double token_bytes = double(f.dim) * TokenDtypeSize(dtype) +
                             (dtype == TokenDtype::kInt8 ? 4.0 : 0.0);  // int8: a scale per row
  const double raw_stored = stored * (double(f.tokens) * token_bytes + double(f.dim) * 4);
  const double with_flush = r.upsert_s + r.flush_s;
  std::vector<std::vector<std::string>> table = {
      {"Upsert calls only", Fmt("%.2f", r.upsert_s), Fmt("%.0f", stored / r.upsert_s),
       Fmt("%.1f", input_bytes / 1e6 / r.upsert_s)},
      {"Upsert + Flush", Fmt("%.2f", with_flush), Fmt("%.0f", stored / with_flush),
       Fmt("%.1f", input_bytes / 1e6 / with_flush)},
      {"wall incl. generation + Flush", Fmt("%.2f", r.wall_s), Fmt("%.0f", stored / r.wall_s),
       Fmt("%.1f", input_bytes / 1e6 / r.wall_s)},
      {"BuildIndex (ANN)", Fmt("%.2f", r.build_s), Fmt("%.0f", double(r.indexed) / r.build_s),
       "-"}};
  std::printf("%s", FormatTable({"phase", "seconds", "docs/s", "MB/s (f32 input)"}, table).c_str());
  std::printf(
      "stored: %.0f bytes/doc in store/ (raw vectors %.0f bytes/doc: tokens %s + pooled "
      "f32), ANN snapshot %.1f MiB (%.0f bytes/doc)\n",
      double(r.store_bytes) / stored, raw_stored / stored, f.dtype.c_str(),
      double(r.snapshot_bytes) / 1048576.0, double(r.snapshot_bytes) / stored);
  BenchOutput out;
  out.params = {{"num_docs", f.num_docs},
                {"tokens", f.tokens},
                {"dim", f.dim},
                {"dtype", f.dtype},
                {"batch", f.batch},
                {"ann_spec", f.ann_spec},
                {"seed", f.seed},
                {"clusters", f.clusters},
                {"options", "CollectionOptions::ForBulkLoad()"}};
  out.results = {{"docs", r.stored},
                 {"upsert_seconds", r.upsert_s},
                 {"flush_seconds", r.flush_s},
                 {"wall_seconds_incl_generation", r.wall_s},
                 {"docs_per_s", stored / r.upsert_s},
                 {"mb_per_s_f32_input", input_bytes / 1e6 / r.upsert_s},
                 {"docs_per_s_incl_flush", stored / with_flush},
                 {"build_index_seconds", r.build_s},
                 {"indexed", r.indexed},
                 {"store_bytes", r.store_bytes},
                 {"store_bytes_per_doc", double(r.store_bytes) / stored},
                 {"raw_vector_bytes_per_doc", raw_stored / stored},
                 {"ann_snapshot_bytes", r.snapshot_bytes}};
  return out;
}

}  // namespace

absl::StatusOr<BenchOutput> RunIngest(const BenchFlags& f) {
  if (f.tokens <= 0 || f.batch <= 0) return absl::InvalidArgumentError("--tokens, --batch > 0");
  std::string dir = f.work_dir;
  bool remove_dir = false;
  if (dir.empty()) {
    char tmpl[] = "/tmp/attn_ingest_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    dir = tmpl;
    remove_dir = true;
  }
  absl::StatusOr<IngestRun> run = Ingest(f, dir);
  if (!run.ok()) return run.status();
  BenchOutput out = ReportIngest(f, *run);
  if (!f.ingest_input.empty()) {
    absl::StatusOr<nlohmann::json> indexer =
        RunIndexerOnInput(f, dir, double(run->stored) / run->upsert_s);
    if (!indexer.ok()) return indexer.status();
    out.params["ingest_input"] = f.ingest_input;
    out.params["ingest_modes"] = f.ingest_modes;
    out.params["ingest_repeats"] = f.ingest_repeats;
    out.params["tokens_range"] = {f.tokens / 2, f.tokens * 3 / 2};
    out.results["indexer"] = *std::move(indexer);
  }
  if (remove_dir) std::filesystem::remove_all(dir);
  return out;
}

}  // namespace attnsearch::bench
