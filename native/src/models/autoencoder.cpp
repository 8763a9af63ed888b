#include "models/autoencoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "core/cancel.h"
#include "core/error.h"
#include "models/recognize.h"
#include "models/weight_loader.h"

namespace fx::models {

namespace {

constexpr float kNormEps = 1e-6f;
constexpr const char* kKind = "autoencoder";


}  // namespace

using backend::Tensor;

struct Autoencoder::Impl {
  using Conv = std::unique_ptr<backend::ConvLayer>;
  struct Norm {
    Tensor gamma, beta;
  };
  struct Resnet {
    int64_t cin = 0, cout = 0;
    Norm norm1, norm2;
    Conv conv1, conv2;
    bool has_shortcut = false;
    Conv shortcut;  // 1×1, only when cin != cout
  };
  struct Attention {
    Norm norm;
    std::unique_ptr<backend::LinearLayer> qkv, proj;  // [3C, C] (q, k, v rows) and [C, C], as linears over tokens
  };
  struct Mid {
    Resnet block1, block2;
    bool has_attention = false;
    Attention attention;
  };
  struct Level {
    std::vector<Resnet> blocks;
    bool has_resample = false;  // decoder: upsample after the blocks; encoder: downsample
    Conv resample;
  };
  struct Decoder {
    Conv conv_in, conv_out;
    Mid mid;
    std::vector<Level> up;  // by BFL level index: up[0] is the highest resolution, run last
    Norm norm_out;
  };
  struct Encoder {
    Conv conv_in, conv_out;  // conv_out keeps only the mean's z output channels
    std::vector<Level> down;
    Mid mid;
    Norm norm_out;
  };
  bool has_decoder = false, has_encoder = false;
  Decoder decoder;
  Encoder encoder;
};

namespace {

using Impl = Autoencoder::Impl;

// The autoencoder's layers from the one weight loader: every weight widened to f32 on the host, then
// handed to the backend (convolutions packed for the direct kernel, attention linears for the GEMM).
class Layers {
 public:
  explicit Layers(const WeightLoader& load) : load_(load) {}

  // `keep` > 0: only the first `keep` output channels.
  Impl::Conv conv(const std::string& prefix, int64_t keep = 0) const {
    std::vector<int64_t> shape;
    const std::vector<float> w = load_.host_f32(prefix + ".weight", &shape);
    if (shape.size() != 4) fail(FX_ERR_FORMAT, load_.path() + ": " + prefix + ".weight is not a conv kernel");
    const int64_t out = keep > 0 ? std::min(keep, shape[0]) : shape[0];
    std::vector<float> bias = load_.host_f32(prefix + ".bias");
    bias.resize(static_cast<size_t>(out));
    return load_.backend().conv_layer(w.data(), out, shape[1], shape[2], shape[3], bias);
  }

  Impl::Norm norm(const std::string& prefix) const { return {load_.vector(prefix + ".weight"), load_.vector(prefix + ".bias")}; }

  Impl::Resnet resnet(const std::string& p, int64_t cin, int64_t cout) const {
    Impl::Resnet r;
    r.cin = cin;
    r.cout = cout;
    r.norm1 = norm(p + "norm1");
    r.conv1 = conv(p + "conv1");
    r.norm2 = norm(p + "norm2");
    r.conv2 = conv(p + "conv2");
    r.has_shortcut = cin != cout;
    if (r.has_shortcut) r.shortcut = conv(p + "nin_shortcut");
    return r;
  }

  Impl::Attention attention(const std::string& p, int64_t c) const {
    Impl::Attention a;
    a.norm = norm(p + "norm");
    std::vector<float> qkv, qkv_bias;
    qkv.reserve(static_cast<size_t>(3 * c * c));
    for (const char* m : {"q", "k", "v"}) {
      const std::vector<float> w = load_.host_f32(p + m + ".weight");
      qkv.insert(qkv.end(), w.begin(), w.end());
      const std::vector<float> b = load_.host_f32(p + m + ".bias");
      qkv_bias.insert(qkv_bias.end(), b.begin(), b.end());
    }
    a.qkv = load_.linear_from(qkv, 3 * c, c, qkv_bias, load_.label(p + "q/k/v.weight"));
    a.proj = load_.linear_from(load_.host_f32(p + "proj_out.weight"), c, c, load_.host_f32(p + "proj_out.bias"),
                               load_.label(p + "proj_out.weight"));
    return a;
  }

  Impl::Mid mid(const std::string& p, int64_t c, bool with_attention) const {
    Impl::Mid m;
    m.block1 = resnet(p + "mid.block_1.", c, c);
    m.has_attention = with_attention;
    if (with_attention) m.attention = attention(p + "mid.attn_1.", c);
    m.block2 = resnet(p + "mid.block_2.", c, c);
    return m;
  }

 private:
  const WeightLoader& load_;
};

AutoencoderConfig config_from(const nlohmann::json& c, const std::string& path) {
  auto need_int = [&](const char* key) {
    const auto it = c.find(key);
    if (it == c.end() || !it->is_number_integer() || it->get<int64_t>() < 1)
      fail(FX_ERR_FORMAT, path + ": the autoencoder's \"" + key + "\" could not be inferred from the checkpoint");
    return it->get<int64_t>();
  };
  auto opt_int = [&](const char* key) {
    const auto it = c.find(key);
    return it != c.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t(0);
  };
  AutoencoderConfig config;
  config.ch = need_int("ch");
  config.num_res_blocks = need_int("num_res_blocks");
  config.z_channels = need_int("z_channels");
  const auto mult = c.find("ch_mult");
  if (mult == c.end() || !mult->is_array() || mult->empty())
    fail(FX_ERR_FORMAT, path + ": the autoencoder's resolution levels (ch_mult) could not be inferred");
  for (const auto& m : *mult) {
    if (!m.is_number_integer() || m.get<int64_t>() < 1)
      fail(FX_ERR_FORMAT, path + ": the autoencoder's ch_mult " + mult->dump() + " has an unknown entry");
    config.ch_mult.push_back(m.get<int64_t>());
  }
  config.in_channels = opt_int("in_channels");
  config.out_channels = opt_int("out_channels");
  config.has_encoder = c.value("has_encoder", false);
  config.has_decoder = c.value("has_decoder", false);
  config.mid_attention = c.value("mid_attention", true);
  // Neither the group count nor the latent scale/shift is in the weights: config.json, else the
  // published values (a config.json without them gives null there).
  const int64_t groups = opt_int("norm_num_groups");
  config.groups = groups > 0 ? groups : 32;
  if (c.contains("scale_factor") && c["scale_factor"].is_number()) config.scale_factor = c["scale_factor"].get<double>();
  if (c.contains("shift_factor") && c["shift_factor"].is_number()) config.shift_factor = c["shift_factor"].get<double>();
  if (c.value("use_quant_conv", false) || c.value("use_post_quant_conv", false))
    fail(FX_ERR_UNSUPPORTED, path + ": autoencoders with quant_conv / post_quant_conv are not FLUX's and are not supported");
  if (config.has_encoder && config.in_channels < 1)
    fail(FX_ERR_FORMAT, path + ": the encoder's input channels could not be inferred");
  if (config.has_decoder && config.out_channels < 1)
    fail(FX_ERR_FORMAT, path + ": the decoder's output channels could not be inferred");
  if (!config.scale_factor || !std::isfinite(config.scale_factor) || !std::isfinite(config.shift_factor))
    fail(FX_ERR_FORMAT, path + ": the latent scale_factor must be finite and non-zero");
  return config;
}

// A device buffer that only grows; new memory is uninitialised (every kernel writes before it reads).
class Buffer {
 public:
  explicit Buffer(backend::Backend& be) : be_(&be) {}
  // Makes room for `count` floats (contents are lost when it grows).
  void ensure(int64_t count) {
    if (count > storage_.numel()) storage_ = be_->alloc(DType::F32, {count});
  }
  // The first elements as a tensor of `shape` (which must fit).
  Tensor view(std::vector<int64_t> shape) const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return storage_.narrow(0, 0, n).reshape(std::move(shape));
  }
  void swap(Buffer& other) noexcept { std::swap(storage_, other.storage_); }

 private:
  backend::Backend* be_;
  Tensor storage_ = Tensor::borrow(static_cast<void*>(nullptr), DType::F32, {0});
};

// One image's activation: x holds [c, h, w]; a, b, qkv are scratch.
struct Workspace {
  explicit Workspace(backend::Backend& be) : x(be), a(be), b(be), qkv(be) {}
  Buffer x, a, b, qkv;
  int64_t c = 0, h = 0, w = 0;
  int64_t pixels() const { return h * w; }
  Tensor image() const { return x.view({c, h, w}); }
};

class Runner {
 public:
  Runner(const AutoencoderConfig& config, backend::Backend& be, const volatile int32_t* cancel, const char* what)
      : config_(config), be_(be), cancel_(cancel), what_(what) {}

  void check_cancel() const {
    if (cancel_ != nullptr && *cancel_ != 0) fail(FX_ERR_CANCELLED, std::string("autoencoder ") + what_ + ": cancelled");
  }

  // out = conv(in) for an in of [cin, h, w]; "same" padding for odd kernels, or the Downsample's
  // right/bottom pad with stride 2.
  void conv(const backend::ConvLayer& c, const Tensor& in, const Tensor& out, bool accumulate = false,
            bool downsample = false) const {
    backend::ConvGeometry g;
    if (downsample) {
      g.stride = 2;
      g.pad_bottom = g.pad_right = 1;
    } else {
      g.pad_top = g.pad_bottom = c.kernel_h() / 2;
      g.pad_left = g.pad_right = c.kernel_w() / 2;
    }
    be_.conv2d(in, c, g, accumulate, out);
  }

  void norm(const Impl::Norm& n, const Tensor& in, bool silu, const Tensor& out) const {
    be_.group_norm(in, config_.groups, n.gamma, n.beta, kNormEps, silu, out);
  }

  // x' = shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))).
  void resnet(const Impl::Resnet& r, Workspace& ws) const {
    check_cancel();
    const int64_t h = ws.h, w = ws.w;
    const int64_t need = std::max(r.cin, r.cout) * h * w;
    ws.a.ensure(need);
    ws.b.ensure(need);
    const Tensor x = ws.x.view({r.cin, h, w});
    norm(r.norm1, x, true, ws.a.view({r.cin, h, w}));
    const Tensor b = ws.b.view({r.cout, h, w});
    conv(*r.conv1, ws.a.view({r.cin, h, w}), b);
    norm(r.norm2, b, true, b);
    if (r.has_shortcut) {
      const Tensor a = ws.a.view({r.cout, h, w});
      conv(*r.shortcut, x, a);  // a's normalised input is consumed: reuse it
      conv(*r.conv2, b, a, true);
      ws.x.swap(ws.a);
    } else {
      conv(*r.conv2, b, ws.x.view({r.cout, h, w}), true);
    }
    ws.c = r.cout;
  }

  // x += proj_out(attention(q, k, v)) over the h·w tokens, one head of C channels.
  void attention(const Impl::Attention& at, Workspace& ws) const {
    check_cancel();
    const int64_t c = ws.c, p = ws.pixels();
    ws.a.ensure(c * p);
    ws.b.ensure(c * p);
    ws.qkv.ensure(3 * c * p);
    const Tensor normed = ws.a.view({c, ws.h, ws.w});
    norm(at.norm, ws.image(), false, normed);
    const Tensor tokens = ws.b.view({p, c});
    be_.transpose(ws.a.view({c, p}), tokens, false);  // [C, P] -> tokens [P, C]
    const Tensor qkv = ws.qkv.view({1, p, 3 * c});
    be_.linear(tokens, *at.qkv, backend::Activation::None, qkv.select(0, 0));
    backend::AttentionParams params;
    params.heads = 1;
    params.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c)));
    be_.attention(qkv.narrow(2, 0, c), qkv.narrow(2, c, c), qkv.narrow(2, 2 * c, c), tokens.unsqueeze(0), params);
    const Tensor projected = ws.a.view({p, c});
    be_.linear(tokens, *at.proj, backend::Activation::None, projected);
    be_.transpose(projected, ws.x.view({c, p}), true);  // residual add, back to [C, P]
  }

  void mid(const Impl::Mid& m, Workspace& ws) const {
    resnet(m.block1, ws);
    if (m.has_attention) attention(m.attention, ws);
    resnet(m.block2, ws);
  }

  void upsample(const backend::ConvLayer& c, Workspace& ws) const {
    check_cancel();
    const int64_t count = ws.c * ws.pixels() * 4;
    ws.a.ensure(count);
    const Tensor up = ws.a.view({ws.c, 2 * ws.h, 2 * ws.w});
    be_.upsample_nearest2x(ws.image(), up);
    ws.h *= 2;
    ws.w *= 2;
    ws.x.ensure(count);
    conv(c, up, ws.image());
  }

  void downsample(const backend::ConvLayer& c, Workspace& ws) const {
    check_cancel();
    const int64_t h = ws.h / 2, w = ws.w / 2;  // (h + 1 - 3) / 2 + 1 for the even sizes the encoder sees
    ws.a.ensure(ws.c * h * w);
    conv(c, ws.image(), ws.a.view({ws.c, h, w}), false, true);
    ws.x.swap(ws.a);
    ws.h = h;
    ws.w = w;
  }

 private:
  const AutoencoderConfig& config_;
  backend::Backend& be_;
  const volatile int32_t* cancel_;
  const char* what_;
};

}  // namespace

std::unique_ptr<Autoencoder> Autoencoder::load(const io::Checkpoint& checkpoint,
                                               std::shared_ptr<backend::Backend> backend, WeightRecorder* recorder) {
  const nlohmann::json description = describe(checkpoint, kKind);  // an "all in one" file: its part
  require_kind(checkpoint, description, {kKind}, "an autoencoder");
  std::unique_ptr<Autoencoder> model(new Autoencoder());
  model->backend_ = backend ? std::move(backend) : backend::cpu_backend();
  model->config_ = config_from(description["config"], checkpoint.path());
  const AutoencoderConfig& c = model->config_;
  if (!c.has_decoder && !c.has_encoder)
    fail(FX_ERR_FORMAT, checkpoint.path() + ": the autoencoder has neither an encoder nor a decoder");
  model->impl_ = std::make_unique<Impl>();
  Impl& m = *model->impl_;
  WeightLoader weights(checkpoint, description, kKind, "bfl", "autoencoder", *model->backend_);
  weights.set_recorder(recorder);
  const Layers load(weights);
  const int64_t levels = static_cast<int64_t>(c.ch_mult.size());
  std::vector<int64_t> width;
  for (int64_t mult : c.ch_mult) width.push_back(c.ch * mult);

  if (c.has_encoder) {
    m.has_encoder = true;
    auto& e = m.encoder;
    e.conv_in = load.conv("encoder.conv_in");
    int64_t cin = c.ch;
    for (int64_t i = 0; i < levels; ++i) {
      Impl::Level level;
      for (int64_t j = 0; j < c.num_res_blocks; ++j) {
        level.blocks.push_back(
            load.resnet("encoder.down." + std::to_string(i) + ".block." + std::to_string(j) + ".", cin, width[i]));
        cin = width[i];
      }
      level.has_resample = i != levels - 1;
      if (level.has_resample) level.resample = load.conv("encoder.down." + std::to_string(i) + ".downsample.conv");
      e.down.push_back(std::move(level));
    }
    e.mid = load.mid("encoder.", cin, c.mid_attention);
    e.norm_out = load.norm("encoder.norm_out");
    e.conv_out = load.conv("encoder.conv_out", c.z_channels);  // the mean; the log-variance is never used
  }
  if (c.has_decoder) {
    m.has_decoder = true;
    auto& d = m.decoder;
    int64_t cin = width[levels - 1];
    d.conv_in = load.conv("decoder.conv_in");
    d.mid = load.mid("decoder.", cin, c.mid_attention);
    d.up.resize(static_cast<size_t>(levels));
    for (int64_t i = levels - 1; i >= 0; --i) {
      Impl::Level& level = d.up[static_cast<size_t>(i)];
      for (int64_t j = 0; j < c.num_res_blocks + 1; ++j) {
        level.blocks.push_back(
            load.resnet("decoder.up." + std::to_string(i) + ".block." + std::to_string(j) + ".", cin, width[i]));
        cin = width[i];
      }
      level.has_resample = i != 0;
      if (level.has_resample) level.resample = load.conv("decoder.up." + std::to_string(i) + ".upsample.conv");
    }
    d.norm_out = load.norm("decoder.norm_out");
    d.conv_out = load.conv("decoder.conv_out");
  }
  return model;
}

Autoencoder::~Autoencoder() = default;

void Autoencoder::decode(const float* latents, int64_t batch, int64_t height, int64_t width, float* pixels,
                         const volatile int32_t* cancel) const {
  const AutoencoderConfig& c = config_;
  if (!impl_->has_decoder) fail(FX_ERR_UNSUPPORTED, "autoencoder decode: this checkpoint has no decoder");
  if (batch < 1 || height < 1 || width < 1)
    fail(FX_ERR_INVALID_ARGUMENT, "autoencoder decode: batch, height and width must be >= 1");
  if (!latents || !pixels) fail(FX_ERR_INVALID_ARGUMENT, "autoencoder decode: latents and pixels are required");
  const Impl::Decoder& d = impl_->decoder;
  backend::Backend& be = *backend_;
  const int64_t f = c.downscale(), z = c.z_channels;
  const Tensor in = be.view_host(latents, DType::F32, {batch, z, height, width});
  const Tensor out = be.host_output(pixels, DType::F32, {batch, c.out_channels, height * f, width * f});
  const CancelScope scope(cancel);  // the kernels stop inside a block too (core/cancel.h)
  Runner run(c, be, cancel, "decode");
  Workspace ws(be);
  for (int64_t b = 0; b < batch; ++b) {
    run.check_cancel();
    // z / scale + shift, right before conv_in (docs/flux-model.md §7.4).
    ws.b.ensure(z * height * width);
    const Tensor zin = ws.b.view({z, height, width});
    be.scale_latents(in.select(0, b), c.scale_factor, c.shift_factor, true, zin);
    ws.c = d.conv_in->out_channels();
    ws.h = height;
    ws.w = width;
    ws.x.ensure(ws.c * height * width);
    run.conv(*d.conv_in, zin, ws.image());
    run.mid(d.mid, ws);
    for (int64_t i = static_cast<int64_t>(d.up.size()) - 1; i >= 0; --i) {
      const Impl::Level& level = d.up[static_cast<size_t>(i)];
      for (const auto& block : level.blocks) run.resnet(block, ws);
      if (level.has_resample) run.upsample(*level.resample, ws);
    }
    run.check_cancel();
    ws.a.ensure(ws.c * ws.pixels());
    const Tensor a = ws.a.view({ws.c, ws.h, ws.w});
    run.norm(d.norm_out, ws.image(), true, a);
    run.conv(*d.conv_out, a, out.select(0, b));
  }
  scope.check("autoencoder decode");  // a kernel may have stopped early: never return its output
  be.download(out, pixels);
}

void Autoencoder::encode(const float* pixels, int64_t batch, int64_t height, int64_t width, float* latents,
                         const volatile int32_t* cancel) const {
  const AutoencoderConfig& c = config_;
  if (!impl_->has_encoder) fail(FX_ERR_UNSUPPORTED, "autoencoder encode: this checkpoint has no encoder");
  const int64_t f = c.downscale(), z = c.z_channels;
  if (batch < 1 || height < f || width < f || height % f != 0 || width % f != 0)
    fail(FX_ERR_INVALID_ARGUMENT, "autoencoder encode: batch must be >= 1 and height, width positive multiples of " +
                                      std::to_string(f) + " (got " + std::to_string(height) + "x" +
                                      std::to_string(width) + ")");
  if (!latents || !pixels) fail(FX_ERR_INVALID_ARGUMENT, "autoencoder encode: pixels and latents are required");
  const Impl::Encoder& e = impl_->encoder;
  backend::Backend& be = *backend_;
  const Tensor in = be.view_host(pixels, DType::F32, {batch, c.in_channels, height, width});
  const Tensor out = be.host_output(latents, DType::F32, {batch, z, height / f, width / f});
  const CancelScope scope(cancel);  // the kernels stop inside a block too (core/cancel.h)
  Runner run(c, be, cancel, "encode");
  Workspace ws(be);
  for (int64_t b = 0; b < batch; ++b) {
    run.check_cancel();
    ws.c = e.conv_in->out_channels();
    ws.h = height;
    ws.w = width;
    ws.x.ensure(ws.c * height * width);
    run.conv(*e.conv_in, in.select(0, b), ws.image());
    for (const auto& level : e.down) {
      for (const auto& block : level.blocks) run.resnet(block, ws);
      if (level.has_resample) run.downsample(*level.resample, ws);
    }
    run.mid(e.mid, ws);
    run.check_cancel();
    ws.a.ensure(ws.c * ws.pixels());
    const Tensor a = ws.a.view({ws.c, ws.h, ws.w});
    run.norm(e.norm_out, ws.image(), true, a);
    const Tensor mean = out.select(0, b);
    run.conv(*e.conv_out, a, mean);
    // scale · (mean − shift) (docs/flux-model.md §7.4).
    be.scale_latents(mean, c.scale_factor, c.shift_factor, false, mean);
  }
  scope.check("autoencoder encode");  // a kernel may have stopped early: never return its output
  be.download(out, latents);
}

}  // namespace fx::models
