// Recognising what a checkpoint is (FLUX transformer, autoencoder, T5, CLIP; BFL or diffusers layout)
// from its tensor names and shapes, and inferring the model configuration from them
// (../shared/docs/flux-spec.md §2 and §8). Never hard-coded: the same code describes the published
// 12B checkpoints and the tiny test models.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"

namespace fx::models {

// The full description, as fx_checkpoint_describe_json returns it:
// {
//   "kind": "flux_transformer" | "autoencoder" | "t5_encoder" | "clip_text" | "unknown",
//   "layout": "bfl" | "diffusers" | "hf" | "unknown",
//   "variant": "dev" | "schnell" | ... (flux only; "fill"/"canny-depth" by img_in width),
//   "key_prefix": "" | "model.diffusion_model." | ...   (a prefix stripped before matching),
//   "config": { kind-specific inferred configuration },
//   "parameter_count": N, "tensor_count": N, "total_bytes": N,
//   "dtypes": {"BF16": count, ...},
//   "source": "file" | "index" | "folder", "files": [paths], "metadata": {..}, "has_config_json": bool,
//   "problems": [strings]   (missing/unexpected tensors or shape mismatches found while inferring)
// }
nlohmann::json describe(const io::Checkpoint& checkpoint);

}  // namespace fx::models
