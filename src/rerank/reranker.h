// Reranker: the cross-attention scorer of DESIGN.md, on oneDNN's matmul.
//
// For query tokens Q (m x d, unit rows, weights w) and a document's tokens D
// (n x d, unit rows), with S = Q Dᵀ:
//
//   ATTENTION  score = Σ_i w_i Σ_j softmax_j(S_ij / τ) S_ij
//   MAXSIM     score = Σ_i w_i max_j S_ij          (the τ → 0 limit)
//
// All candidates' token matrices lie back to back in one buffer; matmuls
// compute S for all of them (in chunks that bound memory), and a segmented
// softmax-and-reduce turns each document's columns into its score. The
// matmuls have fixed shapes (windows of 2,048 token rows, then powers of two
// down to 16, the last piece zero-padded), so oneDNN picks the CPU's best
// kernel (AMX, or AVX-512 with VNNI/bf16); their primitives are created on
// first use and kept. A document's score is reduced as soon as its rows are
// done, while they are in cache. bf16 storage runs the bf16 matmul with f32
// accumulation; int8 storage (one scale per token) runs the s8 matmul with
// the query quantized to s8 (one scale per query token) and both scales
// applied to the f32 output; the softmax and the sums are f32. Where the
// CPU lacks the bf16 matmul or VNNI (AVX2 only), those rows are widened to
// f32 a piece at a time and multiplied in f32, with the same products. On
// machines with AMX-INT8 or AVX-512 VNNI, int8 skips oneDNN: each
// candidate's exact int32 sums come from AMX tiles (TDPBSSD) or VNNI
// registers (VPDPBUSD) and are reduced in L1 (RerankerOptions::
// tile_kernel), with the same scores.
//
// Thread safety: a Reranker is immutable after Create; Score and Explain may
// run concurrently from any number of threads.
#ifndef ATTNSEARCH_RERANK_RERANKER_H_
#define ATTNSEARCH_RERANK_RERANKER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/core_budget.h"
#include "core/types.h"

namespace attnsearch {

struct RerankerOptions {
  // Most document token rows in one chunk (one similarity buffer); larger
  // inputs are split at candidate boundaries. Bounds the score buffer to
  // m x max_rows_per_gemm floats. Default: 32768.
  size_t max_rows_per_gemm = 32768;
  // The cores Score calls share (see core_budget.h): a call runs on its
  // calling thread, which is taken to hold a core of the budget already (as
  // the server's workers do), plus as many extra threads as the budget has
  // free cores. Borrowed; must outlive the Reranker. Default: null, each
  // call uses up to max_threads.
  CoreBudget* cores = nullptr;
  // Most threads one Score call uses. Default: 0, the number of cores.
  int max_threads = 0;
  // int8 storage, where the CPU has AMX-INT8 or AVX-512 VNNI (and
  // ONEDNN_MAX_CPU_ISA, if set, allows an AMX level, or VNNI's
  // avx512_core_vnni) and dim is a multiple of 64: Score computes each
  // candidate's similarities in AMX tiles (TDPBSSD) or in AVX-512 registers
  // (VPDPBUSD), exact int32 sums, and reduces them while they are in L1,
  // instead of writing every candidate's similarities out through oneDNN's
  // matmul pieces. The scores are the same to the bit. Default: true.
  bool tile_kernel = true;
};

// Default attention temperature τ when a request gives none.
inline constexpr float kDefaultTemperature = 0.1f;

struct RerankQuery {
  const float* tokens = nullptr;  // num_tokens x dim, unit rows (f32)
  uint32_t num_tokens = 0;
  const float* weights = nullptr;  // num_tokens weights
  RerankMode mode = RerankMode::kAttention;
  float temperature = kDefaultTemperature;  // > 0; ATTENTION only
};

// Candidates' token matrices, back to back in the reranker's dtype:
// candidate c has rows[c] rows starting at row offsets[c] of `data` (and, for
// int8, of `scales`: one scale per row, value = element * scale).
// Offsets must be non-decreasing and contiguous (offsets[c+1] = offsets[c] +
// rows[c]). A candidate with 0 rows scores -infinity.
struct CandidateTokens {
  const void* data = nullptr;
  size_t total_rows = 0;
  const uint32_t* rows = nullptr;
  const size_t* offsets = nullptr;
  size_t count = 0;
  const float* scales = nullptr;  // int8 only; null: every row's scale is 1
  // When set, the rows are not read from `data` but made on demand:
  // (*rows_from)(first, n, out) writes rows [first, first + n) in the
  // reranker's dtype to `out`. Called from the call's threads, right before
  // the rows are multiplied (so they are made in cache, e.g. decoded from
  // compressed codes): a piece of at most 2,048 rows at a time, or on the
  // int8 tile path one candidate at a time.
  const std::function<void(size_t first, size_t n, void* out)>* rows_from = nullptr;
  // With rows_from: where candidate c's rows already lie, back to back in
  // the reranker's dtype (e.g. in a token arena), for the paths that take
  // one candidate at a time (the int8 tile path), which then read them in
  // place instead of copying them out.
  const char* const* sources = nullptr;
};

// Why a document scored what it did, for one query token.
struct TokenEvidence {
  uint32_t query_token = 0;
  uint32_t doc_token = 0;    // the document token with the highest weight
  float weight = 0.f;        // its attention weight (1 for MAXSIM)
  float contribution = 0.f;  // w_i * (Σ_j A_ij S_ij); these sum to the score
};

// The similarities a Score call computed, kept for explaining some of its
// candidates afterwards without another matmul (Reranker::ExplainScored).
// Reuse one per thread: its buffer is exchanged with Score's, not copied.
struct ScoredSimilarities {
  std::vector<float> st;  // Sᵀ of every candidate, total_rows x m
  bool valid = false;     // set by Score when every candidate fit one matmul
};

class Reranker {
 public:
  // A reranker for `dim`-dimensional tokens stored as `dtype`.
  static absl::StatusOr<std::unique_ptr<Reranker>> Create(uint32_t dim, TokenDtype dtype,
                                                          const RerankerOptions& options);
  ~Reranker();

  // scores[c] for every candidate (candidates.count values).
  // REQUIRES: query.mode is ATTENTION or MAXSIM.
  absl::Status Score(const RerankQuery& query, const CandidateTokens& candidates,
                     float* scores) const;
  // The same, keeping the similarities in *keep for ExplainScored when all
  // candidates fit one matmul (max_rows_per_gemm) and the tiles are not in
  // use; keep->valid says so.
  absl::Status Score(const RerankQuery& query, const CandidateTokens& candidates, float* scores,
                     ScoredSimilarities* keep) const;

  // The evidence for candidates[which[i]] (out->size() == which.size()), as
  // Explain gives it, from the similarities a Score call with the same query
  // and candidates kept; when it kept none (keep.valid false) their rows are
  // gathered and explained with one more matmul.
  absl::Status ExplainScored(const RerankQuery& query, const CandidateTokens& candidates,
                             const ScoredSimilarities& keep, const std::vector<size_t>& which,
                             std::vector<std::vector<TokenEvidence>>* out) const;

  // The evidence for each candidate: one entry per query token, from the same
  // matmul and the same similarities as Score, so the contributions add up
  // to Score's result within float rounding. Meant for the few hits of a
  // query (one matmul over their tokens).
  absl::Status Explain(const RerankQuery& query, const CandidateTokens& candidates,
                       std::vector<std::vector<TokenEvidence>>* out) const;
  // The same for one document (rows x dim in the reranker's dtype, with its
  // row scales for int8).
  absl::Status Explain(const RerankQuery& query, const void* doc_tokens, uint32_t rows,
                       std::vector<TokenEvidence>* out, const float* row_scales = nullptr) const;

  // Per candidate, the attention weights of its tokens for every query
  // token: (*out)[k] holds m x rows[k] values, row-major
  // (AttentionExplainSegment: softmax_j(S_ij / τ) for ATTENTION, one-hot at
  // the row's best for MAXSIM), from the same matmul and similarities as
  // Score and Explain. With `evidence`, also what Explain gives, from the
  // same pass. Meant for a query's few hits. REQUIRES: ATTENTION or MAXSIM.
  absl::Status AttentionMaps(const RerankQuery& query, const CandidateTokens& candidates,
                             std::vector<std::vector<float>>* out,
                             std::vector<std::vector<TokenEvidence>>* evidence = nullptr) const;
  // The maps (and with `evidence` the evidence) of candidates[which[i]]
  // (out->size() == which.size()), as AttentionMaps gives them, from the
  // similarities a Score call with the same query and candidates kept (no
  // matmul); when it kept none their rows are gathered and mapped with one
  // more matmul.
  absl::Status AttentionMapsScored(
      const RerankQuery& query, const CandidateTokens& candidates, const ScoredSimilarities& keep,
      const std::vector<size_t>& which, std::vector<std::vector<float>>* out,
      std::vector<std::vector<TokenEvidence>>* evidence = nullptr) const;

  // The kernel oneDNN chose for this reranker's matmul of a full window of
  // document tokens against `query_tokens` query tokens, as oneDNN names it
  // (e.g. "brg:avx512_core_amx_bf16"; "gemm:jit" is its generic kernel).
  absl::StatusOr<std::string> MatmulKernel(uint32_t query_tokens) const;

  // True when Score and Explain run on AMX tiles or AVX-512 VNNI (int8,
  // RerankerOptions::tile_kernel, on a machine that has one): Score keeps no
  // similarities for ExplainScored, which computes the hits' again.
  bool tile_kernel() const { return int8_tiles_; }
  // Which one runs: "amx tiles (TDPBSSD)", "avx512 vnni (VPDPBUSD)", or ""
  // when tile_kernel() is false.
  std::string TileKernelName() const;

  // True when the rows are widened to f32 for an f32 matmul: bf16 where
  // oneDNN has no bf16 matmul (before AVX-512), int8 without VNNI (where
  // its 16-bit pair sums would saturate). Scores are those of the same
  // values; only the speed differs.
  bool widened() const;

  uint32_t dim() const { return dim_; }
  TokenDtype dtype() const { return dtype_; }

 private:
  struct Rep;
  absl::Status CheckQuery(const RerankQuery& query, const CandidateTokens& candidates) const;
  // Swaps this thread's Sᵀ buffer with *keep (after the last chunk).
  static void KeepSimilarities(std::vector<float>* keep);
  // Computes Sᵀ for chunks of whole candidates (at most max_rows_per_gemm
  // rows each, in one buffer per chunk) with fixed-shape matmuls, and calls
  // fn(first, last, first row of the chunk, Sᵀ of the chunk, the query's
  // column scales (int8) or null) for groups of
  // candidates whose rows are done; groups are disjoint and fn may run on
  // several threads at once. Returns the number of chunks.
  absl::StatusOr<size_t> ForEachChunk(
      const RerankQuery& query, const CandidateTokens& candidates,
      const std::function<void(size_t first, size_t last, size_t row0, const float* st,
                               const float* col_scale)>& fn) const;
  // ForEachChunk per candidate with rows: fn(k, Sᵀ of candidate k (rows[k]
  // x m), its row scales (int8) or null, the query's column scales or null).
  absl::Status ForEachSegment(
      const RerankQuery& query, const CandidateTokens& candidates,
      const std::function<void(size_t k, const float* st, const float* row_scales,
                               const float* col_scale)>& fn) const;
  // Score for int8 rows on AMX tiles or AVX-512 VNNI, one candidate at a
  // time (see RerankerOptions::tile_kernel).
  absl::Status ScoreInTiles(const RerankQuery& query, const CandidateTokens& candidates,
                            float* scores) const;
  // ExplainScored and AttentionMapsScored: the evidence (when `evidence` is
  // set) and the maps (when `maps` is) of candidates[which[i]].
  absl::Status FromScored(const RerankQuery& query, const CandidateTokens& candidates,
                          const ScoredSimilarities& keep, const std::vector<size_t>& which,
                          std::vector<std::vector<TokenEvidence>>* evidence,
                          std::vector<std::vector<float>>* maps) const;
  // The evidence (when `out` is set) and the attention maps (when `maps`
  // is) of candidates[which[i]] from the same tiles, in one pass.
  absl::Status ExplainInTiles(const RerankQuery& query, const CandidateTokens& candidates,
                              const std::vector<size_t>& which,
                              std::vector<std::vector<TokenEvidence>>* out,
                              std::vector<std::vector<float>>* maps = nullptr) const;
  // out (rows x m) = rows_data (rows x dim) · queryᵀ with the fixed-shape
  // matmul of `rows` rows; only the first `valid` rows of rows_data are
  // read (the rest count as zeros) and written.
  absl::Status MultiplyPiece(const void* query_operand, uint32_t m, const char* rows_data,
                             size_t rows, size_t valid, float* out) const;
  // The matmul's operands: dtype_, or f32 where the rows are widened (a
  // CPU without a bf16 matmul, or int8 without VNNI; see Rep).
  TokenDtype MatmulDtype() const;
  Reranker(std::unique_ptr<Rep> rep, uint32_t dim, TokenDtype dtype,
           const RerankerOptions& options);

  std::unique_ptr<Rep> rep_;
  const uint32_t dim_;
  const TokenDtype dtype_;
  const RerankerOptions options_;
  // ScoreInTiles runs Score (tile_kernel, int8, AMX-INT8 or AVX-512 VNNI,
  // dim % 64 == 0).
  const bool int8_tiles_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_RERANKER_H_
