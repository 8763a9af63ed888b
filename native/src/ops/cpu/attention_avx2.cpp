// The AVX2 + FMA path of CPU attention: the flash-style streaming of attention.cpp (running max m,
// running sum l and unnormalised output O per query row, rescaled by exp(m_old - m_new) when a block
// of keys raises the max) at 8 lanes and 16 ymm registers.
//
// As on the AVX-512 path, the scores are computed transposed, S^T[key][query], here with a strip of
// 16 query rows across two vectors: q is copied once per task into [d][16] strips pre-multiplied by
// the scale, and keys are broadcast straight from their strided rows, so the softmax's row max and row
// sum are plain vertical max/add over key rows, with no horizontal reduction and no transposed copy
// of K. The score kernel holds 6 keys × 2 vectors = 12 accumulators, 2 q vectors and 1 broadcast.
// P·V broadcasts P^T entries against contiguous rows of V, 4 query rows × 16 head dims (8
// accumulators) at a time, walking head-dim slices in the outer loop so that a slice of the V block
// (keys × 64 bytes) stays in L1 while the strip's four row groups reuse it. The caller sizes tiles
// and key blocks for L2 (attention.cpp, make_plan) and spreads heads and query tiles over threads.
// head_dim must be a multiple of 8; any other runs the portable path.
#include "ops/cpu/attention_avx2.h"

#if defined(__x86_64__)

#include <algorithm>
#include <cstdint>
#include <limits>

#include "ops/cpu/avx2_math.h"

namespace fx::cpu::attention_avx2 {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The register blocks below index arrays of vectors with loop counters; unless those loops are fully
// unrolled early, GCC 12 keeps the arrays in memory and stores every accumulator on every iteration.
#define FX_UNROLL _Pragma("GCC unroll 16")

// st[j][0..15] = Σ_c k[j][c] · qt[c][0..15] for RK consecutive keys; 2·RK accumulators stay in
// registers across the whole head dim.
template <int RK>
FX_TARGET_AVX2 inline void scores_block(const float* k0, int64_t k_stride, const float* qt, int64_t d, float* st) {
  __m256 a0[RK], a1[RK];
  FX_UNROLL
  for (int r = 0; r < RK; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    const __m256 q0 = _mm256_load_ps(qt + c * kStrip);
    const __m256 q1 = _mm256_load_ps(qt + c * kStrip + 8);
    FX_UNROLL
    for (int r = 0; r < RK; ++r) {
      const __m256 kk = _mm256_broadcast_ss(k0 + r * k_stride + c);
      a0[r] = _mm256_fmadd_ps(kk, q0, a0[r]);
      a1[r] = _mm256_fmadd_ps(kk, q1, a1[r]);
    }
  }
  FX_UNROLL
  for (int r = 0; r < RK; ++r) {
    _mm256_store_ps(st + r * kStrip, a0[r]);
    _mm256_store_ps(st + r * kStrip + 8, a1[r]);
  }
}

FX_TARGET_AVX2 void scores_strip(const float* k0, int64_t k_stride, const float* qt, int64_t d, int64_t nk,
                                 float* st) {
  constexpr int kRk = 6;
  int64_t j = 0;
  for (; j + kRk <= nk; j += kRk) scores_block<kRk>(k0 + j * k_stride, k_stride, qt, d, st + j * kStrip);
  const float* kt = k0 + j * k_stride;
  float* stt = st + j * kStrip;
  switch (nk - j) {
    case 5: scores_block<5>(kt, k_stride, qt, d, stt); break;
    case 4: scores_block<4>(kt, k_stride, qt, d, stt); break;
    case 3: scores_block<3>(kt, k_stride, qt, d, stt); break;
    case 2: scores_block<2>(kt, k_stride, qt, d, stt); break;
    case 1: scores_block<1>(kt, k_stride, qt, d, stt); break;
    default: break;
  }
}

// o[r][c·8 ..] += Σ_j p[j][r] · v[j][c·8 ..] for 4 query rows and C vectors of head dims.
template <int C>
FX_TARGET_AVX2 inline void pv_block(const float* p, int64_t nk, const float* v0, int64_t v_stride, float* o,
                                    int64_t ld_o) {
  constexpr int kRows = 4;
  __m256 acc[kRows][C];
  FX_UNROLL
  for (int r = 0; r < kRows; ++r) {
    FX_UNROLL
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_load_ps(o + r * ld_o + c * 8);
  }
  for (int64_t j = 0; j < nk; ++j) {
    __m256 vv[C];
    FX_UNROLL
    for (int c = 0; c < C; ++c) vv[c] = _mm256_loadu_ps(v0 + j * v_stride + c * 8);
    FX_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const __m256 pr = _mm256_broadcast_ss(p + j * kStrip + r);
      FX_UNROLL
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(pr, vv[c], acc[r][c]);
    }
  }
  FX_UNROLL
  for (int r = 0; r < kRows; ++r) {
    FX_UNROLL
    for (int c = 0; c < C; ++c) _mm256_store_ps(o + r * ld_o + c * 8, acc[r][c]);
  }
}

FX_TARGET_AVX2 void pv_strip(const float* p, int64_t nk, const float* v0, int64_t v_stride, float* o, int64_t d) {
  int64_t c = 0;
  for (; c + 16 <= d; c += 16)
    for (int64_t r = 0; r < kStrip; r += 4) pv_block<2>(p + r, nk, v0 + c, v_stride, o + r * d + c, d);
  if (c < d)  // d % 16 == 8
    for (int64_t r = 0; r < kStrip; r += 4) pv_block<1>(p + r, nk, v0 + c, v_stride, o + r * d + c, d);
}

// Adds the bias rows of the strip's real rows to the transposed scores st[j][i].
void add_bias(const AttentionShape& s, int64_t h, int64_t row0, int64_t valid, int64_t kv0, int64_t nk, float* st) {
  for (int64_t i = 0; i < valid; ++i) {
    const float* br = s.bias + (h * s.seq_q + row0 + i) * s.seq_kv + kv0;
    for (int64_t j = 0; j < nk; ++j) st[j * kStrip + i] += br[j];
  }
}

// Causal mask: key kv0 + j is hidden from query row0 + i when kv0 + j > row0 + i, i.e. from the
// strip's first kv0 + j - row0 rows (padding rows are masked alike).
void mask_causal(int64_t row0, int64_t kv0, int64_t nk, float* st) {
  for (int64_t j = 0; j < nk; ++j) {
    const int64_t hidden_rows = std::min(kStrip, kv0 + j - row0);
    for (int64_t i = 0; i < hidden_rows; ++i) st[j * kStrip + i] = kNegInf;
  }
}

// One online-softmax step for the strip's 16 rows: new max, p = exp(s - max) in place, l and m
// updated, and the rescale factor of each row's old O returned in alpha[0..15].
FX_TARGET_AVX2 void softmax_step(float* st, int64_t nk, float* m, float* l, float* alpha) {
  const __m256 neg_inf = _mm256_set1_ps(kNegInf), zero = _mm256_setzero_ps();
  const __m256 m_old0 = _mm256_load_ps(m), m_old1 = _mm256_load_ps(m + 8);
  __m256 mx0 = m_old0, mx1 = m_old1;
  for (int64_t j = 0; j < nk; ++j) {
    mx0 = _mm256_max_ps(mx0, _mm256_load_ps(st + j * kStrip));
    mx1 = _mm256_max_ps(mx1, _mm256_load_ps(st + j * kStrip + 8));
  }
  // Rows whose logits are all -inf so far measure from 0, so exp gives 0 rather than exp(-inf + inf).
  const __m256 ref0 = _mm256_blendv_ps(mx0, zero, _mm256_cmp_ps(mx0, neg_inf, _CMP_EQ_OQ));
  const __m256 ref1 = _mm256_blendv_ps(mx1, zero, _mm256_cmp_ps(mx1, neg_inf, _CMP_EQ_OQ));
  const __m256 a0 = avx2::exp(_mm256_sub_ps(m_old0, ref0));
  const __m256 a1 = avx2::exp(_mm256_sub_ps(m_old1, ref1));
  __m256 sum0 = zero, sum1 = zero;
  for (int64_t j = 0; j < nk; ++j) {
    const __m256 p0 = avx2::exp(_mm256_sub_ps(_mm256_load_ps(st + j * kStrip), ref0));
    const __m256 p1 = avx2::exp(_mm256_sub_ps(_mm256_load_ps(st + j * kStrip + 8), ref1));
    _mm256_store_ps(st + j * kStrip, p0);
    _mm256_store_ps(st + j * kStrip + 8, p1);
    sum0 = _mm256_add_ps(sum0, p0);
    sum1 = _mm256_add_ps(sum1, p1);
  }
  _mm256_store_ps(l, _mm256_fmadd_ps(_mm256_load_ps(l), a0, sum0));
  _mm256_store_ps(l + 8, _mm256_fmadd_ps(_mm256_load_ps(l + 8), a1, sum1));
  _mm256_store_ps(m, mx0);
  _mm256_store_ps(m + 8, mx1);
  _mm256_store_ps(alpha, a0);
  _mm256_store_ps(alpha + 8, a1);
}

// Start of a 64-byte aligned region of `count` floats inside `scratch` (vectors stay within cache lines).
float* aligned_scratch(std::vector<float>& scratch, int64_t count) {
  scratch.resize(size_t(count + 16));
  const uintptr_t at = reinterpret_cast<uintptr_t>(scratch.data());
  return scratch.data() + ((64 - at % 64) % 64) / sizeof(float);
}

}  // namespace

FX_TARGET_AVX2 void task(const AttentionShape& s, const AttentionOperand& q, const AttentionOperand& k,
                         const AttentionOperand& v, const AttentionOutput& out, int64_t b, int64_t h, int64_t q0,
                         int64_t nq, int64_t bk, std::vector<float>& scratch) {
  const int64_t d = s.head_dim;
  const int64_t strips = (nq + kStrip - 1) / kStrip;
  const int64_t rows = strips * kStrip;  // padded: spare rows compute harmless values and are never written
  float* qt = aligned_scratch(scratch, rows * d * 2 + rows * 3 + bk * kStrip);  // [strip][d][16], q·scale
  float* o = qt + rows * d;                                                       // [rows][d]
  float* m = o + rows * d;
  float* l = m + rows;
  float* alpha = l + rows;
  float* st = alpha + rows;  // [bk][16]; every offset above is a multiple of 16 floats
  std::fill(qt, qt + rows * d, 0.0f);
  std::fill(o, o + rows * d, 0.0f);
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, 0.0f);
  for (int64_t i = 0; i < nq; ++i) {
    const float* src = q.data + b * q.batch_stride + (q0 + i) * q.row_stride + h * q.head_stride;
    float* dst = qt + (i / kStrip) * d * kStrip + i % kStrip;
    for (int64_t c = 0; c < d; ++c) dst[c * kStrip] = src[c] * s.scale;
  }
  const float* kb = k.data + b * k.batch_stride + h * k.head_stride;
  const float* vb = v.data + b * v.batch_stride + h * v.head_stride;
  for (int64_t kv0 = 0; kv0 < s.seq_kv; kv0 += bk) {
    if (s.causal && kv0 > q0 + nq - 1) break;  // every later key is above the diagonal of every row here
    const int64_t nk = std::min(bk, s.seq_kv - kv0);
    const float* k0 = kb + kv0 * k.row_stride;
    const float* v0 = vb + kv0 * v.row_stride;
    for (int64_t si = 0; si < strips; ++si) {
      const int64_t r0 = si * kStrip;
      const int64_t valid = std::min(kStrip, nq - r0);
      // Causal: a strip whose last real row lies before this block sees none of it (skipping it is the
      // same as adding exp(-inf) = 0 terms).
      if (s.causal && kv0 > q0 + r0 + valid - 1) continue;
      scores_strip(k0, k.row_stride, qt + si * d * kStrip, d, nk, st);
      if (s.bias) add_bias(s, h, q0 + r0, valid, kv0, nk, st);
      if (s.causal && kv0 + nk - 1 > q0 + r0) mask_causal(q0 + r0, kv0, nk, st);
      softmax_step(st, nk, m + r0, l + r0, alpha + r0);
      // Once the max has settled most blocks leave it unchanged (alpha exactly 1): skip those rows.
      for (int64_t i = 0; i < kStrip; ++i) {
        const float ai = alpha[r0 + i];
        if (ai == 1.0f) continue;
        float* orow = o + (r0 + i) * d;
        const __m256 av = _mm256_set1_ps(ai);
        for (int64_t c = 0; c < d; c += 8) _mm256_store_ps(orow + c, _mm256_mul_ps(_mm256_load_ps(orow + c), av));
      }
      pv_strip(st, nk, v0, v.row_stride, o + r0 * d, d);
    }
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* dst = out.data + b * out.batch_stride + (q0 + i) * out.row_stride + h * out.head_stride;
    const __m256 inv = _mm256_set1_ps(l[i] > 0.0f ? 1.0f / l[i] : 0.0f);
    const float* orow = o + i * d;
    for (int64_t c = 0; c < d; c += 8) _mm256_storeu_ps(dst + c, _mm256_mul_ps(_mm256_load_ps(orow + c), inv));
  }
}

FX_TARGET_AVX2 void exp(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, avx2::exp(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i mask = avx2::tail_mask(n - i);
    _mm256_maskstore_ps(y + i, mask, avx2::exp(_mm256_maskload_ps(x + i, mask)));
  }
}

}  // namespace fx::cpu::attention_avx2

#endif  // defined(__x86_64__)
