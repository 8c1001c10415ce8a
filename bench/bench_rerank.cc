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
//   maxsim          the same call in MAXSIM mode (a max, no exponentials):
//                   what the softmax costs on top of the matmul.
//   matmul          oneDNN's bare matmul Q·Dᵀ over the concatenated tokens
//                   with the exact shape baked in; primitive, memory objects
//                   and stream created once: the floor for the GEMM.
//   matmul_rt       the same matmul through a runtime-dimension primitive
//                   with memory objects and a stream created per call.
//   matmul_t        Sᵀ = D·Qᵀ, runtime dimensions, per-call objects: the
//                   reranker's own orientation. The fastest bare matmul is
//                   the floor "ours" is compared with.
//   codes           CodeScorer::Score on the documents as residual codes of
//                   --code_bits bits (a ResidualCodec trained on these
//                   documents' tokens as a collection trains it, centroids
//                   from --code_centroids or chosen for the token count;
//                   0 turns it off).
//   ours+explain    Score keeping its similarities, then
//                   Reranker::ExplainScored for the top 10, as the engine
//                   does with explain = true.
//   ours+explain+maps  the same, but Reranker::AttentionMapsScored for the
//                   top 10 (maps and evidence from one pass over the same
//                   similarities), as the engine does with explain and
//                   attention_map = true.
// --dtype=int8 stores one scale per token; the bare matmuls are s8 x s8 with
// f32 output (the query quantized the same way, no scales applied), and
// PyTorch runs on the dequantized values. The report names the kernel oneDNN
// chose for ours and for the fixed-shape bare matmul, and the CPU ISA it
// used (ONEDNN_MAX_CPU_ISA can hold it lower, e.g. AVX512_CORE_BF16 to run
// an AMX machine as one without AMX).
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
#include <set>

#include "absl/strings/str_cat.h"
#include "ann/residual_codec.h"
#include "benchmarks.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "engine/token_codes.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "report.h"
#include "rerank/code_scorer.h"
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

// The inputs every variant sees: documents back to back (f32 values rounded
// through bf16 when bf16, dequantized when int8, so that every
// implementation sees the same numbers) and one query.
// Queries the codes' top-10 overlap is averaged over.
constexpr size_t kOverlapQueries = 50;

struct RerankData {
  bool bf16 = false, int8 = false;
  uint32_t d = 0, m = 0;
  size_t candidates = 0, total = 0;  // documents, token rows
  uint32_t tokens_min = 0, tokens_max = 0;
  std::vector<uint32_t> rows;
  std::vector<size_t> offsets;
  std::vector<float> docs, query, weights;
  std::vector<uint16_t> docs_bf16, query_bf16;
  std::vector<int8_t> docs_s8, query_s8;  // int8: the query quantized for the bare matmuls
  std::vector<float> row_scales;          // int8: one scale per token row, as the store keeps them
  // More queries of the same kind (untimed): the codes' top-10 overlap is
  // averaged over them and the timed one.
  std::vector<std::vector<float>> more_queries;
  double flops = 0;
  TokenDtype dtype = TokenDtype::kF32;
  const void* doc_data = nullptr;  // the documents in the stored dtype
  const void* q_data = nullptr;    // the query in the matmul's dtype
};

std::unique_ptr<RerankData> SetupRerank(const BenchFlags& f) {
  auto in = std::make_unique<RerankData>();
  RerankData& x = *in;
  x.bf16 = f.dtype == "bf16";
  x.int8 = f.dtype == "int8";
  x.d = f.dim;
  x.m = uint32_t(f.query_tokens);
  x.candidates = size_t(f.candidates);
  SyntheticOptions so = SyntheticFromFlags(f);
  so.tokens_min = x.tokens_min = uint32_t(f.doc_tokens_min);
  so.tokens_max = x.tokens_max = uint32_t(f.doc_tokens_max);
  so.token_counts = TokenCountDistribution::kUniform;
  SyntheticDataset data(so);
  x.rows.resize(x.candidates);
  x.offsets.resize(x.candidates);
  std::vector<float> tmp;
  for (size_t c = 0; c < x.candidates; ++c) {
    x.rows[c] = data.Tokens(c, &tmp);
    x.offsets[c] = x.total;
    x.total += x.rows[c];
    x.docs.insert(x.docs.end(), tmp.begin(), tmp.end());
  }
  data.QueryTokens(0, x.m, &x.query);
  x.more_queries.resize(kOverlapQueries - 1);
  for (size_t j = 0; j + 1 < kOverlapQueries; ++j) data.QueryTokens(j + 1, x.m, &x.more_queries[j]);
  x.weights.assign(x.m, 1.f / float(x.m));
  if (x.bf16) {
    x.docs_bf16.resize(x.docs.size());
    FloatToBf16(x.docs.data(), x.docs_bf16.data(), x.docs.size());
    Bf16ToFloat(x.docs_bf16.data(), x.docs.data(), x.docs.size());
    x.query_bf16.resize(x.query.size());
    FloatToBf16(x.query.data(), x.query_bf16.data(), x.query.size());
    Bf16ToFloat(x.query_bf16.data(), x.query.data(), x.query.size());
  }
  if (x.int8) {
    x.docs_s8.resize(x.docs.size());
    x.row_scales.resize(x.total);
    for (size_t r = 0; r < x.total; ++r) {
      float* row = x.docs.data() + r * x.d;
      x.row_scales[r] = QuantizeInt8(row, x.docs_s8.data() + r * x.d, x.d);
      DequantizeInt8(x.docs_s8.data() + r * x.d, x.row_scales[r], row, x.d);
    }
    x.query_s8.resize(x.query.size());
    for (uint32_t i = 0; i < x.m; ++i) {
      QuantizeInt8(x.query.data() + size_t(i) * x.d, x.query_s8.data() + size_t(i) * x.d, x.d);
    }
  }
  x.flops = 2.0 * x.m * x.d * double(x.total);
  x.dtype = x.bf16 ? TokenDtype::kBF16 : x.int8 ? TokenDtype::kInt8 : TokenDtype::kF32;
  x.doc_data = x.bf16   ? static_cast<const void*>(x.docs_bf16.data())
               : x.int8 ? static_cast<const void*>(x.docs_s8.data())
                        : x.docs.data();
  x.q_data = x.bf16   ? static_cast<const void*>(x.query_bf16.data())
             : x.int8 ? static_cast<const void*>(x.query_s8.data())
                      : x.query.data();
  return in;
}

// True when oneDNN can make a bf16 matmul on this CPU (AVX-512 and up).
bool HasBf16Matmul() {
  try {
    const memory::dim n = 16;
    const memory::desc md({n, n}, memory::data_type::bf16, {n, 1});
    const memory::desc out({n, n}, memory::data_type::f32, {n, 1});
    dnnl::matmul::primitive_desc(dnnl::matmul::desc(md, md, out),
                                 dnnl::engine(dnnl::engine::kind::cpu, 0));
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

// oneDNN's bare matmuls of the reranker's shape, created once; each call
// runs one. Constructing it throws dnnl::error. bf16 on a CPU without a
// bf16 matmul: the f32 matmul of the same (bf16-rounded) values, as the
// reranker then runs it (Reranker::widened).
class BareMatmuls {
 public:
  explicit BareMatmuls(const RerankData& x)
      : widened_(x.bf16 && !HasBf16Matmul()),
        dt_(x.bf16 && !widened_ ? memory::data_type::bf16
            : x.int8            ? memory::data_type::s8
                                : memory::data_type::f32),
        q_data_(widened_ ? x.query.data() : x.q_data),
        doc_data_(widened_ ? x.docs.data() : x.doc_data),
        md_(x.m),
        nd_(memory::dim(x.total)),
        dd_(x.d),
        eng_(dnnl::engine::kind::cpu, 0),
        stream_(eng_),
        q_md_({md_, dd_}, dt_, {dd_, 1}),
        t_md_({dd_, nd_}, dt_, {1, dd_}),
        s_md_({md_, nd_}, memory::data_type::f32, {nd_, 1}),
        sim_(size_t(x.m) * x.total),
        mm_pd_(dnnl::matmul::desc(q_md_, t_md_, s_md_), eng_),
        mm_(mm_pd_),
        q_mem_(q_md_, eng_, const_cast<void*>(q_data_)),
        t_mem_(t_md_, eng_, const_cast<void*>(doc_data_)),
        s_mem_(s_md_, eng_, sim_.data()),
        pd_rt_(RuntimeDimsPd()),
        pd_t_(RuntimeDimsPd()),
        mm_rt_(pd_rt_),
        mm_t_(pd_t_),
        scratch_rt_(pd_rt_.scratchpad_desc().get_size()),
        scratch_t_(pd_t_.scratchpad_desc().get_size()) {}

  // The kernel oneDNN chose for Fixed.
  std::string FixedKernel() const {
    return std::string(mm_pd_.impl_info_str()) + (widened_ ? " (bf16 widened to f32)" : "");
  }
  // Q·Dᵀ with the exact shape baked in; primitive, memory and stream made once.
  void Fixed() {
    mm_.execute(stream_,
                {{DNNL_ARG_SRC, q_mem_}, {DNNL_ARG_WEIGHTS, t_mem_}, {DNNL_ARG_DST, s_mem_}});
    stream_.wait();
  }
  // Q·Dᵀ through a runtime-dimension primitive, memory objects and stream per call.
  void RuntimeDims() {
    Run(mm_rt_, pd_rt_, scratch_rt_, {q_md_, q_data_}, {t_md_, doc_data_}, s_md_);
  }
  // Sᵀ (N x m) = D (N x d) · Qᵀ (d x m) the same way: the reranker's orientation.
  void Transposed() {
    Run(mm_t_, pd_t_, scratch_t_, {{{nd_, dd_}, dt_, {dd_, 1}}, doc_data_},
        {{{dd_, md_}, dt_, {1, dd_}}, q_data_}, {{nd_, md_}, memory::data_type::f32, {md_, 1}});
  }

 private:
  struct Operand {
    memory::desc desc;
    const void* data;
  };
  // A (rows x d) · B (d x cols) with both dimensions given at execution.
  dnnl::matmul::primitive_desc RuntimeDimsPd() const {
    const memory::dim rt = DNNL_RUNTIME_DIM_VAL;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(memory::desc({rt, dd_}, dt_, {dd_, 1}),
                           memory::desc({dd_, rt}, dt_, {1, dd_}),
                           memory::desc({rt, rt}, memory::data_type::f32, {rt, 1})),
        attr, eng_);
  }
  void Run(dnnl::matmul& mm, const dnnl::matmul::primitive_desc& pd, std::vector<uint8_t>& scratch,
           const Operand& src, const Operand& weights, const memory::desc& dst) {
    memory a(src.desc, eng_, const_cast<void*>(src.data));
    memory b(weights.desc, eng_, const_cast<void*>(weights.data));
    memory c(dst, eng_, sim_.data());
    memory sc(pd.scratchpad_desc(), eng_, scratch.data());
    dnnl::stream s(eng_);
    mm.execute(
        s,
        {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}, {DNNL_ARG_SCRATCHPAD, sc}});
    s.wait();
  }

  const bool widened_;
  const memory::data_type dt_;
  const void* const q_data_;
  const void* const doc_data_;
  const memory::dim md_, nd_, dd_;
  dnnl::engine eng_;
  dnnl::stream stream_;
  memory::desc q_md_, t_md_, s_md_;
  std::vector<float> sim_;
  dnnl::matmul::primitive_desc mm_pd_;
  dnnl::matmul mm_;
  memory q_mem_, t_mem_, s_mem_;
  dnnl::matmul::primitive_desc pd_rt_, pd_t_;
  dnnl::matmul mm_rt_, mm_t_;
  std::vector<uint8_t> scratch_rt_, scratch_t_;
};

// The per-call microseconds of each variant timed in this process.
struct RerankTimes {
  std::string kernel_ours, kernel_fixed;  // oneDNN's names of the kernels chosen
  std::vector<double> ours, ours_explain, ours_maps, matmul, matmul_rt, matmul_t;
  std::vector<double> ours_maxsim;  // the same call in MAXSIM mode: no softmax
  std::vector<double> codes;        // CodeScorer on residual codes (--code_bits)
  size_t code_bytes = 0;
  uint32_t code_centroids = 0;
  double code_max_diff = 0;   // max |codes - ours| over the scores
  double code_top10 = 0;      // share of ours' top 10 that the codes' top 10 holds
  std::vector<float> scores;  // ours, for the comparison with PyTorch
};

// Ours and ours + explain (Score keeping its similarities, then the
// evidence for the top 10 from them, as the engine does with explain =
// true), interleaved with oneDNN's bare matmuls (for int8, s8 x s8 with f32
// output, without scales).
absl::StatusOr<RerankTimes> TimeRerank(const BenchFlags& f, const RerankData& x) {
  RerankerOptions ropts;
  ropts.max_threads = f.threads;
  // Else Score takes every core and resets OpenMP's count.
  if (f.max_rows_per_gemm > 0) ropts.max_rows_per_gemm = size_t(f.max_rows_per_gemm);
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Reranker> reranker, Reranker::Create(x.d, x.dtype, ropts));
  RerankQuery rq{x.query.data(), x.m, x.weights.data(), RerankMode::kAttention, f.temperature};
  const size_t C = x.candidates;
  CandidateTokens ct{x.doc_data,       x.total, x.rows.data(),
                     x.offsets.data(), C,       x.int8 ? x.row_scales.data() : nullptr};
  RerankTimes out;
  ATTN_ASSIGN_OR_RETURN(out.kernel_ours, reranker->MatmulKernel(x.m));
  // int8 on AMX or AVX-512 VNNI skips the matmul: its own kernel runs instead.
  if (reranker->tile_kernel())
    out.kernel_ours = absl::StrCat(reranker->TileKernelName(), ", reduced in L1");
  if (reranker->widened()) out.kernel_ours += " (rows widened to f32)";
  out.scores.resize(C);
  absl::Status score_status;
  std::function<void()> ours_fn = [&] {
    score_status = reranker->Score(rq, ct, out.scores.data());
  };
  RerankQuery rq_maxsim = rq;
  rq_maxsim.mode = RerankMode::kMaxSim;
  std::vector<float> maxsim_scores(C);
  std::function<void()> maxsim_fn = [&] {
    score_status = reranker->Score(rq_maxsim, ct, maxsim_scores.data());
  };
  const size_t top = std::min<size_t>(10, C);
  std::vector<std::vector<TokenEvidence>> evidence;
  ScoredSimilarities kept;
  std::vector<size_t> idx(C), which(top);
  // Score keeping the similarities, and the top 10 in `which`.
  auto score_top = [&] {
    score_status = reranker->Score(rq, ct, out.scores.data(), &kept);
    for (size_t i = 0; i < C; ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + long(top), idx.end(),
                      [&](size_t a, size_t b) { return out.scores[a] > out.scores[b]; });
    which.assign(idx.begin(), idx.begin() + long(top));
  };
  std::function<void()> ours_explain_fn = [&] {
    score_top();
    if (score_status.ok()) score_status = reranker->ExplainScored(rq, ct, kept, which, &evidence);
  };
  // The same with the top 10's maps: from the same kept similarities, with
  // the evidence from the maps' own pass, as the engine asks for both.
  std::vector<std::vector<float>> maps;
  std::function<void()> ours_maps_fn = [&] {
    score_top();
    if (score_status.ok()) {
      score_status = reranker->AttentionMapsScored(rq, ct, kept, which, &maps, &evidence);
    }
  };
  // The documents as residual codes, trained on their own tokens as a
  // collection trains them (engine/token_codes.h: the centroids chosen for
  // this many tokens unless --code_centroids).
  std::shared_ptr<const TokenCodecState> code_state;
  const CodeScorer* code_scorer = nullptr;
  std::vector<uint8_t> codes;
  std::vector<float> code_scores(C);
  if (f.code_bits > 0) {
    const TokenCodecTraining how{.bits = uint32_t(f.code_bits),
                                 .centroids = uint32_t(f.code_centroids),
                                 .collection_tokens = x.total};
    ATTN_ASSIGN_OR_RETURN(std::unique_ptr<ResidualCodec> codec,
                          TrainTokenCodec(x.docs.data(), x.total, x.d, how));
    ATTN_ASSIGN_OR_RETURN(code_state, TokenCodecState::Make(std::move(codec), 1, ropts));
    codes.resize(x.total * code_state->codec->code_bytes());
    code_state->codec->Encode(x.docs.data(), x.total, codes.data());
    code_scorer = code_state->scorer.get();
    out.code_bytes = code_state->codec->code_bytes();
    out.code_centroids = code_state->codec->num_centroids();
  }
  const CandidateCodes cc{codes.data(), x.total, x.rows.data(), x.offsets.data(), C};
  absl::Status code_status;
  std::function<void()> codes_fn = [&] {
    if (code_scorer != nullptr) code_status = code_scorer->Score(rq, cc, code_scores.data());
  };
  // (Score sets the calling thread's OpenMP count; set ours again.)
  omp_set_num_threads(f.threads);
  {
    try {
      BareMatmuls mm(x);
      out.kernel_fixed = mm.FixedKernel();
      std::vector<std::function<void()>> variants = {ours_fn,
                                                     ours_explain_fn,
                                                     [&] { mm.Fixed(); },
                                                     [&] { mm.RuntimeDims(); },
                                                     [&] { mm.Transposed(); },
                                                     maxsim_fn,
                                                     ours_maps_fn};
      if (code_scorer != nullptr) variants.push_back(codes_fn);
      auto t = TimeInterleaved(variants, f.min_seconds);
      out.ours = std::move(t[0]);
      out.ours_explain = std::move(t[1]);
      out.matmul = std::move(t[2]);
      out.matmul_rt = std::move(t[3]);
      out.matmul_t = std::move(t[4]);
      out.ours_maxsim = std::move(t[5]);
      out.ours_maps = std::move(t[6]);
      if (code_scorer != nullptr) out.codes = std::move(t[7]);
    } catch (const dnnl::error& e) {
      return absl::InternalError(std::string("bare matmul: ") + e.what());
    }
  }
  if (!score_status.ok()) return score_status;
  if (!code_status.ok()) return code_status;
  if (code_scorer != nullptr) {
    ours_fn();  // the scores of ours, for the comparison
    for (size_t c = 0; c < C; ++c) {
      out.code_max_diff =
          std::max(out.code_max_diff, double(std::fabs(code_scores[c] - out.scores[c])));
    }
    // The top 10 by codes against the top 10 by the stored rows (exact
    // with --dtype=f32), over this query and kOverlapQueries - 1 more.
    auto top10 = [&](const std::vector<float>& s) {
      std::vector<size_t> order(C);
      for (size_t i = 0; i < C; ++i) order[i] = i;
      std::partial_sort(order.begin(), order.begin() + long(top), order.end(),
                        [&](size_t a, size_t b) { return s[a] > s[b]; });
      return std::set<size_t>(order.begin(), order.begin() + long(top));
    };
    auto overlap = [&]() {
      const std::set<size_t> a = top10(out.scores), b = top10(code_scores);
      size_t both = 0;
      for (size_t i : a) both += b.count(i);
      return top == 0 ? 1.0 : double(both) / double(top);
    };
    double sum = overlap();
    std::vector<float> ours(C);
    for (const std::vector<float>& q : x.more_queries) {
      const RerankQuery more{q.data(), x.m, x.weights.data(), RerankMode::kAttention,
                             f.temperature};
      ATTN_RETURN_IF_ERROR(reranker->Score(more, ct, out.scores.data()));
      ATTN_RETURN_IF_ERROR(code_scorer->Score(more, cc, code_scores.data()));
      sum += overlap();
    }
    out.code_top10 = sum / double(1 + x.more_queries.size());
    ours_fn();  // the timed query's scores again
  }
  return out;
}

// PyTorch's figures (torch_rerank.py's JSON), or why there are none.
struct TorchRun {
  nlohmann::json torch;
  std::string note;
};

// Writes the inputs to `path` in torch_rerank.py's format.
void WriteTorchInputs(const BenchFlags& f, const RerankData& x, const char* path) {
  std::ofstream out(path, std::ios::binary);
  const int32_t header[6] = {int32_t(x.m),   int32_t(x.d), int32_t(x.candidates),
                             x.bf16 ? 1 : 0, f.threads,    0};
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  const float fh[2] = {f.temperature, float(f.min_seconds)};
  out.write(reinterpret_cast<const char*>(fh), sizeof fh);
  std::vector<int32_t> r32(x.rows.begin(), x.rows.end());
  out.write(reinterpret_cast<const char*>(r32.data()), r32.size() * 4);
  out.write(reinterpret_cast<const char*>(x.query.data()), x.query.size() * 4);
  out.write(reinterpret_cast<const char*>(x.weights.data()), x.weights.size() * 4);
  out.write(reinterpret_cast<const char*>(x.docs.data()), x.docs.size() * 4);
}

// PyTorch on the same inputs, through a temporary file.
absl::StatusOr<TorchRun> RunTorch(const BenchFlags& f, const RerankData& x) {
  TorchRun run;
  std::string script = f.torch_script.empty()
                           ? std::string(ATTN_BENCH_SOURCE_DIR) + "/torch_rerank.py"
                           : f.torch_script;
  if (access(f.python.c_str(), X_OK) != 0) {
    run.note =
        "PyTorch skipped: no executable " + f.python + " (Debian's python3 with python3-torch)";
  }
  char path[] = "/tmp/attn_rerank_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return absl::InternalError("cannot create a temporary file");
  close(fd);
  WriteTorchInputs(f, x, path);
  std::string text;
  int rc = -1;
  if (run.note.empty()) {
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
    if (run.note.empty()) run.torch = nlohmann::json::parse(last);
  } catch (const std::exception&) {
    run.note = "PyTorch run failed (rc " + std::to_string(rc) + "): " + text.substr(0, 400);
  }
  if (run.torch.contains("error")) {
    run.note = "PyTorch skipped: " + run.torch["error"].get<std::string>();
    run.torch = nlohmann::json();
  }
  return run;
}

// The summaries the table, the record and the chart are made of.
struct RerankSummary {
  std::string kernel_ours, kernel_fixed;
  Summary ours, mm, mmrt, mmt, ours_ex, ours_maps, codes, maxsim;
  size_t code_bytes = 0;
  uint32_t code_centroids = 0;
  double code_max_diff = 0;
  double code_top10 = 0;
  double floor_us = 0;  // the fastest of the bare matmuls
  double torch_us = 0;  // the fastest PyTorch variant in the requested dtype
  std::string torch_best;
  double max_diff = -1;  // max |ours - PyTorch| over the scores (< 0: none)
};

RerankSummary SummarizeRerank(const RerankData& x, const RerankTimes& t, const TorchRun& torch) {
  RerankSummary r;
  r.kernel_ours = t.kernel_ours;
  r.kernel_fixed = t.kernel_fixed;
  r.ours = Summarize(t.ours);
  r.mm = Summarize(t.matmul);
  r.mmrt = Summarize(t.matmul_rt);
  r.mmt = Summarize(t.matmul_t);
  r.ours_ex = Summarize(t.ours_explain);
  r.ours_maps = Summarize(t.ours_maps);
  r.maxsim = Summarize(t.ours_maxsim);
  r.codes = Summarize(t.codes);
  r.code_bytes = t.code_bytes;
  r.code_centroids = t.code_centroids;
  r.code_max_diff = t.code_max_diff;
  r.code_top10 = t.code_top10;
  for (const Summary* s : {&r.mm, &r.mmrt, &r.mmt}) {
    if (s->count > 0 && (r.floor_us == 0 || s->p50 < r.floor_us)) r.floor_us = s->p50;
  }
  if (torch.torch.contains("us_per_query")) {
    for (const auto& [k, v] : torch.torch["us_per_query"].items()) {
      const double p50 = v.value("p50", 0.0);
      // The headline is the fastest variant (by median) in the requested dtype.
      if (k != "padded_f32" && (r.torch_us == 0 || p50 < r.torch_us)) {
        r.torch_us = p50;
        r.torch_best = k;
      }
    }
  }
  if (torch.torch.contains("scores")) {
    r.max_diff = 0;
    const auto& ts = torch.torch["scores"];
    for (size_t c = 0; c < x.candidates && c < ts.size(); ++c) {
      r.max_diff = std::max(r.max_diff, std::fabs(double(t.scores[c]) - ts[c].get<double>()));
    }
  }
  return r;
}

// The table and the lines below it.
void PrintRerank(const BenchFlags& f, const RerankData& x, const RerankSummary& r,
                 const TorchRun& torch) {
  auto gf = [&](double us) { return x.flops / (us * 1e3); };
  std::vector<std::vector<std::string>> table;
  auto row = [&](const std::string& name, const Summary& s) {
    table.push_back({name, Fmt("%.1f", s.p50), Fmt("%.1f", s.mean), Fmt("%.1f", gf(s.p50)),
                     Fmt("%.2f", s.p50 / r.ours.p50), Fmt("%zu", s.count)});
  };
  row("ours (Reranker::Score)", r.ours);
  row("ours + explain top 10", r.ours_ex);
  row("ours + explain + attention maps top 10", r.ours_maps);
  row("ours, MAXSIM (no softmax)", r.maxsim);
  row("oneDNN matmul Q.D^T, fixed shape", r.mm);
  row("oneDNN matmul Q.D^T, runtime dims", r.mmrt);
  row("oneDNN matmul D.Q^T, runtime dims", r.mmt);
  if (r.codes.count > 0) row(Fmt("ours on %d-bit codes (CodeScorer)", f.code_bits), r.codes);
  if (torch.torch.contains("us_per_query")) {
    for (const auto& [k, v] : torch.torch["us_per_query"].items()) {
      Summary s;
      s.mean = v.value("mean", 0.0);
      s.p50 = v.value("p50", 0.0);
      s.count = v.value("iters", 0);
      row("torch " + k, s);
    }
  }
  std::printf(
      "rerank: %zu candidates, %zu token rows (%.1f per doc), m=%u, d=%u, %s, %d threads, "
      "tau=%.3g; %.1f MFLOP/query\n",
      x.candidates, x.total, double(x.total) / double(x.candidates), x.m, x.d, f.dtype.c_str(),
      f.threads, f.temperature, x.flops / 1e6);
  std::printf("%s", FormatTable({"variant", "p50 us/query", "mean us", "GFLOP/s (p50)",
                                 "x ours (p50)", "iters"},
                                table)
                        .c_str());
  const char* max_isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  std::printf("kernels: ours %s, bare fixed shape %s (ONEDNN_MAX_CPU_ISA %s)\n",
              r.kernel_ours.c_str(), r.kernel_fixed.c_str(), max_isa ? max_isa : "unset");
  if (r.codes.count > 0) {
    std::printf(
        "codes: %zu B/token (%s stores %zu), %u centroids; codes / ours time (medians) %.2f; "
        "max |score_codes - score_ours| %.3g; top-10 overlap (mean of %zu queries) %.3f\n",
        r.code_bytes, f.dtype.c_str(),
        size_t(x.d) * (x.bf16   ? 2
                       : x.int8 ? 1
                                : 4) +
            (x.int8 ? 4 : 0),
        r.code_centroids, r.codes.p50 / r.ours.p50, r.code_max_diff, kOverlapQueries, r.code_top10);
  }
  if (r.floor_us > 0) {
    std::printf("throughput of ours / fastest bare matmul (medians): %.0f%%\n",
                100.0 * r.floor_us / r.ours.p50);
  }
  std::printf("explain top 10 costs %.1f%% on top (medians)\n",
              100.0 * (r.ours_ex.p50 - r.ours.p50) / r.ours.p50);
  std::printf("attention maps of the top 10 cost %.1f%% on top of explain (medians)\n",
              100.0 * (r.ours_maps.p50 - r.ours_ex.p50) / r.ours_ex.p50);
  if (r.torch_us > 0) {
    std::printf("PyTorch (fastest eager variant, %s): %.1f us/query (p50) = %.2fx ours\n",
                r.torch_best.c_str(), r.torch_us, r.torch_us / r.ours.p50);
  }
  if (r.max_diff >= 0) {
    std::printf("PyTorch %s agrees: max |score_ours - score_torch| = %.3g over %zu scores\n",
                torch.torch.value("torch_version", std::string("?")).c_str(), r.max_diff,
                x.candidates);
  }
  if (!torch.note.empty()) std::printf("note: %s\n", torch.note.c_str());
}

// The JSON record's parameters and figures.
BenchOutput RerankRecord(const BenchFlags& f, const RerankData& x, const RerankSummary& r,
                         TorchRun torch) {
  auto gf = [&](double us) { return x.flops / (us * 1e3); };
  BenchOutput out;
  out.params = {{"candidates", x.candidates},
                {"doc_tokens_min", f.doc_tokens_min},
                {"doc_tokens_max", f.doc_tokens_max},
                {"token_counts", "uniform"},
                {"query_tokens", x.m},
                {"dim", x.d},
                {"dtype", f.dtype},
                {"threads", f.threads},
                {"temperature", f.temperature},
                {"min_seconds", f.min_seconds},
                {"seed", f.seed},
                {"clusters", f.clusters},
                {"token_spread", f.token_spread},
                {"onednn_max_cpu_isa",
                 std::getenv("ONEDNN_MAX_CPU_ISA") ? std::getenv("ONEDNN_MAX_CPU_ISA") : ""}};
  out.results = {
      {"kernel_ours", r.kernel_ours},
      {"code_bits", f.code_bits},
      {"codes_us", ToJson(r.codes)},
      {"code_bytes_per_token", r.code_bytes},
      {"code_centroids", r.code_centroids},
      {"codes_over_ours_p50", r.codes.count > 0 ? r.codes.p50 / r.ours.p50 : 0.0},
      {"codes_max_abs_diff", r.code_max_diff},
      {"codes_top10_overlap", r.code_top10},
      {"kernel_matmul_fixed", r.kernel_fixed},
      {"total_token_rows", x.total},
      {"mflop_per_query", x.flops / 1e6},
      {"ours_us", ToJson(r.ours)},
      {"ours_gflops_p50", gf(r.ours.p50)},
      {"matmul_fixed_us", ToJson(r.mm)},
      {"matmul_fixed_gflops_p50", gf(r.mm.p50)},
      {"matmul_runtime_dims_us", ToJson(r.mmrt)},
      {"matmul_runtime_dims_gflops_p50", gf(r.mmrt.p50)},
      {"matmul_dqt_runtime_dims_us", ToJson(r.mmt)},
      {"ours_explain_top10_us", ToJson(r.ours_ex)},
      {"ours_maxsim_us", ToJson(r.maxsim)},
      {"explain_overhead", (r.ours_ex.p50 - r.ours.p50) / r.ours.p50},
      {"ours_explain_maps_top10_us", ToJson(r.ours_maps)},
      {"attention_map_overhead", (r.ours_maps.p50 - r.ours_ex.p50) / r.ours_ex.p50},
      {"ours_throughput_vs_fastest_matmul", r.floor_us > 0 ? r.floor_us / r.ours.p50 : 0.0}};
  if (!torch.torch.is_null()) {
    torch.torch.erase("scores");
    out.results["torch"] = torch.torch;
    out.results["torch_max_abs_diff"] = r.max_diff;
    if (r.torch_us > 0) {
      out.results["torch_best_variant"] = r.torch_best;
      out.results["torch_best_p50_us"] = r.torch_us;
      out.results["torch_over_ours_p50"] = r.torch_us / r.ours.p50;
    }
  } else {
    out.results["torch_note"] = torch.note;
  }
  return out;
}

// The bar chart of the medians, rerank_<dtype>_c<candidates>_t<threads>.svg.
void SaveRerankChart(const BenchFlags& f, const RerankData& x, const RerankSummary& r,
                     nlohmann::json* results) {
  BarChart chart;
  chart.title = Fmt("rerank: %zu candidates, %u..%u tokens, m=%u, d=%u, %s, %d threads",
                    x.candidates, x.tokens_min, x.tokens_max, x.m, x.d, f.dtype.c_str(), f.threads);
  chart.y_label = "microseconds per query (median)";
  chart.labels = {"ours",      "ours+explain", "ours+explain+maps",
                  "QDt fixed", "QDt runtime",  "DQt runtime"};
  chart.values = {r.ours.p50, r.ours_ex.p50, r.ours_maps.p50, r.mm.p50, r.mmrt.p50, r.mmt.p50};
  if (r.codes.count > 0) {
    chart.labels.push_back(Fmt("ours, %d-bit codes", f.code_bits));
    chart.values.push_back(r.codes.p50);
  }
  if (r.torch_us > 0) {
    chart.labels.push_back("PyTorch (" + r.torch_best + ")");
    chart.values.push_back(r.torch_us);
  }
  for (double v : chart.values) chart.value_texts.push_back(Fmt("%.0f us", v));
  SavePlot(f.out_dir, Fmt("rerank_%s_c%zu_t%d.svg", f.dtype.c_str(), x.candidates, f.threads),
           RenderSvg(chart), results);
}

}  // namespace

absl::StatusOr<BenchOutput> RunRerank(const BenchFlags& f) {
  if (f.dtype != "bf16" && f.dtype != "int8" && f.dtype != "f32") {
    return absl::InvalidArgumentError("--dtype: bf16, f32 or int8");
  }
  if (f.candidates <= 0 || f.query_tokens <= 0 || f.doc_tokens_min <= 0 ||
      f.doc_tokens_max < f.doc_tokens_min) {
    return absl::InvalidArgumentError("rerank: bad candidates / token counts");
  }
  omp_set_num_threads(f.threads);
  const std::unique_ptr<RerankData> x = SetupRerank(f);
  ATTN_ASSIGN_OR_RETURN(RerankTimes times, TimeRerank(f, *x));
  ATTN_ASSIGN_OR_RETURN(TorchRun torch, RunTorch(f, *x));
  const RerankSummary summary = SummarizeRerank(*x, times, torch);
  PrintRerank(f, *x, summary, torch);
  BenchOutput out = RerankRecord(f, *x, summary, std::move(torch));
  SaveRerankChart(f, *x, summary, &out.results);
  return out;
}

}  // namespace attnsearch::bench
