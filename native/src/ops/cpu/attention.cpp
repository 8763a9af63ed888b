// Flash-style attention on the CPU. Each task owns one (batch, head, tile of query rows) and streams
// over blocks of keys/values, keeping per query row a running max m, a running sum l of exp(s - m)
// and an unnormalised output accumulator O; when a new block raises m, the old l and O are rescaled
// by exp(m_old - m_new). Only a tile×block slice of scores ever exists, so memory is O(block²).
//
// The AVX-512 path computes the scores transposed, S^T[key][query], with 32 query rows across two
// vectors: q is copied once per task into [d][32] strips (pre-multiplied by the scale), and keys are
// broadcast straight from the strided source. That makes the row max and row sum of the softmax
// plain vertical max/add over the key rows, with no horizontal reductions and no transposed copy of
// K per block. P·V then broadcasts P^T entries against contiguous rows of V.
//
// The AVX2 + FMA path (the same design at 8 lanes, 16-row strips) is in attention_avx2.cpp; this file
// has the portable and AVX-512 paths, the dispatch between the three, and the reference.
#include "ops/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/cancel.h"
#include "core/cpu_features.h"
#include "ops/cpu/attention_avx2.h"
#include "ops/cpu/exp_edges.h"
#include "fluxnative.h"

#if defined(__x86_64__)
#include "ops/cpu/avx512_math.h"
#define FX_HAVE_X86_PATHS 1
#else
#define FX_HAVE_X86_PATHS 0
#endif

namespace fx::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kStrip = 32;  // query rows per strip of the AVX-512 path (two vectors)

enum class Path { Portable, Avx2, Avx512 };

void check_shape(const AttentionShape& s) {
  if (s.batch < 0 || s.heads < 0 || s.seq_q < 0 || s.seq_kv < 0 || s.head_dim <= 0)
    throw std::invalid_argument("attention: bad shape");
}

// The path for this head_dim on this machine under the ISA cap in force: the widest one that handles it.
Path choose_path(int64_t head_dim) {
  if (!FX_HAVE_X86_PATHS || head_dim <= 0) return Path::Portable;
  if (head_dim % 16 == 0 && cpu_has_avx512()) return Path::Avx512;
  if (attention_avx2::handles(head_dim) && cpu_has_avx2_fma()) return Path::Avx2;
  return Path::Portable;
}

// How the work is cut. Tiles are sized so that a tile's q copy and O accumulator (2·tq·D floats)
// plus one key/value block stay in L2, and blocks so that the K and V rows of a block (2·bk·D) stay
// there while every strip of the tile reuses them.
struct Plan {
  int64_t tiles = 1;  // query tiles per (batch, head)
  int64_t bk = 128;   // keys per block
  int64_t max_tq = 0;
};

// `strip`: the query rows a path computes together (tiles are cut in whole strips where they can be).
Plan make_plan(const AttentionShape& s, int threads, int64_t strip) {
  Plan plan;
  const int64_t d = s.head_dim;
  const int64_t tq_cap = d <= 128 ? 128 : std::max<int64_t>(strip, (16384 / d) / strip * strip);
  plan.bk = d <= 128 ? 128 : std::max<int64_t>(16, 16384 / d);
  const int64_t bh = s.batch * s.heads;
  int64_t tiles = std::max<int64_t>(1, (s.seq_q + tq_cap - 1) / tq_cap);
  // The pool hands out equal contiguous ranges of tasks, so a task count that the thread count does
  // not divide leaves threads idle at the end; add tiles (while they stay >= one strip) to fix that.
  const int64_t max_tiles = std::max<int64_t>(1, (s.seq_q + strip - 1) / strip);
  if (threads > 1 && bh * tiles < 16 * threads) {
    int64_t t = tiles;
    while (t <= max_tiles && (bh * t) % threads != 0) ++t;
    if (t <= max_tiles) tiles = t;
  }
  plan.tiles = tiles;
  plan.max_tq = (s.seq_q + tiles - 1) / tiles;
  return plan;
}

void tile_bounds(int64_t seq_q, int64_t tiles, int64_t t, int64_t* q0, int64_t* nq) {
  const int64_t begin = t * seq_q / tiles, end = (t + 1) * seq_q / tiles;
  *q0 = begin;
  *nq = end - begin;
}

// ---- portable path: the same streaming algorithm, one query row at a time ----

void portable_task(const AttentionShape& s, const AttentionOperand& q, const AttentionOperand& k,
                   const AttentionOperand& v, const AttentionOutput& out, int64_t b, int64_t h, int64_t q0,
                   int64_t nq, int64_t bk, std::vector<float>& scratch) {
  const int64_t d = s.head_dim;
  scratch.assign(size_t(nq * d * 2 + nq * 2 + bk), 0.0f);
  float* qs = scratch.data();
  float* o = qs + nq * d;
  float* m = o + nq * d;
  float* l = m + nq;
  float* p = l + nq;
  for (int64_t i = 0; i < nq; ++i) {
    const float* src = q.data + b * q.batch_stride + (q0 + i) * q.row_stride + h * q.head_stride;
    for (int64_t c = 0; c < d; ++c) qs[i * d + c] = src[c] * s.scale;
    m[i] = kNegInf;
  }
  const float* kb = k.data + b * k.batch_stride + h * k.head_stride;
  const float* vb = v.data + b * v.batch_stride + h * v.head_stride;
  for (int64_t kv0 = 0; kv0 < s.seq_kv; kv0 += bk) {
    if (s.causal && kv0 > q0 + nq - 1) break;  // every later key is above the diagonal of every row here
    const int64_t nk = std::min(bk, s.seq_kv - kv0);
    for (int64_t i = 0; i < nq; ++i) {
      const float* qi = qs + i * d;
      const float* bias_row = s.bias ? s.bias + (h * s.seq_q + q0 + i) * s.seq_kv + kv0 : nullptr;
      float mx = m[i];
      for (int64_t j = 0; j < nk; ++j) {
        if (s.causal && kv0 + j > q0 + i) {
          p[j] = kNegInf;
          continue;
        }
        const float* kj = kb + (kv0 + j) * k.row_stride;
        float dot = 0.0f;
        for (int64_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
        if (bias_row) dot += bias_row[j];
        p[j] = dot;
        mx = std::max(mx, dot);
      }
      // With every logit so far -inf, measure from 0 so that exp gives 0 instead of exp(-inf + inf).
      const float ref = mx == kNegInf ? 0.0f : mx;
      const float alpha = exp_flushed(m[i] - ref);
      float sum = 0.0f;
      for (int64_t j = 0; j < nk; ++j) {
        p[j] = exp_flushed(p[j] - ref);
        sum += p[j];
      }
      float* oi = o + i * d;
      if (alpha != 1.0f)
        for (int64_t c = 0; c < d; ++c) oi[c] *= alpha;
      for (int64_t j = 0; j < nk; ++j) {
        const float* vj = vb + (kv0 + j) * v.row_stride;
        const float pj = p[j];
        for (int64_t c = 0; c < d; ++c) oi[c] += pj * vj[c];
      }
      l[i] = l[i] * alpha + sum;
      m[i] = mx;
    }
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* dst = out.data + b * out.batch_stride + (q0 + i) * out.row_stride + h * out.head_stride;
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    for (int64_t c = 0; c < d; ++c) dst[c] = o[i * d + c] * inv;
  }
}

// ---- AVX-512 path (head_dim a multiple of 16) ----
#if FX_HAVE_X86_PATHS

// st[j][0..31] = Σ_d k[j][d] · qt[d][0..31] for RK consecutive keys. The k entries are broadcast from
// memory; 2·RK accumulators stay in registers across the whole d loop.
template <int RK>
FX_TARGET_AVX512 inline void scores_block(const float* k0, int64_t k_stride, const float* qt, int64_t d,
                                          float* st) {
  __m512 a0[RK], a1[RK];
  for (int r = 0; r < RK; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    const __m512 q0 = _mm512_loadu_ps(qt + c * kStrip);
    const __m512 q1 = _mm512_loadu_ps(qt + c * kStrip + 16);
    for (int r = 0; r < RK; ++r) {
      const __m512 kk = _mm512_set1_ps(k0[r * k_stride + c]);
      a0[r] = _mm512_fmadd_ps(kk, q0, a0[r]);
      a1[r] = _mm512_fmadd_ps(kk, q1, a1[r]);
    }
  }
  for (int r = 0; r < RK; ++r) {
    _mm512_storeu_ps(st + r * kStrip, a0[r]);
    _mm512_storeu_ps(st + r * kStrip + 16, a1[r]);
  }
}

FX_TARGET_AVX512 void scores_strip(const float* k0, int64_t k_stride, const float* qt, int64_t d, int64_t nk,
                                   float* st) {
  constexpr int kRk = 8;
  int64_t j = 0;
  for (; j + kRk <= nk; j += kRk) scores_block<kRk>(k0 + j * k_stride, k_stride, qt, d, st + j * kStrip);
  const float* kt = k0 + j * k_stride;
  float* stt = st + j * kStrip;
  switch (nk - j) {
    case 7: scores_block<7>(kt, k_stride, qt, d, stt); break;
    case 6: scores_block<6>(kt, k_stride, qt, d, stt); break;
    case 5: scores_block<5>(kt, k_stride, qt, d, stt); break;
    case 4: scores_block<4>(kt, k_stride, qt, d, stt); break;
    case 3: scores_block<3>(kt, k_stride, qt, d, stt); break;
    case 2: scores_block<2>(kt, k_stride, qt, d, stt); break;
    case 1: scores_block<1>(kt, k_stride, qt, d, stt); break;
    default: break;
  }
}

// o[r][c·16 ..] += Σ_j p[j][r] · v[j][c·16 ..] for 4 query rows and C vectors of head dims.
template <int C>
FX_TARGET_AVX512 inline void pv_block(const float* p, int64_t nk, const float* v0, int64_t v_stride, float* o,
                                      int64_t ld_o) {
  constexpr int kRows = 4;
  __m512 acc[kRows][C];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_loadu_ps(o + r * ld_o + c * 16);
  for (int64_t j = 0; j < nk; ++j) {
    __m512 vv[C];
    for (int c = 0; c < C; ++c) vv[c] = _mm512_loadu_ps(v0 + j * v_stride + c * 16);
    for (int r = 0; r < kRows; ++r) {
      const __m512 pr = _mm512_set1_ps(p[j * kStrip + r]);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(pr, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(o + r * ld_o + c * 16, acc[r][c]);
}

FX_TARGET_AVX512 void pv_strip(const float* p, int64_t nk, const float* v0, int64_t v_stride, float* o, int64_t d) {
  for (int64_t r = 0; r < kStrip; r += 4) {
    const float* pr = p + r;
    float* orow = o + r * d;
    int64_t c = 0;
    for (; c + 64 <= d; c += 64) pv_block<4>(pr, nk, v0 + c, v_stride, orow + c, d);
    switch ((d - c) / 16) {
      case 3: pv_block<3>(pr, nk, v0 + c, v_stride, orow + c, d); break;
      case 2: pv_block<2>(pr, nk, v0 + c, v_stride, orow + c, d); break;
      case 1: pv_block<1>(pr, nk, v0 + c, v_stride, orow + c, d); break;
      default: break;
    }
  }
}

FX_TARGET_AVX512 void avx512_task(const AttentionShape& s, const AttentionOperand& q, const AttentionOperand& k,
                                  const AttentionOperand& v, const AttentionOutput& out, int64_t b, int64_t h,
                                  int64_t q0, int64_t nq, int64_t bk, std::vector<float>& scratch) {
  const int64_t d = s.head_dim;
  const int64_t strips = (nq + kStrip - 1) / kStrip;
  const int64_t rows = strips * kStrip;  // padded: spare rows compute harmless values and are never written
  scratch.resize(size_t(rows * d * 2 + rows * 3 + bk * kStrip));
  float* qt = scratch.data();      // [strip][d][32], q·scale
  float* o = qt + rows * d;        // [rows][d]
  float* m = o + rows * d;
  float* l = m + rows;
  float* alpha = l + rows;
  float* st = alpha + rows;        // [bk][32]
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
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  for (int64_t kv0 = 0; kv0 < s.seq_kv; kv0 += bk) {
    if (s.causal && kv0 > q0 + nq - 1) break;  // every later key is above the diagonal of every row here
    const int64_t nk = std::min(bk, s.seq_kv - kv0);
    const float* k0 = kb + kv0 * k.row_stride;
    const float* v0 = vb + kv0 * v.row_stride;
    for (int64_t sI = 0; sI < strips; ++sI) {
      const int64_t r0 = sI * kStrip;
      // Causal: a strip whose last real row lies before this block sees none of it (skipping it is the
      // same as adding exp(-inf) = 0 terms).
      if (s.causal && kv0 > q0 + r0 + std::min(kStrip, nq - r0) - 1) continue;
      scores_strip(k0, k.row_stride, qt + sI * d * kStrip, d, nk, st);
      if (s.bias) {
        const int64_t valid = std::min(kStrip, nq - r0);
        for (int64_t i = 0; i < valid; ++i) {
          const float* br = s.bias + (h * s.seq_q + q0 + r0 + i) * s.seq_kv + kv0;
          for (int64_t j = 0; j < nk; ++j) st[j * kStrip + i] += br[j];
        }
      }
      if (s.causal && kv0 + nk - 1 > q0 + r0) {
        // Key kv0 + j is hidden from row q0 + r0 + i when kv0 + j > q0 + r0 + i: from the strip's first
        // kv0 + j - q0 - r0 rows (padding rows are masked alike).
        for (int64_t j = 0; j < nk; ++j) {
          const int64_t hidden_rows = std::min(kStrip, kv0 + j - q0 - r0);
          for (int64_t i = 0; i < hidden_rows; ++i) st[j * kStrip + i] = kNegInf;
        }
      }
      // Online softmax for the 32 rows at once: the row max is a vertical max over key rows.
      const __m512 m_old0 = _mm512_loadu_ps(m + r0), m_old1 = _mm512_loadu_ps(m + r0 + 16);
      __m512 mx0 = m_old0, mx1 = m_old1;
      for (int64_t j = 0; j < nk; ++j) {
        mx0 = _mm512_max_ps(mx0, _mm512_loadu_ps(st + j * kStrip));
        mx1 = _mm512_max_ps(mx1, _mm512_loadu_ps(st + j * kStrip + 16));
      }
      // Rows whose logits are all -inf so far measure from 0, so exp gives 0 rather than NaN.
      const __m512 ref0 = _mm512_mask_mov_ps(mx0, _mm512_cmp_ps_mask(mx0, neg_inf, _CMP_EQ_OQ), _mm512_setzero_ps());
      const __m512 ref1 = _mm512_mask_mov_ps(mx1, _mm512_cmp_ps_mask(mx1, neg_inf, _CMP_EQ_OQ), _mm512_setzero_ps());
      const __m512 a0 = avx512::exp(_mm512_sub_ps(m_old0, ref0));
      const __m512 a1 = avx512::exp(_mm512_sub_ps(m_old1, ref1));
      __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
      for (int64_t j = 0; j < nk; ++j) {
        const __m512 p0 = avx512::exp(_mm512_sub_ps(_mm512_loadu_ps(st + j * kStrip), ref0));
        const __m512 p1 = avx512::exp(_mm512_sub_ps(_mm512_loadu_ps(st + j * kStrip + 16), ref1));
        _mm512_storeu_ps(st + j * kStrip, p0);
        _mm512_storeu_ps(st + j * kStrip + 16, p1);
        sum0 = _mm512_add_ps(sum0, p0);
        sum1 = _mm512_add_ps(sum1, p1);
      }
      _mm512_storeu_ps(l + r0, _mm512_fmadd_ps(_mm512_loadu_ps(l + r0), a0, sum0));
      _mm512_storeu_ps(l + r0 + 16, _mm512_fmadd_ps(_mm512_loadu_ps(l + r0 + 16), a1, sum1));
      _mm512_storeu_ps(m + r0, mx0);
      _mm512_storeu_ps(m + r0 + 16, mx1);
      _mm512_storeu_ps(alpha + r0, a0);
      _mm512_storeu_ps(alpha + r0 + 16, a1);
      // Once the max has settled most blocks leave it unchanged (alpha exactly 1): skip those rows.
      for (int64_t i = 0; i < kStrip; ++i) {
        const float ai = alpha[r0 + i];
        if (ai == 1.0f) continue;
        float* orow = o + (r0 + i) * d;
        const __m512 av = _mm512_set1_ps(ai);
        for (int64_t c = 0; c < d; c += 16) _mm512_storeu_ps(orow + c, _mm512_mul_ps(_mm512_loadu_ps(orow + c), av));
      }
      pv_strip(st, nk, v0, v.row_stride, o + r0 * d, d);
    }
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* dst = out.data + b * out.batch_stride + (q0 + i) * out.row_stride + h * out.head_stride;
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    const __m512 iv = _mm512_set1_ps(inv);
    const float* orow = o + i * d;
    for (int64_t c = 0; c < d; c += 16) _mm512_storeu_ps(dst + c, _mm512_mul_ps(_mm512_loadu_ps(orow + c), iv));
  }
}

FX_TARGET_AVX512 void exp_avx512(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, avx512::exp(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 mask = __mmask16((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, mask, avx512::exp(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}
#endif  // FX_HAVE_X86_PATHS

void run(const AttentionShape& s, const AttentionOperand& q, const AttentionOperand& k, const AttentionOperand& v,
         const AttentionOutput& out, ThreadPool& pool, Path path) {
  check_shape(s);
  if (s.batch == 0 || s.heads == 0 || s.seq_q == 0) return;
  const Plan plan = make_plan(s, pool.size(), path == Path::Avx2 ? attention_avx2::kStrip : kStrip);
  const int64_t tasks = s.batch * s.heads * plan.tiles;
  pool.parallel_for(tasks, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
    for (int64_t t = begin; t < end; ++t) {
      if (cancel_requested()) return;  // the output is undefined; the model reports the cancel (core/cancel.h)
      const int64_t tile = t % plan.tiles;
      const int64_t bh = t / plan.tiles;
      const int64_t b = bh / s.heads, h = bh % s.heads;
      int64_t q0, nq;
      tile_bounds(s.seq_q, plan.tiles, tile, &q0, &nq);
      if (nq == 0) continue;
#if FX_HAVE_X86_PATHS
      if (path == Path::Avx512) {
        avx512_task(s, q, k, v, out, b, h, q0, nq, plan.bk, scratch);
        continue;
      }
      if (path == Path::Avx2) {
        attention_avx2::task(s, q, k, v, out, b, h, q0, nq, plan.bk, scratch);
        continue;
      }
#endif
      portable_task(s, q, k, v, out, b, h, q0, nq, plan.bk, scratch);
    }
  });
}

}  // namespace

bool attention_uses_avx512(int64_t head_dim) { return choose_path(head_dim) == Path::Avx512; }

const char* attention_path_name(int64_t head_dim) {
  switch (choose_path(head_dim)) {
    case Path::Avx512: return "avx512";
    case Path::Avx2: return "avx2";
    case Path::Portable: return "portable";
  }
  return "?";
}

void attention(const AttentionShape& shape, const AttentionOperand& q, const AttentionOperand& k,
               const AttentionOperand& v, const AttentionOutput& out, ThreadPool& pool) {
  run(shape, q, k, v, out, pool, choose_path(shape.head_dim));
}

void attention_exp(const float* x, float* y, int64_t n) {
#if FX_HAVE_X86_PATHS
  if (cpu_has_avx512()) {
    exp_avx512(x, y, n);
    return;
  }
  if (cpu_has_avx2_fma()) {
    attention_avx2::exp(x, y, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = exp_flushed(x[i]);
}

void attention_reference(const AttentionShape& s, const AttentionOperand& q, const AttentionOperand& k,
                         const AttentionOperand& v, const AttentionOutput& out) {
  check_shape(s);
  const int64_t d = s.head_dim;
  std::vector<double> scores(static_cast<size_t>(s.seq_kv)), acc(static_cast<size_t>(d));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.seq_q; ++i) {
        const float* qi = q.data + b * q.batch_stride + i * q.row_stride + h * q.head_stride;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < s.seq_kv; ++j) {
          if (s.causal && j > i) {
            scores[j] = -std::numeric_limits<double>::infinity();
            continue;
          }
          const float* kj = k.data + b * k.batch_stride + j * k.row_stride + h * k.head_stride;
          double dot = 0.0;
          for (int64_t c = 0; c < d; ++c) dot += double(qi[c]) * double(kj[c]);
          dot *= double(s.scale);
          if (s.bias) dot += double(s.bias[(h * s.seq_q + i) * s.seq_kv + j]);
          scores[j] = dot;
          mx = std::max(mx, dot);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0.0;
        if (mx != -std::numeric_limits<double>::infinity()) {
          for (int64_t j = 0; j < s.seq_kv; ++j) {
            const double p = std::exp(scores[j] - mx);
            sum += p;
            const float* vj = v.data + b * v.batch_stride + j * v.row_stride + h * v.head_stride;
            for (int64_t c = 0; c < d; ++c) acc[c] += p * double(vj[c]);
          }
        }
        float* dst = out.data + b * out.batch_stride + i * out.row_stride + h * out.head_stride;
        for (int64_t c = 0; c < d; ++c) dst[c] = sum > 0.0 ? float(acc[c] / sum) : 0.0f;
      }
}

}  // namespace fx::cpu
