// Recognizer and tiny-model tests. The tensor lists and parameter formulas below are written out here
// from docs/flux-model.md §7-§8 independently of src/models (which builds its lists from one shared table),
// and the formulas are anchored on the spec's published parameter counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/recognize.h"
#include "models/tiny.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Shape = std::vector<int64_t>;
using Shapes = std::map<std::string, Shape>;
using fx::models::CheckpointListing;
using fx::models::TensorListing;

// ---------------------------------------------------------------------------------------------------
// Spec configurations

struct FluxCfg {
  int64_t H, heads, in, out, ctx, vec, mlp, depth, single;
  bool guidance;
  int64_t hd() const { return H / heads; }
};
FluxCfg real_flux(bool dev) { return {3072, 24, 64, 64, 4096, 768, 12288, 19, 38, dev}; }
// The documented tiny defaults (tiny.h / fluxnative.h): hidden 64, 2 heads, 2 + 3 blocks, T5/CLIP widths 32.
FluxCfg tiny_flux(bool dev) { return {64, 2, 64, 64, 32, 32, 256, 2, 3, dev}; }
constexpr int64_t kTimeDim = 256;  // sinusoidal embedding width, docs/flux-model.md §5.1

struct AeCfg {
  int64_t ch;
  std::vector<int64_t> mult;
  int64_t nrb, z;
};
AeCfg real_ae() { return {128, {1, 2, 4, 4}, 2, 16}; }
AeCfg tiny_ae() { return {32, {1, 2}, 1, 16}; }

struct T5Cfg {
  int64_t d, dff, dkv, heads, layers, vocab, buckets;
};
T5Cfg real_t5() { return {4096, 10240, 64, 64, 24, 32128, 32}; }
T5Cfg tiny_t5() { return {32, 64, 8, 4, 2, 32128, 32}; }

struct ClipCfg {
  int64_t h, inter, layers, heads, vocab, pos;
};
ClipCfg real_clip() { return {768, 3072, 12, 12, 49408, 77}; }
ClipCfg tiny_clip() { return {32, 64, 2, 2, 49408, 77}; }

// ---------------------------------------------------------------------------------------------------
// Parameter formulas (closed form, per module)

int64_t lin(int64_t o, int64_t i) { return o * i + o; }

int64_t flux_double_block(const FluxCfg& c) {
  const int64_t H = c.H;
  // per stream: modulation 6H, fused qkv 3H, two QK-norm scales, out proj, 2-layer MLP
  return 2 * (lin(6 * H, H) + lin(3 * H, H) + 2 * c.hd() + lin(H, H) + lin(c.mlp, H) + lin(H, c.mlp));
}
int64_t flux_single_block(const FluxCfg& c) {
  const int64_t H = c.H;
  return lin(3 * H + c.mlp, H) + lin(H, H + c.mlp) + 2 * c.hd() + lin(3 * H, H);
}
int64_t flux_params(const FluxCfg& c) {
  const int64_t H = c.H;
  int64_t top = lin(H, c.in) + lin(H, c.ctx) + lin(H, kTimeDim) + lin(H, H) + lin(H, c.vec) + lin(H, H) +
                lin(c.out, H) + lin(2 * H, H);
  if (c.guidance) top += lin(H, kTimeDim) + lin(H, H);
  return top + c.depth * flux_double_block(c) + c.single * flux_single_block(c);
}

int64_t conv(int64_t o, int64_t i, int64_t k) { return o * i * k * k + o; }
int64_t gn(int64_t c) { return 2 * c; }
int64_t resnet(int64_t i, int64_t o) {
  return gn(i) + conv(o, i, 3) + gn(o) + conv(o, o, 3) + (i != o ? conv(o, i, 1) : 0);
}
int64_t attn_block(int64_t c) { return gn(c) + 4 * conv(c, c, 1); }
int64_t ae_encoder_params(const AeCfg& a) {
  int64_t n = conv(a.ch, 3, 3), c = a.ch;
  for (size_t i = 0; i < a.mult.size(); ++i) {
    for (int64_t j = 0; j < a.nrb; ++j) {
      n += resnet(c, a.ch * a.mult[i]);
      c = a.ch * a.mult[i];
    }
    if (i + 1 != a.mult.size()) n += conv(c, c, 3);
  }
  return n + 2 * resnet(c, c) + attn_block(c) + gn(c) + conv(2 * a.z, c, 3);
}
int64_t ae_decoder_params(const AeCfg& a) {
  int64_t c = a.ch * a.mult.back();
  int64_t n = conv(c, a.z, 3) + 2 * resnet(c, c) + attn_block(c);
  for (size_t k = a.mult.size(); k-- > 0;) {
    for (int64_t j = 0; j < a.nrb + 1; ++j) {
      n += resnet(c, a.ch * a.mult[k]);
      c = a.ch * a.mult[k];
    }
    if (k != 0) n += conv(c, c, 3);
  }
  return n + gn(c) + conv(3, c, 3);
}
int64_t ae_params(const AeCfg& a) { return ae_encoder_params(a) + ae_decoder_params(a); }

int64_t t5_params(const T5Cfg& t) {
  const int64_t inner = t.heads * t.dkv;
  const int64_t block = 3 * inner * t.d + t.d * inner + t.d + 2 * t.dff * t.d + t.d * t.dff + t.d;
  return t.vocab * t.d + t.buckets * t.heads + t.layers * block + t.d;
}

int64_t clip_params(const ClipCfg& c) {
  const int64_t layer = 4 * lin(c.h, c.h) + 2 * c.h + lin(c.inter, c.h) + lin(c.h, c.inter) + 2 * c.h;
  return c.vocab * c.h + c.pos * c.h + c.layers * layer + 2 * c.h;
}

// ---------------------------------------------------------------------------------------------------
// Tensor lists, transcribed from the spec tables

struct ListBuilder {
  Shapes s;
  void linear(const std::string& p, int64_t o, int64_t i) {
    s[p + ".weight"] = {o, i};
    s[p + ".bias"] = {o};
  }
  void conv(const std::string& p, int64_t o, int64_t i, int64_t k) {
    s[p + ".weight"] = {o, i, k, k};
    s[p + ".bias"] = {o};
  }
  void norm(const std::string& p, int64_t c) {
    s[p + ".weight"] = {c};
    s[p + ".bias"] = {c};
  }
};

Shapes spec_flux_bfl(const FluxCfg& c) {  // §8.1
  ListBuilder b;
  const int64_t H = c.H;
  b.linear("img_in", H, c.in);
  b.linear("txt_in", H, c.ctx);
  b.linear("time_in.in_layer", H, kTimeDim);
  b.linear("time_in.out_layer", H, H);
  b.linear("vector_in.in_layer", H, c.vec);
  b.linear("vector_in.out_layer", H, H);
  if (c.guidance) {
    b.linear("guidance_in.in_layer", H, kTimeDim);
    b.linear("guidance_in.out_layer", H, H);
  }
  b.linear("final_layer.linear", c.out, H);
  b.linear("final_layer.adaLN_modulation.1", 2 * H, H);
  for (int64_t n = 0; n < c.depth; ++n) {
    for (std::string s : {"img", "txt"}) {
      const std::string p = "double_blocks." + std::to_string(n) + "." + s;
      b.linear(p + "_mod.lin", 6 * H, H);
      b.linear(p + "_attn.qkv", 3 * H, H);
      b.s[p + "_attn.norm.query_norm.scale"] = {c.hd()};
      b.s[p + "_attn.norm.key_norm.scale"] = {c.hd()};
      b.linear(p + "_attn.proj", H, H);
      b.linear(p + "_mlp.0", c.mlp, H);
      b.linear(p + "_mlp.2", H, c.mlp);
    }
  }
  for (int64_t n = 0; n < c.single; ++n) {
    const std::string p = "single_blocks." + std::to_string(n) + ".";
    b.linear(p + "linear1", 3 * H + c.mlp, H);
    b.linear(p + "linear2", H, H + c.mlp);
    b.s[p + "norm.query_norm.scale"] = {c.hd()};
    b.s[p + "norm.key_norm.scale"] = {c.hd()};
    b.linear(p + "modulation.lin", 3 * H, H);
  }
  return b.s;
}

Shapes spec_flux_diffusers(const FluxCfg& c) {  // §8.2
  ListBuilder b;
  const int64_t H = c.H;
  b.linear("x_embedder", H, c.in);
  b.linear("context_embedder", H, c.ctx);
  b.linear("time_text_embed.timestep_embedder.linear_1", H, kTimeDim);
  b.linear("time_text_embed.timestep_embedder.linear_2", H, H);
  if (c.guidance) {
    b.linear("time_text_embed.guidance_embedder.linear_1", H, kTimeDim);
    b.linear("time_text_embed.guidance_embedder.linear_2", H, H);
  }
  b.linear("time_text_embed.text_embedder.linear_1", H, c.vec);
  b.linear("time_text_embed.text_embedder.linear_2", H, H);
  b.linear("proj_out", c.out, H);
  b.linear("norm_out.linear", 2 * H, H);
  for (int64_t n = 0; n < c.depth; ++n) {
    const std::string p = "transformer_blocks." + std::to_string(n) + ".";
    b.linear(p + "norm1.linear", 6 * H, H);
    b.linear(p + "norm1_context.linear", 6 * H, H);
    for (std::string m : {"to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"})
      b.linear(p + "attn." + m, H, H);
    for (std::string m : {"norm_q", "norm_k", "norm_added_q", "norm_added_k"})
      b.s[p + "attn." + m + ".weight"] = {c.hd()};
    b.linear(p + "ff.net.0.proj", c.mlp, H);
    b.linear(p + "ff.net.2", H, c.mlp);
    b.linear(p + "ff_context.net.0.proj", c.mlp, H);
    b.linear(p + "ff_context.net.2", H, c.mlp);
  }
  for (int64_t n = 0; n < c.single; ++n) {
    const std::string p = "single_transformer_blocks." + std::to_string(n) + ".";
    b.linear(p + "norm.linear", 3 * H, H);
    for (std::string m : {"to_q", "to_k", "to_v"}) b.linear(p + "attn." + m, H, H);
    b.linear(p + "proj_mlp", c.mlp, H);
    b.s[p + "attn.norm_q.weight"] = {c.hd()};
    b.s[p + "attn.norm_k.weight"] = {c.hd()};
    b.linear(p + "proj_out", H, H + c.mlp);
  }
  return b.s;
}

// §8.3, for either naming. diffusers: resnets/conv_shortcut, up_blocks in reverse, linear attention.
Shapes spec_ae(const AeCfg& a, bool diffusers) {
  ListBuilder b;
  const int64_t L = static_cast<int64_t>(a.mult.size());
  auto res = [&](const std::string& p, int64_t i, int64_t o) {
    b.norm(p + "norm1", i);
    b.conv(p + "conv1", o, i, 3);
    b.norm(p + "norm2", o);
    b.conv(p + "conv2", o, o, 3);
    if (i != o) b.conv(p + (diffusers ? "conv_shortcut" : "nin_shortcut"), o, i, 1);
  };
  auto mid = [&](const std::string& side, int64_t c) {
    res(side + (diffusers ? "mid_block.resnets.0." : "mid.block_1."), c, c);
    res(side + (diffusers ? "mid_block.resnets.1." : "mid.block_2."), c, c);
    if (diffusers) {
      const std::string p = side + "mid_block.attentions.0.";
      b.norm(p + "group_norm", c);
      for (std::string m : {"to_q", "to_k", "to_v", "to_out.0"}) b.linear(p + m, c, c);
    } else {
      const std::string p = side + "mid.attn_1.";
      b.norm(p + "norm", c);
      for (std::string m : {"q", "k", "v", "proj_out"}) b.conv(p + m, c, c, 1);
    }
  };
  const std::string norm_out = diffusers ? "conv_norm_out" : "norm_out";
  // encoder
  b.conv("encoder.conv_in", a.ch, 3, 3);
  int64_t c = a.ch;
  for (int64_t i = 0; i < L; ++i) {
    const std::string lvl =
        diffusers ? "encoder.down_blocks." + std::to_string(i) + "." : "encoder.down." + std::to_string(i) + ".";
    for (int64_t j = 0; j < a.nrb; ++j) {
      res(lvl + (diffusers ? "resnets." : "block.") + std::to_string(j) + ".", c, a.ch * a.mult[i]);
      c = a.ch * a.mult[i];
    }
    if (i != L - 1) b.conv(lvl + (diffusers ? "downsamplers.0.conv" : "downsample.conv"), c, c, 3);
  }
  mid("encoder.", c);
  b.norm("encoder." + norm_out, c);
  b.conv("encoder.conv_out", 2 * a.z, c, 3);
  // decoder
  c = a.ch * a.mult.back();
  b.conv("decoder.conv_in", c, a.z, 3);
  mid("decoder.", c);
  for (int64_t i = L - 1; i >= 0; --i) {
    const std::string lvl =
        diffusers ? "decoder.up_blocks." + std::to_string(L - 1 - i) + "." : "decoder.up." + std::to_string(i) + ".";
    for (int64_t j = 0; j < a.nrb + 1; ++j) {
      res(lvl + (diffusers ? "resnets." : "block.") + std::to_string(j) + ".", c, a.ch * a.mult[i]);
      c = a.ch * a.mult[i];
    }
    if (i != 0) b.conv(lvl + (diffusers ? "upsamplers.0.conv" : "upsample.conv"), c, c, 3);
  }
  b.norm("decoder." + norm_out, c);
  b.conv("decoder.conv_out", 3, c, 3);
  return b.s;
}

Shapes spec_t5(const T5Cfg& t) {  // §8.4
  Shapes s;
  const int64_t inner = t.heads * t.dkv;
  s["shared.weight"] = {t.vocab, t.d};
  s["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = {t.buckets, t.heads};
  for (int64_t n = 0; n < t.layers; ++n) {
    const std::string p = "encoder.block." + std::to_string(n) + ".layer.";
    s[p + "0.SelfAttention.q.weight"] = {inner, t.d};
    s[p + "0.SelfAttention.k.weight"] = {inner, t.d};
    s[p + "0.SelfAttention.v.weight"] = {inner, t.d};
    s[p + "0.SelfAttention.o.weight"] = {t.d, inner};
    s[p + "0.layer_norm.weight"] = {t.d};
    s[p + "1.DenseReluDense.wi_0.weight"] = {t.dff, t.d};
    s[p + "1.DenseReluDense.wi_1.weight"] = {t.dff, t.d};
    s[p + "1.DenseReluDense.wo.weight"] = {t.d, t.dff};
    s[p + "1.layer_norm.weight"] = {t.d};
  }
  s["encoder.final_layer_norm.weight"] = {t.d};
  return s;
}

Shapes spec_clip(const ClipCfg& c) {  // §8.5
  ListBuilder b;
  b.s["text_model.embeddings.token_embedding.weight"] = {c.vocab, c.h};
  b.s["text_model.embeddings.position_embedding.weight"] = {c.pos, c.h};
  for (int64_t n = 0; n < c.layers; ++n) {
    const std::string p = "text_model.encoder.layers." + std::to_string(n) + ".";
    for (std::string m : {"q_proj", "k_proj", "v_proj", "out_proj"}) b.linear(p + "self_attn." + m, c.h, c.h);
    b.norm(p + "layer_norm1", c.h);
    b.linear(p + "mlp.fc1", c.inter, c.h);
    b.linear(p + "mlp.fc2", c.h, c.inter);
    b.norm(p + "layer_norm2", c.h);
  }
  b.norm("text_model.final_layer_norm", c.h);
  return b.s;
}

int64_t count_params(const Shapes& s) {
  int64_t n = 0;
  for (const auto& [name, shape] : s) {
    int64_t e = 1;
    for (int64_t d : shape) e *= d;
    n += e;
  }
  return n;
}

CheckpointListing listing(const Shapes& s, fx::DType dtype, const std::string& prefix = "") {
  CheckpointListing l;
  for (const auto& [name, shape] : s) l.tensors.push_back({prefix + name, dtype, shape});
  return l;
}

std::string joined(const json& problems) {
  std::string out;
  for (const json& p : problems) out += p.get<std::string>() + "\n";
  return out;
}

bool mentions(const json& problems, const std::string& needle) {
  for (const json& p : problems)
    if (p.get<std::string>().find(needle) != std::string::npos) return true;
  return false;
}

void expect_flux_config(const json& c, const FluxCfg& f) {
  EXPECT_EQ(c["hidden_size"], f.H);
  EXPECT_EQ(c["num_heads"], f.heads);
  EXPECT_EQ(c["head_dim"], f.hd());
  EXPECT_EQ(c["in_channels"], f.in);
  EXPECT_EQ(c["out_channels"], f.out);
  EXPECT_EQ(c["context_in_dim"], f.ctx);
  EXPECT_EQ(c["vec_in_dim"], f.vec);
  EXPECT_EQ(c["time_embed_dim"], kTimeDim);
  EXPECT_EQ(c["mlp_hidden"], f.mlp);
  EXPECT_DOUBLE_EQ(c["mlp_ratio"].get<double>(), static_cast<double>(f.mlp) / static_cast<double>(f.H));
  EXPECT_EQ(c["depth"], f.depth);
  EXPECT_EQ(c["depth_single"], f.single);
  EXPECT_EQ(c["guidance_embed"], f.guidance);
  EXPECT_EQ(c["qkv_bias"], true);
  EXPECT_EQ(c["theta"], 10000);
}

void expect_ae_config(const json& c, const AeCfg& a) {
  EXPECT_EQ(c["ch"], a.ch);
  EXPECT_EQ(c["ch_mult"], json(a.mult));
  EXPECT_EQ(c["num_res_blocks"], a.nrb);
  EXPECT_EQ(c["z_channels"], a.z);
  EXPECT_EQ(c["in_channels"], 3);
  EXPECT_EQ(c["out_channels"], 3);
  EXPECT_EQ(c["has_encoder"], true);
  EXPECT_EQ(c["has_decoder"], true);
  EXPECT_EQ(c["mid_attention"], true);
  EXPECT_EQ(c["use_quant_conv"], false);
  EXPECT_EQ(c["use_post_quant_conv"], false);
  EXPECT_DOUBLE_EQ(c["scale_factor"].get<double>(), 0.3611);
  EXPECT_DOUBLE_EQ(c["shift_factor"].get<double>(), 0.1159);
}

void expect_t5_config(const json& c, const T5Cfg& t) {
  EXPECT_EQ(c["d_model"], t.d);
  EXPECT_EQ(c["d_ff"], t.dff);
  EXPECT_EQ(c["d_kv"], t.dkv);
  EXPECT_EQ(c["num_heads"], t.heads);
  EXPECT_EQ(c["num_layers"], t.layers);
  EXPECT_EQ(c["vocab_size"], t.vocab);
  EXPECT_EQ(c["relative_attention_num_buckets"], t.buckets);
  EXPECT_EQ(c["relative_attention_max_distance"], 128);
  EXPECT_EQ(c["gated"], true);
}

void expect_clip_config(const json& c, const ClipCfg& k) {
  EXPECT_EQ(c["hidden_size"], k.h);
  EXPECT_EQ(c["intermediate_size"], k.inter);
  EXPECT_EQ(c["num_layers"], k.layers);
  EXPECT_EQ(c["num_heads"], k.heads);
  EXPECT_EQ(c["vocab_size"], k.vocab);
  EXPECT_EQ(c["max_position_embeddings"], k.pos);
  EXPECT_EQ(c["hidden_act"], "quick_gelu");
}

// A fresh folder per test under the build's test-tmp.
fs::path test_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string("models_") + info->test_suite_name() + "_" + info->name();
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  fs::path dir = fs::path(FX_TEST_TMPDIR) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

fx_tiny_model_params params(int32_t kind, int32_t layout, int32_t dtype, bool guidance = true, int32_t shards = 1,
                            uint64_t seed = 7) {
  fx_tiny_model_params p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  p.kind = kind;
  p.layout = layout;
  p.dtype = dtype;
  p.guidance = guidance ? 1 : 0;
  p.shards = shards;
  p.seed = seed;
  return p;
}

Shapes shapes_of(const fx::io::Checkpoint& ck) {
  Shapes s;
  for (const auto& t : ck.tensors()) s[t.name] = t.shape;
  return s;
}

fx_status status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const fx::Error& e) {
    return e.status();
  }
  return FX_OK;
}

// ===================================================================================================
// The formulas and transcribed lists reproduce the spec's published numbers.

TEST(ModelsSpecFormulas, PublishedParameterCounts) {
  EXPECT_EQ(flux_double_block(real_flux(true)), 339831296);
  EXPECT_EQ(flux_single_block(real_flux(true)), 141591808);
  EXPECT_EQ(flux_params(real_flux(true)), 11901408320);
  EXPECT_EQ(flux_params(real_flux(false)), 11891178560);
  EXPECT_EQ(ae_encoder_params(real_ae()), 34274208);
  EXPECT_EQ(ae_decoder_params(real_ae()), 49545475);
  EXPECT_EQ(ae_params(real_ae()), 83819683);
  EXPECT_EQ(t5_params(real_t5()), 4762310656);
  EXPECT_EQ(clip_params(real_clip()), 123060480);
}

TEST(ModelsSpecFormulas, TranscribedListsMatchFormulasAndCounts) {
  for (bool dev : {true, false}) {
    for (const FluxCfg& c : {real_flux(dev), tiny_flux(dev)}) {
      EXPECT_EQ(count_params(spec_flux_bfl(c)), flux_params(c));
      EXPECT_EQ(count_params(spec_flux_diffusers(c)), flux_params(c));
    }
  }
  EXPECT_EQ(spec_flux_bfl(real_flux(true)).size(), 780u);
  EXPECT_EQ(spec_flux_bfl(real_flux(false)).size(), 776u);
  EXPECT_EQ(spec_flux_diffusers(real_flux(true)).size(), 1160u);
  for (const AeCfg& a : {real_ae(), tiny_ae()}) {
    EXPECT_EQ(count_params(spec_ae(a, false)), ae_params(a));
    EXPECT_EQ(count_params(spec_ae(a, true)), ae_params(a));
  }
  EXPECT_EQ(spec_t5(real_t5()).size(), 219u);
  EXPECT_EQ(count_params(spec_t5(real_t5())), t5_params(real_t5()));
  EXPECT_EQ(count_params(spec_t5(tiny_t5())), t5_params(tiny_t5()));
  EXPECT_EQ(spec_clip(real_clip()).size(), 196u);
  EXPECT_EQ(count_params(spec_clip(real_clip())), clip_params(real_clip()));
  EXPECT_EQ(count_params(spec_clip(tiny_clip())), clip_params(tiny_clip()));
}

// ===================================================================================================
// The published tensor lists (names and shapes only, no data).

TEST(RecognizePublished, FluxBfl) {
  for (bool dev : {true, false}) {
    const FluxCfg f = real_flux(dev);
    const json d = fx::models::describe(listing(spec_flux_bfl(f), fx::DType::BF16));
    EXPECT_EQ(d["kind"], "flux_transformer");
    EXPECT_EQ(d["layout"], "bfl");
    EXPECT_EQ(d["variant"], dev ? "dev" : "schnell");
    EXPECT_EQ(d["key_prefix"], "");
    expect_flux_config(d["config"], f);
    // No config.json or metadata: the published axes are the documented default for head dim 128.
    EXPECT_EQ(d["config"]["axes_dim"], json::array({16, 56, 56}));
    EXPECT_FALSE(d["config"]["defaults_used"].empty());
    EXPECT_EQ(d["parameter_count"], flux_params(f));
    EXPECT_EQ(d["tensor_count"], dev ? 780 : 776);
    EXPECT_EQ(d["total_bytes"], 2 * flux_params(f));
    EXPECT_EQ(d["dtypes"], json({{"BF16", dev ? 780 : 776}}));
    EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
    EXPECT_EQ(d["checks"]["missing_count"], 0);
    EXPECT_EQ(d["checks"]["unexpected_count"], 0);
  }
  // The dev index total quoted by the spec: 23 802 816 640 bytes at 2 bytes per parameter.
  EXPECT_EQ(fx::models::describe(listing(spec_flux_bfl(real_flux(true)), fx::DType::BF16))["total_bytes"], 23802816640);
}

TEST(RecognizePublished, FluxDiffusersWithConfigJson) {
  for (bool dev : {true, false}) {
    const FluxCfg f = real_flux(dev);
    CheckpointListing l = listing(spec_flux_diffusers(f), fx::DType::BF16);
    l.source = "index";
    l.config = json{{"_class_name", "FluxTransformer2DModel"},
                    {"attention_head_dim", 128},
                    {"axes_dims_rope", {16, 56, 56}},
                    {"guidance_embeds", dev},
                    {"in_channels", 64},
                    {"joint_attention_dim", 4096},
                    {"num_attention_heads", 24},
                    {"num_layers", 19},
                    {"num_single_layers", 38},
                    {"patch_size", 1},
                    {"pooled_projection_dim", 768}};
    const json d = fx::models::describe(l);
    EXPECT_EQ(d["kind"], "flux_transformer");
    EXPECT_EQ(d["layout"], "diffusers");
    EXPECT_EQ(d["variant"], dev ? "dev" : "schnell");
    expect_flux_config(d["config"], f);
    EXPECT_EQ(d["config"]["axes_dim"], json::array({16, 56, 56}));
    EXPECT_TRUE(d["config"]["defaults_used"].empty()) << d["config"]["defaults_used"].dump();
    EXPECT_EQ(d["parameter_count"], flux_params(f));
    EXPECT_EQ(d["has_config_json"], true);
    EXPECT_EQ(d["source"], "index");
    EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
  }
}

TEST(RecognizePublished, FluxConfigJsonDisagreementIsAProblem) {
  CheckpointListing l = listing(spec_flux_diffusers(real_flux(true)), fx::DType::BF16);
  l.config = json{{"_class_name", "FluxTransformer2DModel"}, {"num_layers", 18}, {"guidance_embeds", false}};
  const json d = fx::models::describe(l);
  EXPECT_TRUE(mentions(d["problems"], "num_layers")) << joined(d["problems"]);
  EXPECT_TRUE(mentions(d["problems"], "guidance_embeds")) << joined(d["problems"]);
  EXPECT_EQ(d["config"]["depth"], 19);  // the tensors win
}

TEST(RecognizePublished, FluxVariantsByInputWidth) {
  FluxCfg fill = real_flux(true);
  fill.in = 384;
  FluxCfg canny = real_flux(true);
  canny.in = 128;
  EXPECT_EQ(fx::models::describe(listing(spec_flux_bfl(fill), fx::DType::BF16))["variant"], "fill");
  EXPECT_EQ(fx::models::describe(listing(spec_flux_bfl(canny), fx::DType::BF16))["variant"], "canny-depth");
}

TEST(RecognizePublished, Autoencoder) {
  for (bool diffusers : {false, true}) {
    const json d =
        fx::models::describe(listing(spec_ae(real_ae(), diffusers), diffusers ? fx::DType::BF16 : fx::DType::F32));
    EXPECT_EQ(d["kind"], "autoencoder");
    EXPECT_EQ(d["layout"], diffusers ? "diffusers" : "bfl");
    expect_ae_config(d["config"], real_ae());
    EXPECT_EQ(d["config"]["block_out_channels"], json::array({128, 256, 512, 512}));
    // No config.json in the list: scale/shift are the published defaults, and say so.
    EXPECT_TRUE(mentions(d["config"]["defaults_used"], "scale_factor"));
    EXPECT_TRUE(mentions(d["config"]["defaults_used"], "shift_factor"));
    EXPECT_EQ(d["parameter_count"], 83819683);
    EXPECT_EQ(d["total_bytes"], 83819683ll * (diffusers ? 2 : 4));
    EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
  }
}

TEST(RecognizePublished, T5) {
  const json d = fx::models::describe(listing(spec_t5(real_t5()), fx::DType::BF16));
  EXPECT_EQ(d["kind"], "t5_encoder");
  EXPECT_EQ(d["layout"], "hf");
  expect_t5_config(d["config"], real_t5());
  EXPECT_EQ(d["parameter_count"], 4762310656);
  EXPECT_EQ(d["tensor_count"], 219);
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
}

TEST(RecognizePublished, T5EmbeddingAliases) {
  // Only encoder.embed_tokens.weight: accepted in place of shared.weight.
  Shapes s = spec_t5(real_t5());
  const Shape emb = s["shared.weight"];
  s.erase("shared.weight");
  s["encoder.embed_tokens.weight"] = emb;
  json d = fx::models::describe(listing(s, fx::DType::BF16));
  EXPECT_EQ(d["config"]["vocab_size"], 32128);
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
  // Both names (tied copies): neither is unexpected.
  s["shared.weight"] = emb;
  d = fx::models::describe(listing(s, fx::DType::BF16));
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
}

TEST(RecognizePublished, ClipWithPositionIdsBuffer) {
  CheckpointListing l = listing(spec_clip(real_clip()), fx::DType::BF16);
  l.tensors.push_back({"text_model.embeddings.position_ids", fx::DType::I64, {1, 77}});
  l.config = json{{"model_type", "clip_text_model"},
                  {"num_attention_heads", 12},
                  {"hidden_act", "quick_gelu"},
                  {"hidden_size", 768},
                  {"num_hidden_layers", 12}};
  const json d = fx::models::describe(l);
  EXPECT_EQ(d["kind"], "clip_text");
  EXPECT_EQ(d["layout"], "hf");
  expect_clip_config(d["config"], real_clip());
  EXPECT_EQ(d["config"]["head_dim"], 64);
  EXPECT_EQ(d["parameter_count"], 123060480);  // the int64 buffer is not a parameter
  EXPECT_EQ(d["tensor_count"], 197);
  EXPECT_EQ(d["dtypes"]["I64"], 1);
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
}

TEST(RecognizePublished, ClipHeadsWithoutConfigAreADocumentedDefault) {
  const json d = fx::models::describe(listing(spec_clip(real_clip()), fx::DType::BF16));
  EXPECT_EQ(d["config"]["num_heads"], 12);
  EXPECT_TRUE(mentions(d["config"]["defaults_used"], "num_heads"));
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
}

TEST(RecognizePublished, KnownPrefixesAreStripped) {
  struct Case {
    std::string prefix, kind;
    Shapes shapes;
  };
  const std::vector<Case> cases = {
      {"model.diffusion_model.", "flux_transformer", spec_flux_bfl(real_flux(true))},
      {"diffusion_model.", "flux_transformer", spec_flux_bfl(real_flux(false))},
      {"text_encoders.t5xxl.transformer.", "t5_encoder", spec_t5(real_t5())},
      {"text_encoders.clip_l.transformer.", "clip_text", spec_clip(real_clip())},
      {"cond_stage_model.transformer.", "clip_text", spec_clip(real_clip())},
      {"first_stage_model.", "autoencoder", spec_ae(real_ae(), false)},
      {"vae.", "autoencoder", spec_ae(real_ae(), false)},
  };
  for (const Case& c : cases) {
    const json d = fx::models::describe(listing(c.shapes, fx::DType::BF16, c.prefix));
    EXPECT_EQ(d["kind"], c.kind) << c.prefix;
    EXPECT_EQ(d["key_prefix"], c.prefix);
    EXPECT_TRUE(d["problems"].empty()) << c.prefix << "\n" << joined(d["problems"]);
  }
}

TEST(RecognizePublished, DecoderOnlyAutoencoder) {
  Shapes s = spec_ae(real_ae(), false);
  for (auto it = s.begin(); it != s.end();) it = it->first.rfind("encoder.", 0) == 0 ? s.erase(it) : std::next(it);
  const json d = fx::models::describe(listing(s, fx::DType::F32));
  EXPECT_EQ(d["kind"], "autoencoder");
  EXPECT_EQ(d["config"]["has_encoder"], false);
  EXPECT_EQ(d["config"]["has_decoder"], true);
  EXPECT_EQ(d["config"]["num_res_blocks"], 2);
  EXPECT_EQ(d["config"]["ch_mult"], json::array({1, 2, 4, 4}));
  EXPECT_EQ(d["parameter_count"], ae_decoder_params(real_ae()));
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
}

TEST(RecognizePublished, T5DecoderTensorsAreNotedNotProblems) {
  Shapes s = spec_t5(tiny_t5());
  s["decoder.block.0.layer.0.SelfAttention.q.weight"] = {32, 32};
  s["lm_head.weight"] = {32128, 32};
  const json d = fx::models::describe(listing(s, fx::DType::F32));
  EXPECT_EQ(d["kind"], "t5_encoder");
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
  EXPECT_TRUE(mentions(d["notes"], "2 decoder")) << d["notes"].dump();
}

TEST(RecognizeProblems, OneTensorRemovedRenamedOrReshapedIsListed) {
  struct Kind {
    Shapes shapes;
    std::string victim;
  };
  const std::vector<Kind> kinds = {
      {spec_flux_bfl(real_flux(true)), "double_blocks.7.img_attn.qkv.weight"},
      {spec_flux_diffusers(real_flux(false)), "single_transformer_blocks.3.proj_mlp.bias"},
      {spec_ae(real_ae(), false), "decoder.up.1.block.0.nin_shortcut.weight"},
      {spec_ae(real_ae(), true), "decoder.mid_block.attentions.0.to_q.weight"},
      {spec_t5(real_t5()), "encoder.block.5.layer.1.DenseReluDense.wo.weight"},
      {spec_clip(real_clip()), "text_model.encoder.layers.11.mlp.fc1.bias"},
  };
  for (const Kind& k : kinds) {
    ASSERT_TRUE(k.shapes.count(k.victim)) << k.victim;
    // removed
    Shapes s = k.shapes;
    s.erase(k.victim);
    json d = fx::models::describe(listing(s, fx::DType::BF16));
    EXPECT_NE(d["kind"], "unknown");
    EXPECT_EQ(d["checks"]["missing_count"], 1) << k.victim;
    EXPECT_TRUE(mentions(d["problems"], "missing tensor: " + k.victim)) << joined(d["problems"]);
    // renamed
    s = k.shapes;
    s[k.victim + "_renamed"] = s[k.victim];
    s.erase(k.victim);
    d = fx::models::describe(listing(s, fx::DType::BF16));
    EXPECT_TRUE(mentions(d["problems"], "missing tensor: " + k.victim)) << joined(d["problems"]);
    EXPECT_TRUE(mentions(d["problems"], "unexpected tensor: " + k.victim + "_renamed")) << joined(d["problems"]);
    // reshaped: one more row
    s = k.shapes;
    s[k.victim][0] += 1;
    d = fx::models::describe(listing(s, fx::DType::BF16));
    EXPECT_EQ(d["checks"]["shape_mismatch_count"], 1) << k.victim << "\n" << joined(d["problems"]);
    EXPECT_TRUE(mentions(d["problems"], "shape mismatch: " + k.victim)) << joined(d["problems"]);
  }
}

TEST(RecognizeProblems, ManyMissingTensorsAreCountedAndTruncated) {
  Shapes s = spec_flux_bfl(real_flux(true));
  s.erase("double_blocks.5.img_mlp.0.weight");
  for (int n = 0; n < 38; ++n) s.erase("single_blocks." + std::to_string(n) + ".linear2.bias");
  const json d = fx::models::describe(listing(s, fx::DType::BF16));
  EXPECT_EQ(d["checks"]["missing_count"], 39);
  EXPECT_EQ(d["checks"]["missing"].size(), 20u);
  EXPECT_TRUE(mentions(d["problems"], "and 19 more missing tensors (39 in all)")) << joined(d["problems"]);
}

TEST(RecognizeProblems, BlockGapIsReported) {
  Shapes s = spec_flux_bfl(real_flux(true));
  for (auto it = s.begin(); it != s.end();)
    it = it->first.rfind("double_blocks.4.", 0) == 0 ? s.erase(it) : std::next(it);
  const json d = fx::models::describe(listing(s, fx::DType::BF16));
  EXPECT_EQ(d["config"]["depth"], 19);
  EXPECT_TRUE(mentions(d["problems"], "without gaps")) << joined(d["problems"]);
  EXPECT_EQ(d["checks"]["missing_count"], 24);
}

TEST(RecognizeProblems, UnknownTensorsAreUnknown) {
  CheckpointListing l;
  l.tensors.push_back({"foo.weight", fx::DType::F32, {2, 3}});
  l.tensors.push_back({"bar.bias", fx::DType::F32, {3}});
  const json d = fx::models::describe(l);
  EXPECT_EQ(d["kind"], "unknown");
  EXPECT_EQ(d["layout"], "unknown");
  EXPECT_FALSE(d["problems"].empty());
  EXPECT_TRUE(mentions(d["problems"], "double_blocks"));
  EXPECT_EQ(d["parameter_count"], 9);
}

TEST(RecognizeProblems, NonFloatWeightIsAProblem) {
  CheckpointListing l = listing(spec_clip(tiny_clip()), fx::DType::F32);
  for (TensorListing& t : l.tensors)
    if (t.name == "text_model.final_layer_norm.bias") t.dtype = fx::DType::I32;
  const json d = fx::models::describe(l);
  EXPECT_TRUE(mentions(d["problems"], "text_model.final_layer_norm.bias has dtype I32")) << joined(d["problems"]);
}

// A ComfyUI "all in one" file: described by its largest part, the others listed as components (their
// tensors are theirs, not unexpected); a loader asking for one kind gets that part.
TEST(RecognizeProblems, CombinedFileIsDescribedByItsLargestPart) {
  CheckpointListing l = listing(spec_flux_bfl(tiny_flux(true)), fx::DType::BF16, "model.diffusion_model.");
  for (const auto& [name, shape] : spec_clip(tiny_clip()))
    l.tensors.push_back({"text_encoders.clip_l.transformer." + name, fx::DType::BF16, shape});
  l.metadata["axes_dim"] = "[4,14,14]";
  const json d = fx::models::describe(l);
  EXPECT_EQ(d["kind"], "flux_transformer");
  EXPECT_EQ(d["key_prefix"], "model.diffusion_model.");
  EXPECT_EQ(d["checks"]["unexpected_count"], 0);
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
  ASSERT_EQ(d["components"].size(), 2u);
  EXPECT_EQ(d["components"][1]["prefix"], "text_encoders.clip_l.transformer.");
  EXPECT_EQ(d["components"][1]["kind"], "clip_text");
  EXPECT_EQ(d["components"][1]["tensor_count"], static_cast<int64_t>(spec_clip(tiny_clip()).size()));
  const json clip = fx::models::describe(l, "clip_text");
  EXPECT_EQ(clip["kind"], "clip_text");
  EXPECT_EQ(clip["key_prefix"], "text_encoders.clip_l.transformer.");
}

TEST(RecognizeProblems, HeadDimWithoutAxesIsAProblem) {
  // Head dim 32 is not the published 128 and nothing gives the RoPE axes: reported, not guessed.
  const json d = fx::models::describe(listing(spec_flux_bfl(tiny_flux(true)), fx::DType::BF16));
  EXPECT_TRUE(d["config"]["axes_dim"].is_null());
  EXPECT_TRUE(mentions(d["problems"], "axes_dim")) << joined(d["problems"]);
}

// ===================================================================================================
// Tiny models: every kind x layout x dtype x (dev, schnell) x shards.

struct TinyCase {
  int32_t kind, layout, dtype;
  bool guidance;
  int32_t shards;
};

std::string case_name(const TinyCase& c) {
  static const std::map<int32_t, std::string> kinds = {{FX_MODEL_FLUX_TRANSFORMER, "flux"},
                                                       {FX_MODEL_AUTOENCODER, "ae"},
                                                       {FX_MODEL_T5_ENCODER, "t5"},
                                                       {FX_MODEL_CLIP_TEXT, "clip"}};
  std::string n = kinds.at(c.kind) + (c.layout == FX_LAYOUT_BFL ? "_bfl_" : "_diffusers_") +
                  fx::dtype_name(static_cast<fx::DType>(c.dtype));
  if (c.kind == FX_MODEL_FLUX_TRANSFORMER) n += c.guidance ? "_dev" : "_schnell";
  return n + "_shards" + std::to_string(c.shards);
}

// Readable parameter values in gtest messages.
void PrintTo(const TinyCase& c, std::ostream* os) { *os << case_name(c); }

std::vector<TinyCase> tiny_cases() {
  std::vector<TinyCase> out;
  for (int32_t dtype : {FX_DTYPE_F32, FX_DTYPE_F16, FX_DTYPE_BF16}) {
    for (int32_t shards : {1, 3}) {
      for (bool g : {true, false}) {
        out.push_back({FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_DIFFUSERS, dtype, g, shards});
        if (shards == 1) out.push_back({FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, dtype, g, shards});
      }
      out.push_back({FX_MODEL_AUTOENCODER, FX_LAYOUT_DIFFUSERS, dtype, false, shards});
      if (shards == 1) out.push_back({FX_MODEL_AUTOENCODER, FX_LAYOUT_BFL, dtype, false, shards});
      out.push_back({FX_MODEL_T5_ENCODER, FX_LAYOUT_DIFFUSERS, dtype, false, shards});
      out.push_back({FX_MODEL_CLIP_TEXT, FX_LAYOUT_DIFFUSERS, dtype, false, shards});
    }
  }
  return out;
}

class TinyModels : public ::testing::TestWithParam<TinyCase> {};

TEST_P(TinyModels, WrittenModelIsRecognisedWithItsConfig) {
  const TinyCase c = GetParam();
  const bool bfl = c.layout == FX_LAYOUT_BFL;
  const fs::path dir = test_dir();
  const fs::path path = dir / (bfl ? "model.safetensors" : "model");
  fx::models::write_tiny_model(params(c.kind, c.layout, c.dtype, c.guidance, c.shards), path.string());

  if (!bfl) {
    size_t weights = 0;
    bool index = false;
    for (const auto& e : fs::directory_iterator(path)) {
      const std::string n = e.path().filename().string();
      weights += n.size() > 12 && n.substr(n.size() - 12) == ".safetensors";
      index = index || n.find(".safetensors.index.json") != std::string::npos;
    }
    EXPECT_EQ(weights, static_cast<size_t>(c.shards));
    EXPECT_EQ(index, c.shards > 1);
    EXPECT_TRUE(fs::exists(path / "config.json"));
  }

  const auto ck = fx::io::Checkpoint::open(path.string());
  const json d = fx::models::describe(*ck);
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
  EXPECT_EQ(d["files"].size(), static_cast<size_t>(c.shards));
  EXPECT_EQ(d["has_config_json"], !bfl);
  EXPECT_EQ(d["source"], bfl ? "file" : "folder");
  EXPECT_EQ(d["key_prefix"], "");
  EXPECT_EQ(d["dtypes"].size(), 1u);
  EXPECT_EQ(d["dtypes"][fx::dtype_name(static_cast<fx::DType>(c.dtype))], ck->tensors().size());
  const int64_t esize = c.dtype == FX_DTYPE_F32 ? 4 : 2;

  Shapes expected;
  int64_t formula = 0;
  switch (c.kind) {
    case FX_MODEL_FLUX_TRANSFORMER: {
      const FluxCfg f = tiny_flux(c.guidance);
      EXPECT_EQ(d["kind"], "flux_transformer");
      EXPECT_EQ(d["layout"], bfl ? "bfl" : "diffusers");
      EXPECT_EQ(d["variant"], c.guidance ? "dev" : "schnell");
      expect_flux_config(d["config"], f);
      EXPECT_EQ(d["config"]["axes_dim"], json::array({4, 14, 14}));
      EXPECT_TRUE(d["config"]["defaults_used"].empty()) << d["config"]["defaults_used"].dump();
      expected = bfl ? spec_flux_bfl(f) : spec_flux_diffusers(f);
      formula = flux_params(f);
      break;
    }
    case FX_MODEL_AUTOENCODER:
      EXPECT_EQ(d["kind"], "autoencoder");
      EXPECT_EQ(d["layout"], bfl ? "bfl" : "diffusers");
      EXPECT_TRUE(d["variant"].is_null());
      expect_ae_config(d["config"], tiny_ae());
      // BFL files have no config.json: scale and shift are then the published defaults, named as such.
      EXPECT_EQ(d["config"]["defaults_used"].empty(), !bfl) << d["config"]["defaults_used"].dump();
      expected = spec_ae(tiny_ae(), !bfl);
      formula = ae_params(tiny_ae());
      break;
    case FX_MODEL_T5_ENCODER:
      EXPECT_EQ(d["kind"], "t5_encoder");
      EXPECT_EQ(d["layout"], "hf");
      expect_t5_config(d["config"], tiny_t5());
      expected = spec_t5(tiny_t5());
      formula = t5_params(tiny_t5());
      break;
    case FX_MODEL_CLIP_TEXT:
      EXPECT_EQ(d["kind"], "clip_text");
      EXPECT_EQ(d["layout"], "hf");
      expect_clip_config(d["config"], tiny_clip());
      EXPECT_TRUE(d["config"]["defaults_used"].empty()) << d["config"]["defaults_used"].dump();
      expected = spec_clip(tiny_clip());
      formula = clip_params(tiny_clip());
      break;
  }
  EXPECT_EQ(d["parameter_count"], formula);
  EXPECT_EQ(d["total_bytes"], formula * esize);
  EXPECT_EQ(d["tensor_count"], expected.size());
  // Exactly the spec's names and shapes, nothing more.
  const Shapes got = shapes_of(*ck);
  for (const auto& [name, shape] : expected) {
    auto it = got.find(name);
    if (it == got.end()) {
      ADD_FAILURE() << "missing " << name;
      continue;
    }
    EXPECT_EQ(it->second, shape) << name;
  }
  for (const auto& [name, shape] : got) EXPECT_TRUE(expected.count(name)) << "unexpected " << name;
  for (const auto& t : ck->tensors()) EXPECT_EQ(static_cast<int32_t>(t.dtype), c.dtype) << t.name;
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Tiny, TinyModels, ::testing::ValuesIn(tiny_cases()),
                         [](const ::testing::TestParamInfo<TinyCase>& i) { return case_name(i.param); });

// ---------------------------------------------------------------------------------------------------

const fx::io::Checkpoint::Tensor& tensor(const fx::io::Checkpoint& ck, const std::string& name) {
  const auto* t = ck.find(name);
  if (!t) throw std::runtime_error("no tensor " + name);
  return *t;
}

// Bytes of rows [b, e) of a tensor.
std::vector<uint8_t> rows(const fx::io::Checkpoint::Tensor& t, int64_t b, int64_t e) {
  const uint64_t row = t.byte_size / static_cast<uint64_t>(t.shape[0]);
  return std::vector<uint8_t>(t.data() + b * row, t.data() + e * row);
}
std::vector<uint8_t> all(const fx::io::Checkpoint::Tensor& t) {
  return std::vector<uint8_t>(t.data(), t.data() + t.byte_size);
}

TEST(TinyModelsLayouts, FluxBflAndDiffusersHoldTheSameNumbers) {
  const fs::path dir = test_dir();
  for (int32_t dtype : {FX_DTYPE_F32, FX_DTYPE_BF16}) {
    const fs::path bfl_path = dir / ("flux_" + std::to_string(dtype) + ".safetensors");
    const fs::path dif_path = dir / ("flux_" + std::to_string(dtype));
    fx::models::write_tiny_model(params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, dtype, true, 1, 42),
                                 bfl_path.string());
    fx::models::write_tiny_model(params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_DIFFUSERS, dtype, true, 3, 42),
                                 dif_path.string());
    const auto b = fx::io::Checkpoint::open(bfl_path.string());
    const auto f = fx::io::Checkpoint::open(dif_path.string());
    const FluxCfg c = tiny_flux(true);
    const int64_t H = c.H;

    EXPECT_EQ(all(tensor(*b, "img_in.weight")), all(tensor(*f, "x_embedder.weight")));
    EXPECT_EQ(all(tensor(*b, "txt_in.bias")), all(tensor(*f, "context_embedder.bias")));
    EXPECT_EQ(all(tensor(*b, "guidance_in.out_layer.weight")),
              all(tensor(*f, "time_text_embed.guidance_embedder.linear_2.weight")));
    EXPECT_EQ(all(tensor(*b, "final_layer.linear.weight")), all(tensor(*f, "proj_out.weight")));
    // norm_out: diffusers rows are [scale; shift], BFL rows [shift; scale].
    for (const char* leaf : {"weight", "bias"}) {
      const auto& bt = tensor(*b, std::string("final_layer.adaLN_modulation.1.") + leaf);
      const auto& ft = tensor(*f, std::string("norm_out.linear.") + leaf);
      EXPECT_EQ(rows(bt, 0, H), rows(ft, H, 2 * H)) << leaf;
      EXPECT_EQ(rows(bt, H, 2 * H), rows(ft, 0, H)) << leaf;
      EXPECT_NE(rows(bt, 0, H), rows(ft, 0, H)) << "halves must differ for the swap to be visible";
    }
    for (int64_t n = 0; n < c.depth; ++n) {
      const std::string p = "double_blocks." + std::to_string(n) + ".",
                        q = "transformer_blocks." + std::to_string(n) + ".";
      for (const char* leaf : {".weight", ".bias"}) {
        const auto& img = tensor(*b, p + "img_attn.qkv" + leaf);
        const auto& txt = tensor(*b, p + "txt_attn.qkv" + leaf);
        EXPECT_EQ(rows(img, 0, H), all(tensor(*f, q + "attn.to_q" + leaf)));
        EXPECT_EQ(rows(img, H, 2 * H), all(tensor(*f, q + "attn.to_k" + leaf)));
        EXPECT_EQ(rows(img, 2 * H, 3 * H), all(tensor(*f, q + "attn.to_v" + leaf)));
        EXPECT_EQ(rows(txt, 0, H), all(tensor(*f, q + "attn.add_q_proj" + leaf)));
        EXPECT_EQ(rows(txt, H, 2 * H), all(tensor(*f, q + "attn.add_k_proj" + leaf)));
        EXPECT_EQ(rows(txt, 2 * H, 3 * H), all(tensor(*f, q + "attn.add_v_proj" + leaf)));
        EXPECT_EQ(all(tensor(*b, p + "img_mod.lin" + leaf)), all(tensor(*f, q + "norm1.linear" + leaf)));
        EXPECT_EQ(all(tensor(*b, p + "txt_mlp.2" + leaf)), all(tensor(*f, q + "ff_context.net.2" + leaf)));
      }
      EXPECT_EQ(all(tensor(*b, p + "txt_attn.norm.key_norm.scale")), all(tensor(*f, q + "attn.norm_added_k.weight")));
    }
    for (int64_t n = 0; n < c.single; ++n) {
      const std::string p = "single_blocks." + std::to_string(n) + ".",
                        q = "single_transformer_blocks." + std::to_string(n) + ".";
      for (const char* leaf : {".weight", ".bias"}) {
        const auto& l1 = tensor(*b, p + "linear1" + leaf);
        EXPECT_EQ(rows(l1, 0, H), all(tensor(*f, q + "attn.to_q" + leaf)));
        EXPECT_EQ(rows(l1, H, 2 * H), all(tensor(*f, q + "attn.to_k" + leaf)));
        EXPECT_EQ(rows(l1, 2 * H, 3 * H), all(tensor(*f, q + "attn.to_v" + leaf)));
        EXPECT_EQ(rows(l1, 3 * H, 3 * H + c.mlp), all(tensor(*f, q + "proj_mlp" + leaf)));
        EXPECT_EQ(all(tensor(*b, p + "linear2" + leaf)), all(tensor(*f, q + "proj_out" + leaf)));
      }
      EXPECT_EQ(all(tensor(*b, p + "norm.query_norm.scale")), all(tensor(*f, q + "attn.norm_q.weight")));
    }
  }
  fs::remove_all(dir);
}

TEST(TinyModelsLayouts, AutoencoderBflAndDiffusersHoldTheSameNumbers) {
  const fs::path dir = test_dir();
  fx::models::write_tiny_model(params(FX_MODEL_AUTOENCODER, FX_LAYOUT_BFL, FX_DTYPE_F32, false, 1, 5),
                               (dir / "ae.safetensors").string());
  fx::models::write_tiny_model(params(FX_MODEL_AUTOENCODER, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32, false, 1, 5),
                               (dir / "vae").string());
  const auto b = fx::io::Checkpoint::open((dir / "ae.safetensors").string());
  const auto f = fx::io::Checkpoint::open((dir / "vae").string());
  const int64_t L = static_cast<int64_t>(tiny_ae().mult.size());
  // The 1x1 attention convolutions become linears with the same bytes.
  EXPECT_EQ(all(tensor(*b, "decoder.mid.attn_1.q.weight")),
            all(tensor(*f, "decoder.mid_block.attentions.0.to_q.weight")));
  EXPECT_EQ(all(tensor(*b, "encoder.mid.attn_1.proj_out.weight")),
            all(tensor(*f, "encoder.mid_block.attentions.0.to_out.0.weight")));
  EXPECT_EQ(all(tensor(*b, "decoder.mid.attn_1.norm.bias")),
            all(tensor(*f, "decoder.mid_block.attentions.0.group_norm.bias")));
  // Decoder levels reversed; shortcut renamed.
  EXPECT_EQ(all(tensor(*b, "decoder.up.0.block.0.nin_shortcut.weight")),
            all(tensor(*f, "decoder.up_blocks." + std::to_string(L - 1) + ".resnets.0.conv_shortcut.weight")));
  EXPECT_EQ(all(tensor(*b, "decoder.up.1.upsample.conv.weight")),
            all(tensor(*f, "decoder.up_blocks." + std::to_string(L - 2) + ".upsamplers.0.conv.weight")));
  EXPECT_EQ(all(tensor(*b, "encoder.down.1.block.0.nin_shortcut.bias")),
            all(tensor(*f, "encoder.down_blocks.1.resnets.0.conv_shortcut.bias")));
  EXPECT_EQ(all(tensor(*b, "encoder.norm_out.weight")), all(tensor(*f, "encoder.conv_norm_out.weight")));
  EXPECT_EQ(all(tensor(*b, "decoder.mid.block_2.conv1.weight")),
            all(tensor(*f, "decoder.mid_block.resnets.1.conv1.weight")));
  fs::remove_all(dir);
}

TEST(TinyModelsWeights, DeterministicFromSeedAndScaledByFanIn) {
  const fs::path dir = test_dir();
  auto write = [&](const std::string& name, uint64_t seed) {
    fx::models::write_tiny_model(params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, FX_DTYPE_F32, false, 1, seed),
                                 (dir / name).string());
    return fx::io::Checkpoint::open((dir / name).string());
  };
  const auto a = write("a.safetensors", 1), a2 = write("a2.safetensors", 1), b = write("b.safetensors", 2);
  for (const auto& t : a->tensors()) {
    EXPECT_EQ(all(t), all(tensor(*a2, t.name))) << t.name;
    EXPECT_NE(all(t), all(tensor(*b, t.name))) << t.name;
  }
  auto stats = [](const fx::io::Checkpoint::Tensor& t, double* mean, double* sd) {
    const float* v = reinterpret_cast<const float*>(t.data());
    const uint64_t n = t.element_count();
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < n; ++i) s += v[i], s2 += double(v[i]) * v[i];
    *mean = s / n;
    *sd = std::sqrt(s2 / n - *mean * *mean);
  };
  double mean = 0, sd = 0;
  // [256, 64]: fan-in 64 -> standard deviation about 1/8
  stats(tensor(*a, "double_blocks.0.img_mlp.0.weight"), &mean, &sd);
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(sd, 1.0 / 8.0, 0.01);
  // [64, 256]: fan-in 256 -> about 1/16
  stats(tensor(*a, "double_blocks.0.img_mlp.2.weight"), &mean, &sd);
  EXPECT_NEAR(sd, 1.0 / 16.0, 0.005);
  // QK-norm gains near 1
  stats(tensor(*a, "single_blocks.2.norm.key_norm.scale"), &mean, &sd);
  EXPECT_NEAR(mean, 1.0, 0.05);
  EXPECT_GT(sd, 0.0);
  fs::remove_all(dir);
}

TEST(TinyModelsWeights, SixteenBitFilesAreRoundedF32Values) {
  const fs::path dir = test_dir();
  for (int32_t dtype : {FX_DTYPE_BF16, FX_DTYPE_F16}) {
    const fs::path p32 = dir / "f32", p16 = dir / ("x" + std::to_string(dtype));
    fx::models::write_tiny_model(params(FX_MODEL_CLIP_TEXT, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32, false, 1, 3),
                                 p32.string());
    fx::models::write_tiny_model(params(FX_MODEL_CLIP_TEXT, FX_LAYOUT_DIFFUSERS, dtype, false, 1, 3), p16.string());
    const auto a = fx::io::Checkpoint::open(p32.string()), b = fx::io::Checkpoint::open(p16.string());
    const auto& t32 = tensor(*a, "text_model.encoder.layers.1.mlp.fc1.weight");
    const auto& t16 = tensor(*b, "text_model.encoder.layers.1.mlp.fc1.weight");
    const float* v = reinterpret_cast<const float*>(t32.data());
    const uint16_t* h = reinterpret_cast<const uint16_t*>(t16.data());
    for (uint64_t i = 0; i < t32.element_count(); ++i)
      ASSERT_EQ(h[i], dtype == FX_DTYPE_BF16 ? fx::f32_to_bf16(v[i]) : fx::f32_to_f16(v[i])) << i;
    fs::remove_all(p32);
    fs::remove_all(p16);
  }
  fs::remove_all(dir);
}

TEST(TinyModelsSizes, ParamsOverrideDefaults) {
  const fs::path dir = test_dir();
  fx_tiny_model_params p = params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, FX_DTYPE_BF16, true);
  p.hidden_size = 128;
  p.num_heads = 2;  // head dim 64
  p.depth = 1;
  p.depth_single = 4;
  fx::models::write_tiny_model(p, (dir / "f.safetensors").string());
  json d = fx::models::describe(*fx::io::Checkpoint::open((dir / "f.safetensors").string()));
  FluxCfg f{128, 2, 64, 64, 32, 32, 512, 1, 4, true};
  expect_flux_config(d["config"], f);
  EXPECT_EQ(d["config"]["axes_dim"], json::array({8, 28, 28}));
  EXPECT_EQ(d["parameter_count"], flux_params(f));
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);

  p = params(FX_MODEL_T5_ENCODER, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32);
  p.hidden_size = 48;
  p.num_heads = 3;
  p.depth = 3;
  fx::models::write_tiny_model(p, (dir / "t5").string());
  d = fx::models::describe(*fx::io::Checkpoint::open((dir / "t5").string()));
  T5Cfg t{48, 96, 16, 3, 3, 32128, 32};
  expect_t5_config(d["config"], t);
  EXPECT_EQ(d["parameter_count"], t5_params(t));
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);

  p = params(FX_MODEL_AUTOENCODER, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F16);
  p.hidden_size = 64;
  fx::models::write_tiny_model(p, (dir / "vae").string());
  d = fx::models::describe(*fx::io::Checkpoint::open((dir / "vae").string()));
  AeCfg a{64, {1, 2}, 1, 16};
  expect_ae_config(d["config"], a);
  EXPECT_EQ(d["parameter_count"], ae_params(a));
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);
  fs::remove_all(dir);
}

TEST(TinyModelsSizes, InvalidParamsAreRejected) {
  const fs::path dir = test_dir();
  const std::string out = (dir / "x").string();
  auto st = [&](fx_tiny_model_params p) { return status_of([&] { fx::models::write_tiny_model(p, out); }); };
  fx_tiny_model_params p = params(FX_MODEL_T5_ENCODER, FX_LAYOUT_BFL, FX_DTYPE_F32);
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);  // T5 only as an HF folder
  p = params(FX_MODEL_CLIP_TEXT, FX_LAYOUT_BFL, FX_DTYPE_F32);
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p = params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, FX_DTYPE_F8_E4M3FN);
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p = params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, FX_DTYPE_F32, true, 3);  // BFL is one file
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p = params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, FX_DTYPE_F32);
  p.hidden_size = 65;  // not divisible by 2 heads
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p.hidden_size = 66;  // head dim 33: odd
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p.hidden_size = 8;  // head dim 4: too small for three even RoPE axes
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p.hidden_size = -64;
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p = params(FX_MODEL_AUTOENCODER, FX_LAYOUT_BFL, FX_DTYPE_F32);
  p.hidden_size = 48;  // GroupNorm(32) needs multiples of 32
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p = params(FX_MODEL_T5_ENCODER, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32);
  p.num_heads = 5;  // 32 not divisible by 5
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p = params(FX_MODEL_UNKNOWN, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32);
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  p = params(FX_MODEL_CLIP_TEXT, 7, FX_DTYPE_F32);
  EXPECT_EQ(st(p), FX_ERR_INVALID_ARGUMENT);
  EXPECT_FALSE(fs::exists(out));
  // The message names what is wrong.
  try {
    fx_tiny_model_params q = params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, FX_DTYPE_F32);
    q.hidden_size = 65;
    fx::models::write_tiny_model(q, out);
    ADD_FAILURE() << "no error";
  } catch (const fx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_heads"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(TinyModelsSizes, RefusesFoldersWithOtherWeights) {
  const fs::path dir = test_dir();
  fx::models::write_tiny_model(params(FX_MODEL_CLIP_TEXT, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32, false, 3),
                               (dir / "c").string());
  // Rewriting as one file would leave the old index and shards beside it.
  EXPECT_EQ(status_of([&] {
              fx::models::write_tiny_model(params(FX_MODEL_CLIP_TEXT, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32, false, 1),
                                           (dir / "c").string());
            }),
            FX_ERR_INVALID_ARGUMENT);
  // The same shape again is fine (files are replaced).
  EXPECT_EQ(status_of([&] {
              fx::models::write_tiny_model(params(FX_MODEL_CLIP_TEXT, FX_LAYOUT_DIFFUSERS, FX_DTYPE_F32, false, 3, 9),
                                           (dir / "c").string());
            }),
            FX_OK);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------------
// File-level negatives: a tiny BFL file copied with one change.

void copy_with(const fx::io::Checkpoint& src, const fs::path& dst,
               const std::function<void(std::vector<fx::io::TensorToWrite>&)>& edit,
               const std::map<std::string, std::string>& metadata) {
  std::vector<fx::io::TensorToWrite> ts;
  for (const auto& t : src.tensors()) ts.push_back({t.name, t.dtype, t.shape, t.data(), t.byte_size});
  edit(ts);
  fx::io::write_safetensors(dst.string(), ts, metadata);
}

TEST(RecognizeFiles, EditedTinyFilesListTheirProblems) {
  const fs::path dir = test_dir();
  fx::models::write_tiny_model(params(FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, FX_DTYPE_F32, true),
                               (dir / "ok.safetensors").string());
  const auto ok = fx::io::Checkpoint::open((dir / "ok.safetensors").string());
  const auto& md = ok->metadata();
  ASSERT_TRUE(md.count("axes_dim"));
  const std::string victim = "double_blocks.1.txt_mlp.0.bias";

  copy_with(
      *ok, dir / "removed.safetensors",
      [&](auto& ts) {
        ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const auto& t) { return t.name == victim; }), ts.end());
      },
      md);
  json d = fx::models::describe(*fx::io::Checkpoint::open((dir / "removed.safetensors").string()));
  EXPECT_EQ(d["kind"], "flux_transformer");
  EXPECT_EQ(d["checks"]["missing"], json::array({victim + " [256]"}));
  EXPECT_TRUE(mentions(d["problems"], "missing tensor: " + victim)) << joined(d["problems"]);

  copy_with(
      *ok, dir / "renamed.safetensors",
      [&](auto& ts) {
        for (auto& t : ts)
          if (t.name == victim) t.name = "double_blocks.1.txt_mlp.1.bias";
      },
      md);
  d = fx::models::describe(*fx::io::Checkpoint::open((dir / "renamed.safetensors").string()));
  EXPECT_TRUE(mentions(d["problems"], "missing tensor: " + victim)) << joined(d["problems"]);
  EXPECT_TRUE(mentions(d["problems"], "unexpected tensor: double_blocks.1.txt_mlp.1.bias")) << joined(d["problems"]);

  copy_with(
      *ok, dir / "reshaped.safetensors",
      [&](auto& ts) {
        for (auto& t : ts)
          if (t.name == victim) t.shape = {16, 16};  // same bytes, wrong shape
      },
      md);
  d = fx::models::describe(*fx::io::Checkpoint::open((dir / "reshaped.safetensors").string()));
  EXPECT_TRUE(mentions(d["problems"], "shape mismatch: " + victim + " is [16, 16], expected [256]"))
      << joined(d["problems"]);

  copy_with(
      *ok, dir / "prefixed.safetensors",
      [&](auto& ts) {
        for (auto& t : ts) t.name = "model.diffusion_model." + t.name;
      },
      md);
  d = fx::models::describe(*fx::io::Checkpoint::open((dir / "prefixed.safetensors").string()));
  EXPECT_EQ(d["kind"], "flux_transformer");
  EXPECT_EQ(d["layout"], "bfl");
  EXPECT_EQ(d["key_prefix"], "model.diffusion_model.");
  expect_flux_config(d["config"], tiny_flux(true));
  EXPECT_TRUE(d["problems"].empty()) << joined(d["problems"]);

  const std::vector<float> junk(6, 1.0f);
  fx::io::write_safetensors((dir / "junk.safetensors").string(),
                            {{"foo.weight", fx::DType::F32, {2, 3}, junk.data(), 24}});
  d = fx::models::describe(*fx::io::Checkpoint::open((dir / "junk.safetensors").string()));
  EXPECT_EQ(d["kind"], "unknown");
  EXPECT_EQ(d["layout"], "unknown");
  EXPECT_FALSE(d["problems"].empty());
  fs::remove_all(dir);
}

}  // namespace
