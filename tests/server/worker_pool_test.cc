// WorkerPool: FIFO order, draining at destruction, and the core each running
// job holds in the CoreBudget, which decides how many extra threads a
// query's reranking may take.
#include "server/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "core/core_budget.h"

namespace attnsearch {
namespace {

TEST(WorkerPoolTest, OneWorkerRunsJobsInOrderAndDrainsAtDestruction) {
  std::mutex mu;
  std::vector<int> order;
  {
    WorkerPool pool(1);
    for (int i = 0; i < 100; ++i) {
      pool.Submit([&, i] {
        std::lock_guard<std::mutex> lock(mu);
        order.push_back(i);
      });
    }
  }
  std::vector<int> expected(100);
  for (int i = 0; i < 100; ++i) expected[i] = i;
  EXPECT_EQ(order, expected);
}

TEST(CoreBudgetTest, AcquireTakesFreeCoresAndTheMinimum) {
  CoreBudget budget(2);
  EXPECT_EQ(budget.Acquire(1, 1), 1);
  EXPECT_EQ(budget.Acquire(4, 0), 1);  // one core left
  EXPECT_EQ(budget.Acquire(4, 0), 0);  // none left, none required
  EXPECT_EQ(budget.Acquire(1, 1), 1);  // a worker's core overcommits
  EXPECT_EQ(budget.in_use(), 3);
  budget.Release(3);
  EXPECT_EQ(budget.in_use(), 0);
  CoreLease no_budget(nullptr, 3, 0);
  EXPECT_EQ(no_budget.cores(), 3);
}

// What a job sees when it asks for extra cores the way the reranker does
// (CoreLease(budget, want - 1, 0)): all the free ones when it runs alone,
// none while the other worker runs a job.
TEST(WorkerPoolTest, RunningJobsHoldACoreEach) {
  // The promises outlive the pool, whose destructor waits for the jobs
  // still using them.
  std::promise<int> alone;
  std::promise<void> first_running, second_asked, first_asked;
  std::promise<int> first_extra, second_extra;
  CoreBudget budget(2);
  WorkerPool pool(2, &budget);

  pool.Submit([&] {
    CoreLease extra(&budget, 3, 0);
    alone.set_value(extra.cores());
  });
  EXPECT_EQ(alone.get_future().get(), 1);

  // Two jobs at once, each asking while the other runs.
  pool.Submit([&] {
    first_running.set_value();
    second_asked.get_future().wait();
    {
      CoreLease extra(&budget, 3, 0);
      first_extra.set_value(extra.cores());
    }
    first_asked.set_value();
  });
  first_running.get_future().wait();
  pool.Submit([&] {
    {
      CoreLease extra(&budget, 3, 0);
      second_extra.set_value(extra.cores());
    }
    second_asked.set_value();
    first_asked.get_future().wait();
  });
  EXPECT_EQ(second_extra.get_future().get(), 0);
  EXPECT_EQ(first_extra.get_future().get(), 0);
}

// A job runs on the caller's thread while a worker is idle and nothing is
// queued; otherwise it waits its turn on a worker, after the jobs before it.
TEST(WorkerPoolTest, RunHereOrSubmitRunsHereOnlyWhenAWorkerIsIdle) {
  CoreBudget budget(2);
  WorkerPool pool(1, &budget, /*max_inline=*/1);
  std::thread::id ran_on;
  int extra_cores = -1;
  EXPECT_TRUE(pool.RunHereOrSubmit([&] {
    ran_on = std::this_thread::get_id();
    CoreLease extra(&budget, 3, 0);  // the inline job holds a core
    extra_cores = extra.cores();
  }));
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(extra_cores, 1);

  // The only worker busy: the next jobs queue, and run in order.
  std::promise<void> release, started;
  std::mutex mu;
  std::vector<int> order;
  pool.Submit([&] {
    started.set_value();
    release.get_future().wait();
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(0);
  });
  started.get_future().wait();
  std::promise<std::thread::id> queued_on;
  EXPECT_FALSE(pool.RunHereOrSubmit([&] {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(1);
    queued_on.set_value(std::this_thread::get_id());
  }));
  release.set_value();
  EXPECT_NE(queued_on.get_future().get(), std::this_thread::get_id());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
}

TEST(WorkerPoolTest, WithoutInlineJobsEverythingQueues) {
  WorkerPool pool(2, nullptr, /*max_inline=*/0);
  std::promise<std::thread::id> on;
  EXPECT_FALSE(pool.RunHereOrSubmit([&] { on.set_value(std::this_thread::get_id()); }));
  EXPECT_NE(on.get_future().get(), std::this_thread::get_id());
}

// Callers on many threads, inline and queued jobs mixed: never more jobs
// at once than the pool has workers, and every job runs once.
TEST(WorkerPoolTest, InlineJobsTakeAWorkersPlace) {
  constexpr int kCallers = 6, kJobsEach = 200;
  std::atomic<int> running{0}, most{0}, done{0}, here{0};
  {
    WorkerPool pool(2, nullptr, /*max_inline=*/2);
    auto job = [&] {
      const int now = running.fetch_add(1) + 1;
      int seen = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      running.fetch_sub(1);
      done.fetch_add(1);
    };
    std::vector<std::thread> callers;
    for (int c = 0; c < kCallers; ++c) {
      callers.emplace_back([&] {
        for (int i = 0; i < kJobsEach; ++i) {
          if (pool.RunHereOrSubmit(job)) here.fetch_add(1);
        }
      });
    }
    for (auto& t : callers) t.join();
  }
  EXPECT_EQ(done.load(), kCallers * kJobsEach);
  EXPECT_LE(most.load(), 2);
  EXPECT_GT(here.load(), 0);
  EXPECT_LT(here.load(), kCallers * kJobsEach);
}

}  // namespace
}  // namespace attnsearch
