#include "rerank/reranker.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "rerank/segment_reduce.h"

namespace attnsearch {
namespace {

using dnnl::memory;

// The one place oneDNN exceptions become statuses.
template <typename F>
absl::Status CatchDnnl(absl::string_view what, F&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat(what, ": oneDNN: ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

memory::data_type DnnlType(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kF32:
      return memory::data_type::f32;
    case TokenDtype::kBF16:
      return memory::data_type::bf16;
    case TokenDtype::kInt8:
      return memory::data_type::s8;
  }
  return memory::data_type::f32;
}

// The query as the matmul consumes it: rounded to bf16, or quantized to s8
// with one scale per query token (the matmul's output scales).
struct QueryOperand {
  std::vector<uint16_t> bf16;
  std::vector<int8_t> s8;
  std::vector<float> row_scales;  // s8 only
  const void* data = nullptr;

  QueryOperand(const float* q, uint32_t m, size_t d, TokenDtype dtype) {
    const size_t n = m * d;
    data = q;
    if (dtype == TokenDtype::kBF16) {
      bf16.resize(n);
      FloatToBf16(q, bf16.data(), n);
      data = bf16.data();
    } else if (dtype == TokenDtype::kInt8) {
      s8.resize(n);
      row_scales.resize(m);
      for (uint32_t i = 0; i < m; ++i)
        row_scales[i] = QuantizeInt8(q + i * d, s8.data() + i * d, d);
      data = s8.data();
    }
  }
  const float* scales() const { return row_scales.empty() ? nullptr : row_scales.data(); }
};

}  // namespace

struct Reranker::Rep {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul matmul;
};

Reranker::Reranker(std::unique_ptr<Rep> rep, uint32_t dim, TokenDtype dtype,
                   const RerankerOptions& options)
    : rep_(std::move(rep)), dim_(dim), dtype_(dtype), options_(options) {}

Reranker::~Reranker() = default;

absl::StatusOr<std::unique_ptr<Reranker>> Reranker::Create(uint32_t dim, TokenDtype dtype,
                                                           const RerankerOptions& options) {
  if (dim == 0 || dim > kMaxDim) return absl::InvalidArgumentError("reranker: bad dim");
  auto rep = std::make_unique<Rep>();
  ATTN_RETURN_IF_ERROR(CatchDnnl("creating the rerank matmul", [&] {
    const memory::dim kRt = DNNL_RUNTIME_DIM_VAL;
    const memory::dim d = dim;
    const auto dt = DnnlType(dtype);
    // Sᵀ (N x m, f32) = D (N x d) * Qᵀ (d x m): the document tokens are read
    // in place, row-major; Qᵀ is the row-major query read with strides
    // {1, d}. Sᵀ keeps each document's similarities together, with the query
    // tokens across the vector lanes of the reduce.
    memory::desc t_md({kRt, d}, dt, {d, 1});
    memory::desc q_md({d, kRt}, dt, {1, d});
    memory::desc s_md({kRt, kRt}, memory::data_type::f32, {kRt, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    // int8: Sᵀ_ji = dscale_j * qscale_i * Σ_k d8_jk q8_ik; the query scales
    // (columns) are output scales given at execution, the document token
    // scales (rows) are applied by the reduce.
    if (dtype == TokenDtype::kInt8) attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});
    dnnl::matmul::desc desc(t_md, q_md, s_md);
    rep->pd = dnnl::matmul::primitive_desc(desc, attr, rep->engine);
    rep->matmul = dnnl::matmul(rep->pd);
  }));
  std::unique_ptr<Reranker> reranker(new Reranker(std::move(rep), dim, dtype, options));
  // One small run JIT-compiles the kernels now rather than in the first query.
  std::vector<float> q(dim, 0.f), w(1, 1.f);
  q[0] = 1.f;
  std::vector<float> doc(size_t(dim) * 64, 0.f), scales(64, 1.f);  // zeros in any dtype
  const uint32_t rows = 64;
  const size_t offset = 0;
  float score;
  RerankQuery warm{q.data(), 1, w.data(), RerankMode::kAttention, kDefaultTemperature};
  CandidateTokens cand{doc.data(), rows, &rows, &offset, 1, scales.data()};
  ATTN_RETURN_IF_ERROR(reranker->Score(warm, cand, &score));
  return reranker;
}

absl::Status Reranker::CheckQuery(const RerankQuery& query,
                                  const CandidateTokens& candidates) const {
  if (query.mode != RerankMode::kAttention && query.mode != RerankMode::kMaxSim) {
    return absl::InvalidArgumentError("reranker: mode must be ATTENTION or MAXSIM");
  }
  if (query.num_tokens == 0) return absl::InvalidArgumentError("reranker: empty query");
  if (query.mode == RerankMode::kAttention && !(query.temperature > 0.f)) {
    return absl::InvalidArgumentError("reranker: temperature must be positive");
  }
  if (dtype_ == TokenDtype::kInt8 && candidates.count > 0 && candidates.scales == nullptr) {
    return absl::InvalidArgumentError("reranker: int8 candidates need their scales");
  }
  return absl::OkStatus();
}

namespace {

// Per-thread Sᵀ buffer, grown as needed and reused across calls: a fresh
// megabyte per query would cost page faults on every call.
std::vector<float>& ThreadSimilarities() {
  thread_local std::vector<float> sim;
  return sim;
}

}  // namespace

void Reranker::KeepSimilarities(std::vector<float>* keep) {
  // Exchanged, not copied: the caller's old buffer becomes the next one.
  std::swap(ThreadSimilarities(), *keep);
}

absl::Status Reranker::ForEachChunk(
    const RerankQuery& query, const CandidateTokens& candidates,
    const std::function<void(size_t first, size_t last, size_t row0, const float* st)>& fn) const {
  const uint32_t m = query.num_tokens;
  const size_t d = dim_;
  const size_t elem = TokenDtypeSize(dtype_);
  const QueryOperand q_op(query.tokens, m, d, dtype_);

  // This call's threads, for oneDNN's matmul and the reduce (both OpenMP;
  // the setting is per calling thread).
  // Small queries run on one thread: waking a second costs more than it
  // saves below a few MFLOP (one more thread per ~16 MFLOP of matmul).
  const double mflop = 2e-6 * m * double(d) * double(candidates.total_rows);
  int want = options_.max_threads > 0 ? options_.max_threads : omp_get_num_procs();
  want = std::max(1, std::min(want, 1 + int(mflop / 16.0)));
  // The calling thread has its own core (a server worker holds one for its
  // job); the others are extra cores the budget can spare now.
  CoreLease extra(options_.cores, want - 1, 0);
  struct ThreadsFor {
    explicit ThreadsFor(int n) : previous(omp_get_max_threads()) { omp_set_num_threads(n); }
    ~ThreadsFor() { omp_set_num_threads(previous); }  // the caller's setting comes back
    int previous;
  } threads_for(1 + extra.cores());

  std::vector<float>& sim = ThreadSimilarities();
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < rep_->pd.scratchpad_desc().get_size()) {
    scratch.resize(rep_->pd.scratchpad_desc().get_size());
  }
  size_t c = 0;
  while (c < candidates.count) {
    // The chunk [c, c_end): whole candidates up to max_rows_per_gemm rows
    // (at least one candidate).
    const size_t row0 = candidates.offsets[c];
    size_t c_end = c, rows = 0;
    while (c_end < candidates.count &&
           (c_end == c || rows + candidates.rows[c_end] <= options_.max_rows_per_gemm)) {
      rows += candidates.rows[c_end];
      ++c_end;
    }
    if (rows > 0) {
      if (sim.size() < size_t(m) * rows) sim.resize(size_t(m) * rows);
      ATTN_RETURN_IF_ERROR(CatchDnnl("rerank matmul", [&] {
        const auto dt = DnnlType(dtype_);
        const memory::dim md = m, nd = memory::dim(rows), dd = memory::dim(d);
        memory t_mem(
            {{nd, dd}, dt, {dd, 1}}, rep_->engine,
            const_cast<char*>(static_cast<const char*>(candidates.data) + row0 * d * elem));
        memory q_mem({{dd, md}, dt, {1, dd}}, rep_->engine, const_cast<void*>(q_op.data));
        memory s_mem({{nd, md}, memory::data_type::f32, {md, 1}}, rep_->engine, sim.data());
        memory scratch_mem(rep_->pd.scratchpad_desc(), rep_->engine, scratch.data());
        std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, t_mem},
                                                {DNNL_ARG_WEIGHTS, q_mem},
                                                {DNNL_ARG_DST, s_mem},
                                                {DNNL_ARG_SCRATCHPAD, scratch_mem}};
        if (dtype_ == TokenDtype::kInt8) {
          args.emplace(DNNL_ARG_ATTR_OUTPUT_SCALES,
                       memory({{md}, memory::data_type::f32, {1}}, rep_->engine,
                              const_cast<float*>(q_op.scales())));
        }
        dnnl::stream stream(rep_->engine);
        rep_->matmul.execute(stream, args);
        stream.wait();
      }));
    }
    fn(c, c_end, row0, sim.data());
    c = c_end;
  }
  return absl::OkStatus();
}

absl::Status Reranker::Score(const RerankQuery& query, const CandidateTokens& candidates,
                             float* scores) const {
  return Score(query, candidates, scores, nullptr);
}

absl::Status Reranker::Score(const RerankQuery& query, const CandidateTokens& candidates,
                             float* scores, ScoredSimilarities* keep) const {
  ATTN_RETURN_IF_ERROR(CheckQuery(query, candidates));
  const uint32_t m = query.num_tokens;
  const float inv_tau = 1.f / query.temperature;
  if (keep != nullptr) keep->valid = false;
  size_t chunks = 0;
  return ForEachChunk(query, candidates, [&](size_t c, size_t c_end, size_t row0, const float* s) {
    // Each candidate's rows of Sᵀ reduce to its score; the candidates of the
    // chunk are shared among the threads this call may use.
    const long first = long(c), last = long(c_end);
#pragma omp parallel for schedule(dynamic, 16) if (last - first > 32)
    for (long k = first; k < last; ++k) {
      const uint32_t n = candidates.rows[k];
      const float* row_scales =
          candidates.scales ? candidates.scales + candidates.offsets[k] : nullptr;
      scores[k] = n == 0 ? -std::numeric_limits<float>::infinity()
                         : ReduceSegment(s + (candidates.offsets[k] - row0) * m, m, n,
                                         query.weights, query.mode, inv_tau, row_scales);
    }
    ++chunks;
    // One chunk holds every candidate: hand its Sᵀ over.
    if (keep != nullptr && c == 0 && c_end == candidates.count && chunks == 1) {
      KeepSimilarities(&keep->st);
      keep->valid = true;
    }
  });
}

absl::Status Reranker::ExplainScored(const RerankQuery& query, const CandidateTokens& candidates,
                                     const ScoredSimilarities& keep,
                                     const std::vector<size_t>& which,
                                     std::vector<std::vector<TokenEvidence>>* out) const {
  ATTN_RETURN_IF_ERROR(CheckQuery(query, candidates));
  for (size_t k : which) {
    if (k >= candidates.count) return absl::InvalidArgumentError("explain: no such candidate");
  }
  const uint32_t m = query.num_tokens;
  const size_t row0 = candidates.count > 0 ? candidates.offsets[0] : 0;
  if (!keep.valid || keep.st.size() < size_t(m) * candidates.total_rows) {
    // Gather the rows of `which` and run one small matmul over them.
    const size_t row_bytes = size_t(dim_) * TokenDtypeSize(dtype_);
    std::vector<char> data;
    std::vector<float> scales;
    std::vector<uint32_t> rows;
    std::vector<size_t> offsets;
    size_t total = 0;
    for (size_t k : which) {
      rows.push_back(candidates.rows[k]);
      offsets.push_back(total);
      total += candidates.rows[k];
    }
    data.resize(total * row_bytes);
    for (size_t i = 0; i < which.size(); ++i) {
      const size_t k = which[i];
      std::memcpy(data.data() + offsets[i] * row_bytes,
                  static_cast<const char*>(candidates.data) + candidates.offsets[k] * row_bytes,
                  rows[i] * row_bytes);
      if (candidates.scales != nullptr) {
        scales.insert(scales.end(), candidates.scales + candidates.offsets[k],
                      candidates.scales + candidates.offsets[k] + rows[i]);
      }
    }
    const CandidateTokens hits{data.data(), total,
                               rows.data(), offsets.data(),
                               rows.size(), candidates.scales ? scales.data() : nullptr};
    return Explain(query, hits, out);
  }
  const float inv_tau = 1.f / query.temperature;
  out->assign(which.size(), {});
  std::vector<uint32_t> argmax(m);
  std::vector<float> weight(m), contribution(m);
  for (size_t i = 0; i < which.size(); ++i) {
    const size_t k = which[i];
    const uint32_t n = candidates.rows[k];
    if (n == 0) continue;
    const float* row_scales =
        candidates.scales ? candidates.scales + candidates.offsets[k] : nullptr;
    ExplainSegment(keep.st.data() + (candidates.offsets[k] - row0) * m, m, n, query.weights,
                   query.mode, inv_tau, row_scales, argmax.data(), weight.data(),
                   contribution.data());
    for (uint32_t t = 0; t < m; ++t) {
      (*out)[i].push_back({t, argmax[t], weight[t], contribution[t]});
    }
  }
  return absl::OkStatus();
}

absl::Status Reranker::Explain(const RerankQuery& query, const CandidateTokens& candidates,
                               std::vector<std::vector<TokenEvidence>>* out) const {
  ATTN_RETURN_IF_ERROR(CheckQuery(query, candidates));
  out->assign(candidates.count, {});
  const uint32_t m = query.num_tokens;
  const float inv_tau = 1.f / query.temperature;
  return ForEachChunk(query, candidates, [&](size_t c, size_t c_end, size_t row0, const float* st) {
    std::vector<uint32_t> argmax(m);
    std::vector<float> weight(m), contribution(m);
    for (size_t k = c; k < c_end; ++k) {
      const uint32_t n = candidates.rows[k];
      if (n == 0) continue;
      const float* row_scales =
          candidates.scales ? candidates.scales + candidates.offsets[k] : nullptr;
      ExplainSegment(st + (candidates.offsets[k] - row0) * m, m, n, query.weights, query.mode,
                     inv_tau, row_scales, argmax.data(), weight.data(), contribution.data());
      for (uint32_t i = 0; i < m; ++i) {
        (*out)[k].push_back({i, argmax[i], weight[i], contribution[i]});
      }
    }
  });
}

absl::Status Reranker::Explain(const RerankQuery& query, const void* doc_tokens, uint32_t rows,
                               std::vector<TokenEvidence>* out, const float* row_scales) const {
  const size_t offset = 0;
  const CandidateTokens one{doc_tokens, rows, &rows, &offset, 1, row_scales};
  std::vector<std::vector<TokenEvidence>> all;
  ATTN_RETURN_IF_ERROR(Explain(query, one, &all));
  *out = std::move(all[0]);
  return absl::OkStatus();
}

}  // namespace attnsearch
