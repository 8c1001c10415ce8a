// ann: the FAISS candidate index (src/ann/ann_index.h) alone.
//
//   attnsearch-bench --benchmarks=ann [--dataset=synthetic|uniform|siftsmall]
//       [--num_docs=100000 --num_queries=1000 --dim=128 --clusters=100
//        --spread=0.5 --seed=42] [--ann_spec=HNSW32,Flat]
//       [--ef_construction=80] [--ef_search=16,32,64,128,256]
//       [--nprobe=1,4,16,64] [--k=10] [--dump_dir=DIR]
//
// Builds an AnnIndex from the factory spec over unit pooled vectors (labels
// 0..n-1, one Add call), and reports the build time and the memory it took
// (VmRSS delta across the build, from /proc/self/status). Then, for each
// setting of the sweep (efSearch for HNSW specs, nprobe for IVF specs, one
// run otherwise), searches every query one call at a time on one thread
// (omp_set_num_threads(1)) and reports recall@k against the exact inner
// product top-k and the QPS, with latency percentiles (the query set is
// repeated until at least 0.5 s of searching per setting).
//
// Ground truth: always the exact top-k by inner product over the same unit
// vectors, computed here by brute force. For siftsmall this is NOT the
// shipped groundtruth.ivecs (L2 on the raw, unnormalised vectors): the engine
// searches by inner product on normalised vectors, so we normalise base and
// queries and compute our own IP ground truth; recall against the shipped
// file is reported alongside (recall_vs_l2_groundtruth) for reference only.
// Output: table, JSON record, and ann_<dataset>_<spec>.svg (recall@k vs QPS).
#include <omp.h>

#include <chrono>
#include <cstdio>

#include "ann/ann_index.h"
#include "benchmarks.h"
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

}  // namespace

absl::StatusOr<BenchOutput> RunAnn(const BenchFlags& f) {
  VectorSet base, queries;
  std::vector<std::vector<int64_t>> l2_truth;
  if (f.dataset == "siftsmall") {
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
    for (size_t j = 0; j < queries.rows; ++j) data.QueryPooled(j, queries.values.data() + j * f.dim);
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
  std::printf("ann: %s, %zu base x %u, %zu queries, spec %s, k=%zu\n", f.dataset.c_str(),
              base.rows, base.dim, queries.rows, f.ann_spec.c_str(), k);

  // Exact ground truth (inner product, unit vectors).
  std::vector<std::vector<int64_t>> truth;
  const auto gt0 = Clock::now();
  ExactTopK(base.values.data(), base.rows, queries.values.data(), queries.rows, base.dim, k,
            &truth);
  const double gt_s = std::chrono::duration<double>(Clock::now() - gt0).count();

  // Build.
  AnnOptions opts;
  opts.ef_construction = f.ef_construction;
  const long rss0 = RssKb();
  const auto b0 = Clock::now();
  auto index = AnnIndex::Create(f.ann_spec, base.dim, opts);
  if (!index.ok()) return index.status();
  std::vector<Label> labels(base.rows);
  for (size_t i = 0; i < base.rows; ++i) labels[i] = i;
  absl::Status st = (*index)->Add(labels.data(), base.values.data(), base.rows);
  if (!st.ok()) return st;
  const double build_s = std::chrono::duration<double>(Clock::now() - b0).count();
  const long rss1 = RssKb();
  const double mem_mib = double(rss1 - rss0) / 1024.0;
  std::printf("build: %.2f s (%d threads), memory +%.1f MiB (VmRSS delta); exact ground truth "
              "(IP, brute force): %.2f s\n",
              build_s, omp_get_max_threads(), mem_mib, gt_s);

  // Sweep.
  const bool hnsw = f.ann_spec.find("HNSW") != std::string::npos;
  const bool ivf = f.ann_spec.find("IVF") != std::string::npos;
  std::vector<int> sweep = hnsw ? f.ef_search : ivf ? f.nprobe : std::vector<int>{0};
  const char* knob = hnsw ? "efSearch" : ivf ? "nprobe" : "-";
  const int threads_before = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<std::vector<std::string>> table;
  nlohmann::json points = nlohmann::json::array();
  Series curve;
  curve.name = f.ann_spec;
  std::vector<AnnNeighbor> found;
  for (int v : sweep) {
    AnnSearchParams params;
    if (hnsw) params.ef_search = v;
    if (ivf) params.nprobe = v;
    std::vector<std::vector<int64_t>> results(queries.rows);
    std::vector<double> lat_us(queries.rows);
    // One untimed pass over a few queries warms caches.
    for (size_t j = 0; j < std::min<size_t>(queries.rows, 20); ++j) {
      st = (*index)->Search(queries.row(j), k, params, nullptr, &found);
      if (!st.ok()) return st;
    }
    // Passes over all queries until at least 0.5 s elapsed (small query
    // sets would otherwise be timed over a few milliseconds); recall comes
    // from the first pass.
    const auto t0 = Clock::now();
    size_t searched = 0;
    lat_us.clear();
    for (int pass = 0;; ++pass) {
      for (size_t j = 0; j < queries.rows; ++j) {
        const auto q0 = Clock::now();
        st = (*index)->Search(queries.row(j), k, params, nullptr, &found);
        lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - q0).count());
        if (!st.ok()) return st;
        if (pass == 0) {
          for (const auto& n : found) results[j].push_back(int64_t(n.label));
        }
      }
      searched += queries.rows;
      if (std::chrono::duration<double>(Clock::now() - t0).count() >= 0.5) break;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    double recall = 0, recall_l2 = 0;
    for (size_t j = 0; j < queries.rows; ++j) {
      recall += RecallAtK(results[j], truth[j], k);
      if (j < l2_truth.size()) recall_l2 += RecallAtK(results[j], l2_truth[j], k);
    }
    recall /= double(queries.rows);
    recall_l2 /= double(queries.rows);
    const double qps = double(searched) / secs;
    const Summary lat = Summarize(lat_us);
    table.push_back({hnsw || ivf ? std::to_string(v) : "-", Fmt("%.4f", recall),
                     Fmt("%.0f", qps), Fmt("%.1f", lat.p50), Fmt("%.1f", lat.p99)});
    nlohmann::json p = {{"knob", knob}, {"value", v},          {"recall", recall},
                        {"qps", qps},   {"latency_us", ToJson(lat)}};
    if (!l2_truth.empty()) p["recall_vs_l2_groundtruth"] = recall_l2;
    points.push_back(p);
    curve.x.push_back(recall);
    curve.y.push_back(qps);
    if (hnsw || ivf) curve.point_labels.push_back(std::string(knob) + "=" + std::to_string(v));
  }
  omp_set_num_threads(threads_before);
  std::printf("%s", FormatTable({knob, Fmt("recall@%zu", k), "QPS (1 thread)", "p50 us",
                                 "p99 us"},
                                table)
                        .c_str());

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
                {"build_threads", threads_before}};
  if (f.dataset != "siftsmall") {
    out.params["seed"] = f.seed;
    out.params["clusters"] = f.clusters;
    out.params["spread"] = f.spread;
  }
  out.results = {{"build_seconds", build_s},
                 {"memory_mib", mem_mib},
                 {"ground_truth_seconds", gt_s},
                 {"points", points}};

  LinePlot plot;
  plot.title = Fmt("ann: %s %zu x %u, %s, 1 thread", f.dataset.c_str(), base.rows, base.dim,
                   f.ann_spec.c_str());
  plot.x_label = Fmt("recall@%zu", k);
  plot.y_label = "queries per second";
  plot.series.push_back(curve);
  const std::string svg =
      f.out_dir + "/ann_" + FileSafe(f.dataset) + "_" + FileSafe(f.ann_spec) + ".svg";
  if (WriteFile(svg, RenderSvg(plot))) {
    std::printf("plot: %s\n", svg.c_str());
    out.results["svg"] = svg;
  }
  return out;
}

}  // namespace attnsearch::bench
