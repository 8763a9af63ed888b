// The AVX2 + FMA path of attention (attention_avx2.cpp), for attention.cpp's dispatch only: not part
// of the public interface (ops/cpu/attention.h).
#pragma once

#include <cstdint>
#include <vector>

#include "ops/cpu/attention.h"

namespace fx::cpu::attention_avx2 {

// Query rows per strip: the two 8-lane vectors that one key's scores occupy.
inline constexpr int64_t kStrip = 16;

// True when the path handles this head_dim (a multiple of 8); the machine check is the caller's.
inline bool handles(int64_t head_dim) { return head_dim > 0 && head_dim % 8 == 0; }

// Query rows q0 .. q0+nq-1 of (batch b, head h), streaming over blocks of bk keys; `scratch` is reused
// between the tasks of one thread.
void task(const AttentionShape& s, const AttentionOperand& q, const AttentionOperand& k, const AttentionOperand& v,
          const AttentionOutput& out, int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t bk,
          std::vector<float>& scratch);

// y[i] = exp(x[i]) with the vector exp of avx2_math.h (edges of exp_edges.h); any n.
void exp(const float* x, float* y, int64_t n);

}  // namespace fx::cpu::attention_avx2
