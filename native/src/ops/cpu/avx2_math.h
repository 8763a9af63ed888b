// Vectorised exp and helpers for the AVX2 + FMA paths of attention and the elementwise kernels.
// exp: x = n·ln2 + r with n = round(x·log2e) and |r| <= ln2/2, e^r from its degree-7 Taylor
// polynomial (truncation < 1e-8 relative), then 2^n put into the float's exponent field. AVX2 has no
// scalef, so 2^n must itself be a normal float, and the clamp to [kExpLow, kExpHigh] sees to that:
// there x·log2e lies in [-125.99999, 127.49999] (kExpLow = -126·ln2 and kExpHigh = 127.5·ln2 rounded
// inwards to f32, and the f32 product rounds no further), so n is in [-126, 127].
// Only include from .cpp files; every function carries its own target attribute.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "ops/cpu/exp_edges.h"

#define FX_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace fx::cpu::avx2 {

// Edges as exp_edges.h states them for every path: exactly 0 below kExpLow, e^kExpHigh above kExpHigh,
// NaN stays NaN (x goes second into max/min, which return their second operand when one is NaN, and
// the x < kExpLow test is false for NaN).
FX_TARGET_AVX2 inline __m256 exp(__m256 x) {
  const __m256 lo = _mm256_set1_ps(kExpLow);
  const __m256 xc = _mm256_min_ps(_mm256_set1_ps(kExpHigh), _mm256_max_ps(lo, x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln2 in two parts: the high one has 9 significant bits, so n·ln2_hi is exact for |n| <= 128.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  // Σ r^k / k! for k = 0..7, Horner from the top.
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // 2^n for n in [-126, 127]: biased exponent n + 127 in [1, 254]. For NaN lanes the integer is junk,
  // but p is NaN there and so is the product.
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);
}

// x / (1 + e^-t): exp() above saturates instead of overflowing, and the divide then gives the right
// limit (0 or x). SiLU is t = x, QuickGELU t = 1.702·x, GELU-tanh t = 2·sqrt(2/π)·(x + 0.044715·x³).
FX_TARGET_AVX2 inline __m256 sigmoid_times(__m256 x, __m256 t) {
  const __m256 e = exp(_mm256_sub_ps(_mm256_setzero_ps(), t));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// Lane mask for the first `left` (0..8) lanes, for vmaskmov loads and stores: a window into 8 ones
// followed by 8 zeros. Masked-off lanes are neither read (no fault past the end) nor written.
FX_TARGET_AVX2 inline __m256i tail_mask(int64_t left) {
  alignas(32) static constexpr int32_t kWindow[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kWindow + 8 - left));
}

FX_TARGET_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

FX_TARGET_AVX2 inline double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

}  // namespace fx::cpu::avx2
