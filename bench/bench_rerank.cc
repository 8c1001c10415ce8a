// rerank: the attention reranker alone (src/rerank/reranker.h), next to what
// the same arithmetic costs elsewhere, all on identical inputs in one run.
//
//   attnsearch-bench --benchmarks=rerank [--candidates=100]
//       [--doc_tokens_min=32 --doc_tokens_max=180] [--query_tokens=32]
//       [--dim=128] [--dtype=bf16|f32] [--threads=2] [--temperature=0.1]
//       [--min_seconds=2] [--python=/usr/bin/python3]
//
// Data: `candidates` documents from the clustered synthetic generator with
// token counts uniform in [doc_tokens_min, doc_tokens_max], and one query of
// m = query_tokens tokens, uniform weights 1/m. FLOPs per query are
// 2·m·d·Σn (the Q·Dᵀ matmul; the softmax is not counted).
//
// Variants, each timed for at least --min_seconds after a warm-up, one query
// per call, threads set with omp_set_num_threads(--threads). Our variants and
// oneDNN's run interleaved in ~20 ms slices, so a change of the shared
// machine's load during the run hits them alike and their ratios hold
// (PyTorch runs afterwards, in its own process):
//   ours            Reranker::Score (ATTENTION): matmul + segmented softmax.
//   matmul          oneDNN's bare matmul Q·Dᵀ over the concatenated tokens
//                   with the exact shape baked in; primitive, memory objects
//                   and stream created once: the floor for the GEMM.
//   matmul_rt       the same matmul through a runtime-dimension primitive
//                   with memory objects and a stream created per call.
//   matmul_t        Sᵀ = D·Qᵀ, runtime dimensions, per-call objects: the
//                   reranker's own orientation. The fastest bare matmul is
//                   the floor "ours" is compared with.
//   ours+explain    Score keeping its similarities, then
//                   Reranker::ExplainScored for the top 10, as the engine
//                   does with explain = true.
// --dtype=int8 stores one scale per token; the bare matmuls are skipped and
// PyTorch runs on the dequantized values.
//   torch           bench/torch_rerank.py under --python (Debian's
//                   python3-torch), eager, same threads: S = Q @ D_catᵀ,
//                   segmented softmax over each document's columns at τ (a
//                   padded, vectorised gather), weighted sum. Also a
//                   per-document loop and, for bf16, the f32 version.
// The inputs go to a temporary file both sides read (bf16 values rounded the
// same way), and the PyTorch scores are compared with ours (max abs diff).
// Output: table, JSON record, and bar chart rerank_<dtype>_c<candidates>.svg.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "benchmarks.h"
#include "core/vector_math.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "report.h"
#include "rerank/reranker.h"
#include "svg.h"

namespace attnsearch::bench {
namespace {

using Clock = std::chrono::steady_clock;
using dnnl::memory;

// Calls fn repeatedly (after `warmup` calls) for at least min_seconds and at
// least min_iters times; returns the per-call times in microseconds.
// Times several variants in alternating slices of ~20 ms until each ran at
// least min_seconds (and min_iters calls), so that a change in the machine's
// load during the run affects every variant alike: their ratios are what
// the benchmark reports. Returns each call's microseconds, per variant.
std::vector<std::vector<double>> TimeInterleaved(const std::vector<std::function<void()>>& fns,
                                                 double min_seconds, int warmup = 5,
                                                 int min_iters = 20) {
  std::vector<std::vector<double>> us(fns.size());
  std::vector<double> spent(fns.size(), 0.0);
  for (const auto& fn : fns) {
    for (int i = 0; i < warmup; ++i) fn();
  }
  auto done = [&] {
    for (size_t v = 0; v < fns.size(); ++v) {
      if (spent[v] < min_seconds || int(us[v].size()) < min_iters) return false;
    }
    return true;
  };
  while (!done()) {
    for (size_t v = 0; v < fns.size(); ++v) {
      const auto slice = Clock::now();
      do {
        const auto t0 = Clock::now();
        fns[v]();
        const auto t1 = Clock::now();
        const double d = std::chrono::duration<double, std::micro>(t1 - t0).count();
        us[v].push_back(d);
        spent[v] += d * 1e-6;
      } while (std::chrono::duration<double>(Clock::now() - slice).count() < 0.02);
    }
  }
  return us;
}

std::string ReadAll(FILE* p) {
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  return out;
}

}  // namespace

absl::StatusOr<BenchOutput> RunRerank(const BenchFlags& f) {
  const bool bf16 = f.dtype == "bf16", int8 = f.dtype == "int8";
  if (!bf16 && !int8 && f.dtype != "f32") {
    return absl::InvalidArgumentError("--dtype: bf16, f32 or int8");
  }
  if (f.candidates <= 0 || f.query_tokens <= 0 || f.doc_tokens_min <= 0 ||
      f.doc_tokens_max < f.doc_tokens_min) {
    return absl::InvalidArgumentError("rerank: bad candidates / token counts");
  }
  omp_set_num_threads(f.threads);
  const uint32_t d = f.dim, m = uint32_t(f.query_tokens);
  const size_t C = size_t(f.candidates);

  SyntheticOptions so = SyntheticFromFlags(f);
  so.tokens_min = uint32_t(f.doc_tokens_min);
  so.tokens_max = uint32_t(f.doc_tokens_max);
  so.token_counts = TokenCountDistribution::kUniform;
  SyntheticDataset data(so);

  // Documents back to back; f32 values rounded through bf16 when bf16 so
  // that every implementation sees the same numbers.
  std::vector<uint32_t> rows(C);
  std::vector<size_t> offsets(C);
  std::vector<float> docs;
  std::vector<float> tmp;
  size_t total = 0;
  for (size_t c = 0; c < C; ++c) {
    rows[c] = data.Tokens(c, &tmp);
    offsets[c] = total;
    total += rows[c];
    docs.insert(docs.end(), tmp.begin(), tmp.end());
  }
  std::vector<float> query;
  data.QueryTokens(0, m, &query);
  std::vector<float> weights(m, 1.f / float(m));
  std::vector<uint16_t> docs_bf16, query_bf16;
  if (bf16) {
    docs_bf16.resize(docs.size());
    FloatToBf16(docs.data(), docs_bf16.data(), docs.size());
    Bf16ToFloat(docs_bf16.data(), docs.data(), docs.size());
    query_bf16.resize(query.size());
    FloatToBf16(query.data(), query_bf16.data(), query.size());
    Bf16ToFloat(query_bf16.data(), query.data(), query.size());
  }
  // int8: one scale per token row, as the store keeps them; every other
  // implementation sees the dequantized values.
  std::vector<int8_t> docs_s8;
  std::vector<float> row_scales;
  if (int8) {
    docs_s8.resize(docs.size());
    row_scales.resize(total);
    for (size_t r = 0; r < total; ++r) {
      row_scales[r] = QuantizeInt8(docs.data() + r * d, docs_s8.data() + r * d, d);
      DequantizeInt8(docs_s8.data() + r * d, row_scales[r], docs.data() + r * d, d);
    }
  }
  const double flops = 2.0 * m * d * double(total);
  const TokenDtype dtype = bf16 ? TokenDtype::kBF16 : int8 ? TokenDtype::kInt8 : TokenDtype::kF32;
  const void* doc_data = bf16   ? static_cast<const void*>(docs_bf16.data())
                         : int8 ? static_cast<const void*>(docs_s8.data())
                                : docs.data();
  const void* q_data = bf16 ? static_cast<const void*>(query_bf16.data()) : query.data();

  // ours.
  RerankerOptions ropts;
  ropts.max_threads = f.threads;
  if (f.max_rows_per_gemm > 0)
    ropts.max_rows_per_gemm =
        size_t(f.max_rows_per_gemm);  // else Score takes every core and resets OpenMP's count
  auto reranker = Reranker::Create(d, dtype, ropts);
  if (!reranker.ok()) return reranker.status();
  RerankQuery rq{query.data(), m, weights.data(), RerankMode::kAttention, f.temperature};
  CandidateTokens ct{doc_data,       total, rows.data(),
                     offsets.data(), C,     int8 ? row_scales.data() : nullptr};
  std::vector<float> scores(C);
  absl::Status score_status;
  std::function<void()> ours_fn = [&] { score_status = (*reranker)->Score(rq, ct, scores.data()); };

  // ours + explain: Score keeping its similarities, then the evidence for
  // the top 10 from them, as the engine does with explain = true.
  const size_t top = std::min<size_t>(10, C);
  std::vector<std::vector<TokenEvidence>> evidence;
  ScoredSimilarities kept;
  std::vector<size_t> idx(C), which(top);
  std::function<void()> ours_explain_fn = [&] {
    score_status = (*reranker)->Score(rq, ct, scores.data(), &kept);
    for (size_t i = 0; i < C; ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + long(top), idx.end(),
                      [&](size_t a, size_t b) { return scores[a] > scores[b]; });
    which.assign(idx.begin(), idx.begin() + long(top));
    if (score_status.ok()) {
      score_status = (*reranker)->ExplainScored(rq, ct, kept, which, &evidence);
    }
  };
  std::vector<double> ours_us, ours_explain_us;

  // Bare matmul, fixed shape, everything created once. (Score sets the
  // calling thread's OpenMP count; set ours again.)
  omp_set_num_threads(f.threads);
  const auto dt = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  const memory::dim md = m, nd = memory::dim(total), dd = d;
  std::vector<float> sim(size_t(m) * total);
  std::vector<double> matmul_us, matmul_rt_us, matmul_t_us;
  if (int8) {
    auto t = TimeInterleaved({ours_fn, ours_explain_fn}, f.min_seconds);
    ours_us = std::move(t[0]);
    ours_explain_us = std::move(t[1]);
  } else
    try {
      dnnl::engine eng(dnnl::engine::kind::cpu, 0);
      dnnl::stream stream(eng);
      memory::desc q_md({md, dd}, dt, {dd, 1});
      memory::desc t_md({dd, nd}, dt, {1, dd});
      memory::desc s_md({md, nd}, memory::data_type::f32, {nd, 1});
      dnnl::matmul::desc desc(q_md, t_md, s_md);
      dnnl::matmul::primitive_desc pd(desc, eng);
      dnnl::matmul mm(pd);
      memory q_mem(q_md, eng, const_cast<void*>(q_data));
      memory t_mem(t_md, eng, const_cast<void*>(doc_data));
      memory s_mem(s_md, eng, sim.data());
      std::function<void()> mm_fn = [&] {
        mm.execute(stream,
                   {{DNNL_ARG_SRC, q_mem}, {DNNL_ARG_WEIGHTS, t_mem}, {DNNL_ARG_DST, s_mem}});
        stream.wait();
      };

      // Runtime dimensions, per-call memory objects and stream (the reranker's way).
      const memory::dim rt = DNNL_RUNTIME_DIM_VAL;
      memory::desc q_rt({rt, dd}, dt, {dd, 1});
      memory::desc t_rt({dd, rt}, dt, {1, dd});
      memory::desc s_rt({rt, rt}, memory::data_type::f32, {rt, 1});
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::matmul::desc desc_rt(q_rt, t_rt, s_rt);
      dnnl::matmul::primitive_desc pd_rt(desc_rt, attr, eng);
      dnnl::matmul mm_rt(pd_rt);
      std::vector<uint8_t> scratch(pd_rt.scratchpad_desc().get_size());
      std::function<void()> mm_rt_fn = [&] {
        memory qm(q_md, eng, const_cast<void*>(q_data));
        memory tm(t_md, eng, const_cast<void*>(doc_data));
        memory sm(s_md, eng, sim.data());
        memory scm(pd_rt.scratchpad_desc(), eng, scratch.data());
        dnnl::stream s(eng);
        mm_rt.execute(s, {{DNNL_ARG_SRC, qm},
                          {DNNL_ARG_WEIGHTS, tm},
                          {DNNL_ARG_DST, sm},
                          {DNNL_ARG_SCRATCHPAD, scm}});
        s.wait();
      };

      // The reranker's orientation: Sᵀ (N x m) = D (N x d) · Qᵀ (d x m), runtime
      // dimensions, per-call memory objects and stream.
      memory::desc d_rt({rt, dd}, dt, {dd, 1});
      memory::desc qt_rt({dd, rt}, dt, {1, dd});
      memory::desc st_rt({rt, rt}, memory::data_type::f32, {rt, 1});
      dnnl::matmul::primitive_desc pd_t(dnnl::matmul::desc(d_rt, qt_rt, st_rt), attr, eng);
      dnnl::matmul mm_t(pd_t);
      std::vector<uint8_t> scratch_t(pd_t.scratchpad_desc().get_size());
      std::function<void()> mm_t_fn = [&] {
        memory dm({{nd, dd}, dt, {dd, 1}}, eng, const_cast<void*>(doc_data));
        memory qm({{dd, md}, dt, {1, dd}}, eng, const_cast<void*>(q_data));
        memory sm({{nd, md}, memory::data_type::f32, {md, 1}}, eng, sim.data());
        memory scm(pd_t.scratchpad_desc(), eng, scratch_t.data());
        dnnl::stream s(eng);
        mm_t.execute(s, {{DNNL_ARG_SRC, dm},
                         {DNNL_ARG_WEIGHTS, qm},
                         {DNNL_ARG_DST, sm},
                         {DNNL_ARG_SCRATCHPAD, scm}});
        s.wait();
      };
      auto t = TimeInterleaved({ours_fn, ours_explain_fn, mm_fn, mm_rt_fn, mm_t_fn}, f.min_seconds);
      ours_us = std::move(t[0]);
      ours_explain_us = std::move(t[1]);
      matmul_us = std::move(t[2]);
      matmul_rt_us = std::move(t[3]);
      matmul_t_us = std::move(t[4]);
    } catch (const dnnl::error& e) {
      return absl::InternalError(std::string("bare matmul: ") + e.what());
    }

  if (!score_status.ok()) return score_status;

  // PyTorch, same inputs through a temporary file.
  nlohmann::json torch;
  std::string torch_note;
  {
    std::string script = f.torch_script.empty()
                             ? std::string(ATTN_BENCH_SOURCE_DIR) + "/torch_rerank.py"
                             : f.torch_script;
    if (access(f.python.c_str(), X_OK) != 0) {
      torch_note =
          "PyTorch skipped: no executable " + f.python + " (Debian's python3 with python3-torch)";
    }
    char path[] = "/tmp/attn_rerank_XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) return absl::InternalError("cannot create a temporary file");
    close(fd);
    {
      std::ofstream out(path, std::ios::binary);
      const int32_t header[6] = {int32_t(m), int32_t(d), int32_t(C), bf16 ? 1 : 0, f.threads, 0};
      out.write(reinterpret_cast<const char*>(header), sizeof header);
      const float fh[2] = {f.temperature, float(f.min_seconds)};
      out.write(reinterpret_cast<const char*>(fh), sizeof fh);
      std::vector<int32_t> r32(rows.begin(), rows.end());
      out.write(reinterpret_cast<const char*>(r32.data()), r32.size() * 4);
      out.write(reinterpret_cast<const char*>(query.data()), query.size() * 4);
      out.write(reinterpret_cast<const char*>(weights.data()), weights.size() * 4);
      out.write(reinterpret_cast<const char*>(docs.data()), docs.size() * 4);
    }
    std::string text;
    int rc = -1;
    if (torch_note.empty()) {
      const std::string cmd = "OMP_NUM_THREADS=" + std::to_string(f.threads) + " '" + f.python +
                              "' '" + script + "' '" + path + "' 2>&1";
      FILE* p = popen(cmd.c_str(), "r");
      text = p ? ReadAll(p) : "";
      rc = p ? pclose(p) : -1;
    }
    std::filesystem::remove(path);
    const auto brace = text.rfind("\n{");
    const std::string last = brace == std::string::npos ? text : text.substr(brace + 1);
    try {
      if (torch_note.empty()) torch = nlohmann::json::parse(last);
    } catch (const std::exception&) {
      torch_note = "PyTorch run failed (rc " + std::to_string(rc) + "): " + text.substr(0, 400);
    }
    if (torch.contains("error")) {
      torch_note = "PyTorch skipped: " + torch["error"].get<std::string>();
      torch = nlohmann::json();
    }
  }

  double max_diff = -1;
  if (torch.contains("scores")) {
    max_diff = 0;
    const auto& ts = torch["scores"];
    for (size_t c = 0; c < C && c < ts.size(); ++c) {
      max_diff = std::max(max_diff, std::fabs(double(scores[c]) - ts[c].get<double>()));
    }
  }

  // Report.
  const Summary ours = Summarize(ours_us), mm = Summarize(matmul_us),
                mmrt = Summarize(matmul_rt_us), mmt = Summarize(matmul_t_us),
                ours_ex = Summarize(ours_explain_us);
  // The floor: the fastest of the bare matmuls (none for int8).
  double floor_us = 0;
  for (const Summary* s : {&mm, &mmrt, &mmt}) {
    if (s->count > 0 && (floor_us == 0 || s->p50 < floor_us)) floor_us = s->p50;
  }
  auto gf = [&](double us) { return flops / (us * 1e3); };
  std::vector<std::vector<std::string>> table;
  auto row = [&](const std::string& name, double mean, double p50, size_t iters) {
    table.push_back({name, Fmt("%.1f", p50), Fmt("%.1f", mean), Fmt("%.1f", gf(p50)),
                     Fmt("%.2f", p50 / ours.p50), Fmt("%zu", iters)});
  };
  row("ours (Reranker::Score)", ours.mean, ours.p50, ours.count);
  row("ours + explain top 10", ours_ex.mean, ours_ex.p50, ours_ex.count);
  if (!int8) {
    row("oneDNN matmul Q.D^T, fixed shape", mm.mean, mm.p50, mm.count);
    row("oneDNN matmul Q.D^T, runtime dims", mmrt.mean, mmrt.p50, mmrt.count);
    row("oneDNN matmul D.Q^T, runtime dims", mmt.mean, mmt.p50, mmt.count);
  }
  double torch_us = 0;
  std::string torch_best;
  if (torch.contains("us_per_query")) {
    for (const auto& [k, v] : torch["us_per_query"].items()) {
      const double mean = v.value("mean", 0.0), p50 = v.value("p50", 0.0);
      row("torch " + k, mean, p50, v.value("iters", 0));
      // The headline is the fastest variant (by median) in the requested dtype.
      if (k != "padded_f32" && (torch_us == 0 || p50 < torch_us)) {
        torch_us = p50;
        torch_best = k;
      }
    }
  }
  std::printf(
      "rerank: %zu candidates, %zu token rows (%.1f per doc), m=%u, d=%u, %s, %d threads, "
      "tau=%.3g; %.1f MFLOP/query\n",
      C, total, double(total) / double(C), m, d, f.dtype.c_str(), f.threads, f.temperature,
      flops / 1e6);
  std::printf("%s", FormatTable({"variant", "p50 us/query", "mean us", "GFLOP/s (p50)",
                                 "x ours (p50)", "iters"},
                                table)
                        .c_str());
  if (floor_us > 0) {
    std::printf("throughput of ours / fastest bare matmul (medians): %.0f%%\n",
                100.0 * floor_us / ours.p50);
  }
  std::printf("explain top 10 costs %.1f%% on top (medians)\n",
              100.0 * (ours_ex.p50 - ours.p50) / ours.p50);
  if (torch_us > 0) {
    std::printf("PyTorch (fastest eager variant, %s): %.1f us/query (p50) = %.2fx ours\n",
                torch_best.c_str(), torch_us, torch_us / ours.p50);
  }
  if (max_diff >= 0) {
    std::printf("PyTorch %s agrees: max |score_ours - score_torch| = %.3g over %zu scores\n",
                torch.value("torch_version", std::string("?")).c_str(), max_diff, C);
  }
  if (!torch_note.empty()) std::printf("note: %s\n", torch_note.c_str());

  BenchOutput out;
  out.params = {{"candidates", C},
                {"doc_tokens_min", f.doc_tokens_min},
                {"doc_tokens_max", f.doc_tokens_max},
                {"token_counts", "uniform"},
                {"query_tokens", m},
                {"dim", d},
                {"dtype", f.dtype},
                {"threads", f.threads},
                {"temperature", f.temperature},
                {"min_seconds", f.min_seconds},
                {"seed", f.seed},
                {"clusters", f.clusters},
                {"token_spread", f.token_spread}};
  out.results = {{"total_token_rows", total},
                 {"mflop_per_query", flops / 1e6},
                 {"ours_us", ToJson(ours)},
                 {"ours_gflops_p50", gf(ours.p50)},
                 {"matmul_fixed_us", ToJson(mm)},
                 {"matmul_fixed_gflops_p50", gf(mm.p50)},
                 {"matmul_runtime_dims_us", ToJson(mmrt)},
                 {"matmul_runtime_dims_gflops_p50", gf(mmrt.p50)},
                 {"matmul_dqt_runtime_dims_us", ToJson(mmt)},
                 {"ours_explain_top10_us", ToJson(ours_ex)},
                 {"explain_overhead", (ours_ex.p50 - ours.p50) / ours.p50},
                 {"ours_throughput_vs_fastest_matmul", floor_us > 0 ? floor_us / ours.p50 : 0.0}};
  if (!torch.is_null()) {
    torch.erase("scores");
    out.results["torch"] = torch;
    out.results["torch_max_abs_diff"] = max_diff;
    if (torch_us > 0) {
      out.results["torch_best_variant"] = torch_best;
      out.results["torch_best_p50_us"] = torch_us;
      out.results["torch_over_ours_p50"] = torch_us / ours.p50;
    }
  } else {
    out.results["torch_note"] = torch_note;
  }

  BarChart chart;
  chart.title = Fmt("rerank: %zu candidates, %u..%u tokens, m=%u, d=%u, %s, %d threads", C,
                    so.tokens_min, so.tokens_max, m, d, f.dtype.c_str(), f.threads);
  chart.y_label = "microseconds per query (median)";
  chart.labels = {"ours", "ours+explain"};
  chart.values = {ours.p50, ours_ex.p50};
  if (!int8) {
    chart.labels.insert(chart.labels.end(), {"QDt fixed", "QDt runtime", "DQt runtime"});
    chart.values.insert(chart.values.end(), {mm.p50, mmrt.p50, mmt.p50});
  }
  if (torch_us > 0) {
    chart.labels.push_back("PyTorch (" + torch_best + ")");
    chart.values.push_back(torch_us);
  }
  for (double v : chart.values) chart.value_texts.push_back(Fmt("%.0f us", v));
  SavePlot(f.out_dir, Fmt("rerank_%s_c%zu_t%d.svg", f.dtype.c_str(), C, f.threads),
           RenderSvg(chart), &out.results);
  return out;
}

}  // namespace attnsearch::bench
