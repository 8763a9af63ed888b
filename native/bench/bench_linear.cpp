// Throughput of the CPU linear layer (ops/cpu/linear.h) on FLUX.1 shapes, against this CPU's measured peak.
//
// Peak: PeakF32Fma / PeakBf16Dot run 12 independent dependency chains of vfmadd231ps (or vdpbf16ps) on
// zmm registers in every thread of the global pool at once. 12 chains cover the FMA latency (4 cycles)
// times the pipes (2) with room to spare, so the loop is bound by issue throughput alone: that is the
// most this CPU's cores can multiply-add, at whatever clock they hold with all cores busy.
//
// Shared machine: other processes compete for the two cores, so wall-clock rates swing with their load.
// The efficiency counters therefore use process CPU time (CLOCK_PROCESS_CPUTIME_ID, all our threads):
//   core_FLOPS = flops / CPU-seconds       (what one core achieves while it runs our code)
//   pct_peak   = core_FLOPS / peak core_FLOPS of the instruction the path uses (f32 FMA; vdpbf16ps for
//                the bf16-activations path), the peak measured the same way (best of 5, measured_peak()).
// CPU time excludes time a thread sleeps waiting for the others, so pct_peak does not see load
// imbalance between threads; FLOPS (wall clock) does, and is the number to trust on an idle machine.
//
// Shapes: m = 256 tokens (a 512×512 image is 1024 image tokens + 512 text; 256 keeps one run short on
// two cores) × the real (n, k) of the FLUX.1 layers; m = 1 for the modulation layers, where reading W is
// the whole cost (bytes_per_second counts the weight bytes). Weights are packed once, outside the loop.
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "fluxnative.h"
#include "ops/cpu/linear.h"

namespace {

using fx::DType;
using fx::cpu::LinearPath;

constexpr int kChains = 12;

__attribute__((target("avx512f"))) float fma_chains(int64_t iters) {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  // a·0.9999999 + 1e-7 converges instead of overflowing, and never goes subnormal.
  const __m512 b = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], b, c);
  }
  __m512 s = acc[0];
  for (int j = 1; j < kChains; ++j) s = _mm512_add_ps(s, acc[j]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bf16"))) float dpbf16_chains(int64_t iters) {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F803F80);   // (1.0, 1.0) in bf16
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x33803380);   // (~6e-8, ~6e-8)
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < kChains; ++j) s = _mm512_add_ps(s, acc[j]);
  return _mm512_reduce_add_ps(s);
}

enum class PeakKind { F32Fma, Bf16Dot };

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

bool peak_supported(PeakKind kind) {
  const uint32_t f = fx::cpu_features();
  return (f & FX_CPU_AVX512F) && (kind == PeakKind::F32Fma || (f & FX_CPU_AVX512_BF16));
}

// Flops of `iters` iterations on every thread of the pool.
double run_peak(PeakKind kind, int64_t iters, fx::ThreadPool& pool) {
  std::atomic<float> sink{0};
  const int threads = pool.size();
  pool.parallel_for(threads, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float r = kind == PeakKind::F32Fma ? fma_chains(iters) : dpbf16_chains(iters);
      sink.store(r, std::memory_order_relaxed);
    }
  });
  benchmark::DoNotOptimize(sink.load());
  const double per_instr = kind == PeakKind::F32Fma ? 16 * 2 : 16 * 2 * 2;
  return static_cast<double>(iters) * kChains * per_instr * threads;
}

void PeakF32Fma(benchmark::State& state) {
  if (!peak_supported(PeakKind::F32Fma)) return state.SkipWithError("no AVX-512F");
  double flops = 0;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) flops += run_peak(PeakKind::F32Fma, 1 << 22, fx::ThreadPool::global());
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
  state.counters["core_FLOPS"] = flops / (process_cpu_seconds() - cpu0);
  state.counters["threads"] = fx::ThreadPool::global().size();
}
BENCHMARK(PeakF32Fma)->UseRealTime()->Unit(benchmark::kMillisecond);

void PeakBf16Dot(benchmark::State& state) {
  if (!peak_supported(PeakKind::Bf16Dot)) return state.SkipWithError("no AVX512-BF16");
  double flops = 0;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) flops += run_peak(PeakKind::Bf16Dot, 1 << 22, fx::ThreadPool::global());
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
  state.counters["core_FLOPS"] = flops / (process_cpu_seconds() - cpu0);
  state.counters["threads"] = fx::ThreadPool::global().size();
}
BENCHMARK(PeakBf16Dot)->UseRealTime()->Unit(benchmark::kMillisecond);

// The peak per core (flop per CPU-second) for the linear benchmarks' pct_peak: best of 5, measured once.
double measured_peak(PeakKind kind) {
  static double cached[2] = {0, 0};
  double& peak = cached[static_cast<int>(kind)];
  if (peak == 0 && peak_supported(kind)) {
    for (int rep = 0; rep < 5; ++rep) {
      const double cpu0 = process_cpu_seconds();
      const double flops = run_peak(kind, 1 << 21, fx::ThreadPool::global());
      peak = std::max(peak, flops / (process_cpu_seconds() - cpu0));
    }
  }
  return peak;
}

struct Case {
  int64_t m, n, k;
  DType dtype;
  LinearPath path;
  fx::cpu::Activation act;
};

void bench_linear(benchmark::State& state, Case c) {
  if (!fx::cpu::linear_path_supported(c.path, c.dtype)) return state.SkipWithError("path not supported here");
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(c.n * c.k));
  for (float& v : w) v = normal(rng) * 0.02f;
  std::vector<uint8_t> bytes;
  std::vector<float> row_scale;
  fx::cpu::Weights weights;
  weights.dtype = c.dtype;
  weights.n = c.n;
  weights.k = c.k;
  if (c.dtype == DType::F32) {
    bytes.resize(w.size() * 4);
    std::memcpy(bytes.data(), w.data(), bytes.size());
  } else if (c.dtype == DType::BF16) {
    bytes.resize(w.size() * 2);
    fx::convert(DType::F32, w.data(), DType::BF16, bytes.data(), w.size(), fx::Overflow::Saturate);
  } else {
    bytes.resize(w.size());
    row_scale.resize(static_cast<size_t>(c.n));
    fx::cpu::quantize_e4m3_per_row(w.data(), c.n, c.k, bytes.data(), row_scale.data());
    weights.row_scale = row_scale.data();
  }
  weights.data = bytes.data();
  const fx::cpu::PackedWeights packed = fx::cpu::pack_weights(weights);
  std::vector<float>().swap(w);
  std::vector<float> x(static_cast<size_t>(c.m * c.k)), bias(static_cast<size_t>(c.n)), y(static_cast<size_t>(c.m * c.n));
  for (float& v : x) v = normal(rng);
  for (float& v : bias) v = normal(rng);

  const PeakKind kind = c.path == LinearPath::Avx512Bf16 ? PeakKind::Bf16Dot : PeakKind::F32Fma;
  const double peak = measured_peak(kind);
  // Manual (wall) time, so that the elapsed time is known here and pct_peak can be a plain number.
  double seconds = 0;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    fx::cpu::linear_with_path(c.path, x.data(), c.m, c.k, packed, bias.data(), c.act, y.data(), c.n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    seconds += s;
  }
  const double flops = 2.0 * c.m * c.n * c.k * static_cast<double>(state.iterations());
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
  const double core_flops = flops / (process_cpu_seconds() - cpu0);
  state.counters["core_FLOPS"] = core_flops;
  if (peak > 0) state.counters["pct_peak"] = core_flops / peak * 100;
  state.SetBytesProcessed(static_cast<int64_t>(packed.bytes()) * static_cast<int64_t>(state.iterations()));
}

const char* dtype_label(DType d) { return d == DType::F32 ? "f32" : d == DType::BF16 ? "bf16" : "e4m3"; }

// Registered at start-up: each (shape, weight dtype, path) is its own benchmark.
const bool registered = [] {
  struct Layer {
    const char* name;
    int64_t n, k;
  };
  // n, k of the FLUX.1 transformer's linear layers (hidden 3072, MLP 12288, 24 heads × 128).
  const Layer layers[] = {
      {"attn_proj", 3072, 3072}, {"qkv", 9216, 3072},        {"mlp_up", 12288, 3072},
      {"mlp_down", 3072, 12288}, {"single_lin1", 21504, 3072}, {"single_lin2", 3072, 15360},
  };
  struct Variant {
    DType dtype;
    LinearPath path;
  };
  const Variant variants[] = {
      {DType::F32, LinearPath::Avx512},        {DType::BF16, LinearPath::Avx512},
      {DType::BF16, LinearPath::Avx512Bf16},   {DType::F8_E4M3FN, LinearPath::Avx512},
  };
  for (const Layer& l : layers) {
    for (const Variant& v : variants) {
      const std::string name = std::string("Linear/") + l.name + "/m256/" + dtype_label(v.dtype) + "/" +
                               fx::cpu::linear_path_name(v.path);
      benchmark::RegisterBenchmark(name.c_str(), bench_linear, Case{256, l.n, l.k, v.dtype, v.path, fx::cpu::Activation::None})
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  // The fused epilogue and the AVX2 path on one shape.
  benchmark::RegisterBenchmark("Linear/mlp_up_gelu/m256/bf16/avx512", bench_linear,
                               Case{256, 12288, 3072, DType::BF16, LinearPath::Avx512, fx::cpu::Activation::GeluTanh})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  for (DType d : {DType::F32, DType::BF16, DType::F8_E4M3FN}) {
    const std::string name = std::string("Linear/qkv/m256/") + dtype_label(d) + "/avx2";
    benchmark::RegisterBenchmark(name.c_str(), bench_linear, Case{256, 9216, 3072, d, LinearPath::Avx2, fx::cpu::Activation::None})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  // Modulation (double block: 6 × 3072 outputs from the 3072-wide vector), m = 1 and 2.
  for (int64_t m : {1, 2}) {
    for (const Variant& v : variants) {
      const std::string name = std::string("Linear/modulation/m") + std::to_string(m) + "/" + dtype_label(v.dtype) +
                               "/" + fx::cpu::linear_path_name(v.path);
      benchmark::RegisterBenchmark(name.c_str(), bench_linear, Case{m, 18432, 3072, v.dtype, v.path, fx::cpu::Activation::None})
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

}  // namespace
