#include "rerank/int8_tiles.h"

#include <immintrin.h>

#include "rerank/amx.h"

namespace attnsearch {

Int8QueryTiles::Int8QueryTiles(const int8_t* q8, uint32_t m_in, uint32_t d_in)
    : m(m_in), d(d_in), column_blocks((m_in + 15) / 16), steps(d_in / 64) {
  tiles.assign(size_t(column_blocks) * steps * 1024, 0);
  for (uint32_t i = 0; i < m; ++i) {
    const uint32_t cb = i / 16, c = i % 16;
    for (uint32_t k = 0; k < d; ++k) {
      const uint32_t s = k / 64, r = (k % 64) / 4;
      tiles[(size_t(cb) * steps + s) * 1024 + r * 64 + c * 4 + k % 4] = q8[size_t(i) * d + k];
    }
  }
}

__attribute__((target("amx-tile"))) void ConfigureInt8Tiles() { _tile_loadconfig(&kAmxTileConfig); }

__attribute__((target("amx-tile"))) void ReleaseInt8Tiles() { _tile_release(); }

// Two blocks of 16 rows at a time, so four accumulators (tiles 0 to 3) run
// side by side instead of two waiting on one another: tiles 4 and 5 hold
// the two blocks' dimensions of a step, tiles 6 and 7 the query's.
__attribute__((target("amx-tile,amx-int8"))) void Int8TileSimilarities(const Int8QueryTiles& q,
                                                                       const int8_t* rows,
                                                                       size_t blocks, size_t stride,
                                                                       int32_t* out) {
  const size_t mp = size_t(q.column_blocks) * 16;
  const size_t out_stride = mp * sizeof(int32_t);
  for (size_t rb = 0; rb + 1 < blocks; rb += 2) {
    const int8_t* a0 = rows + rb * 16 * stride;
    const int8_t* a1 = a0 + 16 * stride;
    int32_t* c0 = out + rb * 16 * mp;
    int32_t* c1 = c0 + 16 * mp;
    uint32_t cb = 0;
    for (; cb + 1 < q.column_blocks; cb += 2) {
      const int8_t* b0 = q.tiles.data() + size_t(cb) * q.steps * 1024;
      const int8_t* b1 = b0 + size_t(q.steps) * 1024;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (uint32_t s = 0; s < q.steps; ++s) {
        _tile_loadd(4, a0 + s * 64, stride);
        _tile_loadd(5, a1 + s * 64, stride);
        _tile_loadd(6, b0 + s * 1024, 64);
        _tile_loadd(7, b1 + s * 1024, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
      }
      _tile_stored(0, c0 + cb * 16, out_stride);
      _tile_stored(1, c0 + cb * 16 + 16, out_stride);
      _tile_stored(2, c1 + cb * 16, out_stride);
      _tile_stored(3, c1 + cb * 16 + 16, out_stride);
    }
    // An odd last block of query tokens, on two accumulators. (Padding the
    // query with zeros to pairs of blocks instead, for one loop, measured
    // 235 against 210-216 us at m = 32 in the rerank bench, where this
    // branch never runs.)
    if (cb < q.column_blocks) {
      const int8_t* b0 = q.tiles.data() + size_t(cb) * q.steps * 1024;
      _tile_zero(0);
      _tile_zero(2);
      for (uint32_t s = 0; s < q.steps; ++s) {
        _tile_loadd(4, a0 + s * 64, stride);
        _tile_loadd(5, a1 + s * 64, stride);
        _tile_loadd(6, b0 + s * 1024, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(2, 5, 6);
      }
      _tile_stored(0, c0 + cb * 16, out_stride);
      _tile_stored(2, c1 + cb * 16, out_stride);
    }
  }
}

// Column block after column block, so each block's maximum stays in a
// register; the sums of a document are in L1.
__attribute__((target("avx512f"))) void ScaleSums(const int32_t* sums, size_t n, size_t mp,
                                                  uint32_t m, const float* row_scale,
                                                  const float* col_scale, float* st,
                                                  float* col_max) {
  for (uint32_t i = 0; i < m; i += 16) {
    const __mmask16 lanes = m - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (m - i)) - 1u);
    const __m512 cs = col_scale ? _mm512_maskz_loadu_ps(lanes, col_scale + i) : _mm512_set1_ps(1.f);
    __m512 top = _mm512_maskz_loadu_ps(lanes, col_max + i);
    for (size_t j = 0; j < n; ++j) {
      __m512 v = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(lanes, sums + j * mp + i));
      if (row_scale) v = _mm512_mul_ps(v, _mm512_set1_ps(row_scale[j]));
      if (col_scale) v = _mm512_mul_ps(v, cs);
      _mm512_mask_storeu_ps(st + j * m + i, lanes, v);
      top = _mm512_max_ps(top, v);
    }
    _mm512_mask_storeu_ps(col_max + i, lanes, top);
  }
}

}  // namespace attnsearch
