// The vectorised segmented softmax-and-reduce against plain double-precision
// loops, over lengths that exercise full and partial 16-lane blocks.
#include "rerank/segment_reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace attnsearch {
namespace {

double Expected(const std::vector<float>& s, size_t stride, uint32_t m, uint32_t n,
                const std::vector<float>& w, RerankMode mode, float tau) {
  double total = 0.0;
  for (uint32_t i = 0; i < m; ++i) {
    const float* row = s.data() + i * stride;
    double best = row[0];
    for (uint32_t j = 1; j < n; ++j) best = std::max(best, double(row[j]));
    double c = best;
    if (mode == RerankMode::kAttention) {
      double z = 0.0, num = 0.0;
      for (uint32_t j = 0; j < n; ++j) {
        const double e = std::exp((row[j] - best) / tau);
        z += e;
        num += e * row[j];
      }
      c = num / z;
    }
    total += w[i] * c;
  }
  return total;
}

TEST(SegmentReduceTest, MatchesDoublePrecisionLoops) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (uint32_t n : {1u, 2u, 15u, 16u, 17u, 31u, 32u, 33u, 100u, 180u, 1000u}) {
    for (uint32_t m : {1u, 3u, 32u}) {
      const size_t stride = n + 7;
      std::vector<float> s(m * stride), w(m);
      for (float& x : s) x = u(rng);
      for (float& x : w) x = u(rng);
      for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
        for (float tau : {0.01f, 0.1f, 1.f, 10.f}) {
          const double want = Expected(s, stride, m, n, w, mode, tau);
          EXPECT_NEAR(ReduceSegment(s.data(), stride, m, n, w.data(), mode, 1.f / tau), want,
                      1e-5 * m)
              << "n=" << n << " m=" << m << " tau=" << tau;
          EXPECT_NEAR(ReduceSegmentPortable(s.data(), stride, m, n, w.data(), mode, 1.f / tau),
                      want, 1e-5 * m);
        }
      }
    }
  }
}

TEST(SegmentReduceTest, ExtremeValuesStayFinite) {
  // Differences far below exp's range underflow to zero weight, not NaN.
  std::vector<float> s = {1.f, -1.f, 0.5f, -0.99f};
  std::vector<float> w = {1.f};
  const float r = ReduceSegment(s.data(), s.size(), 1, 4, w.data(), RerankMode::kAttention,
                                1e4f);
  EXPECT_FLOAT_EQ(r, 1.f);
}

}  // namespace
}  // namespace attnsearch
