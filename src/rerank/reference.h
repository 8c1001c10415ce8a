// The reference reranker: the scoring formulas of reranker.h written as
// plain loops in double precision. It is the oracle the tests hold the
// oneDNN reranker to; it is not used to serve queries.
#ifndef ATTNSEARCH_RERANK_REFERENCE_H_
#define ATTNSEARCH_RERANK_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "core/types.h"

namespace attnsearch {

// Score of one document (n x dim f32 rows) for a query (m x dim rows with
// weights w). mode is ATTENTION (temperature > 0) or MAXSIM.
double ReferenceScore(const float* query, uint32_t m, const float* weights, const float* doc,
                      uint32_t n, uint32_t dim, RerankMode mode, float temperature);

// The attention map behind that score: out (m x n, row-major) holds query
// token i's weight on document token j: softmax_j(s_ij / temperature) for
// ATTENTION, 1 at the row's first largest s_ij for MAXSIM.
std::vector<double> ReferenceAttention(const float* query, uint32_t m, const float* doc, uint32_t n,
                                       uint32_t dim, RerankMode mode, float temperature);

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_REFERENCE_H_
