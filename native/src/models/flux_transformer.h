// The FLUX.1 flow transformer (docs/flux-model.md §5), written once against the backend seam (backend/backend.h):
// it runs on whichever backend it was loaded with.
//
// Loading reads the configuration the recognizer infers from the checkpoint (never hard-coded) and
// assembles every weight in the BFL structure: a BFL file is read in place, a diffusers folder is mapped
// back through the one BFL<->diffusers table in recognize.cpp (q/k/v rows concatenated, norm_out halves
// swapped back). Each linear layer is then packed once by the backend in the requested format (the CPU
// backend: panels in the dtype, never dequantized), so the model holds no view of the checkpoint after load.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "models/lora.h"

namespace fx::models {

class WeightRecorder;  // models/weight_loader.h


class FluxStepCache;

struct FluxConfig {
  int64_t in_channels = 0, out_channels = 0, hidden = 0, heads = 0, head_dim = 0, mlp_hidden = 0;
  int64_t context_in_dim = 0, vec_in_dim = 0, time_embed_dim = 256;
  int64_t depth = 0, depth_single = 0;
  bool guidance_embed = false;
  std::vector<int> axes_dim;
  double theta = 10000.0;
};

// One forward's inputs, all f32, row-major (docs/flux-model.md §5): img [B, Limg, in], img_ids [B, Limg, 3],
// txt [B, Ltxt, ctx], txt_ids [B, Ltxt, 3], y [B, vec], timesteps [B], guidance [B] (dev; may be null
// for schnell, ignored there).
struct FluxInputs {
  int64_t batch = 1, img_tokens = 0, txt_tokens = 0;
  const float* img = nullptr;
  const float* img_ids = nullptr;
  const float* txt = nullptr;
  const float* txt_ids = nullptr;
  const float* y = nullptr;
  const float* timesteps = nullptr;
  const float* guidance = nullptr;
  // Optional: forward() throws FX_ERR_CANCELLED at the next block boundary after *cancel turns non-zero.
  const volatile int32_t* cancel = nullptr;
  // Optional, [B] each: sample b's step cache (models/flux_step_cache.h; a null entry runs every block), and where
  // to write how many blocks sample b ran (all of them, or the head and tail of a step that reused).
  FluxStepCache* const* step_caches = nullptr;
  int32_t* blocks_computed = nullptr;
};

class FluxTransformer {
 public:
  // Throws fx::Error: FX_ERR_UNSUPPORTED if the checkpoint is not a FLUX transformer the recognizer
  // understands (its problems list goes into the message), FX_ERR_FORMAT for missing/mis-shaped tensors.
  // `precision`: Exact keeps f32 activations everywhere (matches the reference); Bf16Activations lets
  // bf16 weights use the backend's bf16 dot products (faster, ~1e-2 relative error). `backend`: where the
  // model lives and runs (null: the CPU backend over the process-wide pool). `loras`: merged into the
  // weights they name before packing (models/lora.h); every tensor of each must map, or the load fails.
  // `recorder`: sees every weight as loaded (an engine builder, models/weight_loader.h).
  static std::unique_ptr<FluxTransformer> load(const io::Checkpoint& checkpoint, backend::WeightFormat format,
                                               backend::Precision precision = backend::Precision::Exact,
                                               std::shared_ptr<backend::Backend> backend = nullptr,
                                               const std::vector<LoraFile>& loras = {},
                                               WeightRecorder* recorder = nullptr);
  ~FluxTransformer();

  const FluxConfig& config() const { return config_; }
  backend::Precision precision() const { return precision_; }
  backend::Backend& backend() const { return *backend_; }
  std::shared_ptr<backend::Backend> shared_backend() const { return backend_; }

  // Validates the inputs' sizes (FX_ERR_INVALID_ARGUMENT naming the tensor and the expected shape) and
  // writes the velocity [B, Limg, out_channels] to `out`. Inputs and output are host memory.
  void forward(const FluxInputs& inputs, float* out) const;

  struct Impl;  // the weights, defined in the .cpp

 private:
  FluxTransformer() = default;
  std::shared_ptr<backend::Backend> backend_;
  std::unique_ptr<Impl> impl_;
  FluxConfig config_;
  backend::Precision precision_ = backend::Precision::Exact;
};

// The sinusoidal embedding of docs/flux-model.md §5.1: E(s) for s' = time_factor·s, cos half first. Computed in
// double, returned as f32. `dim` even.
void timestep_embedding(float value, int64_t dim, float* out, double time_factor = 1000.0, double max_period = 10000.0);

}  // namespace fx::models
