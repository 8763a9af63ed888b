// fluxnative_step_bench: the time of one FLUX transformer forward (one denoising step) at the published width,
// on any backend, with no .NET and no downloaded weights — the number the GPU check reports beside PyTorch.
//
// It writes a transformer of FLUX.1's published shapes with random bf16 weights (models/tiny.h,
// FX_SHAPES_PUBLISHED; reused when the file is already there), loads it on --device, runs --warmup untimed
// and --repeat timed forwards on random inputs at the given image size (image tokens = (W/16)·(H/16)) and
// text length, and prints the median time, the GEMM TFLOP/s it implies, and an estimate for the full
// 19 + 38 blocks scaled by FLOPs (the embedders and final layer are a fixed, small part). Inputs and the
// output of the first forward go to --inputs/--out (safetensors) for a comparison with another
// implementation (benchmarks/transformer-step/compare_pytorch_cuda.py). --check-cpu runs the same forward
// on the CPU backend and prints the relative L2 between the two outputs.
//
// Each timed forward includes copying the inputs to the device and the output back (host-memory API).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/flux_transformer.h"
#include "models/tiny.h"

namespace {

struct Options {
  std::string device = "cpu", dir = "/tmp/fluxnative-step-bench", inputs, out, weights = "stored", activations = "f32";
  std::string variant = "dev";
  int depth = 1, depth_single = 2, width = 1024, height = 1024, txt = 512, batch = 1, warmup = 1, repeat = 5;
  bool check_cpu = false;
};

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr,
               "fluxnative_step_bench: %s\n"
               "usage: fluxnative_step_bench [--device cpu|cuda|cuda:N] [--variant dev|schnell] [--depth N] [--depth-single N]\n"
               "       [--width W] [--height H] [--txt L] [--batch B] [--weights stored|f32|bf16|fp8] [--activations f32|bf16]\n"
               "       [--warmup N] [--repeat N] [--dir DIR] [--inputs FILE] [--out FILE] [--check-cpu]\n",
               problem.c_str());
  std::exit(2);
}

int number(const std::string& name, const char* text, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < lo || v > hi)
    usage(name + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + " (got '" + text + "')");
  return static_cast<int>(v);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check-cpu") {
      o.check_cpu = true;
      continue;
    }
    if (i + 1 >= argc) usage(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--device") o.device = v;
    else if (a == "--variant") o.variant = v;
    else if (a == "--dir") o.dir = v;
    else if (a == "--inputs") o.inputs = v;
    else if (a == "--out") o.out = v;
    else if (a == "--weights") o.weights = v;
    else if (a == "--activations") o.activations = v;
    else if (a == "--depth") o.depth = number(a, v, 1, 19);
    else if (a == "--depth-single") o.depth_single = number(a, v, 1, 38);
    else if (a == "--width") o.width = number(a, v, 16, 4096);
    else if (a == "--height") o.height = number(a, v, 16, 4096);
    else if (a == "--txt") o.txt = number(a, v, 1, 512);
    else if (a == "--batch") o.batch = number(a, v, 1, 64);
    else if (a == "--warmup") o.warmup = number(a, v, 0, 100);
    else if (a == "--repeat") o.repeat = number(a, v, 1, 1000);
    else usage("unknown option " + a);
  }
  if (o.variant != "dev" && o.variant != "schnell") usage("--variant must be dev or schnell");
  if (o.width % 16 || o.height % 16) usage("--width and --height must be multiples of 16");
  return o;
}

fx::backend::WeightFormat weight_format(const std::string& name) {
  if (name == "stored") return fx::backend::WeightFormat::AsStored;
  if (name == "f32") return fx::backend::WeightFormat::F32;
  if (name == "bf16") return fx::backend::WeightFormat::BF16;
  if (name == "fp8") return fx::backend::WeightFormat::FP8;
  usage("--weights must be stored, f32, bf16 or fp8");
}

// 2 × multiply-adds of the token-wise linears and the two attention products per block (docs/bench.md's count).
struct Flops {
  double per_double, per_single, fixed;
};
Flops flops(const fx::models::FluxConfig& c, int64_t limg, int64_t ltxt, int batch) {
  const double H = double(c.hidden), M = double(c.mlp_hidden), L = double(limg + ltxt), b = batch;
  const double attention = 2 * L * L * H;
  return {2 * b * (L * (4 * H * H + 2 * H * M) + attention), 2 * b * (L * ((3 * H + M) * H + (H + M) * H) + attention),
          2 * b * (double(limg) * (double(c.in_channels) * H + H * double(c.out_channels)) + double(ltxt) * double(c.context_in_dim) * H)};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    namespace fs = std::filesystem;
    fs::create_directories(o.dir);
    const std::string model = (fs::path(o.dir) / ("flux1-" + o.variant + "-published-d" + std::to_string(o.depth) + "-s" +
                                                  std::to_string(o.depth_single) + ".safetensors"))
                                  .string();
    if (!fs::exists(model)) {
      fx_tiny_model_params p{};
      p.struct_size = sizeof p;
      p.kind = FX_MODEL_FLUX_TRANSFORMER;
      p.layout = FX_LAYOUT_BFL;
      p.dtype = FX_DTYPE_BF16;
      p.guidance = o.variant == "dev";
      p.shards = 1;
      p.seed = 1;
      p.depth = o.depth;
      p.depth_single = o.depth_single;
      p.shapes = FX_SHAPES_PUBLISHED;
      const auto t0 = std::chrono::steady_clock::now();
      fx::models::write_tiny_model(p, model);
      std::printf("wrote %s in %.1f s\n", model.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const auto checkpoint = fx::io::Checkpoint::open(model);
    const fx::backend::Precision precision =
        o.activations == "bf16" ? fx::backend::Precision::Bf16Activations : fx::backend::Precision::Exact;
    auto backend = fx::backend::backend_for(fx::backend::Device::parse(o.device));
    auto t0 = std::chrono::steady_clock::now();
    const auto flux = fx::models::FluxTransformer::load(*checkpoint, weight_format(o.weights), precision, backend);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const fx::models::FluxConfig& c = flux->config();

    // Inputs (docs/flux-model.md §4.4): img_ids (0, row, col), txt_ids zero; values N(0, 1).
    const int64_t gh = o.height / 16, gw = o.width / 16, limg = gh * gw, ltxt = o.txt, B = o.batch;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto random = [&](size_t n) {
      std::vector<float> v(n);
      for (float& x : v) x = normal(rng);
      return v;
    };
    const std::vector<float> img = random(size_t(B * limg * c.in_channels)), txt = random(size_t(B * ltxt * c.context_in_dim)),
                             y = random(size_t(B * c.vec_in_dim));
    std::vector<float> img_ids(size_t(B * limg * 3), 0.0f), txt_ids(size_t(B * ltxt * 3), 0.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < limg; ++i) {
        img_ids[size_t((b * limg + i) * 3 + 1)] = float(i / gw);
        img_ids[size_t((b * limg + i) * 3 + 2)] = float(i % gw);
      }
    const std::vector<float> timesteps(size_t(B), 0.7f), guidance(size_t(B), 3.5f);
    fx::models::FluxInputs in;
    in.batch = B;
    in.img_tokens = limg;
    in.txt_tokens = ltxt;
    in.img = img.data();
    in.img_ids = img_ids.data();
    in.txt = txt.data();
    in.txt_ids = txt_ids.data();
    in.y = y.data();
    in.timesteps = timesteps.data();
    in.guidance = c.guidance_embed ? guidance.data() : nullptr;
    std::vector<float> out(size_t(B * limg * c.out_channels), std::nanf(""));

    std::vector<double> ms;
    for (int i = 0; i < o.warmup + o.repeat; ++i) {
      t0 = std::chrono::steady_clock::now();
      flux->forward(in, out.data());
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i >= o.warmup) ms.push_back(t);
    }
    const Flops f = flops(c, limg, ltxt, o.batch);
    const double here = o.depth * f.per_double + o.depth_single * f.per_single + f.fixed;
    const double full = 19 * f.per_double + 38 * f.per_single + f.fixed;
    const double med = median(ms);
    std::printf("backend     %s\n", backend->describe().c_str());
    std::printf("model       %s, %d double + %d single blocks (published width), weights %s, activations %s; load %.2f s\n",
                o.variant.c_str(), o.depth, o.depth_single, o.weights.c_str(), o.activations.c_str(), load_s);
    std::printf("inputs      batch %d, %lld image + %lld text tokens (%dx%d)\n", o.batch, (long long)limg, (long long)ltxt,
                o.width, o.height);
    std::printf("forward     median %.2f ms, min %.2f ms, max %.2f ms over %d (after %d warm-up)\n", med,
                *std::min_element(ms.begin(), ms.end()), *std::max_element(ms.begin(), ms.end()), o.repeat, o.warmup);
    std::printf("throughput  %.3g TFLOP/s of GEMM work (%.3g TFLOP per forward)\n", here / (med * 1e-3) / 1e12, here / 1e12);
    std::printf("full model  ~%.1f ms per step at 19 + 38 blocks (scaled by FLOPs)\n", med * full / here);
    for (float v : out)
      if (!std::isfinite(v)) {
        std::fprintf(stderr, "fluxnative_step_bench: the output has a non-finite value\n");
        return 1;
      }

    if (!o.inputs.empty()) {
      auto t = [](const char* name, std::vector<int64_t> shape, const std::vector<float>& v) {
        return fx::io::TensorToWrite{name, fx::DType::F32, std::move(shape), v.data(), v.size() * sizeof(float)};
      };
      fx::io::write_safetensors(o.inputs, {t("img", {B, limg, c.in_channels}, img), t("img_ids", {B, limg, 3}, img_ids),
                                           t("txt", {B, ltxt, c.context_in_dim}, txt), t("txt_ids", {B, ltxt, 3}, txt_ids),
                                           t("y", {B, c.vec_in_dim}, y), t("timesteps", {B}, timesteps), t("guidance", {B}, guidance)},
                                {{"model", model}});
    }
    if (!o.out.empty())
      fx::io::write_safetensors(o.out, {{"out", fx::DType::F32, {B, limg, c.out_channels}, out.data(), out.size() * sizeof(float)}});
    if (o.check_cpu && o.device != "cpu") {
      const auto cpu = fx::models::FluxTransformer::load(*checkpoint, weight_format(o.weights), precision, nullptr);
      std::vector<float> ref(out.size(), std::nanf(""));
      cpu->forward(in, ref.data());
      double num = 0, den = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        num += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
        den += double(ref[i]) * ref[i];
      }
      const double rel = std::sqrt(num / den);
      std::printf("check       relative L2 against the CPU backend %.3g%s\n", rel, std::isfinite(rel) ? "" : " (not finite)");
      if (!std::isfinite(rel)) return 1;
    }
    return 0;
  } catch (const fx::Error& e) {
    std::fprintf(stderr, "fluxnative_step_bench: %s\n", e.what());
    return 1;
  }
}
