// Int8 similarities computed in L1, for the reranker's per-document path:
// S_ji = Σ_k x_jk q_ik for a document's s8 rows x and the query's s8 tokens
// q, exact in int32, so a document's similarities never leave L1. Two
// kernels: AMX tiles (TDPBSSD, the query held in tiles), where
// AmxUsable(AmxKind::kInt8); and AVX-512 VNNI (VPDPBUSD, the query in
// registers), where Int8VnniUsable(). Internal to rerank/.
#ifndef ATTNSEARCH_RERANK_INT8_TILES_H_
#define ATTNSEARCH_RERANK_INT8_TILES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace attnsearch {

// The kernel that computes a document's int8 similarities in L1.
enum class Int8Kernel { kAmx, kVnni };

// True when the VNNI kernel may run here: the CPU has AVX-512 F, BW and
// VNNI, and oneDNN's effective ISA (which ONEDNN_MAX_CPU_ISA caps, so a
// test or an operator can run the oneDNN path instead) includes
// avx512_core_vnni. Decided once per process.
bool Int8VnniUsable();

// The query (m x d s8, row-major) laid out for `kernel`, with mp = 16 ·
// column_blocks tokens (zeros past m):
// - kAmx: TDPBSSD's second operand, per block of 16 query tokens and per
//   64 dimensions a 16 x 64-byte tile whose row r holds dimensions
//   4r .. 4r + 3 of each of the block's 16 tokens;
// - kVnni: VPDPBUSD's unsigned operand, per 4 dimensions g the bytes
//   q_i,4g .. q_i,4g+3 + 128 of each token i < mp, i.e. biased[(g·mp + i)·4
//   + t] = q_i,4g+t + 128.
// REQUIRES: d is a multiple of 64.
struct Int8QueryTiles {
  Int8QueryTiles(const int8_t* q8, uint32_t m, uint32_t d, Int8Kernel kernel);

  Int8Kernel kernel;
  uint32_t m = 0, d = 0;
  uint32_t column_blocks = 0;   // ceil(m / 16)
  uint32_t steps = 0;           // d / 64
  std::vector<int8_t> tiles;    // kAmx: [column block][step], 1 KiB each
  std::vector<uint8_t> biased;  // kVnni: [d / 4][mp][4]
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

// ScaleSums(rows · qᵀ, ...) for rows (n x d s8, `stride` bytes apart, any
// n) on AVX-512 VNNI, straight from the registers: st[j·m + i] and col_max
// as ScaleSums leaves them, to the bit. VPDPBUSD sums (q + 128) · x exactly
// in int32, and bias[j] (n of them, scratch) = 128 · Σ_k x_jk is taken off.
// REQUIRES: q.kernel == Int8Kernel::kVnni; Int8VnniUsable().
void Int8VnniScaled(const Int8QueryTiles& q, const int8_t* rows, size_t n, size_t stride,
                    const float* row_scale, const float* col_scale, int32_t* bias, float* st,
                    float* col_max);

// st[j·m + i] = float(sums[j·mp + i]) · row_scale[j] · col_scale[i] (a
// null scale array counts as ones; the products in that order, as
// ReduceSegment forms them) for rows j < n and tokens i < m, and col_max[i]
// raised to max_j st[j·m + i].
void ScaleSums(const int32_t* sums, size_t n, size_t mp, uint32_t m, const float* row_scale,
               const float* col_scale, float* st, float* col_max);

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_INT8_TILES_H_
