#include "models/weight_loader.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "models/recognize.h"

namespace fx::models {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

int64_t LoadedTensor::elements() const { return element_count(shape); }

std::string require_kind(const io::Checkpoint& checkpoint, const nlohmann::json& description,
                         const std::vector<std::string>& kinds, const std::string& model) {
  const std::string kind = description.value("kind", "unknown");
  bool known = false;
  for (const auto& k : kinds) known = known || k == kind;
  if (!known) fail(FX_ERR_UNSUPPORTED, checkpoint.path() + " is not " + model + " (recognised as \"" + kind + "\")");
  if (!description["problems"].empty()) {
    std::string problems;
    for (const auto& p : description["problems"]) problems += "\n  " + p.get<std::string>();
    fail(FX_ERR_FORMAT, checkpoint.path() + ": the " + model + " checkpoint is incomplete:" + problems);
  }
  return kind;
}

WeightLoader::WeightLoader(const io::Checkpoint& checkpoint, const nlohmann::json& description,
                           const std::string& kind, const std::string& naming, std::string model,
                           backend::Backend& backend)
    : checkpoint_(checkpoint),
      config_(description["config"]),
      kind_(kind),
      naming_(naming),
      model_(std::move(model)),
      backend_(backend) {
  layout_ = description.value("layout", "");
  prefix_ = description.value("key_prefix", "");
  for (const auto& t : expected_tensors(kind_, naming_, config_)) expected_[t.name] = t.shape;
  if (const auto e = description.find("engine"); e != description.end() && e->is_object()) {
    engine_ = true;
    engine_linears_ = e->value("linears", nlohmann::json::object());
    engine_layout_ = e->value("layout", "");
  }
}

void WeightLoader::set_lora(const LoraMerge* lora) {
  if (engine_ && lora != nullptr && !lora->empty())
    fail(FX_ERR_UNSUPPORTED, checkpoint_.path() + ": an engine's weights are packed when it is built; a LoRA cannot "
                                                  "be merged into them at load (load the published weights with the LoRA)");
  lora_ = lora;
}

void WeightLoader::record(const std::string& name, const LoadedTensor& tensor) const {
  if (recorder_ == nullptr) return;
  if (tensor.block)
    fail(FX_ERR_UNSUPPORTED, label(name) + " is GGUF block-quantised; an engine keeps it as the model does");
  recorder_->tensor(name, tensor.dtype, tensor.shape, tensor.data);
}

std::string WeightLoader::label(const std::string& name) const {
  return checkpoint_.path() + ": " + model_ + " tensor \"" + name + "\"";
}

const io::Checkpoint::Tensor& WeightLoader::stored(const std::string& name) const {
  const auto* t = checkpoint_.find(prefix_ + name);
  if (t == nullptr) fail(FX_ERR_FORMAT, checkpoint_.path() + ": tensor \"" + prefix_ + name + "\" is missing");
  if (!dtype_is_float(t->dtype))
    fail(FX_ERR_UNSUPPORTED, label(t->name) + " is stored as " + dtype_name(t->dtype) + ", not a floating-point type");
  return *t;
}

LoadedTensor WeightLoader::fetch(const std::string& name, const std::string& alias) const {
  const auto expected = expected_.find(name);
  if (expected == expected_.end()) fail(FX_ERR_INTERNAL, model_ + " loader asked for an unknown tensor " + name);
  const std::vector<int64_t>& want = expected->second;
  LoadedTensor out;
  out.shape = want;

  if (layout_ == naming_) {
    const io::Checkpoint::Tensor* t = checkpoint_.find(prefix_ + name);
    if (t == nullptr && !alias.empty()) t = checkpoint_.find(prefix_ + alias);
    t = &stored(t != nullptr ? t->name.substr(prefix_.size()) : name);  // "missing" / dtype checks
    bool same = t->shape.size() == want.size();
    for (size_t d = 0; same && d < want.size(); ++d) same = want[d] < 0 || want[d] == t->shape[d];
    if (!same)
      fail(FX_ERR_FORMAT, label(t->name) + " has shape " + shape_text(t->shape) + " but the configuration needs " +
                              shape_text(want));
    out.dtype = t->dtype;
    out.shape = t->shape;
    out.data = t->data();
    out.stored = t;
    out.block = t->block;
    return out;
  }

  // A model named in BFL terms over a diffusers layout: the pieces this BFL tensor became.
  const auto pieces = bfl_to_diffusers(kind_, TensorShape{name, want}, config_);
  if (pieces.empty()) fail(FX_ERR_INTERNAL, "no diffusers tensor maps to " + name);
  const auto& first = stored(pieces[0].name);
  if (first.block)
    fail(FX_ERR_UNSUPPORTED, label(first.name) + " is GGUF block-quantised in a diffusers layout; GGUF FLUX files "
                                                 "are read in the BFL layout (as sd.cpp and ComfyUI-GGUF write them)");
  out.dtype = first.dtype;
  const bool whole = pieces.size() == 1 && pieces[0].rows.size() == 1 && pieces[0].rows[0].first == 0 &&
                     pieces[0].rows[0].second == want[0];
  if (whole) {
    if (first.shape != pieces[0].shape)
      fail(FX_ERR_FORMAT, label(first.name) + " has shape " + shape_text(first.shape) + " but the configuration needs " +
                              shape_text(pieces[0].shape));
    out.data = first.data();
    out.stored = &first;
    return out;
  }
  int64_t row_elems = 1;
  for (size_t d = 1; d < want.size(); ++d) row_elems *= want[d];
  const size_t row_bytes = static_cast<size_t>(row_elems) * dtype_size(out.dtype);
  out.owned.resize(static_cast<size_t>(out.elements()) * dtype_size(out.dtype));
  for (const auto& piece : pieces) {
    const auto& t = stored(piece.name);
    if (t.dtype != out.dtype)
      fail(FX_ERR_FORMAT, checkpoint_.path() + ": \"" + piece.name + "\" is " + dtype_name(t.dtype) + " but \"" +
                              pieces[0].name + "\" is " + dtype_name(out.dtype) +
                              "; the pieces of one fused weight must share a dtype");
    uint64_t offset = 0;
    for (const auto& [begin, end] : piece.rows) {
      const size_t bytes = static_cast<size_t>(end - begin) * row_bytes;
      if (offset + bytes > t.byte_size)
        fail(FX_ERR_FORMAT, checkpoint_.path() + ": \"" + piece.name + "\" is smaller than its part of " + name);
      std::memcpy(out.owned.data() + static_cast<size_t>(begin) * row_bytes, t.data() + offset, bytes);
      offset += bytes;
    }
  }
  out.data = out.owned.data();
  return out;
}

float WeightLoader::fp8_scale(const LoadedTensor& weight, const std::string& name) const {
  const std::string suffix = ".weight";
  if (weight.dtype != DType::F8_E4M3FN && weight.dtype != DType::F8_E5M2) return 1.0f;
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return 1.0f;
  const std::string scale_name = name.substr(0, name.size() - suffix.size()) + ".scale_weight";
  if (weight.stored == nullptr) {
    // Assembled from a diffusers layout's pieces: each piece would carry its own scale.
    for (const auto& t : checkpoint_.tensors())
      if (t.name.size() > 13 && t.name.compare(t.name.size() - 13, 13, ".scale_weight") == 0)
        fail(FX_ERR_UNSUPPORTED, label(name) + " is assembled from fp8 pieces with per-tensor scale_weight "
                                               "tensors; scaled fp8 files are read in the BFL layout only");
    return 1.0f;
  }
  const auto* t = checkpoint_.find(prefix_ + scale_name);
  if (t == nullptr) return 1.0f;
  if (!dtype_is_float(t->dtype) || t->element_count() != 1)
    fail(FX_ERR_FORMAT, label(t->name) + " must hold one floating-point value (the weight's fp8 scale), not " +
                            std::to_string(t->element_count()) + " " + dtype_name(t->dtype) + " values");
  float scale = 0.0f;
  convert(t->dtype, t->data(), DType::F32, &scale, 1, Overflow::Ieee);
  if (!std::isfinite(scale))
    fail(FX_ERR_FORMAT, label(t->name) + " is " + std::to_string(scale) + "; an fp8 scale must be finite");
  return scale;
}

std::vector<float> WeightLoader::host_f32(const std::string& name, std::vector<int64_t>* shape) const {
  std::vector<int64_t> read_shape;
  std::vector<float> values = read_f32(name, &read_shape);
  if (recorder_ != nullptr) recorder_->tensor(name, DType::F32, read_shape, values.data());
  if (shape != nullptr) *shape = std::move(read_shape);
  return values;
}

std::vector<float> WeightLoader::read_f32(const std::string& name, std::vector<int64_t>* shape) const {
  const LoadedTensor t = fetch(name);
  std::vector<float> values(static_cast<size_t>(t.elements()));
  if (t.block)
    dequantize_blocks(*t.block, t.data, t.elements(), values.data());
  else
    convert(t.dtype, t.data, DType::F32, values.data(), values.size(), Overflow::Ieee);
  if (const float scale = fp8_scale(t, name); scale != 1.0f)
    for (float& v : values) v *= scale;
  if (shape != nullptr) *shape = t.shape;
  return values;
}

backend::Tensor WeightLoader::vector(const std::string& name) const { return backend_.to_device(host_f32(name)); }

std::unique_ptr<backend::LinearLayer> WeightLoader::linear(const std::string& prefix, bool has_bias) const {
  if (engine_) return engine_linear(prefix, has_bias);
  const LoadedTensor w = fetch(prefix + ".weight");
  if (w.shape.size() != 2) fail(FX_ERR_FORMAT, label(prefix + ".weight") + " is not a matrix");
  const std::string name = w.stored != nullptr ? w.stored->name : prefix + ".weight";
  std::vector<float> bias = has_bias ? read_f32(prefix + ".bias", nullptr) : std::vector<float>{};
  const std::vector<LoraPatch>* patches = lora_ != nullptr ? lora_->take(prefix + ".weight") : nullptr;
  const float scale = fp8_scale(w, prefix + ".weight");
  const backend::WeightFormat format = recorder_ != nullptr ? recorder_->format_for(prefix, format_) : format_;
  if (patches == nullptr) {
    const backend::HostMatrix matrix{w.dtype, w.data, w.shape[0], w.shape[1], label(name), scale, w.block};
    auto layer = backend_.linear_layer(matrix, bias, format, precision_);
    if (recorder_ != nullptr) recorder_->linear(prefix, *layer);
    return layer;
  }

  auto recorded = [this](const std::string& p, std::unique_ptr<backend::LinearLayer> layer) {
    if (recorder_ != nullptr) recorder_->linear(p, *layer);
    return layer;
  };
  // Merged in f32; "as stored" then keeps the stored dtype (bf16 stays bf16, fp8 is quantised again
  // with per-channel scales), so a LoRA changes the weights' values, never their size or speed.
  std::vector<float> merged(static_cast<size_t>(w.elements()));
  if (w.block)
    dequantize_blocks(*w.block, w.data, w.elements(), merged.data());
  else
    convert(w.dtype, w.data, DType::F32, merged.data(), merged.size(), Overflow::Ieee);
  if (scale != 1.0f)
    for (float& v : merged) v *= scale;
  LoraMerge::apply(*patches, merged.data(), w.shape[0], w.shape[1]);
  const std::string text = label(name) + " (with " + std::to_string(patches->size()) + " LoRA update(s))";
  if (format == backend::WeightFormat::AsStored && w.dtype == DType::F8_E4M3FN) {
    const backend::HostMatrix matrix{DType::F32, merged.data(), w.shape[0], w.shape[1], text, 1.0f, std::nullopt};
    return recorded(prefix, backend_.linear_layer(matrix, bias, backend::WeightFormat::FP8, precision_));
  }
  // GGUF blocks are not quantised again: a merged block-quantised weight is held as bf16.
  if (format == backend::WeightFormat::AsStored && (w.dtype == DType::BF16 || w.block)) {
    std::vector<uint16_t> rounded(merged.size());
    convert(DType::F32, merged.data(), DType::BF16, rounded.data(), rounded.size(), Overflow::Ieee);
    const backend::HostMatrix matrix{DType::BF16, rounded.data(), w.shape[0], w.shape[1], text, 1.0f, std::nullopt};
    return recorded(prefix, backend_.linear_layer(matrix, bias, format, precision_));
  }
  const backend::HostMatrix matrix{DType::F32, merged.data(), w.shape[0], w.shape[1], text, 1.0f, std::nullopt};
  return recorded(prefix, backend_.linear_layer(matrix, bias, format, precision_));
}

std::unique_ptr<backend::LinearLayer> WeightLoader::engine_linear(const std::string& prefix, bool has_bias) const {
  if (format_ != backend::WeightFormat::AsStored)
    fail(FX_ERR_UNSUPPORTED, checkpoint_.path() + ": an engine's weights keep the format they were built in; load it "
                                                  "with the weights as stored (no weight format or dtype option)");
  const auto entry = engine_linears_.find(prefix);
  if (entry == engine_linears_.end() || !entry->is_object())
    fail(FX_ERR_FORMAT, checkpoint_.path() + ": the engine lists no packed layer \"" + prefix + "\"");
  backend::PackedLinear p;
  p.layout = engine_layout_;
  const std::string dtype = entry->value("dtype", "");
  if (!dtype_from_name(dtype, &p.dtype))
    fail(FX_ERR_FORMAT, checkpoint_.path() + ": engine layer \"" + prefix + "\" has an unknown dtype \"" + dtype + "\"");
  p.n = entry->value("n", int64_t{0});
  p.k = entry->value("k", int64_t{0});
  // The layer must be the one the model needs: its shape from the configuration, and a bias exactly when the model
  // has one (a byte count alone lets a wrong n or an odd k through, since panels pad both).
  const auto want = expected_.find(prefix + ".weight");
  if (want == expected_.end() || want->second.size() != 2)
    fail(FX_ERR_INTERNAL, model_ + " loader asked for an unknown layer " + prefix);
  for (int d = 0; d < 2; ++d)
    if (want->second[d] >= 0 && want->second[d] != (d == 0 ? p.n : p.k))
      fail(FX_ERR_FORMAT, checkpoint_.path() + ": engine layer \"" + prefix + "\" is [" + std::to_string(p.n) + ", " +
                              std::to_string(p.k) + "] but the configuration needs [" + std::to_string(want->second[0]) +
                              ", " + std::to_string(want->second[1]) + "]");
  if (entry->value("bias", false) != has_bias)
    fail(FX_ERR_FORMAT, checkpoint_.path() + ": engine layer \"" + prefix + "\" says it has " +
                            (has_bias ? "no bias" : "a bias") + ", but the model's layer " + (has_bias ? "has one" : "has none"));
  const auto* panels = checkpoint_.find(prefix_ + prefix + ".weight.panels");
  if (panels == nullptr || panels->file == nullptr)
    fail(FX_ERR_FORMAT, checkpoint_.path() + ": the engine has no tensor \"" + prefix_ + prefix + ".weight.panels\"");
  if (panels->dtype != p.dtype)
    fail(FX_ERR_FORMAT, label(panels->name) + " is " + dtype_name(panels->dtype) + " but the engine lists the layer as " + dtype);
  p.panels = panels->data();
  p.bytes = static_cast<size_t>(panels->byte_size);
  if (const auto* scales = checkpoint_.find(prefix_ + prefix + ".weight.scales")) {
    if (scales->dtype != DType::F32)
      fail(FX_ERR_FORMAT, label(scales->name) + " must be F32, not " + dtype_name(scales->dtype));
    // Only the panels' file is kept mapped for the layer: its scales must be in the same file.
    if (scales->file != panels->file)
      fail(FX_ERR_FORMAT, label(scales->name) + " is in another file than its panels; an engine is one file");
    p.scales = reinterpret_cast<const float*>(scales->data());
    p.scale_count = static_cast<size_t>(scales->element_count());
  }
  if (has_bias) p.bias = read_f32(prefix + ".bias", nullptr);
  p.bf16_activations = precision_ == backend::Precision::Bf16Activations;
  if (p.n != (p.bias.empty() ? p.n : static_cast<int64_t>(p.bias.size())))
    fail(FX_ERR_FORMAT, label(prefix + ".bias") + " does not match the layer's " + std::to_string(p.n) + " outputs");
  return backend_.import_linear(p, panels->file->mapping());
}

std::unique_ptr<backend::LinearLayer> WeightLoader::linear_from(const std::vector<float>& weight, int64_t n, int64_t k,
                                                                const std::vector<float>& bias,
                                                                const std::string& label_text) const {
  const backend::HostMatrix matrix{DType::F32, weight.data(), n, k, label_text, 1.0f, std::nullopt};
  return backend_.linear_layer(matrix, bias, backend::WeightFormat::F32, backend::Precision::Exact);
}

}  // namespace fx::models
