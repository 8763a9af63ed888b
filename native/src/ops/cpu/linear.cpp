// CPU linear layers: y = act(x · Wᵀ + bias) for f32 / bf16 / e4m3fn weights (see linear.h).
//
// Kernel idea (all paths): an outer-product register-blocked GEMM. W is pre-packed into panels of 32
// output channels laid out k-major, so one k step of a panel is 32 contiguous weights = two 16-wide
// vectors (AVX-512) that are multiplied by MR broadcast x values and accumulated into MR×32 outputs
// held in registers for a whole block of k. Weights are decoded to f32 in registers right after the
// load (bf16: one shift or mask; e4m3: sign-extend to 16 bits, shift, mask and convert as f16), so each
// decoded vector is used MR times and the decode cost hides behind the FMAs.
//
// Blocking: x is packed once per call (per super-block of rows) into [tile][k][MR] so that the MR
// broadcasts of one k step sit in one cache line. Work is split into tasks of (MC rows × up to 8
// panels); inside a task, for each block of KC k values, the KC×32 weight micro-panel (32 KiB, L1)
// is reused by every MR-row tile of the MC rows, and the MC×KC x block stays in L2. y itself holds
// the partial sums between k blocks; the epilogue (e4m3 scale, bias, activation) runs on the
// registers of the last k block.
#include "ops/cpu/linear.h"
#include "ops/cpu/linear_internal.h"

// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsic headers as "maybe
// uninitialized" once they are inlined here (a false positive of the compiler, not of this code).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/cancel.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "fluxnative.h"
#include "ops/cpu/avx512_math.h"

namespace fx::cpu {

void PackedWeights::FreeDeleter::operator()(void* p) const { std::free(p); }

namespace {

using namespace linear_detail;

template <typename T>
T* aligned_array(size_t count) {
  const size_t bytes = std::max<size_t>(64, (count * sizeof(T) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (!p) fail(FX_ERR_OUT_OF_MEMORY, "linear: out of memory");
  return static_cast<T*>(p);
}

struct AlignedBuffer {
  void* p = nullptr;
  ~AlignedBuffer() { std::free(p); }
};


// ================================ AVX-512 ================================
namespace avx512 {

constexpr int kMR = 12;  // 12×2 accumulators + 2 weight vectors + broadcasts fit the 32 zmm registers
// Packed x comes from L2/L3 (only the weights are L1-resident), 48 bytes a k step: prefetch it ~16
// steps (~200 cycles) ahead, one line per step, which is more than the stream needs.
constexpr int kXAhead = 16 * kMR;

FX_AVX512 FX_INLINE __m512 activate(__m512 v, Activation act) {
  if (act == Activation::None) return v;
  const __m512 t = act == Activation::Silu
                       ? v
                       : _mm512_mul_ps(v, _mm512_fmadd_ps(_mm512_mul_ps(v, v), _mm512_set1_ps(kGeluC3),
                                                          _mm512_set1_ps(kGeluC1)));
  return fx::cpu::avx512::sigmoid_times(v, t);  // v / (1 + e^-t): SiLU for t = v, GELU-tanh for t = 2u
}

template <int MR>
FX_AVX512 FX_INLINE void load_acc(const Tile& t, __m512 (&acc)[MR][2]) {
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (t.load_c) {
      acc[r][0] = _mm512_loadu_ps(t.c + r * t.ldc);
      acc[r][1] = _mm512_loadu_ps(t.c + r * t.ldc + 16);
    } else {
      acc[r][0] = _mm512_setzero_ps();
      acc[r][1] = _mm512_setzero_ps();
    }
  }
}

template <int MR>
FX_AVX512 FX_INLINE void store_acc(const Tile& t, __m512 (&acc)[MR][2]) {
  if (t.finish) {
    if (t.scale) {
      const __m512 s0 = _mm512_loadu_ps(t.scale), s1 = _mm512_loadu_ps(t.scale + 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) acc[r][0] = _mm512_mul_ps(acc[r][0], s0), acc[r][1] = _mm512_mul_ps(acc[r][1], s1);
    }
    if (t.bias) {
      const __m512 b0 = _mm512_loadu_ps(t.bias), b1 = _mm512_loadu_ps(t.bias + 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) acc[r][0] = _mm512_add_ps(acc[r][0], b0), acc[r][1] = _mm512_add_ps(acc[r][1], b1);
    }
    if (t.act != Activation::None) {
      for (int r = 0; r < MR; ++r) acc[r][0] = activate(acc[r][0], t.act), acc[r][1] = activate(acc[r][1], t.act);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(t.c + r * t.ldc, acc[r][0]);
    _mm512_storeu_ps(t.c + r * t.ldc + 16, acc[r][1]);
  }
}

struct F32 {
  template <int MR>
  FX_AVX512 static void run(const Tile& t) {
    __m512 acc[MR][2];
    load_acc<MR>(t, acc);
    const float* w = reinterpret_cast<const float*>(t.w);
    const float* x = static_cast<const float*>(t.xp);
    for (int64_t k = 0; k < t.kc; ++k, w += kPanel, x += kMR) {
      _mm_prefetch(reinterpret_cast<const char*>(x + kXAhead), _MM_HINT_T0);
      const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 b = _mm512_set1_ps(x[r]);
        acc[r][0] = _mm512_fmadd_ps(w0, b, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(w1, b, acc[r][1]);
      }
    }
    store_acc<MR>(t, acc);
  }
};

// bf16 pairs [k/2][32][2]: the even-k weight is the low half of each 32-bit lane (shift it up), the
// odd-k weight the high half (mask the low half off); either is then an exact f32.
struct Bf16 {
  template <int MR>
  FX_AVX512 static void run(const Tile& t) {
    __m512 acc[MR][2];
    load_acc<MR>(t, acc);
    const uint8_t* w = t.w;
    const float* x = static_cast<const float*>(t.xp);
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (int64_t k = 0; k < t.kc; k += 2, w += 4 * kPanel, x += 2 * kMR) {
      _mm_prefetch(reinterpret_cast<const char*>(x + kXAhead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(x + kXAhead + 16), _MM_HINT_T0);
      const __m512i v0 = _mm512_load_si512(w), v1 = _mm512_load_si512(w + 64);
      const __m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16));
      const __m512 e1 = _mm512_castsi512_ps(_mm512_slli_epi32(v1, 16));
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 b = _mm512_set1_ps(x[r]);
        acc[r][0] = _mm512_fmadd_ps(e0, b, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(e1, b, acc[r][1]);
      }
      const __m512 o0 = _mm512_castsi512_ps(_mm512_and_si512(v0, high));
      const __m512 o1 = _mm512_castsi512_ps(_mm512_and_si512(v1, high));
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 b = _mm512_set1_ps(x[kMR + r]);
        acc[r][0] = _mm512_fmadd_ps(o0, b, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(o1, b, acc[r][1]);
      }
    }
    store_acc<MR>(t, acc);
  }
};

// vdpbf16ps: each 32-bit lane of W holds the (k, k+1) pair, and so does the broadcast x pair, so one
// instruction does two k steps for 16 outputs. x was rounded to bf16 when it was packed.
struct Bf16Dot {
  template <int MR>
  FX_AVX512 static void run(const Tile& t) {
    __m512 acc[MR][2];
    load_acc<MR>(t, acc);
    const uint8_t* w = t.w;
    const uint32_t* x = static_cast<const uint32_t*>(t.xp);
    for (int64_t k = 0; k < t.kc; k += 2, w += 4 * kPanel, x += kMR) {
      _mm_prefetch(reinterpret_cast<const char*>(x + kXAhead), _MM_HINT_T0);
      const __m512bh v0 = (__m512bh)_mm512_load_si512(w), v1 = (__m512bh)_mm512_load_si512(w + 64);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[r]));
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], v0, b);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], v1, b);
      }
    }
    store_acc<MR>(t, acc);
  }
};

// e4m3fn s.eeee.mmm → f16 s.0eeee.mmm0000000 is the same number times 2^-8, subnormals included
// (both formats' subnormals line up), so vcvtph2ps decodes it exactly; the 2^8 is in the row scale.
FX_AVX512 FX_INLINE __m512i e4m3_to_f16x32(const uint8_t* p) {
  const __m512i words = _mm512_cvtepi8_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_and_si512(_mm512_slli_epi16(words, 7), _mm512_set1_epi16(static_cast<short>(0xBFFF)));
}

struct F8 {
  template <int MR>
  FX_AVX512 static void run(const Tile& t) {
    __m512 acc[MR][2];
    load_acc<MR>(t, acc);
    const uint8_t* w = t.w;
    const float* x = static_cast<const float*>(t.xp);
    for (int64_t k = 0; k < t.kc; ++k, w += kPanel, x += kMR) {
      _mm_prefetch(reinterpret_cast<const char*>(x + kXAhead), _MM_HINT_T0);
      const __m512i h = e4m3_to_f16x32(w);
      const __m512 w0 = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
      const __m512 w1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 b = _mm512_set1_ps(x[r]);
        acc[r][0] = _mm512_fmadd_ps(w0, b, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(w1, b, acc[r][1]);
      }
    }
    store_acc<MR>(t, acc);
  }
};

// Packs rows of x as bf16 pairs [kpad/2][kMR] (u32 = bf16(x[2p]) | bf16(x[2p+1]) << 16), rounding with
// vcvtneps2bf16 (nearest-even, like fx::f32_to_bf16 except that f32 subnormals become zero).
FX_AVX512 void pack_x_bf16_row(const float* src, int64_t k, int64_t kpad, uint16_t* scratch, uint32_t* dst) {
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(scratch + i), (__m256i)h);
  }
  if (i < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - i)) - 1);
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(scratch + i), (__m256i)h);  // zeros past k
  }
  if (kpad > k) scratch[k] = 0;
  for (int64_t p = 0; p < kpad / 2; ++p)
    dst[p * kMR] = static_cast<uint32_t>(scratch[2 * p]) | (static_cast<uint32_t>(scratch[2 * p + 1]) << 16);
}

}  // namespace avx512

// ================================ AVX2 ================================
namespace avx2 {

using namespace linear_detail::avx2_common;


struct F32 {
  template <int MR>
  FX_AVX2 static void run(const Tile& t) {
    for (int h = 0; h < 2; ++h) {
      __m256 acc[MR][2];
      load_acc<MR>(t, h, acc);
      const float* w = reinterpret_cast<const float*>(t.w) + h * 16;
      const float* x = static_cast<const float*>(t.xp);
      for (int64_t k = 0; k < t.kc; ++k, w += kPanel, x += kMR) {
        const __m256 w0 = _mm256_load_ps(w), w1 = _mm256_load_ps(w + 8);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m256 b = _mm256_broadcast_ss(x + r);
          acc[r][0] = _mm256_fmadd_ps(w0, b, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(w1, b, acc[r][1]);
        }
      }
      store_acc<MR>(t, h, acc);
    }
  }
};

struct Bf16 {
  template <int MR>
  FX_AVX2 static void run(const Tile& t) {
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (int h = 0; h < 2; ++h) {
      __m256 acc[MR][2];
      load_acc<MR>(t, h, acc);
      const uint8_t* w = t.w + h * 64;
      const float* x = static_cast<const float*>(t.xp);
      for (int64_t k = 0; k < t.kc; k += 2, w += 4 * kPanel, x += 2 * kMR) {
        const __m256i v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
        const __m256i v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32));
        const __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
        const __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m256 b = _mm256_broadcast_ss(x + r);
          acc[r][0] = _mm256_fmadd_ps(e0, b, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(e1, b, acc[r][1]);
        }
        const __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, high));
        const __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, high));
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m256 b = _mm256_broadcast_ss(x + kMR + r);
          acc[r][0] = _mm256_fmadd_ps(o0, b, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(o1, b, acc[r][1]);
        }
      }
      store_acc<MR>(t, h, acc);
    }
  }
};

struct F8 {
  template <int MR>
  FX_AVX2 static void run(const Tile& t) {
    const __m256i keep = _mm256_set1_epi16(static_cast<short>(0xBFFF));
    for (int h = 0; h < 2; ++h) {
      __m256 acc[MR][2];
      load_acc<MR>(t, h, acc);
      const uint8_t* w = t.w + h * 16;
      const float* x = static_cast<const float*>(t.xp);
      for (int64_t k = 0; k < t.kc; ++k, w += kPanel, x += kMR) {
        // Same e4m3 → f16 trick as the AVX-512 path (see avx512::e4m3_to_f16x32).
        const __m256i words = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(w)));
        const __m256i f16 = _mm256_and_si256(_mm256_slli_epi16(words, 7), keep);
        const __m256 w0 = _mm256_cvtph_ps(_mm256_castsi256_si128(f16));
        const __m256 w1 = _mm256_cvtph_ps(_mm256_extracti128_si256(f16, 1));
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m256 b = _mm256_broadcast_ss(x + r);
          acc[r][0] = _mm256_fmadd_ps(w0, b, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(w1, b, acc[r][1]);
        }
      }
      store_acc<MR>(t, h, acc);
    }
  }
};

}  // namespace avx2

// ================================ portable ================================
namespace portable {

constexpr int kMR = 4;

// Decodes one k step of a panel (32 weights) to f32. e4m3 comes out divided by 256, like the SIMD paths,
// so the same scale256 applies.
template <DType D>
FX_INLINE void decode(const uint8_t* panel_k, int64_t k, float* out) {
  if constexpr (D == DType::F32) {
    std::memcpy(out, panel_k, kPanel * sizeof(float));
  } else if constexpr (D == DType::BF16) {
    const uint16_t* pairs = reinterpret_cast<const uint16_t*>(panel_k);
    for (int j = 0; j < kPanel; ++j) out[j] = bf16_to_f32(pairs[2 * j + (k & 1)]);
  } else {
    for (int j = 0; j < kPanel; ++j) out[j] = e4m3fn_to_f32(panel_k[j]) * (1.0f / 256);
  }
}

template <DType D>
struct Kernel {
  template <int MR>
  static void run(const Tile& t) {
    float acc[MR][kPanel];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < kPanel; ++j) acc[r][j] = t.load_c ? t.c[r * t.ldc + j] : 0.0f;
    const float* x = static_cast<const float*>(t.xp);
    const size_t step = D == DType::F32 ? 4 * kPanel : D == DType::BF16 ? 0 : kPanel;
    const uint8_t* w = t.w;
    for (int64_t k = 0; k < t.kc; ++k, x += kMR) {
      float wk[kPanel];
      const uint8_t* pk = D == DType::BF16 ? t.w + (k / 2) * 4 * kPanel : w;
      decode<D>(pk, k, wk);
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < kPanel; ++j) acc[r][j] += x[r] * wk[j];
      w += step;
    }
    for (int r = 0; r < MR; ++r) {
      for (int j = 0; j < kPanel; ++j) {
        float v = acc[r][j];
        if (t.finish) {
          if (t.scale) v *= t.scale[j];
          if (t.bias) v += t.bias[j];
          v = act_scalar(v, t.act);
        }
        t.c[r * t.ldc + j] = v;
      }
    }
  }
};

}  // namespace portable


struct PathImpl {
  int mr = 0;
  bool bf16_x = false;  // x packed as bf16 pairs
  KernelTable kernels{};
};

PathImpl path_impl(LinearPath path, DType dtype, const std::optional<BlockType>& block = std::nullopt) {
  PathImpl p;
  if (block) {
    p.mr = path == LinearPath::Avx2 ? avx2::kMR : portable::kMR;
    p.kernels = block_kernels(path == LinearPath::Avx2, *block);
    return p;
  }
  switch (path) {
    case LinearPath::Portable:
      p.mr = portable::kMR;
      p.kernels = dtype == DType::F32    ? make_table<portable::Kernel<DType::F32>, portable::kMR>()
                  : dtype == DType::BF16 ? make_table<portable::Kernel<DType::BF16>, portable::kMR>()
                                         : make_table<portable::Kernel<DType::F8_E4M3FN>, portable::kMR>();
      break;
    case LinearPath::Avx2:
      p.mr = avx2::kMR;
      p.kernels = dtype == DType::F32    ? make_table<avx2::F32, avx2::kMR>()
                  : dtype == DType::BF16 ? make_table<avx2::Bf16, avx2::kMR>()
                                         : make_table<avx2::F8, avx2::kMR>();
      break;
    case LinearPath::Avx512:
      p.mr = avx512::kMR;
      p.kernels = dtype == DType::F32    ? make_table<avx512::F32, avx512::kMR>()
                  : dtype == DType::BF16 ? make_table<avx512::Bf16, avx512::kMR>()
                                         : make_table<avx512::F8, avx512::kMR>();
      break;
    case LinearPath::Avx512Bf16:
      p.mr = avx512::kMR;
      p.bf16_x = true;
      p.kernels = make_table<avx512::Bf16Dot, avx512::kMR>();
      break;
    case LinearPath::Auto:
      break;
  }
  return p;
}

// k values per block: the weight micro-panel (KC × 32) is 32 KiB whatever the dtype, in the 48 KiB L1 of
// Zen 5 with room for the x stream (longer blocks: fewer reloads of the C tile and fewer kernel calls).
int64_t k_block(DType dtype) { return dtype == DType::F32 ? 256 : dtype == DType::BF16 ? 512 : 1024; }

// Byte offset of k0 inside a panel (k0 even for bf16).
size_t linear_detail_panel_offset(DType dtype, int64_t k0) {
  return static_cast<size_t>(k0) * kPanel * (dtype == DType::F32 ? 4 : dtype == DType::BF16 ? 2 : 1);
}

void check_args(const float* x, int64_t m, int64_t ldx, int64_t n, int64_t k, float* y, int64_t ldy) {
  if (m < 0) fail(FX_ERR_INVALID_ARGUMENT, "linear: m < 0");
  if (m > 0 && (!x || !y)) fail(FX_ERR_INVALID_ARGUMENT, "linear: null x or y");
  if (ldx < k || ldy < n) fail(FX_ERR_INVALID_ARGUMENT, "linear: ldx < k or ldy < n");
}

void run_linear(const PathImpl& impl, const float* x, int64_t m, int64_t ldx, const PackedWeights& pw,
                const float* bias, Activation act, float* y, int64_t ldy, ThreadPool& pool) {
  const DType dtype = pw.dtype();
  const std::optional<BlockType> block = pw.block();
  const int64_t n = pw.n(), k = pw.k(), panels = pw.panels();
  check_args(x, m, ldx, n, k, y, ldy);
  if (m == 0) return;
  const int64_t kpad = dtype == DType::BF16 ? (k + 1) / 2 * 2 : k;
  // Block types: k blocks of whole 32-k groups (k is whole blocks, so whole groups).
  const int64_t kc_max = block ? 1024 : k_block(dtype);
  auto panel_offset = [&](DType d, int64_t k0) {
    return block ? static_cast<size_t>(k0 / 32) * block_group_bytes(*block) : linear_detail_panel_offset(d, k0);
  };
  const int mr = impl.mr;

  std::vector<float> bias_padded;
  if (bias) {
    bias_padded.assign(static_cast<size_t>(panels * kPanel), 0.0f);
    std::copy(bias, bias + n, bias_padded.begin());
  }
  const float* scale = dtype == DType::F8_E4M3FN && !block ? pw.scale256() : nullptr;

  // Rows per super-block: the packed x of one super-block is kept under ~32 MiB.
  const int64_t x_elem = impl.bf16_x ? 2 : 4;  // bytes of packed x per row and k
  const int64_t rows_fit = std::max<int64_t>(mr, (int64_t(32) << 20) / (kpad * x_elem) / mr * mr);
  const int64_t super_rows = std::min(m, std::max<int64_t>(rows_fit, 120));
  const int64_t max_tiles = (super_rows + mr - 1) / mr;
  const size_t tile_words = static_cast<size_t>(impl.bf16_x ? kpad / 2 : kpad) * mr;  // 4-byte words per tile
  AlignedBuffer xbuf;
  xbuf.p = aligned_array<uint32_t>(tile_words * static_cast<size_t>(max_tiles));
  uint32_t* const xp = static_cast<uint32_t*>(xbuf.p);

  for (int64_t s0 = 0; s0 < m; s0 += super_rows) {
    const int64_t rows = std::min(super_rows, m - s0);
    const int64_t tiles = (rows + mr - 1) / mr;

    // Pack x: tile i holds rows s0 + i·mr ... as [kpad][mr] (f32) or [kpad/2][mr] (bf16 pairs).
    pool.parallel_for(tiles, [&](int64_t b, int64_t e) {
      std::vector<uint16_t> scratch(impl.bf16_x ? static_cast<size_t>(kpad) + 16 : 0);  // + one vector of tail
      for (int64_t i = b; i < e; ++i) {
        uint32_t* dst = xp + static_cast<size_t>(i) * tile_words;
        const int64_t tr = std::min<int64_t>(mr, rows - i * mr);
        for (int64_t r = 0; r < tr; ++r) {
          const float* src = x + (s0 + i * mr + r) * ldx;
          if (impl.bf16_x) {
            avx512::pack_x_bf16_row(src, k, kpad, scratch.data(), dst + r);
          } else {
            float* d = reinterpret_cast<float*>(dst) + r;
            for (int64_t kk = 0; kk < k; ++kk) d[kk * mr] = src[kk];
            if (kpad > k) d[k * mr] = 0.0f;
          }
        }
      }
    });

    // Tasks: (tiles_per_block·mr rows) × (up to 8 panels), enough of them for every thread to get ~4.
    // A row block is as tall as L2 allows (its KC-wide slice of packed x under ~512 KiB): every weight
    // micro-panel comes from memory once per row block, and its first pass is the one that waits for it.
    const int64_t max_tiles_per_block = std::max<int64_t>(1, (int64_t(512) << 10) / (kc_max * x_elem) / mr);
    const int64_t m_blocks = (tiles + max_tiles_per_block - 1) / max_tiles_per_block;
    const int64_t tiles_per_block = (tiles + m_blocks - 1) / m_blocks;
    const int64_t want_n_blocks = std::max<int64_t>(1, (4 * pool.size() + m_blocks - 1) / m_blocks);
    const int64_t panels_per_block = std::clamp<int64_t>((panels + want_n_blocks - 1) / want_n_blocks, 1, 8);
    const int64_t n_blocks = (panels + panels_per_block - 1) / panels_per_block;

    // n-major task order: parallel_for hands each thread a contiguous range, which is then a whole
    // band of columns over all row blocks, so the threads get equal work even when the row blocks differ.
    pool.parallel_for(n_blocks * m_blocks, [&](int64_t tb, int64_t te) {
      alignas(64) float edge[kMaxMR * kPanel];
      for (int64_t task = tb; task < te; ++task) {
        if (cancel_requested()) return;  // the output is undefined; the model reports the cancel (core/cancel.h)
        const int64_t nb = task / m_blocks, mb = task % m_blocks;
        const int64_t tile0 = mb * tiles_per_block, tile1 = std::min(tiles, tile0 + tiles_per_block);
        const int64_t p0 = nb * panels_per_block, p1 = std::min(panels, p0 + panels_per_block);
        for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
          const int64_t kc = std::min(kc_max, kpad - k0);
          const bool first = k0 == 0, last = k0 + kc >= kpad;
          for (int64_t p = p0; p < p1; ++p) {
            const int64_t col0 = p * kPanel, cols = std::min<int64_t>(kPanel, n - col0);
            // The next weight micro-panel comes from memory: fetch it into L2 a slice per tile while
            // this one computes, instead of stalling the first tile that reads it.
            const uint8_t* next_w = p + 1 < p1 ? pw.panel(p + 1) + panel_offset(dtype, k0)
                                    : k0 + kc_max < kpad ? pw.panel(p0) + panel_offset(dtype, k0 + kc_max)
                                                         : nullptr;
            const int64_t next_lines = static_cast<int64_t>(panel_offset(dtype, kc) / 64);
            const int64_t lines_per_tile = (next_lines + (tile1 - tile0) - 1) / (tile1 - tile0);
            for (int64_t i = tile0; i < tile1; ++i) {
              if (next_w) {
                const int64_t l0 = (i - tile0) * lines_per_tile, l1 = std::min(next_lines, l0 + lines_per_tile);
                for (int64_t l = l0; l < l1; ++l) _mm_prefetch(reinterpret_cast<const char*>(next_w + l * 64), _MM_HINT_T1);
              }
              const int64_t row0 = s0 + i * mr, tr = std::min<int64_t>(mr, m - row0);
              Tile t;
              t.xp = xp + static_cast<size_t>(i) * tile_words +
                     static_cast<size_t>(impl.bf16_x ? k0 / 2 : k0) * mr;
              t.w = pw.panel(p) + panel_offset(dtype, k0);
              t.kc = kc;
              t.load_c = !first;
              t.finish = last;
              t.scale = scale ? scale + col0 : nullptr;
              t.bias = bias ? bias_padded.data() + col0 : nullptr;
              t.act = act;
              float* out = y + row0 * ldy + col0;
              if (cols == kPanel) {
                t.c = out;
                t.ldc = ldy;
                impl.kernels[tr](t);
              } else {
                // The last panel has columns past n: run on a full-width scratch tile and copy the
                // valid columns, so nothing beyond column n of y is touched.
                if (!first)
                  for (int64_t r = 0; r < tr; ++r) std::memcpy(edge + r * kPanel, out + r * ldy, cols * sizeof(float));
                t.c = edge;
                t.ldc = kPanel;
                impl.kernels[tr](t);
                for (int64_t r = 0; r < tr; ++r) std::memcpy(out + r * ldy, edge + r * kPanel, cols * sizeof(float));
              }
            }
          }
        }
      }
    });
  }
}

double act_reference(double v, Activation act) {
  switch (act) {
    case Activation::None:
      return v;
    case Activation::GeluTanh:
      return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    case Activation::Silu:
      return v / (1.0 + std::exp(-v));
  }
  return v;
}

}  // namespace

// ================================ public ================================

PackedWeights pack_weights(const Weights& w) {
  if (w.block) return pack_block_weights(w);
  if (w.n < 1 || w.k < 1 || !w.data) fail(FX_ERR_INVALID_ARGUMENT, "pack_weights: empty or null weights");
  if (w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F8_E4M3FN)
    fail(FX_ERR_INVALID_ARGUMENT, "pack_weights: dtype must be F32, BF16 or F8_E4M3FN");
  if (w.dtype == DType::F8_E4M3FN && !w.row_scale) fail(FX_ERR_INVALID_ARGUMENT, "pack_weights: e4m3 needs row_scale");
  PackedWeights pw;
  pw.dtype_ = w.dtype;
  pw.n_ = w.n;
  pw.k_ = w.k;
  const int64_t n = w.n, k = w.k, panels = pw.panels();
  const int64_t kpad = w.dtype == DType::BF16 ? (k + 1) / 2 * 2 : k;
  pw.panel_bytes_ = linear_detail_panel_offset(w.dtype, kpad);
  pw.data_.reset(aligned_array<uint8_t>(pw.panel_bytes_ * static_cast<size_t>(panels)));
  if (w.dtype == DType::F8_E4M3FN) {
    pw.scale_.reset(aligned_array<float>(static_cast<size_t>(panels * kPanel)));
    for (int64_t i = 0; i < panels * kPanel; ++i) pw.scale_[i] = i < n ? w.row_scale[i] * 256.0f : 0.0f;
  }
  ThreadPool::global().parallel_for(panels, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      uint8_t* dst = pw.data_.get() + static_cast<size_t>(p) * pw.panel_bytes_;
      std::memset(dst, 0, pw.panel_bytes_);  // padding rows (n) and the odd-k pad are zeros
      for (int64_t j = 0; j < kPanel && p * kPanel + j < n; ++j) {
        const int64_t row = p * kPanel + j;
        if (w.dtype == DType::F32) {
          const float* src = static_cast<const float*>(w.data) + row * k;
          float* d = reinterpret_cast<float*>(dst);
          for (int64_t kk = 0; kk < k; ++kk) d[kk * kPanel + j] = src[kk];
        } else if (w.dtype == DType::BF16) {
          const uint16_t* src = static_cast<const uint16_t*>(w.data) + row * k;
          uint16_t* d = reinterpret_cast<uint16_t*>(dst);
          for (int64_t kk = 0; kk < k; ++kk) d[(kk / 2) * 2 * kPanel + 2 * j + (kk & 1)] = src[kk];
        } else {
          const uint8_t* src = static_cast<const uint8_t*>(w.data) + row * k;
          for (int64_t kk = 0; kk < k; ++kk) {
            if ((src[kk] & 0x7F) == 0x7F)
              fail(FX_ERR_INVALID_ARGUMENT, "pack_weights: e4m3 weight row " + std::to_string(row) + " holds NaN");
            dst[kk * kPanel + j] = src[kk];
          }
        }
      }
    }
  });
  return pw;
}

size_t PackedWeights::packed_bytes(DType dtype, int64_t n, int64_t k) {
  if (n < 1 || k < 1 || (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F8_E4M3FN))
    fail(FX_ERR_INVALID_ARGUMENT, "packed_bytes: dtype must be F32, BF16 or F8_E4M3FN and n, k >= 1");
  const int64_t kpad = dtype == DType::BF16 ? (k + 1) / 2 * 2 : k;
  size_t bytes = 0;
  if (__builtin_mul_overflow(linear_detail_panel_offset(dtype, kpad), static_cast<size_t>((n + kPanel - 1) / kPanel), &bytes))
    fail(FX_ERR_INVALID_ARGUMENT, "packed_bytes: [" + std::to_string(n) + ", " + std::to_string(k) + "] is too large");
  return bytes;
}

PackedWeights PackedWeights::borrow(DType dtype, int64_t n, int64_t k, const void* panels, size_t bytes,
                                    const float* scale256, size_t scale_count, std::shared_ptr<const void> keep_alive) {
  const std::string what = "packed weights [" + std::to_string(n) + ", " + std::to_string(k) + "] " + dtype_name(dtype);
  if (n < 1 || k < 1 || (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F8_E4M3FN))
    fail(FX_ERR_FORMAT, what + ": dtype must be F32, BF16 or F8_E4M3FN and both sizes at least 1");
  size_t needed = 0;
  try {
    needed = packed_bytes(dtype, n, k);
  } catch (const Error&) {
    fail(FX_ERR_FORMAT, what + ": too large for this machine's sizes");
  }
  if (panels == nullptr || bytes != needed)
    fail(FX_ERR_FORMAT, what + ": " + std::to_string(bytes) + " bytes given, the layout needs " + std::to_string(needed));
  if (reinterpret_cast<uintptr_t>(panels) % 64 != 0) fail(FX_ERR_FORMAT, what + ": panels are not 64-byte aligned");
  PackedWeights pw;
  pw.dtype_ = dtype;
  pw.n_ = n;
  pw.k_ = k;
  const int64_t kpad = dtype == DType::BF16 ? (k + 1) / 2 * 2 : k;
  pw.panel_bytes_ = linear_detail_panel_offset(dtype, kpad);
  pw.borrowed_data_ = static_cast<const uint8_t*>(panels);
  if (dtype == DType::F8_E4M3FN) {
    if (scale256 == nullptr || scale_count != static_cast<size_t>(pw.panels() * kPanel))
      fail(FX_ERR_FORMAT, what + ": needs " + std::to_string(pw.panels() * kPanel) + " channel scales, got " +
                              std::to_string(scale256 == nullptr ? 0 : scale_count));
    if (reinterpret_cast<uintptr_t>(scale256) % 64 != 0) fail(FX_ERR_FORMAT, what + ": scales are not 64-byte aligned");
    pw.borrowed_scale_ = scale256;
  } else if (scale256 != nullptr) {
    fail(FX_ERR_FORMAT, what + ": channel scales belong to e4m3 weights only");
  }
  pw.keep_alive_ = std::move(keep_alive);
  return pw;
}

const char* linear_path_name(LinearPath path) {
  switch (path) {
    case LinearPath::Auto: return "auto";
    case LinearPath::Portable: return "portable";
    case LinearPath::Avx2: return "avx2";
    case LinearPath::Avx512: return "avx512";
    case LinearPath::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

bool linear_path_supported(LinearPath path, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F8_E4M3FN) return false;
  const uint32_t f = cpu_features();
  const bool avx2 = (f & FX_CPU_AVX2) && (f & FX_CPU_FMA) && (f & FX_CPU_F16C);
  const bool avx512 = avx2 && (f & FX_CPU_AVX512F) && (f & FX_CPU_AVX512BW) && (f & FX_CPU_AVX512VL);
  switch (path) {
    case LinearPath::Auto:
    case LinearPath::Portable:
      return true;
    case LinearPath::Avx2:
      return avx2;
    case LinearPath::Avx512:
      return avx512 && __builtin_cpu_supports("avx512dq");
    case LinearPath::Avx512Bf16:
      return avx512 && __builtin_cpu_supports("avx512dq") && (f & FX_CPU_AVX512_BF16) && dtype == DType::BF16;
  }
  return false;
}

LinearPath linear_auto_path(DType dtype, Precision precision) {
  if (precision == Precision::Bf16Activations && linear_path_supported(LinearPath::Avx512Bf16, dtype))
    return LinearPath::Avx512Bf16;
  if (linear_path_supported(LinearPath::Avx512, dtype)) return LinearPath::Avx512;
  if (linear_path_supported(LinearPath::Avx2, dtype)) return LinearPath::Avx2;
  return LinearPath::Portable;
}

// Block types have AVX2 and portable kernels; an AVX-512 CPU runs the AVX2 ones.
LinearPath block_auto_path() {
  return linear_path_supported(LinearPath::Avx2, DType::F32) ? LinearPath::Avx2 : LinearPath::Portable;
}

void linear_with_path(LinearPath path, const float* x, int64_t m, int64_t ldx, const PackedWeights& w,
                      const float* bias, Activation act, float* y, int64_t ldy, ThreadPool& pool) {
  if (w.block()) {
    if (path == LinearPath::Auto) path = block_auto_path();
    if (path != LinearPath::Portable && (path != LinearPath::Avx2 || !linear_path_supported(path, DType::F32)))
      fail(FX_ERR_UNSUPPORTED, std::string("linear: path ") + linear_path_name(path) + " has no " +
                                   block_layout(*w.block()).name + " kernel here");
    run_linear(path_impl(path, w.dtype(), w.block()), x, m, ldx, w, bias, act, y, ldy, pool);
    return;
  }
  if (path == LinearPath::Auto) path = linear_auto_path(w.dtype(), Precision::Exact);
  if (!linear_path_supported(path, w.dtype()))
    fail(FX_ERR_UNSUPPORTED, std::string("linear: path ") + linear_path_name(path) + " not supported here");
  run_linear(path_impl(path, w.dtype()), x, m, ldx, w, bias, act, y, ldy, pool);
}

void linear(const float* x, int64_t m, int64_t ldx, const PackedWeights& w, const float* bias, Activation act,
            float* y, int64_t ldy, Precision precision, ThreadPool& pool) {
  if (w.block()) {
    const LinearPath path = block_auto_path();
    run_linear(path_impl(path, w.dtype(), w.block()), x, m, ldx, w, bias, act, y, ldy, pool);
    return;
  }
  const LinearPath path = linear_auto_path(w.dtype(), precision);
  run_linear(path_impl(path, w.dtype()), x, m, ldx, w, bias, act, y, ldy, pool);
}

void linear(const float* x, int64_t m, int64_t ldx, const Weights& w, const float* bias, Activation act, float* y,
            int64_t ldy, ThreadPool& pool) {
  const PackedWeights packed = pack_weights(w);
  linear(x, m, ldx, packed, bias, act, y, ldy, Precision::Exact, pool);
}

void linear_reference(const float* x, int64_t m, int64_t ldx, const Weights& w, const float* bias, Activation act,
                      float* y, int64_t ldy) {
  // Block types: each row decoded by the plain reference decoder (core/block_quant.h).
  std::vector<float> decoded;
  if (w.block) {
    const BlockLayout& layout = block_layout(*w.block);
    decoded.resize(static_cast<size_t>(w.n * w.k));
    for (int64_t j = 0; j < w.n; ++j)
      dequantize_blocks(*w.block, static_cast<const uint8_t*>(w.data) + j * (w.k / layout.elements) * layout.bytes, w.k,
                        decoded.data() + j * w.k);
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < w.n; ++j) {
      double sum = 0.0;
      for (int64_t kk = 0; kk < w.k; ++kk) {
        double wv;
        const int64_t idx = j * w.k + kk;
        if (w.block) {
          wv = decoded[static_cast<size_t>(idx)];
        } else if (w.dtype == DType::F32) {
          wv = static_cast<const float*>(w.data)[idx];
        } else if (w.dtype == DType::BF16) {
          wv = bf16_to_f32(static_cast<const uint16_t*>(w.data)[idx]);
        } else {
          wv = static_cast<double>(e4m3fn_to_f32(static_cast<const uint8_t*>(w.data)[idx])) * w.row_scale[j];
        }
        sum += static_cast<double>(x[i * ldx + kk]) * wv;
      }
      if (bias) sum += bias[j];
      y[i * ldy + j] = static_cast<float>(act_reference(sum, act));
    }
  }
}

void quantize_e4m3_per_row(const float* w, int64_t n, int64_t k, uint8_t* out, float* row_scale) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = w + i * k;
    float amax = 0.0f;
    for (int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(row[j]));
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    row_scale[i] = scale;
    for (int64_t j = 0; j < k; ++j) out[i * k + j] = f32_to_e4m3fn(row[j] / scale, Overflow::Saturate);
  }
}

}  // namespace fx::cpu
