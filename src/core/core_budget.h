// CoreBudget: how many cores are free for a query's parallel work right now.
//
// The threading model: gRPC handlers hand requests to a fixed pool of
// workers (one per core by default). A worker holds one core of the budget
// for every job it runs, whatever the job's stage (a RocksDB fetch needs
// its core as much as a matmul does). A query's reranker work — the oneDNN
// matmul and the segmented reduce, both on OpenMP — runs on the worker's
// own thread plus the extra threads the budget can spare: on an idle server
// one query gets every core; while the other workers are busy it gets none
// and runs on its own thread, so parallel reranking never takes a core from
// another request. FAISS graph search runs single-threaded in the worker;
// the centroid first stage's similarity matmul (oneDNN) runs on OpenMP's
// default threads, outside the budget (README.md, "Threading").
#ifndef ATTNSEARCH_CORE_CORE_BUDGET_H_
#define ATTNSEARCH_CORE_CORE_BUDGET_H_

#include <algorithm>

#include "absl/synchronization/mutex.h"

namespace attnsearch {

class CoreBudget {
 public:
  // A budget of `cores` (at least one).
  explicit CoreBudget(int cores) : total_(std::max(1, cores)) {}

  // Takes up to `want` of the free cores, and at least `at_least` even when
  // that overcommits the budget (a worker must run its job).
  int Acquire(int want, int at_least) {
    absl::MutexLock lock(&mu_);
    const int take = std::max(at_least, std::min(want, total_ - in_use_));
    in_use_ += take;
    return take;
  }
  void Release(int n) {
    absl::MutexLock lock(&mu_);
    in_use_ -= n;
  }
  int total() const { return total_; }
  int in_use() const {
    absl::MutexLock lock(&mu_);
    return in_use_;
  }

 private:
  const int total_;
  mutable absl::Mutex mu_;
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;
};

// Holds cores from a budget for a scope. Without a budget it holds `want`.
class CoreLease {
 public:
  CoreLease(CoreBudget* budget, int want, int at_least)
      : budget_(budget), n_(budget ? budget->Acquire(want, at_least) : want) {}
  ~CoreLease() {
    if (budget_) budget_->Release(n_);
  }
  CoreLease(const CoreLease&) = delete;
  CoreLease& operator=(const CoreLease&) = delete;
  int cores() const { return n_; }

 private:
  CoreBudget* budget_;
  int n_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_CORE_BUDGET_H_
