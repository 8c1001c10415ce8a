#include "text/sparse_svd.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace attnsearch::text {
namespace {

// A dense rows x cols matrix, row-major, in double.
struct Dense {
  uint32_t rows = 0, cols = 0;
  std::vector<double> v;
  Dense(uint32_t r, uint32_t c) : rows(r), cols(c), v(size_t{r} * c, 0.0) {}
  double& operator()(uint32_t i, uint32_t j) { return v[size_t{i} * cols + j]; }
  double operator()(uint32_t i, uint32_t j) const { return v[size_t{i} * cols + j]; }
};

// The nonzeros of `d`, rounded to float, as CSR (columns ascending).
CsrMatrix ToCsr(const Dense& d) {
  CsrMatrix m;
  m.rows = d.rows;
  m.cols = d.cols;
  m.row_start.push_back(0);
  for (uint32_t i = 0; i < d.rows; ++i) {
    for (uint32_t j = 0; j < d.cols; ++j) {
      const float x = static_cast<float>(d(i, j));
      if (x != 0.f) {
        m.col.push_back(j);
        m.value.push_back(x);
      }
    }
    m.row_start.push_back(m.col.size());
  }
  return m;
}

Dense ToDense(const CsrMatrix& m) {
  Dense d(m.rows, m.cols);
  EXPECT_EQ(m.row_start.size(), size_t{m.rows} + 1);
  for (uint32_t i = 0; i < m.rows; ++i) {
    for (uint64_t p = m.row_start[i]; p < m.row_start[i + 1]; ++p) d(i, m.col[p]) += m.value[p];
  }
  return d;
}

// aᵀ a (a.cols x a.cols).
Dense Gram(const Dense& a) {
  Dense g(a.cols, a.cols);
  for (uint32_t r = 0; r < a.rows; ++r) {
    for (uint32_t i = 0; i < a.cols; ++i) {
      const double x = a(r, i);
      if (x == 0.0) continue;
      for (uint32_t j = 0; j < a.cols; ++j) g(i, j) += x * a(r, j);
    }
  }
  return g;
}

Dense RandomSymmetric(std::mt19937_64& rng, uint32_t n) {
  std::normal_distribution<double> normal;
  Dense a(n, n);
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t j = 0; j <= i; ++j) a(i, j) = a(j, i) = normal(rng);
  }
  return a;
}

double FrobeniusNorm(const Dense& a) {
  double s = 0;
  for (double x : a.v) s += x * x;
  return std::sqrt(s);
}

// Checks that (values, vectors) is an eigen-decomposition of the symmetric
// `a`: A v = λ v per column, values descending, V orthonormal.
void ExpectEigenDecomposition(const Dense& a, const std::vector<double>& values,
                              const std::vector<double>& vectors, double tolerance) {
  const uint32_t n = a.rows;
  ASSERT_EQ(values.size(), n);
  ASSERT_EQ(vectors.size(), size_t{n} * n);
  const double scale = std::max(FrobeniusNorm(a), 1e-300);
  for (uint32_t j = 0; j < n; ++j) {
    double residual = 0;
    for (uint32_t i = 0; i < n; ++i) {
      double av = 0;
      for (uint32_t k = 0; k < n; ++k) av += a(i, k) * vectors[size_t{k} * n + j];
      const double r = av - values[j] * vectors[size_t{i} * n + j];
      residual += r * r;
    }
    EXPECT_LE(std::sqrt(residual), tolerance * scale) << "eigenpair " << j;
    if (j > 0) {
      EXPECT_GE(values[j - 1], values[j]) << "eigenvalues not descending at " << j;
    }
  }
  for (uint32_t p = 0; p < n; ++p) {
    for (uint32_t q = p; q < n; ++q) {
      double dot = 0;
      for (uint32_t k = 0; k < n; ++k)
        dot += vectors[size_t{k} * n + p] * vectors[size_t{k} * n + q];
      EXPECT_NEAR(dot, p == q ? 1.0 : 0.0, 1e-10) << "columns " << p << ", " << q;
    }
  }
}

TEST(SymmetricEigenTest, RandomSymmetric20x20) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 5; ++trial) {
    SCOPED_TRACE(trial);
    const Dense a = RandomSymmetric(rng, 20);
    std::vector<double> values, vectors;
    SymmetricEigen(a.v, 20, &values, &vectors);
    ExpectEigenDecomposition(a, values, vectors, 1e-8);
    // The trace is the sum of the eigenvalues.
    double trace = 0, sum = 0;
    for (uint32_t i = 0; i < 20; ++i) trace += a(i, i);
    for (double x : values) sum += x;
    EXPECT_NEAR(sum, trace, 1e-9 * FrobeniusNorm(a));
  }
}

TEST(SymmetricEigenTest, KnownSpectrum) {
  // A = Q diag(d) Qᵀ with Q a random orthogonal matrix (Gram-Schmidt).
  constexpr uint32_t n = 12;
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal;
  std::vector<std::vector<double>> q;
  while (q.size() < n) {
    std::vector<double> c(n);
    for (double& x : c) x = normal(rng);
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& p : q) {
        double d = 0;
        for (uint32_t i = 0; i < n; ++i) d += c[i] * p[i];
        for (uint32_t i = 0; i < n; ++i) c[i] -= d * p[i];
      }
    }
    double norm = 0;
    for (double x : c) norm += x * x;
    norm = std::sqrt(norm);
    for (double& x : c) x /= norm;
    q.push_back(c);
  }
  const std::vector<double> d = {3.5, -7, 0, 12, 1e-3, -0.25, 5, 5.5, -3, 2, 100, -100};
  Dense a(n, n);
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t j = 0; j < n; ++j) {
      for (uint32_t k = 0; k < n; ++k) a(i, j) += q[k][i] * d[k] * q[k][j];
    }
  }
  std::vector<double> values, vectors;
  SymmetricEigen(a.v, n, &values, &vectors);
  ExpectEigenDecomposition(a, values, vectors, 1e-10);
  std::vector<double> want = d;
  std::sort(want.begin(), want.end(), std::greater<double>());
  ASSERT_EQ(values.size(), n);
  for (uint32_t i = 0; i < n; ++i) EXPECT_NEAR(values[i], want[i], 1e-10 * 100) << i;
}

TEST(SymmetricEigenTest, DiagonalIdentityAndTiny) {
  {
    // Already diagonal: the values sorted, the vectors a permutation.
    Dense a(4, 4);
    a(0, 0) = 1;
    a(1, 1) = -2;
    a(2, 2) = 7;
    a(3, 3) = 3;
    std::vector<double> values, vectors;
    SymmetricEigen(a.v, 4, &values, &vectors);
    EXPECT_EQ(values, (std::vector<double>{7, 3, 1, -2}));
    ExpectEigenDecomposition(a, values, vectors, 1e-14);
  }
  {
    // Repeated eigenvalues: any orthonormal basis.
    Dense a(5, 5);
    for (uint32_t i = 0; i < 5; ++i) a(i, i) = 2;
    std::vector<double> values, vectors;
    SymmetricEigen(a.v, 5, &values, &vectors);
    ExpectEigenDecomposition(a, values, vectors, 1e-14);
    for (double x : values) EXPECT_EQ(x, 2);
  }
  {
    std::vector<double> values, vectors;
    SymmetricEigen({-4.5}, 1, &values, &vectors);
    EXPECT_EQ(values, std::vector<double>{-4.5});
    EXPECT_EQ(vectors, std::vector<double>{1.0});
    SymmetricEigen({}, 0, &values, &vectors);
    EXPECT_TRUE(values.empty());
    EXPECT_TRUE(vectors.empty());
  }
  {
    // 2 x 2 with a known answer: [[2, 1], [1, 2]] has 3 and 1.
    Dense a(2, 2);
    a.v = {2, 1, 1, 2};
    std::vector<double> values, vectors;
    SymmetricEigen(a.v, 2, &values, &vectors);
    ASSERT_EQ(values.size(), 2u);
    EXPECT_NEAR(values[0], 3, 1e-14);
    EXPECT_NEAR(values[1], 1, 1e-14);
    EXPECT_NEAR(std::abs(vectors[0]), std::sqrt(0.5), 1e-14);
    ExpectEigenDecomposition(a, values, vectors, 1e-14);
  }
}

// A sparse-ish random vector: each entry nonzero (standard normal) with
// probability `density`.
std::vector<double> SparseVector(std::mt19937_64& rng, uint32_t n, double density) {
  std::normal_distribution<double> normal;
  std::bernoulli_distribution keep(density);
  std::vector<double> v(n, 0.0);
  for (double& x : v) {
    if (keep(rng)) x = normal(rng);
  }
  return v;
}

// Σ_k weights[k] u_k v_kᵀ, rows x cols.
Dense LowRank(std::mt19937_64& rng, uint32_t rows, uint32_t cols,
              const std::vector<double>& weights) {
  Dense m(rows, cols);
  for (double w : weights) {
    const std::vector<double> u = SparseVector(rng, rows, 0.2);
    const std::vector<double> v = SparseVector(rng, cols, 0.2);
    for (uint32_t i = 0; i < rows; ++i) {
      if (u[i] == 0) continue;
      for (uint32_t j = 0; j < cols; ++j) m(i, j) += w * u[i] * v[j];
    }
  }
  return m;
}

// The dense oracle: singular values (descending) and left singular vectors
// (rows x n, column j for σ_j) of `m`, from the eigen-decomposition of mᵀm
// (u_j = m v_j / σ_j; only for σ_j > 0).
struct DenseSvd {
  std::vector<double> sigma;
  Dense left;
};

DenseSvd Oracle(const Dense& m, uint32_t n) {
  const Dense g = Gram(m);
  std::vector<double> values, vectors;
  SymmetricEigen(g.v, m.cols, &values, &vectors);
  DenseSvd out{{}, Dense(m.rows, n)};
  for (uint32_t j = 0; j < n; ++j) {
    const double sigma = std::sqrt(std::max(0.0, values[j]));
    out.sigma.push_back(sigma);
    for (uint32_t i = 0; i < m.rows; ++i) {
      double x = 0;
      for (uint32_t k = 0; k < m.cols; ++k) x += m(i, k) * vectors[size_t{k} * m.cols + j];
      out.left(i, j) = sigma > 0 ? x / sigma : 0.0;
    }
  }
  return out;
}

// Column j of svd.left · column i of the oracle's left vectors.
double LeftDot(const TruncatedSvd& svd, uint32_t j, const Dense& oracle, uint32_t i) {
  double d = 0;
  for (uint32_t r = 0; r < oracle.rows; ++r) d += svd.left[size_t{r} * svd.rank + j] * oracle(r, i);
  return d;
}

// Checks the first `k` triplets of `svd` against the oracle: equal singular
// values, matching left vectors (up to sign) spanning the same subspace, and
// orthonormal columns.
void ExpectMatchesOracle(const TruncatedSvd& svd, const DenseSvd& oracle, uint32_t k,
                         double tolerance) {
  ASSERT_GE(svd.rank, k);
  ASSERT_EQ(svd.singular_values.size(), svd.rank);
  ASSERT_EQ(svd.left.size(), size_t{oracle.left.rows} * svd.rank);
  for (uint32_t j = 0; j < svd.rank; ++j) {
    if (j > 0) {
      EXPECT_GE(svd.singular_values[j - 1], svd.singular_values[j]);
    }
  }
  for (uint32_t j = 0; j < k; ++j) {
    SCOPED_TRACE(::testing::Message() << "triplet " << j);
    EXPECT_NEAR(svd.singular_values[j], oracle.sigma[j], tolerance * oracle.sigma[j]);
    // Same vector up to sign (the singular values are distinct).
    EXPECT_NEAR(std::abs(LeftDot(svd, j, oracle.left, j)), 1.0, tolerance);
    // Its projection onto the oracle's k-dimensional subspace is whole.
    double projected = 0;
    for (uint32_t i = 0; i < k; ++i) projected += std::pow(LeftDot(svd, j, oracle.left, i), 2);
    EXPECT_NEAR(std::sqrt(projected), 1.0, tolerance);
    for (uint32_t i = 0; i <= j; ++i) {
      double dot = 0;
      for (uint32_t r = 0; r < oracle.left.rows; ++r) {
        dot += double(svd.left[size_t{r} * svd.rank + i]) * svd.left[size_t{r} * svd.rank + j];
      }
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, tolerance) << "columns " << i << ", " << j;
    }
  }
}

TEST(TruncatedSvdTest, SparseLowRankMatchesDenseOracle) {
  std::mt19937_64 rng(2024);
  const std::vector<double> weights = {100, 60, 35, 20, 10};
  const CsrMatrix m = ToCsr(LowRank(rng, 300, 200, weights));
  ASSERT_GT(m.col.size(), 1000u);
  ASSERT_LT(m.col.size(), 300u * 200 / 2) << "not sparse";
  // The oracle works on exactly the stored (float) values.
  const Dense stored = ToDense(m);
  const DenseSvd oracle = Oracle(stored, 6);
  ASSERT_GT(oracle.sigma[4], 1e3 * oracle.sigma[5]) << "the matrix should have rank 5";
  for (uint32_t j = 1; j < 5; ++j) {
    ASSERT_LT(oracle.sigma[j], 0.99 * oracle.sigma[j - 1]) << "singular values too close";
  }

  for (uint32_t power_iterations : {0u, 3u}) {
    SCOPED_TRACE(::testing::Message() << "power_iterations " << power_iterations);
    SvdOptions options;
    options.rank = 5;
    options.power_iterations = power_iterations;
    options.seed = 99;
    const TruncatedSvd svd = ComputeTruncatedSvd(m, options);
    EXPECT_EQ(svd.rank, 5u);
    ExpectMatchesOracle(svd, oracle, 5, 1e-3);
  }
}

TEST(TruncatedSvdTest, RankAboveTheMatrixRankGivesZeros) {
  std::mt19937_64 rng(5);
  const CsrMatrix m = ToCsr(LowRank(rng, 300, 200, {100, 60, 35, 20, 10}));
  const DenseSvd oracle = Oracle(ToDense(m), 5);
  SvdOptions options;
  options.rank = 8;
  const TruncatedSvd svd = ComputeTruncatedSvd(m, options);
  ASSERT_EQ(svd.rank, 8u);
  ExpectMatchesOracle(svd, oracle, 5, 1e-3);
  for (uint32_t j = 5; j < 8; ++j) EXPECT_LT(svd.singular_values[j], 1e-3 * oracle.sigma[0]) << j;
}

TEST(TruncatedSvdTest, LowRankPlusNoise) {
  std::mt19937_64 rng(17);
  Dense d = LowRank(rng, 300, 200, {100, 60, 35, 20, 10});
  // Small noise on the existing nonzeros keeps the matrix sparse.
  std::normal_distribution<double> noise(0.0, 1e-3);
  for (double& x : d.v) {
    if (x != 0) x += noise(rng);
  }
  const CsrMatrix m = ToCsr(d);
  const DenseSvd oracle = Oracle(ToDense(m), 5);
  SvdOptions options;
  options.rank = 5;
  const TruncatedSvd svd = ComputeTruncatedSvd(m, options);
  ExpectMatchesOracle(svd, oracle, 5, 1e-3);
}

TEST(TruncatedSvdTest, RankIsCappedByTheMatrixShape) {
  // A dense 12 x 7 random matrix: at most 7 triplets, all of them exact
  // (the range finder spans the whole column space).
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  Dense d(12, 7);
  for (double& x : d.v) x = normal(rng);
  const CsrMatrix m = ToCsr(d);
  const DenseSvd oracle = Oracle(ToDense(m), 7);
  SvdOptions options;
  options.rank = 20;
  const TruncatedSvd svd = ComputeTruncatedSvd(m, options);
  EXPECT_EQ(svd.rank, 7u);
  ExpectMatchesOracle(svd, oracle, 7, 1e-4);

  // The same through the wide transpose (7 x 12).
  const CsrMatrix t = m.Transposed();
  const DenseSvd oracle_t = Oracle(ToDense(t), 7);
  const TruncatedSvd svd_t = ComputeTruncatedSvd(t, options);
  EXPECT_EQ(svd_t.rank, 7u);
  ExpectMatchesOracle(svd_t, oracle_t, 7, 1e-4);
  for (uint32_t j = 0; j < 7; ++j) {
    EXPECT_NEAR(svd_t.singular_values[j], svd.singular_values[j], 1e-4 * svd.singular_values[0]);
  }
}

TEST(TruncatedSvdTest, EmptyMatrix) {
  CsrMatrix m;
  m.row_start = {0};
  const TruncatedSvd svd = ComputeTruncatedSvd(m, SvdOptions());
  EXPECT_EQ(svd.rank, 0u);
  EXPECT_TRUE(svd.singular_values.empty());
  EXPECT_TRUE(svd.left.empty());
}

TEST(TruncatedSvdTest, SameSeedSameResult) {
  std::mt19937_64 rng(8);
  const CsrMatrix m = ToCsr(LowRank(rng, 120, 80, {9, 5, 2}));
  SvdOptions options;
  options.rank = 3;
  options.seed = 1234;
  const TruncatedSvd a = ComputeTruncatedSvd(m, options);
  const TruncatedSvd b = ComputeTruncatedSvd(m, options);
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.singular_values, b.singular_values);
  EXPECT_EQ(a.left, b.left);
}

// A random sparse matrix with some empty rows and columns, columns ascending
// within each row.
CsrMatrix RandomSparse(std::mt19937_64& rng, uint32_t rows, uint32_t cols) {
  std::normal_distribution<double> normal;
  std::bernoulli_distribution keep(0.15);
  Dense d(rows, cols);
  for (uint32_t i = 0; i < rows; ++i) {
    if (i % 7 == 3) continue;  // empty row
    for (uint32_t j = 0; j < cols; ++j) {
      if (j % 5 == 2) continue;  // empty column
      if (keep(rng)) d(i, j) = normal(rng);
    }
  }
  return ToCsr(d);
}

void ExpectSameCsr(const CsrMatrix& a, const CsrMatrix& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.row_start, b.row_start);
  EXPECT_EQ(a.col, b.col);
  EXPECT_EQ(a.value, b.value);
}

TEST(CsrMatrixTest, TransposedMatchesDenseAndRoundTrips) {
  std::mt19937_64 rng(21);
  for (auto [rows, cols] : {std::pair<uint32_t, uint32_t>{37, 23}, {23, 37}, {1, 50}, {50, 1}}) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << cols);
    const CsrMatrix m = RandomSparse(rng, rows, cols);
    const CsrMatrix t = m.Transposed();
    ASSERT_EQ(t.rows, cols);
    ASSERT_EQ(t.cols, rows);
    ASSERT_EQ(t.col.size(), m.col.size());
    const Dense dm = ToDense(m), dt = ToDense(t);
    for (uint32_t i = 0; i < rows; ++i) {
      for (uint32_t j = 0; j < cols; ++j) ASSERT_EQ(dt(j, i), dm(i, j)) << i << ", " << j;
    }
    // Columns ascending within each row of the transpose.
    for (uint32_t r = 0; r < t.rows; ++r) {
      for (uint64_t p = t.row_start[r] + 1; p < t.row_start[r + 1]; ++p) {
        EXPECT_LT(t.col[p - 1], t.col[p]);
      }
    }
    ExpectSameCsr(t.Transposed(), m);
  }
}

TEST(CsrMatrixTest, TransposedOfEmptyShapes) {
  CsrMatrix empty;
  empty.row_start = {0};
  const CsrMatrix t = empty.Transposed();
  EXPECT_EQ(t.rows, 0u);
  EXPECT_EQ(t.cols, 0u);
  EXPECT_EQ(t.row_start, std::vector<uint64_t>{0});

  // 3 x 4 with no nonzeros.
  CsrMatrix zeros;
  zeros.rows = 3;
  zeros.cols = 4;
  zeros.row_start = {0, 0, 0, 0};
  const CsrMatrix zt = zeros.Transposed();
  EXPECT_EQ(zt.rows, 4u);
  EXPECT_EQ(zt.cols, 3u);
  EXPECT_EQ(zt.row_start, (std::vector<uint64_t>{0, 0, 0, 0, 0}));
  ExpectSameCsr(zt.Transposed(), zeros);
}

}  // namespace
}  // namespace attnsearch::text
