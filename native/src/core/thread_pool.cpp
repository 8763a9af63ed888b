#include "core/thread_pool.h"

#include <algorithm>
#include <cstdlib>

#include "core/cancel.h"

namespace fx {

namespace {
thread_local bool t_inside_pool = false;

int default_threads() {
  if (const char* env = std::getenv("FX_NUM_THREADS")) {
    const int value = std::atoi(env);
    if (value > 0) return value;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// Chunk c of `chunks` over [0, n): sizes differ by at most one.
void chunk_bounds(int64_t n, int chunks, int c, int64_t* begin, int64_t* end) {
  const int64_t base = n / chunks, extra = n % chunks;
  *begin = c * base + std::min<int64_t>(c, extra);
  *end = *begin + base + (c < extra ? 1 : 0);
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  const int total = threads > 0 ? threads : default_threads();
  workers_.reserve(total - 1);
  for (int i = 1; i < total; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  start_cv_.notify_all();
  for (auto& worker : workers_) worker.join();
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool;
  return pool;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& body, int64_t grain) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int chunks = static_cast<int>(std::min<int64_t>(size(), max_chunks));
  if (chunks == 1 || t_inside_pool) {
    body(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    cancel_ = current_cancel_flag();
    n_ = n;
    chunks_ = chunks;
    pending_ = chunks - 1;  // workers 1..chunks-1; the caller runs chunk 0
    error_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();

  std::exception_ptr caller_error;
  t_inside_pool = true;
  try {
    int64_t begin, end;
    chunk_bounds(n, chunks, 0, &begin, &end);
    body(begin, end);
  } catch (...) {
    caller_error = std::current_exception();
  }
  t_inside_pool = false;

  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  body_ = nullptr;
  if (caller_error) std::rethrow_exception(caller_error);
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker_loop(int index) {
  t_inside_pool = true;
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* body;
    const volatile int32_t* cancel;
    int64_t n;
    int chunks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      body = body_;
      cancel = cancel_;
      n = n_;
      chunks = chunks_;
    }
    if (index >= chunks) continue;  // not needed for this call (and not counted in pending_)
    std::exception_ptr error;
    try {
      const CancelScope scope(cancel);
      int64_t begin, end;
      chunk_bounds(n, chunks, index, &begin, &end);
      (*body)(begin, end);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

}  // namespace fx
