// ingest: offline bulk loading through the engine, in-process.
//
//   attnsearch-bench --benchmarks=ingest [--num_docs=100000] [--tokens=64]
//       [--dim=128] [--dtype=bf16|f32|int8] [--batch=1000] [--ann_spec=HNSW32,SQfp16]
//       [--work_dir=DIR (default: a fresh temporary directory, removed after)]
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

}  // namespace

absl::StatusOr<BenchOutput> RunIngest(const BenchFlags& f) {
  const TokenDtype dtype = DtypeFromFlags(f);
  if (f.tokens <= 0 || f.batch <= 0) return absl::InvalidArgumentError("--tokens, --batch > 0");
  std::string dir = f.work_dir;
  bool remove_dir = false;
  if (dir.empty()) {
    char tmpl[] = "/tmp/attn_ingest_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    dir = tmpl;
    remove_dir = true;
  }
  SyntheticOptions so = SyntheticFromFlags(f);
  so.tokens_min = so.tokens_max = uint32_t(f.tokens);
  SyntheticDataset data(so);

  CatalogOptions copts;
  copts.data_dir = dir;
  copts.collection = CollectionOptions::ForBulkLoad();
  const std::string name = "ingest";
  uint64_t stored = 0;
  double upsert_s = 0, flush_s = 0, build_s = 0, wall_s = 0;
  uint64_t indexed = 0;
  uint64_t store_bytes = 0, snapshot_bytes = 0;
  {
    auto catalog = Catalog::Open(copts);
    if (!catalog.ok()) return catalog.status();
    CollectionConfig config;
    config.dim = f.dim;
    config.token_dtype = dtype;
    config.ann_spec = f.ann_spec;
    auto coll = (*catalog)->Create(name, config);
    if (!coll.ok()) return coll.status();

    std::printf("ingest: %zu docs x %d tokens x %u dims (%s), batches of %d, into %s\n", f.num_docs,
                f.tokens, f.dim, f.dtype.c_str(), f.batch, dir.c_str());
    std::fflush(stdout);
    const auto w0 = Clock::now();
    size_t next_report = 0;
    for (size_t first = 0; first < f.num_docs; first += size_t(f.batch)) {
      const size_t n = std::min(size_t(f.batch), f.num_docs - first);
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
      const auto t0 = Clock::now();
      auto r = (*coll)->Upsert(std::move(docs));
      upsert_s += Since(t0);
      if (!r.ok()) return r.status();
      stored += *r;
      if (first >= next_report) {
        std::printf("  %zu docs, %.0f docs/s so far\n", first + n, double(stored) / upsert_s);
        std::fflush(stdout);
        next_report += std::max<size_t>(f.num_docs / 5, 1);
      }
    }
    auto t0 = Clock::now();
    absl::Status st = (*coll)->Flush();
    flush_s = Since(t0);
    if (!st.ok()) return st;
    wall_s = Since(w0);
    t0 = Clock::now();
    auto built = (*coll)->BuildIndex();
    build_s = Since(t0);
    if (!built.ok()) return built.status();
    indexed = *built;
    const auto cdir = std::filesystem::path(dir) / "collections" / name;
    store_bytes = DirBytes(cdir / "store");
    std::error_code ec;
    snapshot_bytes = std::filesystem::file_size(cdir / "ann.snapshot", ec);
    if (ec) snapshot_bytes = 0;
  }
  if (remove_dir) std::filesystem::remove_all(dir);

  const double input_bytes = double(stored) * (double(f.tokens) + 1.0) * f.dim * 4.0;
  const double token_bytes = double(f.dim) * TokenDtypeSize(dtype) +
                             (dtype == TokenDtype::kInt8 ? 4.0 : 0.0);  // int8: a scale per row
  const double raw_stored = double(stored) * (double(f.tokens) * token_bytes + double(f.dim) * 4);
  std::vector<std::vector<std::string>> table = {
      {"Upsert calls only", Fmt("%.2f", upsert_s), Fmt("%.0f", double(stored) / upsert_s),
       Fmt("%.1f", input_bytes / 1e6 / upsert_s)},
      {"Upsert + Flush", Fmt("%.2f", upsert_s + flush_s),
       Fmt("%.0f", double(stored) / (upsert_s + flush_s)),
       Fmt("%.1f", input_bytes / 1e6 / (upsert_s + flush_s))},
      {"wall incl. generation + Flush", Fmt("%.2f", wall_s), Fmt("%.0f", double(stored) / wall_s),
       Fmt("%.1f", input_bytes / 1e6 / wall_s)},
      {"BuildIndex (ANN)", Fmt("%.2f", build_s), Fmt("%.0f", double(indexed) / build_s), "-"}};
  std::printf("%s", FormatTable({"phase", "seconds", "docs/s", "MB/s (f32 input)"}, table).c_str());
  std::printf(
      "stored: %.0f bytes/doc in store/ (raw vectors %.0f bytes/doc: tokens %s + pooled "
      "f32), ANN snapshot %.1f MiB (%.0f bytes/doc)\n",
      double(store_bytes) / double(stored), raw_stored / double(stored), f.dtype.c_str(),
      double(snapshot_bytes) / 1048576.0, double(snapshot_bytes) / double(stored));

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
  out.results = {{"docs", stored},
                 {"upsert_seconds", upsert_s},
                 {"flush_seconds", flush_s},
                 {"wall_seconds_incl_generation", wall_s},
                 {"docs_per_s", double(stored) / upsert_s},
                 {"mb_per_s_f32_input", input_bytes / 1e6 / upsert_s},
                 {"docs_per_s_incl_flush", double(stored) / (upsert_s + flush_s)},
                 {"build_index_seconds", build_s},
                 {"indexed", indexed},
                 {"store_bytes", store_bytes},
                 {"store_bytes_per_doc", double(store_bytes) / double(stored)},
                 {"raw_vector_bytes_per_doc", raw_stored / double(stored)},
                 {"ann_snapshot_bytes", snapshot_bytes}};
  return out;
}

}  // namespace attnsearch::bench
