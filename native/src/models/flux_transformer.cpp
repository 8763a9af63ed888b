#include "models/flux_transformer.h"

#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "core/error.h"
#include "models/recognize.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/elementwise.h"

namespace fx::models {

namespace {

constexpr float kNormEps = 1e-6f;
constexpr const char* kKind = "flux_transformer";

// A tensor in the BFL structure: a view of the mapped file, or bytes assembled from diffusers pieces.
struct BflTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  std::vector<uint8_t> owned;
  int64_t elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

int64_t cfg_int(const nlohmann::json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || !it->is_number_integer())
    fail(FX_ERR_FORMAT, std::string("FLUX transformer: the configuration value \"") + key +
                            "\" could not be inferred from the checkpoint");
  return it->get<int64_t>();
}

FluxConfig config_from(const nlohmann::json& c) {
  FluxConfig config;
  config.in_channels = cfg_int(c, "in_channels");
  config.out_channels = cfg_int(c, "out_channels");
  config.hidden = cfg_int(c, "hidden_size");
  config.heads = cfg_int(c, "num_heads");
  config.head_dim = cfg_int(c, "head_dim");
  config.mlp_hidden = cfg_int(c, "mlp_hidden");
  config.context_in_dim = cfg_int(c, "context_in_dim");
  config.vec_in_dim = cfg_int(c, "vec_in_dim");
  config.time_embed_dim = cfg_int(c, "time_embed_dim");
  config.depth = cfg_int(c, "depth");
  config.depth_single = cfg_int(c, "depth_single");
  config.guidance_embed = c.value("guidance_embed", false);
  const auto axes = c.find("axes_dim");
  if (axes == c.end() || !axes->is_array())
    fail(FX_ERR_FORMAT, "FLUX transformer: the RoPE axes (axes_dim) are unknown for this checkpoint");
  int64_t sum = 0;
  for (const auto& a : *axes) {
    config.axes_dim.push_back(a.get<int>());
    sum += config.axes_dim.back();
  }
  if (sum != config.head_dim)
    fail(FX_ERR_FORMAT, "FLUX transformer: axes_dim sums to " + std::to_string(sum) + ", head dim is " +
                            std::to_string(config.head_dim));
  if (c.contains("theta") && c["theta"].is_number()) config.theta = c["theta"].get<double>();
  return config;
}

}  // namespace

struct FluxTransformer::Impl {
  Linear img_in, txt_in, time_in1, time_in2, guidance_in1, guidance_in2, vector_in1, vector_in2;
  Linear final_mod, final_linear;

  struct DoubleBlock {
    Linear img_mod, txt_mod, img_qkv, txt_qkv, img_proj, txt_proj, img_mlp0, img_mlp2, txt_mlp0, txt_mlp2;
    std::vector<float> img_q_norm, img_k_norm, txt_q_norm, txt_k_norm;
  };
  struct SingleBlock {
    Linear mod, linear1, linear2;
    std::vector<float> q_norm, k_norm;
  };
  std::vector<DoubleBlock> doubles;
  std::vector<SingleBlock> singles;
};

namespace {

class Loader {
 public:
  Loader(const io::Checkpoint& checkpoint, const nlohmann::json& description, FluxWeightFormat format,
         FluxTransformer::Impl& impl)
      : checkpoint_(checkpoint), config_json_(description["config"]), format_(format), impl_(impl) {
    layout_ = description.value("layout", "");
    prefix_ = description.value("key_prefix", "");
    for (const auto& t : expected_tensors(kKind, "bfl", config_json_)) expected_[t.name] = t.shape;
  }

  std::vector<float> vector(const std::string& name) {
    BflTensor t = fetch(name);
    std::vector<float> values(static_cast<size_t>(t.elements()));
    convert(t.dtype, t.data, DType::F32, values.data(), values.size(), Overflow::Ieee);
    return values;
  }

  FluxTransformer::Linear linear(const std::string& prefix, bool has_bias = true) {
    BflTensor w = fetch(prefix + ".weight");
    if (w.shape.size() != 2) fail(FX_ERR_FORMAT, label(prefix + ".weight") + " is not a matrix");
    const cpu::Weights view{w.dtype, w.data, w.shape[0], w.shape[1], nullptr};
    FluxTransformer::Linear layer;
    layer.weights = pack_linear_weights(view, format_, label(prefix + ".weight"), ThreadPool::global());
    if (has_bias) layer.bias = vector(prefix + ".bias");
    return layer;
  }

 private:
  std::string label(const std::string& bfl_name) const {
    return checkpoint_.path() + ": FLUX tensor \"" + bfl_name + "\"";
  }

  const io::Checkpoint::Tensor& stored(const std::string& name) const {
    const auto* t = checkpoint_.find(prefix_ + name);
    if (t == nullptr) fail(FX_ERR_FORMAT, checkpoint_.path() + ": tensor \"" + prefix_ + name + "\" is missing");
    return *t;
  }

  // The BFL tensor `name`, from a BFL file directly or assembled from the diffusers tensors it maps to.
  BflTensor fetch(const std::string& name) {
    const auto expected = expected_.find(name);
    if (expected == expected_.end()) fail(FX_ERR_INTERNAL, "FLUX loader asked for an unknown tensor " + name);
    BflTensor out;
    if (layout_ == "bfl") {
      const auto& t = stored(name);
      out.dtype = t.dtype;
      out.shape = t.shape;
      out.data = t.data();
    } else {
      const TensorShape bfl{name, expected->second};
      const auto pieces = bfl_to_diffusers(kKind, bfl, config_json_);
      if (pieces.empty()) fail(FX_ERR_INTERNAL, "no diffusers tensor maps to " + name);
      const auto& first = stored(pieces[0].name);
      out.dtype = first.dtype;
      out.shape = bfl.shape;
      int64_t row_elems = 1;
      for (size_t d = 1; d < out.shape.size(); ++d) row_elems *= out.shape[d];
      const size_t row_bytes = static_cast<size_t>(row_elems) * dtype_size(out.dtype);
      const bool whole = pieces.size() == 1 && pieces[0].rows.size() == 1 && pieces[0].rows[0].first == 0 &&
                         pieces[0].rows[0].second == out.shape[0];
      if (whole && first.element_count() == static_cast<uint64_t>(out.elements())) {
        out.data = first.data();
      } else {
        out.owned.resize(static_cast<size_t>(out.elements()) * dtype_size(out.dtype));
        for (const auto& piece : pieces) {
          const auto& t = stored(piece.name);
          if (t.dtype != out.dtype)
            fail(FX_ERR_FORMAT, checkpoint_.path() + ": \"" + piece.name + "\" is " + dtype_name(t.dtype) +
                                    " but \"" + pieces[0].name + "\" is " + dtype_name(out.dtype) +
                                    "; the pieces of one fused weight must share a dtype");
          uint64_t offset = 0;
          for (const auto& [begin, end] : piece.rows) {
            const size_t bytes = static_cast<size_t>(end - begin) * row_bytes;
            if (offset + bytes > t.byte_size)
              fail(FX_ERR_FORMAT, checkpoint_.path() + ": \"" + piece.name + "\" is smaller than its part of " + name);
            std::memcpy(out.owned.data() + static_cast<size_t>(begin) * row_bytes, t.data() + offset, bytes);
            offset += bytes;
          }
        }
        out.data = out.owned.data();
      }
    }
    if (out.shape != expected->second) {
      std::string got, want;
      for (auto d : out.shape) got += std::to_string(d) + ",";
      for (auto d : expected->second) want += std::to_string(d) + ",";
      fail(FX_ERR_FORMAT, label(name) + " has shape [" + got + "] but the configuration needs [" + want + "]");
    }
    return out;
  }

  const io::Checkpoint& checkpoint_;
  nlohmann::json config_json_;
  FluxWeightFormat format_;
  FluxTransformer::Impl& impl_;
  std::string layout_, prefix_;
  std::map<std::string, std::vector<int64_t>> expected_;
};

}  // namespace

void timestep_embedding(float value, int64_t dim, float* out, double time_factor, double max_period) {
  const int64_t half = dim / 2;
  const double s = time_factor * static_cast<double>(value);
  for (int64_t i = 0; i < half; ++i) {
    const double freq = std::exp(-std::log(max_period) * static_cast<double>(i) / static_cast<double>(half));
    out[i] = static_cast<float>(std::cos(s * freq));
    out[half + i] = static_cast<float>(std::sin(s * freq));
  }
}

std::unique_ptr<FluxTransformer> FluxTransformer::load(const io::Checkpoint& checkpoint, FluxWeightFormat format,
                                                       cpu::Precision precision) {
  const nlohmann::json description = describe(checkpoint);
  if (description.value("kind", "") != kKind)
    fail(FX_ERR_UNSUPPORTED, checkpoint.path() + " is not a FLUX transformer (recognised as \"" +
                                 description.value("kind", "unknown") + "\")");
  if (!description["problems"].empty()) {
    std::string problems;
    for (const auto& p : description["problems"]) problems += "\n  " + p.get<std::string>();
    fail(FX_ERR_FORMAT, checkpoint.path() + ": the FLUX transformer checkpoint is incomplete:" + problems);
  }

  std::unique_ptr<FluxTransformer> model(new FluxTransformer());
  model->config_ = config_from(description["config"]);
  model->precision_ = precision;
  model->impl_ = std::make_unique<Impl>();
  Impl& m = *model->impl_;
  const FluxConfig& c = model->config_;

  Loader load(checkpoint, description, format, m);
  m.img_in = load.linear("img_in");
  m.txt_in = load.linear("txt_in");
  m.time_in1 = load.linear("time_in.in_layer");
  m.time_in2 = load.linear("time_in.out_layer");
  if (c.guidance_embed) {
    m.guidance_in1 = load.linear("guidance_in.in_layer");
    m.guidance_in2 = load.linear("guidance_in.out_layer");
  }
  m.vector_in1 = load.linear("vector_in.in_layer");
  m.vector_in2 = load.linear("vector_in.out_layer");
  for (int64_t i = 0; i < c.depth; ++i) {
    const std::string p = "double_blocks." + std::to_string(i) + ".";
    Impl::DoubleBlock b;
    b.img_mod = load.linear(p + "img_mod.lin");
    b.txt_mod = load.linear(p + "txt_mod.lin");
    b.img_qkv = load.linear(p + "img_attn.qkv");
    b.txt_qkv = load.linear(p + "txt_attn.qkv");
    b.img_proj = load.linear(p + "img_attn.proj");
    b.txt_proj = load.linear(p + "txt_attn.proj");
    b.img_mlp0 = load.linear(p + "img_mlp.0");
    b.img_mlp2 = load.linear(p + "img_mlp.2");
    b.txt_mlp0 = load.linear(p + "txt_mlp.0");
    b.txt_mlp2 = load.linear(p + "txt_mlp.2");
    b.img_q_norm = load.vector(p + "img_attn.norm.query_norm.scale");
    b.img_k_norm = load.vector(p + "img_attn.norm.key_norm.scale");
    b.txt_q_norm = load.vector(p + "txt_attn.norm.query_norm.scale");
    b.txt_k_norm = load.vector(p + "txt_attn.norm.key_norm.scale");
    m.doubles.push_back(std::move(b));
  }
  for (int64_t i = 0; i < c.depth_single; ++i) {
    const std::string p = "single_blocks." + std::to_string(i) + ".";
    Impl::SingleBlock b;
    b.mod = load.linear(p + "modulation.lin");
    b.linear1 = load.linear(p + "linear1");
    b.linear2 = load.linear(p + "linear2");
    b.q_norm = load.vector(p + "norm.query_norm.scale");
    b.k_norm = load.vector(p + "norm.key_norm.scale");
    m.singles.push_back(std::move(b));
  }
  m.final_mod = load.linear("final_layer.adaLN_modulation.1");
  m.final_linear = load.linear("final_layer.linear");
  return model;
}

FluxTransformer::~FluxTransformer() = default;

void FluxTransformer::forward(const FluxInputs& in, float* out, ThreadPool& pool) const {
  const FluxConfig& c = config_;
  const Impl& m = *impl_;
  auto require = [](bool ok, const std::string& what) {
    if (!ok) fail(FX_ERR_INVALID_ARGUMENT, "FLUX forward: " + what);
  };
  require(in.batch >= 1 && in.img_tokens >= 1 && in.txt_tokens >= 1, "batch and token counts must be >= 1");
  require(in.img && in.img_ids && in.txt && in.txt_ids && in.y && in.timesteps && out,
          "img, img_ids, txt, txt_ids, y, timesteps and out are required");
  require(!c.guidance_embed || in.guidance, "this model (dev) needs guidance [B]");

  const int64_t H = c.hidden, hd = c.head_dim, heads = c.heads, mlp = c.mlp_hidden;
  const int64_t Lt = in.txt_tokens, Li = in.img_tokens, L = Lt + Li;
  const int n_axes = static_cast<int>(c.axes_dim.size());

  auto run = [&](const Linear& layer, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
                 cpu::Activation act = cpu::Activation::None) {
    cpu::linear(x, rows, ldx, layer.weights, layer.bias.empty() ? nullptr : layer.bias.data(), act, y, ldy,
                precision_, pool);
  };

  // Buffers, reused across samples and blocks.
  std::vector<float> emb(static_cast<size_t>(c.time_embed_dim)), hidden_tmp(static_cast<size_t>(H));
  std::vector<float> vec(static_cast<size_t>(H)), vec_tmp(static_cast<size_t>(H));
  std::vector<float> x(static_cast<size_t>(L * H));                 // [txt; img] rows
  std::vector<float> a(static_cast<size_t>(L * H));                 // modulated LN output
  std::vector<float> qkv(static_cast<size_t>(L * 3 * H));
  std::vector<float> attn(static_cast<size_t>(L * H));
  std::vector<float> proj(static_cast<size_t>(L * H));
  std::vector<float> hidden(static_cast<size_t>(L * (3 * H + mlp)));  // MLP hidden, or linear1's [qkv | mlp]
  std::vector<float> cat(static_cast<size_t>(L * (H + mlp)));
  std::vector<float> mod(static_cast<size_t>(6 * H)), mod2(static_cast<size_t>(6 * H));
  std::vector<float> ids(static_cast<size_t>(L * n_axes));
  std::vector<float> cos_t(static_cast<size_t>(L * hd / 2)), sin_t(static_cast<size_t>(L * hd / 2));

  auto check_cancel = [&] {
    if (in.cancel != nullptr && *in.cancel != 0) fail(FX_ERR_CANCELLED, "flux forward: cancelled");
  };

  for (int64_t b = 0; b < in.batch; ++b) {
    check_cancel();
    // ---- conditioning vector: time (+ guidance) + pooled text ----
    timestep_embedding(in.timesteps[b], c.time_embed_dim, emb.data());
    run(m.time_in1, emb.data(), 1, c.time_embed_dim, hidden_tmp.data(), H, cpu::Activation::Silu);
    run(m.time_in2, hidden_tmp.data(), 1, H, vec.data(), H);
    if (c.guidance_embed) {
      timestep_embedding(in.guidance[b], c.time_embed_dim, emb.data());
      run(m.guidance_in1, emb.data(), 1, c.time_embed_dim, hidden_tmp.data(), H, cpu::Activation::Silu);
      run(m.guidance_in2, hidden_tmp.data(), 1, H, vec_tmp.data(), H);
      for (int64_t i = 0; i < H; ++i) vec[i] += vec_tmp[i];
    }
    run(m.vector_in1, in.y + b * c.vec_in_dim, 1, c.vec_in_dim, hidden_tmp.data(), H, cpu::Activation::Silu);
    run(m.vector_in2, hidden_tmp.data(), 1, H, vec_tmp.data(), H);
    for (int64_t i = 0; i < H; ++i) vec[i] += vec_tmp[i];
    cpu::silu(vec.data(), H, pool);  // every modulation reads SiLU(vec)

    // ---- token embeddings and RoPE tables (text first, then image) ----
    float* txt = x.data();
    float* img = x.data() + Lt * H;
    run(m.txt_in, in.txt + b * Lt * c.context_in_dim, Lt, c.context_in_dim, txt, H);
    run(m.img_in, in.img + b * Li * c.in_channels, Li, c.in_channels, img, H);
    std::memcpy(ids.data(), in.txt_ids + b * Lt * n_axes, sizeof(float) * Lt * n_axes);
    std::memcpy(ids.data() + Lt * n_axes, in.img_ids + b * Li * n_axes, sizeof(float) * Li * n_axes);
    cpu::rope_tables(ids.data(), L, n_axes, c.axes_dim.data(), c.theta, cos_t.data(), sin_t.data());

    // q and k of a [L, row_stride] buffer: QK-norm (per stream), then RoPE; v untouched.
    auto prepare_qk = [&](float* q, float* k, int64_t row_stride, int64_t rows0, const std::vector<float>& qn0,
                          const std::vector<float>& kn0, const std::vector<float>& qn1, const std::vector<float>& kn1) {
      cpu::rms_norm_heads(q, rows0, row_stride, heads, hd, qn0.data(), kNormEps, pool);
      cpu::rms_norm_heads(k, rows0, row_stride, heads, hd, kn0.data(), kNormEps, pool);
      cpu::rms_norm_heads(q + rows0 * row_stride, L - rows0, row_stride, heads, hd, qn1.data(), kNormEps, pool);
      cpu::rms_norm_heads(k + rows0 * row_stride, L - rows0, row_stride, heads, hd, kn1.data(), kNormEps, pool);
      cpu::rope_apply(q, L, row_stride, heads, hd, cos_t.data(), sin_t.data(), pool);
      cpu::rope_apply(k, L, row_stride, heads, hd, cos_t.data(), sin_t.data(), pool);
    };
    auto joint_attention = [&](const float* q, const float* k, const float* v, int64_t in_stride, float* o,
                               int64_t out_stride) {
      cpu::AttentionShape shape;
      shape.batch = 1;
      shape.heads = heads;
      shape.seq_q = L;
      shape.seq_kv = L;
      shape.head_dim = hd;
      shape.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
      cpu::attention(shape, {q, 0, in_stride, hd}, {k, 0, in_stride, hd}, {v, 0, in_stride, hd},
                     {o, 0, out_stride, hd}, pool);
    };

    // ---- double-stream blocks ----
    for (const auto& blk : m.doubles) {
      check_cancel();
      run(blk.img_mod, vec.data(), 1, H, mod.data(), 6 * H);   // shift1 scale1 gate1 shift2 scale2 gate2
      run(blk.txt_mod, vec.data(), 1, H, mod2.data(), 6 * H);
      const float* is1 = mod.data(); const float* ic1 = is1 + H; const float* ig1 = is1 + 2 * H;
      const float* is2 = is1 + 3 * H; const float* ic2 = is1 + 4 * H; const float* ig2 = is1 + 5 * H;
      const float* ts1 = mod2.data(); const float* tc1 = ts1 + H; const float* tg1 = ts1 + 2 * H;
      const float* ts2 = ts1 + 3 * H; const float* tc2 = ts1 + 4 * H; const float* tg2 = ts1 + 5 * H;

      cpu::layernorm_modulate(txt, Lt, H, H, ts1, tc1, kNormEps, a.data(), H, pool);
      cpu::layernorm_modulate(img, Li, H, H, is1, ic1, kNormEps, a.data() + Lt * H, H, pool);
      run(blk.txt_qkv, a.data(), Lt, H, qkv.data(), 3 * H);
      run(blk.img_qkv, a.data() + Lt * H, Li, H, qkv.data() + Lt * 3 * H, 3 * H);
      prepare_qk(qkv.data(), qkv.data() + H, 3 * H, Lt, blk.txt_q_norm, blk.txt_k_norm, blk.img_q_norm,
                 blk.img_k_norm);
      joint_attention(qkv.data(), qkv.data() + H, qkv.data() + 2 * H, 3 * H, attn.data(), H);

      run(blk.txt_proj, attn.data(), Lt, H, proj.data(), H);
      run(blk.img_proj, attn.data() + Lt * H, Li, H, proj.data() + Lt * H, H);
      cpu::gated_add(txt, Lt, H, H, tg1, proj.data(), H, pool);
      cpu::gated_add(img, Li, H, H, ig1, proj.data() + Lt * H, H, pool);

      cpu::layernorm_modulate(txt, Lt, H, H, ts2, tc2, kNormEps, a.data(), H, pool);
      cpu::layernorm_modulate(img, Li, H, H, is2, ic2, kNormEps, a.data() + Lt * H, H, pool);
      run(blk.txt_mlp0, a.data(), Lt, H, hidden.data(), mlp, cpu::Activation::GeluTanh);
      run(blk.txt_mlp2, hidden.data(), Lt, mlp, proj.data(), H);
      run(blk.img_mlp0, a.data() + Lt * H, Li, H, hidden.data(), mlp, cpu::Activation::GeluTanh);
      run(blk.img_mlp2, hidden.data(), Li, mlp, proj.data() + Lt * H, H);
      cpu::gated_add(txt, Lt, H, H, tg2, proj.data(), H, pool);
      cpu::gated_add(img, Li, H, H, ig2, proj.data() + Lt * H, H, pool);
    }

    // ---- single-stream blocks over x = [txt; img] ----
    const int64_t u_width = 3 * H + mlp, cat_width = H + mlp;
    for (const auto& blk : m.singles) {
      check_cancel();
      run(blk.mod, vec.data(), 1, H, mod.data(), 3 * H);  // shift scale gate
      cpu::layernorm_modulate(x.data(), L, H, H, mod.data(), mod.data() + H, kNormEps, a.data(), H, pool);
      float* u = hidden.data();
      run(blk.linear1, a.data(), L, H, u, u_width);
      prepare_qk(u, u + H, u_width, L, blk.q_norm, blk.k_norm, blk.q_norm, blk.k_norm);
      joint_attention(u, u + H, u + 2 * H, u_width, cat.data(), cat_width);
      pool.parallel_for(L, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          float* dst = cat.data() + r * cat_width + H;
          std::memcpy(dst, u + r * u_width + 3 * H, sizeof(float) * mlp);
          cpu::gelu_tanh(dst, mlp, pool);  // runs inline: we are inside the pool
        }
      });
      run(blk.linear2, cat.data(), L, cat_width, proj.data(), H);
      cpu::gated_add(x.data(), L, H, H, mod.data() + 2 * H, proj.data(), H, pool);
    }

    // ---- final layer on the image tokens: (shift, scale) in BFL order ----
    run(m.final_mod, vec.data(), 1, H, mod.data(), 2 * H);
    cpu::layernorm_modulate(img, Li, H, H, mod.data(), mod.data() + H, kNormEps, a.data(), H, pool);
    run(m.final_linear, a.data(), Li, H, out + b * Li * c.out_channels, c.out_channels);
  }
}

}  // namespace fx::models
