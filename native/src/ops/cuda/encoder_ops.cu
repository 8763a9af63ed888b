// The data-movement kernels of the autoencoder and the text encoders (kernels.h): nearest 2× upsampling,
// transpose, the latent scale/shift, embedding lookup and T5's relative-position bias. Each moves every
// byte once; none does arithmetic worth the name, so the aim is coalesced access and no integer division
// per element:
//   * upsample_nearest2x: one block row per input row (planes·H of them), one thread per input column; input
//     row r of any plane lands at output rows 2r, 2r + 1, which start at 4W·r in the output (no division).
//   * transpose: 32×32 tiles through shared memory (33-float rows: no bank conflicts), reads coalesced along
//     the source rows, writes along the destination rows; += reads the destination in the same pattern.
//   * scale_latents: one thread per element, in f64 as the CPU computes it, so f32 results are the CPU's bits.
//   * embedding: one block row per output row, threads along the hidden dimension, fx::convert's scalar
//     functions for the table's dtype (the CPU's bits).
//   * relative_position_bias: one block row per (head, query row), threads along the keys; out[h, i, j] =
//     table[bucket_of[j − (q0 + i) + L − 1], h] — the bucket table is the host's (models/text_encoders.cpp).
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
using dev::Tag;

constexpr int kThreads = 256;
constexpr unsigned kMaxGridY = 65535;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;

template <typename F>
void with_act(DType act, const char* op, F&& f) {
  switch (act) {
    case DType::F32: f(Tag<float>{}); return;
    case DType::BF16: f(Tag<bf16>{}); return;
    default: break;
  }
  fail(FX_ERR_UNSUPPORTED, std::string(op) + ": activations must be F32 or BF16, not " + dtype_name(act));
}

void require(bool condition, const char* op, const std::string& what) {
  if (!condition) fail(FX_ERR_INVALID_ARGUMENT, std::string(op) + ": " + what);
}

unsigned grid_y(int64_t rows) { return unsigned(std::min<int64_t>(rows, kMaxGridY)); }

// ---- upsample ----

template <typename T>
__global__ void __launch_bounds__(kThreads) upsample2x_kernel(const T* x, int64_t rows, int64_t width, T* y) {
  const int64_t col = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (col >= width) return;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const T v = x[row * width + col];
    T* out = y + row * 4 * width + 2 * col;
    out[0] = v;
    out[1] = v;
    out[2 * width] = v;
    out[2 * width + 1] = v;
  }
}

// ---- transpose ----

constexpr int kTile = 32, kTileRows = 8;

template <typename T>
__global__ void __launch_bounds__(kTile* kTileRows) transpose_kernel(const T* src, int64_t rows, int64_t cols,
                                                                    int64_t lds, T* dst, int64_t ldd, bool accumulate) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t c0 = int64_t(blockIdx.x) * kTile;
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  for (int64_t t = blockIdx.y; t < row_tiles; t += gridDim.y) {
    const int64_t r0 = t * kTile;
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t r = r0 + j, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[j][threadIdx.x] = dev::to_f32(src[r * lds + c]);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t out_row = c0 + j, out_col = r0 + threadIdx.x;  // dst[c][r] = src[r][c]
      if (out_row < cols && out_col < rows) {
        T* d = dst + out_row * ldd + out_col;
        float v = tile[threadIdx.x][j];
        if (accumulate) v = dev::to_f32(*d) + v;
        *d = dev::from_f32<T>(v);
      }
    }
    __syncthreads();
  }
}

// ---- scale_latents ----

template <typename T>
__global__ void __launch_bounds__(kThreads) scale_latents_kernel(const T* x, int64_t n, double scale, double shift,
                                                                  bool to_model, T* y) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const double v = double(dev::to_f32(x[i]));
    // Explicit IEEE operations: the CPU's d / scale + shift and scale · (d − shift), nothing fused.
    const double r = to_model ? __dadd_rn(__ddiv_rn(v, scale), shift) : __dmul_rn(scale, __dsub_rn(v, shift));
    y[i] = dev::from_f32<T>(float(r));
  }
}

// ---- embedding ----

__device__ __forceinline__ float table_value(DType dtype, const void* row, int64_t c) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(row)[c];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(row)[c]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(row)[c]);
    case DType::F8_E4M3FN: return e4m3fn_to_f32(static_cast<const uint8_t*>(row)[c]);
    case DType::F8_E5M2: return e5m2_to_f32(static_cast<const uint8_t*>(row)[c]);
    default: return f64_to_f32(static_cast<const double*>(row)[c]);  // F64 (the host admits nothing else)
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) embedding_kernel(DType dtype, const uint8_t* table, int64_t hidden,
                                                              size_t row_bytes, const int32_t* ids, int64_t count,
                                                              T* out, int64_t ld) {
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= hidden) return;
  for (int64_t r = blockIdx.y; r < count; r += gridDim.y) {
    const uint8_t* row = table + size_t(ids[r]) * row_bytes;
    out[r * ld + c] = dev::from_f32<T>(table_value(dtype, row, c));
  }
}

// ---- relative position bias ----

__global__ void __launch_bounds__(kThreads) relative_position_bias_kernel(const float* table, int64_t heads,
                                                                          const int32_t* bucket_of, int64_t q0,
                                                                          int64_t rows, int64_t seq, float* out) {
  const int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= seq) return;
  for (int64_t hi = blockIdx.y; hi < heads * rows; hi += gridDim.y) {
    const int64_t h = hi / rows, i = hi - h * rows;
    const int32_t bucket = bucket_of[j - (q0 + i) + seq - 1];
    out[hi * seq + j] = table[int64_t(bucket) * heads + h];
  }
}

}  // namespace

void upsample_nearest2x(DType act, const void* x, int64_t planes, int64_t height, int64_t width, void* y,
                        Stream stream) {
  with_act(act, "upsample_nearest2x", [&](auto tag) {
    using T = typename decltype(tag)::type;
    require(planes >= 0 && height >= 1 && width >= 1, "upsample_nearest2x", "empty shape");
    const int64_t rows = planes * height;
    if (rows == 0) return;
    require(x != nullptr && y != nullptr, "upsample_nearest2x", "null pointer");
    const dim3 grid(unsigned((width + kThreads - 1) / kThreads), grid_y(rows));
    upsample2x_kernel<T><<<grid, kThreads, 0, as_cuda_stream(stream)>>>(static_cast<const T*>(x), rows, width,
                                                                         static_cast<T*>(y));
    check_launch("upsample_nearest2x");
  });
}

void transpose(DType act, const void* src, int64_t rows, int64_t cols, int64_t lds, void* dst, int64_t ldd,
               bool accumulate, Stream stream) {
  with_act(act, "transpose", [&](auto tag) {
    using T = typename decltype(tag)::type;
    require(rows >= 0 && cols >= 0 && lds >= cols && ldd >= rows, "transpose", "bad shape or strides");
    if (rows == 0 || cols == 0) return;
    require(src != nullptr && dst != nullptr, "transpose", "null pointer");
    const dim3 grid(unsigned((cols + kTile - 1) / kTile), grid_y((rows + kTile - 1) / kTile));
    transpose_kernel<T><<<grid, dim3(kTile, kTileRows), 0, as_cuda_stream(stream)>>>(
        static_cast<const T*>(src), rows, cols, lds, static_cast<T*>(dst), ldd, accumulate);
    check_launch("transpose");
  });
}

void scale_latents(DType act, const void* x, int64_t n, double scale, double shift, bool to_model, void* y,
                   Stream stream) {
  with_act(act, "scale_latents", [&](auto tag) {
    using T = typename decltype(tag)::type;
    require(n >= 0, "scale_latents", "negative size");
    if (n == 0) return;
    require(x != nullptr && y != nullptr, "scale_latents", "null pointer");
    const unsigned blocks = unsigned(std::min(kMaxBlocks, (n + kThreads - 1) / kThreads));
    scale_latents_kernel<T><<<blocks, kThreads, 0, as_cuda_stream(stream)>>>(static_cast<const T*>(x), n, scale, shift,
                                                                              to_model, static_cast<T*>(y));
    check_launch("scale_latents");
  });
}

void embedding(DType table_dtype, const void* table, int64_t hidden, const int32_t* ids, int64_t count,
               DType out_dtype, void* out, int64_t ld_out, Stream stream) {
  switch (table_dtype) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
    case DType::F8_E4M3FN:
    case DType::F8_E5M2:
    case DType::F64: break;
    default:
      fail(FX_ERR_UNSUPPORTED, std::string("embedding: a table of ") + dtype_name(table_dtype) + " is not a float table");
  }
  with_act(out_dtype, "embedding", [&](auto tag) {
    using T = typename decltype(tag)::type;
    require(hidden >= 1 && count >= 0 && ld_out >= hidden, "embedding", "bad shape or stride");
    if (count == 0) return;
    require(table != nullptr && ids != nullptr && out != nullptr, "embedding", "null pointer");
    const dim3 grid(unsigned((hidden + kThreads - 1) / kThreads), grid_y(count));
    embedding_kernel<T><<<grid, kThreads, 0, as_cuda_stream(stream)>>>(
        table_dtype, static_cast<const uint8_t*>(table), hidden, size_t(hidden) * dtype_size(table_dtype), ids, count,
        static_cast<T*>(out), ld_out);
    check_launch("embedding");
  });
}

void relative_position_bias(const float* table, int64_t heads, const int32_t* bucket_of, int64_t q0, int64_t rows,
                            int64_t seq, float* out, Stream stream) {
  require(heads >= 1 && rows >= 0 && seq >= 1 && q0 >= 0 && q0 + rows <= seq, "relative_position_bias",
          "bad shape: heads " + std::to_string(heads) + ", rows [" + std::to_string(q0) + ", " +
              std::to_string(q0 + rows) + ") of " + std::to_string(seq));
  if (rows == 0) return;
  require(table != nullptr && bucket_of != nullptr && out != nullptr, "relative_position_bias", "null pointer");
  const dim3 grid(unsigned((seq + kThreads - 1) / kThreads), grid_y(heads * rows));
  relative_position_bias_kernel<<<grid, kThreads, 0, as_cuda_stream(stream)>>>(table, heads, bucket_of, q0, rows, seq,
                                                                                out);
  check_launch("relative_position_bias");
}

}  // namespace fx::cuda
