// The SIMD kernels at every level this CPU supports against double-precision
// oracles, and the SIMD storage indexes against FAISS's own codecs and
// distance computers.
#include "ann/simd_distance.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/index_factory.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "ann/simd_storage.h"
#include "gtest/gtest.h"

namespace attnsearch {
namespace {

using simd::Level;

std::vector<Level> SupportedLevels() {
  std::vector<Level> levels;
  for (Level l : {Level::kPortable, Level::kAvx2, Level::kAvx512}) {
    if (simd::Supported(l)) levels.push_back(l);
  }
  return levels;
}

std::vector<float> Random(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

const size_t kDims[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 100, 128, 129, 384};

TEST(SimdKernelsTest, EveryLevelMatchesTheDoubleOracle) {
  std::mt19937 rng(7);
  for (Level level : SupportedLevels()) {
    const simd::Kernels& k = simd::ForLevel(level);
    for (size_t d : kDims) {
      SCOPED_TRACE(testing::Message() << simd::LevelName(level) << " d=" << d);
      const std::vector<float> a = Random(rng, d), b = Random(rng, d), scale = Random(rng, d);
      std::vector<uint16_t> h(d);
      std::vector<uint8_t> c(d);
      for (size_t i = 0; i < d; ++i) {
        h[i] = simd::FloatToHalf(b[i]);
        c[i] = uint8_t(rng() % 256);
      }
      double dot = 0, l2 = 0, dot16 = 0, l216 = 0, dotu8 = 0, l2u8 = 0;
      for (size_t i = 0; i < d; ++i) {
        const double hb = simd::HalfToFloat(h[i]);
        dot += double(a[i]) * b[i];
        l2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        dot16 += double(a[i]) * hb;
        l216 += (a[i] - hb) * (a[i] - hb);
        dotu8 += double(scale[i]) * c[i];
        const double t = double(a[i]) - double(scale[i]) * c[i];
        l2u8 += t * t;
      }
      const double tol = 1e-5 * double(d);
      EXPECT_NEAR(k.dot_f32(a.data(), b.data(), d), dot, tol);
      EXPECT_NEAR(k.l2_f32(a.data(), b.data(), d), l2, tol);
      EXPECT_NEAR(k.dot_f16(a.data(), h.data(), d), dot16, tol);
      EXPECT_NEAR(k.l2_f16(a.data(), h.data(), d), l216, tol);
      EXPECT_NEAR(k.dot_u8(scale.data(), c.data(), d), dotu8, 255 * tol);
      EXPECT_NEAR(k.l2_u8(a.data(), scale.data(), c.data(), d), l2u8, 255 * 255 * tol);
    }
  }
}

TEST(SimdKernelsTest, ActiveLevelIsSupported) {
  EXPECT_TRUE(simd::Supported(simd::ActiveLevel()));
  EXPECT_TRUE(simd::Supported(Level::kPortable));
  RecordProperty("simd_level", std::string(simd::LevelName(simd::ActiveLevel())));
}

TEST(HalfTest, ConversionMatchesFaissFp16Codec) {
  std::mt19937 rng(3);
  const size_t d = 64;
  faiss::IndexScalarQuantizer sq(int(d), faiss::ScalarQuantizer::QT_fp16);
  std::vector<float> x = Random(rng, d, -70000.f, 70000.f);
  const std::vector<float> small = Random(rng, d, -1e-5f, 1e-5f);  // subnormal halves
  x.insert(x.end(), small.begin(), small.end());
  const std::vector<float> unit = Random(rng, d);
  x.insert(x.end(), unit.begin(), unit.end());
  x[0] = 0.f;
  x[1] = -0.f;
  x[2] = 65504.f;
  x[3] = 1e6f;  // overflows to infinity
  const size_t n = x.size() / d;
  std::vector<uint8_t> codes(n * sq.code_size);
  sq.sa_encode(faiss::Index::idx_t(n), x.data(), codes.data());
  std::vector<float> decoded(x.size());
  sq.sa_decode(faiss::Index::idx_t(n), codes.data(), decoded.data());
  const auto* h = reinterpret_cast<const uint16_t*>(codes.data());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(simd::FloatToHalf(x[i]), h[i]) << "x=" << x[i];
    const float back = simd::HalfToFloat(h[i]);
    if (std::isinf(decoded[i])) {
      EXPECT_TRUE(std::isinf(back));
    } else {
      EXPECT_EQ(back, decoded[i]) << "x=" << x[i];
    }
  }
}

// FAISS's own index of `spec`, trained and filled, and its SIMD twin built
// from an identical copy.
struct Pair {
  std::unique_ptr<faiss::Index> faiss_own, simd;
};

Pair MakePair(const std::string& spec, faiss::MetricType metric, const std::vector<float>& x,
              size_t d) {
  Pair p;
  const auto n = faiss::Index::idx_t(x.size() / d);
  for (auto* slot : {&p.faiss_own, &p.simd}) {
    slot->reset(faiss::index_factory(int(d), spec.c_str(), metric));
    (*slot)->train(n, x.data());
    (*slot)->add(n, x.data());
  }
  p.simd = UseSimdDistances(std::move(p.simd));
  return p;
}

const faiss::Index& Storage(const faiss::Index& index) {
  const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(&index);
  return hnsw != nullptr ? *hnsw->storage : index;
}

TEST(SimdStorageTest, DistanceComputersAgreeWithFaiss) {
  std::mt19937 rng(11);
  const size_t d = 37, n = 300;
  const std::vector<float> x = Random(rng, n * d);
  const std::vector<float> q = Random(rng, d);
  for (const char* spec : {"Flat", "SQ8", "SQfp16", "HNSW16,Flat", "HNSW16,SQ8", "HNSW16,SQfp16"}) {
    for (faiss::MetricType metric : {faiss::METRIC_INNER_PRODUCT, faiss::METRIC_L2}) {
      SCOPED_TRACE(testing::Message() << spec << " metric " << int(metric));
      Pair p = MakePair(spec, metric, x, d);
      EXPECT_EQ(DistanceImplementation(*p.simd).rfind("simd-", 0), 0u)
          << DistanceImplementation(*p.simd);
      EXPECT_EQ(DistanceImplementation(*p.faiss_own), "faiss");
      std::unique_ptr<faiss::DistanceComputer> want(Storage(*p.faiss_own).get_distance_computer());
      std::unique_ptr<faiss::DistanceComputer> got(Storage(*p.simd).get_distance_computer());
      want->set_query(q.data());
      got->set_query(q.data());
      CodeScorer scorer;
      const bool bound = scorer.Bind(Storage(*p.simd), q.data());
      EXPECT_EQ(bound, metric == faiss::METRIC_INNER_PRODUCT);
      for (size_t i = 0; i < n; ++i) {
        const float w = (*want)(faiss::Index::idx_t(i));
        EXPECT_NEAR((*got)(faiss::Index::idx_t(i)), w, 1e-4f * std::max(1.f, std::abs(w)));
        if (bound) EXPECT_NEAR(scorer(i), w, 1e-4f * std::max(1.f, std::abs(w)));
        const size_t j = (i * 7 + 3) % n;
        const float ws = want->symmetric_dis(faiss::Index::idx_t(i), faiss::Index::idx_t(j));
        EXPECT_NEAR(got->symmetric_dis(faiss::Index::idx_t(i), faiss::Index::idx_t(j)), ws,
                    1e-4f * std::max(1.f, std::abs(ws)));
      }
    }
  }
}

TEST(SimdStorageTest, OtherIndexesAreLeftAlone) {
  std::mt19937 rng(5);
  const size_t d = 16;
  const std::vector<float> x = Random(rng, 2000 * d);
  Pair p = MakePair("IVF8,Flat", faiss::METRIC_INNER_PRODUCT, x, d);
  EXPECT_EQ(DistanceImplementation(*p.simd), "faiss");
  Pair sq4 = MakePair("HNSW8,SQ4", faiss::METRIC_INNER_PRODUCT, x, d);
  EXPECT_EQ(DistanceImplementation(*sq4.simd), "faiss");
}

}  // namespace
}  // namespace attnsearch
