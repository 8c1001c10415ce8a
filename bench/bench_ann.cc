// ann: the FAISS candidate index (src/ann/ann_index.h) alone, next to its
// peers in the same run.
//
//   attnsearch-bench --benchmarks=ann [--dataset=synthetic|uniform|siftsmall]
//       [--siftsmall_dir=DIR (required for siftsmall)]
//       [--num_docs=100000 --num_queries=1000 --dim=128 --clusters=100
//        --spread=0.5 --seed=42] [--ann_spec=HNSW32,SQfp16]
//       [--ef_construction=80] [--ef_search=10,16,24,32,48,64,96,128,256]
//       [--nprobe=1,4,16,64] [--k=10] [--ann_peers=hnswlib,faiss]
//       [--ann_build_threads=2] [--build_rounds=2] [--filter_fractions=0.01,0.1]
//       [--delete_fraction=0.2] [--target_recall=0.95 --tune_sample=1000]
//       [--dump_dir=DIR]
//
// Builds an AnnIndex from the factory spec over unit pooled vectors (labels
// 0..n-1, one Add call) and reports the build time and the memory it took
// (VmRSS delta across the build). For HNSW specs it also builds the peers
// (ann_peers.h: hnswlib at its AVX-512 best, FAISS's plain IndexHNSWFlat)
// with the same M, efConstruction and build threads; ours and hnswlib are
// built --build_rounds times, alternating, and each keeps its fastest.
// Then, for each setting of the sweep (efSearch for HNSW, nprobe for IVF),
// every searcher answers every query one call at a time on one thread, in
// interleaved passes until ours has searched ≥ 0.5 s; the table gives
// recall@k against the exact top k and QPS, and the summary the best QPS at
// recall@k ≥ 0.95 per searcher with the ratios.
//
// Sections after the sweep (ours only):
//   filters  random filters admitting --filter_fractions of the documents:
//            recall@k among the admitted (exact top k among them) and QPS of
//            SearchFiltered, with the path it took;
//   tune     Tune(--target_recall) on --tune_sample held-out stored vectors,
//            then the recall the chosen setting gives on the query set;
//   delete   --delete_fraction of the documents tombstoned (filtered inside
//            the search) and the index rebuilt from the live ones: recall
//            against the live documents' exact top k and QPS, before /
//            tombstoned / rebuilt, and how many deleted documents came back.
//
// Ground truth: always the exact top-k by inner product over the same unit
// vectors, computed here by brute force. For siftsmall this is NOT the
// shipped groundtruth.ivecs (L2 on the raw, unnormalised vectors): the engine
// searches by inner product on normalised vectors, so we normalise base and
// queries and compute our own IP ground truth; recall against the shipped
// file is reported alongside (recall_vs_l2_groundtruth) for reference only.
// Output: table, JSON record, and ann_<dataset>_<spec>.svg (recall@k vs QPS).
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "ann/ann_index.h"
#include "ann_peers.h"
#include "benchmarks.h"
#include "core/status.h"
#include "engine/collection.h"
#include "report.h"
#include "svg.h"

namespace attnsearch::bench {

SyntheticOptions SyntheticFromFlags(const BenchFlags& f) {
  SyntheticOptions o;
  o.dim = f.dim;
  o.distribution = f.dataset == "uniform" ? Distribution::kUniform : Distribution::kClustered;
  o.clusters = f.clusters;
  o.spread = f.spread;
  o.token_spread = f.token_spread;
  o.seed = f.seed;
  return o;
}

namespace {

using Clock = std::chrono::steady_clock;

std::string FileSafe(std::string s) {
  for (char& c : s) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

// Wall and CPU (all threads of this process) seconds since construction:
// on a shared machine CPU time is the steadier measure of build work.
class BuildTimer {
 public:
  BuildTimer() : wall0_(Clock::now()), cpu0_(CpuSeconds()) {}
  double wall() const { return std::chrono::duration<double>(Clock::now() - wall0_).count(); }
  double cpu() const { return CpuSeconds() - cpu0_; }

 private:
  static double CpuSeconds() {
    rusage u;
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  }
  Clock::time_point wall0_;
  double cpu0_;
};

struct QueryRun {
  double recall = 0, qps = 0;
  size_t bad = 0;
  double ann_us = 0;  // mean ANN stage time, when the searcher reports it
};

// One searcher of RunInterleaved: its ground truth, its search (query j ->
// row numbers) and which results must never appear.
struct Contender {
  const std::vector<std::vector<int64_t>>* truth;
  std::function<absl::Status(size_t, std::vector<int64_t>*)> search;
  std::function<bool(int64_t)> bad;
};

// Recall@k and single-thread QPS of each contender over the query set,
// timed in interleaved passes (so that load changes hit them alike) until
// each has searched at least `min_seconds`; recall and the count of bad
// results from the first pass.
absl::StatusOr<std::vector<QueryRun>> RunInterleaved(const VectorSet& queries, size_t k,
                                                     double min_seconds,
                                                     const std::vector<Contender>& contenders) {
  std::vector<QueryRun> runs(contenders.size());
  std::vector<double> secs(contenders.size(), 0);
  std::vector<size_t> searched(contenders.size(), 0);
  std::vector<int64_t> ids;
  for (int pass = 0;; ++pass) {
    for (size_t c = 0; c < contenders.size(); ++c) {
      const auto t0 = Clock::now();
      for (size_t j = 0; j < queries.rows; ++j) {
        ATTN_RETURN_IF_ERROR(contenders[c].search(j, &ids));
        if (pass == 0) {
          runs[c].recall += RecallAtK(ids, (*contenders[c].truth)[j], k);
          for (int64_t id : ids) runs[c].bad += contenders[c].bad(id) ? 1 : 0;
        }
      }
      secs[c] += std::chrono::duration<double>(Clock::now() - t0).count();
      searched[c] += queries.rows;
    }
    if (*std::min_element(secs.begin(), secs.end()) >= min_seconds) break;
  }
  for (size_t c = 0; c < runs.size(); ++c) {
    runs[c].recall /= double(queries.rows);
    runs[c].qps = double(searched[c]) / secs[c];
  }
  return runs;
}

// RunInterleaved with one contender.
absl::StatusOr<QueryRun> RunQueries(
    const VectorSet& queries, const std::vector<std::vector<int64_t>>& truth, size_t k,
    double min_seconds, std::function<absl::Status(size_t, std::vector<int64_t>*)> search,
    std::function<bool(int64_t)> bad) {
  ATTN_ASSIGN_OR_RETURN(std::vector<QueryRun> runs,
                        RunInterleaved(queries, k, min_seconds,
                                       {Contender{&truth, std::move(search), std::move(bad)}}));
  return runs[0];
}

// Exact top k among the rows `keep` admits, as row numbers.
void ExactTopKAmong(const VectorSet& base, const VectorSet& queries, size_t k,
                    const std::function<bool(size_t)>& keep,
                    std::vector<std::vector<int64_t>>* truth) {
  std::vector<size_t> rows;
  for (size_t i = 0; i < base.rows; ++i) {
    if (keep(i)) rows.push_back(i);
  }
  std::vector<float> sub(rows.size() * base.dim);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(base.row(rows[i]), base.dim, sub.data() + i * base.dim);
  }
  ExactTopK(sub.data(), rows.size(), queries.values.data(), queries.rows, base.dim, k, truth);
  for (auto& t : *truth) {
    for (int64_t& id : t) id = int64_t(rows[size_t(id)]);
  }
}

std::vector<int64_t> Labels(const std::vector<AnnNeighbor>& found) {
  std::vector<int64_t> ids;
  for (const auto& n : found) ids.push_back(int64_t(n.label));
  return ids;
}

// Filters admitting a random fraction of the documents: recall@k among the
// admitted documents and QPS of AnnIndex::SearchFiltered.
absl::StatusOr<nlohmann::json> RunFilterSection(const BenchFlags& f, const AnnIndex& index,
                                                const VectorSet& base, const VectorSet& queries,
                                                size_t k, const AnnSearchParams& params) {
  nlohmann::json out = nlohmann::json::array();
  std::vector<std::vector<std::string>> table;
  const AnnOptions defaults;
  for (double fraction : f.filter_fractions) {
    if (fraction <= 0) continue;
    std::mt19937_64 rng(f.seed + 7);
    std::bernoulli_distribution admit(std::min(1.0, fraction));
    LabelBitmap admitted;
    for (size_t i = 0; i < base.rows; ++i) {
      if (admit(rng)) admitted.Set(i);
    }
    std::vector<std::vector<int64_t>> truth;
    ExactTopKAmong(
        base, queries, k, [&](size_t i) { return admitted.Test(i); }, &truth);
    std::vector<AnnNeighbor> found;
    auto run = RunQueries(
        queries, truth, k, 0.3,
        [&](size_t j, std::vector<int64_t>* ids) -> absl::Status {
          ATTN_RETURN_IF_ERROR(index.SearchFiltered(queries.row(j), k, params, admitted, &found));
          *ids = Labels(found);
          return absl::OkStatus();
        },
        [&](int64_t id) { return !admitted.Test(Label(id)); });
    if (!run.ok()) return run.status();
    const char* path = admitted.count() <= defaults.exact_filter_max ? "exact scan of matches"
                                                                     : "graph, beam widened";
    table.push_back({Fmt("%.3f", fraction), std::to_string(admitted.count()), path,
                     Fmt("%.4f", run->recall), Fmt("%.0f", run->qps), std::to_string(run->bad)});
    out.push_back({{"fraction", fraction},
                   {"matching", admitted.count()},
                   {"path", path},
                   {"recall", run->recall},
                   {"qps", run->qps},
                   {"non_matching_returned", run->bad}});
  }
  if (!table.empty()) {
    std::printf(
        "filters (recall@%zu among matching documents, default beam):\n%s", k,
        FormatTable({"fraction", "matching", "path", "recall", "QPS", "non-matching"}, table)
            .c_str());
  }
  return out;
}

// Auto-tuning: the knob Tune picks for the target from held-out stored
// vectors, and the recall it gives on the benchmark's own queries.
absl::StatusOr<nlohmann::json> RunTuneSection(const BenchFlags& f, const AnnIndex& index,
                                              const VectorSet& queries,
                                              const std::vector<std::vector<int64_t>>& truth,
                                              size_t k) {
  if (f.target_recall <= 0) return nlohmann::json::object();
  const auto t0 = Clock::now();
  omp_set_num_threads(f.ann_build_threads);
  auto tuned = index.Tune(f.target_recall, k, f.tune_sample, f.seed);
  omp_set_num_threads(1);
  if (!tuned.ok()) return tuned.status();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  auto params = AnnSearchParams::Parse(tuned->ann_params);
  if (!params.ok()) return params.status();
  std::vector<AnnNeighbor> found;
  auto run = RunQueries(
      queries, truth, k, 0.3,
      [&](size_t j, std::vector<int64_t>* ids) -> absl::Status {
        ATTN_RETURN_IF_ERROR(index.Search(queries.row(j), k, *params, nullptr, &found));
        *ids = Labels(found);
        return absl::OkStatus();
      },
      [](int64_t) { return false; });
  if (!run.ok()) return run.status();
  std::printf(
      "tuning to recall@%zu %.2f (%zu held-out stored vectors, %.2f s): %s, sample "
      "recall %.4f; on the query set: recall %.4f (off by %+.4f), %.0f QPS\n",
      k, f.target_recall, tuned->sample_queries, secs, tuned->ann_params.c_str(),
      tuned->sample_recall, run->recall, run->recall - f.target_recall, run->qps);
  return nlohmann::json{{"target", f.target_recall},
                        {"sample", tuned->sample_queries},
                        {"seconds", secs},
                        {"chosen", tuned->ann_params},
                        {"sample_recall", tuned->sample_recall},
                        {"query_recall", run->recall},
                        {"query_qps", run->qps}};
}

// The delete section's documents: "d<row>", rows of `all` (the base
// vectors, then those added during the rebuild); `live` says which exist.
struct DeleteState {
  VectorSet all;
  std::vector<bool> live;
  static std::string Id(size_t row) { return "d" + std::to_string(row); }
  static int64_t RowOf(const std::string& id) { return int64_t(std::stoll(id.substr(1))); }
  // The exact top k among the live documents.
  void Truth(const VectorSet& queries, size_t k, std::vector<std::vector<int64_t>>* truth) const {
    ExactTopKAmong(
        all, queries, k, [&](size_t i) { return live[i]; }, truth);
  }
};

// Runs fn(batch) over `ids` in batches of 1,000.
absl::Status ForBatches(const std::vector<std::string>& ids,
                        const std::function<absl::Status(const std::vector<std::string>&)>& fn) {
  for (size_t i = 0; i < ids.size(); i += 1000) {
    const std::vector<std::string> batch(ids.begin() + long(i),
                                         ids.begin() + long(std::min(ids.size(), i + 1000)));
    ATTN_RETURN_IF_ERROR(fn(batch));
  }
  return absl::OkStatus();
}

// A collection at `path` holding every base vector as one document.
absl::Status CreateDeleteCollection(const BenchFlags& f, const VectorSet& base,
                                    const std::string& path, const CollectionOptions& options) {
  CollectionConfig config;
  config.dim = base.dim;
  config.token_dtype = TokenDtype::kF32;
  config.ann_spec = f.ann_spec;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Collection::Create(path, config, options));
  for (size_t i = 0; i < base.rows; i += 1000) {
    std::vector<Document> docs;
    for (size_t r = i; r < std::min(base.rows, i + 1000); ++r) {
      Document d;
      d.id = DeleteState::Id(r);
      d.pooled.assign(base.row(r), base.row(r) + base.dim);
      docs.push_back(std::move(d));
    }
    ATTN_RETURN_IF_ERROR(c->Upsert(std::move(docs)).status());
  }
  return absl::OkStatus();
}

// What the delete section compares: a collection and an untouched copy of
// it (the reference), and the reference's ground truth.
struct DeleteBench {
  const BenchFlags& f;
  const VectorSet& queries;
  size_t k;
  const std::vector<int>& settings;
  const Collection* reference;
  std::vector<std::vector<int64_t>> truth_before;
};

// Recall and QPS at each setting through Collection::Search, of `c` and of
// the reference, interleaved.
absl::Status MeasureDeletes(const DeleteBench& b, const DeleteState& state, const Collection& c,
                            const char* phase, std::map<int, QueryRun>* runs,
                            std::map<int, QueryRun>* reference_runs) {
  omp_set_num_threads(1);
  std::vector<std::vector<int64_t>> truth;
  state.Truth(b.queries, b.k, &truth);
  for (int v : b.settings) {
    SearchQuery q;
    q.top_k = uint32_t(b.k);
    q.candidates = uint32_t(b.k);
    q.mode = RerankMode::kNone;
    q.ann_params =
        Fmt("%s=%d", b.f.ann_spec.find("HNSW") != std::string::npos ? "efSearch" : "nprobe", v);
    // Microseconds the ANN stage took, summed, and the searches: the
    // stage the index decides, apart from the store's fetch.
    std::pair<double, size_t> ann_main{0, 0}, ann_reference{0, 0};
    auto searcher = [&](const Collection& target, std::pair<double, size_t>* ann) {
      return [&, q, ann](size_t j, std::vector<int64_t>* ids) mutable -> absl::Status {
        q.pooled.assign(b.queries.row(j), b.queries.row(j) + b.queries.dim);
        ATTN_ASSIGN_OR_RETURN(SearchResult r, target.Search(q));
        ann->first += double(r.timing.ann_us);
        ann->second += 1;
        ids->clear();
        for (const SearchHit& h : r.hits) ids->push_back(DeleteState::RowOf(h.id));
        return absl::OkStatus();
      };
    };
    ATTN_ASSIGN_OR_RETURN(
        std::vector<QueryRun> both,
        RunInterleaved(b.queries, b.k, 1.0,
                       {Contender{&truth, searcher(c, &ann_main),
                                  [&](int64_t row) { return !state.live[size_t(row)]; }},
                        Contender{&b.truth_before, searcher(*b.reference, &ann_reference),
                                  [](int64_t) { return false; }}}));
    both[0].ann_us = ann_main.first / double(std::max<size_t>(1, ann_main.second));
    both[1].ann_us = ann_reference.first / double(std::max<size_t>(1, ann_reference.second));
    (*runs)[v] = both[0];
    (*reference_runs)[v] = both[1];
  }
  std::printf("  %s measured\n", phase);
  return absl::OkStatus();
}

// The writes made while the background rebuild ran.
struct RebuildWrites {
  std::vector<std::string> added, removed;
  size_t rounds = 0;
  double seconds = 0;  // the rebuild's
};

// Until the collection's first rebuild ends: 50 new documents and up to 50
// deletes per round, 20 ms apart, a steady trickle that leaves the
// collection's size about as it was.
absl::StatusOr<RebuildWrites> WriteDuringRebuild(Collection* c, DeleteState* state,
                                                 Clock::time_point r0, std::mt19937_64* rng) {
  RebuildWrites w;
  const size_t base_rows = state->live.size();
  const uint32_t dim = state->all.dim;
  std::normal_distribution<float> gauss(0.f, 1.f);
  std::uniform_int_distribution<size_t> pick(0, base_rows - 1);
  while (true) {
    const CollectionStats st = c->Stats();
    if (st.rebuilds >= 1 && !st.rebuild_in_progress) break;
    if (std::chrono::duration<double>(Clock::now() - r0).count() > 600) {
      return absl::DeadlineExceededError("the background rebuild did not finish in 10 minutes");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::vector<Document> docs;
    for (int j = 0; j < 50; ++j) {
      Document d;
      d.id = DeleteState::Id(state->all.rows);
      d.pooled.resize(dim);
      double norm = 0;
      for (float& x : d.pooled) {
        x = gauss(*rng);
        norm += double(x) * x;
      }
      for (float& x : d.pooled) x = float(x / std::sqrt(norm));
      state->all.values.insert(state->all.values.end(), d.pooled.begin(), d.pooled.end());
      state->all.rows++;
      state->live.push_back(true);
      w.added.push_back(d.id);
      docs.push_back(std::move(d));
    }
    ATTN_RETURN_IF_ERROR(c->Upsert(std::move(docs)).status());
    std::vector<std::string> gone;
    for (int j = 0; j < 50; ++j) {
      const size_t r = pick(*rng);
      if (!state->live[r]) continue;
      state->live[r] = false;
      gone.push_back(DeleteState::Id(r));
    }
    ATTN_RETURN_IF_ERROR(c->Delete(gone).status());
    w.removed.insert(w.removed.end(), gone.begin(), gone.end());
    ++w.rounds;
  }
  w.seconds = std::chrono::duration<double>(Clock::now() - r0).count();
  return w;
}

// Acknowledged writes that went wrong: added documents missing or with
// other vectors, deleted documents found.
struct WriteCheck {
  size_t missing = 0, wrong = 0, resurrected = 0;
};

absl::StatusOr<WriteCheck> CheckWrites(const Collection& c, const DeleteState& state,
                                       const RebuildWrites& w) {
  WriteCheck out;
  ATTN_RETURN_IF_ERROR(ForBatches(w.added, [&](const std::vector<std::string>& batch) {
    ATTN_ASSIGN_OR_RETURN(GetResult got, c.Get(batch, /*include_vectors=*/true));
    out.missing += got.not_found_ids.size();
    for (const Document& d : got.documents) {
      const size_t row = size_t(DeleteState::RowOf(d.id));
      if (d.pooled.size() != state.all.dim ||
          !std::equal(d.pooled.begin(), d.pooled.end(), state.all.row(row),
                      [](float a, float b) { return std::abs(a - b) <= 1e-6f; })) {
        ++out.wrong;
      }
    }
    return absl::OkStatus();
  }));
  ATTN_RETURN_IF_ERROR(ForBatches(w.removed, [&](const std::vector<std::string>& batch) {
    ATTN_ASSIGN_OR_RETURN(GetResult gone, c.Get(batch, false));
    out.resurrected += gone.documents.size();
    return absl::OkStatus();
  }));
  return out;
}

// Each state's runs per setting, against the reference's in the same slices.
struct DeleteRuns {
  std::map<int, QueryRun> tombstoned, before_t, rebuilt, before_r;
};

// The delete section's table and record.
nlohmann::json ReportDeletes(const std::vector<int>& settings, size_t deleted, size_t base_rows,
                             const RebuildWrites& w, const WriteCheck& check,
                             const CollectionStats& st, DeleteRuns& runs) {
  nlohmann::json points = nlohmann::json::array();
  std::vector<std::vector<std::string>> table;
  size_t deleted_returned = 0;
  for (int v : settings) {
    const QueryRun &b1 = runs.before_t[v], &t = runs.tombstoned[v], &b2 = runs.before_r[v],
                   &a = runs.rebuilt[v];
    deleted_returned += t.bad + a.bad;
    table.push_back({std::to_string(v), Fmt("%.4f", b1.recall), Fmt("%.4f", t.recall),
                     Fmt("%.0f / %.0f", t.qps, b1.qps), Fmt("%.1f / %.1f", t.ann_us, b1.ann_us),
                     Fmt("%.4f", a.recall), Fmt("%.0f / %.0f", a.qps, b2.qps),
                     Fmt("%.1f / %.1f", a.ann_us, b2.ann_us)});
    points.push_back({{"value", v},
                      {"before",
                       {{"recall", b1.recall},
                        {"qps", b1.qps},
                        {"ann_us", b1.ann_us},
                        {"qps_2", b2.qps},
                        {"ann_us_2", b2.ann_us}}},
                      {"tombstoned", {{"recall", t.recall}, {"qps", t.qps}, {"ann_us", t.ann_us}}},
                      {"rebuilt", {{"recall", a.recall}, {"qps", a.qps}, {"ann_us", a.ann_us}}}});
  }
  std::printf(
      "deletes (through the engine): %zu of %zu deleted (%.1f%%); background rebuild on "
      "reopen took %.2f s while %zu write rounds added %zu documents and deleted %zu more; "
      "afterwards: added missing %zu, added with wrong vectors %zu, deleted found %zu, "
      "deleted documents in results %zu, index vectors %llu for %llu live documents, "
      "tombstones %llu\n%s",
      deleted, base_rows, 100.0 * double(deleted) / double(base_rows), w.seconds, w.rounds,
      w.added.size(), w.removed.size(), check.missing, check.wrong, check.resurrected,
      deleted_returned, (unsigned long long)st.ann_vectors, (unsigned long long)st.num_documents,
      (unsigned long long)st.num_tombstones,
      FormatTable({"setting", "before recall", "tombstoned recall", "QPS tombstoned/before",
                   "ANN us tombstoned/before", "rebuilt recall", "QPS rebuilt/before",
                   "ANN us rebuilt/before"},
                  table)
          .c_str());
  return nlohmann::json{{"deleted", deleted},
                        {"rebuild_seconds", w.seconds},
                        {"write_rounds_during_rebuild", w.rounds},
                        {"added_during_rebuild", w.added.size()},
                        {"deleted_during_rebuild", w.removed.size()},
                        {"added_missing", check.missing},
                        {"added_wrong", check.wrong},
                        {"deleted_found", check.resurrected},
                        {"deleted_returned", deleted_returned},
                        {"index_vectors_after", st.ann_vectors},
                        {"live_after", st.num_documents},
                        {"points", points}};
}

// Deletes --delete_fraction of the documents (tombstones) and measures.
absl::StatusOr<size_t> DeleteAndMeasure(const DeleteBench& b, const std::string& path,
                                        const CollectionOptions& options, DeleteState* state,
                                        std::mt19937_64* rng, DeleteRuns* runs) {
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Collection::Open(path, options));
  std::bernoulli_distribution del(std::min(1.0, b.f.delete_fraction));
  std::vector<std::string> ids;
  for (size_t r = 0; r < state->live.size(); ++r) {
    if (!del(*rng)) continue;
    ids.push_back(DeleteState::Id(r));
    state->live[r] = false;
  }
  ATTN_RETURN_IF_ERROR(ForBatches(
      ids, [&](const std::vector<std::string>& batch) { return c->Delete(batch).status(); }));
  ATTN_RETURN_IF_ERROR(
      MeasureDeletes(b, *state, *c, "with tombstones", &runs->tombstoned, &runs->before_t));
  return ids.size();
}

// Deletes through the engine: a collection of every base vector (one
// document each) and a copy of it kept as the reference; --delete_fraction
// of the documents deleted (tombstones, filtered inside the search); then
// the collection reopened with the background rebuild enabled, which starts
// because tombstones pass its threshold, while a writer adds new documents
// and deletes more; finally every acknowledged write is checked. Each state
// is searched at each setting interleaved with the reference, so their QPS
// ratio holds on a loaded machine. Recall is against the exact top k of the
// documents live at that moment; QPS is of Collection::Search (ANN stage and
// fetch, no rerank; one thread).
absl::StatusOr<nlohmann::json> RunDeleteSection(const BenchFlags& f, const VectorSet& base,
                                                const VectorSet& queries, size_t k,
                                                const std::vector<int>& settings) {
  if (f.delete_fraction <= 0) return nlohmann::json::object();
  ScratchDir scratch("attn_ann_delete_");
  if (scratch.path().empty()) return absl::InternalError("cannot create a directory in /tmp");
  const std::string path = scratch.path() + "/c";
  CollectionOptions options;
  options.ann.ef_construction = f.ef_construction;
  options.rebuild_tombstone_ratio = 0;  // no rebuild while measuring tombstones
  omp_set_num_threads(f.ann_build_threads);
  ATTN_RETURN_IF_ERROR(CreateDeleteCollection(f, base, path, options));
  DeleteState state{base, std::vector<bool>(base.rows, true)};
  // A copy of the collection before any delete: the reference every later
  // state is timed against, interleaved, in the same slices of time.
  const std::string ref_path = scratch.path() + "/before";
  std::error_code ec;
  std::filesystem::copy(path, ref_path, std::filesystem::copy_options::recursive, ec);
  if (ec) return absl::InternalError("copying the collection: " + ec.message());
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> reference, Collection::Open(ref_path, options));
  DeleteBench bench{f, queries, k, settings, reference.get(), {}};
  state.Truth(queries, k, &bench.truth_before);
  DeleteRuns runs;
  std::mt19937_64 rng(f.seed + 11);
  ATTN_ASSIGN_OR_RETURN(const size_t deleted,
                        DeleteAndMeasure(bench, path, options, &state, &rng, &runs));
  // Reopen with the rebuild on (threshold below the deleted share): it
  // starts in the background; a writer adds and deletes meanwhile.
  options.rebuild_tombstone_ratio = std::min(0.2, 0.75 * f.delete_fraction);
  omp_set_num_threads(f.ann_build_threads);
  const auto r0 = Clock::now();
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Collection::Open(path, options));
  ATTN_ASSIGN_OR_RETURN(const RebuildWrites w, WriteDuringRebuild(c.get(), &state, r0, &rng));
  // Every acknowledged write is there; every acknowledged delete is gone.
  ATTN_ASSIGN_OR_RETURN(const WriteCheck check, CheckWrites(*c, state, w));
  ATTN_RETURN_IF_ERROR(
      MeasureDeletes(bench, state, *c, "after the rebuild", &runs.rebuilt, &runs.before_r));
  const nlohmann::json out =
      ReportDeletes(settings, deleted, base.rows, w, check, c->Stats(), runs);
  omp_set_num_threads(1);
  return out;
}

// The benchmark's vectors, the exact ground truth over them, and for
// siftsmall the shipped L2 ground truth (for reference only).
struct AnnData {
  VectorSet base, queries;
  std::vector<std::vector<int64_t>> truth, l2_truth;
  double gt_s = 0;  // seconds the exact ground truth took
  size_t k = 0;
};

// --dump_dir: the unit base/query vectors as fvecs.
absl::Status DumpVectors(const std::string& dir, const AnnData& d) {
  auto dump = [](const std::string& path, const VectorSet& v) {
    std::string bytes;
    const int32_t dim = int32_t(v.dim);
    for (size_t i = 0; i < v.rows; ++i) {
      bytes.append(reinterpret_cast<const char*>(&dim), 4);
      bytes.append(reinterpret_cast<const char*>(v.row(i)), size_t(v.dim) * 4);
    }
    return WriteFile(path, bytes);
  };
  if (!dump(dir + "/base.fvecs", d.base) || !dump(dir + "/query.fvecs", d.queries)) {
    return absl::InternalError("cannot write --dump_dir files");
  }
  return absl::OkStatus();
}

absl::StatusOr<AnnData> SetupAnnData(const BenchFlags& f) {
  AnnData d;
  if (f.dataset == "siftsmall") {
    if (f.siftsmall_dir.empty()) {
      return absl::InvalidArgumentError(
          "--siftsmall_dir: required for --dataset=siftsmall (e.g. ../shared/data/siftsmall)");
    }
    ATTN_ASSIGN_OR_RETURN(d.base, LoadFvecsNormalized(f.siftsmall_dir + "/base.fvecs"));
    ATTN_ASSIGN_OR_RETURN(d.queries, LoadFvecsNormalized(f.siftsmall_dir + "/query.fvecs"));
    auto g = LoadIvecs(f.siftsmall_dir + "/groundtruth.ivecs");
    if (g.ok()) d.l2_truth = std::move(*g);
  } else if (f.dataset == "synthetic" || f.dataset == "uniform") {
    SyntheticDataset data(SyntheticFromFlags(f));
    d.base.dim = d.queries.dim = f.dim;
    d.base.rows = f.num_docs;
    d.base.values.resize(d.base.rows * f.dim);
    data.PooledBlock(0, d.base.rows, d.base.values.data());
    d.queries.rows = f.num_queries;
    d.queries.values.resize(d.queries.rows * f.dim);
    for (size_t j = 0; j < d.queries.rows; ++j)
      data.QueryPooled(j, d.queries.values.data() + j * f.dim);
  } else {
    return absl::InvalidArgumentError("--dataset: synthetic, uniform or siftsmall");
  }
  d.k = size_t(f.k);
  if (!f.dump_dir.empty()) ATTN_RETURN_IF_ERROR(DumpVectors(f.dump_dir, d));
  std::printf("ann: %s, %zu base x %u, %zu queries, spec %s, k=%zu\n", f.dataset.c_str(),
              d.base.rows, d.base.dim, d.queries.rows, f.ann_spec.c_str(), d.k);
  // Exact ground truth (inner product, unit vectors).
  const auto gt0 = Clock::now();
  ExactTopK(d.base.values.data(), d.base.rows, d.queries.values.data(), d.queries.rows, d.base.dim,
            d.k, &d.truth);
  d.gt_s = std::chrono::duration<double>(Clock::now() - gt0).count();
  return d;
}

// One searcher of the sweep: ours (no peer) or a peer.
struct Searcher {
  std::string name;
  double build_s = 0, build_cpu_s = 0;  // fastest round
  std::unique_ptr<AnnPeer> peer;        // null: ours
};

// Ours and the peers, built.
struct AnnBuild {
  std::unique_ptr<AnnIndex> index;
  std::vector<Searcher> searchers;  // ours first
  double mem_mib = 0;               // VmRSS delta across our first build
  bool hnsw = false, ivf = false;
  int hnsw_m = 0;
  const char* knob = "-";  // the sweep's knob
};

// Our index over every base vector (labels 0..n-1, one Add call).
absl::StatusOr<std::unique_ptr<AnnIndex>> BuildOurs(const BenchFlags& f, const VectorSet& base) {
  AnnOptions opts;
  opts.ef_construction = f.ef_construction;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<AnnIndex> index,
                        AnnIndex::Create(f.ann_spec, base.dim, opts));
  std::vector<Label> labels(base.rows);
  for (size_t i = 0; i < base.rows; ++i) labels[i] = i;
  ATTN_RETURN_IF_ERROR(index->Add(labels.data(), base.values.data(), base.rows));
  return index;
}

std::unique_ptr<AnnPeer> BuildHnswlibPeer(const BenchFlags& f, const VectorSet& base, int m) {
  return BuildHnswlib(base.values.data(), base.rows, base.dim, m, f.ef_construction,
                      f.ann_build_threads);
}

// The peers of an HNSW spec (--ann_peers), each built once.
absl::Status BuildPeers(const BenchFlags& f, const VectorSet& base, AnnBuild* b) {
  for (const std::string& name : b->hnsw ? f.ann_peers : std::vector<std::string>{}) {
    Searcher s;
    s.name = name;
    const BuildTimer p0;
    if (name == "hnswlib") {
      if (!HnswlibAvailable()) {
        std::printf("hnswlib: skipped (this CPU lacks AVX-512F)\n");
        continue;
      }
      s.peer = BuildHnswlibPeer(f, base, b->hnsw_m);
    } else if (name == "faiss") {
      s.name = "faiss-IndexHNSWFlat";
      s.peer =
          BuildFaissHnswFlat(base.values.data(), base.rows, base.dim, b->hnsw_m, f.ef_construction);
    } else if (name == "-" || name.empty()) {
      continue;
    } else {
      return absl::InvalidArgumentError("--ann_peers: hnswlib, faiss or -");
    }
    s.build_s = p0.wall();
    s.build_cpu_s = p0.cpu();
    std::printf("%s: build %.2f s, CPU %.2f s (%d threads)\n", s.name.c_str(), s.build_s,
                s.build_cpu_s, f.ann_build_threads);
    b->searchers.push_back(std::move(s));
  }
  return absl::OkStatus();
}

// Further build rounds of ours and hnswlib, alternating, so that a load
// change on a shared machine does not decide the build comparison; each
// keeps its fastest round (FAISS's slow build runs once).
absl::Status BuildRounds(const BenchFlags& f, const VectorSet& base, AnnBuild* b) {
  for (int round = 2; round <= f.build_rounds; ++round) {
    const BuildTimer r0;
    ATTN_ASSIGN_OR_RETURN(std::unique_ptr<AnnIndex> again, BuildOurs(f, base));
    std::printf("attnsearch: build round %d %.2f s, CPU %.2f s\n", round, r0.wall(), r0.cpu());
    b->searchers[0].build_s = std::min(b->searchers[0].build_s, r0.wall());
    b->searchers[0].build_cpu_s = std::min(b->searchers[0].build_cpu_s, r0.cpu());
    b->index = std::move(again);
    for (auto& s : b->searchers) {
      if (s.name != "hnswlib") continue;
      s.peer.reset();
      const BuildTimer p0;
      s.peer = BuildHnswlibPeer(f, base, b->hnsw_m);
      std::printf("hnswlib: build round %d %.2f s, CPU %.2f s\n", round, p0.wall(), p0.cpu());
      s.build_s = std::min(s.build_s, p0.wall());
      s.build_cpu_s = std::min(s.build_cpu_s, p0.cpu());
    }
  }
  return absl::OkStatus();
}

// Builds ours, then the peers, each with the same build threads.
absl::StatusOr<AnnBuild> BuildAll(const BenchFlags& f, const AnnData& d) {
  AnnBuild b;
  omp_set_num_threads(f.ann_build_threads);
  const long rss0 = RssKb();
  const BuildTimer b0;
  ATTN_ASSIGN_OR_RETURN(b.index, BuildOurs(f, d.base));
  const double build_s = b0.wall(), build_cpu_s = b0.cpu();
  b.mem_mib = double(RssKb() - rss0) / 1024.0;
  std::printf(
      "build: %.2f s, CPU %.2f s (%d threads, distances: %s), memory +%.1f MiB "
      "(VmRSS delta); exact ground truth (IP, brute force): %.2f s\n",
      build_s, build_cpu_s, f.ann_build_threads, b.index->distance_implementation().c_str(),
      b.mem_mib, d.gt_s);
  b.hnsw = f.ann_spec.find("HNSW") != std::string::npos;
  b.ivf = f.ann_spec.find("IVF") != std::string::npos;
  b.hnsw_m = b.hnsw ? std::atoi(f.ann_spec.c_str() + f.ann_spec.find("HNSW") + 4) : 0;
  b.knob = b.hnsw ? "efSearch" : b.ivf ? "nprobe" : "-";
  b.searchers.resize(1);
  b.searchers[0].name = "attnsearch";
  b.searchers[0].build_s = build_s;
  b.searchers[0].build_cpu_s = build_cpu_s;
  ATTN_RETURN_IF_ERROR(BuildPeers(f, d.base, &b));
  ATTN_RETURN_IF_ERROR(BuildRounds(f, d.base, &b));
  return b;
}

// One setting of the sweep, timed: each searcher's first-pass results,
// seconds and queries searched, and our per-query latencies.
struct SettingRun {
  std::vector<std::vector<std::vector<int64_t>>> results;  // searcher, query -> ids
  std::vector<double> secs;
  std::vector<size_t> searched;
  std::vector<double> lat_us;
};

// Every searcher at setting `v`, timed in interleaved passes over the query
// set (one query per call, one thread) until ours has searched for at least
// 0.5 s, so load changes on a shared machine hit them alike.
absl::StatusOr<SettingRun> TimeSetting(const AnnData& d, AnnBuild& b, int v) {
  AnnSearchParams params;
  if (b.hnsw) params.ef_search = v;
  if (b.ivf) params.nprobe = v;
  for (auto& s : b.searchers) {
    if (s.peer) s.peer->SetEf(v);
  }
  std::vector<AnnNeighbor> found;
  auto search = [&](size_t e, size_t j, std::vector<int64_t>* out) -> absl::Status {
    if (b.searchers[e].peer) {
      b.searchers[e].peer->Search(d.queries.row(j), d.k, out);
      return absl::OkStatus();
    }
    ATTN_RETURN_IF_ERROR(b.index->Search(d.queries.row(j), d.k, params, nullptr, &found));
    *out = Labels(found);
    return absl::OkStatus();
  };
  const size_t n = b.searchers.size();
  SettingRun run{std::vector<std::vector<std::vector<int64_t>>>(
                     n, std::vector<std::vector<int64_t>>(d.queries.rows)),
                 std::vector<double>(n, 0),
                 std::vector<size_t>(n, 0),
                 {}};
  std::vector<int64_t> ids;
  for (size_t e = 0; e < n; ++e) {  // warm-up, untimed
    for (size_t j = 0; j < std::min<size_t>(d.queries.rows, 20); ++j) {
      ATTN_RETURN_IF_ERROR(search(e, j, &ids));
    }
  }
  for (int pass = 0; pass < 2 || run.secs[0] < 0.5; ++pass) {
    for (size_t e = 0; e < n; ++e) {
      const auto t0 = Clock::now();
      for (size_t j = 0; j < d.queries.rows; ++j) {
        const auto q0 = Clock::now();
        ATTN_RETURN_IF_ERROR(search(e, j, &ids));
        if (e == 0) {
          run.lat_us.push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - q0).count());
        }
        if (pass == 0) run.results[e][j] = ids;
      }
      run.secs[e] += std::chrono::duration<double>(Clock::now() - t0).count();
      run.searched[e] += d.queries.rows;
    }
  }
  return run;
}

// The sweep's table, record points and plot curves, and each searcher's
// best QPS at recall >= 0.95 with its setting.
struct Sweep {
  std::vector<int> settings;
  std::vector<std::vector<std::string>> table;
  nlohmann::json points = nlohmann::json::array();
  std::vector<Series> curves;
  std::vector<double> qps95;
  std::vector<int> at95;
  std::map<int, std::pair<double, double>> ours_points;  // setting -> recall, QPS
};

// Adds setting `v`'s row, point and curve points.
void ScoreSetting(const AnnData& d, const AnnBuild& b, int v, const SettingRun& run, Sweep* sw) {
  const bool knob = b.hnsw || b.ivf;
  std::vector<std::string> row = {knob ? std::to_string(v) : "-"};
  nlohmann::json p = {{"knob", b.knob}, {"value", v}};
  for (size_t e = 0; e < b.searchers.size(); ++e) {
    double recall = 0, recall_l2 = 0;
    for (size_t j = 0; j < d.queries.rows; ++j) {
      recall += RecallAtK(run.results[e][j], d.truth[j], d.k);
      if (j < d.l2_truth.size()) recall_l2 += RecallAtK(run.results[e][j], d.l2_truth[j], d.k);
    }
    recall /= double(d.queries.rows);
    recall_l2 /= double(d.queries.rows);
    const double qps = double(run.searched[e]) / run.secs[e];
    row.push_back(Fmt("%.4f", recall));
    row.push_back(Fmt("%.0f", qps));
    if (e == 0) {
      const Summary lat = Summarize(run.lat_us);
      row.push_back(Fmt("%.1f", lat.p50));
      row.push_back(Fmt("%.1f", lat.p99));
      p["recall"] = recall;
      p["qps"] = qps;
      p["latency_us"] = ToJson(lat);
      if (!d.l2_truth.empty()) p["recall_vs_l2_groundtruth"] = recall_l2;
      sw->ours_points[v] = {recall, qps};
    } else {
      p["peers"][b.searchers[e].name] = {{"recall", recall}, {"qps", qps}};
    }
    if (recall >= 0.95 && qps > sw->qps95[e]) {
      sw->qps95[e] = qps;
      sw->at95[e] = v;
    }
    sw->curves[e].x.push_back(recall);
    sw->curves[e].y.push_back(qps);
    if (knob) sw->curves[e].point_labels.push_back(std::string(b.knob) + "=" + std::to_string(v));
  }
  sw->points.push_back(p);
  sw->table.push_back(row);
}

absl::StatusOr<Sweep> RunSweep(const BenchFlags& f, const AnnData& d, AnnBuild& b) {
  Sweep sw;
  sw.settings = b.hnsw ? f.ef_search : b.ivf ? f.nprobe : std::vector<int>{0};
  omp_set_num_threads(1);
  const size_t n = b.searchers.size();
  sw.curves.resize(n);
  for (size_t e = 0; e < n; ++e) {
    sw.curves[e].name = e == 0 ? "attnsearch " + f.ann_spec : b.searchers[e].name;
  }
  sw.qps95.assign(n, 0);
  sw.at95.assign(n, 0);
  for (int v : sw.settings) {
    ATTN_ASSIGN_OR_RETURN(const SettingRun run, TimeSetting(d, b, v));
    ScoreSetting(d, b, v, run, &sw);
  }
  return sw;
}

// Prints the sweep's table and each searcher's best QPS at recall >= 0.95
// with the ratios; returns that summary for the record.
nlohmann::json PrintSweep(const AnnData& d, const AnnBuild& b, const Sweep& sw) {
  std::vector<std::string> header = {b.knob, Fmt("recall@%zu", d.k), "QPS (1 thread)", "p50 us",
                                     "p99 us"};
  for (size_t e = 1; e < b.searchers.size(); ++e) {
    header.push_back(b.searchers[e].name + " recall");
    header.push_back(b.searchers[e].name + " QPS");
  }
  std::printf("%s", FormatTable(header, sw.table).c_str());
  nlohmann::json at_095 = nlohmann::json::object();
  const Searcher& ours = b.searchers[0];
  for (size_t e = 0; e < b.searchers.size(); ++e) {
    const Searcher& s = b.searchers[e];
    std::printf("%s: best QPS at recall@%zu >= 0.95: %.0f (%s=%d); build %.2f s, CPU %.2f s",
                s.name.c_str(), d.k, sw.qps95[e], b.knob, sw.at95[e], s.build_s, s.build_cpu_s);
    if (e > 0) {
      std::printf("; attnsearch/%s: QPS %.2fx, build time %.2fx, build CPU %.2fx", s.name.c_str(),
                  sw.qps95[e] > 0 ? sw.qps95[0] / sw.qps95[e] : 0.0, ours.build_s / s.build_s,
                  ours.build_cpu_s / s.build_cpu_s);
    }
    std::printf("\n");
    at_095[s.name] = {{"qps", sw.qps95[e]},
                      {"setting", sw.at95[e]},
                      {"build_seconds", s.build_s},
                      {"build_cpu_seconds", s.build_cpu_s}};
  }
  return at_095;
}

// The sections after the sweep (ours only). A section that fails is
// reported in the record (and on stderr) rather than losing the sweep's
// figures.
nlohmann::json RunSections(const BenchFlags& f, const AnnData& d, const AnnBuild& b,
                           const Sweep& sw) {
  nlohmann::json sections = nlohmann::json::object();
  if (!b.hnsw && !b.ivf) return sections;
  auto keep = [&](const char* name, absl::StatusOr<nlohmann::json> result) {
    if (result.ok()) {
      sections[name] = *result;
    } else {
      std::fprintf(stderr, "ann: the %s section failed: %s\n", name,
                   result.status().ToString().c_str());
      sections[name] = {{"error", result.status().ToString()}};
    }
  };
  AnnSearchParams params;  // the index's defaults
  keep("filter", RunFilterSection(f, *b.index, d.base, d.queries, d.k, params));
  keep("tune", RunTuneSection(f, *b.index, d.queries, d.truth, d.k));
  std::vector<int> settings;
  for (const auto& [v, point] : sw.ours_points) settings.push_back(v);
  keep("delete", RunDeleteSection(f, d.base, d.queries, d.k, settings));
  return sections;
}

// The JSON record and ann_<dataset>_<spec>.svg (recall@k vs QPS).
BenchOutput AnnRecord(const BenchFlags& f, const AnnData& d, const AnnBuild& b, const Sweep& sw,
                      const nlohmann::json& at_095, const nlohmann::json& sections) {
  BenchOutput out;
  out.params = {{"dataset", f.dataset},
                {"num_base", d.base.rows},
                {"num_queries", d.queries.rows},
                {"dim", d.base.dim},
                {"ann_spec", f.ann_spec},
                {"ef_construction", f.ef_construction},
                {"k", d.k},
                {"sweep_knob", b.knob},
                {"sweep", sw.settings},
                {"ground_truth", "exact inner product on unit vectors (brute force)"},
                {"search_threads", 1},
                {"build_threads", f.ann_build_threads},
                {"peers", f.ann_peers},
                {"filter_fractions", f.filter_fractions},
                {"delete_fraction", f.delete_fraction},
                {"target_recall", f.target_recall},
                {"tune_sample", f.tune_sample}};
  if (f.dataset != "siftsmall") {
    out.params["seed"] = f.seed;
    out.params["clusters"] = f.clusters;
    out.params["spread"] = f.spread;
  }
  out.results = {{"build_seconds", b.searchers[0].build_s},
                 {"build_cpu_seconds", b.searchers[0].build_cpu_s},
                 {"build_rounds", f.build_rounds},
                 {"distances", b.index->distance_implementation()},
                 {"memory_mib", b.mem_mib},
                 {"ground_truth_seconds", d.gt_s},
                 {"points", sw.points},
                 {"best_qps_at_recall_0.95", at_095},
                 {"sections", sections}};
  LinePlot plot;
  plot.title = Fmt("ann: %s %zu x %u, %s, 1 thread", f.dataset.c_str(), d.base.rows, d.base.dim,
                   f.ann_spec.c_str());
  plot.x_label = Fmt("recall@%zu", d.k);
  plot.y_label = "queries per second";
  plot.series = sw.curves;
  SavePlot(f.out_dir, absl::StrCat("ann_", FileSafe(f.dataset), "_", FileSafe(f.ann_spec), ".svg"),
           RenderSvg(plot), &out.results);
  return out;
}

}  // namespace

absl::StatusOr<BenchOutput> RunAnn(const BenchFlags& f) {
  if (f.ann_multivector) return RunAnnMultiVector(f);
  ATTN_ASSIGN_OR_RETURN(const AnnData d, SetupAnnData(f));
  const int threads_before = omp_get_max_threads();
  ATTN_ASSIGN_OR_RETURN(AnnBuild b, BuildAll(f, d));
  ATTN_ASSIGN_OR_RETURN(const Sweep sw, RunSweep(f, d, b));
  const nlohmann::json at_095 = PrintSweep(d, b, sw);
  b.searchers.resize(1);  // free the peers' memory before the sections below
  const nlohmann::json sections = RunSections(f, d, b, sw);
  omp_set_num_threads(threads_before);
  return AnnRecord(f, d, b, sw, at_095, sections);
}

}  // namespace attnsearch::bench
