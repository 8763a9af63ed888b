// Choosing a backend for a device: the CPU always; CUDA only where the build, the driver and the GPU are
// all there, and otherwise an error that names which of them is missing (never a silent CPU run).
#include "backend/backend.h"

#include "backend/cuda_backend.h"
#include "core/error.h"
#include "ops/cuda/convert.h"  // fx::cuda::device_count / driver_version (stand-ins without CUDA)

namespace fx::backend {

PackedLinear Backend::export_linear(const LinearLayer&) const {
  fail(FX_ERR_UNSUPPORTED, describe() + ": this backend cannot write its weights into an engine file yet");
}

std::unique_ptr<LinearLayer> Backend::import_linear(const PackedLinear& packed, std::shared_ptr<const void>) {
  fail(FX_ERR_UNSUPPORTED, describe() + ": this backend cannot run engine weights packed as \"" + packed.layout +
                               "\" (build the engine for this device, or load the published weights)");
}

std::shared_ptr<Backend> backend_for(const Device& device, ThreadPool* pool) {
  if (device.kind == DeviceKind::Cpu) return cpu_backend(pool);
#if !defined(FX_WITH_CUDA)
  fail(FX_ERR_UNSUPPORTED, "device " + device.name() +
                               ": this build of FluxNative has no CUDA backend (build it with a CUDA toolkit, FX_CUDA=ON)");
#else
  if (cuda::driver_version() == 0)
    fail(FX_ERR_NOT_FOUND, "device " + device.name() + ": no NVIDIA driver was found (libcuda could not be loaded)");
  const int count = cuda::device_count();
  if (count == 0) fail(FX_ERR_NOT_FOUND, "device " + device.name() + ": the NVIDIA driver reports no usable GPU");
  if (device.index >= count)
    fail(FX_ERR_NOT_FOUND, "device " + device.name() + ": there are only " + std::to_string(count) +
                               " GPU(s), cuda:0 to cuda:" + std::to_string(count - 1));
  return cuda_backend(device);
#endif
}

}  // namespace fx::backend
