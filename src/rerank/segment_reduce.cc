#include "rerank/segment_reduce.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace attnsearch {
namespace {

// e^x for x <= 0 (inputs below -87 give 0): x = k ln2 + r with |r| <= ln2/2,
// e^r by a degree-6 polynomial, then scaled by 2^k with vscalefps.
__attribute__((target("avx512f"))) inline __m512 Exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.3981999507e-3f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, k);
}

// Query tokens [i0, i0 + 16) (lanes beyond m masked off): returns their
// weighted contributions summed; with kExplain also stores, per query token,
// the argmax, the attention weight there and the contribution.
template <bool kExplain>
__attribute__((target("avx512f"))) float Block16(const float* st, uint32_t m, uint32_t n,
                                                 uint32_t i0, const float* w, RerankMode mode,
                                                 float inv_tau, const float* row_scale,
                                                 uint32_t* argmax, float* weight,
                                                 float* contribution) {
  const __mmask16 lanes = m - i0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (m - i0)) - 1u);
  const float* base = st + i0;
#define ATTN_ROW_(j)                                                             \
  (row_scale ? _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, base + size_t(j) * m), \
                             _mm512_set1_ps(row_scale[j]))                       \
             : _mm512_maskz_loadu_ps(lanes, base + size_t(j) * m))
  __m512 vmax = ATTN_ROW_(0);
  __m512i varg = _mm512_setzero_si512();
  for (uint32_t j = 1; j < n; ++j) {
    const __m512 v = ATTN_ROW_(j);
    if constexpr (kExplain) {
      const __mmask16 better = _mm512_cmp_ps_mask(v, vmax, _CMP_GT_OQ);
      varg = _mm512_mask_mov_epi32(varg, better, _mm512_set1_epi32(int(j)));
    }
    vmax = _mm512_max_ps(vmax, v);
  }
  const __m512 vw = _mm512_maskz_loadu_ps(lanes, w + i0);
  __m512 vweight = _mm512_set1_ps(1.f), vcontrib;
  if (mode == RerankMode::kMaxSim) {
    vcontrib = _mm512_mul_ps(vw, vmax);
  } else {
    const __m512 vtau = _mm512_set1_ps(inv_tau);
    __m512 z = _mm512_setzero_ps(), num = _mm512_setzero_ps();
    for (uint32_t j = 0; j < n; ++j) {
      const __m512 v = ATTN_ROW_(j);
      const __m512 e = Exp512(_mm512_mul_ps(_mm512_sub_ps(v, vmax), vtau));
      z = _mm512_add_ps(z, e);
      num = _mm512_fmadd_ps(e, v, num);
    }
    // Masked-off lanes have z = n (exp(0)), num = 0 and weight 0.
    vweight = _mm512_div_ps(_mm512_set1_ps(1.f), z);  // exp(0) / z at the argmax
    vcontrib = _mm512_mul_ps(vw, _mm512_div_ps(num, z));
  }
#undef ATTN_ROW_
  if constexpr (kExplain) {
    _mm512_mask_storeu_epi32(argmax + i0, lanes, varg);
    _mm512_mask_storeu_ps(weight + i0, lanes, vweight);
    _mm512_mask_storeu_ps(contribution + i0, lanes, vcontrib);
  }
  return _mm512_reduce_add_ps(vcontrib);
}

__attribute__((target("avx512f"))) float ReduceAvx512(const float* st, uint32_t m, uint32_t n,
                                                      const float* w, RerankMode mode,
                                                      float inv_tau, const float* row_scale) {
  float score = 0.f;
  for (uint32_t i0 = 0; i0 < m; i0 += 16) {
    score += Block16<false>(st, m, n, i0, w, mode, inv_tau, row_scale, nullptr, nullptr, nullptr);
  }
  return score;
}

const bool kHasAvx512 = __builtin_cpu_supports("avx512f");

}  // namespace

void ExplainSegment(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                    float inv_tau, const float* row_scale, uint32_t* argmax, float* weight,
                    float* contribution) {
  if (kHasAvx512) {
    for (uint32_t i0 = 0; i0 < m; i0 += 16) {
      Block16<true>(st, m, n, i0, w, mode, inv_tau, row_scale, argmax, weight, contribution);
    }
    return;
  }
  for (uint32_t i = 0; i < m; ++i) {
    auto s = [&](uint32_t j) { return st[size_t(j) * m + i] * (row_scale ? row_scale[j] : 1.f); };
    uint32_t arg = 0;
    float best = s(0);
    for (uint32_t j = 1; j < n; ++j) {
      if (s(j) > best) {
        best = s(j);
        arg = j;
      }
    }
    argmax[i] = arg;
    weight[i] = 1.f;
    contribution[i] = w[i] * best;
    if (mode == RerankMode::kAttention) {
      float z = 0.f, num = 0.f;
      for (uint32_t j = 0; j < n; ++j) {
        const float e = std::exp((s(j) - best) * inv_tau);
        z += e;
        num += e * s(j);
      }
      weight[i] = 1.f / z;
      contribution[i] = w[i] * num / z;
    }
  }
}

float ReduceSegmentPortable(const float* st, uint32_t m, uint32_t n, const float* w,
                            RerankMode mode, float inv_tau, const float* row_scale) {
  float score = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    auto s = [&](uint32_t j) { return st[size_t(j) * m + i] * (row_scale ? row_scale[j] : 1.f); };
    float best = s(0);
    for (uint32_t j = 1; j < n; ++j) best = std::max(best, s(j));
    float contribution = best;
    if (mode == RerankMode::kAttention) {
      float z = 0.f, num = 0.f;
      for (uint32_t j = 0; j < n; ++j) {
        const float v = s(j);
        const float e = std::exp((v - best) * inv_tau);
        z += e;
        num += e * v;
      }
      contribution = num / z;
    }
    score += w[i] * contribution;
  }
  return score;
}

float ReduceSegment(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                    float inv_tau, const float* row_scale) {
  if (kHasAvx512) return ReduceAvx512(st, m, n, w, mode, inv_tau, row_scale);
  return ReduceSegmentPortable(st, m, n, w, mode, inv_tau, row_scale);
}

bool ReduceSegmentUsesAvx512() { return kHasAvx512; }

}  // namespace attnsearch
