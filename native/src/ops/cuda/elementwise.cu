// The bandwidth-bound kernels of kernels.h: row norms, RoPE, residual adds, activations, conversion.
// Each reads and writes its data once, so the aim is memory speed: 16-byte vector accesses wherever
// the pointers and strides allow it (checked at run time on the host; otherwise the same kernel with
// scalar accesses), f32 arithmetic inside, bf16 rounded to nearest-even on store.
//
// Pointwise kernels (gated_add, binary, unary, bias_activation, copy_convert, rope_apply): the matrix
// is cut into chunks of 8 consecutive elements of a row; one thread per chunk over a grid-stride loop,
// so any [rows, cols] with any row strides is one launch. RoPE's chunk is 4 (x[2m], x[2m+1]) pairs
// and their 4 cos/sin entries (one float4 each) when head_dim is a multiple of 8; else pair by pair.
//
// Row norms (layernorm_modulate, layernorm_affine, rms_norm, rms_norm_heads): one group of threads per
// vector (a warp when the vector is at most 1024 elements, four vectors per block; else the whole
// block), each thread keeping its chunks in registers (up to 4 chunks: vectors up to 16384 elements
// at 512 threads; longer ones are re-read from global memory, which L1/L2 mostly serve). The
// reductions are warp shuffles, then one shared-memory step across the warps of a block.
// LayerNorm's statistics are computed so that a large common offset costs no precision: pass 1 gives
// m = mean in f32; pass 2 sums d = x − m (exact by Sterbenz for x near m) and d², giving the small
// correction c = Σd/n and var = Σd²/n − c² (biased); pass 3 writes ((x − m) − c)·rstd·… with
// rstd = 1/sqrt(var + eps). RMSNorm: one pass for Σx², one to write x·(1/sqrt(Σx²/n + eps))·w.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/kernels.h"

namespace fx::cuda {
namespace {

using dev::bf16;
using dev::kChunk;
using dev::load_chunk;
using dev::store_chunk;
using dev::Tag;

constexpr int kPointwiseThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;  // the grid-stride loops cover the rest

// Calls f(Tag<float>) or f(Tag<bf16>) for the activation dtype.
template <typename F>
void with_act(DType act, const char* op, F&& f) {
  switch (act) {
    case DType::F32: f(Tag<float>{}); return;
    case DType::BF16: f(Tag<bf16>{}); return;
    default: break;
  }
  fail(FX_ERR_UNSUPPORTED, std::string(op) + ": activations must be F32 or BF16, not " + dtype_name(act));
}

void require(bool condition, const char* op, const char* what) {
  if (!condition) fail(FX_ERR_INVALID_ARGUMENT, std::string(op) + ": " + what);
}

// ---------------------------------------------------------------------------------------------------
// Activations (f32): GELU-tanh as x·σ(2u) (= 0.5x(1 + tanh u) exactly, without the cancellation of
// 1 + tanh u for negative x), SiLU x·σ(x), QuickGELU x·σ(1.702x).

__device__ __forceinline__ float gelu_tanh_f(float x) {
  const float u = 0.7978845608028654f * fmaf(0.044715f * x, x * x, x);  // sqrt(2/pi)·(x + 0.044715x³)
  return x / (1.0f + expf(-2.0f * u));
}
__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float quick_gelu_f(float x) { return x / (1.0f + expf(-1.702f * x)); }

template <Unary kOp>
__device__ __forceinline__ float unary_f(float x) {
  if constexpr (kOp == Unary::GeluTanh) {
    return gelu_tanh_f(x);
  } else if constexpr (kOp == Unary::Silu) {
    return silu_f(x);
  } else {
    return quick_gelu_f(x);
  }
}

template <Epilogue kEp>
__device__ __forceinline__ float epilogue_f(float x) {
  if constexpr (kEp == Epilogue::GeluTanh) {
    return gelu_tanh_f(x);
  } else if constexpr (kEp == Epilogue::Silu) {
    return silu_f(x);
  } else {
    return x;
  }
}

// ---------------------------------------------------------------------------------------------------
// Pointwise: one thread per chunk of 8 elements of a row.

template <bool kVec, typename Op>
__global__ void __launch_bounds__(kPointwiseThreads) chunk_kernel(Op op, int64_t rows, int64_t cols) {
  const int64_t chunks_per_row = (cols + kChunk - 1) / kChunk;
  const int64_t total = rows * chunks_per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / chunks_per_row;
    const int64_t c = (i - r * chunks_per_row) * kChunk;
    const int n = static_cast<int>(cols - c < kChunk ? cols - c : kChunk);
    op.template apply<kVec>(r, c, n);
  }
}

template <typename Op>
void launch_chunks(const Op& op, int64_t rows, int64_t cols, bool vec, Stream stream, const char* name) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t total = rows * ((cols + kChunk - 1) / kChunk);
  const unsigned blocks = static_cast<unsigned>(std::min(kMaxBlocks, (total + kPointwiseThreads - 1) / kPointwiseThreads));
  if (vec) {
    chunk_kernel<true><<<blocks, kPointwiseThreads, 0, as_cuda_stream(stream)>>>(op, rows, cols);
  } else {
    chunk_kernel<false><<<blocks, kPointwiseThreads, 0, as_cuda_stream(stream)>>>(op, rows, cols);
  }
  check_launch(name);
}

template <typename T>
struct GatedAddOp {
  T* x;
  int64_t ldx;
  const float* gate;
  const T* y;
  int64_t ldy;
  template <bool kVec>
  __device__ __forceinline__ void apply(int64_t r, int64_t c, int n) const {
    float xv[kChunk], yv[kChunk], gv[kChunk];
    T* xp = x + r * ldx + c;
    load_chunk<kVec>(xp, n, xv);
    load_chunk<kVec>(y + r * ldy + c, n, yv);
    load_chunk<kVec>(gate + c, n, gv);
#pragma unroll
    for (int e = 0; e < kChunk; ++e) xv[e] = fmaf(gv[e], yv[e], xv[e]);
    store_chunk<kVec>(xp, n, xv);
  }
};

template <typename T, Binary kOp>
struct BinaryOp {
  T* x;
  int64_t ldx;
  const T* y;
  int64_t ldy;
  template <bool kVec>
  __device__ __forceinline__ void apply(int64_t r, int64_t c, int n) const {
    float xv[kChunk], yv[kChunk];
    T* xp = x + r * ldx + c;
    load_chunk<kVec>(xp, n, xv);
    load_chunk<kVec>(y + r * ldy + c, n, yv);
#pragma unroll
    for (int e = 0; e < kChunk; ++e) xv[e] = kOp == Binary::Add ? xv[e] + yv[e] : xv[e] * yv[e];
    store_chunk<kVec>(xp, n, xv);
  }
};

template <typename T, Unary kOp>
struct UnaryOp {
  T* x;
  int64_t ld;
  template <bool kVec>
  __device__ __forceinline__ void apply(int64_t r, int64_t c, int n) const {
    float xv[kChunk];
    T* xp = x + r * ld + c;
    load_chunk<kVec>(xp, n, xv);
#pragma unroll
    for (int e = 0; e < kChunk; ++e) xv[e] = unary_f<kOp>(xv[e]);
    store_chunk<kVec>(xp, n, xv);
  }
};

template <typename T, Epilogue kEp>
struct BiasActivationOp {
  T* y;
  int64_t ld;
  const float* bias;  // may be null: activation only
  template <bool kVec>
  __device__ __forceinline__ void apply(int64_t r, int64_t c, int n) const {
    float yv[kChunk], bv[kChunk];
    T* yp = y + r * ld + c;
    load_chunk<kVec>(yp, n, yv);
    if (bias != nullptr) {
      load_chunk<kVec>(bias + c, n, bv);
#pragma unroll
      for (int e = 0; e < kChunk; ++e) yv[e] += bv[e];
    }
#pragma unroll
    for (int e = 0; e < kChunk; ++e) yv[e] = epilogue_f<kEp>(yv[e]);
    store_chunk<kVec>(yp, n, yv);
  }
};

// Rotates the pairs of a chunk (8 elements of [rows, heads·head_dim], starting at an even column c).
template <typename T>
struct RopeOp {
  T* x;
  int64_t ld;
  int64_t head_dim;
  const float* cos_t;
  const float* sin_t;
  template <bool kVec>
  __device__ __forceinline__ void apply(int64_t r, int64_t c, int n) const {
    const int64_t pairs = head_dim / 2;
    float xv[kChunk];
    T* xp = x + r * ld + c;
    load_chunk<kVec>(xp, n, xv);
    if (kVec && n == kChunk) {
      // head_dim % 8 == 0: the chunk lies inside one head, and its 4 table entries are 16-byte aligned.
      const int64_t m0 = (c % head_dim) / 2;
      const float4 cv = *reinterpret_cast<const float4*>(cos_t + r * pairs + m0);
      const float4 sv = *reinterpret_cast<const float4*>(sin_t + r * pairs + m0);
      const float cs[4] = {cv.x, cv.y, cv.z, cv.w};
      const float sn[4] = {sv.x, sv.y, sv.z, sv.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float x0 = xv[2 * k], x1 = xv[2 * k + 1];
        xv[2 * k] = fmaf(cs[k], x0, -sn[k] * x1);
        xv[2 * k + 1] = fmaf(sn[k], x0, cs[k] * x1);
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (2 * k < n) {
          const int64_t m = ((c + 2 * k) % head_dim) / 2;
          const float cs = cos_t[r * pairs + m], sn = sin_t[r * pairs + m];
          const float x0 = xv[2 * k], x1 = xv[2 * k + 1];
          xv[2 * k] = fmaf(cs, x0, -sn * x1);
          xv[2 * k + 1] = fmaf(sn, x0, cs * x1);
        }
      }
    }
    store_chunk<kVec>(xp, n, xv);
  }
};

// dst = src in another dtype through the very scalar functions of fx::convert (core/dtype_inl.h), so
// the bits equal the CPU's (round-to-nearest-even, NaN sign kept); the same dtype is a bit copy.
// bf16 is handled as raw uint16_t here.
template <typename S, typename D>
struct ConvertOp {
  const S* src;
  int64_t lds;
  D* dst;
  int64_t ldd;
  template <bool kVec>
  __device__ __forceinline__ void apply(int64_t r, int64_t c, int n) const {
    const S* sp = src + r * lds + c;
    D* dp = dst + r * ldd + c;
    if constexpr (std::is_same_v<S, D>) {
      if (kVec && n == kChunk) {
        constexpr int kVectors = int(sizeof(S)) * kChunk / 16;
#pragma unroll
        for (int i = 0; i < kVectors; ++i) reinterpret_cast<uint4*>(dp)[i] = reinterpret_cast<const uint4*>(sp)[i];
      } else {
#pragma unroll
        for (int e = 0; e < kChunk; ++e)
          if (e < n) dp[e] = sp[e];
      }
    } else if constexpr (std::is_same_v<S, float>) {
      // f32 -> bf16
      float v[kChunk];
      load_chunk<kVec>(sp, n, v);
      if (kVec && n == kChunk) {
        uint4 raw;
        raw.x = uint32_t(f32_to_bf16(v[0])) | (uint32_t(f32_to_bf16(v[1])) << 16);
        raw.y = uint32_t(f32_to_bf16(v[2])) | (uint32_t(f32_to_bf16(v[3])) << 16);
        raw.z = uint32_t(f32_to_bf16(v[4])) | (uint32_t(f32_to_bf16(v[5])) << 16);
        raw.w = uint32_t(f32_to_bf16(v[6])) | (uint32_t(f32_to_bf16(v[7])) << 16);
        *reinterpret_cast<uint4*>(dp) = raw;
      } else {
#pragma unroll
        for (int e = 0; e < kChunk; ++e)
          if (e < n) dp[e] = f32_to_bf16(v[e]);
      }
    } else {
      // bf16 -> f32
      float v[kChunk];
      if (kVec && n == kChunk) {
        const uint4 raw = *reinterpret_cast<const uint4*>(sp);
        const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          v[2 * i] = bf16_to_f32(uint16_t(words[i] & 0xFFFFu));
          v[2 * i + 1] = bf16_to_f32(uint16_t(words[i] >> 16));
        }
      } else {
#pragma unroll
        for (int e = 0; e < kChunk; ++e) v[e] = e < n ? bf16_to_f32(sp[e]) : 0.0f;
      }
      store_chunk<kVec>(dp, n, v);
    }
  }
};

// ---------------------------------------------------------------------------------------------------
// Row norms: one group (warp or block) per vector; vector v is head (v % heads) of row (v / heads).

enum class NormKind { LnModulate, LnAffine, Rms };

constexpr int kNormCache = 4;         // chunks of 8 each thread keeps in registers
constexpr int kWarpVectorsPerBlock = 4;  // warp mode: 4 warps, one vector each
constexpr int kMaxNormThreads = 512;   // block mode; 128 registers a thread at most

template <typename T>
struct NormArgs {
  const T* x;
  T* y;
  int64_t ldx, ldy;
  int64_t vectors;  // rows · heads
  int64_t heads;    // vectors per row (1: whole rows)
  int len;          // elements per vector
  const float* p0;  // shift (LnModulate), gamma (LnAffine), weight (Rms)
  const float* p1;  // scale (LnModulate), beta (LnAffine), unused (Rms)
  float eps;
};

// Sum of two values over the group: a warp, or the whole block (every thread gets the same bits:
// each warp reduces the same per-warp partials in the same order).
template <bool kWarpGroup>
__device__ __forceinline__ float2 group_sum2(float a, float b, float2* shared) {
  a = dev::warp_sum(a);
  b = dev::warp_sum(b);
  if (kWarpGroup) return make_float2(a, b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // an earlier reduction's readers are done with `shared`
  if (lane == 0) shared[warp] = make_float2(a, b);
  __syncthreads();
  const int warps = blockDim.x / 32;
  const float2 t = lane < warps ? shared[lane] : make_float2(0.0f, 0.0f);
  return make_float2(dev::warp_sum(t.x), dev::warp_sum(t.y));
}

template <typename T, NormKind kKind, bool kVec, bool kWarpGroup>
__global__ void __launch_bounds__(kWarpGroup ? 32 * kWarpVectorsPerBlock : kMaxNormThreads) norm_kernel(NormArgs<T> a) {
  __shared__ float2 shared[32];
  const int group = kWarpGroup ? 32 : int(blockDim.x);
  const int lane = kWarpGroup ? int(threadIdx.x % 32) : int(threadIdx.x);
  const int64_t first = kWarpGroup ? int64_t(blockIdx.x) * kWarpVectorsPerBlock + threadIdx.x / 32 : int64_t(blockIdx.x);
  const int64_t step = kWarpGroup ? int64_t(gridDim.x) * kWarpVectorsPerBlock : int64_t(gridDim.x);
  const int len = a.len;
  const int chunks = (len + kChunk - 1) / kChunk;
  const int round = group * kNormCache;  // chunks one sweep of the registers covers
  // Cached: one sweep covers the vector, so the registers filled in pass 1 serve passes 2 and 3.
  const bool cached = chunks <= round;
  const float inv_len = 1.0f / float(len);

  // The loop is uniform over the group (block mode: the whole block takes the same vectors).
  for (int64_t vi = first; vi < a.vectors; vi += step) {
    const int64_t r = vi / a.heads, head = vi - r * a.heads;
    const T* x = a.x + r * a.ldx + head * len;
    T* y = a.y + r * a.ldy + head * len;
    float v[kNormCache][kChunk] = {};

    // Pass 1: Σx (LayerNorm) or Σx² (RMSNorm). Elements past len load as 0 and add nothing.
    float s = 0.0f;
    for (int base = 0; base < chunks; base += round) {
#pragma unroll
      for (int k = 0; k < kNormCache; ++k) {
        const int c = base + k * group + lane;
        if (c < chunks) {
          load_chunk<kVec>(x + c * kChunk, min(kChunk, len - c * kChunk), v[k]);
#pragma unroll
          for (int e = 0; e < kChunk; ++e) s += kKind == NormKind::Rms ? v[k][e] * v[k][e] : v[k][e];
        }
      }
    }
    const float total = group_sum2<kWarpGroup>(s, 0.0f, shared).x;

    float mean = 0.0f, corr = 0.0f, rstd;
    if constexpr (kKind == NormKind::Rms) {
      rstd = 1.0f / sqrtf(total * inv_len + a.eps);
    } else {
      // Pass 2: centred sums around the f32 mean; the correction makes up for that mean's rounding.
      mean = total * inv_len;
      float s1 = 0.0f, s2 = 0.0f;
      for (int base = 0; base < chunks; base += round) {
#pragma unroll
        for (int k = 0; k < kNormCache; ++k) {
          const int c = base + k * group + lane;
          if (c < chunks) {
            const int n = min(kChunk, len - c * kChunk);
            if (!cached) load_chunk<kVec>(x + c * kChunk, n, v[k]);
#pragma unroll
            for (int e = 0; e < kChunk; ++e) {
              if (e < n) {
                const float d = v[k][e] - mean;
                s1 += d;
                s2 = fmaf(d, d, s2);
              }
            }
          }
        }
      }
      const float2 sums = group_sum2<kWarpGroup>(s1, s2, shared);
      corr = sums.x * inv_len;
      const float var = fmaxf(sums.y * inv_len - corr * corr, 0.0f);
      rstd = 1.0f / sqrtf(var + a.eps);
    }

    // Pass 3: write. Each thread writes only the chunks it read, after the group's reductions, so
    // x and y may be the same memory.
    for (int base = 0; base < chunks; base += round) {
#pragma unroll
      for (int k = 0; k < kNormCache; ++k) {
        const int c = base + k * group + lane;
        if (c < chunks) {
          const int n = min(kChunk, len - c * kChunk);
          if (!cached) load_chunk<kVec>(x + c * kChunk, n, v[k]);
          float p0[kChunk], out[kChunk];
          load_chunk<kVec>(a.p0 + c * kChunk, n, p0);
          if constexpr (kKind == NormKind::Rms) {
#pragma unroll
            for (int e = 0; e < kChunk; ++e) out[e] = v[k][e] * rstd * p0[e];
          } else {
            float p1[kChunk];
            load_chunk<kVec>(a.p1 + c * kChunk, n, p1);
#pragma unroll
            for (int e = 0; e < kChunk; ++e) {
              const float normed = ((v[k][e] - mean) - corr) * rstd;
              out[e] = kKind == NormKind::LnModulate ? fmaf(normed, 1.0f + p1[e], p0[e]) : fmaf(normed, p0[e], p1[e]);
            }
          }
          store_chunk<kVec>(y + c * kChunk, n, out);
        }
      }
    }
  }
}

template <typename T, NormKind kKind, bool kVec>
void launch_norm_vec(const NormArgs<T>& a, Stream stream, const char* name) {
  const int chunks = (a.len + kChunk - 1) / kChunk;
  if (chunks <= 32 * kNormCache) {
    const int64_t blocks = std::min(kMaxBlocks, (a.vectors + kWarpVectorsPerBlock - 1) / kWarpVectorsPerBlock);
    norm_kernel<T, kKind, kVec, true>
        <<<unsigned(blocks), 32 * kWarpVectorsPerBlock, 0, as_cuda_stream(stream)>>>(a);
  } else {
    const int wanted = (chunks + kNormCache - 1) / kNormCache;
    const int threads = std::min(kMaxNormThreads, (wanted + 31) / 32 * 32);
    const int64_t blocks = std::min(kMaxBlocks, a.vectors);
    norm_kernel<T, kKind, kVec, false><<<unsigned(blocks), unsigned(threads), 0, as_cuda_stream(stream)>>>(a);
  }
  check_launch(name);
}

template <typename T, NormKind kKind>
void launch_norm(const NormArgs<T>& a, Stream stream, const char* name) {
  if (a.vectors <= 0 || a.len <= 0) return;
  const bool vec = dev::aligned16(a.x) && dev::aligned16(a.y) && dev::stride16(a.ldx, sizeof(T)) &&
                   dev::stride16(a.ldy, sizeof(T)) && (a.heads == 1 || dev::stride16(a.len, sizeof(T))) &&
                   dev::aligned16(a.p0) && (a.p1 == nullptr || dev::aligned16(a.p1));
  if (vec) {
    launch_norm_vec<T, kKind, true>(a, stream, name);
  } else {
    launch_norm_vec<T, kKind, false>(a, stream, name);
  }
}

template <NormKind kKind>
void norm_entry(const char* name, DType act, const void* x, int64_t rows, int64_t heads, int64_t len, int64_t ldx,
                const float* p0, const float* p1, float eps, void* y, int64_t ldy, Stream stream) {
  require(rows >= 0 && heads >= 0 && len >= 0, name, "negative shape");
  require(len <= INT_MAX / 2, name, "rows longer than 2^30 elements");
  with_act(act, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    NormArgs<T> a{static_cast<const T*>(x), static_cast<T*>(y), ldx, ldy, rows * heads, heads, int(len), p0, p1, eps};
    launch_norm<T, kKind>(a, stream, name);
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// The entry points of kernels.h

void layernorm_modulate(DType act, const void* x, int64_t rows, int64_t cols, int64_t ldx, const float* shift,
                        const float* scale, float eps, void* y, int64_t ldy, Stream stream) {
  norm_entry<NormKind::LnModulate>("layernorm_modulate", act, x, rows, 1, cols, ldx, shift, scale, eps, y, ldy,
                                   stream);
}

void layernorm_affine(DType act, const void* x, int64_t rows, int64_t cols, int64_t ldx, const float* gamma,
                      const float* beta, float eps, void* y, int64_t ldy, Stream stream) {
  norm_entry<NormKind::LnAffine>("layernorm_affine", act, x, rows, 1, cols, ldx, gamma, beta, eps, y, ldy, stream);
}

void rms_norm(DType act, const void* x, int64_t rows, int64_t cols, int64_t ldx, const float* weight, float eps,
              void* y, int64_t ldy, Stream stream) {
  norm_entry<NormKind::Rms>("rms_norm", act, x, rows, 1, cols, ldx, weight, nullptr, eps, y, ldy, stream);
}

void rms_norm_heads(DType act, void* x, int64_t rows, int64_t ld, int64_t heads, int64_t head_dim,
                    const float* weight, float eps, Stream stream) {
  norm_entry<NormKind::Rms>("rms_norm_heads", act, x, rows, heads, head_dim, ld, weight, nullptr, eps, x, ld, stream);
}

void rope_apply(DType act, void* x, int64_t rows, int64_t ld, int64_t heads, int64_t head_dim, const float* cos_t,
                const float* sin_t, Stream stream) {
  require(head_dim > 0 && head_dim % 2 == 0, "rope_apply", "head_dim must be even and positive");
  with_act(act, "rope_apply", [&](auto tag) {
    using T = typename decltype(tag)::type;
    RopeOp<T> op{static_cast<T*>(x), ld, head_dim, cos_t, sin_t};
    const bool vec = head_dim % 8 == 0 && dev::aligned16(x) && dev::stride16(ld, sizeof(T)) && dev::aligned16(cos_t) &&
                     dev::aligned16(sin_t);
    launch_chunks(op, rows, heads * head_dim, vec, stream, "rope_apply");
  });
}

void gated_add(DType act, void* x, int64_t rows, int64_t cols, int64_t ldx, const float* gate, const void* y,
               int64_t ldy, Stream stream) {
  with_act(act, "gated_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    GatedAddOp<T> op{static_cast<T*>(x), ldx, gate, static_cast<const T*>(y), ldy};
    const bool vec = dev::aligned16(x) && dev::aligned16(y) && dev::aligned16(gate) && dev::stride16(ldx, sizeof(T)) &&
                     dev::stride16(ldy, sizeof(T));
    launch_chunks(op, rows, cols, vec, stream, "gated_add");
  });
}

void binary(Binary op, DType act, void* x, int64_t rows, int64_t cols, int64_t ldx, const void* y, int64_t ldy,
            Stream stream) {
  with_act(act, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const bool vec =
        dev::aligned16(x) && dev::aligned16(y) && dev::stride16(ldx, sizeof(T)) && dev::stride16(ldy, sizeof(T));
    if (op == Binary::Add) {
      launch_chunks(BinaryOp<T, Binary::Add>{static_cast<T*>(x), ldx, static_cast<const T*>(y), ldy}, rows, cols, vec,
                    stream, "binary(add)");
    } else if (op == Binary::Mul) {
      launch_chunks(BinaryOp<T, Binary::Mul>{static_cast<T*>(x), ldx, static_cast<const T*>(y), ldy}, rows, cols, vec,
                    stream, "binary(mul)");
    } else {
      fail(FX_ERR_INVALID_ARGUMENT, "binary: unknown operation");
    }
  });
}

void unary(Unary op, DType act, void* x, int64_t rows, int64_t cols, int64_t ld, Stream stream) {
  with_act(act, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(x);
    const bool vec = dev::aligned16(x) && dev::stride16(ld, sizeof(T));
    switch (op) {
      case Unary::GeluTanh:
        launch_chunks(UnaryOp<T, Unary::GeluTanh>{p, ld}, rows, cols, vec, stream, "unary(gelu_tanh)");
        return;
      case Unary::Silu:
        launch_chunks(UnaryOp<T, Unary::Silu>{p, ld}, rows, cols, vec, stream, "unary(silu)");
        return;
      case Unary::QuickGelu:
        launch_chunks(UnaryOp<T, Unary::QuickGelu>{p, ld}, rows, cols, vec, stream, "unary(quick_gelu)");
        return;
    }
    fail(FX_ERR_INVALID_ARGUMENT, "unary: unknown operation");
  });
}

void copy_convert(DType src_dtype, const void* src, int64_t rows, int64_t cols, int64_t lds, DType dst_dtype,
                  void* dst, int64_t ldd, Stream stream) {
  const auto is_act = [](DType d) { return d == DType::F32 || d == DType::BF16; };
  if (!is_act(src_dtype) || !is_act(dst_dtype))
    fail(FX_ERR_UNSUPPORTED, std::string("copy_convert: only F32 and BF16, not ") + dtype_name(src_dtype) + " -> " +
                                 dtype_name(dst_dtype));
  const size_t ss = dtype_size(src_dtype), ds = dtype_size(dst_dtype);
  const bool vec = dev::aligned16(src) && dev::aligned16(dst) && dev::stride16(lds, ss) && dev::stride16(ldd, ds);
  if (src_dtype == DType::F32 && dst_dtype == DType::F32) {
    launch_chunks(ConvertOp<float, float>{static_cast<const float*>(src), lds, static_cast<float*>(dst), ldd}, rows,
                  cols, vec, stream, "copy_convert(f32->f32)");
  } else if (src_dtype == DType::BF16 && dst_dtype == DType::BF16) {
    launch_chunks(ConvertOp<uint16_t, uint16_t>{static_cast<const uint16_t*>(src), lds, static_cast<uint16_t*>(dst), ldd},
                  rows, cols, vec, stream, "copy_convert(bf16->bf16)");
  } else if (src_dtype == DType::F32) {
    launch_chunks(ConvertOp<float, uint16_t>{static_cast<const float*>(src), lds, static_cast<uint16_t*>(dst), ldd},
                  rows, cols, vec, stream, "copy_convert(f32->bf16)");
  } else {
    launch_chunks(ConvertOp<uint16_t, float>{static_cast<const uint16_t*>(src), lds, static_cast<float*>(dst), ldd},
                  rows, cols, vec, stream, "copy_convert(bf16->f32)");
  }
}

void bias_activation(DType act, void* y, int64_t rows, int64_t cols, int64_t ld, const float* bias, Epilogue epilogue,
                     Stream stream) {
  with_act(act, "bias_activation", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(y);
    const bool vec = dev::aligned16(y) && dev::stride16(ld, sizeof(T)) && (bias == nullptr || dev::aligned16(bias));
    switch (epilogue) {
      case Epilogue::None:
        if (bias == nullptr) return;  // nothing to do
        launch_chunks(BiasActivationOp<T, Epilogue::None>{p, ld, bias}, rows, cols, vec, stream, "bias_activation");
        return;
      case Epilogue::GeluTanh:
        launch_chunks(BiasActivationOp<T, Epilogue::GeluTanh>{p, ld, bias}, rows, cols, vec, stream,
                      "bias_activation(gelu_tanh)");
        return;
      case Epilogue::Silu:
        launch_chunks(BiasActivationOp<T, Epilogue::Silu>{p, ld, bias}, rows, cols, vec, stream,
                      "bias_activation(silu)");
        return;
    }
    fail(FX_ERR_INVALID_ARGUMENT, "bias_activation: unknown epilogue");
  });
}

}  // namespace fx::cuda
