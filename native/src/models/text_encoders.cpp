#include "models/text_encoders.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/recognize.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/elementwise.h"

namespace fx::models {

namespace {

// The T5 position bias is [heads, rows, L] f32 for a slice of query rows; above this many bytes the
// attention runs in slices of query rows, each with its own bias (T5-XXL at 512 tokens: 64 MB, one slice).
constexpr size_t kMaxBiasBytes = size_t(256) << 20;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s("[");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

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

struct TextEncoder::Impl {
  // Token embedding: rows read from this mapping of the file that holds it, converted on lookup.
  std::unique_ptr<io::MappedFile> embed_file;
  const uint8_t* embed_data = nullptr;
  DType embed_dtype = DType::F32;
  size_t embed_row_bytes = 0;

  std::vector<float> positions;  // CLIP [max_positions, hidden]
  std::vector<float> rel_table;  // T5 [num_buckets, heads]

  struct Layer {
    std::vector<float> norm1_w, norm1_b, norm2_w, norm2_b;  // T5: no biases
    Linear q, k, v, o;
    Linear fc1, fc2;  // CLIP fc1/fc2; T5 wi_0 / wo
    Linear gate;      // T5 wi_1
  };
  std::vector<Layer> layers;
  std::vector<float> final_w, final_b;
};

namespace {

class Loader {
 public:
  Loader(const io::Checkpoint& checkpoint, const nlohmann::json& description, FluxWeightFormat format,
         const char* model, ThreadPool& pool)
      : checkpoint_(checkpoint), format_(format), model_(model), pool_(pool) {
    prefix_ = description.value("key_prefix", "");
    for (const auto& t : expected_tensors(description["kind"].get<std::string>(), "hf", description["config"]))
      expected_[t.name] = t.shape;
  }

  const io::Checkpoint::Tensor& tensor(const std::string& name, const std::string& alias = "") const {
    const auto* t = checkpoint_.find(prefix_ + name);
    if (t == nullptr && !alias.empty()) t = checkpoint_.find(prefix_ + alias);
    if (t == nullptr) fail(FX_ERR_FORMAT, checkpoint_.path() + ": tensor \"" + prefix_ + name + "\" is missing");
    const auto expected = expected_.find(name);
    if (expected != expected_.end() && t->shape != expected->second)
      fail(FX_ERR_FORMAT, label(t->name) + " has shape " + shape_text(t->shape) + " but the configuration needs " +
                              shape_text(expected->second));
    if (!dtype_is_float(t->dtype))
      fail(FX_ERR_FORMAT, label(t->name) + " is stored as " + dtype_name(t->dtype) + ", not a floating-point type");
    return *t;
  }

  std::vector<float> vector(const std::string& name) const {
    const auto& t = tensor(name);
    std::vector<float> values(static_cast<size_t>(t.element_count()));
    convert(t.dtype, t.data(), DType::F32, values.data(), values.size(), Overflow::Ieee);
    return values;
  }

  // Packs a linear layer in the requested format. Conversions go row by row into the target dtype, so
  // no f32 copy of a weight exists unless F32 was asked for (or f16 is stored, which has no kernel).
  TextEncoder::Linear linear(const std::string& prefix, bool has_bias) const {
    const auto& w = tensor(prefix + ".weight");
    if (w.shape.size() != 2) fail(FX_ERR_FORMAT, label(w.name) + " is not a matrix");
    const cpu::Weights view{w.dtype, w.data(), w.shape[0], w.shape[1], nullptr};
    TextEncoder::Linear layer;
    layer.weights = pack_linear_weights(view, format_, label(w.name), pool_);
    if (has_bias) layer.bias = vector(prefix + ".bias");
    return layer;
  }

  // Maps the file that holds the embedding table and points the model at the table inside it.
  void embedding(const std::string& name, const std::string& alias, TextEncoder::Impl& m, int64_t vocab,
                 int64_t hidden) const {
    const auto& t = tensor(name, alias);
    if (t.shape != std::vector<int64_t>{vocab, hidden})
      fail(FX_ERR_FORMAT, label(t.name) + " has shape " + shape_text(t.shape) + " but the configuration needs " +
                              shape_text({vocab, hidden}));
    if (!alias.empty() && t.name == prefix_ + name) {
      // Tied copies stored under both names (spec §8.4) must agree; only one is used.
      if (const auto* other = checkpoint_.find(prefix_ + alias)) {
        if (other->dtype != t.dtype || other->shape != t.shape ||
            std::memcmp(other->data(), t.data(), static_cast<size_t>(t.byte_size)) != 0)
          fail(FX_ERR_FORMAT, checkpoint_.path() + ": \"" + t.name + "\" and \"" + other->name +
                                  "\" are both present but differ (they are the same tied embedding)");
      }
    }
    const uint64_t offset = t.file->absolute_offset(*t.entry);
    m.embed_file = io::MappedFile::open(t.file->path());
    const uint8_t* original = t.data() - offset;
    // The file must still be the one the checkpoint parsed: same size, same header bytes.
    if (m.embed_file->size() != t.file->file_size() ||
        std::memcmp(m.embed_file->data(), original, static_cast<size_t>(t.file->header().data_start())) != 0)
      fail(FX_ERR_IO, t.file->path() + " changed on disk while the " + std::string(model_) + " was loading");
    m.embed_data = m.embed_file->data() + offset;
    m.embed_dtype = t.dtype;
    m.embed_row_bytes = static_cast<size_t>(hidden) * dtype_size(t.dtype);
  }

 private:
  std::string label(const std::string& stored_name) const {
    return checkpoint_.path() + ": " + model_ + " tensor \"" + stored_name + "\"";
  }

  const io::Checkpoint& checkpoint_;
  FluxWeightFormat format_;
  const char* model_;
  ThreadPool& pool_;
  std::string prefix_;
  std::map<std::string, std::vector<int64_t>> expected_;
};

}  // namespace

std::unique_ptr<TextEncoder> TextEncoder::load(const io::Checkpoint& checkpoint, FluxWeightFormat format,
                                               ThreadPool& pool) {
  const nlohmann::json description = describe(checkpoint);
  const std::string kind = description.value("kind", "unknown");
  if (kind != "clip_text" && kind != "t5_encoder")
    fail(FX_ERR_UNSUPPORTED, checkpoint.path() + " is not a CLIP text encoder or a T5 encoder (recognised as \"" +
                                 kind + "\")");
  const char* model_name = kind == "clip_text" ? "CLIP text encoder" : "T5 encoder";
  if (!description["problems"].empty()) {
    std::string problems;
    for (const auto& p : description["problems"]) problems += "\n  " + p.get<std::string>();
    fail(FX_ERR_FORMAT, checkpoint.path() + ": the " + model_name + " checkpoint is incomplete:" + problems);
  }

  std::unique_ptr<TextEncoder> model(new TextEncoder());
  model->config_ = config_from(kind, description["config"], checkpoint.path());
  model->impl_ = std::make_unique<Impl>();
  Impl& m = *model->impl_;
  const TextEncoderConfig& c = model->config_;
  Loader load(checkpoint, description, format, model_name, pool);

  if (c.kind == TextEncoderKind::ClipText) {
    load.embedding("text_model.embeddings.token_embedding.weight", "", m, c.vocab_size, c.hidden);
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
    load.embedding("shared.weight", "encoder.embed_tokens.weight", m, c.vocab_size, c.hidden);
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

void TextEncoder::embed(const int32_t* ids, int64_t count, float* out, ThreadPool& pool) const {
  const Impl& m = *impl_;
  const int64_t H = config_.hidden;
  pool.parallel_for(
      count,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          convert(m.embed_dtype, m.embed_data + static_cast<size_t>(ids[r]) * m.embed_row_bytes, DType::F32,
                  out + r * H, static_cast<size_t>(H), Overflow::Ieee);
      },
      std::max<int64_t>(1, 16384 / H));
}

void TextEncoder::encode(const int32_t* ids, int64_t batch, int64_t length, float* hidden, float* pooled,
                         const volatile int32_t* cancel, ThreadPool& pool) const {
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
  if (c.kind == TextEncoderKind::ClipText)
    encode_clip(ids, batch, length, hidden, pooled, cancel, pool);
  else
    encode_t5(ids, batch, length, hidden, cancel, pool);
}

namespace {

void check_cancel(const volatile int32_t* cancel, const char* kind) {
  if (cancel != nullptr && *cancel != 0) fail(FX_ERR_CANCELLED, std::string(kind) + " encode: cancelled");
}

void run_linear(const TextEncoder::Linear& layer, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
                ThreadPool& pool, cpu::Activation act = cpu::Activation::None) {
  cpu::linear(x, rows, ldx, layer.weights, layer.bias.empty() ? nullptr : layer.bias.data(), act, y, ldy,
              cpu::Precision::Exact, pool);
}

}  // namespace

void TextEncoder::encode_clip(const int32_t* ids, int64_t batch, int64_t length, float* hidden, float* pooled,
                              const volatile int32_t* cancel, ThreadPool& pool) const {
  const TextEncoderConfig& c = config_;
  const Impl& m = *impl_;
  const int64_t H = c.hidden, F = c.intermediate;

  // Pooling position of each row: the first occurrence of its largest id (spec §3.2 step 4).
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

  std::vector<float> x(size_t(R * H)), a(size_t(R * H)), qkv(size_t(R * 3 * H)), attn(size_t(R * H)),
      tmp(size_t(R * H)), mlp(size_t(R * F));
  std::vector<int32_t> run_ids(static_cast<size_t>(R));
  for (int64_t b = 0; b < batch; ++b) std::copy(ids + b * length, ids + b * length + L, run_ids.begin() + b * L);
  embed(run_ids.data(), R, x.data(), pool);
  for (int64_t b = 0; b < batch; ++b) cpu::add_inplace(x.data() + b * L * H, m.positions.data(), L * H, pool);

  cpu::AttentionShape shape;
  shape.batch = batch;
  shape.heads = c.heads;
  shape.seq_q = L;
  shape.seq_kv = L;
  shape.head_dim = c.head_dim;
  shape.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  shape.causal = true;
  const float eps = static_cast<float>(c.eps);

  for (const auto& l : m.layers) {
    check_cancel(cancel, "clip_text");
    cpu::layernorm_affine(x.data(), R, H, H, l.norm1_w.data(), l.norm1_b.data(), eps, a.data(), H, pool);
    run_linear(l.q, a.data(), R, H, qkv.data(), 3 * H, pool);
    run_linear(l.k, a.data(), R, H, qkv.data() + H, 3 * H, pool);
    run_linear(l.v, a.data(), R, H, qkv.data() + 2 * H, 3 * H, pool);
    cpu::attention(shape, {qkv.data(), L * 3 * H, 3 * H, c.head_dim}, {qkv.data() + H, L * 3 * H, 3 * H, c.head_dim},
                   {qkv.data() + 2 * H, L * 3 * H, 3 * H, c.head_dim}, {attn.data(), L * H, H, c.head_dim}, pool);
    run_linear(l.o, attn.data(), R, H, tmp.data(), H, pool);
    cpu::add_inplace(x.data(), tmp.data(), R * H, pool);
    cpu::layernorm_affine(x.data(), R, H, H, l.norm2_w.data(), l.norm2_b.data(), eps, a.data(), H, pool);
    run_linear(l.fc1, a.data(), R, H, mlp.data(), F, pool);
    cpu::quick_gelu(mlp.data(), R * F, pool);
    run_linear(l.fc2, mlp.data(), R, F, tmp.data(), H, pool);
    cpu::add_inplace(x.data(), tmp.data(), R * H, pool);
  }
  check_cancel(cancel, "clip_text");
  float* out = hidden != nullptr ? hidden : a.data();  // L == length whenever hidden is written
  cpu::layernorm_affine(x.data(), R, H, H, m.final_w.data(), m.final_b.data(), eps, out, H, pool);
  if (pooled != nullptr)
    for (int64_t b = 0; b < batch; ++b)
      std::memcpy(pooled + b * H, out + (b * L + pool_at[size_t(b)]) * H, sizeof(float) * size_t(H));
}

void TextEncoder::encode_t5(const int32_t* ids, int64_t batch, int64_t length, float* hidden,
                            const volatile int32_t* cancel, ThreadPool& pool) const {
  const TextEncoderConfig& c = config_;
  const Impl& m = *impl_;
  const int64_t H = c.hidden, F = c.intermediate, heads = c.heads, hd = c.head_dim, inner = heads * hd;
  const int64_t L = length, R = batch * L;

  std::vector<float> x(size_t(R * H)), a(size_t(R * H)), qkv(size_t(R * 3 * inner)), attn(size_t(R * inner)),
      tmp(size_t(R * H)), h0(size_t(R * F)), h1(size_t(R * F));
  embed(ids, R, x.data(), pool);

  // Relative position bias P[h, i, j] = table[bucket(j - i), h] (spec §3.3), from block 0's table,
  // shared by every block and every batch row. Built for slices of query rows if the whole is too big.
  std::vector<int32_t> bucket_of(size_t(2 * L - 1));  // index rel + L - 1
  for (int64_t rel = -(L - 1); rel <= L - 1; ++rel)
    bucket_of[size_t(rel + L - 1)] = t5_relative_bucket(rel, c.num_buckets, c.max_distance);
  const size_t bytes_per_row = size_t(heads) * size_t(L) * sizeof(float);
  const int64_t slice = std::max<int64_t>(1, std::min<int64_t>(L, int64_t(kMaxBiasBytes / bytes_per_row)));
  std::vector<float> bias(size_t(heads) * size_t(slice) * size_t(L));
  int64_t bias_q0 = -1;  // the query slice the bias buffer holds
  auto fill_bias = [&](int64_t q0, int64_t nq) {
    if (bias_q0 == q0) return;
    pool.parallel_for(heads * nq, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t h = t / nq, i = t % nq;
        float* row = bias.data() + (h * nq + i) * L;
        const int32_t* b = bucket_of.data() + (L - 1) - (q0 + i);  // b[j] = bucket(j - (q0 + i))
        for (int64_t j = 0; j < L; ++j) row[j] = m.rel_table[size_t(b[j]) * size_t(heads) + size_t(h)];
      }
    });
    bias_q0 = q0;
  };

  const float eps = static_cast<float>(c.eps);
  for (const auto& l : m.layers) {
    check_cancel(cancel, "t5_encoder");
    cpu::rms_norm(x.data(), R, H, H, l.norm1_w.data(), eps, a.data(), H, pool);
    run_linear(l.q, a.data(), R, H, qkv.data(), 3 * inner, pool);
    run_linear(l.k, a.data(), R, H, qkv.data() + inner, 3 * inner, pool);
    run_linear(l.v, a.data(), R, H, qkv.data() + 2 * inner, 3 * inner, pool);
    for (int64_t q0 = 0; q0 < L; q0 += slice) {
      const int64_t nq = std::min(slice, L - q0);
      fill_bias(q0, nq);
      cpu::AttentionShape shape;
      shape.batch = batch;
      shape.heads = heads;
      shape.seq_q = nq;
      shape.seq_kv = L;
      shape.head_dim = hd;
      shape.scale = 1.0f;  // T5 folds 1/sqrt(d) into its weights
      shape.bias = bias.data();
      const int64_t ld = 3 * inner;
      cpu::attention(shape, {qkv.data() + q0 * ld, L * ld, ld, hd}, {qkv.data() + inner, L * ld, ld, hd},
                     {qkv.data() + 2 * inner, L * ld, ld, hd}, {attn.data() + q0 * inner, L * inner, inner, hd}, pool);
    }
    run_linear(l.o, attn.data(), R, inner, tmp.data(), H, pool);
    cpu::add_inplace(x.data(), tmp.data(), R * H, pool);
    cpu::rms_norm(x.data(), R, H, H, l.norm2_w.data(), eps, a.data(), H, pool);
    run_linear(l.fc1, a.data(), R, H, h0.data(), F, pool, cpu::Activation::GeluTanh);
    run_linear(l.gate, a.data(), R, H, h1.data(), F, pool);
    cpu::mul_inplace(h0.data(), h1.data(), R * F, pool);
    run_linear(l.fc2, h0.data(), R, F, tmp.data(), H, pool);
    cpu::add_inplace(x.data(), tmp.data(), R * H, pool);
  }
  check_cancel(cancel, "t5_encoder");
  cpu::rms_norm(x.data(), R, H, H, m.final_w.data(), eps, hidden, H, pool);
}

}  // namespace fx::models
