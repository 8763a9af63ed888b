// Cancellation inside the long kernels, not only between a model's blocks.
//
// The C ABI takes a cancel flag (`const volatile int32_t* cancel`) that the caller sets from another
// thread. A model checks it between its blocks; one block can still be long (the autoencoder's mid
// attention over every latent pixel of a 1792x1024 image ran for tens of seconds on a CPU), and the
// kernels share one thread pool, so a cancelled request used to hold the machine for that long.
//
// A CancelScope makes the flag the calling thread's for the scope; ThreadPool::parallel_for hands the
// caller's flag to the workers that run its chunks. The long kernels (attention, conv2d, GEMM) call
// cancel_requested() before each tile and skip the rest when it is set, leaving their output undefined.
// The model then fails with FX_ERR_CANCELLED at its next check, and CancelScope::check at its end
// makes sure a result computed from skipped tiles is never returned as a success.
#pragma once

#include <cstdint>

namespace fx {

// The calling thread's cancel flag (null when none).
const volatile int32_t* current_cancel_flag() noexcept;

// True once the calling thread's flag is set: a kernel stops starting new tiles.
inline bool cancel_requested() noexcept {
  const volatile int32_t* flag = current_cancel_flag();
  return flag != nullptr && *flag != 0;
}

class CancelScope {
 public:
  explicit CancelScope(const volatile int32_t* flag) noexcept;
  ~CancelScope();
  CancelScope(const CancelScope&) = delete;
  CancelScope& operator=(const CancelScope&) = delete;

  // Throws FX_ERR_CANCELLED ("<what>: cancelled") when the flag is set.
  void check(const char* what) const;

 private:
  const volatile int32_t* flag_;
  const volatile int32_t* previous_;
};

}  // namespace fx
