#include "rerank/segment_reduce.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace attnsearch {
namespace {

// 2^y for y <= 0 (y = (x - max) / τ · log2 e, so 2^y = e^((x - max) / τ)):
// y = k + f with k = round(y) and |f| <= 1/2, 2^f by a degree-5 polynomial
// (relative error 2.4e-7, fitted for the least largest relative error on
// [-1/2, 1/2]), then scaled by 2^k with vscalefps, which gives 0 below the
// smallest float. Six FMAs and three more instructions for 16 values.
constexpr float kLog2e = 1.44269504088896341f;
__attribute__((target("avx512f,avx512dq"))) inline __m512 Pow2(__m512 y) {
  // y − k by VREDUCEPS: 0 (not NaN) for y = −inf, whose 2^k is then 0.
  const __m512 k = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_reduce_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 p = _mm512_set1_ps(1.327647129073739e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675540961325169e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550713092088699e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022120237350464e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469440460205e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001192092896f));
  return _mm512_scalef_ps(p, k);
}

// Row j's 16 values at p (masked to `lanes`), times its row scale and the
// column scales, if any.
__attribute__((target("avx512f,avx512dq"))) inline __m512 LoadRow(const float* p, __mmask16 lanes,
                                                                  const float* row_scale,
                                                                  uint32_t j,
                                                                  const __m512* col_scale) {
  __m512 x = _mm512_maskz_loadu_ps(lanes, p);
  if (row_scale) x = _mm512_mul_ps(x, _mm512_set1_ps(row_scale[j]));
  return col_scale ? _mm512_mul_ps(x, *col_scale) : x;
}

// Query tokens [i0, i0 + 16) (lanes beyond m masked off): returns their
// weighted contributions summed; with kExplain also stores, per query token,
// the argmax, the attention weight there and the contribution; with `exps`
// (ATTENTION only) also each row j's 16 exponentials at exps[16·j], which
// times the weight at the argmax (1/z) are the attention weights.
template <bool kExplain>
__attribute__((target("avx512f,avx512dq"))) float Block16(
    const float* st, uint32_t m, uint32_t n, uint32_t i0, const float* w, RerankMode mode,
    float inv_tau, const float* row_scale, const float* col_scale, uint32_t* argmax, float* weight,
    float* contribution, float* exps = nullptr) {
  const __mmask16 lanes = m - i0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (m - i0)) - 1u);
  const float* base = st + i0;
  const __m512 cs = col_scale ? _mm512_maskz_loadu_ps(lanes, col_scale + i0) : _mm512_set1_ps(1.f);
#define ATTN_ROW_(j) LoadRow(base + size_t(j) * m, lanes, row_scale, j, col_scale ? &cs : nullptr)
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
    const __m512 vtau = _mm512_set1_ps(inv_tau * kLog2e);
    __m512 z = _mm512_setzero_ps(), num = _mm512_setzero_ps();
    for (uint32_t j = 0; j < n; ++j) {
      const __m512 v = ATTN_ROW_(j);
      const __m512 e = Pow2(_mm512_mul_ps(_mm512_sub_ps(v, vmax), vtau));
      if (exps != nullptr) _mm512_storeu_ps(exps + size_t(j) * 16, e);
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

// The score contributions of query tokens [i0, i0 + 16·V) (lanes beyond m
// masked off), V vectors per row in one pass: V independent chains, and
// two rows at a time, so neither the max nor the sums wait on one another.
// With given_max (the tokens' maxima, scales applied and none given) the
// max pass is skipped.
template <int V>
__attribute__((target("avx512f,avx512dq"))) float ReduceLanes(const float* st, uint32_t m,
                                                              uint32_t n, uint32_t i0,
                                                              const float* w, RerankMode mode,
                                                              float inv_tau, const float* row_scale,
                                                              const float* col_scale,
                                                              const float* given_max = nullptr) {
  __mmask16 lanes[V];
  for (int v = 0; v < V; ++v) {
    const int left = int(m) - int(i0) - 16 * v;
    lanes[v] = left >= 16  ? __mmask16(0xffff)
               : left <= 0 ? __mmask16(0)
                           : __mmask16((1u << left) - 1u);
  }
  const float* base = st + i0;
  __m512 cs[V];
  for (int v = 0; v < V; ++v) {
    cs[v] =
        col_scale ? _mm512_maskz_loadu_ps(lanes[v], col_scale + i0 + 16 * v) : _mm512_set1_ps(1.f);
  }
#define row(j, v) \
  LoadRow(base + size_t(j) * m + 16 * (v), lanes[v], row_scale, j, col_scale ? &cs[v] : nullptr)
  __m512 a[V], b[V];
  uint32_t j = 1;
  if (given_max != nullptr) {
    for (int v = 0; v < V; ++v) {
      a[v] = b[v] = _mm512_maskz_loadu_ps(lanes[v], given_max + i0 + 16 * v);
    }
  } else {
    for (int v = 0; v < V; ++v) a[v] = b[v] = row(0, v);
    for (; j + 1 < n; j += 2) {
      for (int v = 0; v < V; ++v) {
        a[v] = _mm512_max_ps(a[v], row(j, v));
        b[v] = _mm512_max_ps(b[v], row(j + 1, v));
      }
    }
    if (j < n) {
      for (int v = 0; v < V; ++v) a[v] = _mm512_max_ps(a[v], row(j, v));
    }
  }
  float score = 0.f;
  if (mode == RerankMode::kMaxSim) {
    for (int v = 0; v < V; ++v) {
      const __m512 vw = _mm512_maskz_loadu_ps(lanes[v], w + i0 + 16 * v);
      score += _mm512_reduce_add_ps(_mm512_mul_ps(vw, _mm512_max_ps(a[v], b[v])));
    }
    return score;
  }
  // (x - max) · inv_tau · log2 e, the difference first: as one fused
  // x · c - max · c, the rounding of max · c alone made y up to half its ulp
  // above 0 at the max, 2^y infinite at a tiny temperature (and the score NaN).
  const __m512 vtau = _mm512_set1_ps(inv_tau * kLog2e);
  __m512 vmax[V], z0[V], z1[V], num0[V], num1[V];
  for (int v = 0; v < V; ++v) {
    vmax[v] = _mm512_max_ps(a[v], b[v]);
    z0[v] = z1[v] = num0[v] = num1[v] = _mm512_setzero_ps();
  }
  j = 0;
  for (; j + 1 < n; j += 2) {
    for (int v = 0; v < V; ++v) {
      const __m512 x0 = row(j, v), x1 = row(j + 1, v);
      const __m512 e0 = Pow2(_mm512_mul_ps(_mm512_sub_ps(x0, vmax[v]), vtau));
      const __m512 e1 = Pow2(_mm512_mul_ps(_mm512_sub_ps(x1, vmax[v]), vtau));
      z0[v] = _mm512_add_ps(z0[v], e0);
      z1[v] = _mm512_add_ps(z1[v], e1);
      num0[v] = _mm512_fmadd_ps(e0, x0, num0[v]);
      num1[v] = _mm512_fmadd_ps(e1, x1, num1[v]);
    }
  }
  if (j < n) {
    for (int v = 0; v < V; ++v) {
      const __m512 x0 = row(j, v);
      const __m512 e0 = Pow2(_mm512_mul_ps(_mm512_sub_ps(x0, vmax[v]), vtau));
      z0[v] = _mm512_add_ps(z0[v], e0);
      num0[v] = _mm512_fmadd_ps(e0, x0, num0[v]);
    }
  }
  for (int v = 0; v < V; ++v) {
    // Masked-off lanes have z = n (exp(0)), num = 0 and weight 0.
    const __m512 z = _mm512_add_ps(z0[v], z1[v]), num = _mm512_add_ps(num0[v], num1[v]);
    const __m512 vw = _mm512_maskz_loadu_ps(lanes[v], w + i0 + 16 * v);
    score += _mm512_reduce_add_ps(_mm512_mul_ps(vw, _mm512_div_ps(num, z)));
  }
#undef row
  return score;
}

__attribute__((target("avx512f,avx512dq"))) float ReduceAvx512(
    const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode, float inv_tau,
    const float* row_scale, const float* col_scale, const float* given_max = nullptr) {
  float score = 0.f;
  uint32_t i0 = 0;
  // 32 query tokens per pass (two vectors a row), then one vector.
  for (; i0 + 16 < m; i0 += 32)
    score += ReduceLanes<2>(st, m, n, i0, w, mode, inv_tau, row_scale, col_scale, given_max);
  if (i0 < m)
    score += ReduceLanes<1>(st, m, n, i0, w, mode, inv_tau, row_scale, col_scale, given_max);
  return score;
}

// AttentionExplainSegment on AVX-512: per 16 query tokens, Block16<true>
// (ExplainSegment's own pass, so the evidence is its to the bit) keeping its
// exponentials in `scratch` (n x 16), then each query token's row gathered
// out of it and scaled by 1/z (ATTENTION), or one-hot at the argmax (MAXSIM).
__attribute__((target("avx512f,avx512dq"))) void AttentionExplainAvx512(
    const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode, float inv_tau,
    const float* row_scale, const float* col_scale, float* scratch, float* out, uint32_t* argmax,
    float* weight, float* contribution) {
  const __m512i across =
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(16));
  for (uint32_t i0 = 0; i0 < m; i0 += 16) {
    const bool attention = mode == RerankMode::kAttention;
    Block16<true>(st, m, n, i0, w, mode, inv_tau, row_scale, col_scale, argmax, weight,
                  contribution, attention ? scratch : nullptr);
    for (uint32_t i = i0; i < std::min(m, i0 + 16); ++i) {
      float* row = out + size_t(i) * n;
      if (!attention) {
        std::fill(row, row + n, 0.f);
        row[argmax[i]] = 1.f;
        continue;
      }
      const __m512 scale = _mm512_set1_ps(weight[i]);  // 1/z: exp(0) / z at the argmax
      for (uint32_t j = 0; j < n; j += 16) {
        const __mmask16 cols = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
        const __m512i at = _mm512_add_epi32(across, _mm512_set1_epi32(int(j * 16 + (i - i0))));
        const __m512 e = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), cols, at, scratch, 4);
        _mm512_mask_storeu_ps(row + j, cols, _mm512_mul_ps(e, scale));
      }
    }
  }
}

// The AVX2 version of the above (CPUs without AVX-512, e.g. AMD Zen 3): 8
// lanes a vector, masked loads, and 2^k built in the exponent bits, y
// clamped at -126 (below it a weight of 2^-126 instead of 0: no sum it
// joins can tell).
__attribute__((target("avx2,fma"))) inline __m256 Pow2Avx2(__m256 y) {
  y = _mm256_max_ps(y, _mm256_set1_ps(-126.f));
  const __m256 k = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(y, k);
  __m256 p = _mm256_set1_ps(1.327647129073739e-3f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.675540961325169e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550713092088699e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022120237350464e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931469440460205e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0000001192092896f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

__attribute__((target("avx2,fma"))) inline float SumLanes(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// ReduceLanes on AVX2: query tokens [i0, i0 + 8·V), lanes beyond m masked
// off (loaded as 0, weight 0).
template <int V>
__attribute__((target("avx2,fma"))) float ReduceLanesAvx2(const float* st, uint32_t m, uint32_t n,
                                                          uint32_t i0, const float* w,
                                                          RerankMode mode, float inv_tau,
                                                          const float* row_scale,
                                                          const float* col_scale) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i lanes[V];
  __m256 cs[V];
  for (int v = 0; v < V; ++v) {
    lanes[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(m) - int(i0) - 8 * v), lane);
    cs[v] = col_scale ? _mm256_maskload_ps(col_scale + i0 + 8 * v, lanes[v]) : _mm256_set1_ps(1.f);
  }
  const float* base = st + i0;
  const auto row = [&](uint32_t j, int v) __attribute__((target("avx2,fma"))) {
    __m256 x = _mm256_maskload_ps(base + size_t(j) * m + 8 * v, lanes[v]);
    if (row_scale) x = _mm256_mul_ps(x, _mm256_set1_ps(row_scale[j]));
    return col_scale ? _mm256_mul_ps(x, cs[v]) : x;
  };
  __m256 a[V], b[V];
  for (int v = 0; v < V; ++v) a[v] = b[v] = row(0, v);
  uint32_t j = 1;
  for (; j + 1 < n; j += 2) {
    for (int v = 0; v < V; ++v) {
      a[v] = _mm256_max_ps(a[v], row(j, v));
      b[v] = _mm256_max_ps(b[v], row(j + 1, v));
    }
  }
  if (j < n) {
    for (int v = 0; v < V; ++v) a[v] = _mm256_max_ps(a[v], row(j, v));
  }
  float score = 0.f;
  if (mode == RerankMode::kMaxSim) {
    for (int v = 0; v < V; ++v) {
      const __m256 vw = _mm256_maskload_ps(w + i0 + 8 * v, lanes[v]);
      score += SumLanes(_mm256_mul_ps(vw, _mm256_max_ps(a[v], b[v])));
    }
    return score;
  }
  const __m256 vtau = _mm256_set1_ps(inv_tau * kLog2e);
  __m256 vmax[V], z[V], num[V];
  for (int v = 0; v < V; ++v) {
    vmax[v] = _mm256_max_ps(a[v], b[v]);  // the difference first, as above
    z[v] = num[v] = _mm256_setzero_ps();
  }
  for (j = 0; j < n; ++j) {
    for (int v = 0; v < V; ++v) {
      const __m256 x = row(j, v);
      const __m256 e = Pow2Avx2(_mm256_mul_ps(_mm256_sub_ps(x, vmax[v]), vtau));
      z[v] = _mm256_add_ps(z[v], e);
      num[v] = _mm256_fmadd_ps(e, x, num[v]);
    }
  }
  for (int v = 0; v < V; ++v) {
    const __m256 vw = _mm256_maskload_ps(w + i0 + 8 * v, lanes[v]);
    score += SumLanes(_mm256_mul_ps(vw, _mm256_div_ps(num[v], z[v])));
  }
  return score;
}

const bool kHasAvx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

}  // namespace

bool ReduceSegmentHasAvx2() { return kHasAvx2; }

float ReduceSegmentAvx2(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                        float inv_tau, const float* row_scale, const float* col_scale) {
  float score = 0.f;
  uint32_t i0 = 0;
  // 32 query tokens per pass (four vectors a row), then 8 at a time.
  for (; i0 + 24 < m; i0 += 32)
    score += ReduceLanesAvx2<4>(st, m, n, i0, w, mode, inv_tau, row_scale, col_scale);
  for (; i0 < m; i0 += 8)
    score += ReduceLanesAvx2<1>(st, m, n, i0, w, mode, inv_tau, row_scale, col_scale);
  return score;
}

void ExplainSegment(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                    float inv_tau, const float* row_scale, const float* col_scale, uint32_t* argmax,
                    float* weight, float* contribution) {
  if (kHasAvx512) {
    for (uint32_t i0 = 0; i0 < m; i0 += 16) {
      Block16<true>(st, m, n, i0, w, mode, inv_tau, row_scale, col_scale, argmax, weight,
                    contribution);
    }
    return;
  }
  for (uint32_t i = 0; i < m; ++i) {
    auto s = [&](uint32_t j) {
      return st[size_t(j) * m + i] * (row_scale ? row_scale[j] : 1.f) *
             (col_scale ? col_scale[i] : 1.f);
    };
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

void AttentionExplainSegment(const float* st, uint32_t m, uint32_t n, const float* w,
                             RerankMode mode, float inv_tau, const float* row_scale,
                             const float* col_scale, float* out, uint32_t* argmax, float* weight,
                             float* contribution) {
  if (kHasAvx512) {
    thread_local std::vector<float> scratch;
    if (scratch.size() < size_t(n) * 16) scratch.resize(size_t(n) * 16);
    AttentionExplainAvx512(st, m, n, w, mode, inv_tau, row_scale, col_scale, scratch.data(), out,
                           argmax, weight, contribution);
    return;
  }
  ExplainSegment(st, m, n, w, mode, inv_tau, row_scale, col_scale, argmax, weight, contribution);
  // The similarities, scaled as ExplainSegment scales them, into the map's
  // query-token-major order, then each row's softmax (or its one-hot max).
  for (uint32_t j = 0; j < n; ++j) {
    const float* s = st + size_t(j) * m;
    const float rs = row_scale ? row_scale[j] : 1.f;
    for (uint32_t i = 0; i < m; ++i) {
      out[size_t(i) * n + j] = s[i] * rs * (col_scale ? col_scale[i] : 1.f);
    }
  }
  for (uint32_t i = 0; i < m; ++i) {
    float* row = out + size_t(i) * n;
    if (mode != RerankMode::kAttention) {
      std::fill(row, row + n, 0.f);
      row[argmax[i]] = 1.f;
      continue;
    }
    const float best = row[argmax[i]];
    float z = 0.f;
    for (uint32_t j = 0; j < n; ++j) z += row[j] = std::exp((row[j] - best) * inv_tau);
    const float inv_z = 1.f / z;
    for (uint32_t j = 0; j < n; ++j) row[j] *= inv_z;
  }
}

float ReduceSegmentPortable(const float* st, uint32_t m, uint32_t n, const float* w,
                            RerankMode mode, float inv_tau, const float* row_scale,
                            const float* col_scale) {
  float score = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    auto s = [&](uint32_t j) {
      return st[size_t(j) * m + i] * (row_scale ? row_scale[j] : 1.f) *
             (col_scale ? col_scale[i] : 1.f);
    };
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
                    float inv_tau, const float* row_scale, const float* col_scale) {
  if (kHasAvx512) return ReduceAvx512(st, m, n, w, mode, inv_tau, row_scale, col_scale);
  if (kHasAvx2) return ReduceSegmentAvx2(st, m, n, w, mode, inv_tau, row_scale, col_scale);
  return ReduceSegmentPortable(st, m, n, w, mode, inv_tau, row_scale, col_scale);
}

float ReduceSegmentWithMax(const float* st, uint32_t m, uint32_t n, const float* w, RerankMode mode,
                           float inv_tau, const float* col_max) {
  return ReduceAvx512(st, m, n, w, mode, inv_tau, nullptr, nullptr, col_max);
}

bool ReduceSegmentUsesAvx512() { return kHasAvx512; }

}  // namespace attnsearch
