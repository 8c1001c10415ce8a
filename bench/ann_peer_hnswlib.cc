// hnswlib peer; this file alone is compiled with AVX-512 flags (see
// bench/CMakeLists.txt) and only called when the CPU has AVX-512F.
#include <hnswlib/hnswlib.h>

#include <atomic>
#include <thread>

#include "ann_peers.h"

namespace attnsearch::bench {
namespace {

class HnswlibPeer : public AnnPeer {
 public:
  HnswlibPeer(const float* base, size_t n, uint32_t dim, int m, int ef_construction, int threads)
      : space_(dim), index_(&space_, n, size_t(m), size_t(ef_construction), 100) {
    // Like hnswlib's Python binding: the first point alone, the rest by
    // `threads` workers taking rows in turn.
    if (n == 0) return;
    index_.addPoint(base, 0);
    std::atomic<size_t> next{1};
    std::vector<std::thread> workers;
    for (int t = 0; t < std::max(1, threads); ++t) {
      workers.emplace_back([&] {
        for (size_t i; (i = next.fetch_add(1)) < n;) index_.addPoint(base + i * dim, i);
      });
    }
    for (auto& w : workers) w.join();
  }
  void SetEf(int ef) override { index_.setEf(size_t(ef)); }
  void Search(const float* query, size_t k, std::vector<int64_t>* out) override {
    auto heap = index_.searchKnn(query, k);  // worst on top
    out->assign(heap.size(), 0);
    for (size_t i = heap.size(); i-- > 0;) {
      (*out)[i] = int64_t(heap.top().second);
      heap.pop();
    }
  }

 private:
  hnswlib::InnerProductSpace space_;
  hnswlib::HierarchicalNSW<float> index_;
};

}  // namespace

std::unique_ptr<AnnPeer> BuildHnswlib(const float* base, size_t n, uint32_t dim, int m,
                                      int ef_construction, int threads) {
  return std::make_unique<HnswlibPeer>(base, n, dim, m, ef_construction, threads);
}

}  // namespace attnsearch::bench
