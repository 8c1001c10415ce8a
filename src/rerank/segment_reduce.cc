#include "rerank/segment_reduce.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace attnsearch {
namespace {

float RowPortable(const float* s, uint32_t n, RerankMode mode, float inv_tau, float scale) {
  float best = s[0] * scale;
  for (uint32_t j = 1; j < n; ++j) best = std::max(best, s[j] * scale);
  if (mode == RerankMode::kMaxSim) return best;
  float z = 0.f, num = 0.f;
  for (uint32_t j = 0; j < n; ++j) {
    const float v = s[j] * scale;
    const float e = std::exp((v - best) * inv_tau);
    z += e;
    num += e * v;
  }
  return num / z;
}

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

__attribute__((target("avx512f"))) float RowAvx512(const float* s, uint32_t n,
                                                   RerankMode mode, float inv_tau,
                                                   float scale) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 vmax = neg_inf;
  uint32_t j = 0;
  for (; j + 16 <= n; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(s + j));
  const __mmask16 tail = __mmask16((1u << (n - j)) - 1u);
  if (j < n) vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(neg_inf, tail, s + j));
  // scale > 0, so the largest value stays the largest.
  const float best = _mm512_reduce_max_ps(vmax) * scale;
  if (mode == RerankMode::kMaxSim) return best;
  const __m512 vbest = _mm512_set1_ps(best), vtau = _mm512_set1_ps(inv_tau);
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 z = _mm512_setzero_ps(), num = _mm512_setzero_ps();
  for (j = 0; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(s + j), vscale);
    const __m512 e = Exp512(_mm512_mul_ps(_mm512_sub_ps(v, vbest), vtau));
    z = _mm512_add_ps(z, e);
    num = _mm512_fmadd_ps(e, v, num);
  }
  if (j < n) {
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + j), vscale);
    const __m512 e = _mm512_maskz_mov_ps(
        tail, Exp512(_mm512_mul_ps(_mm512_sub_ps(v, vbest), vtau)));
    z = _mm512_add_ps(z, e);
    num = _mm512_fmadd_ps(e, v, num);
  }
  return _mm512_reduce_add_ps(num) / _mm512_reduce_add_ps(z);
}

__attribute__((target("avx512f"))) float ReduceAvx512(const float* s, size_t stride,
                                                      uint32_t m, uint32_t n, const float* w,
                                                      RerankMode mode, float inv_tau,
                                                      const float* row_scale) {
  float score = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    score += w[i] * RowAvx512(s + i * stride, n, mode, inv_tau, row_scale ? row_scale[i] : 1.f);
  }
  return score;
}

const bool kHasAvx512 = __builtin_cpu_supports("avx512f");

}  // namespace

float ReduceSegmentPortable(const float* s, size_t stride, uint32_t m, uint32_t n,
                            const float* w, RerankMode mode, float inv_tau,
                            const float* row_scale) {
  float score = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    score += w[i] * RowPortable(s + i * stride, n, mode, inv_tau, row_scale ? row_scale[i] : 1.f);
  }
  return score;
}

float ReduceSegment(const float* s, size_t stride, uint32_t m, uint32_t n, const float* w,
                    RerankMode mode, float inv_tau, const float* row_scale) {
  if (kHasAvx512) return ReduceAvx512(s, stride, m, n, w, mode, inv_tau, row_scale);
  return ReduceSegmentPortable(s, stride, m, n, w, mode, inv_tau, row_scale);
}

bool ReduceSegmentUsesAvx512() { return kHasAvx512; }

}  // namespace attnsearch
