// The autoencoder (models/autoencoder.h, C ABI fx_ae_*):
//  - against golden outputs of the independent float64 NumPy reference (tools/reference/ae_reference.py;
//    data in tests/data/ae/<case>/): each case regenerates its tiny model from the recorded parameters
//    and checks the weights fingerprint first, as the FLUX goldens do;
//  - against a plain composition of the kernels' double-precision references (conv2d_reference,
//    group_norm_reference, attention_reference, upsample_nearest2x_reference) written here from
//    docs/flux-model.md §7, reading the weights by their BFL names;
//  - layouts, stored dtypes, latent scale/shift from config.json, argument checks and cancellation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cpu_features.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/autoencoder.h"
#include "models/tiny.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/conv2d.h"

namespace {

namespace fs = std::filesystem;
using fx::models::Autoencoder;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> read_f32(const fx::io::Checkpoint& file, const std::string& name) {
  const auto* t = file.find(name);
  if (t == nullptr) throw std::runtime_error(file.path() + " has no tensor " + name);
  std::vector<float> values(t->element_count());
  fx::convert(t->dtype, t->data(), fx::DType::F32, values.data(), values.size(), fx::Overflow::Ieee);
  return values;
}

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

void fill_normal(std::vector<float>& v, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  for (float& x : v) x = dist(rng);
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

fx_tiny_model_params ae_params(int32_t layout, int32_t dtype, int32_t ch = 0, int32_t levels = 0, int32_t blocks = 0,
                               uint64_t seed = 1) {
  fx_tiny_model_params p{};
  p.struct_size = sizeof(p);
  p.kind = FX_MODEL_AUTOENCODER;
  p.layout = layout;
  p.dtype = dtype;
  p.shards = 1;
  p.seed = seed;
  p.hidden_size = ch;
  p.depth = levels;
  p.depth_single = blocks;
  return p;
}

// Writes a tiny autoencoder and opens it (BFL: one file; diffusers: the vae/ folder).
std::unique_ptr<fx::io::Checkpoint> write_ae(const fx_tiny_model_params& p, const fs::path& dir) {
  const fs::path path = p.layout == FX_LAYOUT_BFL ? dir / "ae.safetensors" : dir / "vae";
  fx::models::write_tiny_model(p, path.string());
  return fx::io::Checkpoint::open(path.string());
}

// ---------------------------------------------------------------------------------------------------
// Golden data

struct GoldenCase {
  std::string name;
  double tolerance;  // relative L2 of decoded and encoded
};

class AutoencoderGolden : public ::testing::TestWithParam<GoldenCase> {};

std::unique_ptr<fx::io::Checkpoint> regenerate_model(const nlohmann::json& meta, const fs::path& dir) {
  const auto pj = nlohmann::json::parse(meta["model_params"].get<std::string>());
  const std::string dtype = pj.value("dtype", "f32");
  fx_tiny_model_params params =
      ae_params(pj.value("layout", "bfl") == "bfl" ? FX_LAYOUT_BFL : FX_LAYOUT_DIFFUSERS,
                dtype == "f32" ? FX_DTYPE_F32 : dtype == "bf16" ? FX_DTYPE_BF16 : FX_DTYPE_F16,
                pj.value("hidden_size", 0), pj.value("depth", 0), pj.value("depth_single", 0),
                pj.value("seed", uint64_t(1)));
  params.shards = pj.value("shards", 1);
  params.num_heads = pj.value("num_heads", 0);
  auto checkpoint = write_ae(params, dir);

  const auto fingerprint = nlohmann::json::parse(meta["weights_fingerprint"].get<std::string>());
  double sum = 0, sum_sq = 0;
  for (const auto& t : checkpoint->tensors()) {
    for (float v : read_f32(*checkpoint, t.name)) {
      sum += v;
      sum_sq += static_cast<double>(v) * v;
    }
  }
  auto number = [](const nlohmann::json& j) { return j.is_string() ? std::stod(j.get<std::string>()) : j.get<double>(); };
  const double want_sum = number(fingerprint["sum"]), want_sq = number(fingerprint["sum_sq"]);
  EXPECT_EQ(checkpoint->tensors().size(), fingerprint["tensor_count"].get<size_t>());
  EXPECT_NEAR(sum, want_sum, 1e-9 * std::abs(want_sum) + 1e-9)
      << "the tiny-model writer changed: regenerate the goldens (tests/data/ae/README.md)";
  EXPECT_NEAR(sum_sq, want_sq, 1e-9 * want_sq) << "the tiny-model writer changed: regenerate the goldens";
  return checkpoint;
}

TEST_P(AutoencoderGolden, DecodeAndEncodeMatchTheReference) {
  const GoldenCase& c = GetParam();
  const fs::path data = fs::path(FX_TEST_DATA_DIR) / "ae" / c.name;
  ASSERT_TRUE(fs::exists(data / "expected.safetensors") && fs::exists(data / "inputs.safetensors"))
      << "no golden data at " << data << " (written by tools/reference/make_ae_goldens.py; see tests/data/ae/README.md)";
  const auto inputs = fx::io::Checkpoint::open((data / "inputs.safetensors").string());
  const auto expected_file = fx::io::Checkpoint::open((data / "expected.safetensors").string());
  nlohmann::json meta(expected_file->metadata());
  auto checkpoint = regenerate_model(meta, fresh_dir("ae-golden-" + c.name));
  auto model = Autoencoder::load(*checkpoint);
  const int64_t f = model->config().downscale();

  const auto& lshape = inputs->find("latents")->shape;
  const auto latents = read_f32(*inputs, "latents");
  const auto decoded = read_f32(*expected_file, "decoded");
  ASSERT_EQ(expected_file->find("decoded")->shape,
            (std::vector<int64_t>{lshape[0], 3, lshape[2] * f, lshape[3] * f}));
  const auto& pshape = inputs->find("pixels")->shape;
  const auto pixels = read_f32(*inputs, "pixels");
  const auto encoded = read_f32(*expected_file, "encoded");
  ASSERT_EQ(expected_file->find("encoded")->shape,
            (std::vector<int64_t>{pshape[0], model->config().z_channels, pshape[2] / f, pshape[3] / f}));

  // Every convolution path this machine has (the default one first).
  // (The ISA capped at each level in turn; a level whose convolution path is the one just run is skipped.)
  const fx::cpu::ConvPath best = fx::cpu::conv2d_active_path();
  std::string previous;
  for (int level = static_cast<int>(fx::isa_level()); level >= 0; --level) {
    fx::ScopedIsaCap cap(static_cast<fx::IsaLevel>(level));
    const fx::cpu::ConvPath path = fx::cpu::conv2d_active_path();
    const std::string label = fx::cpu::conv2d_path_name(path);
    if (label == previous) continue;
    previous = label;
    std::vector<float> out(decoded.size(), kNaN);
    model->decode(latents.data(), lshape[0], lshape[2], lshape[3], out.data());
    const double dec_error = relative_l2(out, decoded);
    std::vector<float> enc(encoded.size(), kNaN);
    model->encode(pixels.data(), pshape[0], pshape[2], pshape[3], enc.data());
    const double enc_error = relative_l2(enc, encoded);
    if (path == best) {
      RecordProperty("decoded_relative_l2", std::to_string(dec_error));
      RecordProperty("encoded_relative_l2", std::to_string(enc_error));
    }
    std::printf("[ golden   ] %s (%s path): decoded relative L2 %.3g, encoded %.3g (tolerance %.3g)\n", c.name.c_str(),
                label.c_str(), dec_error, enc_error, c.tolerance);
    EXPECT_LE(dec_error, c.tolerance) << label;
    EXPECT_LE(enc_error, c.tolerance) << label;
  }
}

// f32 compute throughout; bf16 files hold exact bf16 values, widened exactly, so the same bound holds.
INSTANTIATE_TEST_SUITE_P(Cases, AutoencoderGolden,
                         ::testing::Values(GoldenCase{"ae-f32-bfl", 5e-5}, GoldenCase{"ae-f32-diffusers", 5e-5},
                                           GoldenCase{"ae-bf16-bfl", 5e-5}, GoldenCase{"ae-4level-f32-bfl", 5e-5}),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) {
                           std::string name = info.param.name;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// ---------------------------------------------------------------------------------------------------
// A plain composition of the reference kernels, from docs/flux-model.md §7, on weights read by BFL name.

class ReferenceAe {
 public:
  ReferenceAe(const fx::io::Checkpoint& ckpt, int64_t ch, std::vector<int64_t> mult, int64_t blocks)
      : ckpt_(ckpt), ch_(ch), mult_(std::move(mult)), blocks_(blocks) {}

  // One image: [16, h, w] -> [3, h·f, w·f].
  std::vector<float> decode(const std::vector<float>& z, int64_t h, int64_t w) {
    std::vector<float> x(z.size());
    for (size_t i = 0; i < z.size(); ++i) x[i] = float(double(z[i]) / 0.3611 + 0.1159);
    const int64_t levels = int64_t(mult_.size());
    int64_t c = ch_ * mult_[size_t(levels - 1)];
    x = conv("decoder.conv_in", x, 16, h, w);
    x = mid("decoder.", x, c, h, w);
    for (int64_t i = levels - 1; i >= 0; --i) {
      for (int64_t j = 0; j <= blocks_; ++j) {
        const int64_t cout = ch_ * mult_[size_t(i)];
        x = resnet("decoder.up." + std::to_string(i) + ".block." + std::to_string(j) + ".", x, c, cout, h, w);
        c = cout;
      }
      if (i != 0) {
        std::vector<float> up(x.size() * 4);
        fx::cpu::upsample_nearest2x_reference(x.data(), c, h, w, up.data());
        h *= 2;
        w *= 2;
        x = conv("decoder.up." + std::to_string(i) + ".upsample.conv", up, c, h, w);
      }
    }
    x = norm("decoder.norm_out", x, c, h * w, true);
    return conv("decoder.conv_out", x, c, h, w);
  }

  // One image: [3, H, W] -> [16, H/f, W/f] normalised latents.
  std::vector<float> encode(const std::vector<float>& pixels, int64_t h, int64_t w) {
    const int64_t levels = int64_t(mult_.size());
    int64_t c = ch_;
    std::vector<float> x = conv("encoder.conv_in", pixels, 3, h, w);
    for (int64_t i = 0; i < levels; ++i) {
      for (int64_t j = 0; j < blocks_; ++j) {
        const int64_t cout = ch_ * mult_[size_t(i)];
        x = resnet("encoder.down." + std::to_string(i) + ".block." + std::to_string(j) + ".", x, c, cout, h, w);
        c = cout;
      }
      if (i != levels - 1) {
        x = conv("encoder.down." + std::to_string(i) + ".downsample.conv", x, c, h, w, /*downsample=*/true);
        h /= 2;
        w /= 2;
      }
    }
    x = mid("encoder.", x, c, h, w);
    x = norm("encoder.norm_out", x, c, h * w, true);
    std::vector<float> moments = conv("encoder.conv_out", x, c, h, w);
    std::vector<float> out(size_t(16 * h * w));
    for (size_t i = 0; i < out.size(); ++i) out[i] = float(0.3611 * (double(moments[i]) - 0.1159));
    return out;
  }

 private:
  std::vector<float> conv(const std::string& p, const std::vector<float>& x, int64_t cin, int64_t h, int64_t w,
                          bool downsample = false) {
    const auto weight = read_f32(ckpt_, p + ".weight");
    const auto bias = read_f32(ckpt_, p + ".bias");
    const auto& shape = ckpt_.find(p + ".weight")->shape;
    fx::cpu::Conv2dShape s;
    s.in_channels = cin;
    s.out_channels = shape[0];
    s.height = h;
    s.width = w;
    s.kernel_h = shape[2];
    s.kernel_w = shape[3];
    if (downsample) {
      s.stride = 2;
      s.pad_bottom = s.pad_right = 1;
    } else {
      s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = shape[2] / 2;
    }
    std::vector<float> y(size_t(s.out_channels * s.out_height() * s.out_width()), kNaN);
    fx::cpu::conv2d_reference(x.data(), 1, s, weight.data(), bias.data(), fx::cpu::Activation::None, false, y.data());
    return y;
  }
  std::vector<float> norm(const std::string& p, const std::vector<float>& x, int64_t c, int64_t hw, bool silu) {
    const auto g = read_f32(ckpt_, p + ".weight"), b = read_f32(ckpt_, p + ".bias");
    std::vector<float> y(x.size(), kNaN);
    fx::cpu::group_norm_reference(x.data(), 1, c, hw, 32, g.data(), b.data(), 1e-6f, silu, y.data());
    return y;
  }
  std::vector<float> resnet(const std::string& p, const std::vector<float>& x, int64_t cin, int64_t cout, int64_t h,
                            int64_t w) {
    std::vector<float> t = conv(p + "conv1", norm(p + "norm1", x, cin, h * w, true), cin, h, w);
    t = conv(p + "conv2", norm(p + "norm2", t, cout, h * w, true), cout, h, w);
    const std::vector<float> skip = cin == cout ? x : conv(p + "nin_shortcut", x, cin, h, w);
    for (size_t i = 0; i < t.size(); ++i) t[i] += skip[i];
    return t;
  }
  std::vector<float> attention(const std::string& p, const std::vector<float>& x, int64_t c, int64_t h, int64_t w) {
    const int64_t n = h * w;
    const std::vector<float> a = norm(p + "norm", x, c, n, false);
    const auto q = conv(p + "q", a, c, h, w), k = conv(p + "k", a, c, h, w), v = conv(p + "v", a, c, h, w);
    // [C, N] -> tokens [N, C]
    auto tokens = [&](const std::vector<float>& m) {
      std::vector<float> t(m.size());
      for (int64_t i = 0; i < c; ++i)
        for (int64_t j = 0; j < n; ++j) t[size_t(j * c + i)] = m[size_t(i * n + j)];
      return t;
    };
    const auto qt = tokens(q), kt = tokens(k), vt = tokens(v);
    std::vector<float> o(size_t(n * c), kNaN);
    fx::cpu::AttentionShape s;
    s.seq_q = s.seq_kv = n;
    s.head_dim = c;
    s.scale = float(1.0 / std::sqrt(double(c)));
    fx::cpu::attention_reference(s, {qt.data(), 0, c, c}, {kt.data(), 0, c, c}, {vt.data(), 0, c, c}, {o.data(), 0, c, c});
    std::vector<float> back(o.size());
    for (int64_t i = 0; i < c; ++i)
      for (int64_t j = 0; j < n; ++j) back[size_t(i * n + j)] = o[size_t(j * c + i)];
    std::vector<float> out = conv(p + "proj_out", back, c, h, w);
    for (size_t i = 0; i < out.size(); ++i) out[i] += x[i];
    return out;
  }
  std::vector<float> mid(const std::string& p, std::vector<float> x, int64_t c, int64_t h, int64_t w) {
    x = resnet(p + "mid.block_1.", x, c, c, h, w);
    x = attention(p + "mid.attn_1.", x, c, h, w);
    return resnet(p + "mid.block_2.", x, c, c, h, w);
  }

  const fx::io::Checkpoint& ckpt_;
  int64_t ch_;
  std::vector<int64_t> mult_;
  int64_t blocks_;
};

struct GraphCase {
  int32_t ch, levels, blocks;
  int64_t h, w;  // latent size
};

TEST(Autoencoder, DecodeAndEncodeMatchTheReferenceKernelsComposed) {
  // Default tiny (ch 32, 2 levels, 1 block) with a non-square latent; 3 levels of 2 blocks at ch 64
  // (shortcuts at each widening, mid attention over 64 channels).
  for (const GraphCase& g : {GraphCase{0, 0, 0, 3, 5}, GraphCase{64, 3, 2, 2, 3}}) {
    SCOPED_TRACE("ch " + std::to_string(g.ch) + " levels " + std::to_string(g.levels));
    auto ckpt = write_ae(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32, g.ch, g.levels, g.blocks, 7),
                         fresh_dir("ae-graph-" + std::to_string(g.ch)));
    fx::ThreadPool pool(2);
    auto model = Autoencoder::load(*ckpt, fx::backend::cpu_backend(&pool));
    const auto& c = model->config();
    const int64_t f = c.downscale();
    ReferenceAe ref(*ckpt, c.ch, c.ch_mult, c.num_res_blocks);

    const int64_t batch = 2;
    std::vector<float> z(size_t(batch * 16 * g.h * g.w));
    fill_normal(z, 11);
    std::vector<float> pixels(size_t(batch * 3 * g.h * f * g.w * f), kNaN);
    model->decode(z.data(), batch, g.h, g.w, pixels.data());
    const size_t per_image = pixels.size() / batch;
    for (int64_t b = 0; b < batch; ++b) {
      const std::vector<float> zb(z.begin() + b * 16 * g.h * g.w, z.begin() + (b + 1) * 16 * g.h * g.w);
      const std::vector<float> want = ref.decode(zb, g.h, g.w);
      const std::vector<float> got(pixels.begin() + b * per_image, pixels.begin() + (b + 1) * per_image);
      EXPECT_LE(relative_l2(got, want), 1e-5) << "decode, image " << b;
    }

    std::vector<float> image(size_t(batch * 3 * g.h * f * g.w * f));
    fill_normal(image, 12, 0.5f);
    std::vector<float> lat(z.size(), kNaN);
    model->encode(image.data(), batch, g.h * f, g.w * f, lat.data());
    for (int64_t b = 0; b < batch; ++b) {
      const std::vector<float> ib(image.begin() + b * per_image, image.begin() + (b + 1) * per_image);
      const std::vector<float> want = ref.encode(ib, g.h * f, g.w * f);
      const std::vector<float> got(lat.begin() + b * 16 * g.h * g.w, lat.begin() + (b + 1) * 16 * g.h * g.w);
      EXPECT_LE(relative_l2(got, want), 1e-5) << "encode, image " << b;
    }
  }
}

TEST(Autoencoder, ConfigurationIsInferredFromTheCheckpoint) {
  auto ckpt = write_ae(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32, 64, 4, 2), fresh_dir("ae-config"));
  auto model = Autoencoder::load(*ckpt);
  const auto& c = model->config();
  EXPECT_EQ(c.ch, 64);
  EXPECT_EQ(c.ch_mult, (std::vector<int64_t>{1, 2, 4, 4}));
  EXPECT_EQ(c.num_res_blocks, 2);
  EXPECT_EQ(c.z_channels, 16);
  EXPECT_EQ(c.in_channels, 3);
  EXPECT_EQ(c.out_channels, 3);
  EXPECT_EQ(c.downscale(), 8);
  EXPECT_TRUE(c.has_encoder && c.has_decoder && c.mid_attention);
  // A BFL file has no config.json: the published latent normalisation.
  EXPECT_DOUBLE_EQ(c.scale_factor, 0.3611);
  EXPECT_DOUBLE_EQ(c.shift_factor, 0.1159);
}

TEST(Autoencoder, DiffusersFolderGivesTheSameBitsAsTheBflFile) {
  const fs::path dir = fresh_dir("ae-layouts");
  auto bfl = write_ae(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32, 32, 3, 1, 5), dir);
  auto dif = write_ae(ae_params(FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32, 32, 3, 1, 5), dir);
  auto a = Autoencoder::load(*bfl), b = Autoencoder::load(*dif);
  std::vector<float> z(2 * 16 * 3 * 4);
  fill_normal(z, 21);
  std::vector<float> pa(2 * 3 * 12 * 16, kNaN), pb(pa.size(), kNaN);
  a->decode(z.data(), 2, 3, 4, pa.data());
  b->decode(z.data(), 2, 3, 4, pb.data());
  EXPECT_EQ(std::memcmp(pa.data(), pb.data(), sizeof(float) * pa.size()), 0);
  std::vector<float> la(z.size(), kNaN), lb(z.size(), kNaN);
  a->encode(pa.data(), 2, 12, 16, la.data());
  b->encode(pa.data(), 2, 12, 16, lb.data());
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), sizeof(float) * la.size()), 0);
}

TEST(Autoencoder, HalfPrecisionWeightsLoadAndDecode) {
  // f16 and bf16 files of the same seed hold the f32 weights rounded: they load (widened to f32) and
  // decode to the f32 model's output up to that rounding.
  const fs::path dir = fresh_dir("ae-dtypes");
  auto f32 = write_ae(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32, 32, 2, 1, 3), dir / "f32");
  std::vector<float> z(16 * 4 * 4);
  fill_normal(z, 31);
  std::vector<float> want(3 * 8 * 8, kNaN);
  Autoencoder::load(*f32)->decode(z.data(), 1, 4, 4, want.data());
  for (int32_t dtype : {FX_DTYPE_F16, FX_DTYPE_BF16}) {
    SCOPED_TRACE(dtype == FX_DTYPE_F16 ? "f16" : "bf16");
    auto half = write_ae(ae_params(FX_LAYOUT_BFL, dtype, 32, 2, 1, 3), dir / std::to_string(dtype));
    std::vector<float> got(want.size(), kNaN);
    Autoencoder::load(*half)->decode(z.data(), 1, 4, 4, got.data());
    // Same model up to weight rounding (2^-9 bf16, 2^-12 f16 relative per weight).
    EXPECT_LE(relative_l2(got, want), dtype == FX_DTYPE_F16 ? 5e-3 : 5e-2);
    EXPECT_GT(relative_l2(got, want), 0.0) << "the half-precision model should not be the f32 one";
  }
}

TEST(Autoencoder, DecoderOnlyAndEncoderOnlyFiles) {
  // A file with one half of the model (the other half's tensors dropped) loads and runs that half; the
  // missing half is refused with FX_ERR_UNSUPPORTED, and the half it has gives the full model's bits.
  const fs::path dir = fresh_dir("ae-halves");
  auto full = write_ae(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32, 32, 2, 1, 4), dir);
  auto full_model = Autoencoder::load(*full);
  std::vector<float> z(16 * 2 * 3), want_px(3 * 4 * 6, kNaN), want_lat(z.size(), kNaN);
  fill_normal(z, 51);
  full_model->decode(z.data(), 1, 2, 3, want_px.data());
  full_model->encode(want_px.data(), 1, 4, 6, want_lat.data());
  for (const std::string keep : {"decoder.", "encoder."}) {
    SCOPED_TRACE(keep);
    std::vector<fx::io::TensorToWrite> tensors;
    for (const auto& t : full->tensors())
      if (t.name.rfind(keep, 0) == 0) tensors.push_back({t.name, t.dtype, t.shape, t.data(), t.byte_size});
    const std::string path = (dir / (keep + "safetensors")).string();
    fx::io::write_safetensors(path, tensors);
    auto half = fx::io::Checkpoint::open(path);
    auto model = Autoencoder::load(*half);
    EXPECT_EQ(model->config().has_decoder, keep == "decoder.");
    EXPECT_EQ(model->config().has_encoder, keep == "encoder.");
    EXPECT_EQ(model->config().ch, 32);
    EXPECT_EQ(model->config().downscale(), 2);
    std::vector<float> px(want_px.size(), kNaN), lat(z.size(), kNaN);
    if (keep == "decoder.") {
      model->decode(z.data(), 1, 2, 3, px.data());
      EXPECT_EQ(std::memcmp(px.data(), want_px.data(), sizeof(float) * px.size()), 0);
      try {
        model->encode(want_px.data(), 1, 4, 6, lat.data());
        ADD_FAILURE() << "a decoder-only model encoded";
      } catch (const fx::Error& e) {
        EXPECT_EQ(e.status(), FX_ERR_UNSUPPORTED);
      }
    } else {
      model->encode(want_px.data(), 1, 4, 6, lat.data());
      EXPECT_EQ(std::memcmp(lat.data(), want_lat.data(), sizeof(float) * lat.size()), 0);
      try {
        model->decode(z.data(), 1, 2, 3, px.data());
        ADD_FAILURE() << "an encoder-only model decoded";
      } catch (const fx::Error& e) {
        EXPECT_EQ(e.status(), FX_ERR_UNSUPPORTED);
      }
    }
  }
}

TEST(Autoencoder, MissingOrMisshapedTensorsAreFormatErrors) {
  const fs::path dir = fresh_dir("ae-broken");
  auto full = write_ae(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32), dir);
  std::vector<fx::io::TensorToWrite> tensors;
  for (const auto& t : full->tensors())
    if (t.name != "decoder.mid.block_1.conv2.weight") tensors.push_back({t.name, t.dtype, t.shape, t.data(), t.byte_size});
  fx::io::write_safetensors((dir / "missing.safetensors").string(), tensors);
  auto missing = fx::io::Checkpoint::open((dir / "missing.safetensors").string());
  try {
    Autoencoder::load(*missing);
    FAIL() << "a checkpoint without decoder.mid.block_1.conv2.weight loaded";
  } catch (const fx::Error& e) {
    EXPECT_EQ(e.status(), FX_ERR_FORMAT);
    EXPECT_NE(std::string(e.what()).find("decoder.mid.block_1.conv2.weight"), std::string::npos) << e.what();
  }
  // decoder.norm_out.bias cut to half its channels.
  tensors.clear();
  for (const auto& t : full->tensors()) {
    tensors.push_back({t.name, t.dtype, t.shape, t.data(), t.byte_size});
    if (t.name == "decoder.norm_out.bias") {
      tensors.back().shape[0] /= 2;
      tensors.back().byte_size /= 2;
    }
  }
  fx::io::write_safetensors((dir / "misshaped.safetensors").string(), tensors);
  auto misshaped = fx::io::Checkpoint::open((dir / "misshaped.safetensors").string());
  try {
    Autoencoder::load(*misshaped);
    FAIL() << "a checkpoint with a half-size decoder.norm_out.bias loaded";
  } catch (const fx::Error& e) {
    EXPECT_EQ(e.status(), FX_ERR_FORMAT);
    EXPECT_NE(std::string(e.what()).find("decoder.norm_out.bias"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------
// The C ABI

struct ModelDeleter {
  void operator()(fx_ae_model* m) const { fx_ae_model_free(m); }
};
struct CheckpointDeleter {
  void operator()(fx_checkpoint* c) const { fx_checkpoint_close(c); }
};

std::unique_ptr<fx_ae_model, ModelDeleter> load_c(const std::string& path, int32_t threads = 0) {
  fx_checkpoint* raw = nullptr;
  EXPECT_EQ(fx_checkpoint_open(path.c_str(), &raw), FX_OK) << fx_last_error();
  std::unique_ptr<fx_checkpoint, CheckpointDeleter> ckpt(raw);
  fx_ae_load_params params;
  fx_ae_load_params_init(&params);
  params.num_threads = threads;
  fx_ae_model* model = nullptr;
  EXPECT_EQ(fx_ae_model_load(ckpt.get(), &params, &model), FX_OK) << fx_last_error();
  return std::unique_ptr<fx_ae_model, ModelDeleter>(model);  // the checkpoint closes here: weights are owned
}

TEST(AutoencoderApi, ConfigJsonAndScaleShiftFromConfigJson) {
  const fs::path dir = fresh_dir("ae-api-config");
  fx::models::write_tiny_model(ae_params(FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32, 32, 2, 1, 9), (dir / "vae").string());
  fx::models::write_tiny_model(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32, 32, 2, 1, 9), (dir / "ae.safetensors").string());
  // A second copy of the folder whose config.json has other latent statistics.
  fs::copy(dir / "vae", dir / "vae2", fs::copy_options::recursive);
  nlohmann::json cfg;
  std::ifstream(dir / "vae2" / "config.json") >> cfg;
  cfg["scaling_factor"] = 0.5;
  cfg["shift_factor"] = -0.25;
  std::ofstream(dir / "vae2" / "config.json") << cfg.dump(2);

  auto bfl = load_c((dir / "ae.safetensors").string(), 2);
  auto other = load_c((dir / "vae2").string());
  ASSERT_TRUE(bfl && other);
  size_t needed = 0;
  EXPECT_EQ(fx_ae_model_config_json(bfl.get(), nullptr, 0, &needed), FX_ERR_BUFFER_TOO_SMALL);
  std::string text(needed, '\0');
  ASSERT_EQ(fx_ae_model_config_json(bfl.get(), text.data(), text.size(), &needed), FX_OK);
  const auto j = nlohmann::json::parse(text.c_str());
  EXPECT_EQ(j["ch"], 32);
  EXPECT_EQ(j["ch_mult"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(j["num_res_blocks"], 1);
  EXPECT_EQ(j["z_channels"], 16);
  EXPECT_EQ(j["in_channels"], 3);
  EXPECT_EQ(j["out_channels"], 3);
  EXPECT_EQ(j["downscale"], 2);
  EXPECT_DOUBLE_EQ(j["scale_factor"].get<double>(), 0.3611);
  EXPECT_DOUBLE_EQ(j["shift_factor"].get<double>(), 0.1159);
  EXPECT_EQ(j["has_encoder"], true);
  EXPECT_EQ(j["has_decoder"], true);
  ASSERT_EQ(fx_ae_model_config_json(other.get(), nullptr, 0, &needed), FX_ERR_BUFFER_TOO_SMALL);
  text.assign(needed, '\0');
  ASSERT_EQ(fx_ae_model_config_json(other.get(), text.data(), text.size(), &needed), FX_OK);
  const auto j2 = nlohmann::json::parse(text.c_str());
  EXPECT_DOUBLE_EQ(j2["scale_factor"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j2["shift_factor"].get<double>(), -0.25);

  // decode_other(z) = D(z/0.5 - 0.25) = decode_bfl(z') with z' = 0.3611·(z/0.5 - 0.25 - 0.1159).
  std::vector<float> z(16 * 3 * 3), z2(z.size());
  fill_normal(z, 41);
  for (size_t i = 0; i < z.size(); ++i) z2[i] = float(0.3611 * (double(z[i]) / 0.5 - 0.25 - 0.1159));
  std::vector<float> a(3 * 6 * 6, kNaN), b(a.size(), kNaN);
  ASSERT_EQ(fx_ae_decode(other.get(), z.data(), 1, 3, 3, a.data(), a.size(), nullptr), FX_OK) << fx_last_error();
  ASSERT_EQ(fx_ae_decode(bfl.get(), z2.data(), 1, 3, 3, b.data(), b.size(), nullptr), FX_OK) << fx_last_error();
  EXPECT_LE(relative_l2(a, b), 1e-5);

  // And the encoder inverts the normalisation the same way: encode_other(x) = 0.5·(mean + 0.25).
  std::vector<float> la(z.size(), kNaN), lb(z.size(), kNaN);
  ASSERT_EQ(fx_ae_encode(other.get(), a.data(), 1, 6, 6, la.data(), la.size(), nullptr), FX_OK) << fx_last_error();
  ASSERT_EQ(fx_ae_encode(bfl.get(), a.data(), 1, 6, 6, lb.data(), lb.size(), nullptr), FX_OK) << fx_last_error();
  for (size_t i = 0; i < la.size(); ++i) {
    const double mean = double(lb[i]) / 0.3611 + 0.1159;
    ASSERT_NEAR(la[i], 0.5 * (mean + 0.25), 1e-5) << i;
  }
}

TEST(AutoencoderApi, ArgumentsAreCheckedWithClearErrors) {
  const fs::path dir = fresh_dir("ae-api-args");
  fx::models::write_tiny_model(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32), (dir / "ae.safetensors").string());
  auto model = load_c((dir / "ae.safetensors").string());
  ASSERT_TRUE(model);
  std::vector<float> buf(4096, 0.25f), out(4096, kNaN);

  EXPECT_EQ(fx_ae_decode(model.get(), buf.data(), 1, 4, 4, out.data(), 100, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("[1, 3, 8, 8] needs 192"), std::string::npos) << fx_last_error();
  EXPECT_EQ(fx_ae_decode(model.get(), buf.data(), 0, 4, 4, out.data(), 0, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_ae_decode(model.get(), nullptr, 1, 4, 4, out.data(), 192, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_ae_decode(nullptr, buf.data(), 1, 4, 4, out.data(), 192, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_ae_encode(model.get(), buf.data(), 1, 7, 8, out.data(), 16 * 3 * 4, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("multiples of 2"), std::string::npos) << fx_last_error();
  EXPECT_EQ(fx_ae_encode(model.get(), buf.data(), 1, 8, 8, out.data(), 10, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("[1, 16, 4, 4] needs 256"), std::string::npos) << fx_last_error();
  EXPECT_EQ(fx_ae_decode(model.get(), buf.data(), 1, 1 << 30, 1 << 30, out.data(), 192, nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_ae_model_config_json(nullptr, nullptr, 0, nullptr), FX_ERR_INVALID_ARGUMENT);
  fx_ae_model_free(nullptr);

  // Valid calls work after the failed ones.
  EXPECT_EQ(fx_ae_decode(model.get(), buf.data(), 1, 4, 4, out.data(), 192, nullptr), FX_OK) << fx_last_error();
  for (size_t i = 0; i < 192; ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;

  // Not an autoencoder.
  fx_tiny_model_params flux{};
  flux.struct_size = sizeof(flux);
  flux.kind = FX_MODEL_FLUX_TRANSFORMER;
  flux.layout = FX_LAYOUT_BFL;
  flux.dtype = FX_DTYPE_F32;
  flux.shards = 1;
  fx::models::write_tiny_model(flux, (dir / "flux.safetensors").string());
  fx_checkpoint* raw = nullptr;
  ASSERT_EQ(fx_checkpoint_open((dir / "flux.safetensors").string().c_str(), &raw), FX_OK);
  std::unique_ptr<fx_checkpoint, CheckpointDeleter> ckpt(raw);
  fx_ae_load_params params;
  fx_ae_load_params_init(&params);
  fx_ae_model* m = reinterpret_cast<fx_ae_model*>(&params);
  EXPECT_EQ(fx_ae_model_load(ckpt.get(), &params, &m), FX_ERR_UNSUPPORTED);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(fx_last_error()).find("not an autoencoder"), std::string::npos) << fx_last_error();
  params.num_threads = -1;
  EXPECT_EQ(fx_ae_model_load(ckpt.get(), &params, &m), FX_ERR_INVALID_ARGUMENT);
}

TEST(AutoencoderApi, CancellationStopsBetweenBlocks) {
  const fs::path dir = fresh_dir("ae-api-cancel");
  fx::models::write_tiny_model(ae_params(FX_LAYOUT_BFL, FX_DTYPE_F32), (dir / "ae.safetensors").string());
  auto model = load_c((dir / "ae.safetensors").string());
  ASSERT_TRUE(model);
  std::vector<float> z(16 * 4 * 4, 0.1f), px(3 * 8 * 8, kNaN), lat(z.size(), kNaN);
  volatile int32_t flag = 1;
  EXPECT_EQ(fx_ae_decode(model.get(), z.data(), 1, 4, 4, px.data(), px.size(), &flag), FX_ERR_CANCELLED);
  EXPECT_NE(std::string(fx_last_error()).find("cancelled"), std::string::npos);
  EXPECT_EQ(fx_ae_encode(model.get(), px.data(), 1, 8, 8, lat.data(), lat.size(), &flag), FX_ERR_CANCELLED);
  flag = 0;
  EXPECT_EQ(fx_ae_decode(model.get(), z.data(), 1, 4, 4, px.data(), px.size(), &flag), FX_OK) << fx_last_error();
  EXPECT_EQ(fx_ae_encode(model.get(), px.data(), 1, 8, 8, lat.data(), lat.size(), &flag), FX_OK) << fx_last_error();
}

}  // namespace
