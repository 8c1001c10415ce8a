#include "core/vector_math.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "test_util.h"

namespace attnsearch {
namespace {

uint32_t BitsOf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Oracle for f32 -> bf16 round-to-nearest-even, written independently of the
// bit trick under test: the two bf16 neighbours of x are found by truncation,
// and the nearer one (the even one on a tie) is chosen in double arithmetic.
// Only for finite x.
uint16_t OracleBf16(float x) {
  const uint32_t bits = BitsOf(x);
  const uint16_t lo = uint16_t(bits >> 16);  // truncation: towards zero
  if ((bits & 0xffffu) == 0) return lo;
  const uint16_t hi = uint16_t(lo + 1);  // next one away from zero
  const double dx = std::fabs(double(x));
  const double dlo = std::fabs(double(Bf16ToFloat(lo)));
  double dhi = std::fabs(double(Bf16ToFloat(hi)));
  // Past the largest finite bf16 the next neighbour is 2^128 (IEEE rounding
  // as if the exponent were unbounded, then overflow to infinity).
  if (std::isinf(dhi)) dhi = std::ldexp(1.0, 128);
  const double err_lo = dx - dlo;
  const double err_hi = dhi - dx;
  if (err_lo < err_hi) return lo;
  if (err_hi < err_lo) return hi;
  return (lo & 1u) == 0 ? lo : hi;
}

TEST(Bf16Test, ChosenBitPatternsRoundToNearestEven) {
  struct Case {
    uint32_t in;
    uint16_t want;
  };
  const Case cases[] = {
      {0x3f800000u, 0x3f80},  // 1.0: exact
      {0x3f807fffu, 0x3f80},  // just below half way: down
      {0x3f808000u, 0x3f80},  // tie, lower neighbour even: down
      {0x3f808001u, 0x3f81},  // just above half way: up
      {0x3f818000u, 0x3f82},  // tie, lower neighbour odd: up to even
      {0x3f817fffu, 0x3f81},  // just below half way from odd: down
      {0xbf808000u, 0xbf80},  // negative tie to even (magnitude down)
      {0xbf818000u, 0xbf82},  // negative tie to even (magnitude up)
      {0x3fffffffu, 0x4000},  // carry into the exponent
      {0x00000000u, 0x0000},  // +0
      {0x80000000u, 0x8000},  // -0
      {0x7f800000u, 0x7f80},  // +inf
      {0xff800000u, 0xff80},  // -inf
      {0x7f7fffffu, 0x7f80},  // FLT_MAX rounds up to +inf
      {0x7f7f7fffu, 0x7f7f},  // largest value that stays finite
      {0x00008000u, 0x0000},  // subnormal tie, even: down
      {0x00018000u, 0x0002},  // subnormal tie, odd: up
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << std::hex << "in=0x" << c.in);
    EXPECT_EQ(FloatToBf16(FromBits(c.in)), c.want);
    EXPECT_EQ(FloatToBf16(FromBits(c.in)), OracleBf16(FromBits(c.in)));
  }
}

TEST(Bf16Test, NanStaysNan) {
  // Quiet and signalling NaNs of both signs, including ones whose payload is
  // only in the low 16 bits (plain truncation would turn them into infinity)
  // and ones that rounding would carry into the sign bit.
  const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,
                           0x7f80ffffu, 0x7fffffffu, 0xffffffffu, 0x7fbfffffu};
  for (uint32_t b : nans) {
    SCOPED_TRACE(::testing::Message() << std::hex << "in=0x" << b);
    ASSERT_TRUE(std::isnan(FromBits(b)));
    const uint16_t h = FloatToBf16(FromBits(b));
    EXPECT_TRUE(std::isnan(Bf16ToFloat(h)));
    // The sign survives.
    EXPECT_EQ(h >> 15, b >> 31);
  }
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Bf16Test, EveryBf16ValueRoundTripsExactly) {
  for (uint32_t h = 0; h <= 0xffffu; ++h) {
    const float f = Bf16ToFloat(uint16_t(h));
    EXPECT_EQ(BitsOf(f), h << 16);
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBf16(f), uint16_t(h)) << std::hex << h;
  }
}

TEST(Bf16Test, RandomBitPatternsMatchOracle) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> any;
  int checked = 0;
  for (int i = 0; i < 200000; ++i) {
    const float x = FromBits(any(rng));
    if (!std::isfinite(x)) continue;
    ++checked;
    ASSERT_EQ(FloatToBf16(x), OracleBf16(x)) << std::hex << BitsOf(x);
  }
  EXPECT_GT(checked, 190000);
}

TEST(Bf16Test, RelativeErrorAtMostTwoToMinusEight) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> mantissa(1.f, 2.f);
  std::uniform_int_distribution<int> exponent(-100, 100);
  std::bernoulli_distribution negative(0.5);
  const double bound = std::ldexp(1.0, -8);
  double worst = 0.0;
  for (int i = 0; i < 100000; ++i) {
    float x = std::ldexp(mantissa(rng), exponent(rng));
    if (negative(rng)) x = -x;
    const float y = Bf16ToFloat(FloatToBf16(x));
    const double rel = std::fabs(double(y) - double(x)) / std::fabs(double(x));
    worst = std::max(worst, rel);
    ASSERT_LE(rel, bound) << x << " -> " << y;
  }
  // The bound is tight: the sample gets close to it.
  EXPECT_GT(worst, bound / 2);
}

TEST(Bf16Test, ArrayConversionsMatchScalar) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 3.f);
  std::vector<float> src(1001);
  for (float& v : src) v = normal(rng);
  src[17] = std::numeric_limits<float>::quiet_NaN();
  src[18] = std::numeric_limits<float>::infinity();
  std::vector<uint16_t> half(src.size());
  FloatToBf16(src.data(), half.data(), src.size());
  std::vector<float> back(src.size());
  Bf16ToFloat(half.data(), back.data(), half.size());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(half[i], FloatToBf16(src[i])) << i;
    EXPECT_EQ(BitsOf(back[i]), BitsOf(Bf16ToFloat(half[i]))) << i;
  }
}

TEST(NormalizeInPlaceTest, RandomVectorsGetUnitNormAndKeepDirection) {
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> dims(1, 300);
  const float scales[] = {1e-20f, 1e-3f, 1.f, 1e3f, 1e20f};
  for (int trial = 0; trial < 200; ++trial) {
    const int n = dims(rng);
    const float scale = scales[trial % 5];
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) * scale;
    const std::vector<float> orig = x;
    double orig_norm = 0.0;
    for (float v : orig) orig_norm += double(v) * v;
    orig_norm = std::sqrt(orig_norm);
    ASSERT_GT(orig_norm, 0.0);
    ASSERT_TRUE(NormalizeInPlace(x.data(), x.size()));
    double ss = 0.0;
    for (float v : x) ss += double(v) * v;
    EXPECT_NEAR(std::sqrt(ss), 1.0, 1e-5) << "n=" << n << " scale=" << scale;
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(x[i], orig[i] / orig_norm, 1e-6) << i;
    }
  }
}

TEST(NormalizeInPlaceTest, ZeroVectorReturnsFalseAndIsUnchanged) {
  std::vector<float> x(16, 0.f);
  x[3] = -0.f;
  const std::vector<float> before = x;
  EXPECT_FALSE(NormalizeInPlace(x.data(), x.size()));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(BitsOf(x[i]), BitsOf(before[i]));
}

TEST(NormalizeInPlaceTest, NonFiniteVectorReturnsFalseAndIsUnchanged) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = {1.f, 2.f, bad, 3.f};
    const std::vector<float> before = x;
    EXPECT_FALSE(NormalizeInPlace(x.data(), x.size()));
    for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(BitsOf(x[i]), BitsOf(before[i]));
  }
}

TEST(NormalizeInPlaceTest, EmptyVectorReturnsFalse) {
  float dummy = 5.f;
  EXPECT_FALSE(NormalizeInPlace(&dummy, 0));
  EXPECT_EQ(dummy, 5.f);
}

TEST(AllFiniteTest, DetectsNanAndInfinityAnywhere) {
  // Long enough for whole blocks of 64 and a remainder.
  std::vector<float> x(200, 0.5f);
  EXPECT_TRUE(AllFinite(x.data(), x.size()));
  EXPECT_TRUE(AllFinite(x.data(), 0));
  x[0] = std::numeric_limits<float>::max();
  x[1] = -std::numeric_limits<float>::max();
  x[2] = std::numeric_limits<float>::denorm_min();
  EXPECT_TRUE(AllFinite(x.data(), x.size()));
  const float bads[] = {
      std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::signaling_NaN(),
      std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
  for (float bad : bads) {
    for (size_t pos : {0, 16, 32, 63, 64, 127, 128, 150, 199}) {
      std::vector<float> y = x;
      y[pos] = bad;
      EXPECT_FALSE(AllFinite(y.data(), y.size())) << "pos=" << pos;
      // Values after the first n are not looked at.
      if (pos > 0) EXPECT_TRUE(AllFinite(y.data(), pos));
    }
  }
}

TEST(DotTest, MatchesDoublePrecisionOracle) {
  std::mt19937 rng(5);
  for (uint32_t dim : {1u, 3u, 32u, 257u}) {
    const std::vector<float> v = testing::RandomUnitRows(rng, 2, dim);
    double want = 0.0;
    for (uint32_t k = 0; k < dim; ++k) want += double(v[k]) * v[dim + k];
    EXPECT_NEAR(Dot(v.data(), v.data() + dim, dim), want, 1e-5) << dim;
    EXPECT_NEAR(Dot(v.data(), v.data(), dim), 1.0, 1e-5) << dim;
  }
}

// The array conversion (written to vectorise) against the scalar one, on
// random bit patterns: NaNs, infinities, subnormals and ties included.
TEST(Bf16Test, ArrayConversionMatchesTheScalarOne) {
  std::mt19937 rng(7);
  std::vector<float> in(1 << 20);
  for (size_t i = 0; i < in.size(); ++i) {
    uint32_t b = rng();
    if (i % 7 == 0) b = (b & 0xffff0000u) | 0x8000u;  // exact ties
    std::memcpy(&in[i], &b, 4);
  }
  std::vector<uint16_t> out(in.size());
  FloatToBf16(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], FloatToBf16(in[i])) << BitsOf(in[i]);
}

// Every half-precision bit pattern against its value computed by ldexp, in
// both the scalar and the array (F16C when present) conversion.
TEST(HalfToFloatTest, EveryBitPatternConvertsExactly) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = uint16_t(h);
  std::vector<float> converted(all.size());
  HalfToFloat(all.data(), converted.data(), all.size());
  for (uint32_t h = 0; h < 65536; ++h) {
    const double sign = (h & 0x8000u) ? -1.0 : 1.0;
    const int exponent = int((h >> 10) & 0x1fu);
    const int mantissa = int(h & 0x3ffu);
    const float scalar = HalfToFloat(uint16_t(h));
    if (exponent == 0x1f) {
      ASSERT_EQ(std::isnan(scalar), mantissa != 0) << h;
      ASSERT_EQ(std::isnan(converted[h]), mantissa != 0) << h;
      if (mantissa == 0) {
        ASSERT_EQ(scalar, float(sign * INFINITY)) << h;
        ASSERT_EQ(converted[h], scalar) << h;
      }
      continue;
    }
    const double expected = exponent == 0
                                ? sign * std::ldexp(double(mantissa), -24)
                                : sign * std::ldexp(double(1024 + mantissa), exponent - 25);
    ASSERT_EQ(double(scalar), expected) << h;
    ASSERT_EQ(double(converted[h]), expected) << h;
    ASSERT_EQ(std::signbit(scalar), sign < 0) << h;  // -0 stays -0
  }
}

}  // namespace
}  // namespace attnsearch
