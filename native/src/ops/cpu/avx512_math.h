// Vectorised exp for the AVX-512 paths of attention.cpp and elementwise.cpp: Cody-Waite reduction
// x = n·ln2 + r (|r| <= ln2/2), a degree-7 Taylor polynomial for e^r (truncation error < 1e-8
// relative), and 2^n applied with scalef. Only include from .cpp files; every function carries its
// own target attribute, so callers must be compiled for (or themselves target) AVX-512.
#pragma once

#include <immintrin.h>

#include "ops/cpu/exp_edges.h"

// GCC 12's AVX-512 intrinsics start many results from _mm512_undefined_*() (GCC bug 105593), which
// -Wall reports as uninitialised at every inlining site. The values are never read; silence it for
// the including .cpp file, the only kind of file that includes this header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define FX_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

namespace fx::cpu::avx512 {

// Edges as exp_edges.h states them for every path: exactly 0 below kExpLow, e^kExpHigh above kExpHigh,
// NaN stays NaN (the clamps put x second in max/min, which return the second operand for NaN).
FX_TARGET_AVX512 inline __m512 exp(__m512 x) {
  const __m512 lo = _mm512_set1_ps(kExpLow);
  const __m512 hi = _mm512_set1_ps(kExpHigh);
  const __m512 xc = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln2 split so that n·ln2_hi is exact for |n| <= 128 (ln2_hi has 9 significant bits).
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512 y = _mm512_scalef_ps(p, n);
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), _mm512_setzero_ps());
}

// x / (1 + e^-x) and friends need e^-t without overflow to inf: exp() above saturates, and the
// divide then gives the right limit (0 or x).
FX_TARGET_AVX512 inline __m512 sigmoid_times(__m512 x, __m512 t) {
  const __m512 e = exp(_mm512_sub_ps(_mm512_setzero_ps(), t));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

}  // namespace fx::cpu::avx512
