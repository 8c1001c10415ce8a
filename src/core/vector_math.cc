#include "core/vector_math.h"

#include <algorithm>
#include <cmath>
#include <vector>

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
  // In double: 1 / norm overflows float once the norm is below ~2.9e-39.
  const double inv = 1.0 / std::sqrt(ss);
  for (size_t i = 0; i < n; ++i) x[i] = float(double(x[i]) * inv);
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

void FloatToBf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = FloatToBf16(src[i]);
}

float QuantizeInt8(const float* src, int8_t* dst, size_t n) {
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

void DequantizeInt8(const int8_t* src, float scale, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = float(src[i]) * scale;
}

void Bf16ToFloat(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

}  // namespace attnsearch
