// The one weight loader every model uses: it takes a recognised checkpoint (models/recognize.h), serves
// each tensor by the name the model asks for, and turns it into what the model's backend holds.
//
// A model asks in one naming: "bfl" (the FLUX transformer and the autoencoder ask by BFL name) or "hf"
// (the text encoders ask by transformers name). When the checkpoint's layout is another one (a diffusers
// folder for a BFL-named model), the tensor is mapped through the one BFL<->diffusers table in
// recognize.cpp: a diffusers tensor that is a whole BFL tensor is read in place; a BFL tensor that
// diffusers splits (qkv, linear1) is assembled from its pieces into bytes the loader owns until the
// backend has packed them. Every tensor is checked against the shape the configuration needs, and must
// be a floating-point type; errors name the file and the stored tensor. An fp8 weight with a
// "<linear>.scale_weight" beside it (ComfyUI's scaled fp8 files) is read as fp8 · scale.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "models/lora.h"

namespace fx::models {

// A tensor by the model's name: in place in the mapped checkpoint, or assembled.
struct LoadedTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // the shape in the model's naming
  const uint8_t* data = nullptr;
  std::vector<uint8_t> owned;  // the assembled bytes, when not in place
  const io::Checkpoint::Tensor* stored = nullptr;  // the checkpoint tensor, when read in place
  std::optional<BlockType> block;                  // GGUF block-quantised (dtype F32: what it decodes to)
  int64_t elements() const;
};

// What an engine builder (engine/engine_build.cpp) sees of a load, and how it picks each layer's format. A
// load given a recorder reports every linear layer once packed (bias inside) and every other tensor the model
// read, by the model's name, in the dtype the model keeps it in (host_f32 values as f32; an embedding table as
// stored), so that the engine can hand the same bytes back.
class WeightRecorder {
 public:
  virtual ~WeightRecorder() = default;
  virtual void linear(const std::string& prefix, const backend::LinearLayer& layer) = 0;
  virtual void tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data) = 0;
  // The format linear layer `prefix` is packed in, given the load's format (e.g. sensitive layers kept in bf16).
  virtual backend::WeightFormat format_for(const std::string& prefix, backend::WeightFormat format) {
    (void)prefix;
    return format;
  }
};

class WeightLoader {
 public:
  // `description`: describe(checkpoint). `kind` is the recognizer's kind ("flux_transformer", ...),
  // `naming` "bfl" or "hf", `model` the model's name in errors ("FLUX transformer").
  WeightLoader(const io::Checkpoint& checkpoint, const nlohmann::json& description, const std::string& kind,
               const std::string& naming, std::string model, backend::Backend& backend);

  // The tensor `name` (or, when absent, `alias`, for tied copies stored under either name).
  LoadedTensor fetch(const std::string& name, const std::string& alias = "") const;
  // Its values as f32 on the host, whatever the stored float dtype.
  std::vector<float> host_f32(const std::string& name, std::vector<int64_t>* shape = nullptr) const;
  // Its values as an f32 tensor on the backend's device.
  backend::Tensor vector(const std::string& name) const;
  // The linear layer `prefix`.weight (+ `prefix`.bias when has_bias), packed by the backend.
  std::unique_ptr<backend::LinearLayer> linear(const std::string& prefix, bool has_bias = true) const;
  // A matrix given on the host (e.g. q, k, v concatenated), packed by the backend as f32.
  std::unique_ptr<backend::LinearLayer> linear_from(const std::vector<float>& weight, int64_t n, int64_t k,
                                                    const std::vector<float>& bias, const std::string& label) const;

  void set_format(backend::WeightFormat format, backend::Precision precision) {
    format_ = format;
    precision_ = precision;
  }
  // LoRA updates merged into the linear weights they name before the backend packs them (quantised after
  // merging). The merge must outlive the loader's linear() calls.
  void set_lora(const LoraMerge* lora);
  void set_recorder(WeightRecorder* recorder) { recorder_ = recorder; }
  // Reports a tensor the model keeps as stored (an embedding table read in place) to the recorder, if any.
  void record(const std::string& name, const LoadedTensor& tensor) const;
  // Whether the checkpoint is an engine component (engine/engine_format.h): its linear layers come packed.
  bool engine() const { return engine_; }
  backend::Backend& backend() const { return backend_; }
  // "<path>: <model> tensor \"<name>\"", the prefix of every error about one tensor.
  std::string label(const std::string& name) const;
  const std::string& path() const { return checkpoint_.path(); }

 private:
  const io::Checkpoint::Tensor& stored(const std::string& name) const;
  // An fp8 weight's per-tensor scale ("<name minus .weight>.scale_weight", ComfyUI's scaled fp8 files):
  // the real weight is fp8 · scale. 1 for other dtypes or when the file has none.
  float fp8_scale(const LoadedTensor& weight, const std::string& name) const;

  const io::Checkpoint& checkpoint_;
  nlohmann::json config_;
  std::string kind_, naming_, layout_, prefix_, model_;
  backend::Backend& backend_;
  backend::WeightFormat format_ = backend::WeightFormat::F32;
  backend::Precision precision_ = backend::Precision::Exact;
  std::map<std::string, std::vector<int64_t>> expected_;
  const LoraMerge* lora_ = nullptr;
  WeightRecorder* recorder_ = nullptr;
  bool engine_ = false;
  nlohmann::json engine_linears_;  // the engine's per-layer entries: {prefix: {dtype, n, k, bias}}
  std::string engine_layout_;
  // host_f32 without reporting to the recorder (a linear layer's bias travels inside the packed layer).
  std::vector<float> read_f32(const std::string& name, std::vector<int64_t>* shape) const;
  std::unique_ptr<backend::LinearLayer> engine_linear(const std::string& prefix, bool has_bias) const;
};

// Checks that describe() recognised `kinds` (one of them) without problems; throws fx::Error naming what
// it is instead (FX_ERR_UNSUPPORTED) or the problems (FX_ERR_FORMAT). Returns the kind found.
std::string require_kind(const io::Checkpoint& checkpoint, const nlohmann::json& description,
                         const std::vector<std::string>& kinds, const std::string& model);

}  // namespace fx::models
