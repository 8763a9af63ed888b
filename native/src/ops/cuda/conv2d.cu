// Implicit-GEMM convolution (kernels.h): y[co][p] = Σ_k W[co][k]·X[k][p] + bias[co] (+ y), the GEMM of
// M = output channels, N = output pixels, K = taps × input channels, without ever writing X (the im2col
// matrix): each block gathers its K-chunk × N-tile slice of X straight from the NCHW image into shared
// memory (zeros where a tap falls in the padding or past the input channels), while W is a plain row-major
// matrix. The weights are reordered once at load to [out][tap][in_padded] (conv2d_pack_weights), so a
// K chunk is one tap (ky, kx) and a run of consecutive input channels: a thread gathering for output
// pixel (oy, ox) computes its input position (oy·stride + ky − pad_top, ox·stride + kx − pad_left) and
// its bounds check once per chunk, and the chunk's values are then base + ci·H·W, one coalesced row of
// pixels per warp. Any kernel size, stride and per-side padding is the same code (3×3 "same", the
// Downsample's 3×3 stride 2 with its right/bottom pad, 1×1 shortcuts).
//
// BF16 weights (sm_80+): conv2d_mma_kernel, tiles of 64 channels × 128 pixels × 32 K, 8 warps of 32×32,
// bf16 mma.sync m16n8k16 with f32 accumulators; operands from shared memory by ldmatrix (A = W rows as
// the attention kernel's Q, B = the gathered [k][pixel] tile transposed by ldmatrix.trans as its V). Two
// shared stages: the next chunk's weights arrive by cp.async and its gathered values wait in registers
// while the tensor cores work on the current chunk. x is rounded to bf16 as it is gathered.
// F32 weights: conv2d_simt_kernel, the same gather and staging on the CUDA cores, tiles of 64 × 64 × 16,
// 256 threads of 4 × 4 outputs in f32: the exact path (f32 products and sums, like the CPU's kernels).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/mma.cuh"

namespace fx::cuda {

int64_t conv2d_padded_in(int64_t in_channels) {
  return (in_channels + kConvChannelBlock - 1) / kConvChannelBlock * kConvChannelBlock;
}

int64_t conv2d_packed_count(int64_t out, int64_t in, int64_t kh, int64_t kw) {
  return out * kh * kw * conv2d_padded_in(in);
}

void conv2d_pack_weights(const float* w, int64_t out, int64_t in, int64_t kh, int64_t kw, float* packed) {
  if (w == nullptr || packed == nullptr || out < 1 || in < 1 || kh < 1 || kw < 1)
    fail(FX_ERR_INVALID_ARGUMENT, "conv2d_pack_weights: empty or null weights");
  const int64_t in_p = conv2d_padded_in(in), taps = kh * kw;
  for (int64_t co = 0; co < out; ++co)
    for (int64_t tap = 0; tap < taps; ++tap) {
      float* dst = packed + (co * taps + tap) * in_p;
      for (int64_t ci = 0; ci < in_p; ++ci) dst[ci] = ci < in ? w[(co * in + ci) * taps + tap] : 0.0f;
    }
}

namespace {

using dev::bf16;
using namespace dev::sm80;

struct ConvParams {
  const void* x;
  void* y;
  const void* w;
  const float* bias;
  int64_t x_image, y_image;  // elements per image
  int64_t plane;             // H·W
  int64_t w_row;             // taps·cin_p
  int cin, cout, H, W, Wo, kw, stride, pad_top, pad_left;
  int cin_p, chunks_per_tap, chunks;  // chunks = taps·chunks_per_tap (K chunks of the kernel's kBK channels)
  int pixels;                         // Ho·Wo
  int co_tiles;
  bool accumulate;
};

// The thread's output pixel and where its taps start in the input.
struct GatherPixel {
  bool ok;
  int iy0, ix0;
  __device__ __forceinline__ GatherPixel(const ConvParams& p, int pix) {
    ok = pix < p.pixels;
    const int oy = ok ? pix / p.Wo : 0, ox = ok ? pix - oy * p.Wo : 0;
    iy0 = oy * p.stride - p.pad_top;
    ix0 = ox * p.stride - p.pad_left;
  }
};

// The input values one thread gathers for chunk `chunk` (a tap and kBK channels from ci0): channels
// ci0 + r0 + i·kStep, i < kCount, at the thread's pixel; zeros in the padding and past cin.
template <int kBK, int kCount, int kStep, typename TX>
__device__ __forceinline__ void gather(const ConvParams& p, const TX* x, const GatherPixel& px, int r0, int chunk,
                                       float (&v)[kCount]) {
  const int tap = chunk / p.chunks_per_tap;
  const int ci0 = (chunk - tap * p.chunks_per_tap) * kBK;
  const int ky = tap / p.kw, kx = tap - ky * p.kw;
  const int iy = px.iy0 + ky, ix = px.ix0 + kx;
  const bool ok = px.ok && iy >= 0 && iy < p.H && ix >= 0 && ix < p.W;
  const int64_t offset = ok ? int64_t(iy) * p.W + ix : 0;
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    const int ci = ci0 + r0 + i * kStep;
    v[i] = ok && ci < p.cin ? dev::to_f32(x[int64_t(ci) * p.plane + offset]) : 0.0f;
  }
}

// y = acc + bias (+ y) for one output element.
template <typename TX>
__device__ __forceinline__ void store_output(const ConvParams& p, TX* y, int row, int col, float acc) {
  if (row >= p.cout || col >= p.pixels) return;
  float v = acc + (p.bias != nullptr ? p.bias[row] : 0.0f);
  TX* dst = y + int64_t(row) * p.pixels + col;
  if (p.accumulate) v += dev::to_f32(*dst);
  *dst = dev::from_f32<TX>(v);
}

// ---------------------------------------------------------------------------------------------------
// BF16 tensor-core kernel

constexpr int kMmaBM = 64, kMmaBN = 128, kMmaBK = 32, kMmaThreads = 256;
constexpr int kAStride = kMmaBK + 8;  // 80-byte rows: ldmatrix's 8 row addresses in distinct banks
constexpr int kBStride = kMmaBN + 8;  // 272-byte rows: likewise
constexpr int kMmaGatherStep = kMmaThreads / kMmaBN;        // 2
constexpr int kMmaGatherCount = kMmaBK / kMmaGatherStep;    // 16 values per thread per chunk
static_assert(kMmaBK == kConvChannelBlock, "the weights' padding is one mma chunk");

template <typename TX>
__global__ void __launch_bounds__(kMmaThreads) conv2d_mma_kernel(const ConvParams p) {
  __shared__ __align__(16) bf16 sA[2][kMmaBM * kAStride];  // [co][k]
  __shared__ __align__(16) bf16 sB[2][kMmaBK * kBStride];  // [k][pixel]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int wm = warp % 2, wn = warp / 2;  // the warp's 32×32: rows wm·32, columns wn·32
  const int co0 = int(blockIdx.x % unsigned(p.co_tiles)) * kMmaBM;
  const int p0 = int(blockIdx.x / unsigned(p.co_tiles)) * kMmaBN;
  const TX* x = static_cast<const TX*>(p.x) + int64_t(blockIdx.y) * p.x_image;
  TX* y = static_cast<TX*>(p.y) + int64_t(blockIdx.y) * p.y_image;

  // Weights: each thread copies 16 bytes (8 channels) of one row per chunk; rows past cout are zeros.
  const int ar = tid / 4, ac = (tid % 4) * 8;
  const bool a_ok = co0 + ar < p.cout;
  const bf16* a_src = static_cast<const bf16*>(p.w) + int64_t(a_ok ? co0 + ar : 0) * p.w_row + ac;
  // Gather: column gn of the tile, channels gr0, gr0 + 2, … of each chunk.
  const int gn = tid % kMmaBN, gr0 = tid / kMmaBN;
  const GatherPixel px(p, p0 + gn);

  float acc[2][4][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int nj = 0; nj < 4; ++nj) acc[mi][nj][0] = acc[mi][nj][1] = acc[mi][nj][2] = acc[mi][nj][3] = 0.0f;
  float staged[kMmaGatherCount];

  auto load_a = [&](int stage, int chunk) {
    const int tap = chunk / p.chunks_per_tap;
    const int ci0 = (chunk - tap * p.chunks_per_tap) * kMmaBK;
    cp_async16(&sA[stage][ar * kAStride + ac], a_src + int64_t(tap) * p.cin_p + ci0, a_ok ? 16 : 0);
    cp_async_commit();
  };
  auto store_b = [&](int stage) {
#pragma unroll
    for (int i = 0; i < kMmaGatherCount; ++i)
      sB[stage][(gr0 + i * kMmaGatherStep) * kBStride + gn] = __float2bfloat16_rn(staged[i]);
  };

  load_a(0, 0);
  gather<kMmaBK, kMmaGatherCount, kMmaGatherStep>(p, x, px, gr0, 0, staged);
  store_b(0);
  cp_async_wait_all();
  __syncthreads();

  for (int c = 0; c < p.chunks; ++c) {
    const int s = c & 1;
    const bool more = c + 1 < p.chunks;
    if (more) {  // the next chunk's loads are in flight while the tensor cores work
      load_a(s ^ 1, c + 1);
      gather<kMmaBK, kMmaGatherCount, kMmaGatherStep>(p, x, px, gr0, c + 1, staged);
    }
    const bf16* a_s = sA[s];
    const bf16* b_s = sB[s];
#pragma unroll
    for (int ks = 0; ks < kMmaBK / 16; ++ks) {
      uint32_t a[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
        ldmatrix_x4(a[mi], a_s + (wm * 32 + mi * 16 + (lane & 15)) * kAStride + ks * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        // Transposed: k rows ks·16 + 0..7 × pixels np·16 + 0..7, k + 8 × the same pixels, then pixels + 8.
        uint32_t b[4];
        ldmatrix_x4_trans(b, b_s + (ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kBStride + wn * 32 + np * 16 +
                                 (lane >> 4) * 8);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma_bf16_16816(acc[mi][2 * np], a[mi], b[0], b[1]);
          mma_bf16_16816(acc[mi][2 * np + 1], a[mi], b[2], b[3]);
        }
      }
    }
    if (more) store_b(s ^ 1);  // that stage's last readers passed the barrier that ended the previous chunk
    cp_async_wait_all();
    __syncthreads();
  }

#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int nj = 0; nj < 4; ++nj)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        store_output(p, y, co0 + wm * 32 + mi * 16 + g + (e >= 2 ? 8 : 0), p0 + wn * 32 + nj * 8 + 2 * t4 + (e & 1),
                     acc[mi][nj][e]);
}

// ---------------------------------------------------------------------------------------------------
// F32 CUDA-core kernel

constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;
constexpr int kSimtGatherStep = kSimtThreads / kSimtBN;      // 4
constexpr int kSimtGatherCount = kSimtBK / kSimtGatherStep;  // 4
static_assert(kConvChannelBlock % kSimtBK == 0, "a chunk stays inside the weights' padded channels");

template <typename TX>
__global__ void __launch_bounds__(kSimtThreads) conv2d_simt_kernel(const ConvParams p) {
  __shared__ __align__(16) float sA[2][kSimtBK][kSimtBM + 4];  // [k][co]: a thread's 4 rows are one float4
  __shared__ __align__(16) float sB[2][kSimtBK][kSimtBN + 4];  // [k][pixel]

  const int tid = threadIdx.x;
  const int co0 = int(blockIdx.x % unsigned(p.co_tiles)) * kSimtBM;
  const int p0 = int(blockIdx.x / unsigned(p.co_tiles)) * kSimtBN;
  const TX* x = static_cast<const TX*>(p.x) + int64_t(blockIdx.y) * p.x_image;
  TX* y = static_cast<TX*>(p.y) + int64_t(blockIdx.y) * p.y_image;

  // Weights: each thread loads 4 channels (one float4) of one row per chunk.
  const int ar = tid / 4, ak = (tid % 4) * 4;
  const bool a_ok = co0 + ar < p.cout;
  const float* a_src = static_cast<const float*>(p.w) + int64_t(a_ok ? co0 + ar : 0) * p.w_row + ak;
  const int gn = tid % kSimtBN, gr0 = tid / kSimtBN;
  const GatherPixel px(p, p0 + gn);
  // Outputs: rows tm·4 .. +3, columns tn·4 .. +3 (a warp covers 2 rows of 64 consecutive pixels).
  const int tn = tid % 16, tm = tid / 16;

  float acc[4][4] = {};
  float4 a_reg;
  float b_reg[kSimtGatherCount];

  auto load_a = [&](int chunk) {
    const int tap = chunk / p.chunks_per_tap;
    const int ci0 = (chunk - tap * p.chunks_per_tap) * kSimtBK;
    a_reg = a_ok ? *reinterpret_cast<const float4*>(a_src + int64_t(tap) * p.cin_p + ci0) : make_float4(0, 0, 0, 0);
  };
  auto store = [&](int stage) {
    sA[stage][ak + 0][ar] = a_reg.x;
    sA[stage][ak + 1][ar] = a_reg.y;
    sA[stage][ak + 2][ar] = a_reg.z;
    sA[stage][ak + 3][ar] = a_reg.w;
#pragma unroll
    for (int i = 0; i < kSimtGatherCount; ++i) sB[stage][gr0 + i * kSimtGatherStep][gn] = b_reg[i];
  };

  load_a(0);
  gather<kSimtBK, kSimtGatherCount, kSimtGatherStep>(p, x, px, gr0, 0, b_reg);
  store(0);
  __syncthreads();

  for (int c = 0; c < p.chunks; ++c) {
    const int s = c & 1;
    const bool more = c + 1 < p.chunks;
    if (more) {
      load_a(c + 1);
      gather<kSimtBK, kSimtGatherCount, kSimtGatherStep>(p, x, px, gr0, c + 1, b_reg);
    }
#pragma unroll
    for (int k = 0; k < kSimtBK; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&sA[s][k][tm * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&sB[s][k][tn * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (more) store(s ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) store_output(p, y, co0 + tm * 4 + i, p0 + tn * 4 + j, acc[i][j]);
}

// ---------------------------------------------------------------------------------------------------
// Host side

void bad(const std::string& what) { fail(FX_ERR_INVALID_ARGUMENT, "conv2d: " + what); }

int compute_major() {
  int device = 0;
  check_cuda_call(cudaGetDevice(&device), "conv2d: cudaGetDevice");
  int major = 0;
  check_cuda_call(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
                  "conv2d: cudaDeviceGetAttribute");
  return major;
}

template <typename Kernel>
void launch(Kernel kernel, ConvParams p, int bm, int bn, int bk, int threads, int64_t batch, Stream stream,
            const char* name) {
  p.chunks_per_tap = (p.cin + bk - 1) / bk;
  const int64_t taps = p.w_row / p.cin_p;
  if (taps * p.chunks_per_tap > INT_MAX) bad("too many taps × channels");
  p.chunks = int(taps * p.chunks_per_tap);
  p.co_tiles = (p.cout + bm - 1) / bm;
  const int64_t blocks = int64_t(p.co_tiles) * ((int64_t(p.pixels) + bn - 1) / bn);
  if (blocks > INT_MAX) bad("output too large for one launch");
  kernel<<<dim3(unsigned(blocks), unsigned(batch)), threads, 0, as_cuda_stream(stream)>>>(p);
  check_launch(name);
}

}  // namespace

void conv2d(const Conv2dArgs& a, Stream stream) {
  const auto is_act = [](DType d) { return d == DType::F32 || d == DType::BF16; };
  if (!is_act(a.act))
    fail(FX_ERR_UNSUPPORTED, std::string("conv2d: activations must be F32 or BF16, not ") + dtype_name(a.act));
  if (!is_act(a.weight_dtype))
    fail(FX_ERR_UNSUPPORTED, std::string("conv2d: weights must be F32 or BF16, not ") + dtype_name(a.weight_dtype));
  if (a.batch < 0 || a.in_channels < 1 || a.out_channels < 1 || a.height < 1 || a.width < 1 || a.kernel_h < 1 ||
      a.kernel_w < 1)
    bad("empty shape");
  if (a.stride < 1) bad("stride " + std::to_string(a.stride) + " is not positive");
  if (a.pad_top < 0 || a.pad_bottom < 0 || a.pad_left < 0 || a.pad_right < 0 || a.pad_top >= a.kernel_h ||
      a.pad_bottom >= a.kernel_h || a.pad_left >= a.kernel_w || a.pad_right >= a.kernel_w)
    bad("each padding must be in [0, kernel size)");
  if (a.height + a.pad_top + a.pad_bottom < a.kernel_h || a.width + a.pad_left + a.pad_right < a.kernel_w)
    bad("the kernel is larger than the padded input: empty output");
  const int64_t ho = a.out_height(), wo = a.out_width();
  if (a.in_channels > INT_MAX / 2 || a.out_channels > INT_MAX / 2 || a.height * a.width > INT_MAX ||
      ho * wo > INT_MAX || a.kernel_h * a.kernel_w > 4096 || a.stride > 4096)
    bad("dimensions too large");
  if (a.batch > 65535) bad("batch must be at most 65535");
  if (a.batch == 0) return;
  if (a.x == nullptr || a.y == nullptr || a.weight == nullptr) bad("null pointer");
  if (!dev::aligned16(a.weight)) bad("the packed weights must be 16-byte aligned");

  ConvParams p{};
  p.x = a.x;
  p.y = a.y;
  p.w = a.weight;
  p.bias = a.bias;
  p.cin = int(a.in_channels);
  p.cout = int(a.out_channels);
  p.H = int(a.height);
  p.W = int(a.width);
  p.Wo = int(wo);
  p.kw = int(a.kernel_w);
  p.stride = int(a.stride);
  p.pad_top = int(a.pad_top);
  p.pad_left = int(a.pad_left);
  p.cin_p = int(conv2d_padded_in(a.in_channels));
  p.plane = a.height * a.width;
  p.pixels = int(ho * wo);
  p.w_row = a.kernel_h * a.kernel_w * p.cin_p;
  p.x_image = a.in_channels * p.plane;
  p.y_image = a.out_channels * ho * wo;
  p.accumulate = a.accumulate;

  if (a.weight_dtype == DType::BF16) {
    if (compute_major() < 8)
      fail(FX_ERR_UNSUPPORTED, "conv2d: bf16 weights need tensor cores of sm_80 or newer; use f32 weights");
    if (a.act == DType::F32) {
      launch(conv2d_mma_kernel<float>, p, kMmaBM, kMmaBN, kMmaBK, kMmaThreads, a.batch, stream, "conv2d_mma<f32>");
    } else {
      launch(conv2d_mma_kernel<bf16>, p, kMmaBM, kMmaBN, kMmaBK, kMmaThreads, a.batch, stream, "conv2d_mma<bf16>");
    }
  } else if (a.act == DType::F32) {
    launch(conv2d_simt_kernel<float>, p, kSimtBM, kSimtBN, kSimtBK, kSimtThreads, a.batch, stream, "conv2d_simt<f32>");
  } else {
    launch(conv2d_simt_kernel<bf16>, p, kSimtBM, kSimtBN, kSimtBK, kSimtThreads, a.batch, stream, "conv2d_simt<bf16>");
  }
}

}  // namespace fx::cuda
