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

// ---- the autoencoder's and the text encoders' operations ----------------------------------------

// conv2d's weight layout: [out][kh·kw][in_padded], in_padded = in rounded up to kConvChannelBlock, zeros in
// the padding: a chunk of the GEMM's K dimension is then one tap and kConvChannelBlock consecutive input
// channels (conv2d.cu). conv2d_pack_weights (host memory to host memory) reorders PyTorch's
// [out][in][kh][kw] f32 into that layout, f32; the bf16 weights are the same layout converted.
constexpr int64_t kConvChannelBlock = 32;
int64_t conv2d_padded_in(int64_t in_channels);
int64_t conv2d_packed_count(int64_t out, int64_t in, int64_t kh, int64_t kw);  // elements
void conv2d_pack_weights(const float* w, int64_t out, int64_t in, int64_t kh, int64_t kw, float* packed);

// y[b][co] = conv(x[b])[co] + bias[co] (+ y[b][co] with `accumulate`), NCHW, contiguous images: x [batch, in,
// H, W], y [batch, out, Ho, Wo] with Ho = (H + pad_top + pad_bottom − kh) / stride + 1 (likewise Wo). x and y
// do not overlap. weight: conv2d_pack_weights' layout, 16-byte aligned, F32 or BF16:
//   * BF16 weights: bf16 tensor cores (mma.sync, sm_80+), x rounded to bf16 as it is gathered, f32
//     accumulation; FX_ERR_UNSUPPORTED below sm_80.
//   * F32 weights: f32 FMA on the CUDA cores (x widened from bf16 when act is BF16): the exact path.
// Padding per side as ops/cpu's Conv2dShape (the Downsample's right/bottom pad is pad_bottom = pad_right = 1);
// each pad must be smaller than the kernel, the stride 1 or more. bias may be null.
struct Conv2dArgs {
  DType act = DType::F32;  // x and y
  const void* x = nullptr;
  void* y = nullptr;
  DType weight_dtype = DType::F32;
  const void* weight = nullptr;
  const float* bias = nullptr;
  int64_t batch = 1, in_channels = 0, out_channels = 0, height = 0, width = 0;
  int64_t kernel_h = 3, kernel_w = 3, stride = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  bool accumulate = false;
  int64_t out_height() const { return (height + pad_top + pad_bottom - kernel_h) / stride + 1; }
  int64_t out_width() const { return (width + pad_left + pad_right - kernel_w) / stride + 1; }
};
void conv2d(const Conv2dArgs& args, Stream stream);

// GroupNorm over x [batch, channels, hw] (contiguous): per (image, group of channels/groups consecutive
// channels) the mean and biased variance over its channels × hw values (per-chunk moments in f32, combined in
// double, as ops/cpu's group_norm), y = (x − mean)·rstd·gamma[c] + beta[c], then SiLU when `silu`. y may be x.
// workspace: group_norm_workspace_bytes() bytes of device memory, 16-byte aligned.
size_t group_norm_workspace_bytes(int64_t batch, int64_t channels, int64_t hw, int64_t groups);
void group_norm(DType act, const void* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups,
                const float* gamma, const float* beta, float eps, bool silu, void* y, void* workspace, Stream stream);

// y [planes, 2H, 2W] = nearest-neighbour 2× of x [planes, H, W] (contiguous).
void upsample_nearest2x(DType act, const void* x, int64_t planes, int64_t height, int64_t width, void* y,
                        Stream stream);

// dst [cols, rows] (row stride ldd) = (or += with `accumulate`) the transpose of src [rows, cols] (row stride lds).
void transpose(DType act, const void* src, int64_t rows, int64_t cols, int64_t lds, void* dst, int64_t ldd,
               bool accumulate, Stream stream);

// The autoencoder's latent scaling over n contiguous elements, in f64 as the CPU does: to_model: y = x / scale
// + shift; else y = scale · (x − shift). y may be x.
void scale_latents(DType act, const void* x, int64_t n, double scale, double shift, bool to_model, void* y,
                   Stream stream);

// out[r, :] = table[ids[r], :] converted (fx::convert's scalar functions: the CPU's bits). table [vocab, hidden]
// contiguous in F32, F16, BF16, F8_E4M3FN, F8_E5M2 or F64; out [count, hidden] F32 or BF16 (row stride ld_out);
// ids: `count` int32 in device memory, each in [0, vocab) (the caller checks).
void embedding(DType table_dtype, const void* table, int64_t hidden, const int32_t* ids, int64_t count,
               DType out_dtype, void* out, int64_t ld_out, Stream stream);

// T5's relative position bias for query rows [q0, q0 + rows) of a seq-token sequence: out[h, i, j] =
// table[bucket_of[j − (q0 + i) + seq − 1] · heads + h], out [heads, rows, seq] contiguous f32; table [buckets,
// heads] f32 and bucket_of [2·seq − 1] int32 in device memory.
void relative_position_bias(const float* table, int64_t heads, const int32_t* bucket_of, int64_t q0, int64_t rows,
                            int64_t seq, float* out, Stream stream);

}  // namespace fx::cuda
