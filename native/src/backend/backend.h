// The backend seam: the operations the models are written against, on tensors (backend/tensor.h).
//
// A model (models/) holds its weights as backend objects and calls backend.linear(...),
// backend.attention(...), backend.layernorm_modulate(...): it is written once, and runs on whichever
// backend it was loaded with. The CPU backend (cpu_backend.cpp) owns a thread pool and calls the
// kernels of ops/cpu; a CUDA backend owns a stream, a memory arena and cuBLASLt handles. Fusions are
// operations here (linear takes its bias and activation; attention takes strided q/k/v straight from a
// fused qkv buffer), so a backend can fuse without a second model graph.
//
// Every operation checks what it can cheaply (shapes, dtypes, devices) and throws fx::Error. Tensors
// given to one call must not overlap unless the operation says it works in place. All activations are
// f32 on the CPU backend; a backend may hold them in another dtype internally.
//
// Tests: tests/test_backend_ops.cpp runs every operation of every backend built against the plain
// references of ops/cpu (as ggml's test-backend-ops does).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/tensor.h"
#include "core/block_quant.h"
#include "core/dtype.h"

namespace fx {
class ThreadPool;
}

namespace fx::backend {

// How linear-layer weights are held. Biases, norm scales and embeddings are always f32.
enum class WeightFormat {
  AsStored,  // f32 and bf16 kept in the dtype the file has; f16 widened to f32
  F32,       // widened to f32 at load (exact)
  BF16,      // rounded to bf16 (round-to-nearest-even) at load
  FP8,       // e4m3fn with one scale per output channel, quantised at load
};

// What arithmetic a linear layer may use for its activations.
enum class Precision {
  Exact,            // f32 activations (matches the references to f32 rounding)
  Bf16Activations,  // bf16 weights may use bf16 dot products where the backend has them (~1e-2 relative)
};

enum class Activation { None, GeluTanh, Silu };

// A weight matrix as a checkpoint stores it: [n, k] row-major (PyTorch's [out, in]) in host memory,
// f32, f16, bf16 or e4m3fn. `label` names it in errors.
struct HostMatrix {
  DType dtype = DType::F32;
  const void* data = nullptr;
  int64_t n = 0, k = 0;
  std::string label;
  // e4m3fn only: the real weight is e4m3 · scale (ComfyUI's per-tensor "scale_weight"); 1 otherwise.
  float scale = 1.0f;
  // GGUF block-quantised storage: `data` is n rows of k / block_elements blocks each (dtype is F32, the
  // decoded values' type).
  std::optional<BlockType> block;
};

// A linear layer y = act(x·Wᵀ + b) in the backend's own layout (CPU: packed panels; CUDA: transposed,
// quantised with scales). Opaque to models.
class LinearLayer {
 public:
  virtual ~LinearLayer() = default;
  int64_t out_features() const { return n_; }
  int64_t in_features() const { return k_; }
  bool has_bias() const { return has_bias_; }

 protected:
  LinearLayer(int64_t n, int64_t k, bool has_bias) : n_(n), k_(k), has_bias_(has_bias) {}

 private:
  int64_t n_, k_;
  bool has_bias_;
};

// A 2-D convolution's weights [out, in, kh, kw] with its bias, in the backend's layout. Opaque to models.
class ConvLayer {
 public:
  virtual ~ConvLayer() = default;
  int64_t out_channels() const { return out_; }
  int64_t in_channels() const { return in_; }
  int64_t kernel_h() const { return kh_; }
  int64_t kernel_w() const { return kw_; }

 protected:
  ConvLayer(int64_t out, int64_t in, int64_t kh, int64_t kw) : out_(out), in_(in), kh_(kh), kw_(kw) {}

 private:
  int64_t out_, in_, kh_, kw_;
};

struct ConvGeometry {
  int64_t stride = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
};

// q, k, v: [B, L, heads·head_dim] views (any batch and row strides, e.g. column blocks of a fused qkv
// buffer); out: [B, Lq, heads·head_dim]. bias (optional): [heads, Lq, Lkv] f32, shared by the batch.
struct AttentionParams {
  int64_t heads = 1;
  float scale = 1.0f;
  bool causal = false;
  const Tensor* bias = nullptr;
};

// A packed linear layer's bytes as a backend holds them, for an engine file (engine/) to store and to hand
// back at load: `layout` names the backend's packing (Backend::weight_layout()), the weights are `bytes`
// bytes at `panels` in `dtype`, `scales` the per-output-channel scales where the dtype has them (fp8).
struct PackedLinear {
  std::string layout;
  DType dtype = DType::F32;
  int64_t n = 0, k = 0;
  const void* panels = nullptr;
  size_t bytes = 0;
  const float* scales = nullptr;
  size_t scale_count = 0;
  std::vector<float> bias;  // [n] or empty
  bool bf16_activations = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string describe() const = 0;  // for logs and errors: "cpu (2 threads, avx2)"

  // ---- memory ----
  // Uninitialised memory on the device.
  virtual Tensor alloc(DType dtype, std::vector<int64_t> shape) = 0;
  // A copy of host memory on the device, owned by the tensor.
  virtual Tensor to_device(const void* host, DType dtype, std::vector<int64_t> shape) = 0;
  Tensor to_device(const std::vector<float>& host) { return to_device(host.data(), DType::F32, {int64_t(host.size())}); }
  // Host memory as a device tensor to read from: the CPU backend borrows it (no copy; the caller keeps
  // it alive and unchanged while the tensor is used), other backends copy it.
  virtual Tensor view_host(const void* host, DType dtype, std::vector<int64_t> shape) = 0;
  // A tensor to write a result into that ends up at `host` after download(): the CPU backend writes
  // there directly, other backends allocate.
  virtual Tensor host_output(void* host, DType dtype, std::vector<int64_t> shape) = 0;
  // Copies `t` (any strides) to contiguous host memory; nothing when `t` already is that memory.
  virtual void download(const Tensor& t, void* host) = 0;
  // dst = src elementwise; same shape and dtype, any strides (the last dimension contiguous).
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  // Waits until every operation issued so far has finished (a no-op on the CPU).
  virtual void synchronize() = 0;

  // ---- weights ----
  // Packs a linear layer in `format` (bias: [n] f32 or empty). A matrix stored as e4m3fn is kept in fp8
  // by AsStored and FP8 (its scale becomes the per-channel scales: no wider copy exists) and widened by
  // F32 / BF16. GGUF blocks: AsStored keeps Q8_0 and Q4_K blocks quantised where the backend has a GEMM
  // for them (CPU) and dequantises every other type at load to bf16; F32 / BF16 / FP8 dequantise at load
  // and convert (docs/checkpoints.md). Throws FX_ERR_UNSUPPORTED for e5m2 or a non-float dtype (the CUDA
  // backend: for any fp8 matrix), FX_ERR_INVALID_ARGUMENT for NaN fp8 codes or a scale that is not finite.
  virtual std::unique_ptr<LinearLayer> linear_layer(const HostMatrix& weight, const std::vector<float>& bias,
                                                    WeightFormat format, Precision precision) = 0;
  // Engines (engine/): the name of this backend's linear-weight packing with its version ("cpu-panels32.v1"),
  // "" where it has none an engine can hold. export_linear() shows a packed layer's bytes (valid while the
  // layer lives); import_linear() makes a layer of bytes export_linear() gave, in place where the backend
  // can (the CPU reads a mapped engine file directly; `keep_alive` holds that memory) and checked against the
  // layout (sizes, alignment). Both throw FX_ERR_UNSUPPORTED on a backend without engines.
  virtual std::string weight_layout() const { return ""; }
  virtual PackedLinear export_linear(const LinearLayer& layer) const;
  virtual std::unique_ptr<LinearLayer> import_linear(const PackedLinear& packed, std::shared_ptr<const void> keep_alive);
  // weight: [out, in, kh, kw] f32 on the host; bias [out].
  virtual std::unique_ptr<ConvLayer> conv_layer(const float* weight, int64_t out, int64_t in, int64_t kh, int64_t kw,
                                                const std::vector<float>& bias) = 0;

  // ---- operations ----
  // y[m, n] = act(x[m, k]·Wᵀ + b). x, y f32 matrices (any row stride).
  virtual void linear(const Tensor& x, const LinearLayer& layer, Activation act, const Tensor& y) = 0;
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const AttentionParams& params) = 0;

  // RoPE tables (docs/flux-model.md §5.2) for position ids [seq, axes] f32 in host memory (the caller's
  // inputs; every backend computes the angles in double on the host): cos, sin [seq·head_dim/2] on the device.
  virtual void rope_tables(const float* host_ids, int64_t seq, const std::vector<int>& axes_dim, double theta,
                           const Tensor& cos, const Tensor& sin) = 0;
  // In place on x [rows, heads·head_dim] (any row stride): rotate each head's pairs by the tables.
  virtual void rope_apply(const Tensor& x, int64_t heads, const Tensor& cos, const Tensor& sin) = 0;
  // In place on x [rows, heads·head_dim]: each head's vector RMS-normalised and scaled by weight [head_dim].
  virtual void rms_norm_heads(const Tensor& x, int64_t heads, const Tensor& weight, float eps) = 0;

  // y = LN(x)·(1 + scale) + shift, LN without affine; shift, scale [cols].
  virtual void layernorm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps,
                                  const Tensor& y) = 0;
  // y = LN(x)·gamma + beta.
  virtual void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, const Tensor& y) = 0;
  // y = x / rms(x) · weight (T5's RMSNorm).
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) = 0;
  // x += gate ⊙ y, gate [cols] broadcast over rows.
  virtual void gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) = 0;
  // x += y and x *= y, same shapes.
  virtual void add(const Tensor& x, const Tensor& y) = 0;
  virtual void mul(const Tensor& x, const Tensor& y) = 0;
  // In place: GELU (tanh approximation), SiLU, QuickGELU (x·σ(1.702x)).
  virtual void gelu_tanh(const Tensor& x) = 0;
  virtual void silu(const Tensor& x) = 0;
  virtual void quick_gelu(const Tensor& x) = 0;

  // out[r] = table[ids[r]] converted to f32; table [vocab, hidden] in any float dtype, ids int32 on the host.
  virtual void embedding(const Tensor& table, const int32_t* ids, int64_t count, const Tensor& out) = 0;
  // T5's relative position bias (docs/flux-model.md §3.3) for query rows [q0, q0 + nq) of an L-token sequence:
  // out[h, i, j] = table[bucket_of[(j − (q0 + i)) + L − 1], h]; table [buckets, heads] f32.
  virtual void relative_position_bias(const Tensor& table, const std::vector<int32_t>& bucket_of, int64_t q0,
                                      int64_t seq, const Tensor& out) = 0;

  // ---- image operations (NCHW, one image: [C, H, W] contiguous) ----
  // y = conv(x) + bias (+ y's previous contents with `accumulate`).
  virtual void conv2d(const Tensor& x, const ConvLayer& layer, const ConvGeometry& geometry, bool accumulate,
                      const Tensor& y) = 0;
  // GroupNorm over x [C, pixels] with affine gamma, beta [C], then SiLU when `silu`. In place allowed.
  virtual void group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps,
                          bool silu, const Tensor& y) = 0;
  // y [C, 2H, 2W] = nearest-neighbour 2× of x [C, H, W].
  virtual void upsample_nearest2x(const Tensor& x, const Tensor& y) = 0;
  // dst [cols, rows] = (or +=) transpose of src [rows, cols].
  virtual void transpose(const Tensor& src, const Tensor& dst, bool accumulate) = 0;
  // The autoencoder's latent scaling (docs/flux-model.md §7.4), computed in f64: to_model: y = x / scale + shift
  // (before the decoder); else y = scale · (x − shift) (after the encoder). In place allowed.
  virtual void scale_latents(const Tensor& x, double scale, double shift, bool to_model, const Tensor& y) = 0;
};

// The CPU backend over `pool` (the process-wide pool when null). The pool must outlive the backend.
std::shared_ptr<Backend> cpu_backend(ThreadPool* pool = nullptr);

// The backend for `device`: the CPU backend for Device::cpu(); the CUDA backend (cuda_backend.h) for a
// CUDA device, or fx::Error naming what is missing (a library built without CUDA, no driver, no such GPU,
// no cuBLASLt).
std::shared_ptr<Backend> backend_for(const Device& device, ThreadPool* pool = nullptr);

}  // namespace fx::backend
