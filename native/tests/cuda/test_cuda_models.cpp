// The autoencoder, the CLIP text tower and the T5 encoder loaded on the CUDA backend, against the same tiny
// models on the CPU backend (whose goldens tests/test_autoencoder.cpp and tests/test_text_encoders.cpp hold):
// one model graph, two backends. f32 weights and activations on both, so the outputs agree to f32 rounding
// (summation orders differ): relative L2 ≤ 1e-4. Outputs start as NaN, so anything left unwritten fails.
// The autoencoders cover the mid-block attention at 256 and at 512 channels (one head: the CUDA-core
// attention's two largest buckets), every convolution geometry (3×3, the Downsample's stride 2, 1×1
// shortcuts), GroupNorm with and without SiLU, upsampling, the transposes around the attention and the
// latent scale/shift; CLIP adds causal attention, QuickGELU, LayerNorm and pooling; T5 the embedding of a
// bf16-free f32 table, the relative-position bias and RMSNorm.
//
// CudaModels skips itself without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../test_support.h"
#include "backend/backend.h"
#include "cuda_test_support.h"
#include "fluxnative.h"
#include "io/checkpoint.h"
#include "models/autoencoder.h"
#include "models/text_encoders.h"
#include "models/tiny.h"

namespace {

using namespace fx::cuda_test;
using fx::backend::Backend;

class CudaModels : public fx::testing::TempDirTest {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
    fx::testing::TempDirTest::SetUp();
    cuda_ = fx::backend::backend_for(fx::backend::Device::cuda(0));
    cpu_ = fx::backend::cpu_backend();
  }
  std::shared_ptr<Backend> cuda_, cpu_;
};

fx_tiny_model_params tiny(int32_t kind, int32_t layout, int32_t hidden, int32_t heads, int32_t depth,
                          int32_t depth_single, uint64_t seed) {
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = kind;
  p.layout = layout;
  p.dtype = FX_DTYPE_F32;
  p.seed = seed;
  p.hidden_size = hidden;
  p.num_heads = heads;
  p.depth = depth;
  p.depth_single = depth_single;
  return p;
}

std::vector<float> normal_values(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) {
    x = dist(engine);
    if (x == 0.0f) x = 0.25f * scale;
  }
  return v;
}

TEST_F(CudaModels, AutoencoderDecodeAndEncodeMatchTheCpuBackend) {
  struct Case {
    int32_t ch, levels, blocks;
    int64_t h, w;  // latent size
  };
  // ch 64 / 3 levels: mid block at 256 channels; ch 128 / 3 levels: at 512 (FLUX's own width there).
  for (const Case& c : {Case{64, 3, 2, 3, 5}, Case{128, 3, 1, 4, 2}, Case{32, 2, 1, 6, 7}}) {
    SCOPED_TRACE("ch " + std::to_string(c.ch) + " levels " + std::to_string(c.levels));
    const std::string path = this->path("ae-" + std::to_string(c.ch) + ".safetensors");
    fx::models::write_tiny_model(tiny(FX_MODEL_AUTOENCODER, FX_LAYOUT_BFL, c.ch, 0, c.levels, c.blocks, 5), path);
    auto checkpoint = fx::io::Checkpoint::open(path);
    auto on_cpu = fx::models::Autoencoder::load(*checkpoint, cpu_);
    auto on_gpu = fx::models::Autoencoder::load(*checkpoint, cuda_);
    const int64_t f = on_cpu->config().downscale(), batch = 2;

    const std::vector<float> z = normal_values(size_t(batch * 16 * c.h * c.w), 21);
    std::vector<float> want(size_t(batch * 3 * c.h * f * c.w * f), kNaN), got(want.size(), kNaN);
    on_cpu->decode(z.data(), batch, c.h, c.w, want.data());
    on_gpu->decode(z.data(), batch, c.h, c.w, got.data());
    const double decode_err = relative_l2(got, want);
    EXPECT_LE(decode_err, 1e-4) << "decode";

    const std::vector<float> image = normal_values(want.size(), 22, 0.5f);
    std::vector<float> lat_want(z.size(), kNaN), lat_got(z.size(), kNaN);
    on_cpu->encode(image.data(), batch, c.h * f, c.w * f, lat_want.data());
    on_gpu->encode(image.data(), batch, c.h * f, c.w * f, lat_got.data());
    const double encode_err = relative_l2(lat_got, lat_want);
    EXPECT_LE(encode_err, 1e-4) << "encode";
    std::printf("[ models   ] autoencoder ch %d: decode %.2e, encode %.2e relative L2 (cuda vs cpu)\n", c.ch, decode_err,
                encode_err);
  }
}

struct TextRun {
  std::vector<float> hidden, pooled;
};

TextRun encode(const fx::models::TextEncoder& model, const std::vector<int32_t>& ids, int64_t batch, bool clip) {
  const int64_t length = int64_t(ids.size()) / batch, H = model.config().hidden;
  TextRun r;
  r.hidden.assign(size_t(batch * length * H), kNaN);
  if (clip) r.pooled.assign(size_t(batch * H), kNaN);
  model.encode(ids.data(), batch, length, r.hidden.data(), clip ? r.pooled.data() : nullptr);
  return r;
}

TEST_F(CudaModels, TextEncodersMatchTheCpuBackend) {
  struct Case {
    int32_t kind;
    const char* name;
    int64_t length;
  };
  for (const Case& c : {Case{FX_MODEL_CLIP_TEXT, "clip", 77}, Case{FX_MODEL_T5_ENCODER, "t5", 93}}) {
    SCOPED_TRACE(c.name);
    const std::string path = this->path(c.name);
    // head_dim 64, as CLIP-L and T5-XXL have.
    fx::models::write_tiny_model(tiny(c.kind, FX_LAYOUT_DIFFUSERS, 128, 2, 3, 0, 9), path);
    auto checkpoint = fx::io::Checkpoint::open(path);
    auto on_cpu = fx::models::TextEncoder::load(*checkpoint, fx::backend::WeightFormat::F32, cpu_);
    auto on_gpu = fx::models::TextEncoder::load(*checkpoint, fx::backend::WeightFormat::F32, cuda_);
    const bool clip = c.kind == FX_MODEL_CLIP_TEXT;
    const int64_t batch = 2, vocab = on_cpu->config().vocab_size;
    std::vector<int32_t> ids(size_t(batch * c.length));
    std::mt19937_64 engine(33);
    for (int32_t& id : ids) id = int32_t(engine() % uint64_t(vocab - 1));
    if (clip) {  // the pooled position: the largest id, at different places in the two rows
      ids[size_t(40)] = int32_t(vocab - 1);
      ids[size_t(c.length + 70)] = int32_t(vocab - 1);
    }
    const TextRun want = encode(*on_cpu, ids, batch, clip), got = encode(*on_gpu, ids, batch, clip);
    const double err = relative_l2(got.hidden, want.hidden);
    EXPECT_LE(err, 1e-4) << "hidden";
    if (clip) EXPECT_LE(relative_l2(got.pooled, want.pooled), 1e-4) << "pooled";
    std::printf("[ models   ] %s: hidden %.2e relative L2 (cuda vs cpu)\n", c.name, err);
  }
}

}  // namespace
