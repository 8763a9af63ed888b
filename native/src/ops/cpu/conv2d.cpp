// Convolution, GroupNorm and nearest ×2 upsampling for the autoencoder (see conv2d.h for the design).
#include "ops/cpu/conv2d.h"

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

#if defined(__x86_64__)
#include "ops/cpu/avx512_math.h"
#define FX_HAVE_AVX512_PATH 1
#else
#define FX_HAVE_AVX512_PATH 0
#endif

namespace fx::cpu {

void PackedConv::FreeDeleter::operator()(float* p) const { std::free(p); }

namespace {

constexpr int64_t kMR = PackedConv::kMR;


constexpr int64_t kTilePx = 32;       // output pixels per micro-tile (two 16-lane vectors)
constexpr int64_t kMaxKernel = 7;     // largest kernel side the tiles handle (the autoencoder uses 1 and 3)

bool supported(ConvPath path) {
  switch (path) {
    case ConvPath::Auto:
    case ConvPath::Portable: return true;
    case ConvPath::Avx2: return FX_HAVE_AVX512_PATH && cpu_has_avx2_fma();
    case ConvPath::Avx512: return FX_HAVE_AVX512_PATH && cpu_has_avx512();
  }
  return false;
}

// The best path the machine has under the ISA cap in force.
ConvPath active_path() {
  if (supported(ConvPath::Avx512)) return ConvPath::Avx512;
  if (supported(ConvPath::Avx2)) return ConvPath::Avx2;
  return ConvPath::Portable;
}

// GroupNorm and upsampling have an AVX-512 body and a portable one.
bool use_avx512() { return active_path() == ConvPath::Avx512; }

// GELU-tanh(v) = v·sigmoid(2z) with the constants of linear.cpp; SiLU(v) = v·sigmoid(v).
constexpr float kGeluC1 = 1.5957691216057308f;   // 2·sqrt(2/π)
constexpr float kGeluC3 = 0.07135481627159562f;  // 2·sqrt(2/π)·0.044715

inline float act_scalar(float v, Activation act) {
  if (act == Activation::None) return v;
  const float t = act == Activation::Silu ? v : v * (kGeluC1 + kGeluC3 * v * v);
  return v / (1.0f + std::exp(-t));
}

double act_double(double v, Activation act) {
  switch (act) {
    case Activation::None: return v;
    case Activation::Silu: return v / (1.0 + std::exp(-v));
    case Activation::GeluTanh: return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
  }
  return v;
}

// ================================ convolution ================================

// One micro-tile: up to kMR output channels × up to 32 consecutive output pixels of one output row,
// summed over the input channels [ci0, ci0 + nci).
struct Tile {
  const float* x = nullptr;   // the input image, channel 0
  int64_t plane = 0;          // H·W
  int64_t width = 0;          // W
  int64_t cin = 0;            // all input channels (the packed block's row count per kernel tap)
  int64_t ci0 = 0, nci = 0;
  int64_t iy0 = 0;            // input row of ky = 0: oy·stride - pad_top
  int64_t ky0 = 0, ky1 = 0;   // the ky whose input row exists
  int64_t ix0 = 0;            // input column of kx = 0 for the tile's first pixel: ox0·stride - pad_left
  int64_t kh = 0, kw = 0;
  const float* w = nullptr;   // packed block of the tile's output channels: [kh][kw][cin][kMR]
  float* y = nullptr;         // output at (co0, oy, ox0)
  int64_t ld = 0;             // output channel plane: Ho·Wo
  int64_t npx = 0;            // valid pixels, 1..32
  bool load_c = false;        // add onto y (later channel blocks, or accumulate)
  bool finish = false;        // last channel block: bias and activation
  const float* bias = nullptr;  // at co0, or nullptr
  Activation act = Activation::None;
};

void tile_portable(const Tile& t, int mr, int stride) {
  float acc[kMR][kTilePx];
  float v[kTilePx];
  const int64_t n = t.npx;
  for (int r = 0; r < mr; ++r)
    for (int64_t j = 0; j < n; ++j) acc[r][j] = t.load_c ? t.y[r * t.ld + j] : 0.0f;
  for (int64_t ky = t.ky0; ky < t.ky1; ++ky) {
    for (int64_t kx = 0; kx < t.kw; ++kx) {
      const float* wk = t.w + ((ky * t.kw + kx) * t.cin + t.ci0) * kMR;
      for (int64_t ci = 0; ci < t.nci; ++ci) {
        const float* xr = t.x + (t.ci0 + ci) * t.plane + (t.iy0 + ky) * t.width;
        for (int64_t j = 0; j < n; ++j) {
          const int64_t ix = t.ix0 + kx + j * stride;
          v[j] = ix >= 0 && ix < t.width ? xr[ix] : 0.0f;
        }
        const float* wr = wk + ci * kMR;
        for (int r = 0; r < mr; ++r) {
          const float wv = wr[r];
          for (int64_t j = 0; j < n; ++j) acc[r][j] += wv * v[j];
        }
      }
    }
  }
  for (int r = 0; r < mr; ++r) {
    const float b = t.finish && t.bias ? t.bias[r] : 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      float o = acc[r][j] + b;
      if (t.finish) o = act_scalar(o, t.act);
      t.y[r * t.ld + j] = o;
    }
  }
}

#if FX_HAVE_AVX512_PATH

// Bits [lo, hi) of a 64-bit mask (0 <= lo <= hi <= 64).
inline uint64_t bit_range(int64_t lo, int64_t hi) {
  if (hi <= lo) return 0;
  const uint64_t upto_hi = hi >= 64 ? ~0ull : ((1ull << hi) - 1);
  const uint64_t below_lo = lo >= 64 ? ~0ull : ((1ull << lo) - 1);
  return upto_hi & ~below_lo;
}

FX_TARGET_AVX512 inline __m512 activate(__m512 v, Activation act) {
  if (act == Activation::None) return v;
  const __m512 t = act == Activation::Silu
                       ? v
                       : _mm512_mul_ps(v, _mm512_fmadd_ps(_mm512_mul_ps(v, v), _mm512_set1_ps(kGeluC3),
                                                          _mm512_set1_ps(kGeluC1)));
  return avx512::sigmoid_times(v, t);
}

// MR output channels × NV vectors of 16 pixels; S = stride (1 or 2). For stride 2 each output vector
// comes from 32 consecutive inputs, of which the even ones are kept (one two-source permute).
template <int MR, int NV, int S>
FX_TARGET_AVX512 void tile_avx512(const Tile& t) {
  constexpr int kLoads = NV * S;  // 16-float loads per k step
  __m512 acc[MR][NV];
  __mmask16 store_mask[NV];
  for (int j = 0; j < NV; ++j) {
    const int64_t left = t.npx - 16 * j;
    store_mask[j] = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1u);
  }
  // Every loop over acc is fully unrolled: one indexed at run time would force acc out of registers.
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j)
      acc[r][j] = t.load_c ? _mm512_maskz_loadu_ps(store_mask[j], t.y + r * t.ld + 16 * j) : _mm512_setzero_ps();

  // Load masks per kx: element e of the loaded run (input column ix0 + kx + e) exists iff it is
  // inside [0, W); the rest read as zeros (the padding) and are never touched in memory.
  __mmask16 load_mask[kMaxKernel][kLoads];
  for (int64_t kx = 0; kx < t.kw; ++kx) {
    const int64_t base = t.ix0 + kx;
    const uint64_t bits = bit_range(std::max<int64_t>(0, -base), std::min<int64_t>(64, t.width - base));
    for (int l = 0; l < kLoads; ++l) load_mask[kx][l] = __mmask16(bits >> (16 * l));
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);

  // Taps outside, input channels inside: the inner loop is long, its masks are loop invariants, and
  // it walks the packed weights contiguously and the input planes at a constant stride.
  for (int64_t ky = t.ky0; ky < t.ky1; ++ky) {
    const float* xr = t.x + t.ci0 * t.plane + (t.iy0 + ky) * t.width + t.ix0;
    for (int64_t kx = 0; kx < t.kw; ++kx) {
      __mmask16 m[kLoads];
      for (int l = 0; l < kLoads; ++l) m[l] = load_mask[kx][l];
      const float* p = xr + kx;
      const float* wr = t.w + ((ky * t.kw + kx) * t.cin + t.ci0) * kMR;
      for (int64_t ci = 0; ci < t.nci; ++ci, p += t.plane, wr += kMR) {
        __m512 v[NV];
        if constexpr (S == 1) {
          for (int j = 0; j < NV; ++j) v[j] = _mm512_maskz_loadu_ps(m[j], p + 16 * j);
        } else {
          for (int j = 0; j < NV; ++j) {
            const __m512 lo = _mm512_maskz_loadu_ps(m[2 * j], p + 32 * j);
            const __m512 hi = _mm512_maskz_loadu_ps(m[2 * j + 1], p + 32 * j + 16);
            v[j] = _mm512_permutex2var_ps(lo, even, hi);
          }
        }
#pragma GCC unroll 12
        for (int r = 0; r < MR; ++r) {
          const __m512 b = _mm512_set1_ps(wr[r]);
#pragma GCC unroll 2
          for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(b, v[j], acc[r][j]);
        }
      }
    }
  }

  if (t.finish) {
    if (t.bias) {
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        const __m512 b = _mm512_set1_ps(t.bias[r]);
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_add_ps(acc[r][j], b);
      }
    }
    if (t.act != Activation::None) {
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) acc[r][j] = activate(acc[r][j], t.act);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) _mm512_mask_storeu_ps(t.y + r * t.ld + 16 * j, store_mask[j], acc[r][j]);
}

using TileFn = void (*)(const Tile&);

template <int NV, int S, int... MR>
constexpr std::array<TileFn, kMR + 1> make_table(std::integer_sequence<int, MR...>) {
  return {nullptr, &tile_avx512<MR + 1, NV, S>...};
}

template <int NV, int S>
const std::array<TileFn, kMR + 1>& table() {
  static constexpr std::array<TileFn, kMR + 1> t = make_table<NV, S>(std::make_integer_sequence<int, kMR>{});
  return t;
}

void tile_dispatch_avx512(const Tile& t, int mr, int stride) {
  const bool two = t.npx > 16;
  if (stride == 1)
    (two ? table<2, 1>() : table<1, 1>())[mr](t);
  else
    (two ? table<2, 2>() : table<1, 2>())[mr](t);
}

// ---- AVX2 + FMA: 8-lane vectors, so a tile is done in sub-tiles of up to 6 channels × 16 pixels
// (12 accumulators of the 16 ymm registers). Interior sub-tiles load without masks; the border ones
// use vmaskmovps, which reads nothing where the mask is off. ----

#define FX_TARGET_AVX2 __attribute__((target("avx2,fma")))

// Even elements of a (8 floats) and b (8 floats), in order.
FX_TARGET_AVX2 inline __m256 even_avx2(__m256 a, __m256 b) {
  const __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Rows [row0, row0 + MR) × pixels [px0, px0 + 16) of tile t; S = stride.
template <int MR, int S, bool Masked>
FX_TARGET_AVX2 void sub_tile_avx2(const Tile& t, int row0, int64_t px0) {
  const int64_t npx = std::min<int64_t>(16, t.npx - px0);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i store_mask[2];
  for (int j = 0; j < 2; ++j)
    store_mask[j] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(npx - 8 * j)), lane);
  float* y = t.y + row0 * t.ld + px0;
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < 2; ++j)
      acc[r][j] = t.load_c ? _mm256_maskload_ps(y + r * t.ld + 8 * j, store_mask[j]) : _mm256_setzero_ps();

  for (int64_t ky = t.ky0; ky < t.ky1; ++ky) {
    const float* xr = t.x + t.ci0 * t.plane + (t.iy0 + ky) * t.width + t.ix0 + px0 * S;
    for (int64_t kx = 0; kx < t.kw; ++kx) {
      // Element e of the loaded run is input column base + e; it exists iff 0 <= base + e < W.
      __m256i m[2 * S];
      if constexpr (Masked) {
        const int base = static_cast<int>(t.ix0 + px0 * S + kx);
        for (int l = 0; l < 2 * S; ++l) {
          const __m256i col = _mm256_add_epi32(lane, _mm256_set1_epi32(base + 8 * l));
          m[l] = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                                     _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(t.width)), col));
        }
      }
      const float* p = xr + kx;
      const float* wr = t.w + ((ky * t.kw + kx) * t.cin + t.ci0) * kMR + row0;
      for (int64_t ci = 0; ci < t.nci; ++ci, p += t.plane, wr += kMR) {
        __m256 v[2];
        if constexpr (S == 1) {
          v[0] = Masked ? _mm256_maskload_ps(p, m[0]) : _mm256_loadu_ps(p);
          v[1] = Masked ? _mm256_maskload_ps(p + 8, m[1]) : _mm256_loadu_ps(p + 8);
        } else {
          for (int j = 0; j < 2; ++j) {
            const __m256 a = Masked ? _mm256_maskload_ps(p + 16 * j, m[2 * j]) : _mm256_loadu_ps(p + 16 * j);
            const __m256 b = Masked ? _mm256_maskload_ps(p + 16 * j + 8, m[2 * j + 1]) : _mm256_loadu_ps(p + 16 * j + 8);
            v[j] = even_avx2(a, b);
          }
        }
#pragma GCC unroll 6
        for (int r = 0; r < MR; ++r) {
          const __m256 b = _mm256_broadcast_ss(wr + r);
          acc[r][0] = _mm256_fmadd_ps(b, v[0], acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(b, v[1], acc[r][1]);
        }
      }
    }
  }
  if (t.finish && t.bias) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 b = _mm256_set1_ps(t.bias[row0 + r]);
      acc[r][0] = _mm256_add_ps(acc[r][0], b);
      acc[r][1] = _mm256_add_ps(acc[r][1], b);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < 2; ++j) _mm256_maskstore_ps(y + r * t.ld + 8 * j, store_mask[j], acc[r][j]);
  if (t.finish && t.act != Activation::None)
    for (int r = 0; r < MR; ++r)
      for (int64_t j = 0; j < npx; ++j) y[r * t.ld + j] = act_scalar(y[r * t.ld + j], t.act);
}

using SubTileFn = void (*)(const Tile&, int, int64_t);
constexpr int kAvx2Rows = 6;

template <int S, bool Masked, int... MR>
constexpr std::array<SubTileFn, kAvx2Rows + 1> make_avx2_table(std::integer_sequence<int, MR...>) {
  return {nullptr, &sub_tile_avx2<MR + 1, S, Masked>...};
}

template <int S, bool Masked>
const std::array<SubTileFn, kAvx2Rows + 1>& avx2_table() {
  static constexpr std::array<SubTileFn, kAvx2Rows + 1> t =
      make_avx2_table<S, Masked>(std::make_integer_sequence<int, kAvx2Rows>{});
  return t;
}

void tile_dispatch_avx2(const Tile& t, int mr, int stride) {
  for (int64_t px0 = 0; px0 < t.npx; px0 += 16) {
    // Unmasked when every tap's run of loads lies inside the row.
    const int64_t first = t.ix0 + px0 * stride, last = first + 16 * stride + t.kw - 1;
    const bool masked = first < 0 || last > t.width || px0 + 16 > t.npx;
    for (int row0 = 0; row0 < mr; row0 += kAvx2Rows) {
      const int rows = std::min(kAvx2Rows, mr - row0);
      const auto& table = stride == 1 ? (masked ? avx2_table<1, true>() : avx2_table<1, false>())
                                      : (masked ? avx2_table<2, true>() : avx2_table<2, false>());
      table[rows](t, row0, px0);
    }
  }
}

#endif  // FX_HAVE_AVX512_PATH

void check_conv(const float* x, int64_t batch, const Conv2dShape& s, const PackedConv& w, float* y) {
  auto bad = [](const std::string& what) { fail(FX_ERR_INVALID_ARGUMENT, "conv2d: " + what); };
  if (batch < 0) bad("batch < 0");
  if (s.in_channels < 1 || s.out_channels < 1 || s.height < 1 || s.width < 1) bad("empty channels or image");
  if (s.kernel_h < 1 || s.kernel_w < 1 || s.kernel_h > kMaxKernel || s.kernel_w > kMaxKernel)
    bad("kernel sides must be in 1.." + std::to_string(kMaxKernel));
  if (s.stride != 1 && s.stride != 2) bad("stride must be 1 or 2 (got " + std::to_string(s.stride) + ")");
  for (int64_t p : {s.pad_top, s.pad_bottom})
    if (p < 0 || p >= s.kernel_h) bad("vertical padding must be in [0, kernel_h)");
  for (int64_t p : {s.pad_left, s.pad_right})
    if (p < 0 || p >= s.kernel_w) bad("horizontal padding must be in [0, kernel_w)");
  if (s.height + s.pad_top + s.pad_bottom < s.kernel_h || s.width + s.pad_left + s.pad_right < s.kernel_w)
    bad("the padded image is smaller than the kernel");
  if (w.out_channels() != s.out_channels || w.in_channels() != s.in_channels || w.kernel_h() != s.kernel_h ||
      w.kernel_w() != s.kernel_w)
    bad("packed weights [" + std::to_string(w.out_channels()) + ", " + std::to_string(w.in_channels()) + ", " +
        std::to_string(w.kernel_h()) + ", " + std::to_string(w.kernel_w()) + "] do not match the shape [" +
        std::to_string(s.out_channels) + ", " + std::to_string(s.in_channels) + ", " + std::to_string(s.kernel_h) +
        ", " + std::to_string(s.kernel_w) + "]");
  if (batch > 0 && (!x || !y)) bad("null x or y");
}

void run_conv(const float* x, int64_t batch, const Conv2dShape& s, const PackedConv& w, const float* bias,
              Activation act, bool accumulate, float* y, ThreadPool& pool, ConvPath path) {
  check_conv(x, batch, s, w, y);
  if (batch == 0) return;
  const int64_t H = s.height, W = s.width, Ho = s.out_height(), Wo = s.out_width();
  const int64_t cin = s.in_channels, kk = s.kernel_h * s.kernel_w;
  const int64_t plane_in = H * W, plane_out = Ho * Wo;

  // Channel block: ~256 k steps (at most 64 channels), so an MR-channel weight micro-panel (<= 12 KiB)
  // sits in L1. Band of
  // output rows: as many as keep the block's slice of input rows under ~384 KiB (L2), fewer channels
  // when even one row is wider than that.
  constexpr int64_t kSliceBytes = 384 << 10;
  int64_t kc = std::clamp<int64_t>(256 / kk, 1, std::min<int64_t>(cin, 64));
  auto slice = [&](int64_t c, int64_t band) { return c * ((band - 1) * s.stride + s.kernel_h) * W * 4; };
  while (kc > 1 && slice(kc, 1) > kSliceBytes) kc = (kc + 1) / 2;
  int64_t band = 1;
  while (band < Ho && slice(kc, band + 1) <= kSliceBytes && band < 16) ++band;
  const int threads = pool.size();
  // Enough tasks for every thread: split the output channels into groups when the bands are too few.
  int64_t bands = (Ho + band - 1) / band;
  while (band > 1 && batch * bands < 4 * threads) {
    band = (band + 1) / 2;
    bands = (Ho + band - 1) / band;
  }
  const int64_t co_blocks = w.blocks();
  const int64_t want_groups = std::clamp<int64_t>((4 * threads + batch * bands - 1) / (batch * bands), 1, co_blocks);
  const int64_t blocks_per_group = (co_blocks + want_groups - 1) / want_groups;
  const int64_t groups = (co_blocks + blocks_per_group - 1) / blocks_per_group;

  const int stride = static_cast<int>(s.stride);
  // 1×1: every k step of a tile is a new input line, so the tile's input (kc lines × 128 B) is kept
  // in L1 while all output-channel blocks use it, and the weights come from L2. Wider kernels reuse
  // input lines across taps; there the weight micro-panel stays in L1 and the input comes from L2.
  const bool pixels_outer = kk == 1;
  pool.parallel_for(batch * bands * groups, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      if (cancel_requested()) return;  // the output is undefined; the model reports the cancel (core/cancel.h)
      const int64_t g = task % groups, bi = (task / groups) % bands, b = task / (groups * bands);
      const int64_t oy0 = bi * band, oy1 = std::min(Ho, oy0 + band);
      const int64_t cb0 = g * blocks_per_group, cb1 = std::min(co_blocks, cb0 + blocks_per_group);
      Tile t;
      t.x = x + b * cin * plane_in;
      t.plane = plane_in;
      t.width = W;
      t.cin = cin;
      t.kh = s.kernel_h;
      t.kw = s.kernel_w;
      t.ld = plane_out;
      t.act = act;
      for (int64_t ci0 = 0; ci0 < cin; ci0 += kc) {
        t.ci0 = ci0;
        t.nci = std::min(kc, cin - ci0);
        t.load_c = accumulate || ci0 > 0;
        t.finish = ci0 + t.nci >= cin;
        auto tile = [&](int64_t cb, int64_t oy, int64_t ox0) {
          const int64_t co0 = cb * kMR;
          const int mr = static_cast<int>(std::min(kMR, s.out_channels - co0));
          t.w = w.block(cb);
          t.bias = bias ? bias + co0 : nullptr;
          t.iy0 = oy * s.stride - s.pad_top;
          t.ky0 = std::max<int64_t>(0, -t.iy0);
          t.ky1 = std::min<int64_t>(s.kernel_h, H - t.iy0);
          t.ix0 = ox0 * s.stride - s.pad_left;
          t.npx = std::min(kTilePx, Wo - ox0);
          t.y = y + (b * s.out_channels + co0) * plane_out + oy * Wo + ox0;
#if FX_HAVE_AVX512_PATH
          if (path == ConvPath::Avx512) {
            tile_dispatch_avx512(t, mr, stride);
            return;
          }
          if (path == ConvPath::Avx2) {
            tile_dispatch_avx2(t, mr, stride);
            return;
          }
#endif
          tile_portable(t, mr, stride);
        };
        if (pixels_outer) {
          for (int64_t oy = oy0; oy < oy1; ++oy)
            for (int64_t ox0 = 0; ox0 < Wo; ox0 += kTilePx)
              for (int64_t cb = cb0; cb < cb1; ++cb) tile(cb, oy, ox0);
        } else {
          for (int64_t cb = cb0; cb < cb1; ++cb)
            for (int64_t oy = oy0; oy < oy1; ++oy)
              for (int64_t ox0 = 0; ox0 < Wo; ox0 += kTilePx) tile(cb, oy, ox0);
        }
      }
    }
  });
}

// ================================ GroupNorm ================================

constexpr int64_t kNormChunk = 8192;  // elements per statistics chunk (32 KiB: the second pass hits L1)

struct Moments {
  double n = 0, mean = 0, m2 = 0;
};

// Mean and sum of squared deviations of one chunk: the corrected two-pass algorithm in f32 (the chunk
// is in L1 for the second pass). The second pass sums the deviations from the first pass's mean too,
// which removes that mean's rounding error from both results.
Moments corrected(int64_t n, float center, double dev_sum, double dev_sq) {
  const double dn = double(n);
  return Moments{dn, double(center) + dev_sum / dn, std::max(0.0, dev_sq - dev_sum * dev_sum / dn)};
}

Moments chunk_moments_portable(const float* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float center = sum / float(n);
  float s1 = 0.0f, s2 = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - center;
    s1 += d;
    s2 += d * d;
  }
  return corrected(n, center, s1, s2);
}

// y = ((x - mean_hi) - mean_lo)·a + c: the mean as an f32 pair, so a large common offset cancels exactly
// (x - mean_hi is exact when x is near the mean) instead of leaving the mean's rounding in every output.
void normalize_portable(const float* x, int64_t n, float mean_hi, float mean_lo, float a, float c, bool silu,
                        float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = ((x[i] - mean_hi) - mean_lo) * a + c;
    y[i] = silu ? v / (1.0f + std::exp(-v)) : v;
  }
}

#if FX_HAVE_AVX512_PATH
FX_TARGET_AVX512 inline __mmask16 tail_mask(int64_t left) { return __mmask16((1u << left) - 1u); }

FX_TARGET_AVX512 Moments chunk_moments_avx512(const float* x, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + i + 16));
  }
  for (; i < n; i += 16) s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(tail_mask(std::min<int64_t>(16, n - i)), x + i));
  const float center = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / float(n);
  const __m512 m = _mm512_set1_ps(center);
  __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps(), q0 = _mm512_setzero_ps(), q1 = _mm512_setzero_ps();
  for (i = 0; i + 32 <= n; i += 32) {
    const __m512 e0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), m);
    const __m512 e1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), m);
    d0 = _mm512_add_ps(d0, e0);
    d1 = _mm512_add_ps(d1, e1);
    q0 = _mm512_fmadd_ps(e0, e0, q0);
    q1 = _mm512_fmadd_ps(e1, e1, q1);
  }
  for (; i < n; i += 16) {
    const __mmask16 k = tail_mask(std::min<int64_t>(16, n - i));
    const __m512 e = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + i), m);
    d0 = _mm512_add_ps(d0, e);
    q0 = _mm512_fmadd_ps(e, e, q0);
  }
  return corrected(n, center, double(_mm512_reduce_add_ps(_mm512_add_ps(d0, d1))),
                   double(_mm512_reduce_add_ps(_mm512_add_ps(q0, q1))));
}

FX_TARGET_AVX512 void normalize_avx512(const float* x, int64_t n, float mean_hi, float mean_lo, float a, float c,
                                       bool silu, float* y) {
  const __m512 hi = _mm512_set1_ps(mean_hi), lo = _mm512_set1_ps(mean_lo), av = _mm512_set1_ps(a),
               cv = _mm512_set1_ps(c);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : tail_mask(n - i);
    const __m512 d = _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), hi), lo);
    __m512 v = _mm512_fmadd_ps(d, av, cv);
    if (silu) v = avx512::sigmoid_times(v, v);
    _mm512_mask_storeu_ps(y + i, k, v);
  }
}

FX_TARGET_AVX512 void upsample_row_avx512(const float* x, int64_t width, float* y) {
  const __m512i lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512i hi = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  int64_t j = 0;
  for (; j + 16 <= width; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    _mm512_storeu_ps(y + 2 * j, _mm512_permutexvar_ps(lo, v));
    _mm512_storeu_ps(y + 2 * j + 16, _mm512_permutexvar_ps(hi, v));
  }
  for (; j < width; ++j) y[2 * j] = y[2 * j + 1] = x[j];
}
#endif

void check_norm(const float* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups, const float* gamma,
                const float* beta, float* y) {
  auto bad = [](const std::string& what) { fail(FX_ERR_INVALID_ARGUMENT, "group_norm: " + what); };
  if (batch < 0 || channels < 1 || hw < 1 || groups < 1) bad("empty shape");
  if (channels % groups != 0)
    bad(std::to_string(channels) + " channels are not divisible into " + std::to_string(groups) + " groups");
  if (batch > 0 && (!x || !y || !gamma || !beta)) bad("null pointer");
}

}  // namespace

// ================================ public ================================

bool conv2d_path_supported(ConvPath path) { return supported(path); }
ConvPath conv2d_active_path() { return active_path(); }
const char* conv2d_path_name(ConvPath path) {
  switch (path) {
    case ConvPath::Auto: return "auto";
    case ConvPath::Portable: return "portable";
    case ConvPath::Avx2: return "avx2";
    case ConvPath::Avx512: return "avx512";
  }
  return "?";
}

PackedConv pack_conv_weights(const float* w, int64_t out, int64_t in, int64_t kh, int64_t kw) {
  if (!w || out < 1 || in < 1 || kh < 1 || kw < 1)
    fail(FX_ERR_INVALID_ARGUMENT, "pack_conv_weights: empty or null weights");
  PackedConv p;
  p.out_ = out;
  p.in_ = in;
  p.kh_ = kh;
  p.kw_ = kw;
  const int64_t k = in * kh * kw;
  const size_t count = static_cast<size_t>(p.blocks() * k * kMR);
  const size_t bytes = std::max<size_t>(64, (count * sizeof(float) + 63) / 64 * 64);
  float* data = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!data) fail(FX_ERR_OUT_OF_MEMORY, "pack_conv_weights: out of memory");
  p.data_.reset(data);
  std::fill(data, data + count, 0.0f);
  // [out][in][kh][kw] -> per block of kMR output channels [kh][kw][in][kMR].
  for (int64_t co = 0; co < out; ++co)
    for (int64_t ci = 0; ci < in; ++ci)
      for (int64_t tap = 0; tap < kh * kw; ++tap)
        data[(co / kMR) * k * kMR + (tap * in + ci) * kMR + co % kMR] = w[(co * in + ci) * kh * kw + tap];
  return p;
}

void conv2d(const float* x, int64_t batch, const Conv2dShape& shape, const PackedConv& w, const float* bias,
            Activation act, bool accumulate, float* y, ThreadPool& pool) {
  run_conv(x, batch, shape, w, bias, act, accumulate, y, pool, active_path());
}

void conv2d_reference(const float* x, int64_t batch, const Conv2dShape& s, const float* w, const float* bias,
                      Activation act, bool accumulate, float* y) {
  const int64_t H = s.height, W = s.width, Ho = s.out_height(), Wo = s.out_width();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t co = 0; co < s.out_channels; ++co)
      for (int64_t oy = 0; oy < Ho; ++oy)
        for (int64_t ox = 0; ox < Wo; ++ox) {
          double sum = bias ? double(bias[co]) : 0.0;
          for (int64_t ci = 0; ci < s.in_channels; ++ci)
            for (int64_t ky = 0; ky < s.kernel_h; ++ky) {
              const int64_t iy = oy * s.stride + ky - s.pad_top;
              if (iy < 0 || iy >= H) continue;
              for (int64_t kx = 0; kx < s.kernel_w; ++kx) {
                const int64_t ix = ox * s.stride + kx - s.pad_left;
                if (ix < 0 || ix >= W) continue;
                sum += double(x[((b * s.in_channels + ci) * H + iy) * W + ix]) *
                       double(w[((co * s.in_channels + ci) * s.kernel_h + ky) * s.kernel_w + kx]);
              }
            }
          float& out = y[((b * s.out_channels + co) * Ho + oy) * Wo + ox];
          if (accumulate) sum += double(out);
          out = float(act_double(sum, act));
        }
}

void group_norm(const float* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups, const float* gamma,
                const float* beta, float eps, bool silu, float* y, ThreadPool& pool) {
  check_norm(x, batch, channels, hw, groups, gamma, beta, y);
  if (batch == 0) return;
  const bool simd = use_avx512();
  const int64_t cpg = channels / groups, n = cpg * hw;
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  const int64_t segments = batch * groups;

  // Pass 1: moments per chunk of each (sample, group) segment, which is contiguous in NCHW.
  std::vector<Moments> parts(static_cast<size_t>(segments * chunks));
  pool.parallel_for(segments * chunks, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t seg = i / chunks, c = i % chunks;
      const float* p = x + seg * n + c * kNormChunk;
      const int64_t len = std::min(kNormChunk, n - c * kNormChunk);
#if FX_HAVE_AVX512_PATH
      if (simd) {
        parts[size_t(i)] = chunk_moments_avx512(p, len);
        continue;
      }
#endif
      parts[size_t(i)] = chunk_moments_portable(p, len);
    }
  });
  // Combine in double (Chan et al.): exact for the counts, no cancellation between chunks.
  std::vector<double> mean(static_cast<size_t>(segments));
  std::vector<float> rstd(static_cast<size_t>(segments));
  for (int64_t seg = 0; seg < segments; ++seg) {
    Moments acc;
    for (int64_t c = 0; c < chunks; ++c) {
      const Moments& m = parts[size_t(seg * chunks + c)];
      const double total = acc.n + m.n, delta = m.mean - acc.mean;
      acc.mean += delta * m.n / total;
      acc.m2 += m.m2 + delta * delta * acc.n * m.n / total;
      acc.n = total;
    }
    mean[size_t(seg)] = acc.mean;
    rstd[size_t(seg)] = float(1.0 / std::sqrt(acc.m2 / acc.n + double(eps)));
  }

  // Pass 2: y = (x - mean)·a + beta per channel with a = rstd·gamma.
  const int64_t row_chunks = (hw + kNormChunk - 1) / kNormChunk;
  pool.parallel_for(batch * channels * row_chunks, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t bc = i / row_chunks, r = i % row_chunks;
      const int64_t b = bc / channels, ch = bc % channels, seg = b * groups + ch / cpg;
      const double m = mean[size_t(seg)];
      const float hi = float(m), lo = float(m - double(hi));
      const float a = float(double(rstd[size_t(seg)]) * double(gamma[ch]));
      const int64_t off = bc * hw + r * kNormChunk, len = std::min(kNormChunk, hw - r * kNormChunk);
#if FX_HAVE_AVX512_PATH
      if (simd) {
        normalize_avx512(x + off, len, hi, lo, a, beta[ch], silu, y + off);
        continue;
      }
#endif
      normalize_portable(x + off, len, hi, lo, a, beta[ch], silu, y + off);
    }
  });
}

void group_norm_reference(const float* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups,
                          const float* gamma, const float* beta, float eps, bool silu, float* y) {
  const int64_t cpg = channels / groups, n = cpg * hw;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      const float* p = x + (b * groups + g) * n;
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += p[i];
      const double mean = sum / double(n);
      double sq = 0.0;
      for (int64_t i = 0; i < n; ++i) sq += (double(p[i]) - mean) * (double(p[i]) - mean);
      const double rstd = 1.0 / std::sqrt(sq / double(n) + double(eps));
      for (int64_t c = 0; c < cpg; ++c) {
        const int64_t ch = g * cpg + c;
        for (int64_t i = 0; i < hw; ++i) {
          const size_t idx = size_t((b * channels + ch) * hw + i);
          double v = (double(x[idx]) - mean) * rstd * double(gamma[ch]) + double(beta[ch]);
          if (silu) v = v / (1.0 + std::exp(-v));
          y[idx] = float(v);
        }
      }
    }
}

void upsample_nearest2x(const float* x, int64_t planes, int64_t height, int64_t width, float* y, ThreadPool& pool) {
  if (planes < 0 || height < 1 || width < 1) fail(FX_ERR_INVALID_ARGUMENT, "upsample_nearest2x: empty shape");
  if (planes > 0 && (!x || !y)) fail(FX_ERR_INVALID_ARGUMENT, "upsample_nearest2x: null pointer");
  const bool simd = use_avx512();
  const int64_t rows = planes * height, grain = std::max<int64_t>(1, 4096 / width);
  pool.parallel_for(
      rows,
      [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const float* src = x + r * width;
          float* dst = y + r * 4 * width;  // output rows 2i and 2i+1 of the same plane are adjacent
#if FX_HAVE_AVX512_PATH
          if (simd) {
            upsample_row_avx512(src, width, dst);
          } else
#endif
          {
            for (int64_t j = 0; j < width; ++j) dst[2 * j] = dst[2 * j + 1] = src[j];
          }
          std::memcpy(dst + 2 * width, dst, sizeof(float) * 2 * width);
        }
      },
      grain);
}

void upsample_nearest2x_reference(const float* x, int64_t planes, int64_t height, int64_t width, float* y) {
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < 2 * height; ++i)
      for (int64_t j = 0; j < 2 * width; ++j)
        y[(p * 2 * height + i) * 2 * width + j] = x[(p * height + i / 2) * width + j / 2];
}

}  // namespace fx::cpu
