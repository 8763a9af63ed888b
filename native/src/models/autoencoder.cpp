#include "models/autoencoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "core/error.h"
#include "models/recognize.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/conv2d.h"
#include "ops/cpu/linear.h"

namespace fx::models {

namespace {

constexpr float kNormEps = 1e-6f;
constexpr const char* kKind = "autoencoder";

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

struct Autoencoder::Impl {
  struct Conv {
    cpu::PackedConv w;
    std::vector<float> bias;
  };
  struct Norm {
    std::vector<float> gamma, beta;
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
    cpu::PackedWeights qkv, proj;  // [3C, C] (q, k, v rows) and [C, C], as linears over tokens
    std::vector<float> qkv_bias, proj_bias;
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

class Loader {
 public:
  Loader(const io::Checkpoint& checkpoint, const nlohmann::json& description)
      : checkpoint_(checkpoint), config_json_(description["config"]) {
    layout_ = description.value("layout", "");
    prefix_ = description.value("key_prefix", "");
    for (const auto& t : expected_tensors(kKind, "bfl", config_json_)) expected_[t.name] = t.shape;
  }

  // The BFL tensor `name` as f32, whatever it is stored as, with its BFL shape in *shape.
  std::vector<float> fetch(const std::string& name, std::vector<int64_t>* shape = nullptr) {
    const auto expected = expected_.find(name);
    if (expected == expected_.end()) fail(FX_ERR_INTERNAL, "autoencoder loader asked for an unknown tensor " + name);
    std::string stored_name = prefix_ + name;
    std::vector<int64_t> want = expected->second;
    if (layout_ != "bfl") {
      const auto pieces = bfl_to_diffusers(kKind, TensorShape{name, expected->second}, config_json_);
      if (pieces.size() != 1) fail(FX_ERR_INTERNAL, "autoencoder tensor " + name + " maps to several diffusers tensors");
      stored_name = prefix_ + pieces[0].name;
      want = pieces[0].shape;
    }
    const auto* t = checkpoint_.find(stored_name);
    if (t == nullptr) fail(FX_ERR_FORMAT, checkpoint_.path() + ": tensor \"" + stored_name + "\" is missing");
    if (t->shape != want)
      fail(FX_ERR_FORMAT, checkpoint_.path() + ": autoencoder tensor \"" + stored_name + "\" has shape " +
                              shape_str(t->shape) + " but the configuration needs " + shape_str(want));
    if (!dtype_is_float(t->dtype))
      fail(FX_ERR_UNSUPPORTED, checkpoint_.path() + ": autoencoder tensor \"" + stored_name + "\" is stored as " +
                                   dtype_name(t->dtype) + ", not a floating-point type");
    std::vector<float> values(static_cast<size_t>(t->element_count()));
    convert(t->dtype, t->data(), DType::F32, values.data(), values.size(), Overflow::Ieee);
    if (shape) *shape = expected->second;
    return values;
  }

  // `keep` > 0: only the first `keep` output channels.
  Impl::Conv conv(const std::string& prefix, int64_t keep = 0) {
    std::vector<int64_t> shape;
    const std::vector<float> w = fetch(prefix + ".weight", &shape);
    if (shape.size() != 4) fail(FX_ERR_FORMAT, checkpoint_.path() + ": " + prefix + ".weight is not a conv kernel");
    const int64_t out = keep > 0 ? std::min(keep, shape[0]) : shape[0];
    Impl::Conv c;
    c.w = cpu::pack_conv_weights(w.data(), out, shape[1], shape[2], shape[3]);
    c.bias = fetch(prefix + ".bias");
    c.bias.resize(static_cast<size_t>(out));
    return c;
  }

  Impl::Norm norm(const std::string& prefix) {
    Impl::Norm n;
    n.gamma = fetch(prefix + ".weight");
    n.beta = fetch(prefix + ".bias");
    return n;
  }

  Impl::Resnet resnet(const std::string& p, int64_t cin, int64_t cout) {
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

  Impl::Attention attention(const std::string& p, int64_t c) {
    Impl::Attention a;
    a.norm = norm(p + "norm");
    std::vector<float> qkv;
    qkv.reserve(static_cast<size_t>(3 * c * c));
    for (const char* m : {"q", "k", "v"}) {
      const std::vector<float> w = fetch(p + m + ".weight");
      qkv.insert(qkv.end(), w.begin(), w.end());
      const std::vector<float> b = fetch(p + m + ".bias");
      a.qkv_bias.insert(a.qkv_bias.end(), b.begin(), b.end());
    }
    a.qkv = cpu::pack_weights(cpu::Weights{DType::F32, qkv.data(), 3 * c, c, nullptr});
    const std::vector<float> proj = fetch(p + "proj_out.weight");
    a.proj = cpu::pack_weights(cpu::Weights{DType::F32, proj.data(), c, c, nullptr});
    a.proj_bias = fetch(p + "proj_out.bias");
    return a;
  }

  Impl::Mid mid(const std::string& p, int64_t c, bool with_attention) {
    Impl::Mid m;
    m.block1 = resnet(p + "mid.block_1.", c, c);
    m.has_attention = with_attention;
    if (with_attention) m.attention = attention(p + "mid.attn_1.", c);
    m.block2 = resnet(p + "mid.block_2.", c, c);
    return m;
  }

 private:
  const io::Checkpoint& checkpoint_;
  nlohmann::json config_json_;
  std::string layout_, prefix_;
  std::map<std::string, std::vector<int64_t>> expected_;
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

// A float buffer that only grows; new memory is left uninitialised (every kernel writes before it reads).
class Buffer {
 public:
  float* ensure(size_t count) {
    if (count > capacity_) {
      data_.reset();
      data_.reset(new float[count]);
      capacity_ = count;
    }
    return data_.get();
  }
  float* get() const { return data_.get(); }
  void swap(Buffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
  }

 private:
  std::unique_ptr<float[]> data_;
  size_t capacity_ = 0;
};

// dst[c][r] = src[r][c] (or += with `add`) for src [rows, cols]: 32×32 blocks, rows of blocks in parallel.
void transpose(const float* src, int64_t rows, int64_t cols, float* dst, bool add, ThreadPool& pool) {
  constexpr int64_t kB = 32;
  const int64_t row_blocks = (rows + kB - 1) / kB;
  pool.parallel_for(row_blocks, [&](int64_t begin, int64_t end) {
    for (int64_t rb = begin; rb < end; ++rb) {
      const int64_t r0 = rb * kB, r1 = std::min(rows, r0 + kB);
      for (int64_t c0 = 0; c0 < cols; c0 += kB) {
        const int64_t c1 = std::min(cols, c0 + kB);
        for (int64_t c = c0; c < c1; ++c) {
          float* d = dst + c * rows;
          if (add)
            for (int64_t r = r0; r < r1; ++r) d[r] += src[r * cols + c];
          else
            for (int64_t r = r0; r < r1; ++r) d[r] = src[r * cols + c];
        }
      }
    }
  });
}

// One image's activation: x holds [c, h, w]; a, b, qkv are scratch.
struct Workspace {
  Buffer x, a, b, qkv;
  int64_t c = 0, h = 0, w = 0;
  int64_t pixels() const { return h * w; }
};

class Runner {
 public:
  Runner(const AutoencoderConfig& config, ThreadPool& pool, const volatile int32_t* cancel, const char* what)
      : config_(config), pool_(pool), cancel_(cancel), what_(what) {}

  void check_cancel() const {
    if (cancel_ != nullptr && *cancel_ != 0) fail(FX_ERR_CANCELLED, std::string("autoencoder ") + what_ + ": cancelled");
  }

  // out = conv(in) for an in of [cin, h, w]; "same" padding for odd kernels, or the Downsample's
  // right/bottom pad with stride 2.
  void conv(const Impl::Conv& c, const float* in, int64_t h, int64_t w, float* out, bool accumulate = false,
            bool downsample = false) const {
    cpu::Conv2dShape s;
    s.in_channels = c.w.in_channels();
    s.out_channels = c.w.out_channels();
    s.height = h;
    s.width = w;
    s.kernel_h = c.w.kernel_h();
    s.kernel_w = c.w.kernel_w();
    if (downsample) {
      s.stride = 2;
      s.pad_bottom = s.pad_right = 1;
    } else {
      s.pad_top = s.pad_bottom = s.kernel_h / 2;
      s.pad_left = s.pad_right = s.kernel_w / 2;
    }
    cpu::conv2d(in, 1, s, c.w, c.bias.data(), cpu::Activation::None, accumulate, out, pool_);
  }

  void norm(const Impl::Norm& n, const float* in, int64_t channels, int64_t pixels, bool silu, float* out) const {
    cpu::group_norm(in, 1, channels, pixels, config_.groups, n.gamma.data(), n.beta.data(), kNormEps, silu, out, pool_);
  }

  // x' = shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))).
  void resnet(const Impl::Resnet& r, Workspace& ws) const {
    check_cancel();
    const int64_t p = ws.pixels();
    const size_t need = static_cast<size_t>(std::max(r.cin, r.cout) * p);
    float* a = ws.a.ensure(need);
    float* b = ws.b.ensure(need);
    norm(r.norm1, ws.x.get(), r.cin, p, true, a);
    conv(r.conv1, a, ws.h, ws.w, b);
    norm(r.norm2, b, r.cout, p, true, b);
    if (r.has_shortcut) {
      conv(r.shortcut, ws.x.get(), ws.h, ws.w, a);  // a's normalised input is consumed: reuse it
      conv(r.conv2, b, ws.h, ws.w, a, true);
      ws.x.swap(ws.a);
    } else {
      conv(r.conv2, b, ws.h, ws.w, ws.x.get(), true);
    }
    ws.c = r.cout;
  }

  // x += proj_out(attention(q, k, v)) over the h·w tokens, one head of C channels.
  void attention(const Impl::Attention& at, Workspace& ws) const {
    check_cancel();
    const int64_t c = ws.c, p = ws.pixels();
    float* a = ws.a.ensure(static_cast<size_t>(c * p));
    float* b = ws.b.ensure(static_cast<size_t>(c * p));
    float* qkv = ws.qkv.ensure(static_cast<size_t>(3 * c * p));
    norm(at.norm, ws.x.get(), c, p, false, a);
    transpose(a, c, p, b, false, pool_);  // [C, P] -> tokens [P, C]
    cpu::linear(b, p, c, at.qkv, at.qkv_bias.data(), cpu::Activation::None, qkv, 3 * c, cpu::Precision::Exact, pool_);
    cpu::AttentionShape shape;
    shape.batch = 1;
    shape.heads = 1;
    shape.seq_q = p;
    shape.seq_kv = p;
    shape.head_dim = c;
    shape.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c)));
    cpu::attention(shape, {qkv, 0, 3 * c, c}, {qkv + c, 0, 3 * c, c}, {qkv + 2 * c, 0, 3 * c, c}, {b, 0, c, c},
                   pool_);
    cpu::linear(b, p, c, at.proj, at.proj_bias.data(), cpu::Activation::None, a, c, cpu::Precision::Exact, pool_);
    transpose(a, p, c, ws.x.get(), true, pool_);  // residual add, back to [C, P]
  }

  void mid(const Impl::Mid& m, Workspace& ws) const {
    resnet(m.block1, ws);
    if (m.has_attention) attention(m.attention, ws);
    resnet(m.block2, ws);
  }

  void upsample(const Impl::Conv& c, Workspace& ws) const {
    check_cancel();
    const size_t count = static_cast<size_t>(ws.c * ws.pixels() * 4);
    float* a = ws.a.ensure(count);
    cpu::upsample_nearest2x(ws.x.get(), ws.c, ws.h, ws.w, a, pool_);
    ws.h *= 2;
    ws.w *= 2;
    conv(c, a, ws.h, ws.w, ws.x.ensure(count));
  }

  void downsample(const Impl::Conv& c, Workspace& ws) const {
    check_cancel();
    const int64_t h = ws.h / 2, w = ws.w / 2;  // (h + 1 - 3) / 2 + 1 for the even sizes the encoder sees
    float* a = ws.a.ensure(static_cast<size_t>(ws.c * h * w));
    conv(c, ws.x.get(), ws.h, ws.w, a, false, true);
    ws.x.swap(ws.a);
    ws.h = h;
    ws.w = w;
  }

 private:
  const AutoencoderConfig& config_;
  ThreadPool& pool_;
  const volatile int32_t* cancel_;
  const char* what_;
};

}  // namespace

std::unique_ptr<Autoencoder> Autoencoder::load(const io::Checkpoint& checkpoint) {
  const nlohmann::json description = describe(checkpoint);
  if (description.value("kind", "") != kKind)
    fail(FX_ERR_UNSUPPORTED, checkpoint.path() + " is not an autoencoder (recognised as \"" +
                                 description.value("kind", "unknown") + "\")");
  if (!description["problems"].empty()) {
    std::string problems;
    for (const auto& p : description["problems"]) problems += "\n  " + p.get<std::string>();
    fail(FX_ERR_FORMAT, checkpoint.path() + ": the autoencoder checkpoint is incomplete:" + problems);
  }
  std::unique_ptr<Autoencoder> model(new Autoencoder());
  model->config_ = config_from(description["config"], checkpoint.path());
  const AutoencoderConfig& c = model->config_;
  if (!c.has_decoder && !c.has_encoder)
    fail(FX_ERR_FORMAT, checkpoint.path() + ": the autoencoder has neither an encoder nor a decoder");
  model->impl_ = std::make_unique<Impl>();
  Impl& m = *model->impl_;
  Loader load(checkpoint, description);
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
                         const volatile int32_t* cancel, ThreadPool& pool) const {
  const AutoencoderConfig& c = config_;
  if (!impl_->has_decoder) fail(FX_ERR_UNSUPPORTED, "autoencoder decode: this checkpoint has no decoder");
  if (batch < 1 || height < 1 || width < 1)
    fail(FX_ERR_INVALID_ARGUMENT, "autoencoder decode: batch, height and width must be >= 1");
  if (!latents || !pixels) fail(FX_ERR_INVALID_ARGUMENT, "autoencoder decode: latents and pixels are required");
  const Impl::Decoder& d = impl_->decoder;
  const int64_t f = c.downscale(), z = c.z_channels, lat = height * width;
  const int64_t out_plane = height * f * width * f;
  Runner run(c, pool, cancel, "decode");
  Workspace ws;
  for (int64_t b = 0; b < batch; ++b) {
    run.check_cancel();
    // z / scale + shift, right before conv_in (flux-spec §7.4).
    float* zin = ws.b.ensure(static_cast<size_t>(z * lat));
    const float* src = latents + b * z * lat;
    for (int64_t i = 0; i < z * lat; ++i)
      zin[i] = static_cast<float>(static_cast<double>(src[i]) / c.scale_factor + c.shift_factor);
    ws.c = d.conv_in.w.out_channels();
    ws.h = height;
    ws.w = width;
    run.conv(d.conv_in, zin, height, width, ws.x.ensure(static_cast<size_t>(ws.c * lat)));
    run.mid(d.mid, ws);
    for (int64_t i = static_cast<int64_t>(d.up.size()) - 1; i >= 0; --i) {
      const Impl::Level& level = d.up[static_cast<size_t>(i)];
      for (const auto& block : level.blocks) run.resnet(block, ws);
      if (level.has_resample) run.upsample(level.resample, ws);
    }
    run.check_cancel();
    float* a = ws.a.ensure(static_cast<size_t>(ws.c * ws.pixels()));
    run.norm(d.norm_out, ws.x.get(), ws.c, ws.pixels(), true, a);
    run.conv(d.conv_out, a, ws.h, ws.w, pixels + b * c.out_channels * out_plane);
  }
}

void Autoencoder::encode(const float* pixels, int64_t batch, int64_t height, int64_t width, float* latents,
                         const volatile int32_t* cancel, ThreadPool& pool) const {
  const AutoencoderConfig& c = config_;
  if (!impl_->has_encoder) fail(FX_ERR_UNSUPPORTED, "autoencoder encode: this checkpoint has no encoder");
  const int64_t f = c.downscale(), z = c.z_channels;
  if (batch < 1 || height < f || width < f || height % f != 0 || width % f != 0)
    fail(FX_ERR_INVALID_ARGUMENT, "autoencoder encode: batch must be >= 1 and height, width positive multiples of " +
                                      std::to_string(f) + " (got " + std::to_string(height) + "x" +
                                      std::to_string(width) + ")");
  if (!latents || !pixels) fail(FX_ERR_INVALID_ARGUMENT, "autoencoder encode: pixels and latents are required");
  const Impl::Encoder& e = impl_->encoder;
  const int64_t lat = (height / f) * (width / f);
  Runner run(c, pool, cancel, "encode");
  Workspace ws;
  for (int64_t b = 0; b < batch; ++b) {
    run.check_cancel();
    ws.c = e.conv_in.w.out_channels();
    ws.h = height;
    ws.w = width;
    run.conv(e.conv_in, pixels + b * c.in_channels * height * width, height, width,
             ws.x.ensure(static_cast<size_t>(ws.c * height * width)));
    for (const auto& level : e.down) {
      for (const auto& block : level.blocks) run.resnet(block, ws);
      if (level.has_resample) run.downsample(level.resample, ws);
    }
    run.mid(e.mid, ws);
    run.check_cancel();
    float* a = ws.a.ensure(static_cast<size_t>(ws.c * ws.pixels()));
    run.norm(e.norm_out, ws.x.get(), ws.c, ws.pixels(), true, a);
    float* out = latents + b * z * lat;
    run.conv(e.conv_out, a, ws.h, ws.w, out);
    // scale · (mean − shift) (flux-spec §7.4).
    for (int64_t i = 0; i < z * lat; ++i)
      out[i] = static_cast<float>(c.scale_factor * (static_cast<double>(out[i]) - c.shift_factor));
  }
}

}  // namespace fx::models
