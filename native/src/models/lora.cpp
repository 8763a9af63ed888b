#include "models/lora.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string_view>

#include "core/block_quant.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "models/recognize.h"

namespace fx::models {
namespace {

// Where a module of a LoRA file lands: a BFL weight and the rows of it that the update's rows become.
struct Target {
  std::string weight;
  std::vector<std::pair<int64_t, int64_t>> rows;
};

// What a tensor of a LoRA file is, by its name's ending.
enum class Role { Down, Up, Alpha };

struct Suffix {
  std::string_view text;
  Role role;
};

// Longer endings first: ".lora_A.default.weight" before ".weight"-like ones it contains.
constexpr std::array<Suffix, 11> kSuffixes = {{
    {".lora_A.default.weight", Role::Down},
    {".lora_B.default.weight", Role::Up},
    {".lora_down.weight", Role::Down},
    {".lora_up.weight", Role::Up},
    {".lora.down.weight", Role::Down},
    {".lora.up.weight", Role::Up},
    {".lora_A.weight", Role::Down},
    {".lora_B.weight", Role::Up},
    {".down.weight", Role::Down},
    {".up.weight", Role::Up},
    {".alpha", Role::Alpha},
}};

// Prefixes wrapped around the transformer's module names by trainers and converters.
constexpr std::array<std::string_view, 5> kModelPrefixes = {
    "base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "unet.",
};
// kohya writes module paths with '_' for '.', after one of these.
constexpr std::array<std::string_view, 2> kKohyaPrefixes = {"lora_unet_", "lora_transformer_"};
// Text-encoder parts (CLIP: te1 / text_encoder, T5: te2 / text_encoder_2).
constexpr std::array<std::string_view, 5> kTextPrefixes = {
    "lora_te1_", "lora_te2_", "lora_te_", "text_encoder.", "text_encoder_2.",
};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

std::string underscored(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

// The key a kohya name is looked up by: '#' (which no dotted name has, so the two spellings never meet)
// and the module path with '_' for '.'.
std::string kohya_key(const std::string& module, bool dotted = true) {
  std::string key(1, '#');
  key.append(dotted ? underscored(module) : module);
  return key;
}

std::string list_some(const std::vector<std::string>& names) {
  std::string text;
  for (size_t i = 0; i < names.size() && i < 5; ++i) text += (i ? ", " : "") + names[i];
  if (names.size() > 5) text += ", ... (" + std::to_string(names.size()) + " in all)";
  return text;
}

// Every name a module of the FLUX transformer goes by in the four formats, → its target.
std::map<std::string, Target> flux_targets(const nlohmann::json& config) {
  std::map<std::string, Target> targets;
  for (const TensorShape& t : expected_tensors("flux_transformer", "bfl", config)) {
    if (t.shape.size() != 2 || !ends_with(t.name, ".weight")) continue;  // linear weights only
    const std::string module = t.name.substr(0, t.name.size() - 7);
    const Target whole{t.name, {{0, t.shape[0]}}};
    targets[module] = whole;                // BFL / ComfyUI
    targets[kohya_key(module)] = whole;     // kohya
    for (const DerivedTensor& piece : bfl_to_diffusers("flux_transformer", t, config)) {
      if (!ends_with(piece.name, ".weight")) continue;
      const std::string diffusers = piece.name.substr(0, piece.name.size() - 7);
      targets[diffusers] = Target{t.name, piece.rows};
      targets[kohya_key(diffusers)] = Target{t.name, piece.rows};
    }
  }
  // XLabs' double-block processors: lora1 on the image stream, lora2 on the text stream.
  const int64_t depth = config.value("depth", int64_t{0});
  for (int64_t i = 0; i < depth; ++i) {
    const std::string block = "double_blocks." + std::to_string(i) + ".";
    for (const auto& [xlabs, bfl] : std::vector<std::pair<std::string, std::string>>{
             {"qkv_lora1", "img_attn.qkv"}, {"qkv_lora2", "txt_attn.qkv"},
             {"proj_lora1", "img_attn.proj"}, {"proj_lora2", "txt_attn.proj"}}) {
      const auto found = targets.find(block + bfl);
      if (found != targets.end()) targets[block + "processor." + xlabs] = found->second;
    }
  }
  return targets;
}

// The target of `module` (a name from the file, its role suffix removed), or nullptr.
const Target* find_target(const std::map<std::string, Target>& targets, std::string module) {
  for (std::string_view kohya : kKohyaPrefixes) {
    if (starts_with(module, kohya)) {
      const auto found = targets.find(kohya_key(module.substr(kohya.size()), false));
      return found == targets.end() ? nullptr : &found->second;
    }
  }
  for (bool stripped = true; stripped;) {
    stripped = false;
    for (std::string_view prefix : kModelPrefixes) {
      if (starts_with(module, prefix)) {
        module = module.substr(prefix.size());
        stripped = true;
      }
    }
  }
  const auto found = targets.find(module);
  return found == targets.end() ? nullptr : &found->second;
}

std::vector<float> as_f32(const io::Checkpoint::Tensor& t) {
  std::vector<float> values(static_cast<size_t>(t.element_count()));
  if (t.block)  // a GGUF LoRA's block-quantised tensor: its decoded values
    dequantize_blocks(*t.block, t.data(), static_cast<int64_t>(values.size()), values.data());
  else
    convert(t.dtype, t.data(), DType::F32, values.data(), values.size(), Overflow::Ieee);
  return values;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

struct Module {
  const io::Checkpoint::Tensor* down = nullptr;
  const io::Checkpoint::Tensor* up = nullptr;
  const io::Checkpoint::Tensor* alpha = nullptr;
};

}  // namespace

LoraMerge LoraMerge::for_flux(const std::vector<LoraFile>& files, const nlohmann::json& config) {
  LoraMerge merge;
  if (files.empty()) return merge;
  const std::map<std::string, Target> targets = flux_targets(config);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorShape& t : expected_tensors("flux_transformer", "bfl", config)) shapes[t.name] = t.shape;
  for (const LoraFile& file : files) {
    if (file.checkpoint == nullptr) fail(FX_ERR_INVALID_ARGUMENT, "a LoRA checkpoint is NULL");
    if (!std::isfinite(file.strength))
      fail(FX_ERR_INVALID_ARGUMENT, file.checkpoint->path() + ": the LoRA strength is not a finite number");
    const std::string& path = file.checkpoint->path();

    // Group the file's tensors by module; anything that is not a LoRA tensor is named.
    std::map<std::string, Module> modules;
    std::vector<std::string> strange, text, dora;
    for (const io::Checkpoint::Tensor& t : file.checkpoint->tensors()) {
      bool text_part = false;
      for (std::string_view prefix : kTextPrefixes) text_part |= starts_with(t.name, prefix);
      if (text_part) {
        text.push_back(t.name);
        continue;
      }
      if (t.name.find("lora_magnitude_vector") != std::string::npos || ends_with(t.name, ".dora_scale")) {
        dora.push_back(t.name);
        continue;
      }
      const Suffix* suffix = nullptr;
      for (const Suffix& s : kSuffixes) {
        if (ends_with(t.name, s.text)) {
          suffix = &s;
          break;
        }
      }
      if (suffix == nullptr || !dtype_is_float(t.dtype)) {
        strange.push_back(t.name);
        continue;
      }
      Module& m = modules[t.name.substr(0, t.name.size() - suffix->text.size())];
      (suffix->role == Role::Down ? m.down : suffix->role == Role::Up ? m.up : m.alpha) = &t;
    }
    if (!text.empty())
      fail(FX_ERR_UNSUPPORTED, path + ": this LoRA also changes the text encoders (" + list_some(text) +
                                   "); FluxNative applies LoRAs to the transformer only so far");
    if (!dora.empty())
      fail(FX_ERR_UNSUPPORTED, path + ": this is a DoRA (" + list_some(dora) + "), which FluxNative does not apply");
    if (!strange.empty())
      fail(FX_ERR_FORMAT, path + ": tensors that are not LoRA down/up/alpha weights: " + list_some(strange));
    if (modules.empty()) fail(FX_ERR_FORMAT, path + ": no LoRA tensors (lora_A/lora_B, lora_down/lora_up, down/up)");

    std::vector<std::string> unknown;
    for (const auto& [name, m] : modules) {
      if (m.down == nullptr || m.up == nullptr) {
        fail(FX_ERR_FORMAT, path + ": module \"" + name + "\" has " + (m.down ? "a down" : "an up") +
                                " weight without its " + (m.down ? "up" : "down") + " weight");
      }
      const Target* target = find_target(targets, name);
      if (target == nullptr) {
        unknown.push_back(name);
        continue;
      }
      LoraPatch patch;
      patch.source = path + ": " + name;
      const auto& ds = m.down->shape;
      const auto& us = m.up->shape;
      int64_t out = 0;
      for (const auto& [begin, end] : target->rows) out += end - begin;
      const std::vector<int64_t>& weight_shape = shapes.at(target->weight);
      if (ds.size() != 2 || us.size() != 2 || ds[0] != us[1] || ds[1] != weight_shape[1] || us[0] != out) {
        fail(FX_ERR_FORMAT, patch.source + ": down " + shape_text(ds) + " and up " + shape_text(us) +
                                " do not fit " + target->weight + " (" + std::to_string(out) + " rows of " +
                                std::to_string(weight_shape[1]) + " inputs: down must be [rank, " +
                                std::to_string(weight_shape[1]) + "], up [" + std::to_string(out) + ", rank])");
      }
      patch.rank = ds[0];
      patch.in = ds[1];
      patch.out = out;
      patch.down = as_f32(*m.down);
      patch.up = as_f32(*m.up);
      float alpha = static_cast<float>(patch.rank);
      if (m.alpha != nullptr) {
        if (m.alpha->element_count() != 1) fail(FX_ERR_FORMAT, patch.source + ": alpha is not one number");
        alpha = as_f32(*m.alpha)[0];
      }
      patch.scale = file.strength * alpha / static_cast<float>(patch.rank);
      patch.rows = target->rows;
      merge.patches_[target->weight].push_back(std::move(patch));
    }
    if (!unknown.empty())
      fail(FX_ERR_FORMAT, path + ": modules this FLUX transformer does not have: " + list_some(unknown));
  }
  for (const auto& [name, _] : merge.patches_) merge.used_[name] = false;
  return merge;
}

size_t LoraMerge::patch_count() const {
  size_t count = 0;
  for (const auto& [_, list] : patches_) count += list.size();
  return count;
}

const std::vector<LoraPatch>* LoraMerge::take(const std::string& name) const {
  const auto found = patches_.find(name);
  if (found == patches_.end()) return nullptr;
  used_[name] = true;
  return &found->second;
}

void LoraMerge::check_all_used() const {
  for (const auto& [name, used] : used_)
    if (!used) fail(FX_ERR_INTERNAL, "a LoRA patch of " + name + " was never applied");
}

void LoraMerge::apply(const std::vector<LoraPatch>& patches, float* w, int64_t n, int64_t k) {
  for (const LoraPatch& p : patches) {
    if (p.in != k) fail(FX_ERR_INTERNAL, p.source + ": " + std::to_string(p.in) + " inputs, weight has " + std::to_string(k));
    // Row j of the update lands on weight row `dest[j]` (the target's row ranges, in order).
    std::vector<int64_t> dest;
    dest.reserve(static_cast<size_t>(p.out));
    for (const auto& [begin, end] : p.rows)
      for (int64_t r = begin; r < end; ++r) dest.push_back(r);
    if (static_cast<int64_t>(dest.size()) != p.out || (!dest.empty() && *std::max_element(dest.begin(), dest.end()) >= n))
      fail(FX_ERR_INTERNAL, p.source + ": rows outside the weight");
    ThreadPool::global().parallel_for(p.out, [&](int64_t begin, int64_t end) {
      // Row j of the update, scale·Σ_r up[j, r]·down[r, :], summed in double and added to the weight once:
      // the merged weight is the exact sum rounded once to f32.
      std::vector<double> delta(static_cast<size_t>(k));
      for (int64_t j = begin; j < end; ++j) {
        std::fill(delta.begin(), delta.end(), 0.0);
        for (int64_t r = 0; r < p.rank; ++r) {
          const double c = static_cast<double>(p.up[static_cast<size_t>(j * p.rank + r)]);
          const float* d = p.down.data() + r * k;
          for (int64_t i = 0; i < k; ++i) delta[static_cast<size_t>(i)] += c * static_cast<double>(d[i]);
        }
        float* row = w + dest[static_cast<size_t>(j)] * k;
        const double scale = static_cast<double>(p.scale);
        for (int64_t i = 0; i < k; ++i)
          row[i] = static_cast<float>(static_cast<double>(row[i]) + scale * delta[static_cast<size_t>(i)]);
      }
    }, 8);
  }
}

}  // namespace fx::models
