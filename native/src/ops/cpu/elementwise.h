// The small bandwidth-bound kernels of the FLUX transformer (docs/flux-model.md §5): RoPE, LayerNorm with
// adaLN modulation, RMSNorm (QK-norm), GELU-tanh, SiLU, gated residual add. Each has a *_reference
// twin written as plainly as possible (double arithmetic) for the tests. The fast versions take an
// AVX-512 path when the CPU has one, else an AVX2 + FMA one (chosen at run time), and a portable loop
// otherwise.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace fx::cpu {

// ---- RoPE (interleaved pairs, docs/flux-model.md §5.2) ----
// cos/sin tables for `seq` positions: ids [seq, n_axes] (float positions), axes_dim[n_axes] (sum =
// head_dim), theta. Angles computed in double: phi = id[a] * theta^(-2j/axes_dim[a]).
// Output tables are [seq, head_dim/2] f32 each, pair m = (x[2m], x[2m+1]).
void rope_tables(const float* ids, int64_t seq, int n_axes, const int* axes_dim, double theta, float* cos_out,
                 float* sin_out);
// Rotates x in place: rows of `heads` heads of `head_dim`; element (l, h, d) at x[l*row_stride + h*head_dim + d].
void rope_apply(float* x, int64_t seq, int64_t row_stride, int64_t heads, int64_t head_dim, const float* cos_t,
                const float* sin_t, ThreadPool& pool = ThreadPool::global());
void rope_apply_reference(float* x, int64_t seq, int64_t row_stride, int64_t heads, int64_t head_dim,
                          const float* cos_t, const float* sin_t);

// ---- LayerNorm without affine + modulation: y = (1 + scale) * LN(x) + shift (eps 1e-6, biased var) ----
// x, y: [rows, dim] with row strides; shift/scale: [dim] (one sample's modulation vector).
void layernorm_modulate(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* shift, const float* scale,
                        float eps, float* y, int64_t ldy, ThreadPool& pool = ThreadPool::global());
void layernorm_modulate_reference(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* shift,
                                  const float* scale, float eps, float* y, int64_t ldy);

// ---- RMSNorm over each head vector, in place: x = x / sqrt(mean(x²) + eps) * weight (QK-norm) ----
void rms_norm_heads(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const float* weight,
                    float eps, ThreadPool& pool = ThreadPool::global());
void rms_norm_heads_reference(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                              const float* weight, float eps);

// ---- activations, in place over n contiguous elements ----
void gelu_tanh(float* x, int64_t n, ThreadPool& pool = ThreadPool::global());
void gelu_tanh_reference(float* x, int64_t n);
void silu(float* x, int64_t n, ThreadPool& pool = ThreadPool::global());
void silu_reference(float* x, int64_t n);

// ---- gated residual: x[r, :] += gate[:] * y[r, :] ----
void gated_add(float* x, int64_t rows, int64_t dim, int64_t ldx, const float* gate, const float* y, int64_t ldy,
               ThreadPool& pool = ThreadPool::global());
void gated_add_reference(float* x, int64_t rows, int64_t dim, int64_t ldx, const float* gate, const float* y,
                         int64_t ldy);

// ---- text encoders (docs/flux-model.md §3.2, §3.3) ----
// LayerNorm with affine weight and bias (CLIP): y = (x − mean) / sqrt(var + eps) · weight + bias, biased
// variance, mean through f64 as above. x, y: [rows, dim] with row strides; weight/bias: [dim].
void layernorm_affine(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                      float eps, float* y, int64_t ldy, ThreadPool& pool = ThreadPool::global());
void layernorm_affine_reference(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight,
                                const float* bias, float eps, float* y, int64_t ldy);

// RMSNorm over whole rows (T5): y = x / sqrt(mean(x²) + eps) · weight, no mean subtraction, statistics
// in f32. x, y: [rows, dim] with row strides (may be the same buffer with the same stride).
void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* y,
              int64_t ldy, ThreadPool& pool = ThreadPool::global());
void rms_norm_reference(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps,
                        float* y, int64_t ldy);

// QuickGELU (CLIP), in place: x·σ(1.702·x).
void quick_gelu(float* x, int64_t n, ThreadPool& pool = ThreadPool::global());
void quick_gelu_reference(float* x, int64_t n);

// In place over n contiguous elements: x[i] += y[i] (residual), x[i] *= y[i] (T5's gated FFN).
void add_inplace(float* x, const float* y, int64_t n, ThreadPool& pool = ThreadPool::global());
void add_inplace_reference(float* x, const float* y, int64_t n);
void mul_inplace(float* x, const float* y, int64_t n, ThreadPool& pool = ThreadPool::global());
void mul_inplace_reference(float* x, const float* y, int64_t n);

// ---- for tests and benchmarks ----
// True when the functions above take their AVX-512 paths (the machine has it and the ISA cap of
// core/cpu_features.h allows it; tests cap the ISA to run the portable paths on the same machine).
bool elementwise_uses_avx512();
// The path the functions above take now: "avx512", "avx2" or "portable".
const char* elementwise_path_name();

}  // namespace fx::cpu
