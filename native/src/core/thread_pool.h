// A fixed pool of worker threads for data-parallel loops (GEMM rows, attention heads, conv tiles).
//
// parallel_for splits [0, n) into contiguous chunks, one per participating thread, and the calling
// thread takes a chunk itself, so a pool of size T keeps T threads busy (T-1 workers + the caller).
// Calls are serialised per pool: one parallel_for at a time (a nested call from inside a chunk runs
// inline on the calling thread instead of deadlocking). Exceptions thrown by a chunk are rethrown on
// the caller after every chunk has finished. The caller's cancel flag (core/cancel.h) is the workers'
// while they run its chunks, so a kernel sees the same cancel_requested() on every thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fx {

class ThreadPool {
 public:
  // threads <= 0: one per hardware thread (or FX_NUM_THREADS from the environment when set).
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // body(begin, end) over disjoint chunks covering [0, n). `grain`: the smallest chunk worth a thread.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& body, int64_t grain = 1);

  // The process-wide pool the kernels use by default.
  static ThreadPool& global();

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  const volatile int32_t* cancel_ = nullptr;  // the caller's flag, for the workers
  int64_t n_ = 0;
  int chunks_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

}  // namespace fx
