// CPU attention at FLUX shapes (head_dim 128; 1 or 4 of FLUX's 24 heads so a 2-core machine finishes
// in seconds; seq 1024 = 512² image + no text up to 4608 = 1024² image + 512 text), next to the AVX2
// path (the ISA capped at AVX2: what an AVX2-only machine runs), the portable path and the double
// reference on the same inputs. GFLOP/s counts 4·Lq·Lkv·D per head (the
// two matrix products); the softmax's exps are not counted.
// Then the bandwidth-bound norms at one single block's activation size ([4608, 3072] f32), with
// bytes = bytes read + bytes written.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/elementwise.h"

namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The ISA level a case runs at: the machine's best, AVX2 or portable (core/cpu_features.h).
enum class Level { Best, Avx2, Portable };

// Caps the ISA for the case; false (and the case skipped) when the machine lacks the level.
bool cap_at(benchmark::State& state, Level level, std::optional<fx::ScopedIsaCap>& cap) {
  if (level == Level::Avx2 && fx::isa_level_machine() < fx::IsaLevel::Avx2) {
    state.SkipWithError("this machine has no AVX2");
    return false;
  }
  cap.emplace(level == Level::Best   ? fx::isa_level()
              : level == Level::Avx2 ? fx::IsaLevel::Avx2
                                     : fx::IsaLevel::Portable);
  return true;
}

enum class Which { Kernel, Avx2, Portable, Reference };

// q, k, v read from a fused [L, 3·H·D] buffer as the single blocks produce it; out [L, H·D].
void bench_attention(benchmark::State& state, Which which) {
  const int64_t heads = state.range(0), seq = state.range(1), d = 128;
  const int64_t hd = heads * d;
  const std::vector<float> qkv = random_vector(size_t(seq * 3 * hd), 1);
  std::vector<float> out(size_t(seq * hd));
  fx::cpu::AttentionShape shape;
  shape.heads = heads;
  shape.seq_q = shape.seq_kv = seq;
  shape.head_dim = d;
  shape.scale = float(1.0 / std::sqrt(double(d)));
  const fx::cpu::AttentionOperand q{qkv.data(), seq * 3 * hd, 3 * hd, d};
  const fx::cpu::AttentionOperand k{qkv.data() + hd, seq * 3 * hd, 3 * hd, d};
  const fx::cpu::AttentionOperand v{qkv.data() + 2 * hd, seq * 3 * hd, 3 * hd, d};
  const fx::cpu::AttentionOutput o{out.data(), seq * hd, hd, d};
  std::optional<fx::ScopedIsaCap> cap;
  const Level level = which == Which::Avx2 ? Level::Avx2 : which == Which::Portable ? Level::Portable : Level::Best;
  if (!cap_at(state, level, cap)) return;
  for (auto _ : state) {
    switch (which) {
      case Which::Kernel:
      case Which::Avx2:
      case Which::Portable: fx::cpu::attention(shape, q, k, v, o); break;
      case Which::Reference: fx::cpu::attention_reference(shape, q, k, v, o); break;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double flops = 4.0 * double(seq) * double(seq) * double(d) * double(heads);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = fx::ThreadPool::global().size();
  state.SetLabel(which == Which::Reference ? "reference (1 thread, f64)" : fx::cpu::attention_path_name(d));
}

BENCHMARK_CAPTURE(bench_attention, kernel, Which::Kernel)
    ->Args({1, 1024})
    ->Args({4, 1024})
    ->Args({1, 2048})
    ->Args({1, 4608})
    ->Args({4, 4608})
    ->ArgNames({"heads", "seq"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_attention, avx2, Which::Avx2)
    ->Args({1, 1024})
    ->Args({4, 1024})
    ->Args({1, 4608})
    ->ArgNames({"heads", "seq"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_attention, portable, Which::Portable)
    ->Args({1, 1024})
    ->Args({1, 4608})
    ->ArgNames({"heads", "seq"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(bench_attention, reference, Which::Reference)
    ->Args({1, 1024})
    ->ArgNames({"heads", "seq"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);

constexpr int64_t kRows = 4608, kDim = 3072;

void bench_layernorm_modulate(benchmark::State& state, Level level) {
  std::optional<fx::ScopedIsaCap> cap;
  if (!cap_at(state, level, cap)) return;
  const std::vector<float> x = random_vector(size_t(kRows * kDim), 2);
  const std::vector<float> shift = random_vector(size_t(kDim), 3), scale = random_vector(size_t(kDim), 4);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    fx::cpu::layernorm_modulate(x.data(), kRows, kDim, kDim, shift.data(), scale.data(), 1e-6f, y.data(), kDim);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * kRows * kDim * 8);
  state.SetLabel(fx::cpu::elementwise_path_name());
}
BENCHMARK_CAPTURE(bench_layernorm_modulate, best, Level::Best)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(bench_layernorm_modulate, avx2, Level::Avx2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(bench_layernorm_modulate, portable, Level::Portable)->Unit(benchmark::kMillisecond)->UseRealTime();

// QK-norm on the q part of a fused qkv row (row stride 3·3072), in place: reads and writes q.
void bench_rms_norm_heads(benchmark::State& state, Level level) {
  std::optional<fx::ScopedIsaCap> cap;
  if (!cap_at(state, level, cap)) return;
  std::vector<float> qkv = random_vector(size_t(kRows * 3 * kDim), 5);
  const std::vector<float> w = random_vector(128, 6);
  for (auto _ : state) {
    fx::cpu::rms_norm_heads(qkv.data(), kRows, 3 * kDim, 24, 128, w.data(), 1e-6f);
    benchmark::DoNotOptimize(qkv.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * kRows * kDim * 8);
  state.SetLabel(fx::cpu::elementwise_path_name());
}
BENCHMARK_CAPTURE(bench_rms_norm_heads, best, Level::Best)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(bench_rms_norm_heads, avx2, Level::Avx2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(bench_rms_norm_heads, portable, Level::Portable)->Unit(benchmark::kMillisecond)->UseRealTime();

// GELU-tanh over the MLP half of a single block's linear1 output ([4608, 12288]).
void bench_gelu_tanh(benchmark::State& state, Level level) {
  std::optional<fx::ScopedIsaCap> cap;
  if (!cap_at(state, level, cap)) return;
  const std::vector<float> src = random_vector(size_t(kRows * 4 * kDim), 7);
  std::vector<float> x = src;
  for (auto _ : state) {
    fx::cpu::gelu_tanh(x.data(), int64_t(x.size()));
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
    state.PauseTiming();
    x = src;  // keep the inputs in the usual range rather than iterating GELU on itself
    state.ResumeTiming();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(src.size()) * 8);
  state.SetLabel(fx::cpu::elementwise_path_name());
}
BENCHMARK_CAPTURE(bench_gelu_tanh, best, Level::Best)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(bench_gelu_tanh, avx2, Level::Avx2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(bench_gelu_tanh, portable, Level::Portable)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
