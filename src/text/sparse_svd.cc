#include "text/sparse_svd.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <random>

namespace attnsearch::text {
namespace {

using MatrixRF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixRD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// out (m.rows x l) = m (rows x cols) * x (cols x l), all row-major.
void MultiplyDense(const CsrMatrix& m, const std::vector<float>& x, uint32_t l,
                   std::vector<float>* out) {
  out->assign(static_cast<size_t>(m.rows) * l, 0.f);
#pragma omp parallel for schedule(dynamic, 256)
  for (int64_t r = 0; r < static_cast<int64_t>(m.rows); ++r) {
    float* o = out->data() + r * l;
    for (uint64_t p = m.row_start[r]; p < m.row_start[r + 1]; ++p) {
      const float v = m.value[p];
      const float* xi = x.data() + static_cast<size_t>(m.col[p]) * l;
      for (uint32_t j = 0; j < l; ++j) o[j] += v * xi[j];
    }
  }
}

// Replaces the columns of y (n x l, row-major) by an orthonormal basis of
// their span (the thin Q of Eigen's Householder QR, in double).
void Orthonormalize(std::vector<float>* y, uint32_t n, uint32_t l) {
  Eigen::Map<MatrixRF> ym(y->data(), n, l);
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(ym.cast<double>());
  ym = (qr.householderQ() * Eigen::MatrixXd::Identity(n, l)).cast<float>();
}

}  // namespace

CsrMatrix CsrMatrix::Transposed() const {
  CsrMatrix t;
  t.rows = cols;
  t.cols = rows;
  t.row_start.assign(static_cast<size_t>(cols) + 1, 0);
  for (uint32_t c : col) ++t.row_start[c + 1];
  for (uint32_t c = 0; c < cols; ++c) t.row_start[c + 1] += t.row_start[c];
  t.col.resize(col.size());
  t.value.resize(value.size());
  std::vector<uint64_t> next(t.row_start.begin(), t.row_start.end() - 1);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint64_t p = row_start[r]; p < row_start[r + 1]; ++p) {
      const uint64_t dst = next[col[p]]++;
      t.col[dst] = r;
      t.value[dst] = value[p];
    }
  }
  return t;
}

void SymmetricEigen(std::vector<double> a, uint32_t n, std::vector<double>* values,
                    std::vector<double>* vectors) {
  values->clear();
  vectors->clear();
  if (n == 0) return;
  const Eigen::Map<const MatrixRD> am(a.data(), n, n);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(am);
  // Eigen gives them ascending.
  values->resize(n);
  vectors->assign(static_cast<size_t>(n) * n, 0.0);
  Eigen::Map<MatrixRD> vm(vectors->data(), n, n);
  for (uint32_t j = 0; j < n; ++j) {
    (*values)[j] = solver.eigenvalues()[n - 1 - j];
    vm.col(j) = solver.eigenvectors().col(n - 1 - j);
  }
}

TruncatedSvd ComputeTruncatedSvd(const CsrMatrix& m, const SvdOptions& options) {
  TruncatedSvd out;
  const uint32_t l =
      std::min<uint32_t>(options.rank + options.oversample, std::min(m.rows, m.cols));
  if (l == 0) return out;
  const CsrMatrix mt = m.Transposed();
  std::mt19937_64 rng(options.seed);
  std::normal_distribution<float> normal;
  std::vector<float> omega(static_cast<size_t>(m.cols) * l);
  for (float& x : omega) x = normal(rng);
  std::vector<float> y, z;
  MultiplyDense(m, omega, l, &y);  // rows x l
  Orthonormalize(&y, m.rows, l);
  for (uint32_t it = 0; it < options.power_iterations; ++it) {
    MultiplyDense(mt, y, l, &z);  // cols x l
    Orthonormalize(&z, m.cols, l);
    MultiplyDense(m, z, l, &y);
    Orthonormalize(&y, m.rows, l);
  }
  // B = Qᵀ M, held as its transpose Bt = Mᵀ Q (cols x l); G = B Bᵀ = Btᵀ Bt.
  MultiplyDense(mt, y, l, &z);
  const Eigen::MatrixXd bt = Eigen::Map<const MatrixRF>(z.data(), m.cols, l).cast<double>();
  Eigen::MatrixXd g = bt.transpose() * bt;
  std::vector<double> values, vectors;
  SymmetricEigen(std::vector<double>(g.data(), g.data() + g.size()), l, &values, &vectors);
  out.rank = std::min(options.rank, l);
  out.singular_values.resize(out.rank);
  for (uint32_t j = 0; j < out.rank; ++j) {
    out.singular_values[j] = std::sqrt(std::max(0.0, values[j]));
  }
  // U = Q W (first `rank` columns).
  const Eigen::Map<const MatrixRD> w(vectors.data(), l, l);
  out.left.resize(static_cast<size_t>(m.rows) * out.rank);
  Eigen::Map<MatrixRF>(out.left.data(), m.rows, out.rank) =
      (Eigen::Map<const MatrixRF>(y.data(), m.rows, l).cast<double>() * w.leftCols(out.rank))
          .cast<float>();
  return out;
}

}  // namespace attnsearch::text
