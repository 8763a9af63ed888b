#include "backend/tensor.h"

#include <cctype>

#include "core/error.h"

namespace fx::backend {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 8) {
    int index = 0;
    for (size_t i = 5; i < text.size(); ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i]))) index = -1;
      if (index >= 0) index = index * 10 + (text[i] - '0');
    }
    if (index >= 0) return cuda(index);
  }
  fail(FX_ERR_INVALID_ARGUMENT, "device \"" + text + "\" is not one of cpu, cuda, cuda:N");
}

std::string Device::name() const { return kind == DeviceKind::Cpu ? "cpu" : "cuda:" + std::to_string(index); }

namespace {

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d)
    strides[static_cast<size_t>(d)] = strides[static_cast<size_t>(d + 1)] * shape[static_cast<size_t>(d + 1)];
  return strides;
}

void check_shape(const std::vector<int64_t>& shape) {
  for (int64_t d : shape)
    if (d < 0) fail(FX_ERR_INTERNAL, "tensor: negative dimension");
}

}  // namespace

Tensor Tensor::borrow(void* data, DType dtype, std::vector<int64_t> shape, Device device) {
  check_shape(shape);
  Tensor t;
  t.data_ = data;
  t.dtype_ = dtype;
  t.device_ = device;
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::on(std::shared_ptr<Storage> storage, DType dtype, std::vector<int64_t> shape) {
  Tensor t = borrow(storage->data, dtype, std::move(shape), storage->device);
  if (static_cast<size_t>(t.numel()) * dtype_size(dtype) > storage->bytes)
    fail(FX_ERR_INTERNAL, "tensor: " + t.shape_text() + " does not fit its storage");
  t.storage_ = std::move(storage);
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

bool Tensor::contiguous() const { return strides_ == contiguous_strides(shape_); }

std::string Tensor::shape_text() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
  return s + "]";
}

float* Tensor::f32() const {
  if (dtype_ != DType::F32) fail(FX_ERR_INTERNAL, std::string("tensor: f32 data asked of a ") + dtype_name(dtype_) + " tensor");
  return static_cast<float*>(data_);
}

int64_t Tensor::rows() const {
  if (shape_.size() <= 1) return 1;
  int64_t r = 1;
  for (size_t d = 0; d + 1 < shape_.size(); ++d) {
    // Dimension d folds into d + 1 only when stepping d is stepping d + 1 shape[d + 1] times.
    if (d + 2 < shape_.size() && strides_[d] != strides_[d + 1] * shape_[d + 1] && shape_[d] > 1)
      fail(FX_ERR_INTERNAL, "tensor: " + shape_text() + " with these strides is not a matrix of rows");
    r *= shape_[d];
  }
  return r;
}

int64_t Tensor::ld() const {
  if (shape_.size() <= 1) return cols();
  return strides_[shape_.size() - 2];
}

Tensor Tensor::narrow(int dim, int64_t start, int64_t length) const {
  const int d = dim < 0 ? dim + ndim() : dim;
  if (d < 0 || d >= ndim() || start < 0 || length < 0 || start + length > shape_[static_cast<size_t>(d)])
    fail(FX_ERR_INTERNAL, "tensor: narrow(" + std::to_string(dim) + ", " + std::to_string(start) + ", " +
                              std::to_string(length) + ") outside " + shape_text());
  Tensor t = *this;
  t.data_ = static_cast<uint8_t*>(data_) + static_cast<size_t>(start * strides_[static_cast<size_t>(d)]) * dtype_size(dtype_);
  t.shape_[static_cast<size_t>(d)] = length;
  return t;
}

Tensor Tensor::select(int dim, int64_t index) const {
  const int d = dim < 0 ? dim + ndim() : dim;
  Tensor t = narrow(d, index, 1);
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  check_shape(shape);
  Tensor t = *this;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (!contiguous() || n != numel())
    fail(FX_ERR_INTERNAL, "tensor: cannot reshape " + shape_text() + (contiguous() ? "" : " (not contiguous)"));
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::unsqueeze(int dim) const {
  const int d = dim < 0 ? dim + ndim() + 1 : dim;
  if (d < 0 || d > ndim()) fail(FX_ERR_INTERNAL, "tensor: unsqueeze outside " + shape_text());
  Tensor t = *this;
  const int64_t stride = d < ndim() ? strides_[static_cast<size_t>(d)] * shape_[static_cast<size_t>(d)] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return t;
}

}  // namespace fx::backend
