// CoreBudget: how many cores the reranker's parallel work may use right now.
//
// The threading model: gRPC handlers hand requests to a fixed pool of
// workers (one per core by default). A query's reranker work — the oneDNN
// matmul and the segmented reduce, both on OpenMP — asks the budget for
// threads: on an idle server one query gets every core; under load each
// query gets what is free, and at least one, so the cores are never
// oversubscribed by more than one thread per concurrent query beyond the
// budget. FAISS graph search runs single-threaded inside the calling worker.
#ifndef ATTNSEARCH_RERANK_CORE_BUDGET_H_
#define ATTNSEARCH_RERANK_CORE_BUDGET_H_

#include <algorithm>
#include <mutex>

namespace attnsearch {

class CoreBudget {
 public:
  // A budget of `cores` (at least one).
  explicit CoreBudget(int cores) : total_(std::max(1, cores)) {}

  // Takes up to `want` threads among those free, at least one.
  int Acquire(int want) {
    std::lock_guard<std::mutex> lock(mu_);
    const int take = std::max(1, std::min(want, total_ - in_use_));
    in_use_ += take;
    return take;
  }
  void Release(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= n;
  }
  int total() const { return total_; }

 private:
  const int total_;
  std::mutex mu_;
  int in_use_ = 0;  // guarded by mu_
};

// Holds threads from a budget for a scope.
class CoreLease {
 public:
  CoreLease(CoreBudget* budget, int want)
      : budget_(budget), n_(budget ? budget->Acquire(want) : want) {}
  ~CoreLease() {
    if (budget_) budget_->Release(n_);
  }
  CoreLease(const CoreLease&) = delete;
  CoreLease& operator=(const CoreLease&) = delete;
  int threads() const { return n_; }

 private:
  CoreBudget* budget_;
  int n_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_CORE_BUDGET_H_
