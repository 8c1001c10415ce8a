// NearestRows against the exact argmax of the f32 inner products: the row
// it picks is the best one or within bf16 rounding of it, for every query,
// across block boundaries (n not a multiple of the block) and table sizes.
#include "rerank/nearest_rows.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>

#include "oneapi/dnnl/dnnl.hpp"
#include "test_util.h"

namespace attnsearch {
namespace {

// Both kernels: the AMX tile kernel (where the CPU has it) and oneDNN's.
class NearestRowsTest : public ::testing::TestWithParam<bool> {};

TEST_P(NearestRowsTest, PicksTheBestRowOrATieWithinBf16Rounding) {
  std::mt19937 rng(5);
  NearestRowsOptions options;
  options.tile_kernel = GetParam();
  // Shapes off every block size: 1 row, 17 (one tile column and a bit),
  // dimensions not a multiple of 32, n across the 256-row tasks.
  for (const auto& [k, dim, n] :
       std::vector<std::tuple<size_t, uint32_t, size_t>>{{1, 8, 3},
                                                         {17, 16, 65},
                                                         {33, 40, 257},
                                                         {1000, 64, 300},
                                                         {4096, 128, 129},
                                                         {2000, 100, 700}}) {
    const std::vector<float> table = testing::RandomUnitRows(rng, k, dim);
    const std::vector<float> rows = testing::RandomUnitRows(rng, n, dim);
    auto finder = NearestRows::Create(table.data(), k, dim, options);
    ASSERT_TRUE(finder.ok()) << finder.status();
    SCOPED_TRACE((*finder)->kernel());
    if (!GetParam()) {
      EXPECT_EQ(std::string((*finder)->kernel()).rfind("onednn matmul", 0), 0u);
    }
    std::vector<uint32_t> got(n, 12345);
    ASSERT_TRUE((*finder)->Find(rows.data(), n, got.data()).ok());
    size_t exact = 0;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_LT(got[i], k);
      double best = -2, picked = 0;
      size_t best_j = 0;
      for (size_t j = 0; j < k; ++j) {
        double dot = 0;
        for (uint32_t t = 0; t < dim; ++t) dot += double(rows[i * dim + t]) * table[j * dim + t];
        if (dot > best) best = dot, best_j = j;
        if (j == got[i]) picked = dot;
      }
      EXPECT_GE(picked, best - 0.02) << "k " << k << " row " << i;
      exact += got[i] == best_j;
    }
    EXPECT_GE(double(exact), 0.9 * double(n)) << "k " << k;
  }
  EXPECT_FALSE(NearestRows::Create(nullptr, 0, 8).ok());
}

// Every similarity, against the exact products: bf16 rounding of both
// operands (relative 2^-8 each) bounds the error for unit rows.
TEST_P(NearestRowsTest, SimilaritiesAreTheProductsWithinBf16Rounding) {
  std::mt19937 rng(6);
  NearestRowsOptions options;
  options.tile_kernel = GetParam();
  for (const auto& [k, dim, n] :
       std::vector<std::tuple<size_t, uint32_t, size_t>>{{1, 8, 3},
                                                         {17, 16, 65},
                                                         {33, 40, 257},
                                                         {1000, 64, 300},
                                                         {2000, 100, 33},
                                                         {500, 64, 32},
                                                         {500, 64, 7},
                                                         {8192, 128, 32}}) {
    const std::vector<float> table = testing::RandomUnitRows(rng, k, dim);
    const std::vector<float> rows = testing::RandomUnitRows(rng, n, dim);
    auto finder = NearestRows::Create(table.data(), k, dim, options);
    ASSERT_TRUE(finder.ok()) << finder.status();
    std::vector<float> got(n * k, NAN);
    ASSERT_TRUE((*finder)->Similarities(rows.data(), n, got.data()).ok());
    // Again, on the matmul kept for n rows: the same values.
    std::vector<float> again(n * k, NAN);
    ASSERT_TRUE((*finder)->Similarities(rows.data(), n, again.data()).ok());
    ASSERT_EQ(got, again);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < k; ++j) {
        double dot = 0;
        for (uint32_t t = 0; t < dim; ++t) dot += double(rows[i * dim + t]) * table[j * dim + t];
        ASSERT_NEAR(got[j * n + i], dot, 0.02) << (*finder)->kernel() << " k " << k << " row " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, NearestRowsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "TileKernelWherePresent" : "OneDnn";
                         });

// On an AMX machine the tile kernel runs unless ONEDNN_MAX_CPU_ISA holds the
// process below AMX (ctest runs this test again so capped).
TEST(NearestRowsKernelTest, TileKernelExactlyWhereAmxIsAllowed) {
  const std::vector<float> table(64 * 32, 0.5f);
  auto finder = NearestRows::Create(table.data(), 64, 32);
  ASSERT_TRUE(finder.ok()) << finder.status();
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  const bool amx = isa == dnnl::cpu_isa::avx512_core_amx;
  // Below AVX-512 oneDNN has no bf16 matmul: the bf16 values are widened.
  const bool avx512 = (unsigned(isa) & unsigned(dnnl::cpu_isa::avx512_core)) ==
                      unsigned(dnnl::cpu_isa::avx512_core);
  EXPECT_STREQ((*finder)->kernel(), amx      ? "amx tiles"
                                    : avx512 ? "onednn matmul"
                                             : "onednn matmul (bf16 widened to f32)");
  std::printf("nearest rows kernel: %s\n", (*finder)->kernel());
}

}  // namespace
}  // namespace attnsearch
