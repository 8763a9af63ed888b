// The 2-D image kernels of the autoencoder (docs/flux-model.md §7.1) on the CPU: convolution (NCHW, weights
// [out, in, kh, kw] as PyTorch stores them), GroupNorm with optional fused SiLU, nearest-neighbour ×2
// upsampling. Each has a *_reference twin written as plainly as possible (double accumulation) that the
// tests compare with; the fast versions take an AVX-512 path when the CPU has one (chosen at run time),
// else (conv2d) an AVX2+FMA one, else a portable loop.
//
// conv2d is a direct convolution, not im2col: the GEMM view is y[co][pixel] = Σ_k W[co][k] · x[k][pixel]
// with k = (ci, ky, kx), and in NCHW the "column" for one k and a run of consecutive output pixels is
// a run of consecutive input pixels (stride 1) or every other one (stride 2). So the micro-kernel loads
// 32 output pixels' inputs straight from the image (masked loads supply the zero padding at the
// borders), broadcasts MR packed weights, and keeps MR × 32 outputs in registers — the same outer
// product as the linear layer's kernel, with no im2col buffer at all (a full im2col of a 128-channel
// 3×3 conv at 1024² would be ~5 GB; this needs no scratch memory). Work is blocked like a GEMM: a task
// owns a band of output rows × a group of output channels; it walks the input channels in blocks whose
// slice of the band stays in L2 while every MR-channel weight micro-panel (L1) sweeps over it, and the
// partial sums live in the output between channel blocks.
#pragma once

#include <cstdint>
#include <memory>

#include "core/thread_pool.h"
#include "ops/cpu/linear.h"  // Activation

namespace fx::cpu {

// Geometry of one convolution. Padding is per side, so the Downsample's (0, 1, 0, 1) zero pad
// (right and bottom only) is pad_right = pad_bottom = 1.
struct Conv2dShape {
  int64_t in_channels = 0, out_channels = 0;
  int64_t height = 0, width = 0;          // input
  int64_t kernel_h = 3, kernel_w = 3;
  int64_t stride = 1;                     // 1 or 2
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;

  int64_t out_height() const { return (height + pad_top + pad_bottom - kernel_h) / stride + 1; }
  int64_t out_width() const { return (width + pad_left + pad_right - kernel_w) / stride + 1; }
};

// Weights [out, in, kh, kw] (f32) reordered once for the micro-kernel: blocks of kMR output channels,
// each [kh][kw][in][kMR] (the kMR weights of one k step side by side; the kernel's inner loop runs over
// the input channels of one tap), out padded with zeros to a whole block.
class PackedConv {
 public:
  static constexpr int64_t kMR = 12;
  int64_t out_channels() const { return out_; }
  int64_t in_channels() const { return in_; }
  int64_t kernel_h() const { return kh_; }
  int64_t kernel_w() const { return kw_; }
  int64_t blocks() const { return (out_ + kMR - 1) / kMR; }
  // The block of output channels [b·kMR, b·kMR + kMR): in·kh·kw·kMR floats.
  const float* block(int64_t b) const { return data_.get() + b * in_ * kh_ * kw_ * kMR; }
  size_t bytes() const { return static_cast<size_t>(blocks() * in_ * kh_ * kw_ * kMR) * sizeof(float); }

 private:
  friend PackedConv pack_conv_weights(const float* w, int64_t out, int64_t in, int64_t kh, int64_t kw);
  struct FreeDeleter {
    void operator()(float* p) const;
  };
  int64_t out_ = 0, in_ = 0, kh_ = 0, kw_ = 0;
  std::unique_ptr<float[], FreeDeleter> data_;
};

// Throws fx::Error(FX_ERR_INVALID_ARGUMENT) for a null pointer or a dimension < 1.
PackedConv pack_conv_weights(const float* w, int64_t out, int64_t in, int64_t kh, int64_t kw);

// y[b] = act(conv(x[b]) + bias (+ y[b] when `accumulate`)) for b in [0, batch).
// x: [batch, in, H, W]; y: [batch, out, Ho, Wo], contiguous. bias: [out] or nullptr. With `accumulate`
// the prior contents of y are added (a residual add for free); without, they are ignored. x and y must
// not overlap. Throws fx::Error(FX_ERR_INVALID_ARGUMENT) when the shape and the packed weights disagree,
// the stride is not 1 or 2, a padding is negative or not smaller than the kernel, or the output is empty.
void conv2d(const float* x, int64_t batch, const Conv2dShape& shape, const PackedConv& w, const float* bias,
            Activation act, bool accumulate, float* y, ThreadPool& pool = ThreadPool::global());

// The plain seven-deep loop with double accumulation, on unpacked weights [out, in, kh, kw].
void conv2d_reference(const float* x, int64_t batch, const Conv2dShape& shape, const float* w, const float* bias,
                      Activation act, bool accumulate, float* y);

// ---- GroupNorm (docs/flux-model.md §7.1): `groups` groups of channels/groups consecutive channels; statistics
// over (group channels × hw) with the biased variance, accumulated per chunk in f32 and combined in
// double (Chan's parallel formula), so a large mean never leaks into the variance. Then
// y = (x - mean)·rstd·gamma[c] + beta[c], followed by SiLU when `silu`. x, y: [batch, channels, hw];
// y may equal x (in place). channels must be a multiple of groups.
void group_norm(const float* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups, const float* gamma,
                const float* beta, float eps, bool silu, float* y, ThreadPool& pool = ThreadPool::global());
void group_norm_reference(const float* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups,
                          const float* gamma, const float* beta, float eps, bool silu, float* y);

// ---- nearest-neighbour ×2: y[p][2i + a][2j + b] = x[p][i][j] for `planes` planes of [height, width].
void upsample_nearest2x(const float* x, int64_t planes, int64_t height, int64_t width, float* y,
                        ThreadPool& pool = ThreadPool::global());
void upsample_nearest2x_reference(const float* x, int64_t planes, int64_t height, int64_t width, float* y);

// ---- for tests and benchmarks ----
// The code paths: conv2d has AVX-512 (16-lane, 12 channels × 32 pixels in registers), AVX2+FMA (8-lane,
// 6 × 16) and portable bodies; group_norm and upsample_nearest2x have AVX-512 and portable ones (the
// AVX2 choice runs their portable bodies). Auto: the best this machine has.
enum class ConvPath { Auto, Portable, Avx2, Avx512 };
const char* conv2d_path_name(ConvPath path);
bool conv2d_path_supported(ConvPath path);
// The path the kernels take now: the best the machine has under the ISA cap of core/cpu_features.h
// (tests cap the ISA to compare every path on one machine).
ConvPath conv2d_active_path();

}  // namespace fx::cpu
