// CPU GEMM for linear layers: y = act(x · Wᵀ + bias), with W as the checkpoint stores it
// ([out_features, in_features], PyTorch convention) in f32, bf16, fp8 e4m3fn with a per-output-channel
// scale, or GGUF Q8_0 / Q4_K blocks. Weights are converted inside the kernel's inner loop, never into a
// dequantized copy. (Block types run on the AVX2 and portable paths; an AVX-512 CPU takes the AVX2 one.)
//
// Two steps, as an engine uses them:
//   pack_weights()  once at load time: REORDERS W into column panels the micro-kernels stream
//                   (same dtype, same bytes per element, ~no extra memory once the original is freed);
//   linear(packed)  per call. linear(Weights) also exists: it packs into a temporary on every call,
//                   which costs one extra pass over W (fine for tests and one-off calls, not for a model).
//
// linear() picks its path at run time from the CPU features (AVX-512 (+AVX512-BF16), AVX2+FMA+F16C,
// or the portable path) and splits the work over a ThreadPool. linear_reference() is the plain triple
// loop (double accumulation) the tests compare every path with.
//
// Precision rule: Precision::Exact (the default) keeps the activations in f32 on every path, so every
// path agrees with linear_reference() to f32 rounding (relative L2 error ~1e-6). Precision::
// Bf16Activations allows, for bf16 weights on a CPU with AVX512-BF16, the vdpbf16ps path: x is rounded
// to bf16 (nearest-even; the instruction flushes f32 subnormals in x to zero) before the dot products,
// which costs ~3 significant digits (relative L2 error ~2e-3 in the tests, bounded by 2^-8 · Σ|x·w|
// per element) and buys ~1.8× the throughput on Zen 5. Where that path does not apply, it runs Exact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "core/block_quant.h"
#include "core/dtype.h"
#include "core/thread_pool.h"

namespace fx::cpu {

// A weight matrix W[n][k] (row i = output channel i), row-major with row stride k.
struct Weights {
  DType dtype = DType::F32;      // F32, BF16 or F8_E4M3FN
  const void* data = nullptr;
  int64_t n = 0;                 // output features
  int64_t k = 0;                 // input features
  const float* row_scale = nullptr;  // F8_E4M3FN only: real W[i][j] = e4m3(W[i][j]) * row_scale[i]
  // GGUF blocks (core/block_quant.h): data is n rows of k / block-size blocks; dtype is ignored. Only the
  // types block_gemm_supported() names can be packed; the reference takes every type.
  std::optional<BlockType> block;
};

// Whether the GEMM keeps `type` quantised (Q8_0 and Q4_K; see linear_quant.cpp).
bool block_gemm_supported(BlockType type);

enum class Activation { None, GeluTanh, Silu };

enum class Precision { Exact, Bf16Activations };

// W reordered for the micro-kernels: panels of kPanel output channels; inside a panel, k-major
// (f32: [k][32]; bf16: [k/2][32][2], the pairs vdpbf16ps multiplies; e4m3: [k][32] bytes). n is padded
// to a whole panel and k (bf16) to even with zeros. Keeps the dtype: no dequantized copy exists.
class PackedWeights {
 public:
  static constexpr int64_t kPanel = 32;

  DType dtype() const { return dtype_; }  // F32 for block types (what the kernels compute in)
  const std::optional<BlockType>& block() const { return block_; }
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int64_t panels() const { return (n_ + kPanel - 1) / kPanel; }
  // Bytes of one panel and of one k step inside it (bf16: per pair of k).
  size_t panel_bytes() const { return panel_bytes_; }
  const uint8_t* panel(int64_t p) const { return base() + static_cast<size_t>(p) * panel_bytes_; }
  // e4m3 only: row_scale · 256, padded with zeros to panels()·kPanel (the kernels decode e4m3 through
  // f16, which yields the value / 256 exactly, and fold the 256 back in here).
  const float* scale256() const { return borrowed_scale_ != nullptr ? borrowed_scale_ : scale_.get(); }
  size_t bytes() const { return panel_bytes_ * static_cast<size_t>(panels()); }
  // Whether the panels live in memory someone else owns (an engine file mapped by borrow()).
  bool borrowed() const { return borrowed_data_ != nullptr; }

  // The panel layout's version: engine files (engine/) store panels as pack_weights() lays them out and
  // name this version, so that a change of layout refuses old engines instead of misreading them.
  static constexpr int kLayoutVersion = 1;
  // The bytes pack_weights() gives a (dtype, n, k) matrix (F32, BF16 or F8_E4M3FN; not block types).
  static size_t packed_bytes(DType dtype, int64_t n, int64_t k);

  // Panels laid out by pack_weights() in memory this object does not own (an engine file mapped read-only):
  // used in place, never copied; `keep_alive` holds that memory for as long as the weights live. Checks
  // that `bytes` is exactly what (dtype, n, k) packs to, that `scale256` has panels()·kPanel values (e4m3;
  // null otherwise) and that both are 64-byte aligned, as the kernels' aligned loads need; fx::Error
  // (FX_ERR_FORMAT) otherwise. The codes themselves are not scanned (that would read every page at load):
  // an engine's panels are trusted as its writer wrote them.
  static PackedWeights borrow(DType dtype, int64_t n, int64_t k, const void* panels, size_t bytes,
                              const float* scale256, size_t scale_count, std::shared_ptr<const void> keep_alive);

 private:
  friend PackedWeights pack_weights(const Weights& w);
  friend PackedWeights pack_block_weights(const Weights& w);
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  const uint8_t* base() const { return borrowed_data_ != nullptr ? borrowed_data_ : data_.get(); }
  DType dtype_ = DType::F32;
  std::optional<BlockType> block_;
  int64_t n_ = 0, k_ = 0;
  size_t panel_bytes_ = 0;
  std::unique_ptr<uint8_t[], FreeDeleter> data_;
  std::unique_ptr<float[], FreeDeleter> scale_;
  const uint8_t* borrowed_data_ = nullptr;
  const float* borrowed_scale_ = nullptr;
  std::shared_ptr<const void> keep_alive_;
};

// Throws fx::Error(FX_ERR_INVALID_ARGUMENT) for an unsupported dtype, n or k < 1, a null pointer, or an
// e4m3 weight holding a NaN code (0x7F/0xFF: the fast decoders would read it as ±480, so it is refused
// here rather than silently changed); FX_ERR_UNSUPPORTED for a block type without a GEMM.
PackedWeights pack_weights(const Weights& w);
// The block-type part of pack_weights (linear_quant.cpp).
PackedWeights pack_block_weights(const Weights& w);

// x: [m, k] f32 with row stride ldx >= k. y: [m, n] f32 with row stride ldy >= n.
// bias: [n] f32 or nullptr. y doubles as the accumulator across k blocks: its prior contents are
// ignored, and nothing outside rows [0, m) × columns [0, n) is read or written. x and y must not overlap.
void linear(const float* x, int64_t m, int64_t ldx, const PackedWeights& w, const float* bias, Activation act,
            float* y, int64_t ldy, Precision precision = Precision::Exact, ThreadPool& pool = ThreadPool::global());

// Convenience form on unpacked weights (packs into a temporary on every call, see above).
void linear(const float* x, int64_t m, int64_t ldx, const Weights& w, const float* bias, Activation act, float* y,
            int64_t ldy, ThreadPool& pool = ThreadPool::global());

void linear_reference(const float* x, int64_t m, int64_t ldx, const Weights& w, const float* bias, Activation act,
                      float* y, int64_t ldy);

// Quantises f32 weights [n, k] to e4m3fn with one scale per output row (amax / 448), for fp8 engines
// and tests. `out` holds n*k bytes, `row_scale` n floats. Inputs must be finite; an all-zero row gets
// scale 1. Rounding is nearest-even (fx::f32_to_e4m3fn, saturating).
void quantize_e4m3_per_row(const float* w, int64_t n, int64_t k, uint8_t* out, float* row_scale);

// ---- for tests and benchmarks: force one code path ----
enum class LinearPath {
  Auto,        // what linear() picks
  Portable,    // plain C++ (the compiler's baseline vectorisation)
  Avx2,        // AVX2 + FMA (+ F16C for e4m3)
  Avx512,      // AVX-512F/BW, f32 activations
  Avx512Bf16,  // AVX512-BF16 vdpbf16ps, bf16 weights only, x rounded to bf16
};
const char* linear_path_name(LinearPath path);
// Whether this CPU can run `path` for weights of `dtype`.
bool linear_path_supported(LinearPath path, DType dtype);
// The path linear() takes for this dtype and precision here.
LinearPath linear_auto_path(DType dtype, Precision precision);
// linear() on the given path; throws fx::Error(FX_ERR_UNSUPPORTED) where it is not supported.
void linear_with_path(LinearPath path, const float* x, int64_t m, int64_t ldx, const PackedWeights& w,
                      const float* bias, Activation act, float* y, int64_t ldy,
                      ThreadPool& pool = ThreadPool::global());

}  // namespace fx::cpu
