// The CUDA runtime as the rest of the library sees it, and dtype conversion on the GPU.
//
// Plain C++: this header is included from .cpp files compiled without nvcc, so it names no CUDA
// type. In a build without CUDA (FX_WITH_CUDA undefined) the same functions exist as inline stand-ins
// that report no GPU, so callers need no #if of their own.
#pragma once

#include <cstddef>

#include "core/dtype.h"
#include "core/error.h"

namespace fx::cuda {

#if defined(FX_WITH_CUDA)

// Number of usable CUDA devices; 0 when there is no driver, no GPU, or the driver is too old.
int device_count() noexcept;

// The driver's CUDA version (e.g. 12040 for 12.4); 0 when no driver is installed.
int driver_version() noexcept;

// Converts n elements on the current device: copies host_src to the GPU, converts there with the
// same scalar functions as the CPU's fx::convert (so the results are the same bits), copies the
// result to host_dst. Arguments are checked exactly as fx::convert checks them, with the same
// statuses, before the GPU is touched. A CUDA failure throws fx::Error(FX_ERR_BACKEND) with CUDA's
// error string (FX_ERR_OUT_OF_MEMORY when device memory cannot be allocated). Same dtype: a copy.
void convert_on_device(DType src, const void* host_src, DType dst, void* host_dst, size_t n, Overflow overflow);

#else

inline int device_count() noexcept { return 0; }
inline int driver_version() noexcept { return 0; }
// Checks the arguments as fx::convert does, then reports that this build has no CUDA backend.
inline void convert_on_device(DType src, const void* host_src, DType dst, void* host_dst, size_t n,
                              Overflow overflow) {
  validate_convert_arguments(src, host_src, dst, host_dst, n, overflow);
  fail(FX_ERR_UNSUPPORTED, "convert_on_device: this build of FluxNative has no CUDA backend");
}

#endif

}  // namespace fx::cuda
