// overwrite: what replacing documents costs, and what searches pay while
// documents are replaced, in-process.
//
//   attnsearch-bench --benchmarks=overwrite [--num_docs=20000] [--tokens=32]
//       [--dim=128] [--dtype=bf16] [--ann_spec=HNSW32,SQfp16] [--overwrite_batch=1]
//       [--sync=true] [--duration=10] [--top_k=10] [--e2e_candidates=100]
//       [--e2e_query_tokens=32]
//
// Loads --num_docs synthetic clustered documents (--tokens rows each) into a
// fresh collection with the server's write options (the WAL synced before an
// Upsert returns unless --sync=false; the ANN index updated on every write),
// then runs three phases of --duration seconds:
//   overwrites  one writer replaces random documents, --overwrite_batch per
//               Upsert (each a new version: new label, old label tombstoned,
//               its data purged once the index has dropped it)
//   searches    one reader searches in a closed loop (ATTENTION, --top_k of
//               --e2e_candidates, queries of --e2e_query_tokens rows)
//   both        the writer and the reader at once
// Reported per phase: documents replaced per second with Upsert p50/p99, and
// searches per second with Search p50/p99 (ms).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <tuple>

#include "benchmarks.h"
#include "core/status.h"
#include "engine/collection.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

Document MakeVersion(const SyntheticDataset& data, uint64_t i, uint64_t version, uint32_t dim) {
  Document d;
  d.id = "doc-" + std::to_string(i);
  d.text = "synthetic document " + std::to_string(i) + ", version " + std::to_string(version);
  d.pooled.resize(dim);
  data.Pooled(i, d.pooled.data());
  d.num_tokens = data.Tokens(i, &d.tokens);
  return d;
}

// A fresh collection in `dir` holding every document once.
absl::StatusOr<std::unique_ptr<Collection>> Setup(const BenchFlags& f, const SyntheticDataset& data,
                                                  const std::string& dir) {
  CollectionConfig config;
  config.dim = f.dim;
  config.token_dtype = DtypeFromFlags(f);
  config.ann_spec = f.ann_spec;
  CollectionOptions options;
  options.storage.sync_writes = f.sync;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c,
                        Collection::Create(dir + "/c", config, options));
  for (size_t first = 0; first < f.num_docs; first += 1000) {
    std::vector<Document> batch;
    for (size_t i = first; i < std::min(f.num_docs, first + 1000); ++i) {
      batch.push_back(MakeVersion(data, i, 0, f.dim));
    }
    ATTN_RETURN_IF_ERROR(c->Upsert(std::move(batch)).status());
  }
  return c;
}

struct PhaseResult {
  std::vector<double> upsert_ms, search_ms;
  uint64_t replaced = 0;
  double seconds = 0;
};

// Runs the writer and/or the reader for f.duration seconds.
absl::StatusOr<PhaseResult> RunPhase(const BenchFlags& f, const SyntheticDataset& data,
                                     Collection* c, bool write, bool read) {
  PhaseResult r;
  std::atomic<bool> stop{false};
  absl::Status write_status, read_status;
  std::thread writer([&] {
    std::mt19937_64 rng(f.seed + 1);
    for (uint64_t version = 1; write && !stop.load(); ++version) {
      std::vector<Document> batch;
      for (int k = 0; k < f.overwrite_batch; ++k) {
        batch.push_back(MakeVersion(data, rng() % f.num_docs, version, f.dim));
      }
      const auto t0 = Clock::now();
      absl::StatusOr<uint64_t> n = c->Upsert(std::move(batch));
      r.upsert_ms.push_back(MsSince(t0));
      if (!n.ok()) write_status = n.status();
      if (!n.ok()) return;
      r.replaced += *n;
    }
  });
  std::thread reader([&] {
    for (uint64_t j = 0; read && !stop.load(); ++j) {
      SearchQuery q;
      q.num_tokens = uint32_t(f.e2e_query_tokens);
      data.QueryTokens(j % 256, q.num_tokens, &q.tokens);
      q.top_k = uint32_t(f.top_k);
      q.candidates = uint32_t(f.e2e_candidates);
      const auto t0 = Clock::now();
      absl::StatusOr<SearchResult> s = c->Search(std::move(q));
      r.search_ms.push_back(MsSince(t0));
      if (!s.ok()) read_status = s.status();
      if (!s.ok()) return;
    }
  });
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(f.duration));
  stop = true;
  writer.join();
  reader.join();
  r.seconds = MsSince(t0) / 1000;
  ATTN_RETURN_IF_ERROR(write_status);
  ATTN_RETURN_IF_ERROR(read_status);
  return r;
}

// One table row and one JSON entry per phase.
void Report(const std::string& phase, const PhaseResult& r,
            std::vector<std::vector<std::string>>* table, nlohmann::json* json) {
  const Summary up = Summarize(r.upsert_ms), se = Summarize(r.search_ms);
  table->push_back({phase, Fmt("%.0f", double(r.replaced) / r.seconds),
                    r.upsert_ms.empty() ? "-" : Fmt("%.2f / %.2f", up.p50, up.p99),
                    Fmt("%.0f", double(r.search_ms.size()) / r.seconds),
                    r.search_ms.empty() ? "-" : Fmt("%.2f / %.2f", se.p50, se.p99)});
  (*json)[phase] = {{"seconds", r.seconds},
                    {"replaced_per_s", double(r.replaced) / r.seconds},
                    {"upsert_ms", ToJson(up)},
                    {"searches_per_s", double(r.search_ms.size()) / r.seconds},
                    {"search_ms", ToJson(se)}};
}

}  // namespace

absl::StatusOr<BenchOutput> RunOverwrite(const BenchFlags& f) {
  if (f.overwrite_batch < 1) return absl::InvalidArgumentError("--overwrite_batch: at least 1");
  SyntheticOptions so = SyntheticFromFlags(f);
  so.tokens_min = so.tokens_max = uint32_t(f.tokens);
  const SyntheticDataset data(so);
  ScratchDir scratch("attn_overwrite_");
  if (scratch.path().empty()) return absl::InternalError("cannot create a directory in /tmp");
  std::printf("overwrite: %zu docs x %d tokens x %u dims (%s), %s writes\n", f.num_docs, f.tokens,
              f.dim, f.dtype.c_str(), f.sync ? "synced" : "unsynced");
  std::fflush(stdout);
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Setup(f, data, scratch.path()));
  std::vector<std::vector<std::string>> table;
  nlohmann::json phases;
  for (const auto& [phase, write, read] :
       {std::tuple{"overwrites", true, false}, std::tuple{"searches", false, true},
        std::tuple{"both", true, true}}) {
    ATTN_ASSIGN_OR_RETURN(PhaseResult r, RunPhase(f, data, c.get(), write, read));
    Report(phase, r, &table, &phases);
  }
  std::printf("%s", FormatTable({"phase", "docs replaced/s", "Upsert p50 / p99 ms", "searches/s",
                                 "Search p50 / p99 ms"},
                                table)
                        .c_str());
  BenchOutput out;
  out.params = {{"num_docs", f.num_docs},
                {"tokens", f.tokens},
                {"dim", f.dim},
                {"dtype", f.dtype},
                {"ann_spec", f.ann_spec},
                {"overwrite_batch", f.overwrite_batch},
                {"sync", f.sync},
                {"duration", f.duration},
                {"top_k", f.top_k},
                {"candidates", f.e2e_candidates},
                {"query_tokens", f.e2e_query_tokens},
                {"seed", f.seed}};
  out.results = {{"phases", phases}, {"rebuilds", c->Stats().rebuilds}};
  return out;
}

}  // namespace attnsearch::bench
