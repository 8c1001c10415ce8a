#include "server/worker_pool.h"

#include <algorithm>

namespace attnsearch {

WorkerPool::WorkerPool(size_t threads, CoreBudget* cores, size_t max_inline)
    : cores_(cores), limit_(std::max<size_t>(threads, 1)), max_inline_(max_inline) {
  for (size_t i = 0; i < limit_; ++i) threads_.emplace_back([this] { Run(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  for (auto& t : threads_) t.join();
}

void WorkerPool::Submit(std::function<void()> job) {
  {
    absl::MutexLock lock(&mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.Signal();
}

bool WorkerPool::RunHereOrSubmit(std::function<void()> job) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || !jobs_.empty() || running_ >= limit_ || inline_ >= max_inline_) {
      jobs_.push_back(std::move(job));
      job = nullptr;
    } else {
      ++running_;
      ++inline_;
    }
  }
  if (job == nullptr) {
    cv_.Signal();
    return false;
  }
  {
    CoreLease core(cores_, 1, 1);
    job();
  }
  bool waiting;
  {
    absl::MutexLock lock(&mu_);
    --running_;
    --inline_;
    waiting = !jobs_.empty();
  }
  // A worker may be waiting for the place this job held.
  if (waiting) cv_.Signal();
  return true;
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && (jobs_.empty() || running_ >= limit_)) cv_.Wait(&mu_);
      if (jobs_.empty()) return;  // stopping, and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
      ++running_;
    }
    {
      CoreLease core(cores_, 1, 1);
      job();
    }
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace attnsearch
