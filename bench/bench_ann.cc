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
  CollectionConfig config;
  config.dim = base.dim;
  config.token_dtype = TokenDtype::kF32;
  config.ann_spec = f.ann_spec;
  CollectionOptions options;
  options.ann.ef_construction = f.ef_construction;
  options.rebuild_tombstone_ratio = 0;  // no rebuild while measuring tombstones
  auto id = [](size_t row) { return "d" + std::to_string(row); };
  omp_set_num_threads(f.ann_build_threads);
  {
    ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Collection::Create(path, config, options));
    for (size_t i = 0; i < base.rows; i += 1000) {
      std::vector<Document> docs;
      for (size_t r = i; r < std::min(base.rows, i + 1000); ++r) {
        Document d;
        d.id = id(r);
        d.pooled.assign(base.row(r), base.row(r) + base.dim);
        docs.push_back(std::move(d));
      }
      ATTN_RETURN_IF_ERROR(c->Upsert(std::move(docs)).status());
    }
  }
  // Rows live now; new documents get rows after the base ones.
  VectorSet all = base;
  std::vector<bool> live(base.rows, true);
  auto truth_now = [&](std::vector<std::vector<int64_t>>* truth) {
    ExactTopKAmong(
        all, queries, k, [&](size_t i) { return live[i]; }, truth);
  };
  auto row_of = [&](const std::string& doc_id) { return int64_t(std::stoll(doc_id.substr(1))); };
  // A copy of the collection before any delete: the reference every later
  // state is timed against, interleaved, in the same slices of time.
  const std::string ref_path = scratch.path() + "/before";
  {
    std::error_code ec;
    std::filesystem::copy(path, ref_path, std::filesystem::copy_options::recursive, ec);
    if (ec) return absl::InternalError("copying the collection: " + ec.message());
  }
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> reference, Collection::Open(ref_path, options));
  std::vector<std::vector<int64_t>> truth_before;
  truth_now(&truth_before);
  // Recall and QPS at each setting through Collection::Search, of `c` and
  // of the reference, interleaved.
  auto measure = [&](const Collection& c, const char* phase, std::map<int, QueryRun>* runs,
                     std::map<int, QueryRun>* reference_runs) -> absl::Status {
    omp_set_num_threads(1);
    std::vector<std::vector<int64_t>> truth;
    truth_now(&truth);
    for (int v : settings) {
      SearchQuery q;
      q.top_k = uint32_t(k);
      q.candidates = uint32_t(k);
      q.mode = RerankMode::kNone;
      q.ann_params =
          Fmt("%s=%d", f.ann_spec.find("HNSW") != std::string::npos ? "efSearch" : "nprobe", v);
      // Microseconds the ANN stage took, summed, and the searches: the
      // stage the index decides, apart from the store's fetch.
      std::pair<double, size_t> ann_main{0, 0}, ann_reference{0, 0};
      auto searcher = [&](const Collection& target, std::pair<double, size_t>* ann) {
        return [&, q, ann](size_t j, std::vector<int64_t>* ids) mutable -> absl::Status {
          q.pooled.assign(queries.row(j), queries.row(j) + queries.dim);
          ATTN_ASSIGN_OR_RETURN(SearchResult r, target.Search(q));
          ann->first += double(r.timing.ann_us);
          ann->second += 1;
          ids->clear();
          for (const SearchHit& h : r.hits) ids->push_back(row_of(h.id));
          return absl::OkStatus();
        };
      };
      ATTN_ASSIGN_OR_RETURN(
          std::vector<QueryRun> both,
          RunInterleaved(queries, k, 1.0,
                         {Contender{&truth, searcher(c, &ann_main),
                                    [&](int64_t row) { return !live[size_t(row)]; }},
                          Contender{&truth_before, searcher(*reference, &ann_reference),
                                    [](int64_t) { return false; }}}));
      both[0].ann_us = ann_main.first / double(std::max<size_t>(1, ann_main.second));
      both[1].ann_us = ann_reference.first / double(std::max<size_t>(1, ann_reference.second));
      (*runs)[v] = both[0];
      (*reference_runs)[v] = both[1];
    }
    std::printf("  %s measured\n", phase);
    return absl::OkStatus();
  };
  std::map<int, QueryRun> tombstoned, before_t, rebuilt, before_r;
  std::mt19937_64 rng(f.seed + 11);
  size_t deleted = 0;
  {
    ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Collection::Open(path, options));
    std::bernoulli_distribution del(std::min(1.0, f.delete_fraction));
    std::vector<std::string> ids;
    for (size_t r = 0; r < base.rows; ++r) {
      if (!del(rng)) continue;
      ids.push_back(id(r));
      live[r] = false;
    }
    deleted = ids.size();
    for (size_t i = 0; i < ids.size(); i += 1000) {
      std::vector<std::string> batch(ids.begin() + long(i),
                                     ids.begin() + long(std::min(ids.size(), i + 1000)));
      ATTN_RETURN_IF_ERROR(c->Delete(batch).status());
    }
    ATTN_RETURN_IF_ERROR(measure(*c, "with tombstones", &tombstoned, &before_t));
  }
  // Reopen with the rebuild on (threshold below the deleted share): it
  // starts in the background; a writer adds and deletes meanwhile.
  options.rebuild_tombstone_ratio = std::min(0.2, 0.75 * f.delete_fraction);
  omp_set_num_threads(f.ann_build_threads);
  const auto r0 = Clock::now();
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Collection::Open(path, options));
  std::vector<std::string> added, removed;
  std::normal_distribution<float> gauss(0.f, 1.f);
  std::uniform_int_distribution<size_t> pick(0, base.rows - 1);
  size_t batches_during = 0;
  while (true) {
    const CollectionStats st = c->Stats();
    if (st.rebuilds >= 1 && !st.rebuild_in_progress) break;
    if (std::chrono::duration<double>(Clock::now() - r0).count() > 600) {
      return absl::DeadlineExceededError("the background rebuild did not finish in 10 minutes");
    }
    // 50 new documents and up to 50 deletes per round, 20 ms apart: a
    // steady trickle that leaves the collection's size about as it was.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::vector<Document> docs;
    for (int j = 0; j < 50; ++j) {
      Document d;
      d.id = id(all.rows);
      d.pooled.resize(base.dim);
      double norm = 0;
      for (float& x : d.pooled) {
        x = gauss(rng);
        norm += double(x) * x;
      }
      for (float& x : d.pooled) x = float(x / std::sqrt(norm));
      all.values.insert(all.values.end(), d.pooled.begin(), d.pooled.end());
      all.rows++;
      live.push_back(true);
      added.push_back(d.id);
      docs.push_back(std::move(d));
    }
    ATTN_RETURN_IF_ERROR(c->Upsert(std::move(docs)).status());
    std::vector<std::string> gone;
    for (int j = 0; j < 50; ++j) {
      const size_t r = pick(rng);
      if (!live[r]) continue;
      live[r] = false;
      gone.push_back(id(r));
    }
    ATTN_RETURN_IF_ERROR(c->Delete(gone).status());
    removed.insert(removed.end(), gone.begin(), gone.end());
    ++batches_during;
  }
  const double rebuild_s = std::chrono::duration<double>(Clock::now() - r0).count();
  // Every acknowledged write is there; every acknowledged delete is gone.
  size_t missing = 0, wrong = 0, resurrected = 0;
  for (size_t i = 0; i < added.size(); i += 1000) {
    const std::vector<std::string> batch(added.begin() + long(i),
                                         added.begin() + long(std::min(added.size(), i + 1000)));
    ATTN_ASSIGN_OR_RETURN(GetResult got, c->Get(batch, /*include_vectors=*/true));
    missing += got.not_found_ids.size();
    for (const Document& d : got.documents) {
      const size_t row = size_t(row_of(d.id));
      if (d.pooled.size() != base.dim ||
          !std::equal(d.pooled.begin(), d.pooled.end(), all.row(row),
                      [](float a, float b) { return std::abs(a - b) <= 1e-6f; })) {
        ++wrong;
      }
    }
  }
  for (size_t i = 0; i < removed.size(); i += 1000) {
    const std::vector<std::string> batch(
        removed.begin() + long(i), removed.begin() + long(std::min(removed.size(), i + 1000)));
    ATTN_ASSIGN_OR_RETURN(GetResult gone, c->Get(batch, false));
    resurrected += gone.documents.size();
  }
  ATTN_RETURN_IF_ERROR(measure(*c, "after the rebuild", &rebuilt, &before_r));
  const CollectionStats st = c->Stats();

  nlohmann::json points = nlohmann::json::array();
  std::vector<std::vector<std::string>> table;
  size_t deleted_returned = 0;
  for (int v : settings) {
    const QueryRun &b1 = before_t[v], &t = tombstoned[v], &b2 = before_r[v], &a = rebuilt[v];
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
      deleted, base.rows, 100.0 * double(deleted) / double(base.rows), rebuild_s, batches_during,
      added.size(), removed.size(), missing, wrong, resurrected, deleted_returned,
      (unsigned long long)st.ann_vectors, (unsigned long long)st.num_documents,
      (unsigned long long)st.num_tombstones,
      FormatTable({"setting", "before recall", "tombstoned recall", "QPS tombstoned/before",
                   "ANN us tombstoned/before", "rebuilt recall", "QPS rebuilt/before",
                   "ANN us rebuilt/before"},
                  table)
          .c_str());
  omp_set_num_threads(1);
  return nlohmann::json{{"deleted", deleted},
                        {"rebuild_seconds", rebuild_s},
                        {"write_rounds_during_rebuild", batches_during},
                        {"added_during_rebuild", added.size()},
                        {"deleted_during_rebuild", removed.size()},
                        {"added_missing", missing},
                        {"added_wrong", wrong},
                        {"deleted_found", resurrected},
                        {"deleted_returned", deleted_returned},
                        {"index_vectors_after", st.ann_vectors},
                        {"live_after", st.num_documents},
                        {"points", points}};
}

}  // namespace

absl::StatusOr<BenchOutput> RunAnn(const BenchFlags& f) {
  VectorSet base, queries;
  std::vector<std::vector<int64_t>> l2_truth;
  if (f.dataset == "siftsmall") {
    if (f.siftsmall_dir.empty()) {
      return absl::InvalidArgumentError(
          "--siftsmall_dir: required for --dataset=siftsmall (e.g. ../shared/data/siftsmall)");
    }
    auto b = LoadFvecsNormalized(f.siftsmall_dir + "/base.fvecs");
    if (!b.ok()) return b.status();
    auto q = LoadFvecsNormalized(f.siftsmall_dir + "/query.fvecs");
    if (!q.ok()) return q.status();
    auto g = LoadIvecs(f.siftsmall_dir + "/groundtruth.ivecs");
    if (g.ok()) l2_truth = std::move(*g);
    base = std::move(*b);
    queries = std::move(*q);
  } else if (f.dataset == "synthetic" || f.dataset == "uniform") {
    SyntheticDataset data(SyntheticFromFlags(f));
    base.dim = queries.dim = f.dim;
    base.rows = f.num_docs;
    base.values.resize(base.rows * f.dim);
    data.PooledBlock(0, base.rows, base.values.data());
    queries.rows = f.num_queries;
    queries.values.resize(queries.rows * f.dim);
    for (size_t j = 0; j < queries.rows; ++j)
      data.QueryPooled(j, queries.values.data() + j * f.dim);
  } else {
    return absl::InvalidArgumentError("--dataset: synthetic, uniform or siftsmall");
  }
  const size_t k = size_t(f.k);
  if (!f.dump_dir.empty()) {
    auto dump = [](const std::string& path, const VectorSet& v) {
      std::string bytes;
      const int32_t dim = int32_t(v.dim);
      for (size_t i = 0; i < v.rows; ++i) {
        bytes.append(reinterpret_cast<const char*>(&dim), 4);
        bytes.append(reinterpret_cast<const char*>(v.row(i)), size_t(v.dim) * 4);
      }
      return WriteFile(path, bytes);
    };
    if (!dump(f.dump_dir + "/base.fvecs", base) || !dump(f.dump_dir + "/query.fvecs", queries)) {
      return absl::InternalError("cannot write --dump_dir files");
    }
  }
  std::printf("ann: %s, %zu base x %u, %zu queries, spec %s, k=%zu\n", f.dataset.c_str(), base.rows,
              base.dim, queries.rows, f.ann_spec.c_str(), k);

  // Exact ground truth (inner product, unit vectors).
  std::vector<std::vector<int64_t>> truth;
  const auto gt0 = Clock::now();
  ExactTopK(base.values.data(), base.rows, queries.values.data(), queries.rows, base.dim, k,
            &truth);
  const double gt_s = std::chrono::duration<double>(Clock::now() - gt0).count();

  // Build ours, then the peers, each with the same build threads.
  const int threads_before = omp_get_max_threads();
  omp_set_num_threads(f.ann_build_threads);
  AnnOptions opts;
  opts.ef_construction = f.ef_construction;
  const long rss0 = RssKb();
  const BuildTimer b0;
  auto index = AnnIndex::Create(f.ann_spec, base.dim, opts);
  if (!index.ok()) return index.status();
  std::vector<Label> labels(base.rows);
  for (size_t i = 0; i < base.rows; ++i) labels[i] = i;
  absl::Status st = (*index)->Add(labels.data(), base.values.data(), base.rows);
  if (!st.ok()) return st;
  const double build_s = b0.wall(), build_cpu_s = b0.cpu();
  const long rss1 = RssKb();
  const double mem_mib = double(rss1 - rss0) / 1024.0;
  std::printf(
      "build: %.2f s, CPU %.2f s (%d threads, distances: %s), memory +%.1f MiB "
      "(VmRSS delta); exact ground truth (IP, brute force): %.2f s\n",
      build_s, build_cpu_s, f.ann_build_threads, (*index)->distance_implementation().c_str(),
      mem_mib, gt_s);

  const bool hnsw = f.ann_spec.find("HNSW") != std::string::npos;
  const bool ivf = f.ann_spec.find("IVF") != std::string::npos;
  const int hnsw_m = hnsw ? std::atoi(f.ann_spec.c_str() + f.ann_spec.find("HNSW") + 4) : 0;

  // The searchers compared: ours first, then the peers (HNSW specs).
  struct Searcher {
    std::string name;
    double build_s = 0, build_cpu_s = 0;  // fastest round
    std::unique_ptr<AnnPeer> peer;        // null: ours
  };
  std::vector<Searcher> searchers(1);
  searchers[0].name = "attnsearch";
  searchers[0].build_s = build_s;
  searchers[0].build_cpu_s = build_cpu_s;
  for (const std::string& name : hnsw ? f.ann_peers : std::vector<std::string>{}) {
    Searcher s;
    s.name = name;
    const BuildTimer p0;
    if (name == "hnswlib") {
      if (!HnswlibAvailable()) {
        std::printf("hnswlib: skipped (this CPU lacks AVX-512F)\n");
        continue;
      }
      s.peer = BuildHnswlib(base.values.data(), base.rows, base.dim, hnsw_m, f.ef_construction,
                            f.ann_build_threads);
    } else if (name == "faiss") {
      s.name = "faiss-IndexHNSWFlat";
      s.peer =
          BuildFaissHnswFlat(base.values.data(), base.rows, base.dim, hnsw_m, f.ef_construction);
    } else if (name == "-" || name.empty()) {
      continue;
    } else {
      return absl::InvalidArgumentError("--ann_peers: hnswlib, faiss or -");
    }
    s.build_s = p0.wall();
    s.build_cpu_s = p0.cpu();
    std::printf("%s: build %.2f s, CPU %.2f s (%d threads)\n", s.name.c_str(), s.build_s,
                s.build_cpu_s, f.ann_build_threads);
    searchers.push_back(std::move(s));
  }
  // Further build rounds of ours and hnswlib, alternating, so that a load
  // change on a shared machine does not decide the build comparison; each
  // keeps its fastest round (FAISS's slow build runs once).
  for (int round = 2; round <= f.build_rounds; ++round) {
    const BuildTimer r0;
    auto again = AnnIndex::Create(f.ann_spec, base.dim, opts);
    if (!again.ok()) return again.status();
    st = (*again)->Add(labels.data(), base.values.data(), base.rows);
    if (!st.ok()) return st;
    std::printf("attnsearch: build round %d %.2f s, CPU %.2f s\n", round, r0.wall(), r0.cpu());
    searchers[0].build_s = std::min(searchers[0].build_s, r0.wall());
    searchers[0].build_cpu_s = std::min(searchers[0].build_cpu_s, r0.cpu());
    index = std::move(again);
    for (auto& s : searchers) {
      if (s.name != "hnswlib") continue;
      s.peer.reset();
      const BuildTimer p0;
      s.peer = BuildHnswlib(base.values.data(), base.rows, base.dim, hnsw_m, f.ef_construction,
                            f.ann_build_threads);
      std::printf("hnswlib: build round %d %.2f s, CPU %.2f s\n", round, p0.wall(), p0.cpu());
      s.build_s = std::min(s.build_s, p0.wall());
      s.build_cpu_s = std::min(s.build_cpu_s, p0.cpu());
    }
  }
  const double build_best_s = searchers[0].build_s;
  const double build_best_cpu_s = searchers[0].build_cpu_s;

  // Sweep: every searcher at each setting, timed in interleaved passes over
  // the query set (one query per call, one thread) until ours has searched
  // for at least 0.5 s, so load changes on a shared machine hit them alike.
  std::vector<int> sweep = hnsw ? f.ef_search : ivf ? f.nprobe : std::vector<int>{0};
  const char* knob = hnsw ? "efSearch" : ivf ? "nprobe" : "-";
  omp_set_num_threads(1);
  std::vector<std::vector<std::string>> table;
  nlohmann::json points = nlohmann::json::array();
  std::vector<Series> curves(searchers.size());
  for (size_t e = 0; e < searchers.size(); ++e) {
    curves[e].name = e == 0 ? "attnsearch " + f.ann_spec : searchers[e].name;
  }
  std::vector<AnnNeighbor> found;
  std::vector<int64_t> ids;
  // Best QPS at recall >= 0.95 per searcher, and the setting.
  std::vector<double> qps95(searchers.size(), 0);
  std::vector<int> at95(searchers.size(), 0);
  std::map<int, std::pair<double, double>> ours_points;  // setting -> recall, QPS
  for (int v : sweep) {
    AnnSearchParams params;
    if (hnsw) params.ef_search = v;
    if (ivf) params.nprobe = v;
    for (auto& s : searchers) {
      if (s.peer) s.peer->SetEf(v);
    }
    auto search = [&](size_t e, size_t j, std::vector<int64_t>* out) -> absl::Status {
      if (searchers[e].peer) {
        searchers[e].peer->Search(queries.row(j), k, out);
        return absl::OkStatus();
      }
      ATTN_RETURN_IF_ERROR((*index)->Search(queries.row(j), k, params, nullptr, &found));
      out->clear();
      for (const auto& n : found) out->push_back(int64_t(n.label));
      return absl::OkStatus();
    };
    std::vector<std::vector<std::vector<int64_t>>> results(
        searchers.size(), std::vector<std::vector<int64_t>>(queries.rows));
    std::vector<double> secs(searchers.size(), 0);
    std::vector<size_t> searched(searchers.size(), 0);
    std::vector<double> lat_us;
    for (size_t e = 0; e < searchers.size(); ++e) {  // warm-up, untimed
      for (size_t j = 0; j < std::min<size_t>(queries.rows, 20); ++j) {
        ATTN_RETURN_IF_ERROR(search(e, j, &ids));
      }
    }
    for (int pass = 0; pass < 2 || secs[0] < 0.5; ++pass) {
      for (size_t e = 0; e < searchers.size(); ++e) {
        const auto t0 = Clock::now();
        for (size_t j = 0; j < queries.rows; ++j) {
          const auto q0 = Clock::now();
          ATTN_RETURN_IF_ERROR(search(e, j, &ids));
          if (e == 0) {
            lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - q0).count());
          }
          if (pass == 0) results[e][j] = ids;
        }
        secs[e] += std::chrono::duration<double>(Clock::now() - t0).count();
        searched[e] += queries.rows;
      }
    }
    std::vector<std::string> row = {hnsw || ivf ? std::to_string(v) : "-"};
    nlohmann::json p = {{"knob", knob}, {"value", v}};
    for (size_t e = 0; e < searchers.size(); ++e) {
      double recall = 0, recall_l2 = 0;
      for (size_t j = 0; j < queries.rows; ++j) {
        recall += RecallAtK(results[e][j], truth[j], k);
        if (j < l2_truth.size()) recall_l2 += RecallAtK(results[e][j], l2_truth[j], k);
      }
      recall /= double(queries.rows);
      recall_l2 /= double(queries.rows);
      const double qps = double(searched[e]) / secs[e];
      row.push_back(Fmt("%.4f", recall));
      row.push_back(Fmt("%.0f", qps));
      if (e == 0) {
        const Summary lat = Summarize(lat_us);
        row.push_back(Fmt("%.1f", lat.p50));
        row.push_back(Fmt("%.1f", lat.p99));
        p["recall"] = recall;
        p["qps"] = qps;
        p["latency_us"] = ToJson(lat);
        if (!l2_truth.empty()) p["recall_vs_l2_groundtruth"] = recall_l2;
      } else {
        p["peers"][searchers[e].name] = {{"recall", recall}, {"qps", qps}};
      }
      if (e == 0) ours_points[v] = {recall, qps};
      if (recall >= 0.95 && qps > qps95[e]) {
        qps95[e] = qps;
        at95[e] = v;
      }
      curves[e].x.push_back(recall);
      curves[e].y.push_back(qps);
      if (hnsw || ivf)
        curves[e].point_labels.push_back(std::string(knob) + "=" + std::to_string(v));
    }
    points.push_back(p);
    table.push_back(row);
  }
  std::vector<std::string> header = {knob, Fmt("recall@%zu", k), "QPS (1 thread)", "p50 us",
                                     "p99 us"};
  for (size_t e = 1; e < searchers.size(); ++e) {
    header.push_back(searchers[e].name + " recall");
    header.push_back(searchers[e].name + " QPS");
  }
  std::printf("%s", FormatTable(header, table).c_str());
  nlohmann::json at_095 = nlohmann::json::object();
  for (size_t e = 0; e < searchers.size(); ++e) {
    std::printf("%s: best QPS at recall@%zu >= 0.95: %.0f (%s=%d); build %.2f s, CPU %.2f s",
                searchers[e].name.c_str(), k, qps95[e], knob, at95[e], searchers[e].build_s,
                searchers[e].build_cpu_s);
    if (e > 0) {
      std::printf("; attnsearch/%s: QPS %.2fx, build time %.2fx, build CPU %.2fx",
                  searchers[e].name.c_str(), qps95[e] > 0 ? qps95[0] / qps95[e] : 0.0,
                  build_best_s / searchers[e].build_s, build_best_cpu_s / searchers[e].build_cpu_s);
    }
    std::printf("\n");
    at_095[searchers[e].name] = {{"qps", qps95[e]},
                                 {"setting", at95[e]},
                                 {"build_seconds", searchers[e].build_s},
                                 {"build_cpu_seconds", searchers[e].build_cpu_s}};
  }
  searchers.resize(1);  // free the peers' memory before the sections below

  nlohmann::json sections = nlohmann::json::object();
  if (hnsw || ivf) {
    // A section that fails is reported in the record (and on stderr)
    // rather than losing the sweep's figures.
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
    keep("filter", RunFilterSection(f, **index, base, queries, k, params));
    keep("tune", RunTuneSection(f, **index, queries, truth, k));
    std::vector<int> settings;
    for (const auto& [v, point] : ours_points) settings.push_back(v);
    keep("delete", RunDeleteSection(f, base, queries, k, settings));
  }
  omp_set_num_threads(threads_before);

  BenchOutput out;
  out.params = {{"dataset", f.dataset},
                {"num_base", base.rows},
                {"num_queries", queries.rows},
                {"dim", base.dim},
                {"ann_spec", f.ann_spec},
                {"ef_construction", f.ef_construction},
                {"k", k},
                {"sweep_knob", knob},
                {"sweep", sweep},
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
  out.results = {{"build_seconds", build_best_s},
                 {"build_cpu_seconds", build_best_cpu_s},
                 {"build_rounds", f.build_rounds},
                 {"distances", (*index)->distance_implementation()},
                 {"memory_mib", mem_mib},
                 {"ground_truth_seconds", gt_s},
                 {"points", points},
                 {"best_qps_at_recall_0.95", at_095},
                 {"sections", sections}};

  LinePlot plot;
  plot.title = Fmt("ann: %s %zu x %u, %s, 1 thread", f.dataset.c_str(), base.rows, base.dim,
                   f.ann_spec.c_str());
  plot.x_label = Fmt("recall@%zu", k);
  plot.y_label = "queries per second";
  plot.series = curves;
  SavePlot(f.out_dir, absl::StrCat("ann_", FileSafe(f.dataset), "_", FileSafe(f.ann_spec), ".svg"),
           RenderSvg(plot), &out.results);
  return out;
}

}  // namespace attnsearch::bench
