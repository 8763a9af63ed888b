// CPU linear layers on GGUF Q8_0 and Q4_K weights, kept quantised (see linear.h).
//
// Kernel idea: the same register-blocked outer-product GEMM as the f32 / bf16 / fp8 kernels (linear.cpp),
// with the weight panel regrouped per 32 k values: for each group, the 32 output channels' codes k-major
// (Q8_0: int8 [32 k][32 channels]; Q4_K: [32 k][16 bytes], byte j holding channel j in its low nibble and
// channel j + 16 in its high one) followed by the group's per-channel f32 step (Q8_0: d; Q4_K: d·scale)
// and, for Q4_K, offset (dmin·min). A k step widens 16 codes to f32 in registers and applies the step
// (and offset) once, then feeds MR rows of FMAs: the decode is paid once per MR rows, as for fp8. The
// steps are the products the reference decoder forms, so the weights the FMAs see are the reference's
// values bit for bit.
//
// Memory per weight: Q8_0 9 bits (8 + a 32-bit step per 32), Q4_K 6 bits (4 + two 32-bit values per 32);
// the file holds 8.5 and 4.5. The 6-bit sub-block scales are expanded at load so the inner loop needs no
// scale arithmetic.
#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/linear_internal.h"

namespace fx::cpu {

namespace linear_detail {

namespace {

constexpr int kGroup = 32;  // k values per group
constexpr size_t kQ8GroupBytes = kGroup * kPanel + kPanel * 4;           // codes + steps: 1152
constexpr size_t kQ4KGroupBytes = kGroup * kPanel / 2 + 2 * kPanel * 4;  // nibbles + steps + offsets: 768

float f16_at(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

// ---- AVX2 ----
namespace avx2q {

using namespace avx2_common;

struct Q8 {
  template <int MR>
  FX_AVX2 static void run(const Tile& t) {
    for (int h = 0; h < 2; ++h) {
      __m256 acc[MR][2];
      load_acc<MR>(t, h, acc);
      const float* x = static_cast<const float*>(t.xp);
      for (int64_t g = 0; g < t.kc / kGroup; ++g) {
        const uint8_t* group = t.w + g * kQ8GroupBytes;
        const float* step = reinterpret_cast<const float*>(group + kGroup * kPanel) + h * 16;
        const __m256 s0 = _mm256_load_ps(step), s1 = _mm256_load_ps(step + 8);
        const uint8_t* q = group + h * 16;
        for (int kk = 0; kk < kGroup; ++kk, q += kPanel, x += kMR) {
          const __m128i codes = _mm_load_si128(reinterpret_cast<const __m128i*>(q));
          const __m256 w0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes)), s0);
          const __m256 w1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(codes, 8))), s1);
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) {
            const __m256 b = _mm256_broadcast_ss(x + r);
            acc[r][0] = _mm256_fmadd_ps(w0, b, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w1, b, acc[r][1]);
          }
        }
      }
      store_acc<MR>(t, h, acc);
    }
  }
};

struct Q4K {
  template <int MR>
  FX_AVX2 static void run(const Tile& t) {
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (int h = 0; h < 2; ++h) {
      __m256 acc[MR][2];
      load_acc<MR>(t, h, acc);
      const float* x = static_cast<const float*>(t.xp);
      for (int64_t g = 0; g < t.kc / kGroup; ++g) {
        const uint8_t* group = t.w + g * kQ4KGroupBytes;
        const float* step = reinterpret_cast<const float*>(group + kGroup * kPanel / 2) + h * 16;
        const float* offset = step + kPanel;
        const __m256 s0 = _mm256_load_ps(step), s1 = _mm256_load_ps(step + 8);
        const __m256 o0 = _mm256_load_ps(offset), o1 = _mm256_load_ps(offset + 8);
        const uint8_t* q = group;
        for (int kk = 0; kk < kGroup; ++kk, q += kPanel / 2, x += kMR) {
          const __m128i raw = _mm_load_si128(reinterpret_cast<const __m128i*>(q));
          const __m128i codes = _mm_and_si128(h == 0 ? raw : _mm_srli_epi16(raw, 4), low4);
          // q·step − offset with the reference decoder's two roundings (not one fmsub), so the weights are
          // its values bit for bit even where the subtraction cancels.
          const __m256 w0 = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), s0), o0);
          const __m256 w1 =
              _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8))), s1), o1);
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) {
            const __m256 b = _mm256_broadcast_ss(x + r);
            acc[r][0] = _mm256_fmadd_ps(w0, b, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w1, b, acc[r][1]);
          }
        }
      }
      store_acc<MR>(t, h, acc);
    }
  }
};

}  // namespace avx2q

// ---- portable: one k step of 32 channels decoded to f32, then MR rows of multiply-adds ----
namespace portableq {

constexpr int kMR = 4;  // as linear.cpp's portable path (x is packed for it)

template <BlockType B>
struct Kernel {
  template <int MR>
  static void run(const Tile& t) {
    float acc[MR][kPanel];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < kPanel; ++j) acc[r][j] = t.load_c ? t.c[r * t.ldc + j] : 0.0f;
    const float* x = static_cast<const float*>(t.xp);
    const size_t group_bytes = B == BlockType::Q8_0 ? kQ8GroupBytes : kQ4KGroupBytes;
    for (int64_t g = 0; g < t.kc / kGroup; ++g) {
      const uint8_t* group = t.w + g * group_bytes;
      for (int kk = 0; kk < kGroup; ++kk, x += kMR) {
        float wk[kPanel];
        if constexpr (B == BlockType::Q8_0) {
          const float* step = reinterpret_cast<const float*>(group + kGroup * kPanel);
          for (int j = 0; j < kPanel; ++j) wk[j] = static_cast<float>(static_cast<int8_t>(group[kk * kPanel + j])) * step[j];
        } else {
          const float* step = reinterpret_cast<const float*>(group + kGroup * kPanel / 2);
          const uint8_t* q = group + kk * kPanel / 2;
          for (int j = 0; j < kPanel; ++j) {
            const int code = j < 16 ? q[j] & 0xF : q[j - 16] >> 4;
            wk[j] = static_cast<float>(code) * step[j] - step[kPanel + j];
          }
        }
        for (int r = 0; r < MR; ++r)
          for (int j = 0; j < kPanel; ++j) acc[r][j] += x[r] * wk[j];
      }
    }
    for (int r = 0; r < MR; ++r) {
      for (int j = 0; j < kPanel; ++j) {
        float v = acc[r][j];
        if (t.finish) {
          if (t.bias) v += t.bias[j];
          v = act_scalar(v, t.act);
        }
        t.c[r * t.ldc + j] = v;
      }
    }
  }
};

}  // namespace portableq

}  // namespace

size_t block_group_bytes(BlockType type) { return type == BlockType::Q8_0 ? kQ8GroupBytes : kQ4KGroupBytes; }

KernelTable block_kernels(bool avx2, BlockType type) {
  if (avx2) return type == BlockType::Q8_0 ? make_table<avx2q::Q8, avx2q::kMR>() : make_table<avx2q::Q4K, avx2q::kMR>();
  return type == BlockType::Q8_0 ? make_table<portableq::Kernel<BlockType::Q8_0>, portableq::kMR>()
                                 : make_table<portableq::Kernel<BlockType::Q4_K>, portableq::kMR>();
}

}  // namespace linear_detail

bool block_gemm_supported(BlockType type) { return type == BlockType::Q8_0 || type == BlockType::Q4_K; }

PackedWeights pack_block_weights(const Weights& w) {
  using namespace linear_detail;
  const BlockType type = *w.block;
  const BlockLayout& layout = block_layout(type);
  if (!block_gemm_supported(type))
    fail(FX_ERR_UNSUPPORTED, std::string("pack_weights: no quantised GEMM for ") + layout.name + " (Q8_0 and Q4_K have one)");
  if (w.n < 1 || w.k < 1 || !w.data) fail(FX_ERR_INVALID_ARGUMENT, "pack_weights: empty or null weights");
  if (w.k % layout.elements != 0)
    fail(FX_ERR_INVALID_ARGUMENT, "pack_weights: rows of " + std::to_string(w.k) + " values are not whole " + layout.name +
                                      " blocks");
  PackedWeights pw;
  pw.dtype_ = DType::F32;
  pw.block_ = type;
  pw.n_ = w.n;
  pw.k_ = w.k;
  const int64_t groups = w.k / kGroup, panels = pw.panels();
  const size_t group_bytes = block_group_bytes(type);
  const size_t row_bytes = static_cast<size_t>(w.k / layout.elements * layout.bytes);
  pw.panel_bytes_ = group_bytes * static_cast<size_t>(groups);
  const size_t total = pw.panel_bytes_ * static_cast<size_t>(panels);
  void* p = std::aligned_alloc(64, std::max<size_t>(64, (total + 63) / 64 * 64));
  if (!p) fail(FX_ERR_OUT_OF_MEMORY, "pack_weights: out of memory");
  pw.data_.reset(static_cast<uint8_t*>(p));
  ThreadPool::global().parallel_for(panels, [&](int64_t b, int64_t e) {
    for (int64_t panel = b; panel < e; ++panel) {
      uint8_t* dst = pw.data_.get() + static_cast<size_t>(panel) * pw.panel_bytes_;
      std::memset(dst, 0, pw.panel_bytes_);  // padding channels: codes, steps and offsets 0, so weights 0
      for (int j = 0; j < kPanel && panel * kPanel + j < w.n; ++j) {
        const uint8_t* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(panel * kPanel + j) * row_bytes;
        for (int64_t g = 0; g < groups; ++g) {
          uint8_t* group = dst + static_cast<size_t>(g) * group_bytes;
          if (type == BlockType::Q8_0) {
            const uint8_t* block = row + g * layout.bytes;
            reinterpret_cast<float*>(group + kGroup * kPanel)[j] = f16_at(block);
            for (int kk = 0; kk < kGroup; ++kk) group[kk * kPanel + j] = block[2 + kk];
          } else {
            // Q4_K: super-block g / 8, sub-block s = g % 8: values 32s .. 32s + 31, in chunk s / 2 of 64, the
            // low nibbles of its 32 bytes for even s and the high nibbles for odd s.
            const uint8_t* block = row + (g / 8) * layout.bytes;
            const int s = static_cast<int>(g % 8);
            int scale, min;
            k_quant_scale_min(block + 4, s, &scale, &min);
            float* step = reinterpret_cast<float*>(group + kGroup * kPanel / 2);
            step[j] = f16_at(block) * static_cast<float>(scale);
            step[kPanel + j] = f16_at(block + 2) * static_cast<float>(min);
            const uint8_t* qs = block + 16 + 32 * (s / 2);
            for (int kk = 0; kk < kGroup; ++kk) {
              const int code = s % 2 == 0 ? qs[kk] & 0xF : qs[kk] >> 4;
              group[kk * kPanel / 2 + j % 16] |= static_cast<uint8_t>(j < 16 ? code : code << 4);
            }
          }
        }
      }
    }
  });
  return pw;
}

}  // namespace fx::cpu
