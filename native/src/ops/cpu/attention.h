// CPU attention: out = softmax(q · kᵀ · scale) · v per (batch, head), tiled with an online softmax
// (running max and sum per query row), so the L×L score matrix never exists in memory.
// No padding mask: FLUX's joint attention, the T5 encoder (with a bias) and the VAE mid-block use none;
// CLIP's text tower uses the causal mask (AttentionShape::causal, aligned at the top-left corner: key j
// is visible to query i when j <= i). A row whose logits are all -inf (only possible through the bias)
// gives zeros rather than NaN.
// attention() picks its path at run time: AVX-512 (head_dim a multiple of 16), else AVX2 + FMA (a
// multiple of 8), else the portable one.
// attention_reference() is the plain two-pass version (full score row, double accumulation) that the
// tests compare with.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace fx::cpu {

// Addressing of one operand, [batch, seq, heads, head_dim] with arbitrary strides (in elements), so
// that q/k/v can be read straight out of a fused qkv projection and written into a concatenated
// buffer. Element (b, l, h, d) is at base[b*batch_stride + l*row_stride + h*head_stride + d].
struct AttentionOperand {
  const float* data = nullptr;
  int64_t batch_stride = 0;
  int64_t row_stride = 0;
  int64_t head_stride = 0;
};

struct AttentionOutput {
  float* data = nullptr;
  int64_t batch_stride = 0;
  int64_t row_stride = 0;
  int64_t head_stride = 0;
};

struct AttentionShape {
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t seq_q = 0;
  int64_t seq_kv = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;              // 1/sqrt(head_dim) for FLUX and CLIP, 1 for T5, 1/sqrt(512) for the VAE
  const float* bias = nullptr;     // optional additive bias [heads, seq_q, seq_kv] shared over the batch (T5)
  bool causal = false;             // query i sees keys 0..i only (CLIP); keys above the diagonal count as -inf
};

void attention(const AttentionShape& shape, const AttentionOperand& q, const AttentionOperand& k,
               const AttentionOperand& v, const AttentionOutput& out, ThreadPool& pool = ThreadPool::global());

void attention_reference(const AttentionShape& shape, const AttentionOperand& q, const AttentionOperand& k,
                         const AttentionOperand& v, const AttentionOutput& out);

// ---- for tests and benchmarks ----
// True when attention() would take the AVX-512 path for this head_dim on this machine.
bool attention_uses_avx512(int64_t head_dim);
// The path attention() takes for this head_dim on this machine under the ISA cap in force:
// "avx512", "avx2" or "portable".
const char* attention_path_name(int64_t head_dim);
// y[i] = exp(x[i]) as the attention paths compute it: the vectorised polynomial on AVX-512 or AVX2,
// else exp_flushed(). Every path has the edges of exp_edges.h: exact 0 below -87.33 (where f32 turns
// subnormal), exp(88.37) instead of inf above 88.37, NaN kept.
void attention_exp(const float* x, float* y, int64_t n);

}  // namespace fx::cpu
