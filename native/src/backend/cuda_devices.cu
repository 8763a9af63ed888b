// The GPUs the CUDA runtime sees (cudaGetDeviceProperties, cudaMemGetInfo), and the process-wide
// per-device tally of FluxNative's arena memory (backend/cuda_devices.h).
#include "backend/cuda_devices.h"

#include <cuda_runtime.h>

#include <array>
#include <atomic>

namespace fx::cuda {
namespace {

// Enough for any machine (a DGX has 8 or 16); devices beyond it are not counted.
constexpr int kMaxDevices = 64;

struct Tally {
  std::atomic<uint64_t> held{0};
  std::atomic<uint64_t> peak{0};
};
std::array<Tally, kMaxDevices> tallies;

}  // namespace

DeviceProperties device_properties(int index) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    count = 0;
  }
  if (index < 0 || index >= count)
    fail(FX_ERR_NOT_FOUND, "cuda:" + std::to_string(index) + ": no such device (" + std::to_string(count) +
                               " CUDA device(s) visible; no driver or no GPU counts as none)");
  cudaDeviceProp prop{};
  cudaError_t error = cudaGetDeviceProperties(&prop, index);
  if (error != cudaSuccess) {
    (void)cudaGetLastError();
    fail(FX_ERR_BACKEND, "cuda:" + std::to_string(index) + ": cudaGetDeviceProperties failed: " + cudaGetErrorString(error));
  }
  DeviceProperties p;
  p.name = prop.name;
  p.compute_major = prop.major;
  p.compute_minor = prop.minor;
  p.multiprocessors = prop.multiProcessorCount;
  p.total_bytes = prop.totalGlobalMem;
  // cudaMemGetInfo answers for the current device: switch to `index` for the question and back.
  int previous = 0;
  (void)cudaGetDevice(&previous);
  if (previous != index) (void)cudaSetDevice(index);
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) == cudaSuccess) p.free_bytes = free_bytes;
  else (void)cudaGetLastError();
  if (previous != index) (void)cudaSetDevice(previous);
  return p;
}

ArenaUsage arena_usage(int index) noexcept {
  if (index < 0 || index >= kMaxDevices) return {};
  return {tallies[index].held.load(), tallies[index].peak.load()};
}

void arena_note(int index, int64_t bytes) noexcept {
  if (index < 0 || index >= kMaxDevices) return;
  Tally& t = tallies[index];
  const uint64_t now = t.held.fetch_add(static_cast<uint64_t>(bytes)) + static_cast<uint64_t>(bytes);
  uint64_t peak = t.peak.load();
  while (bytes > 0 && now > peak && !t.peak.compare_exchange_weak(peak, now)) {
  }
}

}  // namespace fx::cuda
