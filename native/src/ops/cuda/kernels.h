// The CUDA kernels the CUDA backend (backend/cuda_backend.cu) launches, behind a plain C++ header: no
// CUDA type appears here, so .cpp files compiled without nvcc can include it. Each kernel's idea is in
// one comment at the top of its .cu file; each is checked against the CPU references through the
// backend (tests/test_backend_ops.cpp runs every backend operation on every backend built).
//
// Conventions for every function:
//   * Pointers are device memory. Matrices are [rows, cols] row-major with a row stride (ld, elements);
//     the last dimension is contiguous.
//   * `act` is the dtype of the activations (x, y, q, k, v, out): DType::F32 or DType::BF16. Parameters
//     (shift, scale, gate, norm weights, cos/sin tables, attention bias) are always f32.
//   * Arithmetic is f32 inside (bf16 is loaded, widened, computed in f32, rounded to nearest-even on store).
//   * `stream` is a cudaStream_t passed as void*. Launch failures throw fx::Error(FX_ERR_BACKEND) naming
//     the kernel and CUDA's error string; nothing synchronises.
//   * Shapes are validated by the backend before the call; the kernels assume them.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace fx::cuda {

using Stream = void*;

// y = LN(x)·(1 + scale) + shift, LN without affine, biased variance, eps inside the sqrt.
void layernorm_modulate(DType act, const void* x, int64_t rows, int64_t cols, int64_t ldx, const float* shift,
                        const float* scale, float eps, void* y, int64_t ldy, Stream stream);
// y = LN(x)·gamma + beta.
void layernorm_affine(DType act, const void* x, int64_t rows, int64_t cols, int64_t ldx, const float* gamma,
                      const float* beta, float eps, void* y, int64_t ldy, Stream stream);
// y = x / sqrt(mean(x²) + eps) · weight over whole rows (T5). x and y may be the same buffer.
void rms_norm(DType act, const void* x, int64_t rows, int64_t cols, int64_t ldx, const float* weight, float eps,
              void* y, int64_t ldy, Stream stream);
// In place: each head vector (heads per row, head_dim each) RMS-normalised and scaled by weight[head_dim].
void rms_norm_heads(DType act, void* x, int64_t rows, int64_t ld, int64_t heads, int64_t head_dim,
                    const float* weight, float eps, Stream stream);
// In place: rotate pairs (x[2m], x[2m+1]) of each head by the angle whose cos/sin are
// tables[row · head_dim/2 + m] (interleaved pairs, docs/flux-model.md §5.2).
void rope_apply(DType act, void* x, int64_t rows, int64_t ld, int64_t heads, int64_t head_dim, const float* cos_t,
                const float* sin_t, Stream stream);
// x[r, c] += gate[c] · y[r, c].
void gated_add(DType act, void* x, int64_t rows, int64_t cols, int64_t ldx, const float* gate, const void* y,
               int64_t ldy, Stream stream);

enum class Binary { Add, Mul };
// x[r, c] = x[r, c] (+ or ·) y[r, c].
void binary(Binary op, DType act, void* x, int64_t rows, int64_t cols, int64_t ldx, const void* y, int64_t ldy,
            Stream stream);

enum class Unary { GeluTanh, Silu, QuickGelu };
// In place over a [rows, cols] matrix.
void unary(Unary op, DType act, void* x, int64_t rows, int64_t cols, int64_t ld, Stream stream);

// dst[r, c] = src[r, c] converted (f32 <-> bf16, or a plain copy for the same dtype).
void copy_convert(DType src_dtype, const void* src, int64_t rows, int64_t cols, int64_t lds, DType dst_dtype,
                  void* dst, int64_t ldd, Stream stream);

// Flash attention: out = softmax(scale · q·kᵀ + bias, causal) · v per (batch, head), online softmax with f32
// statistics, tensor cores where the architecture has them. Operands are [batch, seq, heads·head_dim]
// with the given batch and row strides (heads contiguous inside a row, head h at column h·head_dim).
// bias: optional [heads, seq_q, seq_kv] f32 shared by the batch. A query row whose keys are all masked
// gets zeros. head_dim: any multiple of 8 up to 512 (FLUX: 128; T5-XXL: 64; CLIP-L: 64; the autoencoder's
// mid-block attention: one head of 512). Above 256 the CUDA-core kernel runs (bf16 included), with K and
// V taking turns in one shared buffer (~100 KB: sm_80, sm_86, sm_89, sm_90 have room for it).
struct AttentionArgs {
  DType act = DType::BF16;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  int64_t q_batch_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0;
  int64_t out_batch_stride = 0, out_row_stride = 0;
  int64_t batch = 1, heads = 1, seq_q = 0, seq_kv = 0, head_dim = 0;
  float scale = 1.0f;
  bool causal = false;
  const float* bias = nullptr;
};
void attention(const AttentionArgs& args, Stream stream);

// Adds the bias row to every row of y [rows, cols] and applies an activation (the cuBLASLt epilogue
// covers the common cases; this is the fallback for those it does not).
enum class Epilogue { None, GeluTanh, Silu };
void bias_activation(DType act, void* y, int64_t rows, int64_t cols, int64_t ld, const float* bias, Epilogue epilogue,
                     Stream stream);

}  // namespace fx::cuda
