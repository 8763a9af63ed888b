// Writes a checkpoint as GGUF the way stable-diffusion.cpp and ComfyUI-GGUF lay out FLUX: BFL names, each
// linear weight (a 2-D "*.weight") in the block type asked for when its rows are whole blocks, everything
// else (biases, norms, and weights whose rows are not whole blocks) as F32; the safetensors metadata
// (e.g. "axes_dim") as string KVs. For the project's tiny test models and benchmarks.
#pragma once

#include <optional>
#include <string>

#include "core/block_quant.h"
#include "io/checkpoint.h"

namespace fx::models {

// `type`: the block type of the linear weights; nullopt keeps them F32. Throws fx::Error.
void write_gguf_checkpoint(const io::Checkpoint& source, const std::string& path, std::optional<BlockType> type);

}  // namespace fx::models
