// Internal to the CPU linear layers (linear.cpp, linear_quant.cpp): the micro-tile a kernel computes, the
// kernel tables, and the AVX2 accumulator load / epilogue every AVX2 kernel shares.
#pragma once

// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsic headers as "maybe
// uninitialized" once they are inlined (a false positive of the compiler).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <utility>

#include "ops/cpu/linear.h"

#define FX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))
#define FX_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FX_INLINE inline __attribute__((always_inline))

namespace fx::cpu::linear_detail {

constexpr int64_t kPanel = PackedWeights::kPanel;
constexpr int kMaxMR = 12;

// One MR×32 micro-tile of work for a kernel.
struct Tile {
  const void* xp;        // packed x: f32 [kc][kXStride] or, for the bf16-dot path, u32 pairs [kc/2][kXStride]
  const uint8_t* w;      // weight panel at the first k of this block
  int64_t kc;            // k values in this block (even for bf16 weights)
  float* c;              // output tile, 32 columns
  int64_t ldc;
  bool load_c;           // accumulate onto c (not the first k block)
  bool finish;           // last k block: apply scale, bias, activation
  const float* scale;    // 32 floats or nullptr (e4m3: row_scale·256)
  const float* bias;     // 32 floats or nullptr
  Activation act;
};

using KernelFn = void (*)(const Tile&);
using KernelTable = std::array<KernelFn, kMaxMR + 1>;  // indexed by the rows of the tile

// GELU-tanh(v) = 0.5·v·(1 + tanh(z)) = v·sigmoid(2z): one exp and one division for both activations.
constexpr float kGeluC1 = 1.5957691216057308f;   // 2·sqrt(2/π)
constexpr float kGeluC3 = 0.07135481627159562f;  // 2·sqrt(2/π)·0.044715

inline float act_scalar(float v, Activation act) {
  if (act == Activation::None) return v;
  const float t = act == Activation::Silu ? v : v * (kGeluC1 + kGeluC3 * v * v);
  return v / (1.0f + std::exp(-t));
}

template <class K, size_t... I>
KernelTable table_of(std::index_sequence<I...>) {
  return KernelTable{{nullptr, &K::template run<static_cast<int>(I) + 1>...}};
}
template <class K, int MR>
KernelTable make_table() {
  KernelTable t = table_of<K>(std::make_index_sequence<MR>());
  for (int i = MR + 1; i <= kMaxMR; ++i) t[i] = nullptr;
  return t;
}

// Block-type kernels (linear_quant.cpp): the bytes of one 32-k group of a packed panel, and the kernel
// table of the AVX2 (else portable) path.
size_t block_group_bytes(BlockType type);
KernelTable block_kernels(bool avx2, BlockType type);

namespace avx2_common {

constexpr int kMR = 6;  // 6×2 accumulators + 2 weights + 1 broadcast of the 16 ymm registers; a 32-wide
                        // panel is done as two 16-wide halves

FX_AVX2 FX_INLINE __m256 exp_ps(__m256 t) {
  t = _mm256_max_ps(_mm256_min_ps(t, _mm256_set1_ps(88.3f)), _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // n is in [-126, 127] after the clamp, so 2^n is a normal float built from its exponent field.
  const __m256i pow2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2));
}

FX_AVX2 FX_INLINE __m256 activate(__m256 v, Activation act) {
  if (act == Activation::None) return v;
  const __m256 t = act == Activation::Silu
                       ? v
                       : _mm256_mul_ps(v, _mm256_fmadd_ps(_mm256_mul_ps(v, v), _mm256_set1_ps(kGeluC3),
                                                          _mm256_set1_ps(kGeluC1)));
  const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), t));
  return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

template <int MR>
FX_AVX2 FX_INLINE void load_acc(const Tile& t, int h, __m256 (&acc)[MR][2]) {
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (t.load_c) {
      acc[r][0] = _mm256_loadu_ps(t.c + r * t.ldc + h * 16);
      acc[r][1] = _mm256_loadu_ps(t.c + r * t.ldc + h * 16 + 8);
    } else {
      acc[r][0] = _mm256_setzero_ps();
      acc[r][1] = _mm256_setzero_ps();
    }
  }
}

template <int MR>
FX_AVX2 FX_INLINE void store_acc(const Tile& t, int h, __m256 (&acc)[MR][2]) {
  if (t.finish) {
    if (t.scale) {
      const __m256 s0 = _mm256_loadu_ps(t.scale + h * 16), s1 = _mm256_loadu_ps(t.scale + h * 16 + 8);
      for (int r = 0; r < MR; ++r) acc[r][0] = _mm256_mul_ps(acc[r][0], s0), acc[r][1] = _mm256_mul_ps(acc[r][1], s1);
    }
    if (t.bias) {
      const __m256 b0 = _mm256_loadu_ps(t.bias + h * 16), b1 = _mm256_loadu_ps(t.bias + h * 16 + 8);
      for (int r = 0; r < MR; ++r) acc[r][0] = _mm256_add_ps(acc[r][0], b0), acc[r][1] = _mm256_add_ps(acc[r][1], b1);
    }
    if (t.act != Activation::None) {
      for (int r = 0; r < MR; ++r) acc[r][0] = activate(acc[r][0], t.act), acc[r][1] = activate(acc[r][1], t.act);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(t.c + r * t.ldc + h * 16, acc[r][0]);
    _mm256_storeu_ps(t.c + r * t.ldc + h * 16 + 8, acc[r][1]);
  }
}

}  // namespace avx2_common

}  // namespace fx::cpu::linear_detail
