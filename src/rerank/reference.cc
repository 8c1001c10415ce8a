#include "rerank/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace attnsearch {

double ReferenceScore(const float* query, uint32_t m, const float* weights, const float* doc,
                      uint32_t n, uint32_t dim, RerankMode mode, float temperature) {
  if (n == 0) return -std::numeric_limits<double>::infinity();
  double score = 0.0;
  std::vector<double> s(n);
  for (uint32_t i = 0; i < m; ++i) {
    double best = -std::numeric_limits<double>::infinity();
    for (uint32_t j = 0; j < n; ++j) {
      double dot = 0.0;
      for (uint32_t k = 0; k < dim; ++k) {
        dot += double(query[size_t(i) * dim + k]) * double(doc[size_t(j) * dim + k]);
      }
      s[j] = dot;
      best = std::max(best, dot);
    }
    double contribution = best;
    if (mode == RerankMode::kAttention) {
      double z = 0.0, num = 0.0;
      for (uint32_t j = 0; j < n; ++j) {
        const double e = std::exp((s[j] - best) / temperature);
        z += e;
        num += e * s[j];
      }
      contribution = num / z;
    }
    score += double(weights[i]) * contribution;
  }
  return score;
}

std::vector<double> ReferenceAttention(const float* query, uint32_t m, const float* doc, uint32_t n,
                                       uint32_t dim, RerankMode mode, float temperature) {
  std::vector<double> out(size_t(m) * n, 0.0);
  for (uint32_t i = 0; i < m && n > 0; ++i) {
    double* row = out.data() + size_t(i) * n;
    uint32_t arg = 0;
    for (uint32_t j = 0; j < n; ++j) {
      double dot = 0.0;
      for (uint32_t k = 0; k < dim; ++k) {
        dot += double(query[size_t(i) * dim + k]) * double(doc[size_t(j) * dim + k]);
      }
      row[j] = dot;
      if (dot > row[arg]) arg = j;
    }
    if (mode != RerankMode::kAttention) {
      std::fill(row, row + n, 0.0);
      row[arg] = 1.0;
      continue;
    }
    const double best = row[arg];
    double z = 0.0;
    for (uint32_t j = 0; j < n; ++j) z += row[j] = std::exp((row[j] - best) / temperature);
    for (uint32_t j = 0; j < n; ++j) row[j] /= z;
  }
  return out;
}

}  // namespace attnsearch
