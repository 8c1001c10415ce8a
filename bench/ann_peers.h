// The peers of the ann benchmark, each built over the same unit vectors with
// the same M and efConstruction and searched one query per call:
//   - hnswlib (Debian's libhnswlib-dev, header-only), inner-product space,
//     compiled with AVX-512 so that it runs its fastest kernels; its graph
//     is built by `threads` threads as its Python binding does.
//   - Debian FAISS's plain IndexHNSWFlat (FAISS's own distance code and
//     graph search; efSearch set on the index).
#ifndef ATTNSEARCH_BENCH_ANN_PEERS_H_
#define ATTNSEARCH_BENCH_ANN_PEERS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace attnsearch::bench {

// A built index that answers one query at a time.
class AnnPeer {
 public:
  virtual ~AnnPeer() = default;
  // Sets the search beam (efSearch).
  virtual void SetEf(int ef) = 0;
  // The k nearest (by inner product) row numbers of `query`, best first.
  virtual void Search(const float* query, size_t k, std::vector<int64_t>* out) = 0;
};

// Whether the hnswlib peer can run here (it needs AVX-512F).
bool HnswlibAvailable();
// Builds hnswlib over n rows (n x dim); REQUIRES HnswlibAvailable().
std::unique_ptr<AnnPeer> BuildHnswlib(const float* base, size_t n, uint32_t dim, int m,
                                      int ef_construction, int threads);
// Builds FAISS's IndexHNSWFlat (inner product) with FAISS's OpenMP threads.
std::unique_ptr<AnnPeer> BuildFaissHnswFlat(const float* base, size_t n, uint32_t dim, int m,
                                            int ef_construction);

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_ANN_PEERS_H_
