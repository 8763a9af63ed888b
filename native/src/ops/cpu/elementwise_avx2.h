// The AVX2 + FMA bodies of the elementwise kernels (elementwise_avx2.cpp), for elementwise.cpp's
// dispatch only: not part of the public interface (ops/cpu/elementwise.h). Each works on one row, one
// head or one contiguous range; elementwise.cpp splits the work over threads.
#pragma once

#include <cstdint>

namespace fx::cpu::elementwise_avx2 {

// y = (1 + scale)·LN(x) + shift over one row of dim.
void layernorm_modulate_row(const float* x, int64_t dim, const float* shift, const float* scale, float eps, float* y);
// y = LN(x)·weight + bias over one row of dim.
void layernorm_affine_row(const float* x, int64_t dim, const float* weight, const float* bias, float eps, float* y);
// One head of d, in place: x / rms(x) · w.
void rms_head(float* x, int64_t d, const float* w, float eps);
// One row of dim: y = x / rms(x) · w (y may be x).
void rms_row(const float* x, int64_t dim, const float* w, float eps, float* y);
// One head of 2·pairs, in place: pair m rotated by (c[m], s[m]).
void rope_head(float* x, int64_t pairs, const float* c, const float* s);
// In place over n contiguous elements.
void gelu_tanh(float* x, int64_t n);
void silu(float* x, int64_t n);
void quick_gelu(float* x, int64_t n);
void add(float* x, const float* y, int64_t n);
void mul(float* x, const float* y, int64_t n);
// x[i] += gate[i]·y[i] over one row of dim.
void gated_add_row(float* x, int64_t dim, const float* gate, const float* y);

}  // namespace fx::cpu::elementwise_avx2
