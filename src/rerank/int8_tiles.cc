#include "rerank/int8_tiles.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "dnnl.hpp"
#include "rerank/amx.h"

namespace attnsearch {

bool Int8VnniUsable() {
  static const bool usable = [] {
    const auto isa = unsigned(dnnl::get_effective_cpu_isa());
    const auto want = unsigned(dnnl::cpu_isa::avx512_core_vnni);
    return (isa & want) == want && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
  }();
  return usable;
}

Int8QueryTiles::Int8QueryTiles(const int8_t* q8, uint32_t m_in, uint32_t d_in, Int8Kernel kind)
    : kernel(kind), m(m_in), d(d_in), column_blocks((m_in + 15) / 16), steps(d_in / 64) {
  const size_t mp = size_t(column_blocks) * 16;
  if (kernel == Int8Kernel::kVnni) {
    biased.assign(size_t(d) * mp, 128);  // tokens past m: q = 0
    // An s8 value plus 128, as u8, is its bits with the top one flipped.
    for (uint32_t i = 0; i < m; ++i) {
      for (uint32_t g = 0; g < d / 4; ++g) {
        uint32_t four;
        std::memcpy(&four, q8 + size_t(i) * d + size_t(g) * 4, 4);
        four ^= 0x80808080u;
        std::memcpy(biased.data() + (size_t(g) * mp + i) * 4, &four, 4);
      }
    }
    return;
  }
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

namespace {

// acc += VPDPBUSD(u, s): per 32-bit lane, the four products of u's unsigned
// bytes and s's signed bytes, summed in 32 bits without saturation. In asm
// because GCC 12, given the intrinsic in an unrolled block, copies every
// accumulator to another register and back around it (1.5x the time).
__attribute__((target("avx512f,avx512vnni"))) inline void Dpbusd(__m512i& acc, __m512i u,
                                                                 __m512i s) {
  __asm__("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u), [s] "v"(s));
}

// Where the VNNI kernel writes: st (n x m f32) and col_max (mp), with the
// scales to apply (null counts as ones), and each row's bias 128 · Σ_k x_jk.
struct VnniOut {
  uint32_t m = 0;
  const float* row_scale = nullptr;
  const float* col_scale = nullptr;
  const int32_t* bias = nullptr;
  float* st = nullptr;
  float* col_max = nullptr;
};

// Rows x[0 .. kRows) against kBlocks column blocks of the query from block
// c0 (the biased layout at `qb`, tokens `mp` apart), rows `stride` bytes
// apart (kStride, when not 0: a constant, so that every row's bytes are
// one register plus a displacement away): kRows · kBlocks
// accumulators in registers, 16 query tokens each; for every 4 dimensions
// the query's bytes are loaded once and each row's 4 bytes broadcast. Then
// each sum, less its row's bias, is scaled as ScaleSums scales it, stored,
// and kept in the column maxima.
template <int kBlocks, int kRows, size_t kStride>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline void VnniBlock(
    const uint8_t* qb, size_t mp, uint32_t c0, const int8_t* x, size_t stride, uint32_t groups,
    const VnniOut& o) {
  if constexpr (kStride != 0) stride = kStride;
  __m512i acc[kRows][kBlocks];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < kBlocks; ++c) acc[r][c] = _mm512_setzero_si512();
  }
  for (uint32_t g = 0; g < groups; ++g) {
    __m512i q[kBlocks];
#pragma GCC unroll 4
    for (int c = 0; c < kBlocks; ++c) {
      q[c] = _mm512_loadu_si512(qb + (size_t(g) * mp + size_t(c0 + c) * 16) * 4);
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      int32_t four;
      std::memcpy(&four, x + size_t(r) * stride + size_t(g) * 4, 4);
      const __m512i b = _mm512_set1_epi32(four);
#pragma GCC unroll 4
      for (int c = 0; c < kBlocks; ++c) Dpbusd(acc[r][c], q[c], b);
    }
  }
  __mmask16 lanes[kBlocks];
  __m512 top[kBlocks];
#pragma GCC unroll 4
  for (int c = 0; c < kBlocks; ++c) {
    const uint32_t i = (c0 + c) * 16;
    lanes[c] = o.m - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (o.m - i)) - 1u);
    top[c] = _mm512_maskz_loadu_ps(lanes[c], o.col_max + i);
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    const __m512i bias = _mm512_set1_epi32(o.bias[r]);
#pragma GCC unroll 4
    for (int c = 0; c < kBlocks; ++c) {
      const uint32_t i = (c0 + c) * 16;
      __m512 v = _mm512_maskz_cvtepi32_ps(lanes[c], _mm512_sub_epi32(acc[r][c], bias));
      if (o.row_scale) v = _mm512_mul_ps(v, _mm512_set1_ps(o.row_scale[r]));
      if (o.col_scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(lanes[c], o.col_scale + i));
      _mm512_mask_storeu_ps(o.st + size_t(r) * o.m + i, lanes[c], v);
      top[c] = _mm512_mask_max_ps(top[c], lanes[c], top[c], v);
    }
  }
#pragma GCC unroll 4
  for (int c = 0; c < kBlocks; ++c) {
    _mm512_mask_storeu_ps(o.col_max + (c0 + c) * 16, lanes[c], top[c]);
  }
}

// All n rows against kBlocks column blocks from c0: as many rows at a time
// as the 32 vector registers hold accumulators for, then the rest in
// blocks of 8, 4, 2 and 1.
template <int kBlocks, size_t kStride>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void VnniColumns(
    const uint8_t* qb, size_t mp, uint32_t c0, const int8_t* x, size_t n, size_t stride,
    uint32_t groups, const VnniOut& o) {
  constexpr int kRows = kBlocks == 1 ? 16 : kBlocks == 2 ? 12 : kBlocks == 3 ? 8 : 6;
  size_t j = 0;
  const auto at = [&](size_t row) {
    VnniOut part = o;
    if (o.row_scale) part.row_scale += row;
    part.bias += row;
    part.st += row * o.m;
    return part;
  };
  for (; j + kRows <= n; j += kRows) {
    VnniBlock<kBlocks, kRows, kStride>(qb, mp, c0, x + j * stride, stride, groups, at(j));
  }
  const auto rest = [&]<int kPart>() {
    if constexpr (kPart < kRows) {
      if (n - j >= kPart) {
        VnniBlock<kBlocks, kPart, kStride>(qb, mp, c0, x + j * stride, stride, groups, at(j));
        j += kPart;
      }
    }
  };
  rest.template operator()<8>();
  rest.template operator()<4>();
  rest.template operator()<2>();
  rest.template operator()<1>();
}

// Every column block, at most 4 at a time.
template <size_t kStride>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void VnniAllColumns(
    const uint8_t* qb, size_t mp, uint32_t column_blocks, const int8_t* x, size_t n, size_t stride,
    uint32_t groups, const VnniOut& o) {
  for (uint32_t c0 = 0; c0 < column_blocks; c0 += 4) {
    switch (std::min<uint32_t>(4, column_blocks - c0)) {
      case 1:
        VnniColumns<1, kStride>(qb, mp, c0, x, n, stride, groups, o);
        break;
      case 2:
        VnniColumns<2, kStride>(qb, mp, c0, x, n, stride, groups, o);
        break;
      case 3:
        VnniColumns<3, kStride>(qb, mp, c0, x, n, stride, groups, o);
        break;
      default:
        VnniColumns<4, kStride>(qb, mp, c0, x, n, stride, groups, o);
    }
  }
}

// The 128-bit chunks of a and b added in pairs: [a0 + a1, a2 + a3, b0 + b1,
// b2 + b3].
__attribute__((target("avx512f"))) inline __m512i FoldChunks(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

// bias[j] = 128 · Σ_k x_jk for rows j < n of d bytes (d % 64 == 0), 16 rows
// at a time: each row's 16 partial sums (VPDPBUSD with ones), then the
// lanes of the 16 rows added in a tree of unpacks and shuffles, so row r's
// sum lands in lane r.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void RowBiases(const int8_t* x, size_t n,
                                                                      size_t stride, uint32_t d,
                                                                      int32_t* bias) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (size_t j0 = 0; j0 < n; j0 += 16) {
    const size_t rows = std::min<size_t>(16, n - j0);
    __m512i v[16];
    for (size_t r = 0; r < 16; ++r) {
      v[r] = _mm512_setzero_si512();
      if (r >= rows) continue;
      for (uint32_t k = 0; k < d; k += 64) {
        v[r] = _mm512_dpbusd_epi32(v[r], ones, _mm512_loadu_si512(x + (j0 + r) * stride + k));
      }
    }
    // Per 128-bit chunk: pairs of rows interleaved and added, then pairs of
    // pairs; u[i]'s chunk then holds rows 4i .. 4i+3's sums of its lanes.
    __m512i t[8], u[4];
    for (int i = 0; i < 8; ++i) {
      t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                              _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    }
    for (int i = 0; i < 4; ++i) {
      u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                              _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
    }
    // Then the four chunks: [u0 c0+c1, u0 c2+c3, u1 ..], and again.
    const __m512i sums = FoldChunks(FoldChunks(u[0], u[1]), FoldChunks(u[2], u[3]));
    _mm512_mask_storeu_epi32(bias + j0, __mmask16((1u << rows) - 1u), _mm512_slli_epi32(sums, 7));
  }
}

}  // namespace

__attribute__((target("avx512f,avx512bw,avx512vnni"))) void Int8VnniScaled(
    const Int8QueryTiles& q, const int8_t* rows, size_t n, size_t stride, const float* row_scale,
    const float* col_scale, int32_t* bias, float* st, float* col_max) {
  const size_t mp = size_t(q.column_blocks) * 16;
  const uint32_t groups = q.d / 4;
  // Σ_k (q_ik + 128) x_jk = S_ji + 128 Σ_k x_jk: the second term, per row.
  RowBiases(rows, n, stride, q.d, bias);
  const VnniOut o{q.m, row_scale, col_scale, bias, st, col_max};
  const uint8_t* qb = q.biased.data();
  switch (stride) {
    case 128:
      VnniAllColumns<128>(qb, mp, q.column_blocks, rows, n, stride, groups, o);
      break;
    case 256:
      VnniAllColumns<256>(qb, mp, q.column_blocks, rows, n, stride, groups, o);
      break;
    default:
      VnniAllColumns<0>(qb, mp, q.column_blocks, rows, n, stride, groups, o);
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
