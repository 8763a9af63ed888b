// Helpers of the CUDA test files that call ops/cuda directly (test_cuda_encoder_ops.cpp, test_cuda_models.cpp):
// device buffers that hold host f32 values in a given dtype, random values that are never zero, and the
// relative L2 error through which NaN never passes.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "ops/cuda/convert.h"

namespace fx::cuda_test {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline bool have_gpu() { return fx::cuda::device_count() > 0; }

inline int compute_major() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return 0;
  return major;
}

inline void cuda_ok(cudaError_t error, const char* what) {
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    cuda_ok(cudaMalloc(&p_, std::max<size_t>(bytes, 16)), "cudaMalloc");
  }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

// Host f32 values stored on the device as `dtype` (NaN stays NaN); at(i) is element i's address.
struct DeviceArray {
  DType dtype;
  size_t n;
  DeviceBuffer buffer;
  DeviceArray(DType d, const std::vector<float>& host)
      : dtype(d), n(host.size()), buffer(host.size() * fx::dtype_size(d)) {
    std::vector<uint8_t> bytes(buffer.bytes());
    fx::convert(DType::F32, host.data(), dtype, bytes.data(), n, fx::Overflow::Ieee);
    cuda_ok(cudaMemcpy(buffer.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  }
  void* at(int64_t i) const { return static_cast<uint8_t*>(buffer.get()) + size_t(i) * fx::dtype_size(dtype); }
  // Waits for the GPU, then copies everything back as f32.
  std::vector<float> download() const {
    cuda_ok(cudaDeviceSynchronize(), "kernel");
    std::vector<uint8_t> bytes(buffer.bytes());
    cuda_ok(cudaMemcpy(bytes.data(), buffer.get(), bytes.size(), cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
    std::vector<float> host(n);
    fx::convert(dtype, bytes.data(), DType::F32, host.data(), n, fx::Overflow::Ieee);
    return host;
  }
};

// Raw bytes on the device (ids, tables in any dtype).
struct DeviceBytes {
  DeviceBuffer buffer;
  explicit DeviceBytes(const void* host, size_t bytes) : buffer(bytes) {
    cuda_ok(cudaMemcpy(buffer.get(), host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  }
  template <typename T>
  explicit DeviceBytes(const std::vector<T>& host) : DeviceBytes(host.data(), host.size() * sizeof(T)) {}
  template <typename T>
  T* as() const {
    return static_cast<T*>(buffer.get());
  }
};

inline std::mt19937_64& rng() {
  static std::mt19937_64 engine(20261203);
  return engine;
}

// Uniform magnitude in [0.1, 2], random sign: never zero.
inline float random_value() {
  std::uniform_real_distribution<float> magnitude(0.1f, 2.0f);
  const float v = magnitude(rng());
  return (rng()() & 1) ? v : -v;
}

inline float round_to(DType dtype, float v) { return dtype == DType::BF16 ? fx::bf16_to_f32(fx::f32_to_bf16(v)) : v; }

// n random values (plus `offset`, times `scale`), rounded to `dtype`.
inline std::vector<float> random_values(size_t n, DType dtype = DType::F32, float offset = 0.0f, float scale = 1.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = round_to(dtype, offset + scale * random_value());
  return v;
}

inline const char* name_of(DType d) { return fx::dtype_name(d); }

// Relative L2 of got against want; NaN in either gives NaN, which fails every bound.
inline double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::quiet_NaN();
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  if (den == 0.0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// A device region [guard | view | guard] poisoned with NaN outside the view; the guards must stay NaN.
struct Guarded {
  static constexpr int64_t kGuard = 37;  // elements before and after (odd: the view is not 16-byte aligned)
  int64_t guard, n;
  std::vector<float> host;  // guard NaN, the values, guard NaN
  explicit Guarded(const std::vector<float>& values, int64_t guard_elems = kGuard)
      : guard(guard_elems), n(int64_t(values.size())), host(size_t(n + 2 * guard), kNaN) {
    std::copy(values.begin(), values.end(), host.begin() + guard);
  }
  // Splits a downloaded buffer: the view's values, and whether every guard element is still NaN.
  std::vector<float> view(const std::vector<float>& all) const {
    return std::vector<float>(all.begin() + guard, all.begin() + guard + n);
  }
  size_t guards_written(const std::vector<float>& all) const {
    size_t written = 0;
    for (int64_t i = 0; i < guard; ++i) written += !std::isnan(all[size_t(i)]);
    for (int64_t i = guard + n; i < int64_t(all.size()); ++i) written += !std::isnan(all[size_t(i)]);
    return written;
  }
};

}  // namespace fx::cuda_test
