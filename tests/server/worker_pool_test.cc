// WorkerPool: FIFO order, draining at destruction, and the core each running
// job holds in the CoreBudget, which decides how many extra threads a
// query's reranking may take.
#include "server/worker_pool.h"

#include <gtest/gtest.h>

#include <future>
#include <mutex>
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

}  // namespace
}  // namespace attnsearch
