// WorkerPool: a fixed set of threads running submitted jobs in FIFO order.
// The gRPC callback handlers hand their work to it so that reactions stay
// short and the number of threads doing engine work is bounded. With a
// CoreBudget, each running job holds one core of it (see
// core/core_budget.h), so a query reranks in parallel only on cores no
// other job is using.
//
// A short job may instead run on the caller's thread (RunHereOrSubmit) when
// a worker is idle and nothing waits: the hand-off to a sleeping worker
// (a futex wake and a context switch, 100-150 µs on a loaded 2-core machine)
// is then saved. Such a job takes an idle worker's place, so at most
// `threads` jobs run at any time, inline ones included.
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
  // must outlive the pool. At most `max_inline` jobs run on callers'
  // threads at once (0: RunHereOrSubmit always queues).
  explicit WorkerPool(size_t threads, CoreBudget* cores = nullptr, size_t max_inline = 0);
  // Runs the jobs already queued, then joins the workers. Jobs running
  // inline must have returned.
  ~WorkerPool();

  // Queues `job` for a worker.
  void Submit(std::function<void()> job);
  // Runs `job` on the calling thread, holding a core as a worker would,
  // when a worker is idle, no job is queued and fewer than `max_inline`
  // jobs run inline; otherwise queues it as Submit does. Returns whether it
  // ran here.
  bool RunHereOrSubmit(std::function<void()> job);

  size_t threads() const { return threads_.size(); }

 private:
  void Run();

  CoreBudget* const cores_;
  const size_t limit_;       // jobs running at once, inline ones included
  const size_t max_inline_;  // of which inline
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;
  size_t inline_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_WORKER_POOL_H_
