// Bandwidth-bound kernels of the transformer blocks: each touches its data once (LayerNorm and RMSNorm
// twice, the second pass from L1 since a row is a few KB), so the aim is to stream at memory speed:
// one AVX-512 pass per row with masked tails, rows split over the thread pool. Statistics are
// accumulated in f32 vectors except the LayerNorm mean, which goes through f64 because hidden states
// can carry a large common offset whose rounding would otherwise leak into x - mean.
// The AVX2 + FMA bodies, with the same numerics at 8 lanes, are in elementwise_avx2.cpp; this file
// has the portable and AVX-512 bodies, the dispatch (the widest path the machine has under the ISA
// cap), the threading and the references.
#include "ops/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/cpu_features.h"
#include "fluxnative.h"
#include "ops/cpu/elementwise_avx2.h"

#if defined(__x86_64__)
#include "ops/cpu/avx512_math.h"
#define FX_HAVE_X86_PATHS 1
#else
#define FX_HAVE_X86_PATHS 0
#endif

namespace fx::cpu {

namespace {

enum class Path { Portable, Avx2, Avx512 };

// The widest path the machine has under the ISA cap in force.
Path active_path() {
  if (FX_HAVE_X86_PATHS && cpu_has_avx512()) return Path::Avx512;
  if (FX_HAVE_X86_PATHS && cpu_has_avx2_fma()) return Path::Avx2;
  return Path::Portable;
}

// Rows per parallel chunk so a thread gets at least ~64 KB of work: below that, waking a worker
// costs more than the work.
int64_t row_grain(int64_t row_elems) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elems)); }

constexpr int64_t kFlatChunk = 4096;  // elements per unit of work for the flat activations

template <typename Body>
void for_flat_chunks(int64_t n, ThreadPool& pool, Body body) {
  const int64_t chunks = (n + kFlatChunk - 1) / kFlatChunk;
  pool.parallel_for(
      chunks,
      [&](int64_t c0, int64_t c1) {
        const int64_t begin = c0 * kFlatChunk, end = std::min(n, c1 * kFlatChunk);
        body(begin, end);
      },
      4);
}

inline double gelu_tanh_exact(double x) {
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

// ---- portable bodies ----

// Mean (summed in f64) and 1/sqrt(biased variance + eps) of one row, for both LayerNorm flavours.
void layernorm_stats_portable(const float* x, int64_t dim, float eps, float* mean_out, float* rstd_out) {
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += x[i];
  const float mean = float(sum / double(dim));
  float ss = 0.0f;
  for (int64_t i = 0; i < dim; ++i) {
    const float c = x[i] - mean;
    ss += c * c;
  }
  *mean_out = mean;
  *rstd_out = float(1.0 / std::sqrt(double(ss) / double(dim) + double(eps)));
}

void layernorm_row_portable(const float* x, int64_t dim, const float* shift, const float* scale, float eps,
                            float* y) {
  float mean, rstd;
  layernorm_stats_portable(x, dim, eps, &mean, &rstd);
  for (int64_t i = 0; i < dim; ++i) y[i] = (x[i] - mean) * rstd * (1.0f + scale[i]) + shift[i];
}

void rms_head_portable(float* x, int64_t d, const float* w, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < d; ++i) ss += x[i] * x[i];
  const float r = float(1.0 / std::sqrt(double(ss) / double(d) + double(eps)));
  for (int64_t i = 0; i < d; ++i) x[i] = x[i] * r * w[i];
}

void rope_head_portable(float* x, int64_t pairs, const float* c, const float* s) {
  for (int64_t m = 0; m < pairs; ++m) {
    const float x0 = x[2 * m], x1 = x[2 * m + 1];
    x[2 * m] = c[m] * x0 - s[m] * x1;
    x[2 * m + 1] = s[m] * x0 + c[m] * x1;
  }
}

// ---- AVX-512 bodies ----
#if FX_HAVE_X86_PATHS

FX_TARGET_AVX512 inline __mmask16 tail_mask(int64_t left) { return __mmask16((1u << left) - 1u); }

// Mean (summed in f64) and 1/sqrt(biased variance + eps) of one row, for both LayerNorm flavours.
FX_TARGET_AVX512 void layernorm_stats_avx512(const float* x, int64_t dim, float eps, float* mean_out,
                                             float* rstd_out) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  }
  double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  for (int64_t t = i; t < dim; ++t) sum += x[t];
  const float mean = float(sum / double(dim));
  const __m512 mv = _mm512_set1_ps(mean);
  __m512 q0 = _mm512_setzero_ps(), q1 = _mm512_setzero_ps();
  i = 0;
  for (; i + 32 <= dim; i += 32) {
    const __m512 c0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), mv);
    const __m512 c1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv);
    q0 = _mm512_fmadd_ps(c0, c0, q0);
    q1 = _mm512_fmadd_ps(c1, c1, q1);
  }
  for (; i < dim; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, dim - i));
    const __m512 c = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + i), mv);
    q0 = _mm512_fmadd_ps(c, c, q0);
  }
  const float ss = _mm512_reduce_add_ps(_mm512_add_ps(q0, q1));
  *mean_out = mean;
  *rstd_out = float(1.0 / std::sqrt(double(ss) / double(dim) + double(eps)));
}

FX_TARGET_AVX512 void layernorm_row_avx512(const float* x, int64_t dim, const float* shift, const float* scale,
                                           float eps, float* y) {
  float mean, rstd;
  layernorm_stats_avx512(x, dim, eps, &mean, &rstd);
  const __m512 mv = _mm512_set1_ps(mean);
  const __m512 rv = _mm512_set1_ps(rstd);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < dim; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, dim - i));
    const __m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv), rv);
    const __m512 g = _mm512_add_ps(one, _mm512_maskz_loadu_ps(k, scale + i));
    _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(n, g, _mm512_maskz_loadu_ps(k, shift + i)));
  }
}

FX_TARGET_AVX512 void rms_head_avx512(float* x, int64_t d, const float* w, float eps) {
  __m512 q = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, d - i));
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    q = _mm512_fmadd_ps(v, v, q);
  }
  const float ss = _mm512_reduce_add_ps(q);
  const __m512 r = _mm512_set1_ps(float(1.0 / std::sqrt(double(ss) / double(d) + double(eps))));
  for (int64_t i = 0; i < d; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, d - i));
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), r);
    _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + i)));
  }
}

// 8 pairs per vector: cos/sin of a pair are duplicated into both its lanes, and fmaddsub gives
// x·c − swap(x)·s in even lanes and x·c + swap(x)·s in odd ones, which is the rotation.
FX_TARGET_AVX512 void rope_head_avx512(float* x, int64_t pairs, const float* c, const float* s) {
  const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  for (int64_t m = 0; m < pairs; m += 8) {
    const int64_t left = std::min<int64_t>(8, pairs - m);
    const __mmask8 k8 = __mmask8((1u << left) - 1u);
    const __mmask16 k16 = tail_mask(2 * left);
    const __m512 cv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(k8, c + m)));
    const __m512 sv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(k8, s + m)));
    const __m512 v = _mm512_maskz_loadu_ps(k16, x + 2 * m);
    const __m512 swapped = _mm512_permute_ps(v, 0xB1);
    _mm512_mask_storeu_ps(x + 2 * m, k16, _mm512_fmaddsub_ps(v, cv, _mm512_mul_ps(swapped, sv)));
  }
}

// GELU-tanh as x·σ(2u): 0.5·(1 + tanh(u)) = 1/(1 + e^(−2u)) exactly, so one exp and one divide.
FX_TARGET_AVX512 void gelu_tanh_avx512(float* x, int64_t n) {
  const __m512 k = _mm512_set1_ps(0.7978845608028654f);  // sqrt(2/pi)
  const __m512 c = _mm512_set1_ps(0.044715f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, n - i));
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    const __m512 u = _mm512_mul_ps(k, _mm512_fmadd_ps(c, v3, v));
    _mm512_mask_storeu_ps(x + i, m, avx512::sigmoid_times(v, _mm512_add_ps(u, u)));
  }
}

FX_TARGET_AVX512 void silu_avx512(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, n - i));
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(x + i, m, avx512::sigmoid_times(v, v));
  }
}

FX_TARGET_AVX512 void gated_add_row_avx512(float* x, int64_t dim, const float* gate, const float* y) {
  for (int64_t i = 0; i < dim; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, dim - i));
    const __m512 r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, y + i),
                                     _mm512_maskz_loadu_ps(m, x + i));
    _mm512_mask_storeu_ps(x + i, m, r);
  }
}

// ---- text-encoder bodies ----

FX_TARGET_AVX512 void layernorm_affine_row_avx512(const float* x, int64_t dim, const float* weight,
                                                  const float* bias, float eps, float* y) {
  float mean, rstd;
  layernorm_stats_avx512(x, dim, eps, &mean, &rstd);
  const __m512 mv = _mm512_set1_ps(mean);
  const __m512 rv = _mm512_set1_ps(rstd);
  for (int64_t i = 0; i < dim; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, dim - i));
    const __m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv), rv);
    _mm512_mask_storeu_ps(y + i, k,
                          _mm512_fmadd_ps(n, _mm512_maskz_loadu_ps(k, weight + i), _mm512_maskz_loadu_ps(k, bias + i)));
  }
}

FX_TARGET_AVX512 void rms_row_avx512(const float* x, int64_t dim, const float* w, float eps, float* y) {
  __m512 q0 = _mm512_setzero_ps(), q1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
    q0 = _mm512_fmadd_ps(v0, v0, q0);
    q1 = _mm512_fmadd_ps(v1, v1, q1);
  }
  for (; i < dim; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, dim - i));
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    q0 = _mm512_fmadd_ps(v, v, q0);
  }
  const float ss = _mm512_reduce_add_ps(_mm512_add_ps(q0, q1));
  const __m512 r = _mm512_set1_ps(float(1.0 / std::sqrt(double(ss) / double(dim) + double(eps))));
  for (i = 0; i < dim; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, dim - i));
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), r);
    _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + i)));
  }
}

FX_TARGET_AVX512 void quick_gelu_avx512(float* x, int64_t n) {
  const __m512 a = _mm512_set1_ps(1.702f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, n - i));
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(x + i, m, avx512::sigmoid_times(v, _mm512_mul_ps(a, v)));
  }
}

FX_TARGET_AVX512 void add_avx512(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, n - i));
    _mm512_mask_storeu_ps(x + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

FX_TARGET_AVX512 void mul_avx512(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, n - i));
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}
#endif  // FX_HAVE_X86_PATHS

}  // namespace

bool elementwise_uses_avx512() { return active_path() == Path::Avx512; }

const char* elementwise_path_name() {
  switch (active_path()) {
    case Path::Avx512: return "avx512";
    case Path::Avx2: return "avx2";
    case Path::Portable: return "portable";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------------
// RoPE

void rope_tables(const float* ids, int64_t seq, int n_axes, const int* axes_dim, double theta, float* cos_out,
                 float* sin_out) {
  int64_t half = 0;
  for (int a = 0; a < n_axes; ++a) {
    if (axes_dim[a] <= 0 || axes_dim[a] % 2 != 0) throw std::invalid_argument("rope_tables: axis dims must be even");
    half += axes_dim[a] / 2;
  }
  for (int64_t l = 0; l < seq; ++l) {
    int64_t m = 0;
    for (int a = 0; a < n_axes; ++a) {
      const double pos = double(ids[l * n_axes + a]);
      for (int j = 0; j < axes_dim[a] / 2; ++j, ++m) {
        // The exponent is over this axis's width, not the head's (docs/flux-model.md §5.2).
        const double omega = std::pow(theta, -2.0 * double(j) / double(axes_dim[a]));
        const double phi = pos * omega;
        cos_out[l * half + m] = float(std::cos(phi));
        sin_out[l * half + m] = float(std::sin(phi));
      }
    }
  }
}

void rope_apply(float* x, int64_t seq, int64_t row_stride, int64_t heads, int64_t head_dim, const float* cos_t,
                const float* sin_t, ThreadPool& pool) {
  if (head_dim % 2 != 0) throw std::invalid_argument("rope_apply: head_dim must be even");
  const int64_t pairs = head_dim / 2;
  const Path path = active_path();
  pool.parallel_for(
      seq,
      [&](int64_t l0, int64_t l1) {
        for (int64_t l = l0; l < l1; ++l)
          for (int64_t h = 0; h < heads; ++h) {
            float* xh = x + l * row_stride + h * head_dim;
#if FX_HAVE_X86_PATHS
            if (path == Path::Avx512) {
              rope_head_avx512(xh, pairs, cos_t + l * pairs, sin_t + l * pairs);
              continue;
            }
            if (path == Path::Avx2) {
              elementwise_avx2::rope_head(xh, pairs, cos_t + l * pairs, sin_t + l * pairs);
              continue;
            }
#endif
            rope_head_portable(xh, pairs, cos_t + l * pairs, sin_t + l * pairs);
          }
      },
      row_grain(heads * head_dim));
}

void rope_apply_reference(float* x, int64_t seq, int64_t row_stride, int64_t heads, int64_t head_dim,
                          const float* cos_t, const float* sin_t) {
  const int64_t pairs = head_dim / 2;
  for (int64_t l = 0; l < seq; ++l)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t m = 0; m < pairs; ++m) {
        float* p = x + l * row_stride + h * head_dim + 2 * m;
        const double c = cos_t[l * pairs + m], s = sin_t[l * pairs + m];
        const double x0 = p[0], x1 = p[1];
        p[0] = float(c * x0 - s * x1);
        p[1] = float(s * x0 + c * x1);
      }
}

// ---------------------------------------------------------------------------------------------------
// LayerNorm + modulation

void layernorm_modulate(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* shift, const float* scale,
                        float eps, float* y, int64_t ldy, ThreadPool& pool) {
  if (dim <= 0) return;
  const Path path = active_path();
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
#if FX_HAVE_X86_PATHS
          if (path == Path::Avx512) {
            layernorm_row_avx512(x + r * ldx, dim, shift, scale, eps, y + r * ldy);
            continue;
          }
          if (path == Path::Avx2) {
            elementwise_avx2::layernorm_modulate_row(x + r * ldx, dim, shift, scale, eps, y + r * ldy);
            continue;
          }
#endif
          layernorm_row_portable(x + r * ldx, dim, shift, scale, eps, y + r * ldy);
        }
      },
      row_grain(dim));
}

// The references' LayerNorm statistics, in double: mean and 1/sqrt(biased variance + eps), as torch's layer_norm.
static void layernorm_stats_reference(const float* xr, int64_t dim, float eps, double* mean_out, double* rstd_out) {
  double mean = 0.0;
  for (int64_t i = 0; i < dim; ++i) mean += xr[i];
  mean /= double(dim);
  double var = 0.0;
  for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
  var /= double(dim);
  *mean_out = mean;
  *rstd_out = 1.0 / std::sqrt(var + double(eps));
}

void layernorm_modulate_reference(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* shift,
                                  const float* scale, float eps, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    double mean, rstd;
    layernorm_stats_reference(xr, dim, eps, &mean, &rstd);
    for (int64_t i = 0; i < dim; ++i)
      y[r * ldy + i] = float((1.0 + double(scale[i])) * ((xr[i] - mean) * rstd) + double(shift[i]));
  }
}

// ---------------------------------------------------------------------------------------------------
// RMSNorm per head

void rms_norm_heads(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const float* weight,
                    float eps, ThreadPool& pool) {
  if (head_dim <= 0) return;
  const Path path = active_path();
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t h = 0; h < heads; ++h) {
            float* xh = x + r * row_stride + h * head_dim;
#if FX_HAVE_X86_PATHS
            if (path == Path::Avx512) {
              rms_head_avx512(xh, head_dim, weight, eps);
              continue;
            }
            if (path == Path::Avx2) {
              elementwise_avx2::rms_head(xh, head_dim, weight, eps);
              continue;
            }
#endif
            rms_head_portable(xh, head_dim, weight, eps);
          }
      },
      row_grain(heads * head_dim));
}

void rms_norm_heads_reference(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                              const float* weight, float eps) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      float* xh = x + r * row_stride + h * head_dim;
      double ss = 0.0;
      for (int64_t i = 0; i < head_dim; ++i) ss += double(xh[i]) * double(xh[i]);
      const double inv = 1.0 / std::sqrt(ss / double(head_dim) + double(eps));
      for (int64_t i = 0; i < head_dim; ++i) xh[i] = float(double(xh[i]) * inv * double(weight[i]));
    }
}

// ---------------------------------------------------------------------------------------------------
// Activations

void gelu_tanh(float* x, int64_t n, ThreadPool& pool) {
  const Path path = active_path();
  for_flat_chunks(n, pool, [&](int64_t begin, int64_t end) {
#if FX_HAVE_X86_PATHS
    if (path == Path::Avx512) {
      gelu_tanh_avx512(x + begin, end - begin);
      return;
    }
    if (path == Path::Avx2) {
      elementwise_avx2::gelu_tanh(x + begin, end - begin);
      return;
    }
#endif
    for (int64_t i = begin; i < end; ++i) {
      const float v = x[i];
      x[i] = 0.5f * v * (1.0f + std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
  });
}

void gelu_tanh_reference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = float(gelu_tanh_exact(double(x[i])));
}

void silu(float* x, int64_t n, ThreadPool& pool) {
  const Path path = active_path();
  for_flat_chunks(n, pool, [&](int64_t begin, int64_t end) {
#if FX_HAVE_X86_PATHS
    if (path == Path::Avx512) {
      silu_avx512(x + begin, end - begin);
      return;
    }
    if (path == Path::Avx2) {
      elementwise_avx2::silu(x + begin, end - begin);
      return;
    }
#endif
    for (int64_t i = begin; i < end; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
  });
}

void silu_reference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = float(v / (1.0 + std::exp(-v)));
  }
}

// ---------------------------------------------------------------------------------------------------
// Gated residual

void gated_add(float* x, int64_t rows, int64_t dim, int64_t ldx, const float* gate, const float* y, int64_t ldy,
               ThreadPool& pool) {
  const Path path = active_path();
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* xr = x + r * ldx;
          const float* yr = y + r * ldy;
#if FX_HAVE_X86_PATHS
          if (path == Path::Avx512) {
            gated_add_row_avx512(xr, dim, gate, yr);
            continue;
          }
          if (path == Path::Avx2) {
            elementwise_avx2::gated_add_row(xr, dim, gate, yr);
            continue;
          }
#endif
          for (int64_t i = 0; i < dim; ++i) xr[i] += gate[i] * yr[i];
        }
      },
      row_grain(dim));
}

void gated_add_reference(float* x, int64_t rows, int64_t dim, int64_t ldx, const float* gate, const float* y,
                         int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < dim; ++i) x[r * ldx + i] = float(double(x[r * ldx + i]) + double(gate[i]) * double(y[r * ldy + i]));
}

// ---------------------------------------------------------------------------------------------------
// Text encoders: affine LayerNorm, row RMSNorm, QuickGELU, in-place add / multiply

void layernorm_affine(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                      float eps, float* y, int64_t ldy, ThreadPool& pool) {
  if (dim <= 0) return;
  const Path path = active_path();
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float* xr = x + r * ldx;
          float* yr = y + r * ldy;
#if FX_HAVE_X86_PATHS
          if (path == Path::Avx512) {
            layernorm_affine_row_avx512(xr, dim, weight, bias, eps, yr);
            continue;
          }
          if (path == Path::Avx2) {
            elementwise_avx2::layernorm_affine_row(xr, dim, weight, bias, eps, yr);
            continue;
          }
#endif
          float mean, rstd;
          layernorm_stats_portable(xr, dim, eps, &mean, &rstd);
          for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * rstd * weight[i] + bias[i];
        }
      },
      row_grain(dim));
}

void layernorm_affine_reference(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight,
                                const float* bias, float eps, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    double mean, rstd;
    layernorm_stats_reference(xr, dim, eps, &mean, &rstd);
    for (int64_t i = 0; i < dim; ++i) y[r * ldy + i] = float((xr[i] - mean) * rstd * double(weight[i]) + double(bias[i]));
  }
}

void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* y,
              int64_t ldy, ThreadPool& pool) {
  if (dim <= 0) return;
  const Path path = active_path();
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float* xr = x + r * ldx;
          float* yr = y + r * ldy;
#if FX_HAVE_X86_PATHS
          if (path == Path::Avx512) {
            rms_row_avx512(xr, dim, weight, eps, yr);
            continue;
          }
          if (path == Path::Avx2) {
            elementwise_avx2::rms_row(xr, dim, weight, eps, yr);
            continue;
          }
#endif
          float ss = 0.0f;
          for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
          const float inv = float(1.0 / std::sqrt(double(ss) / double(dim) + double(eps)));
          for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
        }
      },
      row_grain(dim));
}

void rms_norm_reference(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps,
                        float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * double(xr[i]);
    const double inv = 1.0 / std::sqrt(ss / double(dim) + double(eps));
    for (int64_t i = 0; i < dim; ++i) y[r * ldy + i] = float(double(xr[i]) * inv * double(weight[i]));
  }
}

void quick_gelu(float* x, int64_t n, ThreadPool& pool) {
  const Path path = active_path();
  for_flat_chunks(n, pool, [&](int64_t begin, int64_t end) {
#if FX_HAVE_X86_PATHS
    if (path == Path::Avx512) {
      quick_gelu_avx512(x + begin, end - begin);
      return;
    }
    if (path == Path::Avx2) {
      elementwise_avx2::quick_gelu(x + begin, end - begin);
      return;
    }
#endif
    for (int64_t i = begin; i < end; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
  });
}

void quick_gelu_reference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = float(v / (1.0 + std::exp(-1.702 * v)));
  }
}

void add_inplace(float* x, const float* y, int64_t n, ThreadPool& pool) {
  const Path path = active_path();
  for_flat_chunks(n, pool, [&](int64_t begin, int64_t end) {
#if FX_HAVE_X86_PATHS
    if (path == Path::Avx512) {
      add_avx512(x + begin, y + begin, end - begin);
      return;
    }
    if (path == Path::Avx2) {
      elementwise_avx2::add(x + begin, y + begin, end - begin);
      return;
    }
#endif
    for (int64_t i = begin; i < end; ++i) x[i] += y[i];
  });
}

void add_inplace_reference(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = float(double(x[i]) + double(y[i]));
}

void mul_inplace(float* x, const float* y, int64_t n, ThreadPool& pool) {
  const Path path = active_path();
  for_flat_chunks(n, pool, [&](int64_t begin, int64_t end) {
#if FX_HAVE_X86_PATHS
    if (path == Path::Avx512) {
      mul_avx512(x + begin, y + begin, end - begin);
      return;
    }
    if (path == Path::Avx2) {
      elementwise_avx2::mul(x + begin, y + begin, end - begin);
      return;
    }
#endif
    for (int64_t i = begin; i < end; ++i) x[i] *= y[i];
  });
}

void mul_inplace_reference(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = float(double(x[i]) * double(y[i]));
}

}  // namespace fx::cpu
