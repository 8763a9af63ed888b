// Flash attention (kernels.h): out = softmax(scale·q·kᵀ + bias, causal)·v, one CUDA block per (tile of
// query rows, head, batch). The block keeps its Q tile in shared memory and streams the keys and values
// through shared memory a block of rows at a time; each query row keeps a running max m and a running
// sum l of exp(s − m) in f32 and an f32 output accumulator O, and when a key block raises m, l and O are
// rescaled by exp(m_old − m_new). Only a tile×block slice of the scores ever exists (in registers),
// never the seq_q×seq_kv matrix. A row whose logits are all −inf so far measures from 0 instead of −inf
// (so exp gives 0, not exp(−inf + inf) = NaN) and ends with l = 0, which writes zeros.
//
// BF16 on sm_80+ (attention_mma_kernel, the FlashAttention-2 structure): 4 warps, each owning 16 query
// rows of a 64-row tile; Q·Kᵀ and P·V are mma.sync.m16n8k16 bf16 tensor-core products with f32
// accumulators, operands fetched from shared memory by ldmatrix (.trans for V), and P goes from the S
// accumulators to the A operand of P·V in registers (the two layouts coincide, rounded to bf16). Each
// thread holds 2 rows × 2 columns of each 8-key group, so the row max and row sum are two shuffles.
// K and V each have one shared buffer, filled by cp.async (16 bytes, zero-fill past the sequence)
// when every row is 16-byte aligned, else by ordinary loads: V of block j loads while S = Q·Kⱼᵀ is
// computed, K of block j+1 while P·Vⱼ is. Softmax in base 2: s·log2(e) is folded into the scale.
// head_dim buckets 64, 128, 256 (compile-time register arrays); a head_dim below its bucket computes
// only the 16-wide k steps it has (columns past head_dim load as zeros). Key blocks: 64 (32 for 256).
//
// F32 (and BF16 on GPUs older than sm_80): attention_simt_kernel, the same streaming on CUDA cores:
// 4 warps × 4 query rows, 32 keys a block; lane j computes the 4 scores of key j (K rows in shared
// memory with a stride of head_dim + 1: no bank conflicts), the softmax statistics are warp
// reductions, and for P·V each lane owns the output columns lane, lane + 32, … of the warp's 4 rows.
// head_dim buckets 64, 128, 256 and 512 (the autoencoder's one head of 512 channels; bf16 runs here too
// above 256); in the 512 bucket K and V take turns in one shared buffer (K, scores, barrier, V, P·V), so
// the block needs ~100 KB instead of ~165 KB and fits every GPU from sm_80 on.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/mma.cuh"

namespace fx::cuda {
namespace {

using dev::bf16;
using namespace dev::sm80;

constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
constexpr size_t kDefaultSmem = 48 * 1024;  // more needs cudaFuncAttributeMaxDynamicSharedMemorySize

struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t q_bs, q_rs, k_bs, k_rs, v_bs, v_rs, o_bs, o_rs;
  const float* bias;  // [heads, seq_q, seq_kv] or null
  int seq_q, seq_kv, head_dim;
  float scale;
  bool causal;
  bool async_loads;  // mma kernel: q, k, v rows 16-byte aligned (cp.async)
  bool out_pairs;    // mma kernel: out rows 4-byte aligned (bf16x2 stores)
};

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xFF800000); }

// ---------------------------------------------------------------------------------------------------
// BF16 tensor-core kernel

constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = kMmaWarps * 32;
constexpr int kMmaRows = 16 * kMmaWarps;  // query rows per block

template <int kD>
struct MmaConfig {
  static constexpr int kBc = kD <= 128 ? 64 : 32;  // keys per block
  static constexpr int kStride = kD + 8;           // shared row stride (elements): 16 bytes of padding
                                                   // puts ldmatrix's 8 row addresses in distinct banks
  static constexpr size_t kSmem = size_t(kMmaRows + 2 * kBc) * kStride * sizeof(bf16);
};

// kRows rows [row0, row0 + kRows) of one head into shared memory, columns [0, D16): rows past `seq`
// and columns past D are zeros (so padding adds nothing to a dot product and no NaN from garbage).
template <int kRows, int kStride>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int64_t row_stride, int row0, int seq, int D,
                                          int D16, bool async) {
  const int chunks_per_row = D16 / 8;
  const int total = kRows * chunks_per_row;
  for (int idx = threadIdx.x; idx < total; idx += kMmaThreads) {
    const int r = idx / chunks_per_row;
    const int c = (idx - r * chunks_per_row) * 8;
    bf16* dst = s + r * kStride + c;
    const bool valid = row0 + r < seq && c < D;
    if (async) {
      const bf16* src = valid ? g + int64_t(row0 + r) * row_stride + c : g;
      cp_async16(dst, src, valid ? 16 : 0);
    } else {
      uint4 raw = make_uint4(0u, 0u, 0u, 0u);
      if (valid) {
        const uint16_t* src = reinterpret_cast<const uint16_t*>(g + int64_t(row0 + r) * row_stride + c);
        raw.x = uint32_t(src[0]) | (uint32_t(src[1]) << 16);
        raw.y = uint32_t(src[2]) | (uint32_t(src[3]) << 16);
        raw.z = uint32_t(src[4]) | (uint32_t(src[5]) << 16);
        raw.w = uint32_t(src[6]) | (uint32_t(src[7]) << 16);
      }
      *reinterpret_cast<uint4*>(dst) = raw;
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(kMmaThreads) attention_mma_kernel(const AttnParams p) {
  using Cfg = MmaConfig<kD>;
  constexpr int kBc = Cfg::kBc;
  constexpr int kStride = Cfg::kStride;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kMmaRows][kStride]
  bf16* sK = sQ + kMmaRows * kStride;            // [kBc][kStride]
  bf16* sV = sK + kBc * kStride;                 // [kBc][kStride]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int q0 = blockIdx.x * kMmaRows;
  const int h = blockIdx.y, b = blockIdx.z;
  const int D = p.head_dim;
  const int D16 = (D + 15) / 16 * 16;
  const int k_steps = D16 / 16;  // 16-wide steps over head_dim (Q·Kᵀ) and 16-wide column pairs (P·V)
  const int d_tiles = D / 8;     // 8-wide output column tiles that exist

  const bf16* qg = static_cast<const bf16*>(p.q) + b * p.q_bs + int64_t(h) * D;
  const bf16* kg = static_cast<const bf16*>(p.k) + b * p.k_bs + int64_t(h) * D;
  const bf16* vg = static_cast<const bf16*>(p.v) + b * p.v_bs + int64_t(h) * D;
  bf16* og = static_cast<bf16*>(p.out) + b * p.o_bs + int64_t(h) * D;
  const float* bias_h = p.bias != nullptr ? p.bias + int64_t(h) * p.seq_q * p.seq_kv : nullptr;

  // Causal: no row of this tile sees a key at or past q0 + kMmaRows.
  const int kv_end = p.causal ? min(p.seq_kv, q0 + kMmaRows) : p.seq_kv;
  const int kv_blocks = (kv_end + kBc - 1) / kBc;
  const float scale_log2 = p.scale * kLog2e;
  const int row_lo = q0 + warp * 16 + g;  // this thread's rows: row_lo (half 0) and row_lo + 8 (half 1)

  float o[kD / 8][4];
#pragma unroll
  for (int dt = 0; dt < kD / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  float m[2] = {neg_inf(), neg_inf()};
  float l[2] = {0.0f, 0.0f};  // this thread's part of the row sums (the 4 lanes of a row add up at the end)

  if (kv_blocks > 0) {
    load_tile<kMmaRows, kStride>(sQ, qg, p.q_rs, q0, p.seq_q, D, D16, p.async_loads);
    load_tile<kBc, kStride>(sK, kg, p.k_rs, 0, p.seq_kv, D, D16, p.async_loads);
    cp_async_commit();
  }

  for (int it = 0; it < kv_blocks; ++it) {
    const int kv0 = it * kBc;
    // K of this block (and Q) have landed; every warp is done with the previous block's V.
    cp_async_wait_all();
    __syncthreads();
    load_tile<kBc, kStride>(sV, vg, p.v_rs, kv0, p.seq_kv, D, D16, p.async_loads);
    cp_async_commit();

    // S = Q·Kᵀ for the warp's 16 rows × kBc keys: s[n] holds keys kv0 + 8n .. 8n + 7.
    float s[kBc / 8][4];
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      if (ks < k_steps) {
        uint32_t a[4];
        ldmatrix_x4(a, sQ + (warp * 16 + (lane & 15)) * kStride + ks * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < kBc / 16; ++np) {
          // Matrices: keys np·16 + 0..7 × dims 0..7, the same keys × dims 8..15, then keys + 8.
          uint32_t kf[4];
          ldmatrix_x4(kf, sK + (np * 16 + (lane & 7) + (lane >> 4) * 8) * kStride + ks * 16 + ((lane >> 3) & 1) * 8);
          mma_bf16_16816(s[2 * np], a, kf[0], kf[1]);
          mma_bf16_16816(s[2 * np + 1], a, kf[2], kf[3]);
        }
      }
    }

    // Logits in base-2 units, bias added, masked keys (past the sequence, above the diagonal) −inf.
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row_lo + (e >= 2 ? 8 : 0);
        const int key = kv0 + n * 8 + t4 * 2 + (e & 1);
        const bool visible = key < p.seq_kv && !(p.causal && key > row);
        float x = s[n][e] * scale_log2;
        if (visible && bias_h != nullptr && row < p.seq_q) x = fmaf(bias_h[int64_t(row) * p.seq_kv + key], kLog2e, x);
        s[n][e] = visible ? x : neg_inf();
      }
    }

    // Online softmax, per row half.
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = m[hr];
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * hr], s[n][2 * hr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
      const float ref = mx == neg_inf() ? 0.0f : mx;
      const float alpha = exp2f(m[hr] - ref);
      m[hr] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
        const float p0 = exp2f(s[n][2 * hr] - ref), p1 = exp2f(s[n][2 * hr + 1] - ref);
        s[n][2 * hr] = p0;
        s[n][2 * hr + 1] = p1;
        sum += p0 + p1;
      }
      l[hr] = l[hr] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < kD / 8; ++dt) {
        o[dt][2 * hr] *= alpha;
        o[dt][2 * hr + 1] *= alpha;
      }
    }

    // V of this block has landed; every warp is done with K, which the next block may now overwrite.
    cp_async_wait_all();
    __syncthreads();
    if (it + 1 < kv_blocks) {
      load_tile<kBc, kStride>(sK, kg, p.k_rs, kv0 + kBc, p.seq_kv, D, D16, p.async_loads);
      cp_async_commit();
    }

    // O += P·V: P's 16 keys kk·16.. are the A operand straight from the S accumulators.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[4];
      a[0] = dev::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
      a[1] = dev::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
      a[2] = dev::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = dev::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < kD / 16; ++dp) {
        if (dp < k_steps) {
          // Transposed: keys kk·16 + 0..7 × dims dp·16 + 0..7, keys + 8 × the same dims, then dims + 8.
          uint32_t vf[4];
          ldmatrix_x4_trans(vf, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + dp * 16 + (lane >> 4) * 8);
          mma_bf16_16816(o[2 * dp], a, vf[0], vf[1]);
          mma_bf16_16816(o[2 * dp + 1], a, vf[2], vf[3]);
        }
      }
    }
  }

  // out = O / l; l = 0 (no visible key) writes zeros.
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float sum = l[hr];
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    sum += __shfl_xor_sync(kFullMask, sum, 2);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    const int row = row_lo + hr * 8;
    if (row < p.seq_q) {
      bf16* dst = og + int64_t(row) * p.o_rs;
#pragma unroll
      for (int dt = 0; dt < kD / 8; ++dt) {
        if (dt < d_tiles) {
          const int col = dt * 8 + t4 * 2;
          const float v0 = o[dt][2 * hr] * inv, v1 = o[dt][2 * hr + 1] * inv;
          if (p.out_pairs) {
            *reinterpret_cast<__nv_bfloat162*>(dst + col) = __floats2bfloat162_rn(v0, v1);
          } else {
            dst[col] = __float2bfloat16_rn(v0);
            dst[col + 1] = __float2bfloat16_rn(v1);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// CUDA-core kernel (f32, or bf16 without tensor cores)

constexpr int kSimtWarps = 4;
constexpr int kSimtThreads = kSimtWarps * 32;
constexpr int kSimtRowsPerWarp = 4;
constexpr int kSimtRows = kSimtWarps * kSimtRowsPerWarp;  // query rows per block
constexpr int kSimtKeys = 32;                             // keys per block: one per lane

// K and V share one buffer in the largest bucket.
constexpr bool simt_shares_kv(int kD) { return kD > 256; }

size_t simt_smem_bytes(int D, bool share_kv) {
  return (size_t(kSimtRows) * D + size_t(kSimtKeys) * (D + 1) + (share_kv ? 0 : size_t(kSimtKeys) * D) +
          size_t(kSimtRows) * kSimtKeys) *
         sizeof(float);
}

template <typename T, int kD>
__global__ void __launch_bounds__(kSimtThreads) attention_simt_kernel(const AttnParams p) {
  constexpr int kCols = kD / 32;  // output columns per lane
  extern __shared__ float smem_f[];
  const int D = p.head_dim;
  constexpr bool kShareKV = simt_shares_kv(kD);
  float* sQ = smem_f;                                      // [kSimtRows][D]
  float* sK = sQ + kSimtRows * D;                          // [kSimtKeys][D + 1]
  float* sV = kShareKV ? sK : sK + kSimtKeys * (D + 1);    // [kSimtKeys][D] (after the scores, when shared)
  float* sP = sK + kSimtKeys * (D + 1) + (kShareKV ? 0 : kSimtKeys * D);  // [kSimtRows][kSimtKeys]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q0 = blockIdx.x * kSimtRows;
  const int h = blockIdx.y, b = blockIdx.z;
  const T* qg = static_cast<const T*>(p.q) + b * p.q_bs + int64_t(h) * D;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_bs + int64_t(h) * D;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_bs + int64_t(h) * D;
  T* og = static_cast<T*>(p.out) + b * p.o_bs + int64_t(h) * D;
  const float* bias_h = p.bias != nullptr ? p.bias + int64_t(h) * p.seq_q * p.seq_kv : nullptr;

  for (int r = warp; r < kSimtRows; r += kSimtWarps) {
    const int row = q0 + r;
    for (int c = lane; c < D; c += 32) sQ[r * D + c] = row < p.seq_q ? dev::to_f32(qg[int64_t(row) * p.q_rs + c]) : 0.0f;
  }

  float o[kSimtRowsPerWarp][kCols];
  float m[kSimtRowsPerWarp], l[kSimtRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kSimtRowsPerWarp; ++r) {
    m[r] = neg_inf();
    l[r] = 0.0f;
#pragma unroll
    for (int k = 0; k < kCols; ++k) o[r][k] = 0.0f;
  }

  const int kv_end = p.causal ? min(p.seq_kv, q0 + kSimtRows) : p.seq_kv;
  const float* q_rows = sQ + warp * kSimtRowsPerWarp * D;
  float* p_rows = sP + warp * kSimtRowsPerWarp * kSimtKeys;
  for (int kv0 = 0; kv0 < kv_end; kv0 += kSimtKeys) {
    __syncthreads();  // Q stored; every warp done with the previous K and V
    for (int r = warp; r < kSimtKeys; r += kSimtWarps) {
      const int key = kv0 + r;
      const bool valid = key < p.seq_kv;
      for (int c = lane; c < D; c += 32) {
        sK[r * (D + 1) + c] = valid ? dev::to_f32(kg[int64_t(key) * p.k_rs + c]) : 0.0f;
        if (!kShareKV) sV[r * D + c] = valid ? dev::to_f32(vg[int64_t(key) * p.v_rs + c]) : 0.0f;
      }
    }
    __syncthreads();

    // Lane j: the scores of key kv0 + j against the warp's rows.
    const int key = kv0 + lane;
    float s[kSimtRowsPerWarp] = {};
    const float* k_row = sK + lane * (D + 1);
    for (int c = 0; c < D; ++c) {
      const float kv = k_row[c];
#pragma unroll
      for (int r = 0; r < kSimtRowsPerWarp; ++r) s[r] = fmaf(q_rows[r * D + c], kv, s[r]);
    }
#pragma unroll
    for (int r = 0; r < kSimtRowsPerWarp; ++r) {
      const int row = q0 + warp * kSimtRowsPerWarp + r;
      const bool visible = key < p.seq_kv && !(p.causal && key > row);
      float x = s[r] * p.scale;
      if (visible && bias_h != nullptr && row < p.seq_q) x += bias_h[int64_t(row) * p.seq_kv + key];
      x = visible ? x : neg_inf();
      const float mx = fmaxf(m[r], dev::warp_max(x));
      const float ref = mx == neg_inf() ? 0.0f : mx;
      const float alpha = expf(m[r] - ref);
      const float pv = expf(x - ref);
      l[r] = l[r] * alpha + dev::warp_sum(pv);
      m[r] = mx;
#pragma unroll
      for (int k = 0; k < kCols; ++k) o[r][k] *= alpha;
      p_rows[r * kSimtKeys + lane] = pv;
    }
    if constexpr (kShareKV) {
      __syncthreads();  // every warp is done with K: V takes its place
      for (int r = warp; r < kSimtKeys; r += kSimtWarps) {
        const int vkey = kv0 + r;
        const bool valid = vkey < p.seq_kv;
        for (int c = lane; c < D; c += 32) sV[r * D + c] = valid ? dev::to_f32(vg[int64_t(vkey) * p.v_rs + c]) : 0.0f;
      }
      __syncthreads();
    } else {
      __syncwarp();
    }

    const int keys = min(kSimtKeys, kv_end - kv0);
    for (int j = 0; j < keys; ++j) {
      const float* v_row = sV + j * D;
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int c = lane + 32 * k;
        if (c < D) {
          const float vv = v_row[c];
#pragma unroll
          for (int r = 0; r < kSimtRowsPerWarp; ++r) o[r][k] = fmaf(p_rows[r * kSimtKeys + j], vv, o[r][k]);
        }
      }
    }
    __syncwarp();
  }

#pragma unroll
  for (int r = 0; r < kSimtRowsPerWarp; ++r) {
    const int row = q0 + warp * kSimtRowsPerWarp + r;
    if (row < p.seq_q) {
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
      T* dst = og + int64_t(row) * p.o_rs;
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int c = lane + 32 * k;
        if (c < D) dst[c] = dev::from_f32<T>(o[r][k] * inv);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Host side

// Raises the kernel's dynamic shared memory limit to `bytes` when that is over the default 48 KB, once
// per kernel and device (`done`: one bit per device that has it).
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes, const char* name, std::atomic<uint64_t>& done) {
  if (bytes <= kDefaultSmem) return;
  int device = 0;
  check_cuda_call(cudaGetDevice(&device), "attention: cudaGetDevice");
  const uint64_t bit = device >= 0 && device < 64 ? uint64_t(1) << device : 0;
  if (bit != 0 && (done.load(std::memory_order_acquire) & bit) != 0) return;
  check_cuda_call(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
                  (std::string("cudaFuncSetAttribute(") + name + ", shared memory)").c_str());
  done.fetch_or(bit, std::memory_order_release);
}

template <int kD>
void launch_mma(const AttnParams& p, int batch, int heads, Stream stream) {
  const char* name = kD == 64 ? "attention_mma<64>" : kD == 128 ? "attention_mma<128>" : "attention_mma<256>";
  constexpr size_t smem = MmaConfig<kD>::kSmem;
  static std::atomic<uint64_t> smem_allowed{0};
  allow_smem(attention_mma_kernel<kD>, smem, name, smem_allowed);
  const dim3 grid(unsigned((p.seq_q + kMmaRows - 1) / kMmaRows), unsigned(heads), unsigned(batch));
  attention_mma_kernel<kD><<<grid, kMmaThreads, smem, as_cuda_stream(stream)>>>(p);
  check_launch(name);
}

template <typename T, int kD>
void launch_simt(const AttnParams& p, int batch, int heads, Stream stream) {
  const char* name = kD == 64    ? "attention_simt<64>"
                     : kD == 128 ? "attention_simt<128>"
                     : kD == 256 ? "attention_simt<256>"
                                 : "attention_simt<512>";
  constexpr bool share = simt_shares_kv(kD);
  const size_t smem = simt_smem_bytes(p.head_dim, share);
  const size_t most = simt_smem_bytes(kD, share);  // every head_dim <= kD
  if (most > kDefaultSmem) {
    int device = 0, optin = 0;
    check_cuda_call(cudaGetDevice(&device), "attention: cudaGetDevice");
    check_cuda_call(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                    "attention: cudaDeviceGetAttribute");
    if (size_t(optin) < most)
      fail(FX_ERR_UNSUPPORTED, std::string("attention: ") + name + " needs " + std::to_string(most) +
                                   " bytes of shared memory per block; this GPU allows " + std::to_string(optin));
  }
  static std::atomic<uint64_t> smem_allowed{0};
  allow_smem(attention_simt_kernel<T, kD>, most, name, smem_allowed);
  const dim3 grid(unsigned((p.seq_q + kSimtRows - 1) / kSimtRows), unsigned(heads), unsigned(batch));
  attention_simt_kernel<T, kD><<<grid, kSimtThreads, smem, as_cuda_stream(stream)>>>(p);
  check_launch(name);
}

template <typename T>
void launch_simt_bucket(const AttnParams& p, int batch, int heads, Stream stream) {
  if (p.head_dim <= 64) {
    launch_simt<T, 64>(p, batch, heads, stream);
  } else if (p.head_dim <= 128) {
    launch_simt<T, 128>(p, batch, heads, stream);
  } else if (p.head_dim <= 256) {
    launch_simt<T, 256>(p, batch, heads, stream);
  } else {
    launch_simt<T, 512>(p, batch, heads, stream);
  }
}

int current_compute_major() {
  int device = 0;
  check_cuda_call(cudaGetDevice(&device), "attention: cudaGetDevice");
  int major = 0;
  check_cuda_call(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
                  "attention: cudaDeviceGetAttribute");
  return major;
}

void bad(const std::string& what) { fail(FX_ERR_INVALID_ARGUMENT, "attention: " + what); }

}  // namespace

void attention(const AttentionArgs& a, Stream stream) {
  if (a.act != DType::F32 && a.act != DType::BF16)
    fail(FX_ERR_UNSUPPORTED, std::string("attention: activations must be F32 or BF16, not ") + dtype_name(a.act));
  if (a.head_dim <= 0 || a.head_dim > 512 || a.head_dim % 8 != 0)
    bad("head_dim " + std::to_string(a.head_dim) + " is not a multiple of 8 in [8, 512]");
  if (a.batch < 0 || a.heads < 0 || a.seq_q < 0 || a.seq_kv < 0) bad("negative shape");
  if (a.batch > 65535 || a.heads > 65535) bad("batch and heads must be at most 65535");
  if (a.seq_q > INT_MAX / 2 || a.seq_kv > INT_MAX / 2) bad("sequence longer than 2^30");
  if (a.batch == 0 || a.heads == 0 || a.seq_q == 0) return;
  if (a.q == nullptr || a.k == nullptr || a.v == nullptr || a.out == nullptr) bad("null operand");

  AttnParams p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.q_bs = a.q_batch_stride, p.q_rs = a.q_row_stride;
  p.k_bs = a.k_batch_stride, p.k_rs = a.k_row_stride;
  p.v_bs = a.v_batch_stride, p.v_rs = a.v_row_stride;
  p.o_bs = a.out_batch_stride, p.o_rs = a.out_row_stride;
  p.bias = a.bias;
  p.seq_q = int(a.seq_q);
  p.seq_kv = int(a.seq_kv);
  p.head_dim = int(a.head_dim);
  p.scale = a.scale;
  p.causal = a.causal;
  const int batch = int(a.batch), heads = int(a.heads);

  if (a.act == DType::F32) {
    launch_simt_bucket<float>(p, batch, heads, stream);
    return;
  }
  if (p.head_dim > 256 || current_compute_major() < 8) {  // the mma kernel's buckets end at 256
    launch_simt_bucket<bf16>(p, batch, heads, stream);
    return;
  }
  const size_t e = sizeof(bf16);
  p.async_loads = dev::aligned16(a.q) && dev::aligned16(a.k) && dev::aligned16(a.v) && dev::stride16(p.q_bs, e) &&
                  dev::stride16(p.q_rs, e) && dev::stride16(p.k_bs, e) && dev::stride16(p.k_rs, e) &&
                  dev::stride16(p.v_bs, e) && dev::stride16(p.v_rs, e);
  p.out_pairs = (reinterpret_cast<uintptr_t>(a.out) & 3u) == 0 && p.o_bs % 2 == 0 && p.o_rs % 2 == 0;
  if (p.head_dim <= 64) {
    launch_mma<64>(p, batch, heads, stream);
  } else if (p.head_dim <= 128) {
    launch_mma<128>(p, batch, heads, stream);
  } else {
    launch_mma<256>(p, batch, heads, stream);
  }
}

}  // namespace fx::cuda
