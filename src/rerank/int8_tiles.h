// Int8 similarities in AMX tiles, for the reranker's per-document path:
// S_ji = Σ_k x_jk q_ik for a document's s8 rows x (16 at a time) and the
// query's s8 tokens q, exact in int32, computed by TDPBSSD with the query
// held in tiles so a document's similarities never leave L1. Internal to
// rerank/; run only where AmxUsable(AmxKind::kInt8).
#ifndef ATTNSEARCH_RERANK_INT8_TILES_H_
#define ATTNSEARCH_RERANK_INT8_TILES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace attnsearch {

// The query (m x d s8, row-major) as TDPBSSD's second operand: per block of
// 16 query tokens and per 64 dimensions, a 16 x 64-byte tile whose row r
// holds dimensions 4r .. 4r + 3 of each of the block's 16 tokens (zeros
// past m and d). REQUIRES: d is a multiple of 64.
struct Int8QueryTiles {
  Int8QueryTiles(const int8_t* q8, uint32_t m, uint32_t d);

  uint32_t m = 0, d = 0;
  uint32_t column_blocks = 0;  // ceil(m / 16)
  uint32_t steps = 0;          // d / 64
  std::vector<int8_t> tiles;   // [column block][step], 1 KiB each
};

// Sets up this thread's tiles for Int8TileSimilarities (LDTILECFG); pair
// with ReleaseInt8Tiles on the same thread before it runs other AMX code.
void ConfigureInt8Tiles();
void ReleaseInt8Tiles();

// out (blocks·16 x mp int32, row j = document row j, mp = 16·column_blocks)
// = rows (blocks·16 x d s8, rows `stride` bytes apart) · qᵀ, two blocks of
// 16 rows at a time. REQUIRES: blocks is even.
void Int8TileSimilarities(const Int8QueryTiles& q, const int8_t* rows, size_t blocks, size_t stride,
                          int32_t* out);

// st[j·m + i] = float(sums[j·mp + i]) · row_scale[j] · col_scale[i] (a
// null scale array counts as ones; the products in that order, as
// ReduceSegment forms them) for rows j < n and tokens i < m, and col_max[i]
// raised to max_j st[j·m + i].
void ScaleSums(const int32_t* sums, size_t n, size_t mp, uint32_t m, const float* row_scale,
               const float* col_scale, float* st, float* col_max);

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_INT8_TILES_H_
