// Throughput of the autoencoder's direct convolution (ops/cpu/conv2d.h) at the published decoder's and
// encoder's layer shapes (docs/flux-model.md §7.2, §7.3), spatially reduced so one run stays short on two cores:
// the real 1024² decode runs these same layers at 4× (level 0) to 16× the pixels listed here, at the
// same per-pixel cost.
//
// Counters: FLOPS (2·out·in·kh·kw per output pixel, wall clock: the number to trust on an idle machine)
// and core_FLOPS (per CPU-second of all our threads, less sensitive to other load on a shared machine;
// compare with PeakF32Fma's core_FLOPS in bench_linear.cpp, the f32 FMA peak per core).
// GemmEquivalent runs the linear layer's packed GEMM on the (pixels × in·kh·kw) · (in·kh·kw × out)
// product the convolution is, without the im2col it would need: the bar the direct kernel has to clear.
//
// AutoencoderDecode times whole decodes (models/autoencoder.h) of random models written by the tiny-model
// writer: the default tiny one (ch 32, 2 levels) and one of the published structure (ch 128, ch_mult
// [1, 2, 4, 4], 2 res blocks: 84M weights, a 335 MB file written to the temp folder first) decoding a
// 32×32 latent to 256×256 pixels.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "io/checkpoint.h"
#include "models/autoencoder.h"
#include "models/tiny.h"
#include "core/cpu_features.h"
#include "ops/cpu/conv2d.h"
#include "ops/cpu/linear.h"

namespace {

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct ConvCase {
  int64_t cin, cout, h, w, k, stride;
  bool downsample;  // pad (0, 1, 0, 1) instead of "same"
};

fx::cpu::Conv2dShape shape_of(const ConvCase& c) {
  fx::cpu::Conv2dShape s;
  s.in_channels = c.cin;
  s.out_channels = c.cout;
  s.height = c.h;
  s.width = c.w;
  s.kernel_h = s.kernel_w = c.k;
  s.stride = c.stride;
  if (c.downsample) {
    s.pad_bottom = s.pad_right = 1;
  } else {
    s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = c.k / 2;
  }
  return s;
}

void finish(benchmark::State& state, double flops_per_iter, double cpu0) {
  const double flops = flops_per_iter * static_cast<double>(state.iterations());
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
  state.counters["core_FLOPS"] = flops / (process_cpu_seconds() - cpu0);
  state.counters["threads"] = fx::ThreadPool::global().size();
}

// The ISA level whose cap makes the kernels take `path`.
fx::IsaLevel isa_of(fx::cpu::ConvPath path) {
  switch (path) {
    case fx::cpu::ConvPath::Portable: return fx::IsaLevel::Portable;
    case fx::cpu::ConvPath::Avx2: return fx::IsaLevel::Avx2;
    default: return fx::isa_level();
  }
}

void bench_conv(benchmark::State& state, ConvCase c, fx::cpu::ConvPath path) {
  if (!fx::cpu::conv2d_path_supported(path)) return state.SkipWithError("path not supported here");
  const fx::cpu::Conv2dShape s = shape_of(c);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(c.cout * c.cin * c.k * c.k)), bias(static_cast<size_t>(c.cout));
  std::vector<float> x(static_cast<size_t>(c.cin * c.h * c.w));
  std::vector<float> y(static_cast<size_t>(c.cout * s.out_height() * s.out_width()));
  for (float& v : w) v = normal(rng) * 0.02f;
  for (float& v : bias) v = normal(rng);
  for (float& v : x) v = normal(rng);
  const fx::cpu::PackedConv packed = fx::cpu::pack_conv_weights(w.data(), c.cout, c.cin, c.k, c.k);
  fx::ScopedIsaCap cap(isa_of(path));
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    fx::cpu::conv2d(x.data(), 1, s, packed, bias.data(), fx::cpu::Activation::None, false, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  finish(state, 2.0 * c.cout * c.cin * c.k * c.k * s.out_height() * s.out_width(), cpu0);
}

void bench_gemm(benchmark::State& state, ConvCase c) {
  const fx::cpu::Conv2dShape s = shape_of(c);
  const int64_t m = s.out_height() * s.out_width(), k = c.cin * c.k * c.k, n = c.cout;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(n * k)), x(static_cast<size_t>(m * k)), y(static_cast<size_t>(m * n));
  for (float& v : w) v = normal(rng) * 0.02f;
  for (float& v : x) v = normal(rng);
  const fx::cpu::PackedWeights packed = fx::cpu::pack_weights(fx::cpu::Weights{fx::DType::F32, w.data(), n, k, nullptr});
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    fx::cpu::linear(x.data(), m, k, packed, nullptr, fx::cpu::Activation::None, y.data(), n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  finish(state, 2.0 * m * n * k, cpu0);
}

void bench_decode(benchmark::State& state, int32_t ch, int32_t levels, int32_t blocks, int64_t latent) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("fluxnative-bench-ae-" + std::to_string(ch) + "-" +
                                                    std::to_string(::getpid()));
  fs::create_directories(dir);
  fx_tiny_model_params p{};
  p.struct_size = sizeof(p);
  p.kind = FX_MODEL_AUTOENCODER;
  p.layout = FX_LAYOUT_BFL;
  p.dtype = FX_DTYPE_F32;
  p.shards = 1;
  p.seed = 1;
  p.hidden_size = ch;
  p.depth = levels;
  p.depth_single = blocks;
  const std::string path = (dir / "ae.safetensors").string();
  fx::models::write_tiny_model(p, path);
  std::unique_ptr<fx::models::Autoencoder> model;
  {
    const auto checkpoint = fx::io::Checkpoint::open(path);
    model = fx::models::Autoencoder::load(*checkpoint);
  }
  fs::remove_all(dir);
  const int64_t f = model->config().downscale();
  std::vector<float> z(static_cast<size_t>(16 * latent * latent)), pixels(static_cast<size_t>(3 * latent * f * latent * f));
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : z) v = normal(rng);
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    model->decode(z.data(), 1, latent, latent, pixels.data());
    benchmark::DoNotOptimize(pixels.data());
  }
  state.counters["cpu_seconds_per_decode"] = (process_cpu_seconds() - cpu0) / static_cast<double>(state.iterations());
  state.counters["threads"] = fx::ThreadPool::global().size();
  state.SetLabel(std::to_string(latent) + "x" + std::to_string(latent) + " latent -> " + std::to_string(latent * f) +
                 "x" + std::to_string(latent * f) + " pixels");
}

BENCHMARK_CAPTURE(bench_decode, tiny_ch32_2levels, 32, 2, 1, 32)->Name("AutoencoderDecode/tiny_ch32_2levels")
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bench_decode, published_ch128_4levels, 128, 4, 2, 32)
    ->Name("AutoencoderDecode/published_structure_256px")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(2);

const bool registered = [] {
  struct Layer {
    const char* name;
    ConvCase c;
  };
  // Decoder layers of a 256² decode (1/16 of the pixels of a 1024² one), the encoder's first downsample of a 256² image.
  const Layer layers[] = {
      {"dec_conv_in_16to512_32x32", {16, 512, 32, 32, 3, 1, false}},
      {"dec_mid_512_32x32", {512, 512, 32, 32, 3, 1, false}},
      {"dec_up2_512_64x64", {512, 512, 64, 64, 3, 1, false}},
      {"dec_up1_256_128x128", {256, 256, 128, 128, 3, 1, false}},
      {"dec_up0_128_256x256", {128, 128, 256, 256, 3, 1, false}},
      {"dec_up0_nin_256to128_256x256", {256, 128, 256, 256, 1, 1, false}},
      {"dec_conv_out_128to3_256x256", {128, 3, 256, 256, 3, 1, false}},
      {"enc_down0_stride2_128_256x256", {128, 128, 256, 256, 3, 2, true}},
  };
  for (const Layer& l : layers) {
    benchmark::RegisterBenchmark((std::string("Conv2d/") + l.name).c_str(),
                                 [c = l.c](benchmark::State& st) { bench_conv(st, c, fx::cpu::ConvPath::Auto); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  // The AVX2 and portable paths and the GEMM baseline on two representative shapes.
  for (const Layer& l : {layers[3], layers[4]}) {
    benchmark::RegisterBenchmark((std::string("Conv2dAvx2/") + l.name).c_str(),
                                 [c = l.c](benchmark::State& st) { bench_conv(st, c, fx::cpu::ConvPath::Avx2); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("Conv2dPortable/") + l.name).c_str(),
                                 [c = l.c](benchmark::State& st) { bench_conv(st, c, fx::cpu::ConvPath::Portable); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("Conv2dGemmEquivalent/") + l.name).c_str(),
                                 [c = l.c](benchmark::State& st) { bench_gemm(st, c); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
