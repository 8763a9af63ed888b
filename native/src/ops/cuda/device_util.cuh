// Device helpers shared by the CUDA kernel files (internal: included from .cu files only): f32 <-> bf16
// for the activations, 8-element chunk loads and stores (one or two 16-byte vector accesses when the
// caller has checked alignment, scalar accesses otherwise), warp reductions, host alignment tests.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fx::cuda::dev {

using bf16 = __nv_bfloat16;

// Elements per chunk: 16 bytes of bf16, 32 bytes of f32.
constexpr int kChunk = 8;

template <typename T>
struct Tag {
  using type = T;
};

// ---- host: may a 16-byte vector path be used? ----
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
// Every row of a matrix with this stride starts 16-byte aligned (given an aligned base).
inline bool stride16(int64_t ld, size_t element_size) {
  return ld >= 0 && (static_cast<uint64_t>(ld) * element_size) % 16u == 0;
}

// ---- scalar conversions: f32 arithmetic, round-to-nearest-even on store ----
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

// ---- 8 elements from / to 16-byte-aligned memory ----
__device__ __forceinline__ void load8_vec(const float* p, float (&v)[kChunk]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ void load8_vec(const bf16* p, float (&v)[kChunk]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // bf16 -> f32 is exact: the bf16 bits are the high half of the f32.
    v[2 * i] = __uint_as_float(words[i] << 16);
    v[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
  }
}

__device__ __forceinline__ void store8_vec(float* p, const float (&v)[kChunk]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo, round-to-nearest-even
  uint32_t word;
  memcpy(&word, &h, sizeof(word));
  return word;
}

__device__ __forceinline__ void store8_vec(bf16* p, const float (&v)[kChunk]) {
  uint4 raw;
  raw.x = pack_bf16x2(v[0], v[1]);
  raw.y = pack_bf16x2(v[2], v[3]);
  raw.z = pack_bf16x2(v[4], v[5]);
  raw.w = pack_bf16x2(v[6], v[7]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// n (1..8) elements at p; the vector access only for a whole chunk on the vector path (kVec: the caller
// checked that p is 16-byte aligned). Elements past n read as 0.
template <bool kVec, typename T>
__device__ __forceinline__ void load_chunk(const T* p, int n, float (&v)[kChunk]) {
  if (kVec && n == kChunk) {
    load8_vec(p, v);
    return;
  }
#pragma unroll
  for (int e = 0; e < kChunk; ++e) v[e] = e < n ? to_f32(p[e]) : 0.0f;
}

template <bool kVec, typename T>
__device__ __forceinline__ void store_chunk(T* p, int n, const float (&v)[kChunk]) {
  if (kVec && n == kChunk) {
    store8_vec(p, v);
    return;
  }
#pragma unroll
  for (int e = 0; e < kChunk; ++e)
    if (e < n) p[e] = from_f32<T>(v[e]);
}

// ---- warp reductions (every lane gets the result) ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
  return v;
}

}  // namespace fx::cuda::dev
