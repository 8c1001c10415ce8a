// The segmented softmax-and-reduce of the reranker. The matmul leaves, for
// one document of n tokens, its block of Sᵀ: n rows (document tokens) of m
// values (query tokens), row after row. This returns
//
//   ATTENTION  Σ_i w_i Σ_j softmax_j(s_ij · inv_tau) s_ij
//   MAXSIM     Σ_i w_i max_j s_ij
//
// where s_ij = st[j·m + i] · row_scale[j] · col_scale[i] (a null scale
// array counts as ones). The
// query tokens lie across the vector lanes, so both passes stream the block
// once with contiguous loads. Vectorised with AVX-512 when the CPU has it,
// else with AVX2 and FMA (chosen once at run time), with a portable
// fallback; all agree within float rounding.
#ifndef ATTNSEARCH_RERANK_SEGMENT_REDUCE_H_
#define ATTNSEARCH_RERANK_SEGMENT_REDUCE_H_

#include <cstddef>
#include <cstdint>

#include "core/types.h"

namespace attnsearch {

// REQUIRES: n >= 1, m >= 1; mode is ATTENTION or MAXSIM; row scales > 0.
float ReduceSegment(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                    float inv_tau, const float* row_scale = nullptr,
                    const float* col_scale = nullptr);

// ReduceSegment(st, m, n, w, mode, inv_tau) given col_max[i] = max_j
// st[j·m + i] (the scales already applied): the max pass is skipped, and the
// result is ReduceSegment's to the bit. REQUIRES: ReduceSegmentUsesAvx512().
float ReduceSegmentWithMax(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                           float inv_tau, const float* col_max);

// The AVX2 version (with FMA), used where AVX-512 is missing; REQUIRES:
// ReduceSegmentHasAvx2() (for tests).
float ReduceSegmentAvx2(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                        float inv_tau, const float* row_scale = nullptr,
                        const float* col_scale = nullptr);
bool ReduceSegmentHasAvx2();

// The portable version, always available (for tests).
float ReduceSegmentPortable(const float* st, uint32_t m, uint32_t n, const float* w,
                            RerankMode mode, float inv_tau, const float* row_scale = nullptr,
                            const float* col_scale = nullptr);

// Per query token i (m of them): the document token j with the largest
// s_ij, its attention weight (1 for MAXSIM) and the token's contribution
// w_i · (Σ_j softmax_j(s_ij · inv_tau) s_ij, or max_j s_ij). The
// contributions sum to ReduceSegment's result. Arrays of m values.
void ExplainSegment(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                    float inv_tau, const float* row_scale, const float* col_scale, uint32_t* argmax,
                    float* weight, float* contribution);

// ExplainSegment, and with it the attention map of the document:
// out[i·n + j] (m x n values) is softmax_j(s_ij · inv_tau) for ATTENTION
// (the exponentials of the same pass, so the map's weight at row i's argmax
// is weight[i]), and for MAXSIM 1 at each row's first largest s_ij and 0
// elsewhere (the vanishing-temperature limit). The evidence is
// ExplainSegment's to the bit; with AVX-512 the exponentials are
// ReduceSegment's vectorised 2^y (relative error 2.4e-7 against std::exp).
void AttentionExplainSegment(const float* st, uint32_t m, uint32_t n, const float* w,
                             RerankMode mode, float inv_tau, const float* row_scale,
                             const float* col_scale, float* out, uint32_t* argmax, float* weight,
                             float* contribution);

// True when ReduceSegment runs the AVX-512 version on this CPU.
bool ReduceSegmentUsesAvx512();

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_SEGMENT_REDUCE_H_
