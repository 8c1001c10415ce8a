// SIMD distance kernels for the candidate index: inner product and squared
// L2 between a float query and a stored vector in f32, fp16 or 8-bit
// scalar-quantised form.
//
// Each kernel has an AVX-512, an AVX2 (+FMA, F16C) and a portable version;
// the best one the CPU supports is chosen once at start-up (runtime
// dispatch), so one binary runs everywhere. ATTN_SIMD=avx512|avx2|portable in
// the environment caps the choice (for comparisons and tests).
//
// 8-bit codes follow FAISS's ScalarQuantizer QT_8bit: component i decodes to
// vmin[i] + (c[i] + 0.5) / 255 * vdiff[i]. The kernels take the query folded
// with the ranges (see Sq8Query), so a distance is one pass over the codes.
#ifndef ATTNSEARCH_ANN_SIMD_DISTANCE_H_
#define ATTNSEARCH_ANN_SIMD_DISTANCE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace attnsearch::simd {

enum class Level { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The level chosen at start-up, and its name ("avx512", "avx2", "portable").
Level ActiveLevel();
std::string_view LevelName(Level level);
// Whether this CPU can run `level`.
bool Supported(Level level);

// One set of kernels. d is any dimension (tails are handled).
struct Kernels {
  // sum_i a[i] * b[i]
  float (*dot_f32)(const float* a, const float* b, size_t d);
  // sum_i (a[i] - b[i])^2
  float (*l2_f32)(const float* a, const float* b, size_t d);
  // sum_i q[i] * half(h[i])
  float (*dot_f16)(const float* q, const uint16_t* h, size_t d);
  // sum_i (q[i] - half(h[i]))^2
  float (*l2_f16)(const float* q, const uint16_t* h, size_t d);
  // sum_i a[i] * c[i]
  float (*dot_u8)(const float* a, const uint8_t* c, size_t d);
  // sum_i (q[i] - b[i] * c[i])^2
  float (*l2_u8)(const float* q, const float* b, const uint8_t* c, size_t d);
  // out[i] = half(h[i])
  void (*decode_f16)(const uint16_t* h, float* out, size_t d);
};

// The kernels of the active level, and of any supported level (tests).
const Kernels& Active();
const Kernels& ForLevel(Level level);

// IEEE half <-> float (round to nearest even), portable.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);

// A query prepared for 8-bit codes with per-component ranges vmin, vdiff:
//   inner product  = constant + dot_u8(scale, code)
//                    with scale[i] = q[i] * vdiff[i] / 255,
//   squared L2     = l2_u8(shifted, step, code)
//                    with step[i] = vdiff[i] / 255,
//                    shifted[i] = q[i] - vmin[i] - 0.5 * step[i].
struct Sq8Query {
  void Prepare(const float* q, const float* vmin, const float* vdiff, size_t d);
  float constant = 0.f;
  std::vector<float> scale, shifted, step;
};

}  // namespace attnsearch::simd

#endif  // ATTNSEARCH_ANN_SIMD_DISTANCE_H_
