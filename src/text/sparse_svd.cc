#include "text/sparse_svd.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace attnsearch::text {
namespace {

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

// Orthonormalises the columns of y (n x l, row-major) in place by modified
// Gram-Schmidt, twice for stability. Columns that vanish are zeroed.
void Orthonormalize(std::vector<float>* y, uint32_t n, uint32_t l) {
  std::vector<double> col(n);
  std::vector<std::vector<double>> q;
  q.reserve(l);
  for (uint32_t j = 0; j < l; ++j) {
    for (uint32_t i = 0; i < n; ++i) col[i] = (*y)[static_cast<size_t>(i) * l + j];
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& prev : q) {
        const double d = std::inner_product(col.begin(), col.end(), prev.begin(), 0.0);
        for (uint32_t i = 0; i < n; ++i) col[i] -= d * prev[i];
      }
    }
    const double norm = std::sqrt(std::inner_product(col.begin(), col.end(), col.begin(), 0.0));
    if (norm > 1e-10) {
      for (double& v : col) v /= norm;
    } else {
      std::fill(col.begin(), col.end(), 0.0);
    }
    q.push_back(col);
  }
  for (uint32_t j = 0; j < l; ++j) {
    for (uint32_t i = 0; i < n; ++i) (*y)[static_cast<size_t>(i) * l + j] = q[j][i];
  }
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
  std::vector<double> v(static_cast<size_t>(n) * n, 0.0);
  for (uint32_t i = 0; i < n; ++i) v[static_cast<size_t>(i) * n + i] = 1.0;
  auto A = [&](uint32_t i, uint32_t j) -> double& { return a[static_cast<size_t>(i) * n + j]; };
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0, total = 0.0;
    for (uint32_t i = 0; i < n; ++i) {
      for (uint32_t j = 0; j < n; ++j) {
        total += A(i, j) * A(i, j);
        if (i != j) off += A(i, j) * A(i, j);
      }
    }
    if (off <= 1e-22 * std::max(total, 1e-300)) break;
    for (uint32_t p = 0; p + 1 < n; ++p) {
      for (uint32_t q = p + 1; q < n; ++q) {
        const double apq = A(p, q);
        if (std::abs(apq) < 1e-300) continue;
        const double theta = (A(q, q) - A(p, p)) / (2.0 * apq);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (uint32_t k = 0; k < n; ++k) {  // columns p, q
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = c * akp - s * akq;
          A(k, q) = s * akp + c * akq;
        }
        for (uint32_t k = 0; k < n; ++k) {  // rows p, q
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = c * apk - s * aqk;
          A(q, k) = s * apk + c * aqk;
        }
        for (uint32_t k = 0; k < n; ++k) {
          double& vkp = v[static_cast<size_t>(k) * n + p];
          double& vkq = v[static_cast<size_t>(k) * n + q];
          const double a0 = vkp, a1 = vkq;
          vkp = c * a0 - s * a1;
          vkq = s * a0 + c * a1;
        }
      }
    }
  }
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t x, uint32_t y) { return A(x, x) > A(y, y); });
  values->resize(n);
  vectors->assign(static_cast<size_t>(n) * n, 0.0);
  for (uint32_t j = 0; j < n; ++j) {
    (*values)[j] = A(order[j], order[j]);
    for (uint32_t k = 0; k < n; ++k) {
      (*vectors)[static_cast<size_t>(k) * n + j] = v[static_cast<size_t>(k) * n + order[j]];
    }
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
  std::vector<double> g(static_cast<size_t>(l) * l, 0.0);
  for (uint32_t c = 0; c < m.cols; ++c) {
    const float* row = z.data() + static_cast<size_t>(c) * l;
    for (uint32_t i = 0; i < l; ++i) {
      const double ri = row[i];
      if (ri == 0.0) continue;
      for (uint32_t j = i; j < l; ++j) g[static_cast<size_t>(i) * l + j] += ri * row[j];
    }
  }
  for (uint32_t i = 0; i < l; ++i) {
    for (uint32_t j = 0; j < i; ++j)
      g[static_cast<size_t>(i) * l + j] = g[static_cast<size_t>(j) * l + i];
  }
  std::vector<double> values, vectors;
  SymmetricEigen(std::move(g), l, &values, &vectors);
  out.rank = std::min(options.rank, l);
  out.singular_values.resize(out.rank);
  for (uint32_t j = 0; j < out.rank; ++j)
    out.singular_values[j] = std::sqrt(std::max(0.0, values[j]));
  // U = Q W (first `rank` columns).
  out.left.assign(static_cast<size_t>(m.rows) * out.rank, 0.f);
  for (uint32_t r = 0; r < m.rows; ++r) {
    const float* q = y.data() + static_cast<size_t>(r) * l;
    float* u = out.left.data() + static_cast<size_t>(r) * out.rank;
    for (uint32_t i = 0; i < l; ++i) {
      const double qi = q[i];
      if (qi == 0.0) continue;
      for (uint32_t j = 0; j < out.rank; ++j) u[j] += qi * vectors[static_cast<size_t>(i) * l + j];
    }
  }
  return out;
}

}  // namespace attnsearch::text
