#include "ann/simd_distance.h"

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_* used as
// a blend source); the warnings are about the headers, not this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <cpuid.h>
#include <immintrin.h>

#include <cstdlib>
#include <cstring>

namespace attnsearch::simd {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return uint16_t(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0));
  }
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // overflow to inf
  if (abs < 0x38800000u) {                                 // subnormal or zero
    if (abs < 0x33000000u) return sign;
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14 + (113 - e)
    uint32_t v = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (v & 1))) ++v;
    return uint16_t(sign | v);
  }
  uint32_t v = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (v & 1))) ++v;
  return uint16_t(sign | v);
}

namespace {

// ---- portable ---------------------------------------------------------------
// Four partial sums, which compilers vectorise with the baseline ISA.

float DotF32Portable(const float* a, const float* b, size_t d) {
  float s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= d; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += a[i + j] * b[i + j];
  }
  for (; i < d; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float L2F32Portable(const float* a, const float* b, size_t d) {
  float s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= d; i += 4) {
    for (int j = 0; j < 4; ++j) {
      const float t = a[i + j] - b[i + j];
      s[j] += t * t;
    }
  }
  for (; i < d; ++i) s[0] += (a[i] - b[i]) * (a[i] - b[i]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float DotF16Portable(const float* q, const uint16_t* h, size_t d) {
  float s = 0;
  for (size_t i = 0; i < d; ++i) s += q[i] * HalfToFloat(h[i]);
  return s;
}

float L2F16Portable(const float* q, const uint16_t* h, size_t d) {
  float s = 0;
  for (size_t i = 0; i < d; ++i) {
    const float t = q[i] - HalfToFloat(h[i]);
    s += t * t;
  }
  return s;
}

float DotU8Portable(const float* a, const uint8_t* c, size_t d) {
  float s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= d; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += a[i + j] * float(c[i + j]);
  }
  for (; i < d; ++i) s[0] += a[i] * float(c[i]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float L2U8Portable(const float* q, const float* b, const uint8_t* c, size_t d) {
  float s = 0;
  for (size_t i = 0; i < d; ++i) {
    const float t = q[i] - b[i] * float(c[i]);
    s += t * t;
  }
  return s;
}

void DecodeF16Portable(const uint16_t* h, float* out, size_t d) {
  for (size_t i = 0; i < d; ++i) out[i] = HalfToFloat(h[i]);
}

// ---- AVX2 + FMA + F16C --------------------------------------------------------
#define ATTN_AVX2 __attribute__((target("avx2,fma,f16c")))

ATTN_AVX2 inline float HsumAvx2(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

ATTN_AVX2 float DotF32Avx2(const float* a, const float* b, size_t d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  if (i + 8 <= d) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    i += 8;
  }
  float s = HsumAvx2(_mm256_add_ps(s0, s1));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

ATTN_AVX2 float L2F32Avx2(const float* a, const float* b, size_t d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    const __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    s0 = _mm256_fmadd_ps(t0, t0, s0);
    s1 = _mm256_fmadd_ps(t1, t1, s1);
  }
  if (i + 8 <= d) {
    const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    s0 = _mm256_fmadd_ps(t, t, s0);
    i += 8;
  }
  float s = HsumAvx2(_mm256_add_ps(s0, s1));
  for (; i < d; ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return s;
}

ATTN_AVX2 inline __m256 LoadHalf8(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}

ATTN_AVX2 float DotF16Avx2(const float* q, const uint16_t* h, size_t d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), LoadHalf8(h + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), LoadHalf8(h + i + 8), s1);
  }
  if (i + 8 <= d) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), LoadHalf8(h + i), s0);
    i += 8;
  }
  float s = HsumAvx2(_mm256_add_ps(s0, s1));
  for (; i < d; ++i) s += q[i] * HalfToFloat(h[i]);
  return s;
}

ATTN_AVX2 float L2F16Avx2(const float* q, const uint16_t* h, size_t d) {
  __m256 s0 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(q + i), LoadHalf8(h + i));
    s0 = _mm256_fmadd_ps(t, t, s0);
  }
  float s = HsumAvx2(s0);
  for (; i < d; ++i) {
    const float t = q[i] - HalfToFloat(h[i]);
    s += t * t;
  }
  return s;
}

ATTN_AVX2 inline __m256 LoadU8x8(const uint8_t* c) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c))));
}

ATTN_AVX2 float DotU8Avx2(const float* a, const uint8_t* c, size_t d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), LoadU8x8(c + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), LoadU8x8(c + i + 8), s1);
  }
  if (i + 8 <= d) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), LoadU8x8(c + i), s0);
    i += 8;
  }
  float s = HsumAvx2(_mm256_add_ps(s0, s1));
  for (; i < d; ++i) s += a[i] * float(c[i]);
  return s;
}

ATTN_AVX2 float L2U8Avx2(const float* q, const float* b, const uint8_t* c, size_t d) {
  __m256 s0 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const __m256 t =
        _mm256_fnmadd_ps(_mm256_loadu_ps(b + i), LoadU8x8(c + i), _mm256_loadu_ps(q + i));
    s0 = _mm256_fmadd_ps(t, t, s0);
  }
  float s = HsumAvx2(s0);
  for (; i < d; ++i) {
    const float t = q[i] - b[i] * float(c[i]);
    s += t * t;
  }
  return s;
}

ATTN_AVX2 void DecodeF16Avx2(const uint16_t* h, float* out, size_t d) {
  size_t i = 0;
  for (; i + 8 <= d; i += 8) _mm256_storeu_ps(out + i, LoadHalf8(h + i));
  for (; i < d; ++i) out[i] = HalfToFloat(h[i]);
}

// ---- AVX-512 ------------------------------------------------------------------
// Tails use masked loads, so any d runs without a scalar loop.
#define ATTN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

ATTN_AVX512 inline __mmask16 TailMask(size_t n) { return __mmask16((1u << n) - 1); }

ATTN_AVX512 float DotF32Avx512(const float* a, const float* b, size_t d) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < d; i += 16) {
    const __mmask16 m = d - i >= 16 ? __mmask16(0xffff) : TailMask(d - i);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

ATTN_AVX512 float L2F32Avx512(const float* a, const float* b, size_t d) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    const __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    const __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
    s0 = _mm512_fmadd_ps(t0, t0, s0);
    s1 = _mm512_fmadd_ps(t1, t1, s1);
  }
  for (; i < d; i += 16) {
    const __mmask16 m = d - i >= 16 ? __mmask16(0xffff) : TailMask(d - i);
    const __m512 t =
        _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    s0 = _mm512_fmadd_ps(t, t, s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

ATTN_AVX512 inline __m512 LoadHalf16(const uint16_t* h, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h));
}

ATTN_AVX512 float DotF16Avx512(const float* q, const uint16_t* h, size_t d) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), LoadHalf16(h + i, 0xffff), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), LoadHalf16(h + i + 16, 0xffff), s1);
  }
  for (; i < d; i += 16) {
    const __mmask16 m = d - i >= 16 ? __mmask16(0xffff) : TailMask(d - i);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), LoadHalf16(h + i, m), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

ATTN_AVX512 float L2F16Avx512(const float* q, const uint16_t* h, size_t d) {
  __m512 s0 = _mm512_setzero_ps();
  for (size_t i = 0; i < d; i += 16) {
    const __mmask16 m = d - i >= 16 ? __mmask16(0xffff) : TailMask(d - i);
    const __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, q + i), LoadHalf16(h + i, m));
    s0 = _mm512_fmadd_ps(t, t, s0);
  }
  return _mm512_reduce_add_ps(s0);
}

ATTN_AVX512 inline __m512 LoadU8x16(const uint8_t* c, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, c)));
}

ATTN_AVX512 float DotU8Avx512(const float* a, const uint8_t* c, size_t d) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= d; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), LoadU8x16(c + i, 0xffff), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), LoadU8x16(c + i + 16, 0xffff), s1);
  }
  for (; i < d; i += 16) {
    const __mmask16 m = d - i >= 16 ? __mmask16(0xffff) : TailMask(d - i);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), LoadU8x16(c + i, m), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

ATTN_AVX512 float L2U8Avx512(const float* q, const float* b, const uint8_t* c, size_t d) {
  __m512 s0 = _mm512_setzero_ps();
  for (size_t i = 0; i < d; i += 16) {
    const __mmask16 m = d - i >= 16 ? __mmask16(0xffff) : TailMask(d - i);
    const __m512 t = _mm512_fnmadd_ps(_mm512_maskz_loadu_ps(m, b + i), LoadU8x16(c + i, m),
                                      _mm512_maskz_loadu_ps(m, q + i));
    s0 = _mm512_fmadd_ps(t, t, s0);
  }
  return _mm512_reduce_add_ps(s0);
}

ATTN_AVX512 void DecodeF16Avx512(const uint16_t* h, float* out, size_t d) {
  for (size_t i = 0; i < d; i += 16) {
    const __mmask16 m = d - i >= 16 ? __mmask16(0xffff) : TailMask(d - i);
    _mm512_mask_storeu_ps(out + i, m, LoadHalf16(h + i, m));
  }
}

constexpr Kernels kPortable = {DotF32Portable, L2F32Portable, DotF16Portable,   L2F16Portable,
                               DotU8Portable,  L2U8Portable,  DecodeF16Portable};
constexpr Kernels kAvx2 = {DotF32Avx2, L2F32Avx2, DotF16Avx2,   L2F16Avx2,
                           DotU8Avx2,  L2U8Avx2,  DecodeF16Avx2};
constexpr Kernels kAvx512 = {DotF32Avx512, L2F32Avx512, DotF16Avx512,   L2F16Avx512,
                             DotU8Avx512,  L2U8Avx512,  DecodeF16Avx512};

// F16C from CPUID leaf 1 (clang's __builtin_cpu_supports does not know it).
bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}

Level ChooseLevel() {
  Level cap = Level::kAvx512;
  if (const char* env = std::getenv("ATTN_SIMD")) {
    const std::string_view v(env);
    if (v == "portable") cap = Level::kPortable;
    if (v == "avx2") cap = Level::kAvx2;
  }
  for (Level l : {Level::kAvx512, Level::kAvx2}) {
    if (int(l) <= int(cap) && Supported(l)) return l;
  }
  return Level::kPortable;
}

}  // namespace

bool Supported(Level level) {
  switch (level) {
    case Level::kPortable:
      return true;
    case Level::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16c();
    case Level::kAvx512:
      return Supported(Level::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }
  return false;
}

Level ActiveLevel() {
  static const Level level = ChooseLevel();
  return level;
}

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kAvx512:
      return "avx512";
    case Level::kAvx2:
      return "avx2";
    case Level::kPortable:
      break;
  }
  return "portable";
}

const Kernels& ForLevel(Level level) {
  switch (level) {
    case Level::kAvx512:
      return kAvx512;
    case Level::kAvx2:
      return kAvx2;
    case Level::kPortable:
      break;
  }
  return kPortable;
}

const Kernels& Active() {
  static const Kernels& kernels = ForLevel(ActiveLevel());
  return kernels;
}

void Sq8Query::Prepare(const float* q, const float* vmin, const float* vdiff, size_t d) {
  scale.resize(d);
  shifted.resize(d);
  step.resize(d);
  constant = 0.f;
  for (size_t i = 0; i < d; ++i) {
    step[i] = vdiff[i] / 255.f;
    scale[i] = q[i] * step[i];
    constant += q[i] * (vmin[i] + 0.5f * step[i]);
    shifted[i] = q[i] - vmin[i] - 0.5f * step[i];
  }
}

}  // namespace attnsearch::simd
