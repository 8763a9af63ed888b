// The GPUs the CUDA runtime sees, and how much of each FluxNative's memory arenas hold.
//
// Plain C++ (included from .cpp files compiled without nvcc). In a build without CUDA (FX_WITH_CUDA
// undefined) the same functions exist as inline stand-ins: no device, nothing held.
#pragma once

#include <cstdint>
#include <string>

#include "core/error.h"

namespace fx::cuda {

struct DeviceProperties {
  std::string name;               // "NVIDIA H200"
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  uint64_t total_bytes = 0;       // the device's memory
  uint64_t free_bytes = 0;        // free now, device-wide (every process), as the driver reports it
};

// What the arenas of every CUDA backend in this process hold on one device: now, and the most at once
// since the process began (the figure a benchmark reports as peak device memory).
struct ArenaUsage {
  uint64_t held = 0;
  uint64_t peak = 0;
};

#if defined(FX_WITH_CUDA)

// Throws fx::Error(FX_ERR_NOT_FOUND) when there is no driver, no GPU, or no device `index`.
DeviceProperties device_properties(int index);

// Zeros for a device no arena has used (or an index out of range).
ArenaUsage arena_usage(int index) noexcept;

// Arenas report every block they take from and give back to the driver (bytes > 0: allocated).
void arena_note(int index, int64_t bytes) noexcept;

#else

inline DeviceProperties device_properties(int index) {
  fail(FX_ERR_UNSUPPORTED, "cuda:" + std::to_string(index) + ": this build of FluxNative has no CUDA backend");
}
inline ArenaUsage arena_usage(int) noexcept { return {}; }
inline void arena_note(int, int64_t) noexcept {}

#endif

}  // namespace fx::cuda
