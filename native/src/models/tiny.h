// Tiny random models with the published tensor names and shape relations (docs/flux-model.md §8), for
// tests, demos and benchmarks. Weights are a deterministic function of the seed.
#pragma once

#include <string>

#include "fluxnative.h"

namespace fx::models {

// Fills defaults for zero fields, validates (FX_ERR_INVALID_ARGUMENT), and writes the model:
// BFL layout: one safetensors file at `path`. Diffusers layout: folder `path` with config.json and
// either one weight file or `shards` files plus the index json, named as the published repos name them.
void write_tiny_model(const fx_tiny_model_params& params, const std::string& path);

}  // namespace fx::models
