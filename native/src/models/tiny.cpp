// Tiny random models. The tensor lists come from expected_tensors() (the same docs/flux-model.md §8 tables the
// recognizer checks against); diffusers files are derived from the BFL tensors by bfl_to_diffusers()
// so that, for one seed, both layouts hold the same model bit for bit.
#include "models/tiny.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/recognize.h"

namespace fx::models {
namespace {

using json = nlohmann::json;
using Shape = std::vector<int64_t>;
namespace fs = std::filesystem;

// The writer holds the whole model in memory before writing it, so a model must fit in a share of the
// machine's memory (the rest is the process and the page cache the write goes through).
uint64_t max_model_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return 16ull << 30;
  return static_cast<uint64_t>(pages) / 4 * 3 * static_cast<uint64_t>(page);
}

struct Generated {
  std::string name;
  Shape shape;
  std::vector<uint8_t> bytes;
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Roughly N(0, 1) from one 64-bit draw: the sum of four 16-bit uniforms (Irwin-Hall), scaled to unit
// variance. Unlike Box-Muller it needs no libm call, so every platform produces the same bits.
double unit_normal(uint64_t r) {
  double s = 0.0;
  for (int k = 0; k < 4; ++k) s += (static_cast<double>((r >> (16 * k)) & 0xFFFF) + 0.5) / 65536.0 - 0.5;
  return s * 1.7320508075688772;  // sqrt(3): each uniform has variance 1/12
}

uint64_t elements(const Shape& s) {
  uint64_t n = 1;
  for (int64_t d : s) n *= static_cast<uint64_t>(d);
  return n;
}

bool ends_with(std::string_view s, std::string_view x) {
  return s.size() >= x.size() && s.substr(s.size() - x.size()) == x;
}

// Scale of the random values: linear/conv weights ~ N(0, 1/fan_in) so activations stay O(1) through
// the layers; lookup tables ~ N(0, 1) (their rows are used as they are); norm gains near 1; biases
// small.
void init_for(const std::string& name, const Shape& shape, double* mean, double* stddev) {
  if (shape.size() >= 2) {
    const bool table = name.find("embedding") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
                       name == "shared.weight" || name.find("relative_attention_bias") != std::string::npos;
    uint64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= static_cast<uint64_t>(shape[i]);
    *mean = 0.0;
    *stddev = table ? 1.0 : 1.0 / std::sqrt(static_cast<double>(fan_in));
    return;
  }
  // Every rank-1 ".weight" / ".scale" in these models is a norm gain (linear weights are rank 2).
  const bool gain = ends_with(name, ".scale") || ends_with(name, ".weight");
  *mean = gain ? 1.0 : 0.0;
  *stddev = 0.05;
}

size_t element_size(DType dtype) { return dtype == DType::F32 ? 4 : 2; }

Generated generate(const TensorShape& t, DType dtype, uint64_t seed) {
  for (int64_t d : t.shape)
    if (d < 0) fail(FX_ERR_INTERNAL, "tiny model: unresolved dimension in " + t.name);
  double mean = 0.0, stddev = 1.0;
  init_for(t.name, t.shape, &mean, &stddev);
  // Keyed by name, not position, so a tensor's values do not depend on what else the model holds.
  const uint64_t key = splitmix64(seed ^ splitmix64(fnv1a(t.name)));
  const uint64_t n = elements(t.shape);
  Generated g{t.name, t.shape, std::vector<uint8_t>(n * element_size(dtype))};
  uint8_t* out = g.bytes.data();
  auto fill = [&](uint64_t begin, uint64_t end) {
    for (uint64_t i = begin; i < end; ++i) {
      const float v = static_cast<float>(mean + stddev * unit_normal(splitmix64(key + i)));
      if (dtype == DType::F32) {
        std::memcpy(out + 4 * i, &v, 4);
      } else {
        const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(out + 2 * i, &h, 2);
      }
    }
  };
  // Element i depends only on (seed, name, i), so splitting the range cannot change the values; it
  // keeps the real-width benchmark model (hundreds of millions of weights) quick to make.
  const unsigned hw = std::thread::hardware_concurrency();
  const uint64_t workers = n < (1u << 20) || hw < 2 ? 1 : std::min<uint64_t>(hw, 16);
  if (workers == 1) {
    fill(0, n);
  } else {
    std::vector<std::thread> threads;
    for (uint64_t w = 0; w < workers; ++w) threads.emplace_back(fill, n * w / workers, n * (w + 1) / workers);
    for (std::thread& th : threads) th.join();
  }
  return g;
}

// Applies a BFL -> diffusers derivation to the bytes: row ranges of dimension 0, concatenated.
Generated derive(const Generated& src, const DerivedTensor& d) {
  const uint64_t rows = src.shape.empty() ? 1 : static_cast<uint64_t>(src.shape[0]);
  const uint64_t row_bytes = rows ? src.bytes.size() / rows : 0;
  Generated g{d.name, d.shape, {}};
  g.bytes.reserve(elements(d.shape) * (src.bytes.size() / std::max<uint64_t>(1, elements(src.shape))));
  for (const auto& [b, e] : d.rows) {
    if (b < 0 || e < b || static_cast<uint64_t>(e) > rows)
      fail(FX_ERR_INTERNAL, "tiny model: bad row range for " + d.name);
    g.bytes.insert(g.bytes.end(), src.bytes.begin() + b * row_bytes, src.bytes.begin() + e * row_bytes);
  }
  if (g.bytes.size() != elements(d.shape) * (src.bytes.size() / std::max<uint64_t>(1, elements(src.shape))))
    fail(FX_ERR_INTERNAL, "tiny model: derived tensor " + d.name + " does not match its shape");
  return g;
}

void write_text(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail(FX_ERR_IO, "cannot create " + tmp.string());
    f << text;
    f.close();
    if (!f) fail(FX_ERR_IO, "cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail(FX_ERR_IO, "cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
}

std::vector<io::TensorToWrite> views(const std::vector<const Generated*>& ts, DType dtype) {
  std::vector<io::TensorToWrite> out;
  out.reserve(ts.size());
  for (const Generated* g : ts) out.push_back({g->name, dtype, g->shape, g->bytes.data(), g->bytes.size()});
  return out;
}

// HF naming: "<stem>.safetensors", or "<stem>-0000i-of-0000N.safetensors" plus "<stem>.safetensors.index.json".
void write_folder(const fs::path& dir, const std::string& stem, const std::vector<Generated>& tensors, int shards,
                  DType dtype, const std::map<std::string, std::string>& metadata, const json& config) {
  std::vector<std::string> files;
  if (shards == 1) {
    files.push_back(stem + ".safetensors");
  } else {
    for (int i = 1; i <= shards; ++i) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "-%05d-of-%05d.safetensors", i, shards);
      files.push_back(stem + buf);
    }
  }
  const std::string index_name = stem + ".safetensors.index.json";

  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    fail(FX_ERR_INVALID_ARGUMENT, "tiny model: " + dir.string() + " exists and is not a folder");
  fs::create_directories(dir, ec);
  if (ec) fail(FX_ERR_IO, "cannot create folder " + dir.string() + ": " + ec.message());
  // A leftover weight file or index from another write would make the folder ambiguous to readers;
  // we refuse rather than delete files we did not create.
  const std::set<std::string> ours(files.begin(), files.end());
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool weights = ends_with(name, ".safetensors") || ends_with(name, ".safetensors.index.json");
    if (weights && !ours.count(name) && !(shards > 1 && name == index_name))
      fail(FX_ERR_INVALID_ARGUMENT,
           "tiny model: folder " + dir.string() + " already holds " + name + "; write into an empty folder");
  }

  uint64_t total = 0;
  for (const Generated& g : tensors) total += g.bytes.size();
  // Consecutive tensors fill shards up to an equal share of the bytes; every shard gets at least one.
  std::vector<std::vector<const Generated*>> parts(static_cast<size_t>(shards));
  json weight_map = json::object();
  uint64_t cum = 0;
  size_t s = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    parts[s].push_back(&tensors[i]);
    weight_map[tensors[i].name] = files[s];
    cum += tensors[i].bytes.size();
    const size_t left = tensors.size() - i - 1, shards_left = static_cast<size_t>(shards) - 1 - s;
    if (shards_left > 0 && (cum * static_cast<uint64_t>(shards) >= total * (s + 1) || left == shards_left)) ++s;
  }
  for (size_t i = 0; i < parts.size(); ++i)
    io::write_safetensors((dir / files[i]).string(), views(parts[i], dtype), metadata);
  if (shards > 1) {
    json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    write_text(dir / index_name, index.dump(2) + "\n");
  }
  write_text(dir / "config.json", config.dump(2) + "\n");
}

void write_single(const fs::path& path, const std::vector<Generated>& tensors, DType dtype,
                  const std::map<std::string, std::string>& metadata) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    fail(FX_ERR_INVALID_ARGUMENT, "tiny model: BFL layout writes a file, but " + path.string() + " is a folder");
  if (path.has_parent_path()) {
    fs::create_directories(path.parent_path(), ec);
    if (ec) fail(FX_ERR_IO, "cannot create folder " + path.parent_path().string() + ": " + ec.message());
  }
  std::vector<const Generated*> ptrs;
  for (const Generated& g : tensors) ptrs.push_back(&g);
  io::write_safetensors(path.string(), views(ptrs, dtype), metadata);
}

const char* torch_dtype(DType d) { return d == DType::F32 ? "float32" : d == DType::F16 ? "float16" : "bfloat16"; }

int32_t or_default(int32_t v, int32_t def) { return v == 0 ? def : v; }

void require(bool ok, const std::string& message) {
  if (!ok) fail(FX_ERR_INVALID_ARGUMENT, "tiny model: " + message);
}

// RoPE axes in the published proportions (16, 56, 56 of 128): about an eighth for the index axis,
// the rest split between the row and column axes; every axis even because RoPE rotates pairs.
json rope_axes(int64_t head_dim) {
  const int64_t a0 = 2 * std::max<int64_t>(1, head_dim / 16);
  const int64_t rest = head_dim - a0;
  const int64_t a1 = 2 * ((rest + 3) / 4);
  return json::array({a0, a1, rest - a1});
}

struct Plan {
  std::string kind;  // recognizer kind name
  json config;       // recognizer-format config (input of expected_tensors)
  json config_json;  // the config.json a diffusers / HF folder carries
  std::string stem;  // weight file stem in a folder
  std::map<std::string, std::string> metadata{{"format", "pt"}};
};

bool published(const fx_tiny_model_params& p) { return p.shapes == FX_SHAPES_PUBLISHED; }

Plan plan_flux(const fx_tiny_model_params& p) {
  const bool pub = published(p);
  const int64_t H = or_default(p.hidden_size, pub ? 3072 : 64), heads = or_default(p.num_heads, pub ? 24 : 2);
  const int64_t depth = or_default(p.depth, pub ? 19 : 2), depth_single = or_default(p.depth_single, pub ? 38 : 3);
  require(H > 0 && H <= 32768, "hidden_size must be in 1..32768 (got " + std::to_string(H) + ")");
  require(heads > 0, "num_heads must be positive (got " + std::to_string(heads) + ")");
  require(H % heads == 0,
          "hidden_size " + std::to_string(H) + " is not divisible by num_heads " + std::to_string(heads));
  const int64_t hd = H / heads;
  require(hd % 2 == 0 && hd >= 6,
          "head dim (hidden_size / num_heads) must be even and at least 6, for three even RoPE axes (got " +
              std::to_string(hd) + ")");
  require(depth <= 1024 && depth_single <= 1024, "depth and depth_single must be at most 1024");
  const json axes = pub ? json::array({16, 56, 56}) : rope_axes(hd);
  int64_t sum = 0;
  for (const json& a : axes) sum += a.get<int64_t>();
  require(sum == hd, "RoPE axes " + axes.dump() + " do not sum to the head dim " + std::to_string(hd));

  // Tiny: the widths of the tiny T5 and CLIP, so the tiny models plug together; published: T5-XXL's 4096 and
  // CLIP-L's 768. The sinusoidal timestep embedding is 256 wide whatever the model size (docs/flux-model.md §5.1).
  const int64_t in = 64, ctx = pub ? 4096 : 32, vec = pub ? 768 : 32, tdim = 256, mlp = 4 * H;
  Plan plan;
  plan.kind = "flux_transformer";
  plan.config = {{"hidden_size", H},
                 {"num_heads", heads},
                 {"head_dim", hd},
                 {"in_channels", in},
                 {"out_channels", in},
                 {"context_in_dim", ctx},
                 {"vec_in_dim", vec},
                 {"time_embed_dim", tdim},
                 {"mlp_hidden", mlp},
                 {"depth", depth},
                 {"depth_single", depth_single},
                 {"guidance_embed", p.guidance != 0},
                 {"qkv_bias", true},
                 {"axes_dim", axes}};
  plan.config_json = {{"_class_name", "FluxTransformer2DModel"},
                      {"attention_head_dim", hd},
                      {"axes_dims_rope", axes},
                      {"guidance_embeds", p.guidance != 0},
                      {"in_channels", in},
                      {"joint_attention_dim", ctx},
                      {"num_attention_heads", heads},
                      {"num_layers", depth},
                      {"num_single_layers", depth_single},
                      {"patch_size", 1},
                      {"pooled_projection_dim", vec}};
  plan.stem = "diffusion_pytorch_model";
  // BFL single files carry no config.json, so the RoPE axes (not visible in any tensor) travel in the
  // safetensors metadata, where the recognizer looks for them.
  plan.metadata["axes_dim"] = axes.dump();
  return plan;
}

Plan plan_ae(const fx_tiny_model_params& p) {
  const bool pub = published(p);
  const int64_t ch = or_default(p.hidden_size, pub ? 128 : 32);
  require(ch > 0 && ch <= 4096,
          "autoencoder base width (hidden_size) must be in 1..4096 (got " + std::to_string(ch) + ")");
  require(ch % 32 == 0,
          "autoencoder base width (hidden_size) must be a multiple of 32: GroupNorm uses 32 groups (got " +
              std::to_string(ch) + ")");
  // depth = resolution levels (the published model has 4: ch_mult [1, 2, 4, 4]); depth_single =
  // num_res_blocks (published: 2). The tiny default is 2 levels of 1 block: ch_mult [1, 2].
  const int64_t levels = or_default(p.depth, pub ? 4 : 2), nrb = or_default(p.depth_single, pub ? 2 : 1), z = 16;
  require(levels <= 6 && nrb <= 4, "autoencoder levels (depth) must be at most 6 and num_res_blocks (depth_single) at most 4");
  json mult = json::array();
  for (int64_t i = 0; i < levels; ++i) mult.push_back(i == 0 ? 1 : (i == 1 ? 2 : 4));
  Plan plan;
  plan.kind = "autoencoder";
  plan.config = {{"ch", ch},
                 {"ch_mult", mult},
                 {"num_res_blocks", nrb},
                 {"z_channels", z},
                 {"in_channels", 3},
                 {"out_channels", 3},
                 {"has_encoder", true},
                 {"has_decoder", true},
                 {"mid_attention", true},
                 {"use_quant_conv", false},
                 {"use_post_quant_conv", false}};
  json widths = json::array(), down = json::array(), up = json::array();
  for (const json& m : mult) {
    widths.push_back(ch * m.get<int64_t>());
    down.push_back("DownEncoderBlock2D");
    up.push_back("UpDecoderBlock2D");
  }
  plan.config_json = {{"_class_name", "AutoencoderKL"},
                      {"act_fn", "silu"},
                      {"block_out_channels", widths},
                      {"down_block_types", down},
                      {"force_upcast", true},
                      {"in_channels", 3},
                      {"latent_channels", z},
                      {"latents_mean", nullptr},
                      {"latents_std", nullptr},
                      {"layers_per_block", nrb},
                      {"mid_block_add_attention", true},
                      {"norm_num_groups", 32},
                      {"out_channels", 3},
                      {"sample_size", 1024},
                      {"scaling_factor", 0.3611},
                      {"shift_factor", 0.1159},
                      {"up_block_types", up},
                      {"use_post_quant_conv", false},
                      {"use_quant_conv", false}};
  plan.stem = "diffusion_pytorch_model";
  return plan;
}

Plan plan_t5(const fx_tiny_model_params& p, DType dtype) {
  const bool pub = published(p);
  const int64_t d = or_default(p.hidden_size, pub ? 4096 : 32), heads = or_default(p.num_heads, pub ? 64 : 4);
  const int64_t layers = or_default(p.depth, pub ? 24 : 2);
  require(d > 0 && d <= 16384, "T5 d_model (hidden_size) must be in 1..16384 (got " + std::to_string(d) + ")");
  require(heads > 0 && d % heads == 0,
          "T5 d_model " + std::to_string(d) + " is not divisible by num_heads " + std::to_string(heads));
  require(layers <= 1024, "T5 num_layers (depth) must be at most 1024");
  // The real SentencePiece vocabulary, so ids from the real tokenizer index the tiny embedding.
  const int64_t dkv = d / heads, dff = pub ? 10240 : 2 * d, vocab = 32128, buckets = 32;
  Plan plan;
  plan.kind = "t5_encoder";
  plan.config = {{"d_model", d},
                 {"d_ff", dff},
                 {"d_kv", dkv},
                 {"num_heads", heads},
                 {"num_layers", layers},
                 {"vocab_size", vocab},
                 {"relative_attention_num_buckets", buckets},
                 {"gated", true}};
  plan.config_json = {{"architectures", {"T5EncoderModel"}},
                      {"d_ff", dff},
                      {"d_kv", dkv},
                      {"d_model", d},
                      {"decoder_start_token_id", 0},
                      {"dense_act_fn", "gelu_new"},
                      {"dropout_rate", 0.1},
                      {"eos_token_id", 1},
                      {"feed_forward_proj", "gated-gelu"},
                      {"initializer_factor", 1.0},
                      {"is_encoder_decoder", true},
                      {"is_gated_act", true},
                      {"layer_norm_epsilon", 1e-6},
                      {"model_type", "t5"},
                      {"num_decoder_layers", layers},
                      {"num_heads", heads},
                      {"num_layers", layers},
                      {"pad_token_id", 0},
                      {"relative_attention_max_distance", 128},
                      {"relative_attention_num_buckets", buckets},
                      {"tie_word_embeddings", false},
                      {"torch_dtype", torch_dtype(dtype)},
                      {"vocab_size", vocab}};
  plan.stem = "model";
  return plan;
}

Plan plan_clip(const fx_tiny_model_params& p, DType dtype) {
  const bool pub = published(p);
  const int64_t h = or_default(p.hidden_size, pub ? 768 : 32), heads = or_default(p.num_heads, pub ? 12 : 2);
  const int64_t layers = or_default(p.depth, pub ? 12 : 2);
  require(h > 0 && h <= 16384, "CLIP hidden_size must be in 1..16384 (got " + std::to_string(h) + ")");
  require(heads > 0 && h % heads == 0,
          "CLIP hidden_size " + std::to_string(h) + " is not divisible by num_heads " + std::to_string(heads));
  require(layers <= 1024, "CLIP num_layers (depth) must be at most 1024");
  // The real BPE vocabulary and context length, so real token ids and 77-token prompts fit.
  const int64_t inter = pub ? 3072 : 2 * h, vocab = 49408, positions = 77;
  Plan plan;
  plan.kind = "clip_text";
  plan.config = {{"hidden_size", h},   {"intermediate_size", inter}, {"num_layers", layers},
                 {"num_heads", heads}, {"vocab_size", vocab},        {"max_position_embeddings", positions}};
  plan.config_json = {{"architectures", {"CLIPTextModel"}},
                      {"attention_dropout", 0.0},
                      {"bos_token_id", 0},
                      {"dropout", 0.0},
                      {"eos_token_id", 2},
                      {"hidden_act", "quick_gelu"},
                      {"hidden_size", h},
                      {"initializer_factor", 1.0},
                      {"initializer_range", 0.02},
                      {"intermediate_size", inter},
                      {"layer_norm_eps", 1e-5},
                      {"max_position_embeddings", positions},
                      {"model_type", "clip_text_model"},
                      {"num_attention_heads", heads},
                      {"num_hidden_layers", layers},
                      {"pad_token_id", 1},
                      {"projection_dim", h},
                      {"torch_dtype", torch_dtype(dtype)},
                      {"vocab_size", vocab}};
  plan.stem = "model";
  return plan;
}

}  // namespace

void write_tiny_model(const fx_tiny_model_params& p, const std::string& path) {
  require(!path.empty(), "path is empty");
  require(p.dtype == FX_DTYPE_F32 || p.dtype == FX_DTYPE_F16 || p.dtype == FX_DTYPE_BF16,
          "dtype must be FX_DTYPE_F32, F16 or BF16 (got " + std::to_string(p.dtype) + ")");
  const DType dtype = static_cast<DType>(p.dtype);
  require(p.layout == FX_LAYOUT_BFL || p.layout == FX_LAYOUT_DIFFUSERS,
          "layout must be FX_LAYOUT_BFL or FX_LAYOUT_DIFFUSERS (got " + std::to_string(p.layout) + ")");
  require(p.hidden_size >= 0 && p.num_heads >= 0 && p.depth >= 0 && p.depth_single >= 0,
          "hidden_size, num_heads, depth and depth_single must not be negative (0 means the default)");
  require(p.shards >= 0, "shards must not be negative (got " + std::to_string(p.shards) + ")");
  require(p.shapes == FX_SHAPES_TINY || p.shapes == FX_SHAPES_PUBLISHED,
          "shapes must be FX_SHAPES_TINY or FX_SHAPES_PUBLISHED (got " + std::to_string(p.shapes) + ")");
  require(p.shapes != FX_SHAPES_PUBLISHED || (p.hidden_size == 0 && p.num_heads == 0),
          "the published shapes fix the width: hidden_size and num_heads must be 0 (depth and depth_single may cut the depth)");
  const int shards = p.shards == 0 ? 1 : p.shards;
  const bool bfl = p.layout == FX_LAYOUT_BFL;
  require(!bfl || shards == 1, "the BFL layout is one file; shards > 1 needs FX_LAYOUT_DIFFUSERS");

  Plan plan;
  switch (p.kind) {
    case FX_MODEL_FLUX_TRANSFORMER:
      plan = plan_flux(p);
      break;
    case FX_MODEL_AUTOENCODER:
      plan = plan_ae(p);
      break;
    case FX_MODEL_T5_ENCODER:
      require(!bfl, "the T5 encoder exists only as a Hugging Face folder (text_encoder_2/): use FX_LAYOUT_DIFFUSERS");
      plan = plan_t5(p, dtype);
      break;
    case FX_MODEL_CLIP_TEXT:
      require(!bfl,
              "the CLIP text encoder exists only as a Hugging Face folder (text_encoder/): use FX_LAYOUT_DIFFUSERS");
      plan = plan_clip(p, dtype);
      break;
    default:
      fail(FX_ERR_INVALID_ARGUMENT, "tiny model: unknown kind " + std::to_string(p.kind));
  }

  // T5 and CLIP are generated in their only (HF) layout; flux and the autoencoder in BFL layout first.
  const bool hf_only = plan.kind == "t5_encoder" || plan.kind == "clip_text";
  const std::vector<TensorShape> source = expected_tensors(plan.kind, hf_only ? "hf" : "bfl", plan.config);
  uint64_t bytes = 0;
  for (const TensorShape& t : source) bytes += elements(t.shape) * element_size(dtype);
  const uint64_t limit = max_model_bytes();
  require(bytes <= limit, "the model would take " + std::to_string(bytes) + " bytes, and the writer holds it in memory: more than " +
                              std::to_string(limit) + " (three quarters of this machine's memory); write a shallower model (depth, depth_single; flux bench --depth, --depth-single)");

  std::vector<Generated> tensors;
  if (bfl || hf_only) {
    for (const TensorShape& t : source) tensors.push_back(generate(t, dtype, p.seed));
  } else {
    // Generate each BFL tensor and keep only its diffusers pieces, so peak memory is one model.
    for (const TensorShape& t : source) {
      const Generated g = generate(t, dtype, p.seed);
      for (const DerivedTensor& d : bfl_to_diffusers(plan.kind, t, plan.config)) tensors.push_back(derive(g, d));
    }
  }
  require(static_cast<size_t>(shards) <= tensors.size(),
          "shards (" + std::to_string(shards) + ") exceeds the tensor count (" + std::to_string(tensors.size()) + ")");

  if (bfl)
    write_single(path, tensors, dtype, plan.metadata);
  else
    write_folder(path, plan.stem, tensors, shards, dtype, plan.metadata, plan.config_json);
}

}  // namespace fx::models
