#include "models/text_encoders.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "core/cancel.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/recognize.h"
#include "models/weight_loader.h"

namespace fx::models {

namespace {

// The T5 position bias is [heads, rows, L] f32 for a slice of query rows; above this many bytes the
// attention runs in slices of query rows, each with its own bias (T5-XXL at 512 tokens: 64 MB, one slice).
constexpr size_t kMaxBiasBytes = size_t(256) << 20;

int64_t cfg_int(const nlohmann::json& c, const char* key, const char* model) {
  const auto it = c.find(key);
  if (it == c.end() || !it->is_number_integer())
    fail(FX_ERR_FORMAT, std::string(model) + ": the configuration value \"" + key +
                            "\" could not be inferred from the checkpoint");
  return it->get<int64_t>();
}

double cfg_number(const nlohmann::json& c, const char* key, const char* model) {
  const auto it = c.find(key);
  if (it == c.end() || !it->is_number())
    fail(FX_ERR_FORMAT, std::string(model) + ": the configuration value \"" + key + "\" is missing or not a number");
  return it->get<double>();
}

std::string cfg_string(const nlohmann::json& c, const char* key) {
  const auto it = c.find(key);
  return it != c.end() && it->is_string() ? it->get<std::string>() : std::string();
}

TextEncoderConfig config_from(const std::string& kind, const nlohmann::json& c, const std::string& path) {
  TextEncoderConfig config;
  if (kind == "clip_text") {
    const char* m = "CLIP text encoder";
    config.kind = TextEncoderKind::ClipText;
    config.vocab_size = cfg_int(c, "vocab_size", m);
    config.hidden = cfg_int(c, "hidden_size", m);
    config.layers = cfg_int(c, "num_layers", m);
    config.heads = cfg_int(c, "num_heads", m);
    config.head_dim = cfg_int(c, "head_dim", m);
    config.intermediate = cfg_int(c, "intermediate_size", m);
    config.max_positions = cfg_int(c, "max_position_embeddings", m);
    config.eps = cfg_number(c, "layer_norm_eps", m);
    const std::string act = cfg_string(c, "hidden_act");
    if (act != "quick_gelu")
      fail(FX_ERR_UNSUPPORTED, path + ": CLIP hidden_act \"" + act +
                                   "\" is not supported (the FLUX CLIP text tower uses quick_gelu)");
  } else {
    const char* m = "T5 encoder";
    config.kind = TextEncoderKind::T5Encoder;
    config.vocab_size = cfg_int(c, "vocab_size", m);
    config.hidden = cfg_int(c, "d_model", m);
    config.layers = cfg_int(c, "num_layers", m);
    config.heads = cfg_int(c, "num_heads", m);
    config.head_dim = cfg_int(c, "d_kv", m);
    config.intermediate = cfg_int(c, "d_ff", m);
    config.num_buckets = cfg_int(c, "relative_attention_num_buckets", m);
    config.max_distance = cfg_int(c, "relative_attention_max_distance", m);
    config.eps = cfg_number(c, "layer_norm_epsilon", m);
    const std::string ff = cfg_string(c, "feed_forward_proj");
    if (!c.value("gated", false) || ff != "gated-gelu")
      fail(FX_ERR_UNSUPPORTED, path + ": T5 feed_forward_proj \"" + ff +
                                   "\" is not supported (T5 v1.1 as FLUX uses it: gated-gelu with wi_0 and wi_1)");
    // Bidirectional buckets: half per direction, half/2 of them exact; the logarithmic part needs
    // max_distance beyond the exact range.
    if (config.num_buckets < 4 || config.num_buckets % 2 != 0 || config.max_distance <= config.num_buckets / 4)
      fail(FX_ERR_FORMAT, path + ": T5 relative attention with " + std::to_string(config.num_buckets) +
                              " buckets and max distance " + std::to_string(config.max_distance) +
                              " is not usable (need an even bucket count >= 4 and max distance > buckets/4)");
  }
  if (config.vocab_size < 1 || config.hidden < 1 || config.layers < 0 || config.heads < 1 || config.head_dim < 1 ||
      config.intermediate < 1 || !(config.eps >= 0.0))
    fail(FX_ERR_FORMAT, path + ": implausible " + kind + " configuration");
  if (config.kind == TextEncoderKind::ClipText && config.heads * config.head_dim != config.hidden)
    fail(FX_ERR_FORMAT, path + ": CLIP hidden size " + std::to_string(config.hidden) + " is not " +
                            std::to_string(config.heads) + " heads x " + std::to_string(config.head_dim));
  return config;
}

}  // namespace

int32_t t5_relative_bucket(int64_t rel, int64_t num_buckets, int64_t max_distance) {
  const int64_t half = num_buckets / 2, exact = half / 2;
  int32_t bucket = rel > 0 ? int32_t(half) : 0;
  const int64_t n = rel < 0 ? -rel : rel;
  if (n < exact) return bucket + int32_t(n);
  // transformers: log(n / exact) / log(max_distance / exact) * (half - exact) in f32 (the denominator a
  // Python float), truncated to an integer (the value is >= 0, so truncation is floor).
  const float ratio = std::log(float(n) / float(exact)) / float(std::log(double(max_distance) / double(exact)));
  const int64_t large = exact + int64_t(ratio * float(half - exact));
  return bucket + int32_t(std::min(large, half - 1));
}

using backend::Activation;
using backend::LinearLayer;
using backend::Tensor;

struct TextEncoder::Impl {
  // Token embedding [vocab, hidden] in its stored dtype. On the CPU it is a view of the checkpoint's own mapping
  // of the file that holds it, kept alive here after the checkpoint is closed (rows converted on lookup); another
  // backend holds its own copy.
  std::shared_ptr<const io::MappedFile> embed_file;
  Tensor embed_table;

  Tensor positions;  // CLIP [max_positions, hidden]
  Tensor rel_table;  // T5 [num_buckets, heads]

  struct Layer {
    Tensor norm1_w, norm1_b, norm2_w, norm2_b;  // T5: no biases
    std::unique_ptr<LinearLayer> q, k, v, o;
    std::unique_ptr<LinearLayer> fc1, fc2;  // CLIP fc1/fc2; T5 wi_0 / wo
    std::unique_ptr<LinearLayer> gate;      // T5 wi_1
  };
  std::vector<Layer> layers;
  Tensor final_w, final_b;
};

namespace {

// Keeps the mapping of the file that holds the embedding table and points the model at the table inside it. Tied copies
// stored under both names (docs/flux-model.md §8.4) must agree; only one is used.
void load_embedding(const WeightLoader& load, const io::Checkpoint& checkpoint, const std::string& name,
                    const std::string& alias, TextEncoder::Impl& m) {
  const LoadedTensor loaded = load.fetch(name, alias);
  load.record(name, loaded);
  const io::Checkpoint::Tensor& t = *loaded.stored;
  if (!alias.empty() && t.name.size() >= name.size() && t.name.compare(t.name.size() - name.size(), name.size(), name) == 0) {
    const std::string prefix = t.name.substr(0, t.name.size() - name.size());
    if (const auto* other = checkpoint.find(prefix + alias)) {
      if (other->dtype != t.dtype || other->shape != t.shape ||
          std::memcmp(other->data(), t.data(), static_cast<size_t>(t.byte_size)) != 0)
        fail(FX_ERR_FORMAT, checkpoint.path() + ": \"" + t.name + "\" and \"" + other->name +
                                "\" are both present but differ (they are the same tied embedding)");
    }
  }
  if (t.file == nullptr)
    fail(FX_ERR_UNSUPPORTED, load.label(t.name) + ": text encoders are read from safetensors files only (this is GGUF)");
  m.embed_file = t.file->mapping();
  m.embed_table = load.backend().view_host(t.data(), t.dtype, t.shape);
}

}  // namespace

std::unique_ptr<TextEncoder> TextEncoder::load(const io::Checkpoint& checkpoint, backend::WeightFormat format,
                                               std::shared_ptr<backend::Backend> backend, const std::string& want_kind,
                                               WeightRecorder* recorder) {
  if (!want_kind.empty() && want_kind != "clip_text" && want_kind != "t5_encoder")
    fail(FX_ERR_INVALID_ARGUMENT, "text encoder kind \"" + want_kind + "\" is neither \"clip_text\" nor \"t5_encoder\"");
  const nlohmann::json description = describe(checkpoint, want_kind);
  const std::string kind = require_kind(checkpoint, description, {"clip_text", "t5_encoder"},
                                        "a CLIP text encoder or a T5 encoder");
  if (!want_kind.empty() && kind != want_kind)
    fail(FX_ERR_UNSUPPORTED, checkpoint.path() + " holds no " + (want_kind == "clip_text" ? "CLIP text encoder" : "T5 encoder") +
                                 " (recognised as \"" + kind + "\")");
  const char* model_name = kind == "clip_text" ? "CLIP text encoder" : "T5 encoder";

  std::unique_ptr<TextEncoder> model(new TextEncoder());
  model->backend_ = backend ? std::move(backend) : backend::cpu_backend();
  model->config_ = config_from(kind, description["config"], checkpoint.path());
  model->impl_ = std::make_unique<Impl>();
  Impl& m = *model->impl_;
  const TextEncoderConfig& c = model->config_;
  WeightLoader load(checkpoint, description, kind, "hf", model_name, *model->backend_);
  load.set_format(format, backend::Precision::Exact);
  load.set_recorder(recorder);

  if (c.kind == TextEncoderKind::ClipText) {
    load_embedding(load, checkpoint, "text_model.embeddings.token_embedding.weight", "", m);
    m.positions = load.vector("text_model.embeddings.position_embedding.weight");
    for (int64_t i = 0; i < c.layers; ++i) {
      const std::string p = "text_model.encoder.layers." + std::to_string(i) + ".";
      Impl::Layer l;
      l.norm1_w = load.vector(p + "layer_norm1.weight");
      l.norm1_b = load.vector(p + "layer_norm1.bias");
      l.q = load.linear(p + "self_attn.q_proj", true);
      l.k = load.linear(p + "self_attn.k_proj", true);
      l.v = load.linear(p + "self_attn.v_proj", true);
      l.o = load.linear(p + "self_attn.out_proj", true);
      l.norm2_w = load.vector(p + "layer_norm2.weight");
      l.norm2_b = load.vector(p + "layer_norm2.bias");
      l.fc1 = load.linear(p + "mlp.fc1", true);
      l.fc2 = load.linear(p + "mlp.fc2", true);
      m.layers.push_back(std::move(l));
    }
    m.final_w = load.vector("text_model.final_layer_norm.weight");
    m.final_b = load.vector("text_model.final_layer_norm.bias");
  } else {
    load_embedding(load, checkpoint, "shared.weight", "encoder.embed_tokens.weight", m);
    if (c.layers > 0) m.rel_table = load.vector("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
    for (int64_t i = 0; i < c.layers; ++i) {
      const std::string p = "encoder.block." + std::to_string(i) + ".layer.";
      Impl::Layer l;
      l.norm1_w = load.vector(p + "0.layer_norm.weight");
      l.q = load.linear(p + "0.SelfAttention.q", false);
      l.k = load.linear(p + "0.SelfAttention.k", false);
      l.v = load.linear(p + "0.SelfAttention.v", false);
      l.o = load.linear(p + "0.SelfAttention.o", false);
      l.norm2_w = load.vector(p + "1.layer_norm.weight");
      l.fc1 = load.linear(p + "1.DenseReluDense.wi_0", false);
      l.gate = load.linear(p + "1.DenseReluDense.wi_1", false);
      l.fc2 = load.linear(p + "1.DenseReluDense.wo", false);
      m.layers.push_back(std::move(l));
    }
    m.final_w = load.vector("encoder.final_layer_norm.weight");
  }
  return model;
}

TextEncoder::~TextEncoder() = default;

void TextEncoder::encode(const int32_t* ids, int64_t batch, int64_t length, float* hidden, float* pooled,
                         const volatile int32_t* cancel) const {
  const TextEncoderConfig& c = config_;
  const std::string who = std::string(c.kind_name()) + " encode: ";
  if (ids == nullptr) fail(FX_ERR_INVALID_ARGUMENT, who + "ids is NULL");
  if (batch < 1 || length < 1) fail(FX_ERR_INVALID_ARGUMENT, who + "batch and length must be >= 1");
  if (c.kind == TextEncoderKind::ClipText && length > c.max_positions)
    fail(FX_ERR_INVALID_ARGUMENT, who + "length " + std::to_string(length) + " exceeds the " +
                                      std::to_string(c.max_positions) + " positions of this CLIP model");
  if (c.kind == TextEncoderKind::T5Encoder && pooled != nullptr)
    fail(FX_ERR_INVALID_ARGUMENT, who + "T5 has no pooled output: pass NULL for pooled");
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t l = 0; l < length; ++l) {
      const int32_t id = ids[b * length + l];
      if (id < 0 || id >= c.vocab_size)
        fail(FX_ERR_INVALID_ARGUMENT, who + "id " + std::to_string(id) + " at row " + std::to_string(b) +
                                          ", position " + std::to_string(l) + " is outside [0, " +
                                          std::to_string(c.vocab_size) + ")");
    }
  if (hidden == nullptr && pooled == nullptr) return;  // nothing asked for
  const CancelScope scope(cancel);  // the kernels stop inside a block too (core/cancel.h)
  if (c.kind == TextEncoderKind::ClipText)
    encode_clip(ids, batch, length, hidden, pooled, cancel);
  else
    encode_t5(ids, batch, length, hidden, cancel);
  scope.check((std::string(c.kind_name()) + " encode").c_str());  // a kernel may have stopped early: never return its output
}

namespace {

void check_cancel(const volatile int32_t* cancel, const char* kind) {
  if (cancel != nullptr && *cancel != 0) fail(FX_ERR_CANCELLED, std::string(kind) + " encode: cancelled");
}

}  // namespace

void TextEncoder::encode_clip(const int32_t* ids, int64_t batch, int64_t length, float* hidden, float* pooled,
                              const volatile int32_t* cancel) const {
  const TextEncoderConfig& c = config_;
  const Impl& m = *impl_;
  backend::Backend& be = *backend_;
  const int64_t H = c.hidden, F = c.intermediate;

  // Pooling position of each row: the first occurrence of its largest id (docs/flux-model.md §3.2 step 4).
  std::vector<int64_t> pool_at(static_cast<size_t>(batch), 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* row = ids + b * length;
    pool_at[size_t(b)] = std::max_element(row, row + length) - row;
  }
  // Causal attention: position p depends on positions 0..p only, so without hidden states the positions
  // after the last pooled one need not be computed.
  int64_t L = length;
  if (hidden == nullptr) L = *std::max_element(pool_at.begin(), pool_at.end()) + 1;
  const int64_t R = batch * L;

  const Tensor x = be.alloc(DType::F32, {batch, L, H}), a = be.alloc(DType::F32, {batch, L, H});
  const Tensor qkv = be.alloc(DType::F32, {batch, L, 3 * H}), attn = be.alloc(DType::F32, {batch, L, H});
  const Tensor tmp = be.alloc(DType::F32, {batch, L, H}), mlp = be.alloc(DType::F32, {batch, L, F});
  std::vector<int32_t> run_ids(static_cast<size_t>(R));
  for (int64_t b = 0; b < batch; ++b) std::copy(ids + b * length, ids + b * length + L, run_ids.begin() + b * L);
  be.embedding(m.embed_table, run_ids.data(), R, x);
  const Tensor positions = m.positions.reshape({c.max_positions, H}).narrow(0, 0, L);
  for (int64_t b = 0; b < batch; ++b) be.add(x.select(0, b), positions);

  backend::AttentionParams causal;
  causal.heads = c.heads;
  causal.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  causal.causal = true;
  const float eps = static_cast<float>(c.eps);
  const Tensor q = qkv.narrow(2, 0, H), k = qkv.narrow(2, H, H), v = qkv.narrow(2, 2 * H, H);

  for (const auto& l : m.layers) {
    check_cancel(cancel, "clip_text");
    be.layernorm(x, l.norm1_w, l.norm1_b, eps, a);
    be.linear(a, *l.q, Activation::None, q);
    be.linear(a, *l.k, Activation::None, k);
    be.linear(a, *l.v, Activation::None, v);
    be.attention(q, k, v, attn, causal);
    be.linear(attn, *l.o, Activation::None, tmp);
    be.add(x, tmp);
    be.layernorm(x, l.norm2_w, l.norm2_b, eps, a);
    be.linear(a, *l.fc1, Activation::None, mlp);
    be.quick_gelu(mlp);
    be.linear(mlp, *l.fc2, Activation::None, tmp);
    be.add(x, tmp);
  }
  check_cancel(cancel, "clip_text");
  // L == length whenever hidden is written.
  const Tensor out = hidden != nullptr ? be.host_output(hidden, DType::F32, {batch, L, H}) : a;
  be.layernorm(x, m.final_w, m.final_b, eps, out);
  if (hidden != nullptr) be.download(out, hidden);
  if (pooled != nullptr) {
    const Tensor pooled_t = be.host_output(pooled, DType::F32, {batch, H});
    for (int64_t b = 0; b < batch; ++b)
      be.copy(out.select(0, b).narrow(0, pool_at[size_t(b)], 1), pooled_t.narrow(0, b, 1));
    be.download(pooled_t, pooled);
  }
}

void TextEncoder::encode_t5(const int32_t* ids, int64_t batch, int64_t length, float* hidden,
                            const volatile int32_t* cancel) const {
  const TextEncoderConfig& c = config_;
  const Impl& m = *impl_;
  backend::Backend& be = *backend_;
  const int64_t H = c.hidden, F = c.intermediate, heads = c.heads, hd = c.head_dim, inner = heads * hd;
  const int64_t L = length, R = batch * L;

  const Tensor x = be.alloc(DType::F32, {batch, L, H}), a = be.alloc(DType::F32, {batch, L, H});
  const Tensor qkv = be.alloc(DType::F32, {batch, L, 3 * inner}), attn = be.alloc(DType::F32, {batch, L, inner});
  const Tensor tmp = be.alloc(DType::F32, {batch, L, H});
  const Tensor h0 = be.alloc(DType::F32, {batch, L, F}), h1 = be.alloc(DType::F32, {batch, L, F});
  be.embedding(m.embed_table, ids, R, x);

  // Relative position bias P[h, i, j] = table[bucket(j - i), h] (docs/flux-model.md §3.3), from block 0's table,
  // shared by every block and every batch row. Built for slices of query rows if the whole is too big.
  std::vector<int32_t> bucket_of(size_t(2 * L - 1));  // index rel + L - 1
  for (int64_t rel = -(L - 1); rel <= L - 1; ++rel)
    bucket_of[size_t(rel + L - 1)] = t5_relative_bucket(rel, c.num_buckets, c.max_distance);
  const size_t bytes_per_row = size_t(heads) * size_t(L) * sizeof(float);
  const int64_t slice = std::max<int64_t>(1, std::min<int64_t>(L, int64_t(kMaxBiasBytes / bytes_per_row)));
  Tensor bias_storage = be.alloc(DType::F32, {heads * slice * L});
  Tensor bias;
  int64_t bias_q0 = -1;  // the query slice the bias buffer holds
  auto fill_bias = [&](int64_t q0, int64_t nq) {
    if (bias_q0 == q0) return;
    bias = bias_storage.narrow(0, 0, heads * nq * L).reshape({heads, nq, L});
    be.relative_position_bias(m.rel_table.reshape({c.num_buckets, heads}), bucket_of, q0, L, bias);
    bias_q0 = q0;
  };

  const float eps = static_cast<float>(c.eps);
  const Tensor q = qkv.narrow(2, 0, inner), k = qkv.narrow(2, inner, inner), v = qkv.narrow(2, 2 * inner, inner);
  for (const auto& l : m.layers) {
    check_cancel(cancel, "t5_encoder");
    be.rms_norm(x, l.norm1_w, eps, a);
    be.linear(a, *l.q, Activation::None, q);
    be.linear(a, *l.k, Activation::None, k);
    be.linear(a, *l.v, Activation::None, v);
    for (int64_t q0 = 0; q0 < L; q0 += slice) {
      const int64_t nq = std::min(slice, L - q0);
      fill_bias(q0, nq);
      backend::AttentionParams params;
      params.heads = heads;
      params.scale = 1.0f;  // T5 folds 1/sqrt(d) into its weights
      const Tensor flat_bias = bias.reshape({bias.numel()});
      params.bias = &flat_bias;
      be.attention(q.narrow(1, q0, nq), k, v, attn.narrow(1, q0, nq), params);
    }
    be.linear(attn, *l.o, Activation::None, tmp);
    be.add(x, tmp);
    be.rms_norm(x, l.norm2_w, eps, a);
    be.linear(a, *l.fc1, Activation::GeluTanh, h0);
    be.linear(a, *l.gate, Activation::None, h1);
    be.mul(h0, h1);
    be.linear(h0, *l.fc2, Activation::None, tmp);
    be.add(x, tmp);
  }
  check_cancel(cancel, "t5_encoder");
  const Tensor out = be.host_output(hidden, DType::F32, {batch, L, H});
  be.rms_norm(x, m.final_w, eps, out);
  be.download(out, hidden);
}

}  // namespace fx::models
