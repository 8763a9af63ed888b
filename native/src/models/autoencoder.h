// The FLUX autoencoder (docs/flux-model.md §7), written once against the backend seam: decoder (latents →
// pixels) and encoder (pixels → posterior mean → normalised latents).
//
// Loading reads the configuration the recognizer infers from the checkpoint (ch, ch_mult,
// num_res_blocks, z_channels, ...: never hard-coded), so the published ae.safetensors and the tiny test
// models go through the same code. Every tensor is fetched by its BFL name; a diffusers folder is mapped
// through the one BFL<->diffusers table in recognize.cpp (renames, reversed up blocks, attention
// linears). Weights stored f32, f16 or bf16 are widened to f32 and packed once by the backend (convs
// for the direct convolution, the mid-block attention's q/k/v/proj_out for the linear GEMM), so the
// model holds no view of the checkpoint after load.
//
// Activations are NCHW f32, one image at a time (a 1024² decode needs ~3 GB of activations for one
// image). The mid-block attention runs on H·W tokens of C channels with the flash kernel, so the
// (H·W)² score matrix never exists.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"

namespace fx::models {

class WeightRecorder;  // models/weight_loader.h


struct AutoencoderConfig {
  int64_t in_channels = 0, out_channels = 0;  // 0 when the checkpoint lacks that half
  int64_t ch = 0;
  std::vector<int64_t> ch_mult;
  int64_t num_res_blocks = 0;
  int64_t z_channels = 0;
  int64_t groups = 32;
  bool has_encoder = false, has_decoder = false, mid_attention = true;
  double scale_factor = 0.3611, shift_factor = 0.1159;
  // Pixels per latent cell along each axis: 2^(levels - 1).
  int64_t downscale() const { return int64_t(1) << (ch_mult.empty() ? 0 : ch_mult.size() - 1); }
};

class Autoencoder {
 public:
  // Throws fx::Error: FX_ERR_UNSUPPORTED if the checkpoint is not an autoencoder (or one with
  // quant_conv/post_quant_conv, which FLUX's has not), FX_ERR_FORMAT for missing or mis-shaped tensors.
  // `backend`: where the model lives and runs (null: the CPU backend over the process-wide pool).
  // `recorder`: as FluxTransformer::load's.
  static std::unique_ptr<Autoencoder> load(const io::Checkpoint& checkpoint,
                                           std::shared_ptr<backend::Backend> backend = nullptr,
                                           WeightRecorder* recorder = nullptr);
  ~Autoencoder();

  const AutoencoderConfig& config() const { return config_; }
  backend::Backend& backend() const { return *backend_; }

  // latents [batch, z, height, width] (normalised) → pixels [batch, out, height·f, width·f], f = downscale.
  // `cancel` (optional) is checked between blocks: FX_ERR_CANCELLED once it reads non-zero.
  void decode(const float* latents, int64_t batch, int64_t height, int64_t width, float* pixels,
              const volatile int32_t* cancel = nullptr) const;
  // decode() in overlapping tiles of `tile` × `tile` latent cells that overlap by `overlap` cells (1 to tile/2),
  // blended linearly across the overlaps (autoencoder_tiled.cpp): memory grows with the tile, not the image. The
  // result is close to decode()'s, not equal (each tile normalises with its own statistics). `tile` <= 0, or an
  // image no larger than one tile, is decode() itself.
  void decode_tiled(const float* latents, int64_t batch, int64_t height, int64_t width, float* pixels, int64_t tile,
                    int64_t overlap, const volatile int32_t* cancel = nullptr) const;
  // pixels [batch, in, height, width] (height, width multiples of f) → latents [batch, z, height/f,
  // width/f] = scale · (posterior mean − shift).
  void encode(const float* pixels, int64_t batch, int64_t height, int64_t width, float* latents,
              const volatile int32_t* cancel = nullptr) const;

  struct Impl;  // the weights, defined in the .cpp

 private:
  Autoencoder() = default;
  std::shared_ptr<backend::Backend> backend_;
  std::unique_ptr<Impl> impl_;
  AutoencoderConfig config_;
};

}  // namespace fx::models
