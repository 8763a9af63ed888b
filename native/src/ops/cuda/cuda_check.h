// Error checks shared by the CUDA kernel files (internal: included from .cu files only). A failed CUDA
// call or kernel launch becomes fx::Error(FX_ERR_BACKEND) (FX_ERR_OUT_OF_MEMORY for an allocation
// failure) whose message names what failed and carries CUDA's error name and string.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "core/error.h"
#include "ops/cuda/kernels.h"

namespace fx::cuda {

[[noreturn]] inline void fail_cuda_call(cudaError_t error, const std::string& what) {
  const fx_status status = error == cudaErrorMemoryAllocation ? FX_ERR_OUT_OF_MEMORY : FX_ERR_BACKEND;
  fail(status, what + " failed: " + cudaGetErrorName(error) + ": " + cudaGetErrorString(error));
}

// Throws when `error` is not cudaSuccess; `what` names the call ("cudaFuncSetAttribute(attention)").
inline void check_cuda_call(cudaError_t error, const char* what) {
  if (error != cudaSuccess) fail_cuda_call(error, what);
}

// Called right after a <<<...>>> launch: a bad configuration (grid, block, shared memory) or an error
// left by an earlier asynchronous fault surfaces here, named after `kernel`. Nothing synchronises, so
// a fault inside the kernel itself is reported by a later call on the stream.
inline void check_launch(const char* kernel) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) fail_cuda_call(error, std::string("CUDA kernel launch of ") + kernel);
}

inline cudaStream_t as_cuda_stream(Stream stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace fx::cuda
