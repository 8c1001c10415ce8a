#include "rerank/reranker.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "rerank/amx.h"
#include "rerank/int8_tiles.h"
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
// with one scale per query token (applied in the reduce); either widened
// to f32 where the matmul computes their values in f32 (Reranker::Rep).
struct QueryOperand {
  std::vector<uint16_t> bf16;
  std::vector<float> widened;
  std::vector<int8_t> s8;
  std::vector<float> row_scales;  // s8 only
  const void* data = nullptr;

  QueryOperand(const float* q, uint32_t m, size_t d, TokenDtype dtype, bool widen = false) {
    const size_t n = m * d;
    data = q;
    if (dtype == TokenDtype::kBF16) {
      bf16.resize(n);
      FloatToBf16(q, bf16.data(), n);
      data = bf16.data();
      if (widen) {
        widened.resize(n);
        Bf16ToFloat(bf16.data(), widened.data(), n);
        data = widened.data();
      }
    } else if (dtype == TokenDtype::kInt8) {
      s8.resize(n);
      row_scales.resize(m);
      for (uint32_t i = 0; i < m; ++i)
        row_scales[i] = QuantizeInt8(q + i * d, s8.data() + i * d, d);
      data = s8.data();
      if (widen) {
        widened.assign(s8.begin(), s8.end());
        data = widened.data();
      }
    }
  }
  const float* scales() const { return row_scales.empty() ? nullptr : row_scales.data(); }
};

// Sᵀ (rows x m, f32) = D (rows x d) * Qᵀ (d x m): the document tokens are
// read in place, row-major; Qᵀ is the row-major query read with strides
// {1, d}. Sᵀ keeps each document's similarities together, with the query
// tokens across the vector lanes of the reduce. `rows` and `m` are fixed
// (oneDNN then picks its best kernel: AMX or AVX-512 brgemm) or
// DNNL_RUNTIME_DIM_VAL (a generic kernel). int8: Sᵀ_ji = dscale_j * qscale_i
// * Σ_k d8_jk q8_ik; the matmul computes the integer sums and the reduce
// applies both scales (the query's, per column, as output scales given at
// execution, would keep oneDNN off its AMX and VNNI kernels).
struct Matmul {
  // A stream, memory objects, arguments and a scratchpad for one call at a
  // time, made once and pointed at each call's buffers.
  struct Bound {
    dnnl::stream stream;
    std::vector<uint8_t> scratch;
    memory t_mem, q_mem, s_mem;
    std::unordered_map<int, memory> args;
  };

  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  size_t scratch_bytes = 0;
  mutable absl::Mutex mu;
  mutable std::vector<std::unique_ptr<Bound>> idle
      ABSL_GUARDED_BY(mu);  // one per concurrent caller

  // A Bound for (rows, m) (this primitive's shape, or any for the runtime
  // one): an idle one, or a new one. Throws dnnl::error.
  std::unique_ptr<Bound> Take(const dnnl::engine& engine, size_t rows, uint32_t m, uint32_t d,
                              TokenDtype dtype) const {
    {
      absl::MutexLock lock(&mu);
      if (!idle.empty()) {
        std::unique_ptr<Bound> b = std::move(idle.back());
        idle.pop_back();
        if (b->t_mem.get_desc().dims()[0] == memory::dim(rows) &&
            b->q_mem.get_desc().dims()[1] == memory::dim(m)) {
          return b;
        }
      }
    }
    auto b = std::make_unique<Bound>();
    const auto dt = DnnlType(dtype);
    const memory::dim md = m, nd = memory::dim(rows), dd = memory::dim(d);
    b->stream = dnnl::stream(engine);
    b->scratch.resize(scratch_bytes);
    b->t_mem = memory({{nd, dd}, dt, {dd, 1}}, engine, nullptr);
    b->q_mem = memory({{dd, md}, dt, {1, dd}}, engine, nullptr);
    b->s_mem = memory({{nd, md}, memory::data_type::f32, {md, 1}}, engine, nullptr);
    b->args = {{DNNL_ARG_SRC, b->t_mem},
               {DNNL_ARG_WEIGHTS, b->q_mem},
               {DNNL_ARG_DST, b->s_mem},
               {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), engine, b->scratch.data())}};
    return b;
  }
  void Give(std::unique_ptr<Bound> b) const {
    absl::MutexLock lock(&mu);
    idle.push_back(std::move(b));
  }

  Matmul(const dnnl::engine& engine, memory::dim rows, memory::dim m, memory::dim d,
         TokenDtype dtype) {
    const auto dt = DnnlType(dtype);
    const memory::dim ld = m == DNNL_RUNTIME_DIM_VAL ? DNNL_RUNTIME_DIM_VAL : m;
    memory::desc t_md({rows, d}, dt, {d, 1});
    memory::desc q_md({d, m}, dt, {1, d});
    memory::desc s_md({rows, m}, memory::data_type::f32, {ld, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(t_md, q_md, s_md), attr, engine);
    primitive = dnnl::matmul(pd);
    scratch_bytes = pd.scratchpad_desc().get_size();
  }
};

// The kernel of the per-candidate int8 path: AMX where it may run, else
// AVX-512 VNNI (the Reranker takes this path only where one of them may).
Int8Kernel TileKernel() { return AmxUsable(AmxKind::kInt8) ? Int8Kernel::kAmx : Int8Kernel::kVnni; }

// True when oneDNN's int8 matmul has VNNI here (AVX-512 VNNI or AVX-VNNI,
// as ONEDNN_MAX_CPU_ISA allows): its s8 products then sum in 32 bits.
bool HasVnni() {
  const auto isa = unsigned(dnnl::get_effective_cpu_isa());
  const auto has = [isa](dnnl::cpu_isa want) { return (isa & unsigned(want)) == unsigned(want); };
  return has(dnnl::cpu_isa::avx512_core_vnni) || has(dnnl::cpu_isa::avx2_vnni);
}

// The row counts of the fixed-shape matmuls: kWindowRows, then powers of
// two down to kMinPieceRows for the rest of a chunk.
constexpr size_t kWindowRows = 2048;
constexpr size_t kMinPieceRows = 16;
// Most fixed-shape primitives one Reranker keeps (one per row count and
// query length); beyond it new shapes use the runtime-shape primitive.
constexpr size_t kMaxFixedShapes = 512;

// A piece of a chunk's Sᵀ computed by one matmul call: `rows` rows from
// row `begin` of the chunk. The last piece may be padded: its `valid` rows
// are copied to a zeroed buffer of `rows` rows, and only they are kept.
struct Piece {
  size_t begin = 0;
  size_t rows = 0;
  size_t valid = 0;
};

// Splits `total` rows into windows of kWindowRows, then powers of two, then
// one padded piece of kMinPieceRows for the rest.
std::vector<Piece> SplitRows(size_t total) {
  std::vector<Piece> pieces;
  size_t at = 0;
  for (size_t size = kWindowRows; size >= kMinPieceRows; size /= 2) {
    while (total - at >= size) {
      pieces.push_back({at, size, size});
      at += size;
    }
  }
  if (at < total) pieces.push_back({at, kMinPieceRows, total - at});
  return pieces;
}

// This call's threads, for the matmuls and the reduce (OpenMP; the setting
// is per calling thread and comes back when the call ends). Small queries
// run on one thread: waking a second costs more than it saves below a few
// MFLOP (one more thread per ~16 MFLOP of matmul). The calling thread has
// its own core (a server worker holds one for its job); the others are
// extra cores the budget can spare now.
class CallThreads {
 public:
  CallThreads(const RerankerOptions& options, uint32_t m, size_t d, size_t rows)
      : extra_(options.cores, Want(options, m, d, rows) - 1, 0), previous_(omp_get_max_threads()) {
    omp_set_num_threads(threads());
  }
  ~CallThreads() { omp_set_num_threads(previous_); }
  CallThreads(const CallThreads&) = delete;
  CallThreads& operator=(const CallThreads&) = delete;
  int threads() const { return 1 + extra_.cores(); }

 private:
  static int Want(const RerankerOptions& options, uint32_t m, size_t d, size_t rows) {
    const double mflop = 2e-6 * m * double(d) * double(rows);
    const int want = options.max_threads > 0 ? options.max_threads : omp_get_num_procs();
    return std::max(1, std::min(want, 1 + int(mflop / 16.0)));
  }
  CoreLease extra_;
  int previous_;
};

}  // namespace

struct Reranker::Rep {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  // Rows whose matmul this CPU lacks or gets wrong: bf16 where oneDNN has
  // no bf16 matmul (before AVX-512), and int8 without VNNI, where oneDNN's
  // u8 x s8 pairs saturate at 16 bits (its "int8 computation nuances").
  // Each piece's rows are then widened to f32, exactly, and multiplied by
  // an f32 matmul with the query as it would be (bf16-rounded, or its s8
  // steps): the products of the same values, summed in f32 (exact for
  // int8 at d <= 1,040).
  bool widen = false;
  std::unique_ptr<Matmul> any_shape;  // runtime rows and m
  mutable absl::Mutex mu;
  // Fixed-shape primitives by (rows, m), created on first use and never
  // removed (a pointer stays valid for the Reranker's life).
  mutable std::map<std::pair<size_t, uint32_t>, std::unique_ptr<Matmul>> fixed ABSL_GUARDED_BY(mu);

  // The fixed-shape matmul for (rows, m), or the runtime-shape one when the
  // cache is full or creating it failed.
  const Matmul* For(size_t rows, uint32_t m, uint32_t d, TokenDtype dtype) const {
    const auto key = std::make_pair(rows, m);
    {
      absl::ReaderMutexLock lock(&mu);
      auto it = fixed.find(key);
      if (it != fixed.end()) return it->second.get();
      if (fixed.size() >= kMaxFixedShapes) return any_shape.get();
    }
    std::unique_ptr<Matmul> made;
    const absl::Status s = CatchDnnl("creating a fixed-shape rerank matmul", [&] {
      made = std::make_unique<Matmul>(engine, memory::dim(rows), memory::dim(m), memory::dim(d),
                                      dtype);
    });
    if (!s.ok()) return any_shape.get();
    absl::MutexLock lock(&mu);
    auto [it, inserted] = fixed.emplace(key, std::move(made));
    return it->second.get();
  }
};

Reranker::Reranker(std::unique_ptr<Rep> rep, uint32_t dim, TokenDtype dtype,
                   const RerankerOptions& options)
    : rep_(std::move(rep)),
      dim_(dim),
      dtype_(dtype),
      options_(options),
      int8_tiles_(options.tile_kernel && dtype == TokenDtype::kInt8 && dim % 64 == 0 &&
                  (AmxUsable(AmxKind::kInt8) || Int8VnniUsable()) && ReduceSegmentUsesAvx512()) {}

Reranker::~Reranker() = default;

bool Reranker::widened() const { return rep_->widen; }

TokenDtype Reranker::MatmulDtype() const { return rep_->widen ? TokenDtype::kF32 : dtype_; }

absl::StatusOr<std::unique_ptr<Reranker>> Reranker::Create(uint32_t dim, TokenDtype dtype,
                                                           const RerankerOptions& options) {
  if (dim == 0 || dim > kMaxDim) return absl::InvalidArgumentError("reranker: bad dim");
  auto rep = std::make_unique<Rep>();
  const auto make_any_shape = [&](TokenDtype computed) {
    return CatchDnnl("creating the rerank matmul", [&] {
      rep->any_shape = std::make_unique<Matmul>(rep->engine, DNNL_RUNTIME_DIM_VAL,
                                                DNNL_RUNTIME_DIM_VAL, memory::dim(dim), computed);
    });
  };
  rep->widen = dtype == TokenDtype::kInt8 && !HasVnni();
  if (absl::Status made = make_any_shape(rep->widen ? TokenDtype::kF32 : dtype); !made.ok()) {
    if (dtype != TokenDtype::kBF16) return made;
    rep->widen = true;  // no bf16 matmul on this CPU
    ATTN_RETURN_IF_ERROR(make_any_shape(TokenDtype::kF32));
  }
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

absl::StatusOr<std::string> Reranker::MatmulKernel(uint32_t query_tokens) const {
  if (query_tokens == 0) return absl::InvalidArgumentError("reranker: no query tokens");
  const Matmul* mm = rep_->For(kWindowRows, query_tokens, dim_, MatmulDtype());
  std::string name;
  ATTN_RETURN_IF_ERROR(CatchDnnl("rerank matmul", [&] { name = mm->pd.impl_info_str(); }));
  return name;
}

std::string Reranker::TileKernelName() const {
  if (!int8_tiles_) return "";
  return TileKernel() == Int8Kernel::kAmx ? "amx tiles (TDPBSSD)" : "avx512 vnni (VPDPBUSD)";
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

absl::Status Reranker::MultiplyPiece(const void* query_operand, uint32_t m, const char* rows_data,
                                     size_t rows, size_t valid, float* out) const {
  const size_t d = dim_;
  const size_t row_bytes = d * TokenDtypeSize(dtype_);
  const TokenDtype computed = MatmulDtype();
  const Matmul* mm = rep_->For(rows, m, dim_, computed);
  // A padded piece: its valid rows, then zero rows, in a buffer of its own
  // (widened to f32 if the matmul computes bf16 in f32); its output goes to
  // another and only the valid rows are copied out.
  thread_local std::vector<char> pad_in;
  thread_local std::vector<float> wide_in, pad_out;
  const void* src = rows_data;
  float* dst = out;
  if (computed != dtype_) {
    wide_in.resize(rows * d);
    if (dtype_ == TokenDtype::kBF16) {
      Bf16ToFloat(reinterpret_cast<const uint16_t*>(rows_data), wide_in.data(), valid * d);
    } else {
      const auto* s8 = reinterpret_cast<const int8_t*>(rows_data);
      std::copy(s8, s8 + valid * d, wide_in.begin());
    }
    std::fill(wide_in.begin() + long(valid * d), wide_in.end(), 0.f);
    src = wide_in.data();
  } else if (valid < rows) {
    pad_in.assign(rows * row_bytes, 0);
    std::memcpy(pad_in.data(), rows_data, valid * row_bytes);
    src = pad_in.data();
  }
  if (valid < rows) {
    pad_out.resize(rows * m);
    dst = pad_out.data();
  }
  ATTN_RETURN_IF_ERROR(CatchDnnl("rerank matmul", [&] {
    std::unique_ptr<Matmul::Bound> b = mm->Take(rep_->engine, rows, m, dim_, computed);
    b->t_mem.set_data_handle(const_cast<void*>(src));
    b->q_mem.set_data_handle(const_cast<void*>(query_operand));
    b->s_mem.set_data_handle(dst);
    mm->primitive.execute(b->stream, b->args);
    b->stream.wait();
    mm->Give(std::move(b));
  }));
  if (valid < rows) std::memcpy(out, pad_out.data(), valid * m * sizeof(float));
  return absl::OkStatus();
}

absl::StatusOr<size_t> Reranker::ForEachChunk(
    const RerankQuery& query, const CandidateTokens& candidates,
    const std::function<void(size_t first, size_t last, size_t row0, const float* st,
                             const float* col_scale)>& fn) const {
  const uint32_t m = query.num_tokens;
  const size_t d = dim_;
  const size_t row_bytes = d * TokenDtypeSize(dtype_);
  const QueryOperand q_op(query.tokens, m, d, dtype_, rep_->widen);

  const CallThreads call_threads(options_, m, d, candidates.total_rows);
  const int threads = call_threads.threads();

  std::vector<float>& sim = ThreadSimilarities();
  size_t c = 0, chunks = 0;
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
    ++chunks;
    if (sim.size() < size_t(m) * rows) sim.resize(size_t(m) * rows);
    const char* base = candidates.rows_from != nullptr
                           ? nullptr
                           : static_cast<const char*>(candidates.data) + row0 * row_bytes;
    // Fixed-shape pieces (see SplitRows); each thread computes a run of
    // them in order and reduces a candidate as soon as its rows are done,
    // while its similarities are still in cache. A candidate whose rows
    // run past the thread's last piece is reduced after all threads end.
    const std::vector<Piece> pieces = SplitRows(rows);
    const int parts = int(std::min<size_t>(size_t(threads), pieces.size()));
    std::vector<size_t> cut(parts + 1, pieces.size());
    cut[0] = 0;
    for (int t = 1; t < parts; ++t) {
      size_t p = cut[t - 1];
      while (p < pieces.size() && pieces[p].begin < rows * t / parts) ++p;
      cut[t] = p;
    }
    std::vector<absl::Status> status(parts);
    std::vector<size_t> left(parts, c), last(parts, c);
    const size_t* offsets = candidates.offsets;
#pragma omp parallel for schedule(static, 1) num_threads(std::max(parts, 1)) if (parts > 1)
    for (int t = 0; t < parts; ++t) {
      if (cut[t] == cut[t + 1]) continue;
      const size_t a = pieces[cut[t]].begin;
      const size_t b = pieces[cut[t + 1] - 1].begin + pieces[cut[t + 1] - 1].valid;
      // This part's candidates: those that start in rows [a, b).
      size_t k = size_t(std::lower_bound(offsets + c, offsets + c_end, row0 + a) - offsets);
      const size_t k_end =
          t + 1 == parts
              ? c_end
              : size_t(std::lower_bound(offsets + c, offsets + c_end, row0 + b) - offsets);
      last[t] = k_end;
      for (size_t p = cut[t]; p < cut[t + 1]; ++p) {
        const Piece& piece = pieces[p];
        const char* rows_data = base + piece.begin * row_bytes;
        if (candidates.rows_from != nullptr) {
          thread_local std::vector<char> made;
          made.resize(piece.valid * row_bytes);
          (*candidates.rows_from)(row0 + piece.begin, piece.valid, made.data());
          rows_data = made.data();
        }
        status[t] = MultiplyPiece(q_op.data, m, rows_data, piece.rows, piece.valid,
                                  sim.data() + piece.begin * m);
        if (!status[t].ok()) break;
        const size_t done = row0 + piece.begin + piece.valid;
        const size_t first = k;
        while (k < k_end && offsets[k] + candidates.rows[k] <= done) ++k;
        if (k > first) fn(first, k, row0, sim.data(), q_op.scales());
      }
      left[t] = k;
    }
    for (int t = 0; t < parts; ++t) ATTN_RETURN_IF_ERROR(status[t]);
    for (int t = 0; t < parts; ++t) {
      if (left[t] < last[t]) fn(left[t], last[t], row0, sim.data(), q_op.scales());
    }
    if (rows == 0) fn(c, c_end, row0, sim.data(), q_op.scales());  // candidates without rows
    c = c_end;
  }
  return chunks;
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
  if (int8_tiles_) return ScoreInTiles(query, candidates, scores);
  auto chunks = ForEachChunk(
      query, candidates,
      [&](size_t c, size_t c_end, size_t row0, const float* s, const float* col_scale) {
        // Each candidate's rows of Sᵀ reduce to its score; the candidates of the
        // chunk are shared among the threads this call may use.
        const long first = long(c), last = long(c_end);
#pragma omp parallel for schedule(dynamic, 16) if (last - first > 32)
        for (long k = first; k < last; ++k) {
          const uint32_t n = candidates.rows[k];
          const float* row_scales =
              candidates.scales ? candidates.scales + candidates.offsets[k] : nullptr;
          scores[k] =
              n == 0 ? -std::numeric_limits<float>::infinity()
                     : ReduceSegment(s + (candidates.offsets[k] - row0) * m, m, n, query.weights,
                                     query.mode, inv_tau, row_scales, col_scale);
        }
      });
  ATTN_RETURN_IF_ERROR(chunks.status());
  // One chunk holds every candidate: hand its Sᵀ over.
  if (keep != nullptr && *chunks == 1) {
    KeepSimilarities(&keep->st);
    keep->valid = true;
  }
  return absl::OkStatus();
}

namespace {

// A thread's buffers for one candidate on tiles: its rows (made, or its
// last partial block padded), its int32 sums, its scaled similarities and
// their maxima, all in cache.
struct TileScratch {
  std::vector<int8_t> rows;
  std::vector<int32_t> sums;
  std::vector<float> st, col_max;
};

TileScratch& ThreadTileScratch() {
  thread_local TileScratch scratch;
  return scratch;
}

// Candidate k's similarities (n x m, row and query scales applied) into
// s->st and their maxima per query token into s->col_max. REQUIRES: the
// candidate has rows; on AMX, this thread's tiles are configured.
void CandidateInTiles(const Int8QueryTiles& q, const CandidateTokens& candidates, size_t k,
                      const float* col_scale, TileScratch* s) {
  const uint32_t n = candidates.rows[k], m = q.m, d = q.d;
  const size_t mp = size_t(q.column_blocks) * 16;
  if (s->st.size() < size_t(n) * m) s->st.resize(size_t(n) * m);
  const float* row_scales = candidates.scales ? candidates.scales + candidates.offsets[k] : nullptr;
  s->col_max.assign(mp, -std::numeric_limits<float>::infinity());
  const bool made = candidates.rows_from != nullptr && candidates.sources == nullptr;
  const int8_t* x = nullptr;  // the candidate's rows, when they are read in place
  if (candidates.sources != nullptr) {
    x = reinterpret_cast<const int8_t*>(candidates.sources[k]);
  } else if (!made) {
    x = static_cast<const int8_t*>(candidates.data) + candidates.offsets[k] * d;
  }
  if (q.kernel == Int8Kernel::kVnni) {
    // Any number of rows, in place or made; scaled in registers.
    if (made) {
      s->rows.resize(size_t(n) * d);
      (*candidates.rows_from)(candidates.offsets[k], n, s->rows.data());
      x = s->rows.data();
    }
    if (s->sums.size() < n) s->sums.resize(n);  // the rows' biases
    Int8VnniScaled(q, x, n, d, row_scales, col_scale, s->sums.data(), s->st.data(),
                   s->col_max.data());
    return;
  }
  // AMX: pairs of blocks of 16 rows, whole pairs in place, the rest (or,
  // when made, every row) through a buffer zero-padded to a whole pair.
  const size_t padded = (size_t(n) + 31) / 32 * 32, whole = n / 32 * 32;
  if (s->sums.size() < padded * mp) s->sums.resize(padded * mp);
  if (made) {
    s->rows.resize(padded * d);
    (*candidates.rows_from)(candidates.offsets[k], n, s->rows.data());
    std::memset(s->rows.data() + size_t(n) * d, 0, (padded - n) * d);
    Int8TileSimilarities(q, s->rows.data(), padded / 16, d, s->sums.data());
  } else {
    Int8TileSimilarities(q, x, whole / 16, d, s->sums.data());
    if (whole < n) {
      s->rows.assign(32 * size_t(d), 0);
      std::memcpy(s->rows.data(), x + whole * d, (n - whole) * size_t(d));
      Int8TileSimilarities(q, s->rows.data(), 2, d, s->sums.data() + whole * mp);
    }
  }
  ScaleSums(s->sums.data(), n, mp, m, row_scales, col_scale, s->st.data(), s->col_max.data());
}

}  // namespace

absl::Status Reranker::ScoreInTiles(const RerankQuery& query, const CandidateTokens& candidates,
                                    float* scores) const {
  const uint32_t m = query.num_tokens;
  const float inv_tau = 1.f / query.temperature;
  const QueryOperand q_op(query.tokens, m, dim_, dtype_);
  const Int8QueryTiles q_tiles(q_op.s8.data(), m, dim_, TileKernel());
  const CallThreads call_threads(options_, m, dim_, candidates.total_rows);
  const int threads = call_threads.threads();
  const long count = long(candidates.count);
#pragma omp parallel num_threads(threads) if (threads > 1 && count > 1)
  {
    TileScratch& s = ThreadTileScratch();
    if (q_tiles.kernel == Int8Kernel::kAmx) ConfigureInt8Tiles();
#pragma omp for schedule(dynamic, 2)
    for (long k = 0; k < count; ++k) {
      const uint32_t n = candidates.rows[k];
      if (n == 0) {
        scores[k] = -std::numeric_limits<float>::infinity();
        continue;
      }
      CandidateInTiles(q_tiles, candidates, size_t(k), q_op.scales(), &s);
      scores[k] = ReduceSegmentWithMax(s.st.data(), m, n, query.weights, query.mode, inv_tau,
                                       s.col_max.data());
    }
    if (q_tiles.kernel == Int8Kernel::kAmx) ReleaseInt8Tiles();
  }
  return absl::OkStatus();
}

absl::Status Reranker::ExplainInTiles(const RerankQuery& query, const CandidateTokens& candidates,
                                      const std::vector<size_t>& which,
                                      std::vector<std::vector<TokenEvidence>>* out,
                                      std::vector<std::vector<float>>* maps) const {
  const uint32_t m = query.num_tokens;
  const float inv_tau = 1.f / query.temperature;
  const QueryOperand q_op(query.tokens, m, dim_, dtype_);
  const Int8QueryTiles q_tiles(q_op.s8.data(), m, dim_, TileKernel());
  if (out != nullptr) out->assign(which.size(), {});
  if (maps != nullptr) maps->assign(which.size(), {});
  std::vector<uint32_t> argmax(m);
  std::vector<float> weight(m), contribution(m);
  TileScratch& s = ThreadTileScratch();
  if (q_tiles.kernel == Int8Kernel::kAmx) ConfigureInt8Tiles();
  for (size_t i = 0; i < which.size(); ++i) {
    const size_t k = which[i];
    const uint32_t n = candidates.rows[k];
    if (n == 0) continue;
    CandidateInTiles(q_tiles, candidates, k, q_op.scales(), &s);
    if (maps != nullptr) {
      (*maps)[i].resize(size_t(m) * n);
      AttentionExplainSegment(s.st.data(), m, n, query.weights, query.mode, inv_tau, nullptr,
                              nullptr, (*maps)[i].data(), argmax.data(), weight.data(),
                              contribution.data());
    } else {
      ExplainSegment(s.st.data(), m, n, query.weights, query.mode, inv_tau, nullptr, nullptr,
                     argmax.data(), weight.data(), contribution.data());
    }
    if (out == nullptr) continue;
    for (uint32_t t = 0; t < m; ++t) {
      (*out)[i].push_back({t, argmax[t], weight[t], contribution[t]});
    }
  }
  if (q_tiles.kernel == Int8Kernel::kAmx) ReleaseInt8Tiles();
  return absl::OkStatus();
}

namespace {

// The rows of candidates[which[i]], copied (or made) into one block, in
// that order: what a small matmul over a query's hits reads.
class GatheredRows {
 public:
  GatheredRows(const CandidateTokens& candidates, const std::vector<size_t>& which,
               size_t row_bytes) {
    size_t total = 0;
    for (size_t k : which) {
      rows_.push_back(candidates.rows[k]);
      offsets_.push_back(total);
      total += candidates.rows[k];
    }
    data_.resize(total * row_bytes);
    for (size_t i = 0; i < which.size(); ++i) {
      const size_t k = which[i];
      char* to = data_.data() + offsets_[i] * row_bytes;
      if (candidates.rows_from != nullptr) {
        (*candidates.rows_from)(candidates.offsets[k], rows_[i], to);
      } else {
        std::memcpy(to,
                    static_cast<const char*>(candidates.data) + candidates.offsets[k] * row_bytes,
                    rows_[i] * row_bytes);
      }
      if (candidates.scales != nullptr) {
        scales_.insert(scales_.end(), candidates.scales + candidates.offsets[k],
                       candidates.scales + candidates.offsets[k] + rows_[i]);
      }
    }
    tokens_ = CandidateTokens{data_.data(), total,
                              rows_.data(), offsets_.data(),
                              rows_.size(), candidates.scales ? scales_.data() : nullptr};
  }
  GatheredRows(const GatheredRows&) = delete;
  GatheredRows& operator=(const GatheredRows&) = delete;

  const CandidateTokens& tokens() const { return tokens_; }

 private:
  std::vector<char> data_;
  std::vector<float> scales_;
  std::vector<uint32_t> rows_;
  std::vector<size_t> offsets_;
  CandidateTokens tokens_;
};

}  // namespace

absl::Status Reranker::ExplainScored(const RerankQuery& query, const CandidateTokens& candidates,
                                     const ScoredSimilarities& keep,
                                     const std::vector<size_t>& which,
                                     std::vector<std::vector<TokenEvidence>>* out) const {
  return FromScored(query, candidates, keep, which, out, nullptr);
}

absl::Status Reranker::AttentionMapsScored(
    const RerankQuery& query, const CandidateTokens& candidates, const ScoredSimilarities& keep,
    const std::vector<size_t>& which, std::vector<std::vector<float>>* out,
    std::vector<std::vector<TokenEvidence>>* evidence) const {
  return FromScored(query, candidates, keep, which, evidence, out);
}

absl::Status Reranker::FromScored(const RerankQuery& query, const CandidateTokens& candidates,
                                  const ScoredSimilarities& keep, const std::vector<size_t>& which,
                                  std::vector<std::vector<TokenEvidence>>* evidence,
                                  std::vector<std::vector<float>>* maps) const {
  ATTN_RETURN_IF_ERROR(CheckQuery(query, candidates));
  for (size_t k : which) {
    if (k >= candidates.count) {
      return absl::InvalidArgumentError(
          absl::StrCat(maps ? "attention map" : "explain", ": no such candidate"));
    }
  }
  if (int8_tiles_) return ExplainInTiles(query, candidates, which, evidence, maps);
  const uint32_t m = query.num_tokens;
  if (!keep.valid || keep.st.size() < size_t(m) * candidates.total_rows) {
    // Gather the rows of `which` and run one small matmul over them.
    const GatheredRows hits(candidates, which, size_t(dim_) * TokenDtypeSize(dtype_));
    if (maps != nullptr) return AttentionMaps(query, hits.tokens(), maps, evidence);
    return Explain(query, hits.tokens(), evidence);
  }
  const size_t row0 = candidates.count > 0 ? candidates.offsets[0] : 0;
  const float inv_tau = 1.f / query.temperature;
  const QueryOperand q_op(query.tokens, m, dim_, dtype_,
                          rep_->widen);  // its int8 scales, as Score had them
  if (evidence != nullptr) evidence->assign(which.size(), {});
  if (maps != nullptr) maps->assign(which.size(), {});
  std::vector<uint32_t> argmax(m);
  std::vector<float> weight(m), contribution(m);
  for (size_t i = 0; i < which.size(); ++i) {
    const size_t k = which[i];
    const uint32_t n = candidates.rows[k];
    if (n == 0) continue;
    const float* st = keep.st.data() + (candidates.offsets[k] - row0) * m;
    const float* row_scales =
        candidates.scales ? candidates.scales + candidates.offsets[k] : nullptr;
    if (maps != nullptr) {
      (*maps)[i].resize(size_t(m) * n);
      AttentionExplainSegment(st, m, n, query.weights, query.mode, inv_tau, row_scales,
                              q_op.scales(), (*maps)[i].data(), argmax.data(), weight.data(),
                              contribution.data());
    } else {
      ExplainSegment(st, m, n, query.weights, query.mode, inv_tau, row_scales, q_op.scales(),
                     argmax.data(), weight.data(), contribution.data());
    }
    if (evidence == nullptr) continue;
    for (uint32_t t = 0; t < m; ++t) {
      (*evidence)[i].push_back({t, argmax[t], weight[t], contribution[t]});
    }
  }
  return absl::OkStatus();
}

absl::Status Reranker::ForEachSegment(
    const RerankQuery& query, const CandidateTokens& candidates,
    const std::function<void(size_t k, const float* st, const float* row_scales,
                             const float* col_scale)>& fn) const {
  const uint32_t m = query.num_tokens;
  return ForEachChunk(
             query, candidates,
             [&](size_t c, size_t c_end, size_t row0, const float* st, const float* col_scale) {
               for (size_t k = c; k < c_end; ++k) {
                 if (candidates.rows[k] == 0) continue;
                 const float* row_scales =
                     candidates.scales ? candidates.scales + candidates.offsets[k] : nullptr;
                 fn(k, st + (candidates.offsets[k] - row0) * m, row_scales, col_scale);
               }
             })
      .status();
}

absl::Status Reranker::Explain(const RerankQuery& query, const CandidateTokens& candidates,
                               std::vector<std::vector<TokenEvidence>>* out) const {
  ATTN_RETURN_IF_ERROR(CheckQuery(query, candidates));
  if (int8_tiles_) {
    std::vector<size_t> all(candidates.count);
    for (size_t k = 0; k < all.size(); ++k) all[k] = k;
    return ExplainInTiles(query, candidates, all, out);
  }
  out->assign(candidates.count, {});
  const uint32_t m = query.num_tokens;
  const float inv_tau = 1.f / query.temperature;
  return ForEachSegment(
      query, candidates,
      [&](size_t k, const float* st, const float* row_scales, const float* col_scale) {
        std::vector<uint32_t> argmax(m);
        std::vector<float> weight(m), contribution(m);
        ExplainSegment(st, m, candidates.rows[k], query.weights, query.mode, inv_tau, row_scales,
                       col_scale, argmax.data(), weight.data(), contribution.data());
        for (uint32_t i = 0; i < m; ++i) {
          (*out)[k].push_back({i, argmax[i], weight[i], contribution[i]});
        }
      });
}

absl::Status Reranker::AttentionMaps(const RerankQuery& query, const CandidateTokens& candidates,
                                     std::vector<std::vector<float>>* out,
                                     std::vector<std::vector<TokenEvidence>>* evidence) const {
  ATTN_RETURN_IF_ERROR(CheckQuery(query, candidates));
  if (int8_tiles_) {
    // The tiles' own similarities, as their scores had them.
    std::vector<size_t> all(candidates.count);
    for (size_t k = 0; k < all.size(); ++k) all[k] = k;
    return ExplainInTiles(query, candidates, all, evidence, out);
  }
  out->assign(candidates.count, {});
  if (evidence != nullptr) evidence->assign(candidates.count, {});
  const uint32_t m = query.num_tokens;
  const float inv_tau = 1.f / query.temperature;
  ATTN_RETURN_IF_ERROR(ForEachSegment(
      query, candidates,
      [&](size_t k, const float* st, const float* row_scales, const float* col_scale) {
        const uint32_t n = candidates.rows[k];
        (*out)[k].resize(size_t(m) * n);
        std::vector<uint32_t> argmax(m);
        std::vector<float> weight(m), contribution(m);
        AttentionExplainSegment(st, m, n, query.weights, query.mode, inv_tau, row_scales, col_scale,
                                (*out)[k].data(), argmax.data(), weight.data(),
                                contribution.data());
        if (evidence != nullptr) {
          for (uint32_t i = 0; i < m; ++i) {
            (*evidence)[k].push_back({i, argmax[i], weight[i], contribution[i]});
          }
        }
      }));
  return absl::OkStatus();
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
