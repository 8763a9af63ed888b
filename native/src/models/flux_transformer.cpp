#include "models/flux_transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "core/cancel.h"
#include "core/error.h"
#include "models/flux_step_cache.h"
#include "models/recognize.h"
#include "models/weight_loader.h"

namespace fx::models {

namespace {

constexpr float kNormEps = 1e-6f;
constexpr const char* kKind = "flux_transformer";

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

using backend::Activation;
using backend::LinearLayer;
using backend::Tensor;

struct FluxTransformer::Impl {
  using Linear = std::unique_ptr<LinearLayer>;
  Linear img_in, txt_in, time_in1, time_in2, guidance_in1, guidance_in2, vector_in1, vector_in2;
  Linear final_mod, final_linear;

  struct DoubleBlock {
    Linear img_mod, txt_mod, img_qkv, txt_qkv, img_proj, txt_proj, img_mlp0, img_mlp2, txt_mlp0, txt_mlp2;
    Tensor img_q_norm, img_k_norm, txt_q_norm, txt_k_norm;
  };
  struct SingleBlock {
    Linear mod, linear1, linear2;
    Tensor q_norm, k_norm;
  };
  std::vector<DoubleBlock> doubles;
  std::vector<SingleBlock> singles;
};

void timestep_embedding(float value, int64_t dim, float* out, double time_factor, double max_period) {
  const int64_t half = dim / 2;
  const double s = time_factor * static_cast<double>(value);
  for (int64_t i = 0; i < half; ++i) {
    const double freq = std::exp(-std::log(max_period) * static_cast<double>(i) / static_cast<double>(half));
    out[i] = static_cast<float>(std::cos(s * freq));
    out[half + i] = static_cast<float>(std::sin(s * freq));
  }
}

std::unique_ptr<FluxTransformer> FluxTransformer::load(const io::Checkpoint& checkpoint, backend::WeightFormat format,
                                                       backend::Precision precision,
                                                       std::shared_ptr<backend::Backend> backend,
                                                       const std::vector<LoraFile>& loras,
                                                       WeightRecorder* recorder) {
  const nlohmann::json description = describe(checkpoint, kKind);  // an "all in one" file: its part
  require_kind(checkpoint, description, {kKind}, "a FLUX transformer");

  std::unique_ptr<FluxTransformer> model(new FluxTransformer());
  model->backend_ = backend ? std::move(backend) : backend::cpu_backend();
  model->config_ = config_from(description["config"]);
  model->precision_ = precision;
  model->impl_ = std::make_unique<Impl>();
  Impl& m = *model->impl_;
  const FluxConfig& c = model->config_;

  if (!loras.empty() && description.contains("engine"))
    fail(FX_ERR_UNSUPPORTED, checkpoint.path() + ": an engine's weights are packed when it is built; a LoRA cannot "
                                                 "be merged into them at load (load the published weights with the LoRA)");
  // The LoRAs are read and checked before any weight is packed: a bad file fails fast.
  const LoraMerge lora = LoraMerge::for_flux(loras, description["config"]);
  WeightLoader load(checkpoint, description, kKind, "bfl", "FLUX", *model->backend_);
  load.set_format(format, precision);
  load.set_lora(&lora);
  load.set_recorder(recorder);
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
  lora.check_all_used();
  return model;
}

FluxTransformer::~FluxTransformer() = default;

void FluxTransformer::forward(const FluxInputs& in, float* out) const {
  const FluxConfig& c = config_;
  const Impl& m = *impl_;
  backend::Backend& be = *backend_;
  auto require = [](bool ok, const std::string& what) {
    if (!ok) fail(FX_ERR_INVALID_ARGUMENT, "FLUX forward: " + what);
  };
  require(in.batch >= 1 && in.img_tokens >= 1 && in.txt_tokens >= 1, "batch and token counts must be >= 1");
  require(in.img && in.img_ids && in.txt && in.txt_ids && in.y && in.timesteps && out,
          "img, img_ids, txt, txt_ids, y, timesteps and out are required");
  require(!c.guidance_embed || in.guidance, "this model (dev) needs guidance [B]");

  const int64_t B = in.batch, H = c.hidden, hd = c.head_dim, heads = c.heads, mlp = c.mlp_hidden;
  const int64_t Lt = in.txt_tokens, Li = in.img_tokens, L = Lt + Li;
  const int64_t n_axes = static_cast<int64_t>(c.axes_dim.size());
  const float norm_eps = kNormEps;

  // The caller's buffers as tensors (the CPU backend reads and writes them in place).
  const Tensor img_in = be.view_host(in.img, DType::F32, {B, Li, c.in_channels});
  const Tensor txt_in = be.view_host(in.txt, DType::F32, {B, Lt, c.context_in_dim});
  const Tensor y_in = be.view_host(in.y, DType::F32, {B, 1, c.vec_in_dim});
  const Tensor out_t = be.host_output(out, DType::F32, {B, Li, c.out_channels});

  // Activations, reused across samples and blocks.
  const Tensor hidden_tmp = be.alloc(DType::F32, {1, H});
  const Tensor vec = be.alloc(DType::F32, {1, H}), vec_tmp = be.alloc(DType::F32, {1, H});
  const Tensor x = be.alloc(DType::F32, {L, H});  // [txt; img] rows
  const Tensor a = be.alloc(DType::F32, {L, H});  // modulated LN output
  const Tensor qkv = be.alloc(DType::F32, {L, 3 * H});
  const Tensor attn = be.alloc(DType::F32, {L, H});
  const Tensor proj = be.alloc(DType::F32, {L, H});
  const Tensor hidden = be.alloc(DType::F32, {L, 3 * H + mlp});  // MLP hidden, or linear1's [qkv | mlp]
  const Tensor cat = be.alloc(DType::F32, {L, H + mlp});
  const Tensor mod = be.alloc(DType::F32, {1, 6 * H}), mod2 = be.alloc(DType::F32, {1, 6 * H});
  const Tensor cos_t = be.alloc(DType::F32, {L * hd / 2}), sin_t = be.alloc(DType::F32, {L * hd / 2});
  std::vector<float> emb(static_cast<size_t>(c.time_embed_dim)), ids(static_cast<size_t>(L * n_axes));

  // Views: rows [r0, r0 + n) of a [rows, cols] tensor; the i-th of `count` equal parts of a modulation vector.
  auto rows = [](const Tensor& t, int64_t r0, int64_t n) { return t.narrow(0, r0, n); };
  auto chunk = [H](const Tensor& t, int64_t i) { return t.select(0, 0).narrow(0, i * H, H); };
  // The first r·n elements of a contiguous buffer as a [r, n] matrix.
  auto scratch = [](const Tensor& t, int64_t r, int64_t n) { return t.reshape({t.numel()}).narrow(0, 0, r * n).reshape({r, n}); };
  const CancelScope scope(in.cancel);  // the kernels stop inside a block too (core/cancel.h)
  auto check_cancel = [&] { scope.check("flux forward"); };
  // The embedding of one timestep-like value through a two-layer MLP: dst = mlp2(SiLU(mlp1(E(value)))).
  auto embed_scalar = [&](float value, const LinearLayer& mlp1, const LinearLayer& mlp2, const Tensor& dst) {
    timestep_embedding(value, c.time_embed_dim, emb.data());
    be.linear(be.view_host(emb.data(), DType::F32, {1, c.time_embed_dim}), mlp1, Activation::Silu, hidden_tmp);
    be.linear(hidden_tmp, mlp2, Activation::None, dst);
  };

  const int64_t n_doubles = static_cast<int64_t>(m.doubles.size());
  const int64_t n_blocks = n_doubles + static_cast<int64_t>(m.singles.size());
  // For step caching only: a gate of -1s turns gated_add into an exact subtraction; the host copy of a head residual.
  Tensor minus_ones, head_input, head_change, middle_input;
  std::vector<float> head_residual;
  if (in.step_caches != nullptr) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t other = 0; other < b; ++other)
        require(in.step_caches[b] == nullptr || in.step_caches[b] != in.step_caches[other],
                "step_caches[" + std::to_string(other) + "] and step_caches[" + std::to_string(b) +
                    "] are the same cache (one cache per sample)");
    }
    minus_ones = be.to_device(std::vector<float>(static_cast<size_t>(H), -1.0f));
    head_input = be.alloc(DType::F32, {Li, H});   // the image rows before the head blocks
    head_change = be.alloc(DType::F32, {Li, H});  // their change over the head blocks
    middle_input = be.alloc(DType::F32, {L, H});  // the tokens after the head blocks
  }

  for (int64_t b = 0; b < B; ++b) {
    check_cancel();
    // ---- conditioning vector: time (+ guidance) + pooled text ----
    embed_scalar(in.timesteps[b], *m.time_in1, *m.time_in2, vec);
    if (c.guidance_embed) {
      embed_scalar(in.guidance[b], *m.guidance_in1, *m.guidance_in2, vec_tmp);
      be.add(vec, vec_tmp);
    }
    be.linear(y_in.select(0, b), *m.vector_in1, Activation::Silu, hidden_tmp);
    be.linear(hidden_tmp, *m.vector_in2, Activation::None, vec_tmp);
    be.add(vec, vec_tmp);
    be.silu(vec);  // every modulation reads SiLU(vec)

    // ---- token embeddings and RoPE tables (text first, then image) ----
    const Tensor txt = rows(x, 0, Lt), img = rows(x, Lt, Li);
    be.linear(txt_in.select(0, b), *m.txt_in, Activation::None, txt);
    be.linear(img_in.select(0, b), *m.img_in, Activation::None, img);
    std::copy(in.txt_ids + b * Lt * n_axes, in.txt_ids + (b + 1) * Lt * n_axes, ids.begin());
    std::copy(in.img_ids + b * Li * n_axes, in.img_ids + (b + 1) * Li * n_axes, ids.begin() + Lt * n_axes);
    be.rope_tables(ids.data(), L, c.axes_dim, c.theta, cos_t, sin_t);

    // q and k (column blocks of a [L, row] buffer at 0 and H): QK-norm per stream (rows [0, rows0) use
    // the first norms), then RoPE; v untouched.
    auto prepare_qk = [&](const Tensor& buffer, int64_t rows0, const Tensor& qn0, const Tensor& kn0,
                          const Tensor& qn1, const Tensor& kn1) {
      const Tensor q = buffer.narrow(1, 0, H), k = buffer.narrow(1, H, H);
      be.rms_norm_heads(rows(q, 0, rows0), heads, qn0, norm_eps);
      be.rms_norm_heads(rows(k, 0, rows0), heads, kn0, norm_eps);
      be.rms_norm_heads(rows(q, rows0, L - rows0), heads, qn1, norm_eps);
      be.rms_norm_heads(rows(k, rows0, L - rows0), heads, kn1, norm_eps);
      be.rope_apply(q, heads, cos_t, sin_t);
      be.rope_apply(k, heads, cos_t, sin_t);
    };
    backend::AttentionParams joint;
    joint.heads = heads;
    joint.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
    // Joint attention over the L tokens of a [L, row] buffer holding q, k, v at columns 0, H, 2H.
    auto joint_attention = [&](const Tensor& buffer, const Tensor& o) {
      be.attention(buffer.narrow(1, 0, H).unsqueeze(0), buffer.narrow(1, H, H).unsqueeze(0),
                   buffer.narrow(1, 2 * H, H).unsqueeze(0), o.unsqueeze(0), joint);
    };
    const Tensor a_txt = rows(a, 0, Lt), a_img = rows(a, Lt, Li);
    const Tensor p_txt = rows(proj, 0, Lt), p_img = rows(proj, Lt, Li);

    // Block i of the network in execution order: the double-stream blocks, then the single-stream ones; each
    // reads and updates x = [txt; img].
    auto run_double = [&](const Impl::DoubleBlock& blk) {
      be.linear(vec, *blk.img_mod, Activation::None, mod);  // shift1 scale1 gate1 shift2 scale2 gate2
      be.linear(vec, *blk.txt_mod, Activation::None, mod2);
      be.layernorm_modulate(txt, chunk(mod2, 0), chunk(mod2, 1), norm_eps, a_txt);
      be.layernorm_modulate(img, chunk(mod, 0), chunk(mod, 1), norm_eps, a_img);
      be.linear(a_txt, *blk.txt_qkv, Activation::None, rows(qkv, 0, Lt));
      be.linear(a_img, *blk.img_qkv, Activation::None, rows(qkv, Lt, Li));
      prepare_qk(qkv, Lt, blk.txt_q_norm, blk.txt_k_norm, blk.img_q_norm, blk.img_k_norm);
      joint_attention(qkv, attn);

      be.linear(rows(attn, 0, Lt), *blk.txt_proj, Activation::None, p_txt);
      be.linear(rows(attn, Lt, Li), *blk.img_proj, Activation::None, p_img);
      be.gated_add(txt, chunk(mod2, 2), p_txt);
      be.gated_add(img, chunk(mod, 2), p_img);

      be.layernorm_modulate(txt, chunk(mod2, 3), chunk(mod2, 4), norm_eps, a_txt);
      be.layernorm_modulate(img, chunk(mod, 3), chunk(mod, 4), norm_eps, a_img);
      const Tensor h_txt = scratch(hidden, Lt, mlp), h_img = scratch(hidden, Li, mlp);
      be.linear(a_txt, *blk.txt_mlp0, Activation::GeluTanh, h_txt);
      be.linear(h_txt, *blk.txt_mlp2, Activation::None, p_txt);
      be.linear(a_img, *blk.img_mlp0, Activation::GeluTanh, h_img);
      be.linear(h_img, *blk.img_mlp2, Activation::None, p_img);
      be.gated_add(txt, chunk(mod2, 5), p_txt);
      be.gated_add(img, chunk(mod, 5), p_img);
    };
    auto run_single = [&](const Impl::SingleBlock& blk) {
      const Tensor mod3 = mod.narrow(1, 0, 3 * H);
      be.linear(vec, *blk.mod, Activation::None, mod3);  // shift scale gate
      be.layernorm_modulate(x, chunk(mod3, 0), chunk(mod3, 1), norm_eps, a);
      be.linear(a, *blk.linear1, Activation::None, hidden);  // [q | k | v | mlp]
      prepare_qk(hidden, L, blk.q_norm, blk.k_norm, blk.q_norm, blk.k_norm);
      joint_attention(hidden, cat.narrow(1, 0, H));
      const Tensor mlp_part = cat.narrow(1, H, mlp);
      be.copy(hidden.narrow(1, 3 * H, mlp), mlp_part);
      be.gelu_tanh(mlp_part);
      be.linear(cat, *blk.linear2, Activation::None, proj);
      be.gated_add(x, chunk(mod3, 2), proj);
    };
    auto run_blocks = [&](int64_t first, int64_t end) {
      for (int64_t i = first; i < end; ++i) {
        check_cancel();
        if (i < n_doubles) {
          run_double(m.doubles[static_cast<size_t>(i)]);
        } else {
          run_single(m.singles[static_cast<size_t>(i - n_doubles)]);
        }
      }
    };

    FluxStepCache* cache = in.step_caches != nullptr ? in.step_caches[b] : nullptr;
    if (cache == nullptr) {
      run_blocks(0, n_blocks);
      if (in.blocks_computed != nullptr) in.blocks_computed[b] = static_cast<int32_t>(n_blocks);
    } else {
      // Step caching (models/flux_step_cache.h): run the head, measure its residual on the image rows, then
      // either run the middle and remember its residual, or add the remembered one; the tail always runs.
      cache->bind(*this, Lt, Li);
      const int64_t head = std::min<int64_t>(cache->policy().head_blocks, n_blocks);
      const int64_t tail = std::min<int64_t>(cache->policy().tail_blocks, n_blocks - head);
      const bool may_reuse = cache->may_reuse(n_blocks);
      be.copy(img, head_input);
      run_blocks(0, head);
      be.copy(img, head_change);
      be.gated_add(head_change, minus_ones, head_input);  // exact: x + (-1)·y is x - y
      head_residual.resize(static_cast<size_t>(Li * H));
      be.download(head_change, head_residual.data());
      const bool reuse = cache->decide(head_residual, may_reuse);
      if (reuse) {
        be.add(x, cache->middle_residual);
      } else {
        cache->has_middle_residual = false;  // until the middle has run: a forward stopped inside it leaves nothing to reuse
        be.copy(x, middle_input);
        run_blocks(head, n_blocks - tail);
        be.copy(x, cache->middle_residual);
        be.gated_add(cache->middle_residual, minus_ones, middle_input);
        cache->has_middle_residual = true;
      }
      run_blocks(n_blocks - tail, n_blocks);
      cache->finish_step(reuse);
      if (in.blocks_computed != nullptr)
        in.blocks_computed[b] = static_cast<int32_t>(reuse ? head + tail : n_blocks);
    }

    // ---- final layer on the image tokens: (shift, scale) in BFL order ----
    const Tensor mod_final = mod.narrow(1, 0, 2 * H);
    be.linear(vec, *m.final_mod, Activation::None, mod_final);
    be.layernorm_modulate(img, chunk(mod_final, 0), chunk(mod_final, 1), norm_eps, a_img);
    be.linear(a_img, *m.final_linear, Activation::None, out_t.select(0, b));
  }
  check_cancel();  // a kernel may have stopped early: never return its output
  be.download(out_t, out);
}

}  // namespace fx::models
