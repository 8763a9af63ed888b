// A tensor as the backends see it: shape, dtype, device, and storage that is either owned (shared by
// every view of it, freed with the last one) or borrowed from the caller (a host buffer the C ABI was
// given, a mapped checkpoint).
//
// Views: narrow() keeps the strides, so a column block of a fused [L, 3H] qkv buffer is a [L, H] tensor
// with row stride 3H, and the backends' kernels read it in place. The last dimension is always contiguous
// (stride 1); that is what every kernel needs, and what makes a tensor a "matrix" of rows() rows of
// cols() elements with row stride ld() when its leading dimensions collapse.
//
// Model code never reads a tensor's bytes: it hands tensors to Backend operations, so the same graph runs
// where the bytes are on a GPU.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace fx::backend {

enum class DeviceKind { Cpu, Cuda };

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;  // the GPU's ordinal for Cuda; 0 for the CPU

  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceKind::Cuda, index}; }
  // "cpu", "cuda", "cuda:N" (N >= 0). Throws fx::Error(FX_ERR_INVALID_ARGUMENT) naming the text otherwise.
  static Device parse(const std::string& text);
  std::string name() const;  // "cpu", "cuda:0"
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// Memory a backend allocated; gives itself back through the backend's `release` when the last tensor
// goes (the CPU frees it; the CUDA backend returns it to its arena).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  std::function<void(void* data, size_t bytes)> release;
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (release && data != nullptr) release(data, bytes);
  }
};

class Tensor {
 public:
  Tensor() = default;
  // A view of memory the caller keeps alive (contiguous, row-major).
  static Tensor borrow(void* data, DType dtype, std::vector<int64_t> shape, Device device = Device::cpu());
  static Tensor borrow(const void* data, DType dtype, std::vector<int64_t> shape, Device device = Device::cpu()) {
    return borrow(const_cast<void*>(data), dtype, std::move(shape), device);
  }
  // Contiguous tensor over `storage` (which must hold at least the bytes the shape needs).
  static Tensor on(std::shared_ptr<Storage> storage, DType dtype, std::vector<int64_t> shape);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  const Device& device() const { return device_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }  // in elements
  int64_t dim(int d) const { return shape_.at(static_cast<size_t>(d < 0 ? d + ndim() : d)); }
  int64_t stride(int d) const { return strides_.at(static_cast<size_t>(d < 0 ? d + ndim() : d)); }
  int64_t numel() const;
  bool contiguous() const;
  std::string shape_text() const;  // "[2, 3, 4]"

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  float* f32() const;  // data as float*; throws FX_ERR_INTERNAL unless dtype is F32

  // The matrix view: rows() = product of all dimensions but the last (they must collapse into one
  // strided dimension), cols() = the last, ld() = the row stride. A 1-D tensor is one row.
  int64_t rows() const;
  int64_t cols() const { return shape_.empty() ? 1 : shape_.back(); }
  int64_t ld() const;

  // Views sharing the storage.
  Tensor narrow(int dim, int64_t start, int64_t length) const;  // [start, start + length) of one dimension
  Tensor select(int dim, int64_t index) const;                   // drops the dimension
  Tensor reshape(std::vector<int64_t> shape) const;              // contiguous tensors only
  Tensor unsqueeze(int dim) const;                               // a new dimension of size 1

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Device device_;
  std::vector<int64_t> shape_, strides_;
  std::shared_ptr<Storage> storage_;  // null for borrowed memory
};

}  // namespace fx::backend
