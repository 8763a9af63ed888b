// Building an engine file (engine_format.h) from published weights: each component is loaded once through
// its model's normal load, on the target backend, with a recorder that sees every weight as the backend packed
// it; those bytes are written out, and the component is freed before the next one is loaded (peak memory: the
// largest component, not the sum).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"

namespace fx::io {
class Checkpoint;
}

namespace fx::engine {

// A file carried inside the engine (tokenizer files), as the tensor "files/<name>".
struct EmbeddedFile {
  std::string name;
  const void* data = nullptr;
  size_t size = 0;
};

struct BuildOptions {
  const io::Checkpoint* transformer = nullptr;  // required
  const io::Checkpoint* autoencoder = nullptr;  // optional, as are the text encoders
  const io::Checkpoint* clip = nullptr;
  const io::Checkpoint* t5 = nullptr;
  // The transformer's linear layers: BF16, or FP8 (e4m3 with per-output-channel scales) except the layers
  // fp8_keeps_bf16() names, which stay BF16.
  backend::WeightFormat precision = backend::WeightFormat::BF16;
  // T5's linear layers: AsStored, BF16 or FP8. CLIP keeps its weights as stored; the autoencoder is f32.
  backend::WeightFormat t5_precision = backend::WeightFormat::AsStored;
  nlohmann::json build_info = nlohmann::json::object();  // stored as "build"; must be an object
  std::vector<EmbeddedFile> files;
  std::shared_ptr<backend::Backend> backend;  // the target; null: the CPU backend
};

// The FLUX transformer layers an FP8 engine keeps in bf16, as the published FP8 builds do: the embedders of
// the inputs (img_in, txt_in, time_in, vector_in, guidance_in), every modulation (the per-block adaLN
// projections) and the final layer. They are ~1 % of the weights and carry the conditioning.
bool fp8_keeps_bf16(const std::string& layer);

// Writes the engine to `path` (through path + ".tmp", renamed at the end). fx::Error: FX_ERR_INVALID_ARGUMENT
// for missing or wrong options, FX_ERR_UNSUPPORTED for a backend without an engine layout, and whatever
// loading a component raises (a source that is not what it is given as names the file).
void build_engine(const BuildOptions& options, const std::string& path);

}  // namespace fx::engine
