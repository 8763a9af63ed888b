// Force-included into every emulated .cu file (compiled as host C++, tools/cuda-emulator/README.md): the CUDA
// execution-space keywords as nothing (__shared__ as static: one copy per kernel, shared by the block's
// threads, as blocks run one at a time), threadIdx & co. as the running fiber's, __syncthreads and the warp
// operations as synchronisation points of emu.cpp's scheduler, the device intrinsics the kernels use.
#pragma once
#define __host__
#define __device__
#define __global__
#define __shared__ static
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __align__
#define __align__(n) __attribute__((aligned(n)))

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>
#include <random>

namespace emu {
struct Block;
extern thread_local uint3 tls_thread;
extern thread_local uint3 tls_block;
extern thread_local dim3 tls_block_dim;
extern thread_local dim3 tls_grid_dim;
extern thread_local Block* tls_blk;
void syncthreads();
void syncwarp();
// Every lane puts `bytes` at its slot; after the call each lane may read every slot (until the next exchange).
const void* exchange(const void* mine, size_t bytes);
void* dynamic_smem_raw();
template <typename T>
T* dynamic_smem() { return static_cast<T*>(dynamic_smem_raw()); }
void run_grid(const std::function<void()>& body, dim3 grid, dim3 block, size_t smem);
template <typename F>
struct Launcher {
  F f;
  dim3 grid, block;
  size_t smem;
  template <typename... A>
  void operator()(A... args) {
    run_grid([&] { f(args...); }, grid, block, smem);
  }
};
template <typename F>
Launcher<F> launch(F f, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return Launcher<F>{f, grid, block, smem};
}
}  // namespace emu

#define threadIdx (::emu::tls_thread)
#define blockIdx (::emu::tls_block)
#define blockDim (::emu::tls_block_dim)
#define gridDim (::emu::tls_grid_dim)

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xFFFFFFFFu) { emu::syncwarp(); }
template <typename T>
T __shfl_xor_sync(unsigned, T v, int offset) {
  const T* all = static_cast<const T*>(emu::exchange(&v, sizeof(T)));
  const int lane = int(threadIdx.x % 32);
  T r = all[lane ^ offset];
  emu::syncwarp();
  return r;
}
inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
inline double __dsub_rn(double a, double b) { volatile double r = a - b; return r; }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
inline double __ddiv_rn(double a, double b) { volatile double r = a / b; return r; }
[[noreturn]] inline void __trap() { std::abort(); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int) { return cudaSuccess; }
