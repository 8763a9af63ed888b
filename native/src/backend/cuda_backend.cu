// The CUDA backend: backend.h's operations on one GPU, on one stream, with memory from an arena.
//
// Memory: cudaMalloc'd blocks, rounded up to 2 MiB steps (small ones to 256 B), handed back to the arena
// when their last tensor goes and reused for the next request of the same rounded size; nothing is freed
// to the driver until the backend goes. Out of memory says what was asked, what the arena holds and
// what the driver reports free.
//
// GEMM: cuBLASLt, y[m, n] = x[m, k] · W[n, k]ᵀ as the column-major product Yᵀ = W·Xᵀ ("TN", the layout
// the tensor cores like), with the bias and GELU in cuBLASLt's epilogue (SiLU through bias_activation).
// Weights stay [n, k] as stored, in bf16 (or f32 for the F32 format); activations are f32 on this first
// version, so x is rounded to bf16 into a scratch buffer before a bf16 GEMM, which accumulates in f32
// and writes f32. Algorithms come from cuBLASLt's heuristic once per shape and are cached.
//
// The text encoders' and the autoencoder's operations: embedding lookup and T5's relative-position bias
// (the ids and the bucket table come from the host and are uploaded), convolutions as implicit GEMMs
// (weights reordered at load by cuda::conv2d_pack_weights and held in f32: f32 activations run the exact
// f32 kernel; bf16 activations on sm_80+ run the bf16 tensor-core kernel on a bf16 copy of the weights made
// at its first use), GroupNorm (+ SiLU) with a workspace from the arena, nearest 2× upsampling, transpose
// and the latent scale/shift. CLIP's causal mask, T5's additive bias and the autoencoder's one 512-wide
// head go through cuda::attention.
//
// Unverified: no GPU has run this file yet (see the README's status table).
#include "backend/cuda_backend.h"

#include <cuda_runtime.h>

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/cublaslt_loader.h"
#include "backend/cuda_devices.h"
#include "core/error.h"
#include "ops/cpu/elementwise.h"  // rope_tables: computed on the host in double, then uploaded
#include "ops/cuda/kernels.h"

namespace fx::backend {

namespace {

[[noreturn]] void fail_cuda(cudaError_t error, const std::string& what) {
  fail(error == cudaErrorMemoryAllocation ? FX_ERR_OUT_OF_MEMORY : FX_ERR_BACKEND,
       what + ": " + cudaGetErrorName(error) + ": " + cudaGetErrorString(error));
}

void check(cudaError_t error, const std::string& what) {
  if (error != cudaSuccess) fail_cuda(error, what);
}

[[noreturn]] void bad(const std::string& op, const std::string& what) { fail(FX_ERR_INTERNAL, "cuda backend " + op + ": " + what); }

std::string mib(size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// Makes `device` current for the calling thread for one scope.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
    restore_ = previous_ != device;
  }
  ~DeviceScope() {
    if (restore_) (void)cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

class Arena {
 public:
  explicit Arena(int device) : device_(device) {}
  ~Arena() {
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) {
        (void)cudaFree(p);
        cuda::arena_note(device_, -static_cast<int64_t>(size));
      }
  }

  static size_t round(size_t bytes) {
    if (bytes <= (size_t(2) << 20)) return std::max<size_t>(256, (bytes + 255) / 256 * 256);
    return (bytes + (size_t(2) << 20) - 1) / (size_t(2) << 20) * (size_t(2) << 20);
  }

  void* take(size_t bytes) {
    const size_t size = round(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t error = cudaMalloc(&p, size);
    if (error == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it: a failed cudaMalloc is not sticky
      release_cached();          // give the cached blocks back and try once more
      error = cudaMalloc(&p, size);
    }
    if (error != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_bytes = 0, total = 0;
      (void)cudaMemGetInfo(&free_bytes, &total);
      fail(error == cudaErrorMemoryAllocation ? FX_ERR_OUT_OF_MEMORY : FX_ERR_BACKEND,
           "cuda:" + std::to_string(device_) + ": cannot allocate " + mib(size) + " (" + cudaGetErrorString(error) +
               "); the driver reports " + mib(free_bytes) + " free of " + mib(total) + ", this model holds " +
               mib(held_) + " in its arena");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    held_ += size;
    cuda::arena_note(device_, static_cast<int64_t>(size));
    return p;
  }

  void give_back(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_[round(bytes)].push_back(p);
  }

 private:
  void release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) {
        (void)cudaFree(p);
        held_ -= size;
        cuda::arena_note(device_, -static_cast<int64_t>(size));
      }
      blocks.clear();
    }
  }

  int device_;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // (no std::map: see make_plan's caller)
  size_t held_ = 0;
};

// A convolution's weights in conv2d_pack_weights' layout: f32 always, bf16 made on first use.
class CudaConv final : public ConvLayer {
 public:
  CudaConv(int64_t out, int64_t in, int64_t kh, int64_t kw, Tensor weight, Tensor bias)
      : ConvLayer(out, in, kh, kw), weight(std::move(weight)), bias(std::move(bias)) {}
  Tensor weight;  // [out, kh·kw·in_padded] f32
  Tensor bias;    // [out] f32
  mutable std::mutex bf16_mutex;
  mutable Tensor weight_bf16;  // the same in bf16, once a bf16 convolution asked for it (empty until then)
};

class CudaLinear final : public LinearLayer {
 public:
  CudaLinear(int64_t n, int64_t k, Tensor weight, Tensor bias)
      : LinearLayer(n, k, bias.numel() > 0), weight(std::move(weight)), bias(std::move(bias)) {}
  Tensor weight;  // [n, k] bf16 or f32, as stored
  Tensor bias;    // [n] f32, or empty
};

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: fail(FX_ERR_UNSUPPORTED, std::string("cuda backend: no cuBLASLt type for ") + dtype_name(dtype));
  }
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const Device& device) : device_(device), arena_(device.index) {
    DeviceScope scope(device_.index);
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_.index), "cudaGetDeviceProperties");
    name_ = prop.name;
    capability_ = prop.major * 10 + prop.minor;
    const auto& lt = cuda::cublaslt();
    cuda::check_cublas(lt.create(&lt_handle_), "create");
    workspace_ = alloc(DType::U8, {kWorkspaceBytes});
  }

  ~CudaBackend() override {
    DeviceScope scope(device_.index);
    if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
    const auto& lt = cuda::cublaslt();
    for (auto& [key, plan] : plans_) {
      if (plan.a != nullptr) (void)lt.layout_destroy(plan.a);
      if (plan.b != nullptr) (void)lt.layout_destroy(plan.b);
      if (plan.c != nullptr) (void)lt.layout_destroy(plan.c);
      if (plan.desc != nullptr) (void)lt.desc_destroy(plan.desc);
    }
    if (lt_handle_ != nullptr) (void)lt.destroy(lt_handle_);
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }

  using Backend::to_device;  // the std::vector<float> convenience form

  Device device() const override { return device_; }
  std::string describe() const override {
    return device_.name() + " (" + name_ + ", sm_" + std::to_string(capability_) + ")";
  }

  // ---- memory ----
  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    DeviceScope scope(device_.index);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    auto storage = std::make_shared<Storage>();
    storage->bytes = static_cast<size_t>(n) * dtype_size(dtype);
    storage->device = device_;
    if (storage->bytes > 0) {
      storage->data = arena_.take(storage->bytes);
      Arena* arena = &arena_;
      storage->release = [arena](void* data, size_t bytes) { arena->give_back(data, bytes); };
    } else {
      storage->data = nullptr;
    }
    Tensor t = Tensor::on(std::move(storage), dtype, std::move(shape));
    return t;
  }

  Tensor to_device(const void* host, DType dtype, std::vector<int64_t> shape) override {
    Tensor t = alloc(dtype, std::move(shape));
    const size_t bytes = static_cast<size_t>(t.numel()) * dtype_size(dtype);
    if (bytes > 0) {
      DeviceScope scope(device_.index);
      // From pageable memory the copy has read the host buffer when the call returns.
      check(cudaMemcpyAsync(t.data(), host, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync to the GPU");
      check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }
    return t;
  }

  Tensor view_host(const void* host, DType dtype, std::vector<int64_t> shape) override {
    return to_device(host, dtype, std::move(shape));
  }

  Tensor host_output(void*, DType dtype, std::vector<int64_t> shape) override { return alloc(dtype, std::move(shape)); }

  void download(const Tensor& t, void* host) override {
    need_here("download", t);
    DeviceScope scope(device_.index);
    const size_t es = dtype_size(t.dtype());
    if (t.contiguous()) {
      check(cudaMemcpyAsync(host, t.data(), static_cast<size_t>(t.numel()) * es, cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync to the host");
    } else {
      check(cudaMemcpy2DAsync(host, static_cast<size_t>(t.cols()) * es, t.data(), static_cast<size_t>(t.ld()) * es,
                              static_cast<size_t>(t.cols()) * es, static_cast<size_t>(t.rows()), cudaMemcpyDeviceToHost,
                              stream_),
            "cudaMemcpy2DAsync to the host");
    }
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void copy(const Tensor& src, const Tensor& dst) override {
    need_here("copy", src);
    need_here("copy", dst);
    if (src.shape() != dst.shape()) bad("copy", src.shape_text() + " into " + dst.shape_text());
    DeviceScope scope(device_.index);
    cuda::copy_convert(src.dtype(), src.data(), src.rows(), src.cols(), src.ld(), dst.dtype(), dst.data(), dst.ld(),
                       stream_);
  }

  void synchronize() override {
    DeviceScope scope(device_.index);
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  // ---- weights ----
  std::unique_ptr<LinearLayer> linear_layer(const HostMatrix& w, const std::vector<float>& bias, WeightFormat format,
                                            Precision precision) override {
    if (w.block) {
      // No quantised GEMM on CUDA yet: GGUF blocks are dequantised on the host at load, then held as bf16
      // (AsStored, BF16) or f32 (F32) like any other matrix.
      if (format == WeightFormat::FP8)
        fail(FX_ERR_UNSUPPORTED, "cuda backend: FP8 weights are not implemented on CUDA yet; load with bf16 or as stored");
      std::vector<float> values(static_cast<size_t>(w.n * w.k));
      dequantize_blocks(*w.block, static_cast<const uint8_t*>(w.data), w.n * w.k, values.data());
      const HostMatrix decoded{DType::F32, values.data(), w.n, w.k, w.label, 1.0f, std::nullopt};
      return linear_layer(decoded, bias, format == WeightFormat::F32 ? WeightFormat::F32 : WeightFormat::BF16, precision);
    }
    if (!dtype_is_float(w.dtype) || w.dtype == DType::F8_E4M3FN || w.dtype == DType::F8_E5M2)
      fail(FX_ERR_UNSUPPORTED, w.label + " is stored as " + dtype_name(w.dtype) + ", which linear weights are not loaded from");
    if (format == WeightFormat::FP8)
      fail(FX_ERR_UNSUPPORTED, "cuda backend: FP8 weights are not implemented on CUDA yet; load with bf16 or as stored");
    // F32 format (or f32 stored and kept) runs an f32 GEMM; everything else is held in bf16.
    const bool f32 = format == WeightFormat::F32 || (format == WeightFormat::AsStored && w.dtype == DType::F32);
    const DType target = f32 ? DType::F32 : DType::BF16;
    const size_t count = static_cast<size_t>(w.n * w.k);
    Tensor weight;
    if (w.dtype == target) {
      weight = to_device(w.data, target, {w.n, w.k});
    } else {
      std::vector<uint8_t> converted(count * dtype_size(target));
      convert(w.dtype, w.data, target, converted.data(), count, Overflow::Ieee);
      weight = to_device(converted.data(), target, {w.n, w.k});
    }
    Tensor b = bias.empty() ? alloc(DType::F32, {0}) : to_device(bias);
    return std::make_unique<CudaLinear>(w.n, w.k, std::move(weight), std::move(b));
  }

  std::unique_ptr<ConvLayer> conv_layer(const float* weight, int64_t out, int64_t in, int64_t kh, int64_t kw,
                                        const std::vector<float>& bias) override {
    if (static_cast<int64_t>(bias.size()) != out) bad("conv_layer", "bias size differs from the output channels");
    std::vector<float> packed(static_cast<size_t>(cuda::conv2d_packed_count(out, in, kh, kw)));
    cuda::conv2d_pack_weights(weight, out, in, kh, kw, packed.data());
    Tensor w = to_device(packed.data(), DType::F32, {out, int64_t(packed.size()) / out});
    return std::make_unique<CudaConv>(out, in, kh, kw, std::move(w), to_device(bias));
  }

  // ---- operations ----
  void linear(const Tensor& x, const LinearLayer& layer, Activation act, const Tensor& y) override {
    const auto& l = static_cast<const CudaLinear&>(layer);
    need_here("linear", x);
    need_here("linear", y);
    const int64_t m = x.rows(), k = l.in_features(), n = l.out_features();
    if (x.cols() != k || y.cols() != n || y.rows() != m)
      bad("linear", "x " + x.shape_text() + " and y " + y.shape_text() + " do not fit a [" + std::to_string(n) + ", " +
                        std::to_string(k) + "] layer");
    if (m == 0) return;
    DeviceScope scope(device_.index);
    // The GEMM's input dtype is the weight's: round f32 activations into a bf16 scratch when needed.
    const DType wt = l.weight.dtype();
    const void* a_ptr = x.data();
    int64_t lda_x = x.ld();
    Tensor scratch;
    if (x.dtype() != wt) {
      scratch = alloc(wt, {m, k});
      cuda::copy_convert(x.dtype(), x.data(), m, k, x.ld(), wt, scratch.data(), k, stream_);
      a_ptr = scratch.data();
      lda_x = k;
    }
    const bool gelu = act == Activation::GeluTanh;
    gemm(l.weight.data(), wt, a_ptr, lda_x, y.data(), y.dtype(), y.ld(), m, n, k,
         l.has_bias() ? l.bias.f32() : nullptr, gelu);
    if (act == Activation::Silu)
      cuda::bias_activation(y.dtype(), y.data(), m, n, y.ld(), nullptr, cuda::Epilogue::Silu, stream_);
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                 const AttentionParams& p) override {
    for (const Tensor* t : {&q, &k, &v, &out}) {
      need_here("attention", *t);
      if (t->ndim() != 3) bad("attention", "operands must be [B, L, heads*head_dim], got " + t->shape_text());
    }
    if (p.heads < 1 || q.dim(2) % p.heads != 0) bad("attention", "width not divisible into heads");
    if (k.shape() != v.shape() || q.dim(0) != k.dim(0) || q.dim(2) != k.dim(2) || out.shape() != q.shape() ||
        q.dtype() != k.dtype() || q.dtype() != v.dtype() || q.dtype() != out.dtype())
      bad("attention", "q " + q.shape_text() + ", k " + k.shape_text() + ", v " + v.shape_text() + ", out " +
                           out.shape_text() + " do not agree");
    for (const Tensor* t : {&q, &k, &v, &out})
      if (t->stride(2) != 1) bad("attention", "an operand's rows are not contiguous");
    if (p.bias != nullptr) {
      need_here("attention", *p.bias);
      if (p.bias->dtype() != DType::F32 || !p.bias->contiguous() || p.bias->numel() != p.heads * q.dim(1) * k.dim(1))
        bad("attention", "bias " + p.bias->shape_text() + " is not [heads·Lq·Lkv] contiguous f32");
    }
    cuda::AttentionArgs a;
    a.act = q.dtype();
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    a.out = out.data();
    a.q_batch_stride = q.stride(0);
    a.q_row_stride = q.stride(1);
    a.k_batch_stride = k.stride(0);
    a.k_row_stride = k.stride(1);
    a.v_batch_stride = v.stride(0);
    a.v_row_stride = v.stride(1);
    a.out_batch_stride = out.stride(0);
    a.out_row_stride = out.stride(1);
    a.batch = q.dim(0);
    a.heads = p.heads;
    a.seq_q = q.dim(1);
    a.seq_kv = k.dim(1);
    a.head_dim = q.dim(2) / p.heads;
    a.scale = p.scale;
    a.causal = p.causal;
    a.bias = p.bias != nullptr ? p.bias->f32() : nullptr;
    DeviceScope scope(device_.index);
    cuda::attention(a, stream_);
  }

  void rope_tables(const float* host_ids, int64_t seq, const std::vector<int>& axes_dim, double theta,
                   const Tensor& cos, const Tensor& sin) override {
    // Angles in double on the host (as the CPU does), then one upload: a few hundred KB per forward.
    const int64_t half = cos.numel() / std::max<int64_t>(1, seq);
    std::vector<float> c(static_cast<size_t>(seq * half)), s(c.size());
    cpu::rope_tables(host_ids, seq, static_cast<int>(axes_dim.size()), axes_dim.data(), theta, c.data(), s.data());
    DeviceScope scope(device_.index);
    check(cudaMemcpyAsync(cos.data(), c.data(), c.size() * sizeof(float), cudaMemcpyHostToDevice, stream_), "rope upload");
    check(cudaMemcpyAsync(sin.data(), s.data(), s.size() * sizeof(float), cudaMemcpyHostToDevice, stream_), "rope upload");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void rope_apply(const Tensor& x, int64_t heads, const Tensor& cos, const Tensor& sin) override {
    DeviceScope scope(device_.index);
    cuda::rope_apply(x.dtype(), x.data(), x.rows(), x.ld(), heads, x.cols() / heads, cos.f32(), sin.f32(), stream_);
  }

  void rms_norm_heads(const Tensor& x, int64_t heads, const Tensor& weight, float eps) override {
    DeviceScope scope(device_.index);
    cuda::rms_norm_heads(x.dtype(), x.data(), x.rows(), x.ld(), heads, x.cols() / heads, weight.f32(), eps, stream_);
  }

  void layernorm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps,
                          const Tensor& y) override {
    DeviceScope scope(device_.index);
    cuda::layernorm_modulate(x.dtype(), x.data(), x.rows(), x.cols(), x.ld(), shift.f32(), scale.f32(), eps, y.data(),
                             y.ld(), stream_);
  }

  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, const Tensor& y) override {
    DeviceScope scope(device_.index);
    cuda::layernorm_affine(x.dtype(), x.data(), x.rows(), x.cols(), x.ld(), gamma.f32(), beta.f32(), eps, y.data(),
                           y.ld(), stream_);
  }

  void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    DeviceScope scope(device_.index);
    cuda::rms_norm(x.dtype(), x.data(), x.rows(), x.cols(), x.ld(), weight.f32(), eps, y.data(), y.ld(), stream_);
  }

  void gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) override {
    DeviceScope scope(device_.index);
    cuda::gated_add(x.dtype(), x.data(), x.rows(), x.cols(), x.ld(), gate.f32(), y.data(), y.ld(), stream_);
  }

  void add(const Tensor& x, const Tensor& y) override { binary(cuda::Binary::Add, x, y); }
  void mul(const Tensor& x, const Tensor& y) override { binary(cuda::Binary::Mul, x, y); }
  void gelu_tanh(const Tensor& x) override { unary(cuda::Unary::GeluTanh, x); }
  void silu(const Tensor& x) override { unary(cuda::Unary::Silu, x); }
  void quick_gelu(const Tensor& x) override { unary(cuda::Unary::QuickGelu, x); }

  void embedding(const Tensor& table, const int32_t* ids, int64_t count, const Tensor& out) override {
    need_here("embedding", table);
    need_here("embedding", out);
    if (!dtype_is_float(table.dtype()) || !table.contiguous() || table.ndim() != 2)
      bad("embedding", "table must be a contiguous [vocab, hidden] float tensor");
    need_act("embedding", out);
    const int64_t vocab = table.dim(0), hidden = table.dim(1);
    if (out.cols() != hidden || out.rows() != count) bad("embedding", "out " + out.shape_text() + " mismatch");
    if (count == 0) return;
    for (int64_t r = 0; r < count; ++r)
      if (ids[r] < 0 || ids[r] >= vocab)
        fail(FX_ERR_INVALID_ARGUMENT, "cuda backend embedding: id " + std::to_string(ids[r]) + " at position " +
                                          std::to_string(r) + " is outside the vocabulary of " + std::to_string(vocab));
    const Tensor device_ids = to_device(ids, DType::I32, {count});
    DeviceScope scope(device_.index);
    cuda::embedding(table.dtype(), table.data(), hidden, device_ids.data_as<const int32_t>(), count, out.dtype(),
                    out.data(), out.ld(), stream_);
  }

  void relative_position_bias(const Tensor& table, const std::vector<int32_t>& bucket_of, int64_t q0, int64_t seq,
                              const Tensor& out) override {
    need_here("relative_position_bias", table);
    need_here("relative_position_bias", out);
    if (table.dtype() != DType::F32 || out.dtype() != DType::F32 || !table.contiguous() || table.ndim() != 2)
      bad("relative_position_bias", "table and out must be f32, the table a contiguous [buckets, heads]");
    const int64_t buckets = table.dim(0), heads = table.dim(1);
    if (!out.contiguous() || out.ndim() != 3 || out.dim(0) != heads || out.dim(2) != seq ||
        static_cast<int64_t>(bucket_of.size()) != 2 * seq - 1 || q0 < 0 || q0 + out.dim(1) > seq)
      bad("relative_position_bias", "out " + out.shape_text() + " is not [heads, rows, L]");
    for (int32_t b : bucket_of)
      if (b < 0 || b >= buckets) bad("relative_position_bias", "bucket " + std::to_string(b) + " is outside the table");
    if (out.numel() == 0) return;
    const Tensor device_buckets = to_device(bucket_of.data(), DType::I32, {int64_t(bucket_of.size())});
    DeviceScope scope(device_.index);
    cuda::relative_position_bias(table.f32(), heads, device_buckets.data_as<const int32_t>(), q0, out.dim(1), seq,
                                 out.f32(), stream_);
  }

  // ---- image operations ----
  void conv2d(const Tensor& x, const ConvLayer& layer, const ConvGeometry& g, bool accumulate,
              const Tensor& y) override {
    const auto& c = static_cast<const CudaConv&>(layer);
    need_here("conv2d", x);
    need_here("conv2d", y);
    need_act("conv2d", x);
    if (y.dtype() != x.dtype()) bad("conv2d", "x and y dtypes differ");
    if (x.ndim() != 3 || !x.contiguous() || !y.contiguous() || x.dim(0) != c.in_channels())
      bad("conv2d", "x " + x.shape_text() + " is not a contiguous [" + std::to_string(c.in_channels()) + ", H, W]");
    cuda::Conv2dArgs a;
    a.act = x.dtype();
    a.x = x.data();
    a.y = y.data();
    a.bias = c.bias.f32();
    a.batch = 1;
    a.in_channels = c.in_channels();
    a.out_channels = c.out_channels();
    a.height = x.dim(1);
    a.width = x.dim(2);
    a.kernel_h = c.kernel_h();
    a.kernel_w = c.kernel_w();
    a.stride = g.stride;
    a.pad_top = g.pad_top;
    a.pad_bottom = g.pad_bottom;
    a.pad_left = g.pad_left;
    a.pad_right = g.pad_right;
    a.accumulate = accumulate;
    if (a.stride < 1 || a.height + a.pad_top + a.pad_bottom < a.kernel_h || a.width + a.pad_left + a.pad_right < a.kernel_w)
      bad("conv2d", "geometry gives an empty output for x " + x.shape_text());
    if (y.numel() != a.out_channels * a.out_height() * a.out_width())
      bad("conv2d", "y " + y.shape_text() + " does not hold the output");
    DeviceScope scope(device_.index);
    if (x.dtype() == DType::BF16 && capability_ >= 80) {
      a.weight_dtype = DType::BF16;
      a.weight = bf16_weights(c).data();
    } else {
      a.weight_dtype = DType::F32;
      a.weight = c.weight.data();
    }
    cuda::conv2d(a, stream_);
  }

  void group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                  const Tensor& y) override {
    need_here("group_norm", x);
    need_here("group_norm", y);
    need_act("group_norm", x);
    if (y.dtype() != x.dtype() || !x.contiguous() || !y.contiguous() || x.numel() != y.numel() || x.ndim() < 1)
      bad("group_norm", "x and y must be contiguous and alike");
    const int64_t channels = x.dim(0);
    need_params("group_norm", gamma, channels, "gamma");
    need_params("group_norm", beta, channels, "beta");
    if (channels == 0 || x.numel() == 0) return;
    const int64_t hw = x.numel() / channels;
    if (groups < 1 || channels % groups != 0)
      bad("group_norm", std::to_string(channels) + " channels do not divide into " + std::to_string(groups) + " groups");
    const Tensor workspace = alloc(DType::U8, {int64_t(cuda::group_norm_workspace_bytes(1, channels, hw, groups))});
    DeviceScope scope(device_.index);
    cuda::group_norm(x.dtype(), x.data(), 1, channels, hw, groups, gamma.f32(), beta.f32(), eps, silu, y.data(),
                     workspace.data(), stream_);
  }

  void upsample_nearest2x(const Tensor& x, const Tensor& y) override {
    need_here("upsample_nearest2x", x);
    need_here("upsample_nearest2x", y);
    need_act("upsample_nearest2x", x);
    if (y.dtype() != x.dtype() || x.ndim() != 3 || !x.contiguous() || !y.contiguous() || y.numel() != 4 * x.numel())
      bad("upsample_nearest2x", "x " + x.shape_text() + ", y " + y.shape_text());
    if (x.numel() == 0) return;
    DeviceScope scope(device_.index);
    cuda::upsample_nearest2x(x.dtype(), x.data(), x.dim(0), x.dim(1), x.dim(2), y.data(), stream_);
  }

  void transpose(const Tensor& src, const Tensor& dst, bool accumulate) override {
    need_here("transpose", src);
    need_here("transpose", dst);
    need_act("transpose", src);
    if (dst.dtype() != src.dtype()) bad("transpose", "dtypes differ");
    const int64_t rows = src.rows(), cols = src.cols();
    if (dst.rows() != cols || dst.cols() != rows) bad("transpose", src.shape_text() + " into " + dst.shape_text());
    DeviceScope scope(device_.index);
    cuda::transpose(src.dtype(), src.data(), rows, cols, src.ld(), dst.data(), dst.ld(), accumulate, stream_);
  }

  void scale_latents(const Tensor& x, double scale, double shift, bool to_model, const Tensor& y) override {
    need_here("scale_latents", x);
    need_here("scale_latents", y);
    need_act("scale_latents", x);
    if (y.dtype() != x.dtype() || !x.contiguous() || !y.contiguous() || x.numel() != y.numel())
      bad("scale_latents", "x and y must match");
    DeviceScope scope(device_.index);
    cuda::scale_latents(x.dtype(), x.data(), x.numel(), scale, shift, to_model, y.data(), stream_);
  }

 private:
  static constexpr int64_t kWorkspaceBytes = int64_t(32) << 20;

  void need_here(const char* op, const Tensor& t) const {
    if (t.numel() > 0 && t.device() != device_) bad(op, "a tensor is on " + t.device().name() + ", not " + device_.name());
  }

  // Activations the kernels take: f32 or bf16.
  static void need_act(const char* op, const Tensor& t) {
    if (t.dtype() != DType::F32 && t.dtype() != DType::BF16)
      fail(FX_ERR_UNSUPPORTED, std::string("cuda backend ") + op + ": activations must be f32 or bf16, not " +
                                   dtype_name(t.dtype()));
  }

  // A per-channel parameter vector: [n] contiguous f32 here.
  void need_params(const char* op, const Tensor& v, int64_t n, const char* name) const {
    need_here(op, v);
    if (v.dtype() != DType::F32 || v.numel() != n || !v.contiguous())
      bad(op, std::string(name) + " is " + v.shape_text() + ", needs [" + std::to_string(n) + "] contiguous f32");
  }

  // The layer's bf16 weights, converted on the stream at the first call that needs them.
  const Tensor& bf16_weights(const CudaConv& c) {
    std::lock_guard<std::mutex> lock(c.bf16_mutex);
    if (c.weight_bf16.data() == nullptr) {
      Tensor w = alloc(DType::BF16, c.weight.shape());
      cuda::copy_convert(DType::F32, c.weight.data(), c.weight.rows(), c.weight.cols(), c.weight.ld(), DType::BF16,
                         w.data(), w.ld(), stream_);
      c.weight_bf16 = std::move(w);
    }
    return c.weight_bf16;
  }

  void binary(cuda::Binary op, const Tensor& x, const Tensor& y) {
    DeviceScope scope(device_.index);
    cuda::binary(op, x.dtype(), x.data(), x.rows(), x.cols(), x.ld(), y.data(), y.ld(), stream_);
  }

  void unary(cuda::Unary op, const Tensor& x) {
    DeviceScope scope(device_.index);
    cuda::unary(op, x.dtype(), x.data(), x.rows(), x.cols(), x.ld(), stream_);
  }

  // One cached cuBLASLt plan: the descriptors and the algorithm for a shape.
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // The shape, strides, dtypes and epilogue, as text: std::map and tuple keys are out because clang-14, nvcc's
  // host compiler here, rejects libstdc++ 12's map::emplace as soon as <map> is parsed in a .cu file.
  using PlanKey = std::string;

  // D[n, m] (column-major, ld ldy) = op(W)ᵀ… see the file comment: A = W [k × n col-major, transposed],
  // B = X [k × m col-major], D = Y [n × m col-major].
  void gemm(const void* w, DType wt, const void* x, int64_t ldx, void* y, DType yt, int64_t ldy, int64_t m, int64_t n,
            int64_t k, const float* bias, bool gelu) {
    const auto& lt = cuda::cublaslt();
    const cublasLtEpilogue_t epilogue = bias != nullptr ? (gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                                        : (gelu ? CUBLASLT_EPILOGUE_GELU : CUBLASLT_EPILOGUE_DEFAULT);
    const PlanKey key = std::to_string(m) + "," + std::to_string(n) + "," + std::to_string(k) + "," + std::to_string(ldx) +
                        "," + std::to_string(ldy) + "," + std::to_string(static_cast<int>(wt)) + "," +
                        std::to_string(static_cast<int>(yt)) + "," + std::to_string(static_cast<int>(epilogue));
    Plan* plan = nullptr;
    {
      std::lock_guard<std::mutex> lock(plans_mutex_);
      auto it = plans_.find(key);
      if (it == plans_.end()) {
        Plan made = make_plan(wt, yt, m, n, k, ldx, ldy, epilogue);
        plan = &plans_[key];
        *plan = made;
      } else {
        plan = &it->second;
      }
    }
    if (bias != nullptr)
      cuda::check_cublas(lt.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "bias pointer");
    const float alpha = 1.0f, beta = 0.0f;
    cuda::check_cublas(lt.matmul(lt_handle_, plan->desc, &alpha, w, plan->a, x, plan->b, &beta, y, plan->c, y, plan->c,
                                 &plan->algo, workspace_.data(), static_cast<size_t>(kWorkspaceBytes), stream_),
                       "matmul");
  }

  Plan make_plan(DType wt, DType yt, int64_t m, int64_t n, int64_t k, int64_t ldx, int64_t ldy,
                 cublasLtEpilogue_t epilogue) {
    const auto& lt = cuda::cublaslt();
    Plan p;
    const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    cuda::check_cublas(lt.desc_create(&p.desc, compute, CUDA_R_32F), "matmul desc");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cuda::check_cublas(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "transa");
    cuda::check_cublas(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "transb");
    cuda::check_cublas(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)), "epilogue");
    if (epilogue == CUBLASLT_EPILOGUE_BIAS || epilogue == CUBLASLT_EPILOGUE_GELU_BIAS) {
      const cudaDataType_t bias_type = CUDA_R_32F;
      cuda::check_cublas(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)),
                         "bias type");
    }
    cuda::check_cublas(lt.layout_create(&p.a, cuda_type(wt), static_cast<uint64_t>(k), static_cast<uint64_t>(n), k), "layout W");
    cuda::check_cublas(lt.layout_create(&p.b, cuda_type(wt), static_cast<uint64_t>(k), static_cast<uint64_t>(m), ldx), "layout X");
    cuda::check_cublas(lt.layout_create(&p.c, cuda_type(yt), static_cast<uint64_t>(n), static_cast<uint64_t>(m), ldy), "layout Y");
    cublasLtMatmulPreference_t pref = nullptr;
    cuda::check_cublas(lt.pref_create(&pref), "preference");
    const uint64_t workspace = static_cast<uint64_t>(kWorkspaceBytes);
    cuda::check_cublas(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)),
                       "workspace preference");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = lt.heuristic(lt_handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    (void)lt.pref_destroy(pref);
    cuda::check_cublas(status, "algorithm heuristic");
    if (found == 0)
      fail(FX_ERR_UNSUPPORTED, "cuBLASLt has no algorithm for a " + std::string(dtype_name(wt)) + " GEMM of m=" +
                                   std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
    p.algo = result.algo;
    return p;
  }

  Device device_;
  Arena arena_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_handle_ = nullptr;
  Tensor workspace_;
  std::string name_;
  int capability_ = 0;
  std::mutex plans_mutex_;
  std::unordered_map<PlanKey, Plan> plans_;
};

}  // namespace

std::shared_ptr<Backend> cuda_backend(const Device& device) { return std::make_shared<CudaBackend>(device); }

}  // namespace fx::backend
