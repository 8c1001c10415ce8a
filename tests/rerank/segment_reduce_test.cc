// The vectorised segmented softmax-and-reduce against plain double-precision
// loops, over lengths that exercise full and partial 16-lane blocks.
#include "rerank/segment_reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_format.h"

namespace attnsearch {
namespace {

// st holds n rows of m values; s_ij = st[j*m + i] * scale[j] * col[i] (no
// column scales when col is empty).
double Expected(const std::vector<float>& st, uint32_t m, uint32_t n, const std::vector<float>& w,
                RerankMode mode, float tau, const std::vector<float>& scale,
                const std::vector<float>& col = {}) {
  double total = 0.0;
  for (uint32_t i = 0; i < m; ++i) {
    std::vector<double> row(n);
    for (uint32_t j = 0; j < n; ++j) {
      row[j] = double(st[size_t(j) * m + i]) * scale[j] * (col.empty() ? 1.0 : col[i]);
    }
    double best = row[0];
    for (uint32_t j = 1; j < n; ++j) best = std::max(best, row[j]);
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
  std::uniform_real_distribution<float> pos(0.5f, 2.f);
  for (uint32_t n : {1u, 2u, 15u, 17u, 100u, 180u, 1000u}) {
    for (uint32_t m : {1u, 3u, 15u, 16u, 17u, 32u, 40u}) {
      std::vector<float> st(size_t(m) * n), w(m), ones(n, 1.f), scale(n), col(m);
      for (float& x : st) x = u(rng);
      for (float& x : w) x = u(rng);
      for (float& x : scale) x = pos(rng);
      for (float& x : col) x = pos(rng);
      for (RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
        for (float tau : {0.01f, 0.1f, 1.f, 10.f}) {
          const double want = Expected(st, m, n, w, mode, tau, ones);
          EXPECT_NEAR(ReduceSegment(st.data(), m, n, w.data(), mode, 1.f / tau), want, 1e-5 * m)
              << "n=" << n << " m=" << m << " tau=" << tau;
          EXPECT_NEAR(ReduceSegmentPortable(st.data(), m, n, w.data(), mode, 1.f / tau), want,
                      1e-5 * m);
          const double scaled = Expected(st, m, n, w, mode, tau, scale);
          EXPECT_NEAR(ReduceSegment(st.data(), m, n, w.data(), mode, 1.f / tau, scale.data()),
                      scaled, 2e-5 * m);
          // Row and column scales (int8 documents and queries).
          const double both = Expected(st, m, n, w, mode, tau, scale, col);
          EXPECT_NEAR(
              ReduceSegment(st.data(), m, n, w.data(), mode, 1.f / tau, scale.data(), col.data()),
              both, 4e-5 * m);
          EXPECT_NEAR(ReduceSegmentPortable(st.data(), m, n, w.data(), mode, 1.f / tau,
                                            scale.data(), col.data()),
                      both, 4e-5 * m);
          if (ReduceSegmentHasAvx2()) {
            EXPECT_NEAR(ReduceSegmentAvx2(st.data(), m, n, w.data(), mode, 1.f / tau), want,
                        1e-5 * m)
                << "AVX2 n=" << n << " m=" << m << " tau=" << tau;
            EXPECT_NEAR(ReduceSegmentAvx2(st.data(), m, n, w.data(), mode, 1.f / tau, scale.data(),
                                          col.data()),
                        both, 4e-5 * m);
          }
          std::vector<uint32_t> argmax(m);
          std::vector<float> weight(m), contribution(m);
          ExplainSegment(st.data(), m, n, w.data(), mode, 1.f / tau, scale.data(), col.data(),
                         argmax.data(), weight.data(), contribution.data());
          double sum = 0.0;
          for (float c : contribution) sum += c;
          EXPECT_NEAR(sum, both, 4e-5 * m);
        }
      }
    }
  }
}

TEST(SegmentReduceTest, ExtremeValuesStayFinite) {
  // Differences far below exp's range underflow to zero weight, not NaN.
  std::vector<float> s = {1.f, -1.f, 0.5f, -0.99f};  // one query token, four rows
  std::vector<float> w = {1.f};
  const float r = ReduceSegment(s.data(), 1, 4, w.data(), RerankMode::kAttention, 1e4f);
  EXPECT_FLOAT_EQ(r, 1.f);
  if (ReduceSegmentHasAvx2()) {
    EXPECT_FLOAT_EQ(ReduceSegmentAvx2(s.data(), 1, 4, w.data(), RerankMode::kAttention, 1e4f), 1.f);
  }
}

// MAXSIM is the limit of a vanishing temperature: at the smallest ones the
// search accepts (down to 1e-30), ATTENTION gives MAXSIM's score on every
// path, and never NaN or infinity (a fused x·c − max·c once made 2^y
// overflow at the max itself), even where (x − max)·c is below −FLT_MAX.
TEST(SegmentReduceTest, TinyTemperaturesGiveMaxSim) {
  std::mt19937 rng(29);
  for (float range : {1.f, 1e9f}) {
    std::uniform_real_distribution<float> u(-range, range);
    for (uint32_t n : {1u, 2u, 17u, 180u}) {
      for (uint32_t m : {1u, 17u, 32u, 40u}) {
        std::vector<float> st(size_t(m) * n), w(m), scale(n, 1.f), col(m, 1.f);
        for (float& x : st) x = u(rng);
        for (float& x : w) x = u(rng) / range;
        const float maxsim =
            ReduceSegment(st.data(), m, n, w.data(), RerankMode::kMaxSim, 1.f, scale.data());
        for (float tau : {1e-10f, 1e-20f, 1e-30f}) {
          const std::string at = absl::StrFormat("range=%g n=%u m=%u tau=%g", range, n, m, tau);
          const float inv = 1.f / tau;
          const float tol = 1e-6f * std::abs(maxsim) + 1e-6f * range;
          EXPECT_NEAR(ReduceSegment(st.data(), m, n, w.data(), RerankMode::kAttention, inv), maxsim,
                      tol)
              << at;
          EXPECT_NEAR(ReduceSegment(st.data(), m, n, w.data(), RerankMode::kAttention, inv,
                                    scale.data(), col.data()),
                      maxsim, tol)
              << at;
          EXPECT_NEAR(ReduceSegmentPortable(st.data(), m, n, w.data(), RerankMode::kAttention, inv),
                      maxsim, tol)
              << at;
          if (ReduceSegmentHasAvx2()) {
            EXPECT_NEAR(ReduceSegmentAvx2(st.data(), m, n, w.data(), RerankMode::kAttention, inv),
                        maxsim, tol)
                << at;
          }
          std::vector<uint32_t> argmax(m);
          std::vector<float> weight(m), contribution(m);
          ExplainSegment(st.data(), m, n, w.data(), RerankMode::kAttention, inv, scale.data(),
                         col.data(), argmax.data(), weight.data(), contribution.data());
          double sum = 0.0;
          for (float c : contribution) sum += c;
          EXPECT_NEAR(sum, maxsim, tol) << at;
          for (float x : weight) EXPECT_FLOAT_EQ(x, 1.f) << at;
        }
      }
    }
  }
}

}  // namespace
}  // namespace attnsearch
