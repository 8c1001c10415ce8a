// Small vector kernels and codecs: dot products, normalisation, finiteness
// checks and the bf16 <-> f32 conversions used by storage and the reranker.
#ifndef ATTNSEARCH_CORE_VECTOR_MATH_H_
#define ATTNSEARCH_CORE_VECTOR_MATH_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace attnsearch {

// Sum of a[i] * b[i] for i < n.
float Dot(const float* a, const float* b, size_t n);

// True when every one of the n values is finite (no NaN, no infinity).
bool AllFinite(const float* x, size_t n);

// Scales x (n values) to unit L2 norm, computing in double, so that every
// finite vector with a non-zero value becomes a finite unit vector, however
// small or large its norm (subnormal values included). Returns false,
// leaving x unchanged, when every value is zero or one is NaN or infinite.
bool NormalizeInPlace(float* x, size_t n);

// A weighted mean of `rows` unit rows has no direction when the rows
// (nearly) cancel out: PoolRows refuses a mean shorter than this.
inline constexpr double kMinPooledNorm = 1e-6;

// The weighted mean of `rows` rows of `dim` unit vectors (weights: `rows`
// non-negative finite values, or null for equal weights), normalised to unit
// length into out[0..dim), accumulated in double. Returns false, leaving out
// unspecified, when the weights sum to zero or the mean's norm is below
// kMinPooledNorm.
bool PoolRows(const float* rows, size_t num_rows, size_t dim, const float* weights, float* out);

// bf16 is the upper half of an IEEE f32. Conversion rounds to nearest even;
// NaN stays NaN.
inline uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}
inline float Bf16ToFloat(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
void FloatToBf16(const float* src, uint16_t* dst, size_t n);

// Symmetric int8: q = round(x / scale) with scale = max|x| / 127, so that
// x ≈ q * scale. Returns the scale (0 for an all-zero input). Defined for
// any input: NaN quantizes to 0, ±infinity to ±127, and a row of subnormals
// may return a scale that rounds to 0.
float QuantizeInt8(const float* src, int8_t* dst, size_t n);
void DequantizeInt8(const int8_t* src, float scale, float* dst, size_t n);
void Bf16ToFloat(const uint16_t* src, float* dst, size_t n);

// IEEE half precision (binary16, numpy's float16) to f32: exact, subnormals,
// infinities and NaN included. The array form uses F16C when the CPU has it.
float HalfToFloat(uint16_t h);
void HalfToFloat(const uint16_t* src, float* dst, size_t n);

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_VECTOR_MATH_H_
