// Dtype conversion on the GPU. The kernel is one thread per element over a grid-stride loop, and each
// element goes through dtype_detail::convert_element<Src, Dst>, the very FX_HD function the CPU's
// fx::convert runs; the functions are integer arithmetic on bit patterns, so the GPU cannot differ
// from the CPU by a bit (no fast-math flushing, no NaN canonicalisation) and the CPU is its reference.
#include "ops/cuda/convert.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"

namespace fx::cuda {
namespace {

[[noreturn]] void fail_cuda(cudaError_t error, const char* what) {
  const fx_status status = error == cudaErrorMemoryAllocation ? FX_ERR_OUT_OF_MEMORY : FX_ERR_BACKEND;
  fail(status, std::string("convert_on_device: ") + what + " failed: " + cudaGetErrorName(error) + ": " +
                   cudaGetErrorString(error));
}

void check(cudaError_t error, const char* what) {
  if (error != cudaSuccess) fail_cuda(error, what);
}

// Device memory that is freed on every path out, exceptions included.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) { check(cudaMalloc(&pointer_, bytes), "cudaMalloc"); }
  ~DeviceBuffer() {
    // Nothing useful can be done with a failure here (it would be a sticky error that the next call
    // reports anyway), and a destructor must not throw.
    if (pointer_ != nullptr) (void)cudaFree(pointer_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return pointer_; }

 private:
  void* pointer_ = nullptr;
};

template <DType kSrc, DType kDst>
__global__ void convert_kernel(const void* src, void* dst, size_t n, Overflow overflow) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dtype_detail::convert_element<kSrc, kDst>(src, dst, i, overflow);
  }
}

struct KernelLauncher {
  const void* src;
  void* dst;
  size_t n;
  Overflow overflow;

  template <DType kSrc, DType kDst>
  void operator()() const {
    constexpr unsigned kThreads = 256;
    // Enough blocks to fill any current GPU several times over; the grid-stride loop covers the rest.
    const size_t wanted = (n + kThreads - 1) / kThreads;
    const unsigned blocks = static_cast<unsigned>(std::min<size_t>(wanted, size_t(1) << 16));
    convert_kernel<kSrc, kDst><<<blocks, kThreads>>>(src, dst, n, overflow);
  }
};

}  // namespace

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    // No driver or no device is an answer (zero), not an error; clear it so that it does not
    // surface from a later, unrelated call.
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

int driver_version() noexcept {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return version;
}

void convert_on_device(DType src, const void* host_src, DType dst, void* host_dst, size_t n, Overflow overflow) {
  validate_convert_arguments(src, host_src, dst, host_dst, n, overflow);
  if (n == 0) return;
  if (src == dst) {
    // Converting a dtype to itself would re-encode NaN payloads; fx::convert copies, and so does this.
    std::memcpy(host_dst, host_src, n * dtype_size(src));
    return;
  }
  const size_t src_bytes = n * dtype_size(src);
  const size_t dst_bytes = n * dtype_size(dst);
  DeviceBuffer device_src(src_bytes);
  DeviceBuffer device_dst(dst_bytes);
  check(cudaMemcpy(device_src.get(), host_src, src_bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  // Poisoned so that an element the kernel missed shows up as a wrong value, not as whatever the
  // allocation happened to hold (which could be a right answer from an earlier call).
  check(cudaMemset(device_dst.get(), 0xA7, dst_bytes), "cudaMemset");
  KernelLauncher launcher{device_src.get(), device_dst.get(), n, overflow};
  dtype_detail::visit_float_pair(src, dst, launcher);
  check(cudaGetLastError(), "launching the conversion kernel");
  // A synchronous copy on the default stream: it waits for the kernel and reports its faults too.
  check(cudaMemcpy(host_dst, device_dst.get(), dst_bytes, cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
}

}  // namespace fx::cuda
