// WorkerPool: a fixed set of threads running submitted jobs in FIFO order.
// The gRPC callback handlers hand their work to it so that reactions stay
// short and the number of threads doing engine work is bounded.
#ifndef ATTNSEARCH_SERVER_WORKER_POOL_H_
#define ATTNSEARCH_SERVER_WORKER_POOL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attnsearch {

class WorkerPool {
 public:
  // Starts `threads` workers (at least one).
  explicit WorkerPool(size_t threads);
  // Runs the jobs already queued, then joins the workers.
  ~WorkerPool();

  void Submit(std::function<void()> job);

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool stopping_ = false;                   // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_WORKER_POOL_H_
