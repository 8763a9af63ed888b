// Throughput of the CPU's bulk fx::convert on the conversions that loading checkpoints and quantising
// weights spend their time in. 16M elements: far larger than any cache, so the numbers are what a
// weight tensor streaming through memory gets. Bytes/s counts bytes read plus bytes written.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"

namespace {

constexpr size_t kElements = size_t(1) << 24;

// Source values of weight-like magnitudes (random signs, roughly normal in scale), so that the
// conversions take their common paths rather than the rare ones (NaN, overflow, subnormals).
std::vector<uint8_t> weight_like_source(fx::DType dtype) {
  std::mt19937 random(1);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> values(kElements);
  for (float& v : values) v = normal(random);
  std::vector<uint8_t> bytes(kElements * fx::dtype_size(dtype));
  fx::convert(fx::DType::F32, values.data(), dtype, bytes.data(), kElements, fx::Overflow::Saturate);
  return bytes;
}

void bench_convert(benchmark::State& state, fx::DType src, fx::DType dst) {
  const std::vector<uint8_t> source = weight_like_source(src);
  std::vector<uint8_t> target(kElements * fx::dtype_size(dst));
  for (auto _ : state) {
    fx::convert(src, source.data(), dst, target.data(), kElements, fx::Overflow::Saturate);
    benchmark::DoNotOptimize(target.data());
    benchmark::ClobberMemory();
  }
  const int64_t bytes_per_pass = int64_t(kElements * (fx::dtype_size(src) + fx::dtype_size(dst)));
  state.SetBytesProcessed(int64_t(state.iterations()) * bytes_per_pass);
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kElements));
  state.SetLabel(fx::convert_uses_simd() ? "F16C/AVX2 paths" : "baseline loop");
}

BENCHMARK_CAPTURE(bench_convert, bf16_to_f32, fx::DType::BF16, fx::DType::F32)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bench_convert, f32_to_bf16, fx::DType::F32, fx::DType::BF16)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bench_convert, f16_to_f32, fx::DType::F16, fx::DType::F32)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bench_convert, f32_to_e4m3fn, fx::DType::F32, fx::DType::F8_E4M3FN)->Unit(benchmark::kMillisecond);

}  // namespace
