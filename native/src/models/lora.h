// LoRA files merged into the FLUX transformer's weights at load (docs/lora.md).
//
// A LoRA adds a low-rank update to some linear weights: W += s · (α / r) · up · down, with down [r, in],
// up [out, r], α the file's alpha (r when it has none) and s the user's strength. The files people share
// name the same modules four ways; each is mapped onto the transformer's BFL weight names, where a
// diffusers module is a row range of a fused BFL weight (to_q is the first third of qkv; norm_out's two
// halves are swapped):
//   BFL / ComfyUI   double_blocks.0.img_attn.qkv.lora_A.weight (or lora_down/lora_up + .alpha)
//   diffusers/PEFT  transformer.transformer_blocks.0.attn.to_q.lora_A.weight / lora_B.weight
//   kohya           lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight / lora_up.weight / .alpha
//   XLabs           double_blocks.0.processor.qkv_lora1.down.weight / up.weight (lora1: image, lora2: text)
// Everything in a file must map: a module the model does not have, a shape that does not fit, a down
// without its up, text-encoder parts (not applied yet) or DoRA magnitudes are errors that name them.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint.h"

namespace fx::models {

// One LoRA file and the strength it is applied with (1: as trained).
struct LoraFile {
  const io::Checkpoint* checkpoint = nullptr;
  float strength = 1.0f;
};

// One low-rank update of a BFL weight: W[rows] += scale · up · down.
struct LoraPatch {
  std::string source;  // "<file>: <module as the file names it>", for errors and logs
  int64_t rank = 0, in = 0, out = 0;
  std::vector<float> down;  // [rank, in]
  std::vector<float> up;    // [out, rank]
  float scale = 1.0f;       // strength · alpha / rank
  std::vector<std::pair<int64_t, int64_t>> rows;  // the weight's rows [begin, end) that up's rows land on, in order
};

class LoraMerge {
 public:
  LoraMerge() = default;

  // Reads every file and maps its modules onto a FLUX transformer with `config` (describe()["config"]).
  // Throws fx::Error: FX_ERR_FORMAT for what does not map or fit, FX_ERR_UNSUPPORTED for parts that exist
  // in the formats but are not applied (text encoders, DoRA), each naming the file and tensors.
  static LoraMerge for_flux(const std::vector<LoraFile>& files, const nlohmann::json& config);

  bool empty() const { return patches_.empty(); }
  size_t patch_count() const;

  // The patches of weight `name` (a BFL name such as "double_blocks.0.img_attn.qkv.weight"), or nullptr.
  // Marks them used: check_all_used() then proves every patch reached a weight.
  const std::vector<LoraPatch>* take(const std::string& name) const;
  void check_all_used() const;

  // Applies `patches` to the row-major f32 matrix w [n, k] in place (threads: the process-wide pool).
  static void apply(const std::vector<LoraPatch>& patches, float* w, int64_t n, int64_t k);

 private:
  std::map<std::string, std::vector<LoraPatch>> patches_;
  mutable std::map<std::string, bool> used_;
};

}  // namespace fx::models
