// Truncated SVD of a sparse matrix by randomised range finding with power
// iterations (Halko, Martinsson & Tropp 2011), the decompositions done by
// Eigen (Householder QR, the self-adjoint eigensolver). Internal to the
// encoder.
#ifndef ATTNSEARCH_TEXT_SPARSE_SVD_H_
#define ATTNSEARCH_TEXT_SPARSE_SVD_H_

#include <cstdint>
#include <vector>

namespace attnsearch::text {

// A rows x cols matrix in compressed sparse row form.
struct CsrMatrix {
  uint32_t rows = 0, cols = 0;
  std::vector<uint64_t> row_start;  // rows + 1 offsets into col/value
  std::vector<uint32_t> col;
  std::vector<float> value;

  CsrMatrix Transposed() const;
};

struct SvdOptions {
  uint32_t rank = 64;        // singular triplets wanted
  uint32_t oversample = 10;  // extra random directions
  uint32_t power_iterations = 3;
  uint64_t seed = 42;
};

struct TruncatedSvd {
  uint32_t rank = 0;                   // may be below the requested rank
  std::vector<float> singular_values;  // descending
  std::vector<float> left;             // rows x rank, row-major
};

// The leading singular values and left singular vectors of `m`.
TruncatedSvd ComputeTruncatedSvd(const CsrMatrix& m, const SvdOptions& options);

// Eigen-decomposition of the symmetric n x n matrix `a` (row-major; Eigen's
// SelfAdjointEigenSolver): eigenvalues descending, eigenvectors as the
// columns of `vectors` (n x n row-major).
void SymmetricEigen(std::vector<double> a, uint32_t n, std::vector<double>* values,
                    std::vector<double>* vectors);

}  // namespace attnsearch::text

#endif  // ATTNSEARCH_TEXT_SPARSE_SVD_H_
