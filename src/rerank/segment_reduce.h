// The segmented softmax-and-reduce of the reranker: given the similarities
// of m query tokens against one document's n tokens (row i of m rows spaced
// `stride` floats apart), returns
//
//   ATTENTION  Σ_i w_i Σ_j softmax_j(s_ij · inv_tau) s_ij
//   MAXSIM     Σ_i w_i max_j s_ij
//
// Vectorised with AVX-512 when the CPU has it (chosen once at run time),
// with a portable fallback; both agree within float rounding.
#ifndef ATTNSEARCH_RERANK_SEGMENT_REDUCE_H_
#define ATTNSEARCH_RERANK_SEGMENT_REDUCE_H_

#include <cstddef>
#include <cstdint>

#include "core/types.h"

namespace attnsearch {

// With row_scale, row i's values are first multiplied by row_scale[i].
// REQUIRES: n >= 1; mode is ATTENTION or MAXSIM.
float ReduceSegment(const float* s, size_t stride, uint32_t m, uint32_t n, const float* w,
                    RerankMode mode, float inv_tau, const float* row_scale = nullptr);

// The portable version, always available (for tests).
float ReduceSegmentPortable(const float* s, size_t stride, uint32_t m, uint32_t n,
                            const float* w, RerankMode mode, float inv_tau,
                            const float* row_scale = nullptr);

// True when ReduceSegment runs the AVX-512 version on this CPU.
bool ReduceSegmentUsesAvx512();

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_SEGMENT_REDUCE_H_
