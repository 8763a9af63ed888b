// AVX2 + FMA bodies of the bandwidth-bound elementwise kernels (elementwise.cpp dispatches to them and
// splits rows over threads). The aim is the AVX-512 path's at 8 lanes: one streaming pass per row
// (two for the norms, the second from L1), full vectors in the loop and one vmaskmov load/store for a
// tail that is not a multiple of 8, so nothing past a row's end is read or written. The numerics are
// elementwise.cpp's: statistics in f32 vectors except the LayerNorm mean, which is summed in f64 (each
// 8 floats widened to two 4-double vectors) because hidden states can carry a large common offset
// whose rounding would otherwise leak into x − mean; 1/sqrt(var + eps) in double. The activations
// share avx2_math.h's exp, whose edges are those of every path (exp_edges.h).
#include "ops/cpu/elementwise_avx2.h"

#if defined(__x86_64__)

#include <algorithm>
#include <cmath>

#include "ops/cpu/avx2_math.h"

namespace fx::cpu::elementwise_avx2 {

namespace {

using avx2::tail_mask;

FX_TARGET_AVX2 inline __m256 load_tail(const float* p, __m256i mask) { return _mm256_maskload_ps(p, mask); }
FX_TARGET_AVX2 inline void store_tail(float* p, __m256i mask, __m256 v) { _mm256_maskstore_ps(p, mask, v); }

FX_TARGET_AVX2 inline float inverse_rms(float sum_squares, int64_t n, float eps) {
  return float(1.0 / std::sqrt(double(sum_squares) / double(n) + double(eps)));
}

// Mean (summed in f64) and 1/sqrt(biased variance + eps) of one row, for both LayerNorm flavours.
FX_TARGET_AVX2 void layernorm_stats(const float* x, int64_t dim, float eps, float* mean_out, float* rstd_out) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double sum = avx2::hsum(_mm256_add_pd(s0, s1));
  for (int64_t t = i; t < dim; ++t) sum += x[t];
  const float mean = float(sum / double(dim));
  const __m256 mv = _mm256_set1_ps(mean);
  __m256 q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
  i = 0;
  for (; i + 16 <= dim; i += 16) {
    const __m256 c0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
    const __m256 c1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv);
    q0 = _mm256_fmadd_ps(c0, c0, q0);
    q1 = _mm256_fmadd_ps(c1, c1, q1);
  }
  for (; i < dim; i += 8) {
    // Masked-off lanes load 0, and 0 − mean must not count: clear them after the subtraction.
    const __m256i k = tail_mask(std::min<int64_t>(8, dim - i));
    const __m256 c = _mm256_and_ps(_mm256_sub_ps(load_tail(x + i, k), mv), _mm256_castsi256_ps(k));
    q0 = _mm256_fmadd_ps(c, c, q0);
  }
  *mean_out = mean;
  *rstd_out = inverse_rms(avx2::hsum(_mm256_add_ps(q0, q1)), dim, eps);
}

// Σ x² over n elements in two f32 vector accumulators.
FX_TARGET_AVX2 float sum_squares(const float* x, int64_t n) {
  __m256 q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    q0 = _mm256_fmadd_ps(v0, v0, q0);
    q1 = _mm256_fmadd_ps(v1, v1, q1);
  }
  for (; i < n; i += 8) {
    const __m256 v = load_tail(x + i, tail_mask(std::min<int64_t>(8, n - i)));
    q0 = _mm256_fmadd_ps(v, v, q0);
  }
  return avx2::hsum(_mm256_add_ps(q0, q1));
}

// y[i] = x[i]·r·w[i] (y may be x).
FX_TARGET_AVX2 void scale_by(const float* x, int64_t n, float r, const float* w, float* y) {
  const __m256 rv = _mm256_set1_ps(r);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), rv), _mm256_loadu_ps(w + i)));
  if (i < n) {
    const __m256i k = tail_mask(n - i);
    store_tail(y + i, k, _mm256_mul_ps(_mm256_mul_ps(load_tail(x + i, k), rv), load_tail(w + i, k)));
  }
}

// Applies f(vector of x) in place over n elements, full vectors then one masked tail.
template <typename F>
FX_TARGET_AVX2 inline void map_inplace(float* x, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i k = tail_mask(n - i);
    store_tail(x + i, k, f(load_tail(x + i, k)));
  }
}

// 4 pairs per vector: cos/sin of a pair are duplicated into both its lanes, and fmaddsub gives
// x·c − swap(x)·s in even lanes and x·c + swap(x)·s in odd ones, which is the rotation.
FX_TARGET_AVX2 inline __m256 rotate_pairs(__m256 v, __m128 c4, __m128 s4) {
  const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256 cv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(c4), dup);
  const __m256 sv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s4), dup);
  const __m256 swapped = _mm256_permute_ps(v, 0xB1);
  return _mm256_fmaddsub_ps(v, cv, _mm256_mul_ps(swapped, sv));
}

// The activations as functors for map_inplace, all of the form x·σ(t).
// GELU-tanh as x·σ(2u): 0.5·(1 + tanh(u)) = 1/(1 + e^(−2u)) exactly, so one exp and one divide.
struct GeluTanh {
  FX_TARGET_AVX2 __m256 operator()(__m256 v) const {
    const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),  // sqrt(2/pi)
                                   _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
    return avx2::sigmoid_times(v, _mm256_add_ps(u, u));
  }
};
struct Silu {
  FX_TARGET_AVX2 __m256 operator()(__m256 v) const { return avx2::sigmoid_times(v, v); }
};
struct QuickGelu {
  FX_TARGET_AVX2 __m256 operator()(__m256 v) const {
    return avx2::sigmoid_times(v, _mm256_mul_ps(_mm256_set1_ps(1.702f), v));
  }
};

}  // namespace

FX_TARGET_AVX2 void layernorm_modulate_row(const float* x, int64_t dim, const float* shift, const float* scale,
                                           float eps, float* y) {
  float mean, rstd;
  layernorm_stats(x, dim, eps, &mean, &rstd);
  const __m256 mv = _mm256_set1_ps(mean), rv = _mm256_set1_ps(rstd), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
    const __m256 g = _mm256_add_ps(one, _mm256_loadu_ps(scale + i));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(n, g, _mm256_loadu_ps(shift + i)));
  }
  if (i < dim) {
    const __m256i k = tail_mask(dim - i);
    const __m256 n = _mm256_mul_ps(_mm256_sub_ps(load_tail(x + i, k), mv), rv);
    const __m256 g = _mm256_add_ps(one, load_tail(scale + i, k));
    store_tail(y + i, k, _mm256_fmadd_ps(n, g, load_tail(shift + i, k)));
  }
}

FX_TARGET_AVX2 void layernorm_affine_row(const float* x, int64_t dim, const float* weight, const float* bias,
                                         float eps, float* y) {
  float mean, rstd;
  layernorm_stats(x, dim, eps, &mean, &rstd);
  const __m256 mv = _mm256_set1_ps(mean), rv = _mm256_set1_ps(rstd);
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(n, _mm256_loadu_ps(weight + i), _mm256_loadu_ps(bias + i)));
  }
  if (i < dim) {
    const __m256i k = tail_mask(dim - i);
    const __m256 n = _mm256_mul_ps(_mm256_sub_ps(load_tail(x + i, k), mv), rv);
    store_tail(y + i, k, _mm256_fmadd_ps(n, load_tail(weight + i, k), load_tail(bias + i, k)));
  }
}

FX_TARGET_AVX2 void rms_head(float* x, int64_t d, const float* w, float eps) {
  scale_by(x, d, inverse_rms(sum_squares(x, d), d, eps), w, x);
}

FX_TARGET_AVX2 void rms_row(const float* x, int64_t dim, const float* w, float eps, float* y) {
  scale_by(x, dim, inverse_rms(sum_squares(x, dim), dim, eps), w, y);
}

FX_TARGET_AVX2 void rope_head(float* x, int64_t pairs, const float* c, const float* s) {
  int64_t m = 0;
  for (; m + 4 <= pairs; m += 4)
    _mm256_storeu_ps(x + 2 * m, rotate_pairs(_mm256_loadu_ps(x + 2 * m), _mm_loadu_ps(c + m), _mm_loadu_ps(s + m)));
  if (m < pairs) {
    const int64_t left = pairs - m;
    const __m128i k4 = _mm256_castsi256_si128(tail_mask(left));
    const __m256i k8 = tail_mask(2 * left);
    const __m256 v = rotate_pairs(load_tail(x + 2 * m, k8), _mm_maskload_ps(c + m, k4), _mm_maskload_ps(s + m, k4));
    store_tail(x + 2 * m, k8, v);
  }
}

FX_TARGET_AVX2 void gelu_tanh(float* x, int64_t n) { map_inplace(x, n, GeluTanh{}); }
FX_TARGET_AVX2 void silu(float* x, int64_t n) { map_inplace(x, n, Silu{}); }
FX_TARGET_AVX2 void quick_gelu(float* x, int64_t n) { map_inplace(x, n, QuickGelu{}); }

FX_TARGET_AVX2 void add(float* x, const float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  if (i < n) {
    const __m256i k = tail_mask(n - i);
    store_tail(x + i, k, _mm256_add_ps(load_tail(x + i, k), load_tail(y + i, k)));
  }
}

FX_TARGET_AVX2 void mul(float* x, const float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  if (i < n) {
    const __m256i k = tail_mask(n - i);
    store_tail(x + i, k, _mm256_mul_ps(load_tail(x + i, k), load_tail(y + i, k)));
  }
}

FX_TARGET_AVX2 void gated_add_row(float* x, int64_t dim, const float* gate, const float* y) {
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8)
    _mm256_storeu_ps(x + i, _mm256_fmadd_ps(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
  if (i < dim) {
    const __m256i k = tail_mask(dim - i);
    store_tail(x + i, k, _mm256_fmadd_ps(load_tail(gate + i, k), load_tail(y + i, k), load_tail(x + i, k)));
  }
}

}  // namespace fx::cpu::elementwise_avx2

#endif  // defined(__x86_64__)
