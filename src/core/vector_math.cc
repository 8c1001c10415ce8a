#include "core/vector_math.h"

#include <cmath>

namespace attnsearch {

float Dot(const float* a, const float* b, size_t n) {
  float s = 0.f;
  for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

bool AllFinite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

bool NormalizeInPlace(float* x, size_t n) {
  double ss = 0.0;
  for (size_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  if (!(ss > 0.0) || !std::isfinite(ss)) return false;
  const float inv = float(1.0 / std::sqrt(ss));
  for (size_t i = 0; i < n; ++i) x[i] *= inv;
  return true;
}

void FloatToBf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = FloatToBf16(src[i]);
}

void Bf16ToFloat(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

}  // namespace attnsearch
