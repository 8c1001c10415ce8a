#include "rerank/reference.h"

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

}  // namespace attnsearch
