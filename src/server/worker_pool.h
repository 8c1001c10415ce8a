// WorkerPool: a fixed set of threads running submitted jobs in FIFO order.
// The gRPC callback handlers hand their work to it so that reactions stay
// short and the number of threads doing engine work is bounded. With a
// CoreBudget, each running job holds one core of it (see
// core/core_budget.h), so a query reranks in parallel only on cores no
// other job is using.
#ifndef ATTNSEARCH_SERVER_WORKER_POOL_H_
#define ATTNSEARCH_SERVER_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "core/core_budget.h"

namespace attnsearch {

class WorkerPool {
 public:
  // Starts `threads` workers (at least one). `cores` (borrowed, may be null)
  // must outlive the pool.
  explicit WorkerPool(size_t threads, CoreBudget* cores = nullptr);
  // Runs the jobs already queued, then joins the workers.
  ~WorkerPool();

  void Submit(std::function<void()> job);

 private:
  void Run();

  CoreBudget* const cores_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_WORKER_POOL_H_
