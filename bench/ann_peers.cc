#include "ann_peers.h"

#include <faiss/IndexHNSW.h>

namespace attnsearch::bench {
namespace {

class FaissHnswPeer : public AnnPeer {
 public:
  FaissHnswPeer(const float* base, size_t n, uint32_t dim, int m, int ef_construction)
      : index_(int(dim), m, faiss::METRIC_INNER_PRODUCT) {
    index_.hnsw.efConstruction = ef_construction;
    index_.add(faiss::Index::idx_t(n), base);
  }
  void SetEf(int ef) override { index_.hnsw.efSearch = ef; }
  void Search(const float* query, size_t k, std::vector<int64_t>* out) override {
    std::vector<float> d(k);
    out->resize(k);
    index_.search(1, query, faiss::Index::idx_t(k), d.data(), out->data());
  }

 private:
  faiss::IndexHNSWFlat index_;
};

}  // namespace

bool HnswlibAvailable() { return __builtin_cpu_supports("avx512f"); }

std::unique_ptr<AnnPeer> BuildFaissHnswFlat(const float* base, size_t n, uint32_t dim, int m,
                                            int ef_construction) {
  return std::make_unique<FaissHnswPeer>(base, n, dim, m, ef_construction);
}

}  // namespace attnsearch::bench
