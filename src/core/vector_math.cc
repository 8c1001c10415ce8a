#include "core/vector_math.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/simd_clones.h"

// The loops below are written so that the compiler vectorises them, and
// compiled once per instruction set (core/simd_clones.h). Each clone gives
// the same result: the sums' order is fixed and every product they add is
// exact in double (see NormalizeInPlace).

namespace attnsearch {

float Dot(const float* a, const float* b, size_t n) {
  float s = 0.f;
  for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

ATTN_SIMD_CLONES bool AllFinite(const float* x, size_t n) {
  // A value is finite when its exponent bits are not all ones; blocks of 64
  // without a branch inside vectorise.
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint32_t bad = 0;
    for (size_t k = 0; k < 64; ++k) {
      uint32_t bits;
      std::memcpy(&bits, x + i + k, 4);
      bad |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (bad != 0) return false;
  }
  for (; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

ATTN_SIMD_CLONES bool NormalizeInPlace(float* x, size_t n) {
  // Eight independent sums, so the additions need not wait on each other
  // (and vectorise); the order is fixed, so the result is deterministic.
  // The square of a float is exact in double, so a fused multiply-add
  // gives the same sum as a multiply and an add.
  double part[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t k = 0; k < 8; ++k) part[k] += double(x[i + k]) * x[i + k];
  }
  double ss =
      ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; i < n; ++i) ss += double(x[i]) * x[i];
  if (!(ss > 0.0) || !std::isfinite(ss)) return false;
  // In double: 1 / norm overflows float once the norm is below ~2.9e-39.
  const double inv = 1.0 / std::sqrt(ss);
  for (i = 0; i < n; ++i) x[i] = float(double(x[i]) * inv);
  return true;
}

bool PoolRows(const float* rows, size_t num_rows, size_t dim, const float* weights, float* out) {
  std::vector<double> sum(dim, 0.0);
  double total_weight = 0.0;
  for (size_t r = 0; r < num_rows; ++r) {
    const double w = weights != nullptr ? double(weights[r]) : 1.0;
    total_weight += w;
    const float* row = rows + r * dim;
    for (size_t k = 0; k < dim; ++k) sum[k] += w * row[k];
  }
  if (!(total_weight > 0.0) || !std::isfinite(total_weight)) return false;
  double ss = 0.0;
  for (double v : sum) ss += v * v;
  const double norm = std::sqrt(ss);
  if (!(norm >= kMinPooledNorm * total_weight) || !std::isfinite(norm)) return false;
  for (size_t k = 0; k < dim; ++k) out[k] = float(sum[k] / norm);
  return true;
}

ATTN_SIMD_CLONES void FloatToBf16(const float* src, uint16_t* dst, size_t n) {
  // The scalar rule without a branch, so the loop vectorises.
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, src + i, 4);
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const uint32_t quiet = (bits >> 16) | 0x40u;
    dst[i] = uint16_t((bits & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
  }
}

namespace {

// The scalar QuantizeInt8 (its comparisons with NaN keep the compiler from
// vectorising it).
float QuantizeInt8Scalar(const float* src, int8_t* dst, size_t n) {
  float max_abs = 0.f;  // over the finite values
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(src[i]);
    if (std::isfinite(a)) max_abs = std::max(max_abs, a);
  }
  if (max_abs == 0.f) {
    std::fill(dst, dst + n, int8_t{0});
    return 0.f;
  }
  // In double, 127 / max_abs stays finite even for the smallest subnormal.
  const double inv = 127.0 / double(max_abs);
  for (size_t i = 0; i < n; ++i) {
    const double q = std::nearbyint(double(src[i]) * inv);
    dst[i] = std::isnan(q) ? int8_t{0} : int8_t(std::clamp(q, -127.0, 127.0));
  }
  return max_abs / 127.f;
}

// The same in AVX-512, 16 values at a time: the products in double, rounded
// to nearest with ties to even as nearbyint rounds, NaN to 0.
__attribute__((target("avx512f,avx512bw,avx512vl"))) float QuantizeInt8Avx512(const float* src,
                                                                              int8_t* dst,
                                                                              size_t n) {
  __m512 top = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes, src + i));
    const __mmask16 finite = _mm512_cmp_ps_mask(a, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ);
    top = _mm512_mask_max_ps(top, finite, top, a);
  }
  const float max_abs = _mm512_reduce_max_ps(top);
  if (max_abs == 0.f) {
    std::fill(dst, dst + n, int8_t{0});
    return 0.f;
  }
  const __m512d inv = _mm512_set1_pd(127.0 / double(max_abs));
  const __m512d lo = _mm512_set1_pd(-127.0), hi = _mm512_set1_pd(127.0);
  for (size_t i = 0; i < n; i += 8) {
    const __mmask8 lanes = n - i >= 8 ? __mmask8(0xff) : __mmask8((1u << (n - i)) - 1u);
    const __m512d v = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(lanes, src + i)), inv);
    const __mmask8 number = _mm512_cmp_pd_mask(v, v, _CMP_ORD_Q);
    const __m512d r = _mm512_roundscale_pd(_mm512_min_pd(_mm512_max_pd(v, lo), hi),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i q = _mm512_maskz_cvtpd_epi32(number, r);
    _mm_mask_storeu_epi8(dst + i, lanes, _mm256_cvtepi32_epi8(q));
  }
  return max_abs / 127.f;
}

const bool kQuantizeAvx512 = __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");

}  // namespace

float QuantizeInt8(const float* src, int8_t* dst, size_t n) {
  return kQuantizeAvx512 ? QuantizeInt8Avx512(src, dst, n) : QuantizeInt8Scalar(src, dst, n);
}

void DequantizeInt8(const int8_t* src, float scale, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = float(src[i]) * scale;
}

ATTN_SIMD_CLONES void Bf16ToFloat(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // infinity or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // zero
  } else {
    // Subnormal: shift the mantissa up until its leading one is implicit.
    uint32_t e = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

#if defined(__x86_64__)
namespace {

__attribute__((target("f16c"))) void HalfToFloatF16c(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = HalfToFloat(src[i]);
}

}  // namespace
#endif

void HalfToFloat(const uint16_t* src, float* dst, size_t n) {
#if defined(__x86_64__)
  static const bool f16c = [] {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  }();
  if (f16c) {
    HalfToFloatF16c(src, dst, n);
    return;
  }
#endif
  for (size_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
}

}  // namespace attnsearch
