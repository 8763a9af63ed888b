// The two FLUX.1 text encoders, written once against the backend seam (docs/flux-model.md §2.3, §3.2–3.4, §8.4, §8.5):
//   * CLIP ViT-L/14 text tower (diffusers text_encoder/, HF CLIPTextModel): token + position embeddings,
//     pre-LN layers with causal attention (q scaled by 1/√head_dim) and a QuickGELU MLP, final LayerNorm;
//     pooled = final hidden state at the first occurrence of the row's largest id (the first EOS).
//   * T5-v1.1 encoder (text_encoder_2/, HF T5EncoderModel): shared embedding, RMSNorm, attention without
//     1/√d and with block 0's relative position bias shared by every block, gated-GELU-tanh FFN, final
//     RMSNorm; no mask (the pads attend and are attended to, as FLUX runs it).
//
// Loading takes the configuration the recognizer infers (config.json, else shapes) and has the backend pack
// each linear weight once (on the CPU: panels in its dtype, never an f32 copy unless asked for). On the CPU
// the token embedding table is not copied at all: the model maps the file that holds it and converts only
// the rows it looks up, so a checkpoint handle may be closed right after load. Norm scales, biases and
// CLIP's position table (small) are held in f32. Compute is f32 throughout (f32 activations, f32 softmax).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"

namespace fx::models {

class WeightRecorder;  // models/weight_loader.h


enum class TextEncoderKind { ClipText, T5Encoder };

struct TextEncoderConfig {
  TextEncoderKind kind = TextEncoderKind::ClipText;
  int64_t vocab_size = 0, hidden = 0, layers = 0, heads = 0, head_dim = 0, intermediate = 0;
  int64_t max_positions = 0;                  // CLIP: length of the position table; T5: 0 (unbounded)
  int64_t num_buckets = 0, max_distance = 0;  // T5 relative positions; 0 for CLIP
  double eps = 0.0;                           // LayerNorm (CLIP) / RMSNorm (T5) epsilon
  const char* kind_name() const { return kind == TextEncoderKind::ClipText ? "clip_text" : "t5_encoder"; }
};

// T5's bidirectional relative-position bucket of rel = key − query (docs/flux-model.md §3.3), generalised as the
// reference does: half = num_buckets/2 per direction, exact = half/2 buckets for |rel| < exact, then
// logarithmic up to max_distance, capped at half − 1. The logarithm is taken in f32, as transformers does.
int32_t t5_relative_bucket(int64_t rel, int64_t num_buckets, int64_t max_distance);

class TextEncoder {
 public:
  // Throws fx::Error: FX_ERR_UNSUPPORTED if the checkpoint is neither a CLIP text tower nor a T5 encoder
  // (or one this engine does not run: a non-gated T5 v1.0 FFN, a CLIP activation other than quick_gelu),
  // FX_ERR_FORMAT for missing or mis-shaped tensors (the recognizer's problems in the message).
  // `backend`: where the model lives and runs (null: the CPU backend over the process-wide pool).
  // `want_kind` ("clip_text" or "t5_encoder"; "" for whichever the checkpoint holds) picks one of several
  // components (an engine, an "all in one" file). `recorder`: as FluxTransformer::load's.
  static std::unique_ptr<TextEncoder> load(const io::Checkpoint& checkpoint, backend::WeightFormat format,
                                           std::shared_ptr<backend::Backend> backend = nullptr,
                                           const std::string& want_kind = "", WeightRecorder* recorder = nullptr);
  ~TextEncoder();

  const TextEncoderConfig& config() const { return config_; }
  backend::Backend& backend() const { return *backend_; }

  // ids [batch, length]. Writes hidden [batch, length, hidden] (may be null) and, for CLIP, pooled
  // [batch, hidden] (may be null; must be null for T5). Checks: batch, length >= 1; CLIP length <=
  // max_positions; every id in [0, vocab_size) (FX_ERR_INVALID_ARGUMENT naming row and position).
  // `cancel`: FX_ERR_CANCELLED at the next layer boundary after *cancel turns non-zero. Host memory.
  void encode(const int32_t* ids, int64_t batch, int64_t length, float* hidden, float* pooled,
              const volatile int32_t* cancel = nullptr) const;

  struct Impl;  // the weights, defined in the .cpp

 private:
  TextEncoder() = default;
  void encode_clip(const int32_t* ids, int64_t batch, int64_t length, float* hidden, float* pooled,
                   const volatile int32_t* cancel) const;
  void encode_t5(const int32_t* ids, int64_t batch, int64_t length, float* hidden, const volatile int32_t* cancel) const;

  std::shared_ptr<backend::Backend> backend_;
  std::unique_ptr<Impl> impl_;
  TextEncoderConfig config_;
};

}  // namespace fx::models
