// The per-device tally of arena memory (backend/cuda_devices.h), which `flux bench` reports as peak device
// memory: every block a CUDA backend takes from the driver is counted, and given back when the backend goes.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "backend/cuda_devices.h"
#include "ops/cuda/convert.h"

namespace {

TEST(CudaDevices, ArenaBlocksAreCountedWhileABackendHoldsThem) {
  if (fx::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
  const fx::cuda::ArenaUsage before = fx::cuda::arena_usage(0);
  constexpr int64_t kFloats = 5 << 20;  // 20 MiB, a multiple of the arena's 2 MiB steps
  {
    auto backend = fx::backend::backend_for(fx::backend::Device::cuda(0));
    {
      fx::backend::Tensor t = backend->alloc(fx::DType::F32, {kFloats});
      const fx::cuda::ArenaUsage during = fx::cuda::arena_usage(0);
      EXPECT_GE(during.held, before.held + kFloats * 4);
      EXPECT_GE(during.peak, during.held);
    }
    // A released tensor's block stays in the arena for reuse: still held.
    EXPECT_GE(fx::cuda::arena_usage(0).held, before.held + kFloats * 4);
  }
  const fx::cuda::ArenaUsage after = fx::cuda::arena_usage(0);
  EXPECT_EQ(after.held, before.held);  // the backend gave every block back to the driver
  EXPECT_GE(after.peak, before.held + kFloats * 4);
}

TEST(CudaDevices, PropertiesOfDeviceZero) {
  if (fx::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
  const fx::cuda::DeviceProperties p = fx::cuda::device_properties(0);
  EXPECT_FALSE(p.name.empty());
  EXPECT_GT(p.total_bytes, 0u);
  EXPECT_LE(p.free_bytes, p.total_bytes);
}

}  // namespace
