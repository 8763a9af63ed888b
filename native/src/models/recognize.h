// Recognising what a checkpoint is (FLUX transformer, autoencoder, T5, CLIP; BFL or diffusers layout)
// from its tensor names and shapes, and inferring the model configuration from them
// (docs/flux-model.md §2 and §8). Never hard-coded: the same code describes the published
// 12B checkpoints and the tiny test models.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/block_quant.h"
#include "core/dtype.h"
#include "io/checkpoint.h"

namespace fx::models {

// The full description, as fx_checkpoint_describe_json returns it:
// {
//   "kind": "flux_transformer" | "autoencoder" | "t5_encoder" | "clip_text" | "unknown",
//   "layout": "bfl" | "diffusers" | "hf" | "unknown",
//   "variant": "dev" | "schnell" | ... (flux only; "fill"/"canny-depth" by img_in width; null otherwise),
//   "key_prefix": "" | "model.diffusion_model." | ...   (a prefix stripped before matching),
//   "components": [{"prefix", "kind", "layout", "tensor_count"}]  (every known prefix present: a ComfyUI
//                 "all in one" file lists its transformer, text encoders and VAE; tensors under another
//                 component's prefix are not "unexpected"),
//   "config": { kind-specific inferred configuration; "defaults_used": [what was not in the checkpoint] },
//   "parameter_count": N, "tensor_count": N, "total_bytes": N,
//   "dtypes": {"BF16": count, "Q8_0": count, ...}  (GGUF block types by ggml's names),
//   "source": "file" | "index" | "folder", "files": [paths], "metadata": {..}, "has_config_json": bool,
//   "checks": {"expected_count", "missing_count", "missing": [..], "unexpected_count", "unexpected": [..],
//              "shape_mismatch_count", "shape_mismatches": [{"name","shape","expected"}]}  (first 20 of each),
//   "notes": [strings]      (things ignored on purpose, e.g. T5 decoder tensors),
//   "problems": [strings]   (missing/unexpected tensors or shape mismatches found while inferring)
// }
// Config keys per kind:
//   flux_transformer: hidden_size, num_heads, head_dim, in_channels, out_channels, context_in_dim, vec_in_dim,
//     time_embed_dim, mlp_hidden, mlp_ratio, depth, depth_single, guidance_embed, qkv_bias, axes_dim, theta
//   autoencoder: ch, ch_mult, block_out_channels, num_res_blocks, z_channels, in_channels, out_channels,
//     has_encoder, has_decoder, mid_attention, use_quant_conv, use_post_quant_conv, norm_num_groups,
//     scale_factor, shift_factor
//   t5_encoder: d_model, d_ff, d_kv, num_heads, num_layers, vocab_size, relative_attention_num_buckets,
//     relative_attention_max_distance, gated, feed_forward_proj, layer_norm_epsilon
//   clip_text: hidden_size, intermediate_size, num_layers, num_heads, head_dim, vocab_size,
//     max_position_embeddings, hidden_act, layer_norm_eps, has_text_projection
// A value the tensors do not determine (e.g. a tensor is missing) is null and named in problems.
nlohmann::json describe(const io::Checkpoint& checkpoint);
// The same, describing the component of kind `want_kind` when the file holds one (a loader asking for the
// autoencoder of an "all in one" file); otherwise what describe() finds.
nlohmann::json describe(const io::Checkpoint& checkpoint, const std::string& want_kind);

// What describe() looks at, without the tensor data: lets the recognizer run on a tensor list built in
// memory (e.g. the published 12B lists in tests) exactly as on an opened checkpoint.
struct TensorListing {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  std::optional<BlockType> block;  // GGUF block-quantised storage (dtype is then F32)
};

struct CheckpointListing {
  std::vector<TensorListing> tensors;
  std::optional<nlohmann::json> config;         // config.json beside the weights
  std::map<std::string, std::string> metadata;  // safetensors __metadata__
  std::string source = "file";                  // "file" | "index" | "folder"
  std::vector<std::string> files;
};

nlohmann::json describe(const CheckpointListing& listing);
nlohmann::json describe(const CheckpointListing& listing, const std::string& want_kind);

// A tensor name with its shape; -1 in an expected shape means "any size" (a dimension the
// checkpoint did not let us infer).
struct TensorShape {
  std::string name;
  std::vector<int64_t> shape;
};

// The tensors a model of `kind` ("flux_transformer", ...) in `layout` ("bfl", "diffusers", "hf") must
// hold, in module order, for `config` (the "config" object describe() returns; null values become -1
// dimensions). Spec §8. Throws fx::Error(FX_ERR_INVALID_ARGUMENT) for unknown kinds/layouts or a
// config without the structural fields (depths, levels).
std::vector<TensorShape> expected_tensors(const std::string& kind, const std::string& layout,
                                          const nlohmann::json& config);

// One diffusers tensor built from a BFL tensor: the concatenation of the BFL row ranges `rows`
// (dimension 0, [begin, end)) reshaped to `shape` (same element count). Spec §8.2 / §8.3.
struct DerivedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<std::pair<int64_t, int64_t>> rows;
};

// The diffusers tensors that BFL tensor `bfl` becomes (flux: splits of qkv / linear1 and the swapped
// norm_out halves; autoencoder: renames, reversed up blocks, 1x1 attention convs as linears).
// `kind` is "flux_transformer" (needs config.hidden_size) or "autoencoder" (needs config.ch_mult).
std::vector<DerivedTensor> bfl_to_diffusers(const std::string& kind, const TensorShape& bfl,
                                            const nlohmann::json& config);

}  // namespace fx::models
