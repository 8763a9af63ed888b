#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "core/cancel.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    fx::ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {1, 2, 7, 64, 1001}) {
      std::vector<std::atomic<int>> hits(n);
      for (auto& h : hits) h = 0;
      pool.parallel_for(n, [&](int64_t begin, int64_t end) {
        ASSERT_LE(0, begin);
        ASSERT_LE(begin, end);
        ASSERT_LE(end, n);
        for (int64_t i = begin; i < end; ++i) ++hits[i];
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n << " i " << i;
    }
  }
}

TEST(ThreadPool, ManyCallsInARowAndZeroWork) {
  fx::ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  for (int call = 0; call < 2000; ++call)
    pool.parallel_for(10, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 20000);
  pool.parallel_for(0, [&](int64_t, int64_t) { FAIL() << "no work, no call"; });
}

TEST(ThreadPool, ExceptionsReachTheCallerAfterAllChunksFinish) {
  fx::ThreadPool pool(4);
  std::atomic<int> finished{0};
  EXPECT_THROW(pool.parallel_for(4,
                                 [&](int64_t begin, int64_t) {
                                   if (begin == 2) throw std::runtime_error("chunk failed");
                                   ++finished;
                                 }),
               std::runtime_error);
  EXPECT_EQ(finished.load(), 3);
  // The pool is still usable afterwards.
  std::atomic<int> count{0};
  pool.parallel_for(4, [&](int64_t b, int64_t e) { count += static_cast<int>(e - b); });
  EXPECT_EQ(count.load(), 4);
}

TEST(ThreadPool, WorkersSeeTheCallersCancelFlagForTheCall) {
  fx::ThreadPool pool(4);
  volatile int32_t flag = 0;
  std::atomic<int> seen{0}, chunks{0};
  auto count = [&](int64_t, int64_t) {
    ++chunks;
    if (fx::cancel_requested()) ++seen;
  };
  {
    const fx::CancelScope scope(&flag);
    pool.parallel_for(4, count);
    EXPECT_EQ(seen.load(), 0);  // not set yet
    flag = 1;
    EXPECT_TRUE(fx::cancel_requested());
    pool.parallel_for(4, count);
    EXPECT_EQ(seen.load(), 4);  // every chunk, the caller's and the workers'
    EXPECT_THROW(scope.check("pool"), fx::Error);
  }
  EXPECT_FALSE(fx::cancel_requested());
  seen = 0;
  pool.parallel_for(4, count);  // a later call without a scope: the workers' flag is gone too
  EXPECT_EQ(seen.load(), 0);
  EXPECT_EQ(chunks.load(), 12);
}

TEST(ThreadPool, NestedCallsRunInline) {
  fx::ThreadPool pool(3);
  std::atomic<int> inner{0};
  pool.parallel_for(3, [&](int64_t, int64_t) { pool.parallel_for(5, [&](int64_t b, int64_t e) { inner += static_cast<int>(e - b); }); });
  EXPECT_EQ(inner.load(), 15);
}

TEST(ThreadPool, GrainLimitsTheNumberOfChunks) {
  fx::ThreadPool pool(8);
  std::atomic<int> chunks{0};
  pool.parallel_for(10, [&](int64_t, int64_t) { ++chunks; }, 5);
  EXPECT_EQ(chunks.load(), 2);
}

}  // namespace
