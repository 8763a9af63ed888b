// Checkpoint recognition (docs/flux-model.md §2, §8). Every number in a description comes from a tensor
// shape, config.json or the safetensors metadata; the only constants are published defaults for
// values a checkpoint cannot express (VAE scale/shift, T5 max distance, ...) and those are listed in
// config.defaults_used whenever they are used.
#include "models/recognize.h"

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <set>
#include <string_view>

#include "core/error.h"
#include "engine/engine_format.h"

namespace fx::models {
namespace {

using json = nlohmann::json;
using Shape = std::vector<int64_t>;
using Dim = std::optional<int64_t>;

// Prefixes that third-party single files (ComfyUI, SD-style checkpoints) put before the model's own
// names (docs/flux-model.md §8.0). Matching is by whole prefix, so "model.diffusion_model.x" never matches
// "diffusion_model.".
constexpr const char* kKnownPrefixes[] = {
    "model.diffusion_model.",
    "diffusion_model.",
    "text_encoders.t5xxl.transformer.",
    "text_encoders.clip_l.transformer.",
    "cond_stage_model.transformer.",
    "first_stage_model.",
    "vae.",
};

// Block indices beyond this are treated as corrupt rather than expanded into an expected list.
constexpr int64_t kMaxBlocks = 4096;
constexpr size_t kListed = 20;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += s[i] < 0 ? std::string("?") : std::to_string(s[i]);
  }
  return out + "]";
}

uint64_t element_count(const Shape& s) {
  uint64_t n = 1;
  for (int64_t d : s) n *= static_cast<uint64_t>(d < 0 ? 0 : d);
  return n;
}

json jopt(const Dim& d) { return d ? json(*d) : json(nullptr); }

Dim first_of(std::initializer_list<Dim> xs) {
  for (const Dim& x : xs)
    if (x) return x;
  return std::nullopt;
}

Dim minus(const Dim& a, const Dim& b) { return a && b ? Dim(*a - *b) : std::nullopt; }

// Tensors seen through a stripped prefix.
class View {
 public:
  View(const CheckpointListing& listing, const std::string& prefix) : prefix_(prefix) {
    for (const TensorListing& t : listing.tensors) {
      if (starts_with(t.name, prefix))
        by_name_.emplace(t.name.substr(prefix.size()), &t);
      else
        outside_.push_back(&t);
    }
  }
  const std::string& prefix() const { return prefix_; }
  const TensorListing* get(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  bool has(const std::string& name) const { return get(name) != nullptr; }
  Dim dim(const std::string& name, size_t axis) const {
    const TensorListing* t = get(name);
    if (!t || t->shape.size() <= axis) return std::nullopt;
    return t->shape[axis];
  }
  bool any_with_prefix(const std::string& p) const {
    auto it = by_name_.lower_bound(p);
    return it != by_name_.end() && starts_with(it->first, p);
  }
  size_t count_with_prefix(const std::string& p) const {
    size_t n = 0;
    for (auto it = by_name_.lower_bound(p); it != by_name_.end() && starts_with(it->first, p); ++it) ++n;
    return n;
  }
  // The N of every "p<N>.rest" name.
  std::set<int64_t> indices(const std::string& p) const {
    std::set<int64_t> out;
    for (auto it = by_name_.lower_bound(p); it != by_name_.end() && starts_with(it->first, p); ++it) {
      std::string_view rest = std::string_view(it->first).substr(p.size());
      size_t n = 0;
      while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9') ++n;
      if (n == 0 || n > 9 || n >= rest.size() || rest[n] != '.') continue;
      out.insert(std::stoll(std::string(rest.substr(0, n))));
    }
    return out;
  }
  const std::map<std::string, const TensorListing*>& all() const { return by_name_; }
  const std::vector<const TensorListing*>& outside() const { return outside_; }

 private:
  std::string prefix_;
  std::map<std::string, const TensorListing*> by_name_;
  std::vector<const TensorListing*> outside_;
};

struct Report {
  std::vector<std::string> problems;
  json notes = json::array();
  json defaults_used = json::array();
};

// Number of blocks from the indices present; gaps are reported (the expected-set check then names
// the missing tensors). nullopt when the indices are absurd.
std::optional<int64_t> block_count(const std::set<int64_t>& idx, const std::string& what, Report& r) {
  if (idx.empty()) return 0;
  int64_t last = *idx.rbegin();
  if (last >= kMaxBlocks) {
    r.problems.push_back(what + ": block index " + std::to_string(last) + " is implausibly large");
    return std::nullopt;
  }
  if (static_cast<int64_t>(idx.size()) != last + 1) {
    std::string found;
    for (int64_t i : idx) found += (found.empty() ? "" : ",") + std::to_string(i);
    r.problems.push_back(what + ": block indices are not 0.." + std::to_string(last) + " without gaps (found " + found +
                         ")");
  }
  return last + 1;
}

// config.json value of a known type, if present.
Dim cfg_int(const std::optional<json>& cfg, const char* key) {
  if (!cfg || !cfg->contains(key) || !(*cfg)[key].is_number_integer()) return std::nullopt;
  return (*cfg)[key].get<int64_t>();
}

// Reports config.json values that disagree with the tensors (the tensors win: they are what runs).
void compare_cfg(const std::optional<json>& cfg, const char* key, const json& inferred, Report& r) {
  if (!cfg || !cfg->contains(key) || inferred.is_null()) return;
  const json& v = (*cfg)[key];
  if (v.is_null()) return;
  bool same = v == inferred;
  if (!same && v.is_number() && inferred.is_number()) same = v.get<double>() == inferred.get<double>();
  if (!same)
    r.problems.push_back(std::string("config.json ") + key + " = " + v.dump() + " but the tensors give " +
                         inferred.dump());
}

// -------------------------------------------------------------------------------------------------
// Expected tensor lists (docs/flux-model.md §8)

int64_t need_int(const json& c, const char* key) {
  if (!c.contains(key) || !c[key].is_number_integer())
    fail(FX_ERR_INVALID_ARGUMENT, std::string("model config lacks integer field '") + key + "'");
  return c[key].get<int64_t>();
}
bool need_bool(const json& c, const char* key) {
  if (!c.contains(key) || !c[key].is_boolean())
    fail(FX_ERR_INVALID_ARGUMENT, std::string("model config lacks boolean field '") + key + "'");
  return c[key].get<bool>();
}
// A dimension: unknown (null/absent) becomes the wildcard -1.
int64_t dim_or_any(const json& c, const char* key) {
  return c.contains(key) && c[key].is_number_integer() ? c[key].get<int64_t>() : -1;
}
int64_t mul(int64_t k, int64_t d) { return d < 0 ? -1 : k * d; }
int64_t add(int64_t a, int64_t b) { return a < 0 || b < 0 ? -1 : a + b; }

struct Builder {
  std::vector<TensorShape> out;
  void t(std::string name, Shape shape) { out.push_back({std::move(name), std::move(shape)}); }
  void linear(const std::string& p, int64_t rows, int64_t cols, bool bias = true) {
    t(p + ".weight", {rows, cols});
    if (bias) t(p + ".bias", {rows});
  }
  void conv(const std::string& p, int64_t cout, int64_t cin, int64_t k) {
    t(p + ".weight", {cout, cin, k, k});
    t(p + ".bias", {cout});
  }
  void norm(const std::string& p, int64_t c) {
    t(p + ".weight", {c});
    t(p + ".bias", {c});
  }
};

std::vector<TensorShape> flux_bfl_tensors(const json& c) {
  const int64_t H = dim_or_any(c, "hidden_size"), in = dim_or_any(c, "in_channels"),
                out = dim_or_any(c, "out_channels"), ctx = dim_or_any(c, "context_in_dim"),
                vec = dim_or_any(c, "vec_in_dim"), tdim = dim_or_any(c, "time_embed_dim"),
                mlp = dim_or_any(c, "mlp_hidden"), hd = dim_or_any(c, "head_dim");
  const int64_t depth = need_int(c, "depth"), depth_single = need_int(c, "depth_single");
  const bool guidance = need_bool(c, "guidance_embed"), qkv_bias = need_bool(c, "qkv_bias");
  Builder b;
  b.linear("img_in", H, in);
  b.linear("txt_in", H, ctx);
  b.linear("time_in.in_layer", H, tdim);
  b.linear("time_in.out_layer", H, H);
  b.linear("vector_in.in_layer", H, vec);
  b.linear("vector_in.out_layer", H, H);
  if (guidance) {
    b.linear("guidance_in.in_layer", H, tdim);
    b.linear("guidance_in.out_layer", H, H);
  }
  for (int64_t n = 0; n < depth; ++n) {
    const std::string p = "double_blocks." + std::to_string(n) + ".";
    for (const char* s : {"img", "txt"}) {
      const std::string q = p + s;
      b.linear(q + "_mod.lin", mul(6, H), H);
      b.linear(q + "_attn.qkv", mul(3, H), H, qkv_bias);
      b.t(q + "_attn.norm.query_norm.scale", {hd});
      b.t(q + "_attn.norm.key_norm.scale", {hd});
      b.linear(q + "_attn.proj", H, H);
      b.linear(q + "_mlp.0", mlp, H);
      b.linear(q + "_mlp.2", H, mlp);
    }
  }
  for (int64_t n = 0; n < depth_single; ++n) {
    const std::string p = "single_blocks." + std::to_string(n) + ".";
    b.linear(p + "linear1", add(mul(3, H), mlp), H);
    b.linear(p + "linear2", H, add(H, mlp));
    b.t(p + "norm.query_norm.scale", {hd});
    b.t(p + "norm.key_norm.scale", {hd});
    b.linear(p + "modulation.lin", mul(3, H), H);
  }
  b.linear("final_layer.linear", out, H);
  b.linear("final_layer.adaLN_modulation.1", mul(2, H), H);
  return b.out;
}

// ch_mult as dimensions (null entries are unknown widths); its length is the level count.
std::vector<int64_t> ae_widths(const json& c) {
  if (!c.contains("ch_mult") || !c["ch_mult"].is_array() || c["ch_mult"].empty())
    fail(FX_ERR_INVALID_ARGUMENT, "autoencoder config lacks a non-empty ch_mult array");
  const int64_t ch = dim_or_any(c, "ch");
  std::vector<int64_t> w;
  for (const json& m : c["ch_mult"]) w.push_back(m.is_number_integer() && ch >= 0 ? ch * m.get<int64_t>() : -1);
  return w;
}

void resnet(Builder& b, const std::string& p, int64_t cin, int64_t cout) {
  b.norm(p + "norm1", cin);
  b.conv(p + "conv1", cout, cin, 3);
  b.norm(p + "norm2", cout);
  b.conv(p + "conv2", cout, cout, 3);
  // An unknown width may or may not need the shortcut; we list it only when the widths are known to
  // differ (a missing-width checkpoint already has problems to report).
  if (cin >= 0 && cout >= 0 && cin != cout) b.conv(p + "nin_shortcut", cout, cin, 1);
}

void attn(Builder& b, const std::string& p, int64_t c) {
  b.norm(p + "norm", c);
  for (const char* m : {"q", "k", "v", "proj_out"}) b.conv(p + m, c, c, 1);
}

std::vector<TensorShape> ae_bfl_tensors(const json& c) {
  const std::vector<int64_t> w = ae_widths(c);
  const int64_t L = static_cast<int64_t>(w.size());
  const int64_t ch = dim_or_any(c, "ch"), nrb = need_int(c, "num_res_blocks"), z = dim_or_any(c, "z_channels"),
                in = dim_or_any(c, "in_channels"), out = dim_or_any(c, "out_channels");
  const bool enc = need_bool(c, "has_encoder"), dec = need_bool(c, "has_decoder"),
             mid_attn = need_bool(c, "mid_attention");
  const bool qc = c.value("use_quant_conv", false), pqc = c.value("use_post_quant_conv", false);
  Builder b;
  auto mid = [&](const std::string& p, int64_t C) {
    resnet(b, p + "mid.block_1.", C, C);
    if (mid_attn) attn(b, p + "mid.attn_1.", C);
    resnet(b, p + "mid.block_2.", C, C);
  };
  if (enc) {
    b.conv("encoder.conv_in", ch, in, 3);
    int64_t cin = ch;
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t j = 0; j < nrb; ++j) {
        resnet(b, "encoder.down." + std::to_string(i) + ".block." + std::to_string(j) + ".", cin, w[i]);
        cin = w[i];
      }
      if (i != L - 1) b.conv("encoder.down." + std::to_string(i) + ".downsample.conv", cin, cin, 3);
    }
    mid("encoder.", cin);
    b.norm("encoder.norm_out", cin);
    b.conv("encoder.conv_out", mul(2, z), cin, 3);
  }
  if (qc) b.conv("quant_conv", mul(2, z), mul(2, z), 1);
  if (pqc) b.conv("post_quant_conv", z, z, 1);
  if (dec) {
    int64_t cin = w[L - 1];
    b.conv("decoder.conv_in", cin, z, 3);
    mid("decoder.", cin);
    for (int64_t i = L - 1; i >= 0; --i) {
      for (int64_t j = 0; j < nrb + 1; ++j) {
        resnet(b, "decoder.up." + std::to_string(i) + ".block." + std::to_string(j) + ".", cin, w[i]);
        cin = w[i];
      }
      if (i != 0) b.conv("decoder.up." + std::to_string(i) + ".upsample.conv", cin, cin, 3);
    }
    b.norm("decoder.norm_out", cin);
    b.conv("decoder.conv_out", out, cin, 3);
  }
  return b.out;
}

std::vector<TensorShape> t5_tensors(const json& c) {
  const int64_t d = dim_or_any(c, "d_model"), dff = dim_or_any(c, "d_ff"), vocab = dim_or_any(c, "vocab_size"),
                heads = dim_or_any(c, "num_heads"), dkv = dim_or_any(c, "d_kv"),
                buckets = dim_or_any(c, "relative_attention_num_buckets");
  const int64_t layers = need_int(c, "num_layers");
  const bool gated = need_bool(c, "gated");
  const int64_t inner = heads < 0 || dkv < 0 ? -1 : heads * dkv;
  Builder b;
  b.t("shared.weight", {vocab, d});
  for (int64_t n = 0; n < layers; ++n) {
    const std::string p = "encoder.block." + std::to_string(n) + ".layer.";
    for (const char* m : {"q", "k", "v"}) b.t(p + "0.SelfAttention." + m + ".weight", {inner, d});
    b.t(p + "0.SelfAttention.o.weight", {d, inner});
    // Only block 0 owns the relative position table; the other blocks reuse its bias (docs/flux-model.md §3.3).
    if (n == 0) b.t(p + "0.SelfAttention.relative_attention_bias.weight", {buckets, heads});
    b.t(p + "0.layer_norm.weight", {d});
    if (gated) {
      b.t(p + "1.DenseReluDense.wi_0.weight", {dff, d});
      b.t(p + "1.DenseReluDense.wi_1.weight", {dff, d});
    } else {
      b.t(p + "1.DenseReluDense.wi.weight", {dff, d});
    }
    b.t(p + "1.DenseReluDense.wo.weight", {d, dff});
    b.t(p + "1.layer_norm.weight", {d});
  }
  b.t("encoder.final_layer_norm.weight", {d});
  return b.out;
}

std::vector<TensorShape> clip_tensors(const json& c) {
  const int64_t h = dim_or_any(c, "hidden_size"), inter = dim_or_any(c, "intermediate_size"),
                vocab = dim_or_any(c, "vocab_size"), pos = dim_or_any(c, "max_position_embeddings");
  const int64_t layers = need_int(c, "num_layers");
  Builder b;
  b.t("text_model.embeddings.token_embedding.weight", {vocab, h});
  b.t("text_model.embeddings.position_embedding.weight", {pos, h});
  for (int64_t n = 0; n < layers; ++n) {
    const std::string p = "text_model.encoder.layers." + std::to_string(n) + ".";
    for (const char* m : {"q_proj", "k_proj", "v_proj", "out_proj"}) b.linear(p + "self_attn." + m, h, h);
    b.norm(p + "layer_norm1", h);
    b.linear(p + "mlp.fc1", inter, h);
    b.linear(p + "mlp.fc2", h, inter);
    b.norm(p + "layer_norm2", h);
  }
  b.norm("text_model.final_layer_norm", h);
  return b.out;
}

// -------------------------------------------------------------------------------------------------
// BFL -> diffusers (docs/flux-model.md §8.2, §8.3)

// Splits "a.b.c.weight" into ("a.b.c", "weight").
std::pair<std::string, std::string> split_leaf(const std::string& name) {
  size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {name, ""};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

std::vector<DerivedTensor> flux_to_diffusers(const TensorShape& t, int64_t H) {
  // Plain variables, not a structured binding: clang-14 cannot capture bindings in the lambdas below.
  const auto base_and_leaf = split_leaf(t.name);
  const std::string base = base_and_leaf.first, leaf = base_and_leaf.second;
  // QK-norm scales are nn.RMSNorm weights in diffusers.
  const std::string dleaf = leaf == "scale" ? "weight" : leaf;
  const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
  auto whole = [&](const std::string& n) {
    return std::vector<DerivedTensor>{{n + "." + dleaf, t.shape, {{0, rows}}}};
  };
  // Row pieces [b, e) of dimension 0, same trailing dims.
  auto piece = [&](const std::string& n, int64_t b, int64_t e) {
    Shape s = t.shape;
    if (!s.empty()) s[0] = b < 0 || e < 0 ? -1 : e - b;
    return DerivedTensor{n + "." + dleaf, s, {{b, e}}};
  };
  auto thirds = [&](const std::string& p, const char* q, const char* k, const char* v) {
    const bool known = H >= 0;
    return std::vector<DerivedTensor>{piece(p + q, known ? 0 : -1, known ? H : -1),
                                      piece(p + k, known ? H : -1, known ? 2 * H : -1),
                                      piece(p + v, known ? 2 * H : -1, known ? 3 * H : -1)};
  };

  static const std::map<std::string, std::string> top = {
      {"img_in", "x_embedder"},
      {"txt_in", "context_embedder"},
      {"time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"},
      {"time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"},
      {"guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"},
      {"guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"},
      {"vector_in.in_layer", "time_text_embed.text_embedder.linear_1"},
      {"vector_in.out_layer", "time_text_embed.text_embedder.linear_2"},
      {"final_layer.linear", "proj_out"},
  };
  static const std::map<std::string, std::string> dbl = {
      {"img_mod.lin", "norm1.linear"},
      {"txt_mod.lin", "norm1_context.linear"},
      {"img_attn.norm.query_norm", "attn.norm_q"},
      {"img_attn.norm.key_norm", "attn.norm_k"},
      {"txt_attn.norm.query_norm", "attn.norm_added_q"},
      {"txt_attn.norm.key_norm", "attn.norm_added_k"},
      {"img_attn.proj", "attn.to_out.0"},
      {"txt_attn.proj", "attn.to_add_out"},
      {"img_mlp.0", "ff.net.0.proj"},
      {"img_mlp.2", "ff.net.2"},
      {"txt_mlp.0", "ff_context.net.0.proj"},
      {"txt_mlp.2", "ff_context.net.2"},
  };
  static const std::map<std::string, std::string> sgl = {
      {"modulation.lin", "norm.linear"},
      {"norm.query_norm", "attn.norm_q"},
      {"norm.key_norm", "attn.norm_k"},
      {"linear2", "proj_out"},
  };

  if (auto it = top.find(base); it != top.end()) return whole(it->second);
  if (base == "final_layer.adaLN_modulation.1") {
    // AdaLayerNormContinuous chunks (scale, shift); BFL's final layer chunks (shift, scale).
    if (H < 0) return {piece("norm_out.linear", -1, -1)};
    Shape s = t.shape;
    if (!s.empty()) s[0] = 2 * H;
    return {{"norm_out.linear." + dleaf, s, {{H, 2 * H}, {0, H}}}};
  }
  auto block = [&](const std::string& from,
                   const std::string& to) -> std::optional<std::pair<std::string, std::string>> {
    if (!starts_with(base, from)) return std::nullopt;
    size_t dot = base.find('.', from.size());
    if (dot == std::string::npos) return std::nullopt;
    return std::make_pair(to + base.substr(from.size(), dot - from.size() + 1), base.substr(dot + 1));
  };
  if (auto b = block("double_blocks.", "transformer_blocks.")) {
    const auto& [p, rest] = *b;
    if (auto it = dbl.find(rest); it != dbl.end()) return whole(p + it->second);
    if (rest == "img_attn.qkv") return thirds(p, "attn.to_q", "attn.to_k", "attn.to_v");
    if (rest == "txt_attn.qkv") return thirds(p, "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj");
  }
  if (auto b = block("single_blocks.", "single_transformer_blocks.")) {
    const auto& [p, rest] = *b;
    if (auto it = sgl.find(rest); it != sgl.end()) return whole(p + it->second);
    if (rest == "linear1") {
      // Rows: q, k, v (H each) then the MLP input projection.
      std::vector<DerivedTensor> out = thirds(p, "attn.to_q", "attn.to_k", "attn.to_v");
      out.push_back(piece(p + "proj_mlp", H < 0 ? -1 : 3 * H, H < 0 || rows < 0 ? -1 : rows));
      return out;
    }
  }
  fail(FX_ERR_INVALID_ARGUMENT, "no diffusers name for FLUX transformer tensor '" + t.name + "'");
}

std::vector<DerivedTensor> ae_to_diffusers(const TensorShape& t, int64_t levels) {
  const std::string& n = t.name;
  const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
  auto same = [&](const std::string& name, Shape shape) {
    return std::vector<DerivedTensor>{{name, std::move(shape), {{0, rows}}}};
  };
  // Within a ResnetBlock only the shortcut changes its name.
  auto resnet_rest = [](std::string rest) {
    if (starts_with(rest, "nin_shortcut.")) rest = "conv_shortcut." + rest.substr(13);
    return rest;
  };
  // Splits "<a>.<digits>.<rest>" after `p`.
  auto index_after = [&](const std::string& p, int64_t* idx, std::string* rest) {
    if (!starts_with(n, p)) return false;
    size_t dot = n.find('.', p.size());
    if (dot == std::string::npos || dot == p.size()) return false;
    const std::string digits = n.substr(p.size(), dot - p.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) return false;
    *idx = std::stoll(digits);
    *rest = n.substr(dot + 1);
    return true;
  };
  for (const char* side : {"encoder.", "decoder."}) {
    const std::string s = side;
    if (!starts_with(n, s)) continue;
    const std::string r = n.substr(s.size());
    int64_t i = 0;
    std::string rest;
    if (index_after(s + "down.", &i, &rest) || index_after(s + "up.", &i, &rest)) {
      const bool up = starts_with(r, "up.");
      // diffusers runs the decoder's up path in execution order: up_blocks.0 is BFL's deepest level.
      const int64_t di = up ? levels - 1 - i : i;
      const std::string blk = s + (up ? "up_blocks." : "down_blocks.") + std::to_string(di) + ".";
      int64_t j = 0;
      std::string rr;
      const std::string lvl = s + (up ? "up." : "down.") + std::to_string(i) + ".";
      if (index_after(lvl + "block.", &j, &rr))
        return same(blk + "resnets." + std::to_string(j) + "." + resnet_rest(rr), t.shape);
      if (starts_with(rest, "downsample.")) return same(blk + "downsamplers.0." + rest.substr(11), t.shape);
      if (starts_with(rest, "upsample.")) return same(blk + "upsamplers.0." + rest.substr(9), t.shape);
      break;
    }
    if (starts_with(r, "mid.block_1.")) return same(s + "mid_block.resnets.0." + resnet_rest(r.substr(12)), t.shape);
    if (starts_with(r, "mid.block_2.")) return same(s + "mid_block.resnets.1." + resnet_rest(r.substr(12)), t.shape);
    if (starts_with(r, "mid.attn_1.")) {
      auto [mod, leaf] = split_leaf(r.substr(11));
      static const std::map<std::string, std::string> a = {
          {"norm", "group_norm"}, {"q", "to_q"}, {"k", "to_k"}, {"v", "to_v"}, {"proj_out", "to_out.0"}};
      auto it = a.find(mod);
      if (it == a.end()) break;
      Shape shape = t.shape;
      // diffusers' Attention uses nn.Linear: the 1x1 conv kernel [C, C, 1, 1] becomes [C, C].
      if (mod != "norm" && leaf == "weight" && shape.size() == 4) shape.resize(2);
      return same(s + "mid_block.attentions.0." + it->second + "." + leaf, shape);
    }
    if (starts_with(r, "norm_out.")) return same(s + "conv_norm_out." + r.substr(9), t.shape);
    if (starts_with(r, "conv_in.") || starts_with(r, "conv_out.")) return same(n, t.shape);
    break;
  }
  if (starts_with(n, "quant_conv.") || starts_with(n, "post_quant_conv.")) return same(n, t.shape);
  fail(FX_ERR_INVALID_ARGUMENT, "no diffusers name for autoencoder tensor '" + t.name + "'");
}

// -------------------------------------------------------------------------------------------------
// Recognition per kind

struct Recognized {
  std::string kind, layout;
  json variant = nullptr;
  json config = json::object();
  bool config_usable = true;  // false: skip the expected-set check (structure unknown)
  // Present tensors that are neither expected nor unexpected (aliases, buffers, unused parts).
  std::function<bool(const std::string&)> ignorable = [](const std::string&) { return false; };
  // Expected names to rename before checking (alias actually used by the file).
  std::map<std::string, std::string> rename_expected;
};

// config.json when it describes this kind; otherwise it is reported and ignored.
std::optional<json> usable_config(const std::optional<json>& cfg, const std::string& kind, Report& r) {
  if (!cfg) return std::nullopt;
  if (!cfg->is_object()) {
    r.problems.push_back("config.json is not a JSON object; ignored");
    return std::nullopt;
  }
  const json& c = *cfg;
  const std::string cls =
      c.contains("_class_name") && c["_class_name"].is_string() ? c["_class_name"].get<std::string>() : "";
  const std::string mt =
      c.contains("model_type") && c["model_type"].is_string() ? c["model_type"].get<std::string>() : "";
  bool ok = true;
  if (kind == "flux_transformer") ok = cls.empty() ? mt.empty() : cls == "FluxTransformer2DModel";
  if (kind == "autoencoder") ok = cls.empty() ? mt.empty() : cls == "AutoencoderKL";
  if (kind == "t5_encoder") ok = mt.empty() ? cls.empty() : mt == "t5";
  if (kind == "clip_text") {
    // A full CLIPConfig nests the text tower's settings.
    if (mt == "clip" && c.contains("text_config") && c["text_config"].is_object()) return c["text_config"];
    ok = mt.empty() ? cls.empty() : mt == "clip_text_model";
  }
  if (!ok) {
    r.problems.push_back("config.json describes " + (cls.empty() ? mt : cls) + ", not a " + kind + "; ignored");
    return std::nullopt;
  }
  return c;
}

Recognized recognize_flux(const View& v, bool diffusers, const std::optional<json>& raw_cfg,
                          const std::map<std::string, std::string>& metadata, Report& r) {
  Recognized rec;
  rec.kind = "flux_transformer";
  rec.layout = diffusers ? "diffusers" : "bfl";
  const std::optional<json> cfg = usable_config(raw_cfg, rec.kind, r);

  const std::string D = diffusers ? "transformer_blocks." : "double_blocks.";
  const std::string S = diffusers ? "single_transformer_blocks." : "single_blocks.";
  const std::set<int64_t> di = v.indices(D), si = v.indices(S);
  const std::optional<int64_t> depth = block_count(di, D, r), depth_single = block_count(si, S, r);
  // Per-block sizes are read from the first block present (block 0 may be the one that is missing).
  const std::string d0 = D + std::to_string(di.empty() ? 0 : *di.begin()) + ".";
  const std::string s0 = S + std::to_string(si.empty() ? 0 : *si.begin()) + ".";

  Dim H, in, out, ctx, vec, tdim, hd, mlp;
  bool guidance, qkv_bias;
  if (!diffusers) {
    H = first_of({v.dim("img_in.weight", 0), v.dim("txt_in.weight", 0), v.dim("time_in.in_layer.weight", 0),
                  v.dim("vector_in.in_layer.weight", 0), v.dim("final_layer.linear.weight", 1),
                  v.dim("final_layer.adaLN_modulation.1.weight", 1)});
    in = v.dim("img_in.weight", 1);
    out = first_of({v.dim("final_layer.linear.weight", 0), v.dim("final_layer.linear.bias", 0)});
    ctx = v.dim("txt_in.weight", 1);
    vec = v.dim("vector_in.in_layer.weight", 1);
    tdim = first_of({v.dim("time_in.in_layer.weight", 1), v.dim("guidance_in.in_layer.weight", 1)});
    hd = first_of({v.dim(d0 + "img_attn.norm.query_norm.scale", 0), v.dim(d0 + "img_attn.norm.key_norm.scale", 0),
                   v.dim(d0 + "txt_attn.norm.query_norm.scale", 0), v.dim(d0 + "txt_attn.norm.key_norm.scale", 0),
                   v.dim(s0 + "norm.query_norm.scale", 0), v.dim(s0 + "norm.key_norm.scale", 0)});
    mlp =
        first_of({v.dim(d0 + "img_mlp.0.weight", 0), v.dim(d0 + "img_mlp.0.bias", 0), v.dim(d0 + "txt_mlp.0.weight", 0),
                  v.dim(d0 + "img_mlp.2.weight", 1), v.dim(d0 + "txt_mlp.2.weight", 1),
                  minus(v.dim(s0 + "linear1.weight", 0), H ? Dim(3 * *H) : std::nullopt),
                  minus(v.dim(s0 + "linear2.weight", 1), H)});
    guidance = v.any_with_prefix("guidance_in.");
    qkv_bias = di.empty() || v.has(d0 + "img_attn.qkv.bias") || v.has(d0 + "txt_attn.qkv.bias");
  } else {
    const std::string te = "time_text_embed.";
    H = first_of({v.dim("x_embedder.weight", 0), v.dim("context_embedder.weight", 0),
                  v.dim(te + "timestep_embedder.linear_1.weight", 0), v.dim(te + "text_embedder.linear_1.weight", 0),
                  v.dim("proj_out.weight", 1), v.dim("norm_out.linear.weight", 1)});
    in = v.dim("x_embedder.weight", 1);
    out = first_of({v.dim("proj_out.weight", 0), v.dim("proj_out.bias", 0)});
    ctx = v.dim("context_embedder.weight", 1);
    vec = v.dim(te + "text_embedder.linear_1.weight", 1);
    tdim = first_of(
        {v.dim(te + "timestep_embedder.linear_1.weight", 1), v.dim(te + "guidance_embedder.linear_1.weight", 1)});
    hd = first_of({v.dim(d0 + "attn.norm_q.weight", 0), v.dim(d0 + "attn.norm_k.weight", 0),
                   v.dim(d0 + "attn.norm_added_q.weight", 0), v.dim(d0 + "attn.norm_added_k.weight", 0),
                   v.dim(s0 + "attn.norm_q.weight", 0), v.dim(s0 + "attn.norm_k.weight", 0)});
    mlp = first_of({v.dim(d0 + "ff.net.0.proj.weight", 0), v.dim(d0 + "ff.net.0.proj.bias", 0),
                    v.dim(d0 + "ff_context.net.0.proj.weight", 0), v.dim(d0 + "ff.net.2.weight", 1),
                    v.dim(d0 + "ff_context.net.2.weight", 1), v.dim(s0 + "proj_mlp.weight", 0),
                    minus(v.dim(s0 + "proj_out.weight", 1), H)});
    guidance = v.any_with_prefix(te + "guidance_embedder.");
    qkv_bias = di.empty() || v.has(d0 + "attn.to_q.bias") || v.has(d0 + "attn.add_q_proj.bias");
  }
  // config.json fills what the tensors cannot say (e.g. when the tensor holding it is missing).
  if (!in) in = cfg_int(cfg, "in_channels");
  if (!ctx) ctx = cfg_int(cfg, "joint_attention_dim");
  if (!vec) vec = cfg_int(cfg, "pooled_projection_dim");
  if (!hd) hd = cfg_int(cfg, "attention_head_dim");

  json& c = rec.config;
  c["hidden_size"] = jopt(H);
  Dim heads;
  if (H && hd && *hd > 0 && *H % *hd == 0)
    heads = *H / *hd;
  else if (H && hd)
    r.problems.push_back("hidden size " + std::to_string(*H) + " is not a multiple of the head dim " +
                         std::to_string(*hd));
  c["num_heads"] = jopt(heads);
  c["head_dim"] = jopt(hd);
  c["in_channels"] = jopt(in);
  c["out_channels"] = jopt(out);
  c["context_in_dim"] = jopt(ctx);
  c["vec_in_dim"] = jopt(vec);
  c["time_embed_dim"] = jopt(tdim);
  c["mlp_hidden"] = jopt(mlp);
  c["mlp_ratio"] = mlp && H && *H > 0 ? json(static_cast<double>(*mlp) / static_cast<double>(*H)) : json(nullptr);
  c["depth"] = jopt(depth);
  c["depth_single"] = jopt(depth_single);
  c["guidance_embed"] = guidance;
  c["qkv_bias"] = qkv_bias;

  // RoPE axes are not stored in any tensor. Sources, in order: diffusers config.json
  // (axes_dims_rope); the safetensors metadata key "axes_dim" (a JSON array as a string), which our
  // tiny BFL files write because BFL single files have no config.json; the published [16, 56, 56]
  // only for the published head dim 128. Anything else would be a guess, so it stays null.
  json axes = nullptr;
  std::string axes_from;
  auto valid_axes = [](const json& a) {
    if (!a.is_array() || a.empty()) return false;
    for (const json& x : a)
      if (!x.is_number_integer() || x.get<int64_t>() <= 0 || x.get<int64_t>() % 2 != 0) return false;
    return true;
  };
  if (cfg && cfg->contains("axes_dims_rope")) {
    if (valid_axes((*cfg)["axes_dims_rope"])) {
      axes = (*cfg)["axes_dims_rope"];
      axes_from = "config.json";
    } else {
      r.problems.push_back("config.json axes_dims_rope is not a list of positive even integers");
    }
  }
  if (axes.is_null()) {
    if (auto it = metadata.find("axes_dim"); it != metadata.end()) {
      json a = json::parse(it->second, nullptr, false);
      if (valid_axes(a)) {
        axes = a;
        axes_from = "metadata";
      } else {
        r.problems.push_back("metadata axes_dim '" + it->second + "' is not a JSON list of positive even integers");
      }
    }
  }
  if (axes.is_null() && hd && *hd == 128) {
    axes = json::array({16, 56, 56});
    r.defaults_used.push_back("axes_dim: [16, 56, 56] (published FLUX value for head dim 128; not in the checkpoint)");
  }
  if (axes.is_null()) {
    r.problems.push_back("axes_dim unknown: head dim " + (hd ? std::to_string(*hd) : std::string("?")) +
                         " is not the published 128 and neither config.json nor metadata gives the RoPE axes");
  } else if (hd) {
    int64_t sum = 0;
    for (const json& x : axes) sum += x.get<int64_t>();
    if (sum != *hd)
      r.problems.push_back("axes_dim " + axes.dump() + " (from " + (axes_from.empty() ? "default" : axes_from) +
                           ") sums to " + std::to_string(sum) + ", not the head dim " + std::to_string(*hd));
  }
  c["axes_dim"] = axes;
  // Hard-coded in both reference implementations (docs/flux-model.md §2.1).
  c["theta"] = 10000;

  if (in && *in == 384)
    rec.variant = "fill";
  else if (in && *in == 128)
    rec.variant = "canny-depth";
  else
    rec.variant = guidance ? "dev" : "schnell";

  compare_cfg(cfg, "in_channels", c["in_channels"], r);
  compare_cfg(cfg, "num_layers", c["depth"], r);
  compare_cfg(cfg, "num_single_layers", c["depth_single"], r);
  compare_cfg(cfg, "attention_head_dim", c["head_dim"], r);
  compare_cfg(cfg, "num_attention_heads", c["num_heads"], r);
  compare_cfg(cfg, "joint_attention_dim", c["context_in_dim"], r);
  compare_cfg(cfg, "pooled_projection_dim", c["vec_in_dim"], r);
  compare_cfg(cfg, "guidance_embeds", c["guidance_embed"], r);
  if (cfg && cfg->contains("out_channels") && !(*cfg)["out_channels"].is_null())
    compare_cfg(cfg, "out_channels", c["out_channels"], r);

  for (const char* k : {"hidden_size", "in_channels", "out_channels", "context_in_dim", "vec_in_dim", "time_embed_dim",
                        "mlp_hidden", "head_dim"})
    if (c[k].is_null())
      r.problems.push_back(std::string("cannot infer ") + k + ": the tensors that give it are missing");
  rec.config_usable = depth && depth_single;
  return rec;
}

Recognized recognize_ae(const View& v, bool diffusers, const std::optional<json>& raw_cfg, Report& r) {
  Recognized rec;
  rec.kind = "autoencoder";
  rec.layout = diffusers ? "diffusers" : "bfl";
  const std::optional<json> cfg = usable_config(raw_cfg, rec.kind, r);

  const bool has_enc = v.any_with_prefix("encoder."), has_dec = v.any_with_prefix("decoder.");
  const std::string down = diffusers ? "encoder.down_blocks." : "encoder.down.";
  const std::string up = diffusers ? "decoder.up_blocks." : "decoder.up.";
  const std::optional<int64_t> le = block_count(v.indices(down), down, r), ld = block_count(v.indices(up), up, r);
  std::optional<int64_t> levels;
  if (le && ld) {
    if (has_enc && has_dec && *le != *ld)
      r.problems.push_back("encoder has " + std::to_string(*le) + " levels but decoder has " + std::to_string(*ld));
    levels = std::max(*le, *ld);
  }
  if (levels && *levels == 0) {
    r.problems.push_back("no resolution levels found (" + down + "N / " + up + "N)");
    levels.reset();
  }
  const int64_t L = levels.value_or(0);
  const std::string res = diffusers ? "resnets." : "block.";
  auto enc_level = [&](int64_t i) { return down + std::to_string(i) + "."; };
  // diffusers stores the decoder levels in execution order (deepest first).
  auto dec_level = [&](int64_t i) { return up + std::to_string(diffusers ? L - 1 - i : i) + "."; };

  std::optional<int64_t> nrb;
  if (levels) {
    const std::set<int64_t> eb = v.indices(enc_level(0) + res), db = v.indices(dec_level(0) + res);
    std::optional<int64_t> ne = block_count(eb, enc_level(0) + res, r), nd = block_count(db, dec_level(0) + res, r);
    // The decoder runs one more ResnetBlock per level than the encoder (docs/flux-model.md §2.2).
    if (has_enc && ne && *ne > 0) nrb = *ne;
    if (has_dec && nd && *nd > 0) {
      if (nrb && *nrb != *nd - 1)
        r.problems.push_back("encoder has " + std::to_string(*nrb) + " blocks per level but decoder " +
                             std::to_string(*nd) + " (expected one more)");
      if (!nrb) nrb = *nd - 1;
    }
    if (!nrb) r.problems.push_back("cannot infer num_res_blocks: no ResnetBlocks found");
  }
  const std::string norm_out = diffusers ? "conv_norm_out" : "norm_out";
  // encoder.conv_in gives ch itself; the decoder's output side gives ch * ch_mult[0], which is ch
  // for every published autoencoder (and is what ch means when there is no encoder).
  const Dim ch = first_of({v.dim("encoder.conv_in.weight", 0), v.dim("encoder.conv_in.bias", 0),
                           v.dim("decoder.conv_out.weight", 1), v.dim("decoder." + norm_out + ".weight", 0)});
  const Dim z =
      first_of({v.dim("decoder.conv_in.weight", 1),
                v.dim("encoder.conv_out.weight", 0) ? Dim(*v.dim("encoder.conv_out.weight", 0) / 2) : std::nullopt,
                v.dim("post_quant_conv.weight", 0), cfg_int(cfg, "latent_channels")});
  Dim in = first_of({v.dim("encoder.conv_in.weight", 1), cfg_int(cfg, "in_channels")});
  Dim out = first_of({v.dim("decoder.conv_out.weight", 0), cfg_int(cfg, "out_channels")});

  json mult = json::array(), widths = json::array();
  for (int64_t i = 0; i < L; ++i) {
    const std::string e = enc_level(i) + res, d = dec_level(i) + res;
    const std::string last_e = e + std::to_string(nrb.value_or(1) - 1) + ".";
    const Dim w =
        first_of({v.dim(e + "0.conv1.weight", 0), v.dim(last_e + "conv2.weight", 0), v.dim(d + "0.conv1.weight", 0),
                  v.dim(d + "0.conv2.weight", 0), v.dim(d + "1.conv1.weight", 0)});
    widths.push_back(jopt(w));
    if (w && ch && *ch > 0 && *w % *ch == 0) {
      mult.push_back(*w / *ch);
    } else {
      mult.push_back(nullptr);
      r.problems.push_back(
          "cannot infer ch_mult[" + std::to_string(i) + "]" +
          (w && ch ? ": width " + std::to_string(*w) + " is not a multiple of ch " + std::to_string(*ch) : ""));
    }
  }
  const bool mid_attn =
      diffusers
          ? (v.any_with_prefix("decoder.mid_block.attentions.") || v.any_with_prefix("encoder.mid_block.attentions."))
          : (v.any_with_prefix("decoder.mid.attn_1.") || v.any_with_prefix("encoder.mid.attn_1."));

  json& c = rec.config;
  c["ch"] = jopt(ch);
  c["ch_mult"] = mult;
  c["block_out_channels"] = widths;
  c["num_res_blocks"] = jopt(nrb);
  c["z_channels"] = jopt(z);
  c["in_channels"] = jopt(in);
  c["out_channels"] = jopt(out);
  c["has_encoder"] = has_enc;
  c["has_decoder"] = has_dec;
  c["mid_attention"] = mid_attn;
  c["use_quant_conv"] = v.any_with_prefix("quant_conv.");
  c["use_post_quant_conv"] = v.any_with_prefix("post_quant_conv.");
  // Neither the group count nor the latent scale/shift are stored in the weights.
  auto from_cfg_or = [&](const char* key, const char* cfg_key, json fallback, const char* why) {
    if (cfg && cfg->contains(cfg_key)) {
      c[key] = (*cfg)[cfg_key];
    } else if (cfg) {
      c[key] = nullptr;
      r.notes.push_back(std::string("config.json has no ") + cfg_key);
    } else {
      c[key] = fallback;
      r.defaults_used.push_back(std::string(key) + ": " + fallback.dump() + " (" + why + "; no config.json)");
    }
  };
  from_cfg_or("norm_num_groups", "norm_num_groups", 32, "GroupNorm32 of the published autoencoder");
  from_cfg_or("scale_factor", "scaling_factor", 0.3611, "published FLUX value");
  from_cfg_or("shift_factor", "shift_factor", 0.1159, "published FLUX value");

  if (c["norm_num_groups"].is_number_integer() && c["norm_num_groups"].get<int64_t>() > 0) {
    const int64_t g = c["norm_num_groups"].get<int64_t>();
    for (const json& w : widths)
      if (w.is_number_integer() && w.get<int64_t>() % g != 0)
        r.problems.push_back("channel width " + w.dump() + " is not divisible by the " + std::to_string(g) +
                             " GroupNorm groups");
  }
  compare_cfg(cfg, "block_out_channels", widths, r);
  compare_cfg(cfg, "layers_per_block", c["num_res_blocks"], r);
  compare_cfg(cfg, "latent_channels", c["z_channels"], r);
  compare_cfg(cfg, "in_channels", c["in_channels"], r);
  compare_cfg(cfg, "out_channels", c["out_channels"], r);
  compare_cfg(cfg, "mid_block_add_attention", c["mid_attention"], r);
  compare_cfg(cfg, "use_quant_conv", c["use_quant_conv"], r);
  compare_cfg(cfg, "use_post_quant_conv", c["use_post_quant_conv"], r);
  for (const char* k : {"ch", "z_channels"})
    if (c[k].is_null())
      r.problems.push_back(std::string("cannot infer ") + k + ": the tensors that give it are missing");
  rec.config_usable = L > 0 && nrb.has_value();
  if (rec.config_usable && L * (nrb.value_or(0) + 1) > kMaxBlocks) {
    r.problems.push_back("implausible autoencoder structure: " + std::to_string(L) + " levels of " +
                         std::to_string(nrb.value_or(0)) + " blocks");
    rec.config_usable = false;
  }
  return rec;
}

Recognized recognize_t5(const View& v, const std::optional<json>& raw_cfg, Report& r) {
  Recognized rec;
  rec.kind = "t5_encoder";
  rec.layout = "hf";
  const std::optional<json> cfg = usable_config(raw_cfg, rec.kind, r);
  const std::set<int64_t> bi = v.indices("encoder.block.");
  const std::optional<int64_t> layers = block_count(bi, "encoder.block.", r);
  const std::string b0 = "encoder.block." + std::to_string(bi.empty() ? 0 : *bi.begin()) + ".layer.";
  const std::string rel = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";

  const Dim d = first_of({v.dim("shared.weight", 1), v.dim("encoder.embed_tokens.weight", 1),
                          v.dim("encoder.final_layer_norm.weight", 0), v.dim(b0 + "0.layer_norm.weight", 0)});
  const Dim vocab =
      first_of({v.dim("shared.weight", 0), v.dim("encoder.embed_tokens.weight", 0), cfg_int(cfg, "vocab_size")});
  const Dim heads = first_of({v.dim(rel, 1), cfg_int(cfg, "num_heads")});
  const Dim buckets = first_of({v.dim(rel, 0), cfg_int(cfg, "relative_attention_num_buckets")});
  const Dim inner = first_of({v.dim(b0 + "0.SelfAttention.q.weight", 0), v.dim(b0 + "0.SelfAttention.k.weight", 0),
                              v.dim(b0 + "0.SelfAttention.o.weight", 1)});
  Dim dkv;
  if (inner && heads && *heads > 0 && *inner % *heads == 0)
    dkv = *inner / *heads;
  else if (inner && heads)
    r.problems.push_back("attention width " + std::to_string(*inner) + " is not a multiple of " +
                         std::to_string(*heads) + " heads");
  if (!dkv) dkv = cfg_int(cfg, "d_kv");
  const bool gated = v.has(b0 + "1.DenseReluDense.wi_0.weight") || v.has(b0 + "1.DenseReluDense.wi_1.weight");
  const Dim dff =
      first_of({v.dim(b0 + "1.DenseReluDense.wi_0.weight", 0), v.dim(b0 + "1.DenseReluDense.wi_1.weight", 0),
                v.dim(b0 + "1.DenseReluDense.wi.weight", 0), v.dim(b0 + "1.DenseReluDense.wo.weight", 1)});

  json& c = rec.config;
  c["d_model"] = jopt(d);
  c["d_ff"] = jopt(dff);
  c["d_kv"] = jopt(dkv);
  c["num_heads"] = jopt(heads);
  c["num_layers"] = jopt(layers);
  c["vocab_size"] = jopt(vocab);
  c["relative_attention_num_buckets"] = jopt(buckets);
  c["gated"] = gated;
  auto from_cfg_or = [&](const char* key, json fallback, const char* why) {
    if (cfg && cfg->contains(key) && !(*cfg)[key].is_null()) {
      c[key] = (*cfg)[key];
    } else {
      c[key] = fallback;
      r.defaults_used.push_back(std::string(key) + ": " + fallback.dump() + " (" + why + ")");
    }
  };
  from_cfg_or("relative_attention_max_distance", 128, "T5 default; not in the weights");
  from_cfg_or("feed_forward_proj", gated ? "gated-gelu" : "relu", "T5 v1.1 when wi_0/wi_1 exist, else T5 v1.0");
  from_cfg_or("layer_norm_epsilon", 1e-6, "T5 default");

  compare_cfg(cfg, "d_model", c["d_model"], r);
  compare_cfg(cfg, "d_ff", c["d_ff"], r);
  compare_cfg(cfg, "d_kv", c["d_kv"], r);
  compare_cfg(cfg, "num_heads", c["num_heads"], r);
  compare_cfg(cfg, "num_layers", c["num_layers"], r);
  compare_cfg(cfg, "vocab_size", c["vocab_size"], r);
  compare_cfg(cfg, "relative_attention_num_buckets", c["relative_attention_num_buckets"], r);
  for (const char* k : {"d_model", "d_ff", "d_kv", "num_heads", "vocab_size", "relative_attention_num_buckets"})
    if (c[k].is_null())
      r.problems.push_back(std::string("cannot infer ") + k + ": the tensors that give it are missing");

  // The embedding may be stored as shared.weight, encoder.embed_tokens.weight or both (tied, docs/flux-model.md §8.4).
  const bool shared = v.has("shared.weight"), embed = v.has("encoder.embed_tokens.weight");
  if (!shared && embed) rec.rename_expected["shared.weight"] = "encoder.embed_tokens.weight";
  const size_t dec = v.count_with_prefix("decoder.") + (v.has("lm_head.weight") ? 1 : 0);
  if (dec) r.notes.push_back(std::to_string(dec) + " decoder / lm_head tensors ignored (only the encoder is used)");
  rec.ignorable = [shared](const std::string& n) {
    return (shared && n == "encoder.embed_tokens.weight") || starts_with(n, "decoder.") || n == "lm_head.weight";
  };
  rec.config_usable = layers.has_value();
  return rec;
}

Recognized recognize_clip(const View& v, const std::optional<json>& raw_cfg, Report& r) {
  Recognized rec;
  rec.kind = "clip_text";
  rec.layout = "hf";
  const std::optional<json> cfg = usable_config(raw_cfg, rec.kind, r);
  const std::string P = "text_model.encoder.layers.";
  const std::set<int64_t> li = v.indices(P);
  const std::optional<int64_t> layers = block_count(li, P, r);
  const std::string l0 = P + std::to_string(li.empty() ? 0 : *li.begin()) + ".";
  const std::string tok = "text_model.embeddings.token_embedding.weight",
                    pos = "text_model.embeddings.position_embedding.weight";

  const Dim h = first_of({v.dim(tok, 1), v.dim(pos, 1), v.dim("text_model.final_layer_norm.weight", 0),
                          v.dim(l0 + "self_attn.q_proj.weight", 0)});
  const Dim vocab = first_of({v.dim(tok, 0), cfg_int(cfg, "vocab_size")});
  const Dim npos = first_of({v.dim(pos, 0), cfg_int(cfg, "max_position_embeddings")});
  const Dim inter =
      first_of({v.dim(l0 + "mlp.fc1.weight", 0), v.dim(l0 + "mlp.fc1.bias", 0), v.dim(l0 + "mlp.fc2.weight", 1)});

  json& c = rec.config;
  c["hidden_size"] = jopt(h);
  c["intermediate_size"] = jopt(inter);
  c["num_layers"] = jopt(layers);
  // CLIP's projections are [hidden, hidden] whatever the head count, so the weights cannot tell it.
  Dim heads = cfg_int(cfg, "num_attention_heads");
  if (!heads && h && *h % 64 == 0) {
    heads = *h / 64;
    r.defaults_used.push_back("num_heads: " + std::to_string(*heads) +
                              " (hidden size / 64, the CLIP head dim; no config.json num_attention_heads)");
  }
  if (!heads)
    r.problems.push_back(
        "num_heads unknown: no config.json num_attention_heads and the hidden size is not a multiple of 64");
  Dim head_dim;
  if (heads && h && *heads > 0 && *h % *heads == 0)
    head_dim = *h / *heads;
  else if (heads && h)
    r.problems.push_back("hidden size " + std::to_string(*h) + " is not a multiple of " + std::to_string(*heads) +
                         " heads");
  c["num_heads"] = jopt(heads);
  c["head_dim"] = jopt(head_dim);
  c["vocab_size"] = jopt(vocab);
  c["max_position_embeddings"] = jopt(npos);
  auto from_cfg_or = [&](const char* key, json fallback, const char* why) {
    if (cfg && cfg->contains(key) && !(*cfg)[key].is_null()) {
      c[key] = (*cfg)[key];
    } else {
      c[key] = fallback;
      r.defaults_used.push_back(std::string(key) + ": " + fallback.dump() + " (" + why + ")");
    }
  };
  from_cfg_or("hidden_act", "quick_gelu", "CLIP ViT-L/14 text tower; not in the weights");
  from_cfg_or("layer_norm_eps", 1e-5, "CLIP default");
  c["has_text_projection"] = v.has("text_projection.weight");

  compare_cfg(cfg, "hidden_size", c["hidden_size"], r);
  compare_cfg(cfg, "intermediate_size", c["intermediate_size"], r);
  compare_cfg(cfg, "num_hidden_layers", c["num_layers"], r);
  compare_cfg(cfg, "vocab_size", c["vocab_size"], r);
  compare_cfg(cfg, "max_position_embeddings", c["max_position_embeddings"], r);
  for (const char* k : {"hidden_size", "intermediate_size", "vocab_size", "max_position_embeddings"})
    if (c[k].is_null())
      r.problems.push_back(std::string("cannot infer ") + k + ": the tensors that give it are missing");

  // position_ids is a non-persistent buffer older exports still carry; the projection and logit
  // scale belong to CLIPTextModelWithProjection / CLIPModel and are not used by FLUX.
  rec.ignorable = [](const std::string& n) {
    return n == "text_model.embeddings.position_ids" || n == "text_projection.weight" || n == "logit_scale";
  };
  rec.config_usable = layers.has_value();
  return rec;
}

std::optional<Recognized> recognize(const View& v, const CheckpointListing& l, Report& r) {
  if (v.has("img_in.weight") || v.any_with_prefix("double_blocks.") || v.any_with_prefix("single_blocks."))
    return recognize_flux(v, false, l.config, l.metadata, r);
  if (v.has("x_embedder.weight") || v.any_with_prefix("transformer_blocks.") ||
      v.any_with_prefix("single_transformer_blocks."))
    return recognize_flux(v, true, l.config, l.metadata, r);
  if (v.has("decoder.conv_in.weight") || v.has("encoder.conv_in.weight")) {
    const bool diffusers = v.any_with_prefix("decoder.up_blocks.") || v.any_with_prefix("encoder.down_blocks.") ||
                           v.any_with_prefix("decoder.mid_block.") || v.any_with_prefix("encoder.mid_block.");
    return recognize_ae(v, diffusers, l.config, r);
  }
  if (v.any_with_prefix("encoder.block.")) return recognize_t5(v, l.config, r);
  if (v.any_with_prefix("text_model.")) return recognize_clip(v, l.config, r);
  return std::nullopt;
}

// The known prefix `name` starts with, or "".
std::string known_prefix_of(const std::string& name) {
  for (const char* p : kKnownPrefixes)
    if (starts_with(name, p)) return p;
  return "";
}

// ComfyUI's scaled fp8 files: "<linear>.scale_weight" (weight = fp8 · scale) and "<linear>.scale_input"
// beside an fp8 "<linear>.weight", and an empty "scaled_fp8" marker tensor.
bool is_fp8_scale(const View& v, const std::string& name) {
  if (name == "scaled_fp8") return true;
  for (std::string_view suffix : {std::string_view(".scale_weight"), std::string_view(".scale_input")}) {
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const TensorListing* w = v.get(name.substr(0, name.size() - suffix.size()) + ".weight");
    return w != nullptr && (w->dtype == DType::F8_E4M3FN || w->dtype == DType::F8_E5M2);
  }
  return false;
}

// Compares the present tensors with the expected set.
json check_tensor_set(const View& v, std::vector<TensorShape> expected, const Recognized& rec, Report& r) {
  for (TensorShape& t : expected)
    if (auto it = rec.rename_expected.find(t.name); it != rec.rename_expected.end()) t.name = it->second;
  const std::string& p = v.prefix();
  std::set<std::string> names;
  std::vector<std::string> missing, unexpected;
  json mismatches = json::array();
  size_t n_mismatch = 0;
  for (const TensorShape& t : expected) {
    names.insert(t.name);
    const TensorListing* got = v.get(t.name);
    if (!got) {
      missing.push_back(p + t.name + " " + shape_str(t.shape));
      continue;
    }
    bool ok = got->shape.size() == t.shape.size();
    for (size_t i = 0; ok && i < t.shape.size(); ++i) ok = t.shape[i] < 0 || t.shape[i] == got->shape[i];
    if (!ok) {
      if (n_mismatch < kListed)
        mismatches.push_back({{"name", p + t.name}, {"shape", got->shape}, {"expected", t.shape}});
      if (n_mismatch < kListed)
        r.problems.push_back("shape mismatch: " + p + t.name + " is " + shape_str(got->shape) + ", expected " +
                             shape_str(t.shape));
      ++n_mismatch;
    }
    if (!dtype_is_float(got->dtype))
      r.problems.push_back("tensor " + p + t.name + " has dtype " + dtype_name(got->dtype) +
                           "; weights must be floating point");
  }
  size_t fp8_scales = 0;
  for (const auto& [name, t] : v.all()) {
    if (names.count(name) || rec.ignorable(name)) continue;
    if (is_fp8_scale(v, name)) {
      ++fp8_scales;
      continue;
    }
    unexpected.push_back(p + name + " " + shape_str(t->shape));
  }
  if (fp8_scales > 0)
    r.notes.push_back(std::to_string(fp8_scales) +
                      " fp8 scale tensors (ComfyUI scale_weight / scale_input / scaled_fp8): each scale_weight is "
                      "folded into its weight's scales at load; scale_input is not needed (activations stay f32)");
  // Another model's tensors under another known prefix (a ComfyUI "all in one" file) are that model's,
  // described under "components"; only tensors under no known prefix are unexpected.
  for (const TensorListing* t : v.outside())
    if (known_prefix_of(t->name).empty()) unexpected.push_back(t->name + " " + shape_str(t->shape));

  auto listed = [&](const std::vector<std::string>& xs, const std::string& what) {
    json a = json::array();
    for (size_t i = 0; i < xs.size() && i < kListed; ++i) {
      a.push_back(xs[i]);
      r.problems.push_back(what + " tensor: " + xs[i]);
    }
    if (xs.size() > kListed)
      r.problems.push_back("... and " + std::to_string(xs.size() - kListed) + " more " + what + " tensors (" +
                           std::to_string(xs.size()) + " in all)");
    return a;
  };
  json checks;
  checks["expected_count"] = expected.size();
  checks["missing_count"] = missing.size();
  checks["missing"] = listed(missing, "missing");
  checks["unexpected_count"] = unexpected.size();
  checks["unexpected"] = listed(unexpected, "unexpected");
  checks["shape_mismatch_count"] = n_mismatch;
  checks["shape_mismatches"] = mismatches;
  if (n_mismatch > kListed)
    r.problems.push_back("... and " + std::to_string(n_mismatch - kListed) + " more shape mismatches (" +
                         std::to_string(n_mismatch) + " in all)");
  return checks;
}

}  // namespace

std::vector<TensorShape> expected_tensors(const std::string& kind, const std::string& layout, const json& config) {
  if (!config.is_object()) fail(FX_ERR_INVALID_ARGUMENT, "model config must be a JSON object");
  if (kind == "flux_transformer" || kind == "autoencoder") {
    std::vector<TensorShape> bfl = kind == "flux_transformer" ? flux_bfl_tensors(config) : ae_bfl_tensors(config);
    if (layout == "bfl") return bfl;
    if (layout == "diffusers") {
      std::vector<TensorShape> out;
      for (const TensorShape& t : bfl)
        for (DerivedTensor& d : bfl_to_diffusers(kind, t, config))
          out.push_back({std::move(d.name), std::move(d.shape)});
      return out;
    }
  }
  if (kind == "t5_encoder" && layout == "hf") return t5_tensors(config);
  if (kind == "clip_text" && layout == "hf") return clip_tensors(config);
  fail(FX_ERR_INVALID_ARGUMENT, "no tensor layout for kind '" + kind + "' in layout '" + layout + "'");
}

std::vector<DerivedTensor> bfl_to_diffusers(const std::string& kind, const TensorShape& bfl, const json& config) {
  if (kind == "flux_transformer") return flux_to_diffusers(bfl, dim_or_any(config, "hidden_size"));
  if (kind == "autoencoder") return ae_to_diffusers(bfl, static_cast<int64_t>(ae_widths(config).size()));
  fail(FX_ERR_INVALID_ARGUMENT, "kind '" + kind + "' has no BFL layout");
}

json describe(const CheckpointListing& l) { return describe(l, ""); }

json describe(const CheckpointListing& l, const std::string& want_kind) {
  json d;
  d["checks"] = nullptr;
  uint64_t params = 0, bytes = 0;
  std::map<std::string, uint64_t> dtypes;
  for (const TensorListing& t : l.tensors) {
    const uint64_t n = element_count(t.shape);
    if (t.block) {
      const BlockLayout& layout = block_layout(*t.block);
      bytes += n / static_cast<uint64_t>(layout.elements) * static_cast<uint64_t>(layout.bytes);
      params += n;
      ++dtypes[layout.name];
      continue;
    }
    bytes += n * dtype_size(t.dtype);
    // Buffers such as CLIP's int64 position_ids are not parameters.
    if (dtype_is_float(t.dtype)) params += n;
    ++dtypes[dtype_name(t.dtype)];
  }

  // Candidate prefixes: one shared by every tensor first, then none, then the others by how many
  // tensors carry them (a combined file is described by its largest known component).
  std::vector<std::pair<size_t, std::string>> counted;
  for (const char* p : kKnownPrefixes) {
    size_t n = 0;
    for (const TensorListing& t : l.tensors) n += starts_with(t.name, p);
    if (n) counted.push_back({n, p});
  }
  std::stable_sort(counted.begin(), counted.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> candidates;
  std::string shared_prefix;
  if (!counted.empty() && counted[0].first == l.tensors.size()) {
    shared_prefix = counted[0].second;
    candidates.push_back(shared_prefix);
  }
  candidates.push_back("");
  for (const auto& [n, p] : counted)
    if (p != shared_prefix) candidates.push_back(p);

  // Every known component (ComfyUI "all in one" files hold a transformer, text encoders and a VAE).
  json components = json::array();
  for (const auto& [n, p] : counted) {
    Report ignored;
    const std::optional<Recognized> c = recognize(View(l, p), l, ignored);
    components.push_back({{"prefix", p},
                          {"kind", c ? c->kind : "unknown"},
                          {"layout", c ? c->layout : "unknown"},
                          {"tensor_count", n}});
  }
  // With `want_kind`, the first candidate of that kind wins (a loader asking for the VAE of a combined
  // file); without one, or when none is of that kind, the first recognised one.
  if (!want_kind.empty()) {
    std::stable_partition(candidates.begin(), candidates.end(), [&](const std::string& p) {
      Report ignored;
      const std::optional<Recognized> c = recognize(View(l, p), l, ignored);
      return c && c->kind == want_kind;
    });
  }

  Report report;
  std::optional<Recognized> rec;
  std::string prefix = shared_prefix;
  for (const std::string& p : candidates) {
    View v(l, p);
    Report r;
    rec = recognize(v, l, r);
    if (rec) {
      prefix = p;
      if (rec->config_usable) {
        try {
          d["checks"] = check_tensor_set(v, expected_tensors(rec->kind, rec->layout, rec->config), *rec, r);
        } catch (const Error& e) {
          r.problems.push_back(std::string("cannot check the tensor set: ") + e.what());
        }
      } else {
        r.problems.push_back("cannot check the tensor set: the model structure could not be inferred");
      }
      report = std::move(r);
      break;
    }
  }

  if (rec) {
    d["kind"] = rec->kind;
    d["layout"] = rec->layout;
    d["variant"] = rec->variant;
    rec->config["defaults_used"] = report.defaults_used;
    d["config"] = rec->config;
  } else {
    d["kind"] = "unknown";
    d["layout"] = "unknown";
    d["variant"] = nullptr;
    d["config"] = json::object();
    std::string tried;
    for (const std::string& p : candidates) tried += (tried.empty() ? "'" : ", '") + p + "'";
    report.problems.push_back(
        l.tensors.empty()
            ? std::string("the checkpoint holds no tensors")
            : "no known model found: looked for a FLUX transformer (BFL img_in.weight / double_blocks.N / "
              "single_blocks.N; diffusers x_embedder.weight / transformer_blocks.N / single_transformer_blocks.N), "
              "an autoencoder (decoder.conv_in.weight / encoder.conv_in.weight), a T5 encoder (encoder.block.N) and "
              "a CLIP text encoder (text_model.*), with the key prefixes " +
                  tried);
  }
  d["key_prefix"] = prefix;
  d["components"] = components;
  d["parameter_count"] = params;
  d["tensor_count"] = l.tensors.size();
  d["total_bytes"] = bytes;
  d["dtypes"] = dtypes;
  d["source"] = l.source;
  d["files"] = l.files;
  d["metadata"] = l.metadata;
  d["has_config_json"] = l.config.has_value();
  d["notes"] = report.notes;
  d["problems"] = report.problems;
  return d;
}

json describe(const io::Checkpoint& checkpoint) { return describe(checkpoint, ""); }

json describe(const io::Checkpoint& checkpoint, const std::string& want_kind) {
  if (const auto engine = engine::read_engine_json(checkpoint.metadata(), checkpoint.path()))
    return engine::describe_engine(checkpoint, *engine, want_kind);
  CheckpointListing l;
  l.tensors.reserve(checkpoint.tensors().size());
  for (const io::Checkpoint::Tensor& t : checkpoint.tensors()) l.tensors.push_back({t.name, t.dtype, t.shape, t.block});
  l.config = checkpoint.config();
  l.metadata = checkpoint.metadata();
  switch (checkpoint.source()) {
    case io::Checkpoint::Source::File:
      l.source = "file";
      break;
    case io::Checkpoint::Source::Index:
      l.source = "index";
      break;
    case io::Checkpoint::Source::Folder:
      l.source = "folder";
      break;
  }
  l.files = checkpoint.file_paths();
  return describe(l, want_kind);
}

}  // namespace fx::models
