// GroupNorm (kernels.h) in three launches, so that a few very large groups (32 groups of 4M values in the
// autoencoder's last level at 1024²) still fill the GPU. (1) Moments: one block per chunk of 4096 values of
// an (image, group) segment, which is contiguous in NCHW; each thread holds its 16 values in registers, the
// block sums them for a centre c (the chunk's f32 mean), then sums d = x − c and d², and the chunk's mean
// and centred sum of squares follow in double (mean = c + Σd/n, M2 = Σd² − (Σd)²/n): no cancellation
// whatever the offset. (2) Statistics: one warp per segment merges its chunks in double by Chan et al.'s
// pairwise formula (as ops/cpu's group_norm), and writes the mean as two floats (hi + lo) and
// rstd = 1/sqrt(M2/n + eps). (3) Normalise: one thread per 8 values of a channel plane,
// y = ((x − hi) − lo)·a + beta[c] with a = rstd·gamma[c] formed in double once per thread, then SiLU —
// elementwise, so y may be x. Statistics and arithmetic are f32/f64 whatever the activation dtype.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/kernels.h"

namespace fx::cuda {
namespace {

using dev::bf16;
using dev::kChunk;

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int64_t kSegmentChunk = int64_t(kThreads) * kPerThread;  // values per moments block
constexpr int kStatsWarps = 4;
constexpr int64_t kPlaneBlock = int64_t(kThreads) * kChunk;  // values per normalise block

struct SegmentStats {
  float hi, lo, rstd, pad;
};

// Block-wide sum of two values; every thread gets the same bits.
__device__ __forceinline__ float2 block_sum2(float a, float b, float2* shared) {
  a = dev::warp_sum(a);
  b = dev::warp_sum(b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // an earlier reduction's readers are done with `shared`
  if (lane == 0) shared[warp] = make_float2(a, b);
  __syncthreads();
  const float2 t = lane < int(blockDim.x / 32) ? shared[lane] : make_float2(0.0f, 0.0f);
  return make_float2(dev::warp_sum(t.x), dev::warp_sum(t.y));
}

// Block i: chunk i % chunks of segment i / chunks. out[i] = (mean, M2) of the chunk, in double.
template <typename T>
__global__ void __launch_bounds__(kThreads) group_moments_kernel(const T* x, int64_t segment_len, int chunks,
                                                                  double2* out) {
  __shared__ float2 shared[32];
  const int64_t segment = blockIdx.x / unsigned(chunks);
  const int chunk = int(blockIdx.x - segment * chunks);
  const int64_t start = int64_t(chunk) * kSegmentChunk;
  const int len = int(min(kSegmentChunk, segment_len - start));
  const T* p = x + segment * segment_len + start;
  float v[kPerThread];
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int idx = i * kThreads + int(threadIdx.x);
    v[i] = idx < len ? dev::to_f32(p[idx]) : 0.0f;
    s += v[i];
  }
  const float centre = block_sum2(s, 0.0f, shared).x / float(len);
  float d1 = 0.0f, d2 = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    if (i * kThreads + int(threadIdx.x) < len) {
      const float d = v[i] - centre;
      d1 += d;
      d2 = fmaf(d, d, d2);
    }
  }
  const float2 sums = block_sum2(d1, d2, shared);
  if (threadIdx.x == 0) {
    const double n = double(len), sd = double(sums.x);
    out[blockIdx.x] = make_double2(double(centre) + sd / n, fmax(double(sums.y) - sd * sd / n, 0.0));
  }
}

// (n, mean, m2) ← the merge of itself with (nb, mb, m2b) (Chan et al.).
__device__ __forceinline__ void merge(double& n, double& mean, double& m2, double nb, double mb, double m2b) {
  if (nb == 0.0) return;
  if (n == 0.0) {
    n = nb, mean = mb, m2 = m2b;
    return;
  }
  const double total = n + nb, delta = mb - mean;
  mean += delta * nb / total;
  m2 += m2b + delta * delta * n * nb / total;
  n = total;
}

__global__ void __launch_bounds__(32 * kStatsWarps) group_stats_kernel(const double2* moments, int64_t segments,
                                                                        int chunks, int64_t segment_len, float eps,
                                                                        SegmentStats* stats) {
  const int64_t segment = int64_t(blockIdx.x) * kStatsWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (segment >= segments) return;  // the whole warp leaves together
  double n = 0.0, mean = 0.0, m2 = 0.0;
  for (int c = lane; c < chunks; c += 32) {
    const double2 m = moments[segment * chunks + c];
    merge(n, mean, m2, double(min(kSegmentChunk, segment_len - int64_t(c) * kSegmentChunk)), m.x, m.y);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const double on = __shfl_xor_sync(0xFFFFFFFFu, n, offset);
    const double om = __shfl_xor_sync(0xFFFFFFFFu, mean, offset);
    const double o2 = __shfl_xor_sync(0xFFFFFFFFu, m2, offset);
    merge(n, mean, m2, on, om, o2);
  }
  if (lane == 0) {
    SegmentStats s;
    s.hi = float(mean);
    s.lo = float(mean - double(s.hi));
    s.rstd = float(1.0 / sqrt(m2 / n + double(eps)));
    s.pad = 0.0f;
    stats[segment] = s;
  }
}

// Block i: values [part·kPlaneBlock, +kPlaneBlock) of channel plane i / parts.
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) group_normalize_kernel(const T* x, T* y, int64_t hw, int64_t channels,
                                                                    int64_t channels_per_group, int64_t groups,
                                                                    int parts, const float* gamma, const float* beta,
                                                                    const SegmentStats* stats, bool silu) {
  const int64_t plane = blockIdx.x / unsigned(parts);
  const int64_t part = blockIdx.x - plane * parts;
  const int64_t start = part * kPlaneBlock + int64_t(threadIdx.x) * kChunk;
  if (start >= hw) return;
  const int64_t image = plane / channels, channel = plane - image * channels;
  const SegmentStats st = stats[image * groups + channel / channels_per_group];
  const float a = float(double(st.rstd) * double(gamma[channel])), c = beta[channel];
  const int n = int(min(int64_t(kChunk), hw - start));
  float v[kChunk];
  dev::load_chunk<kVec>(x + plane * hw + start, n, v);
#pragma unroll
  for (int e = 0; e < kChunk; ++e) {
    float r = fmaf((v[e] - st.hi) - st.lo, a, c);
    if (silu) r = r / (1.0f + expf(-r));
    v[e] = r;
  }
  dev::store_chunk<kVec>(y + plane * hw + start, n, v);
}

int64_t chunks_of(int64_t segment_len) { return (segment_len + kSegmentChunk - 1) / kSegmentChunk; }

void bad(const std::string& what) { fail(FX_ERR_INVALID_ARGUMENT, "group_norm: " + what); }

template <typename T>
void run(const T* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups, const float* gamma,
         const float* beta, float eps, bool silu, T* y, void* workspace, Stream stream) {
  const int64_t cpg = channels / groups, segment_len = cpg * hw, segments = batch * groups;
  const int64_t chunks = chunks_of(segment_len);
  auto* moments = static_cast<double2*>(workspace);
  auto* stats = reinterpret_cast<SegmentStats*>(moments + segments * chunks);
  const cudaStream_t s = as_cuda_stream(stream);

  group_moments_kernel<T><<<unsigned(segments * chunks), kThreads, 0, s>>>(x, segment_len, int(chunks), moments);
  check_launch("group_norm(moments)");
  group_stats_kernel<<<unsigned((segments + kStatsWarps - 1) / kStatsWarps), 32 * kStatsWarps, 0, s>>>(
      moments, segments, int(chunks), segment_len, eps, stats);
  check_launch("group_norm(statistics)");
  const int64_t parts = (hw + kPlaneBlock - 1) / kPlaneBlock;
  const unsigned blocks = unsigned(batch * channels * parts);
  const bool vec = dev::aligned16(x) && dev::aligned16(y) && dev::stride16(hw, sizeof(T));
  if (vec) {
    group_normalize_kernel<T, true><<<blocks, kThreads, 0, s>>>(x, y, hw, channels, cpg, groups, int(parts), gamma,
                                                                beta, stats, silu);
  } else {
    group_normalize_kernel<T, false><<<blocks, kThreads, 0, s>>>(x, y, hw, channels, cpg, groups, int(parts), gamma,
                                                                 beta, stats, silu);
  }
  check_launch("group_norm(normalise)");
}

}  // namespace

size_t group_norm_workspace_bytes(int64_t batch, int64_t channels, int64_t hw, int64_t groups) {
  if (batch < 0 || channels < 1 || hw < 1 || groups < 1 || channels % groups != 0) return 0;
  const int64_t segments = batch * groups;
  return size_t(segments * chunks_of(channels / groups * hw)) * sizeof(double2) + size_t(segments) * sizeof(SegmentStats);
}

void group_norm(DType act, const void* x, int64_t batch, int64_t channels, int64_t hw, int64_t groups,
                const float* gamma, const float* beta, float eps, bool silu, void* y, void* workspace, Stream stream) {
  if (act != DType::F32 && act != DType::BF16)
    fail(FX_ERR_UNSUPPORTED, std::string("group_norm: activations must be F32 or BF16, not ") + dtype_name(act));
  if (batch < 0 || channels < 1 || hw < 1 || groups < 1) bad("empty shape");
  if (channels % groups != 0)
    bad(std::to_string(channels) + " channels are not divisible into " + std::to_string(groups) + " groups");
  const int64_t chunks = chunks_of(channels / groups * hw);
  if (batch * groups * chunks > INT_MAX || batch * channels * ((hw + kPlaneBlock - 1) / kPlaneBlock) > INT_MAX)
    bad("tensor too large for one launch");
  if (batch == 0) return;
  if (x == nullptr || y == nullptr || gamma == nullptr || beta == nullptr || workspace == nullptr) bad("null pointer");
  if (!dev::aligned16(workspace)) bad("the workspace must be 16-byte aligned");
  if (act == DType::F32) {
    run(static_cast<const float*>(x), batch, channels, hw, groups, gamma, beta, eps, silu, static_cast<float*>(y),
        workspace, stream);
  } else {
    run(static_cast<const bf16*>(x), batch, channels, hw, groups, gamma, beta, eps, silu, static_cast<bf16*>(y),
        workspace, stream);
  }
}

}  // namespace fx::cuda
