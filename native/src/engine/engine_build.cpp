#include "engine/engine_build.h"

#include <map>
#include <set>

#include "core/error.h"
#include "engine/engine_format.h"
#include "fluxnative.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/autoencoder.h"
#include "models/flux_transformer.h"
#include "models/recognize.h"
#include "models/text_encoders.h"
#include "models/weight_loader.h"

namespace fx::engine {

namespace {

using nlohmann::json;
using backend::WeightFormat;

constexpr uint64_t kAlign = 64;  // the CPU kernels' aligned loads; also a cache line

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Sees one component's load: the packed linear layers (alive while the model is) and copies of every other
// tensor the model read (host_f32 values are temporaries).
class ComponentRecorder final : public models::WeightRecorder {
 public:
  struct Plain {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };

  ComponentRecorder(WeightFormat format, bool flux_fp8) : format_(format), flux_fp8_(flux_fp8) {}

  void linear(const std::string& prefix, const backend::LinearLayer& layer) override {
    if (!seen_linears_.insert(prefix).second) fail(FX_ERR_INTERNAL, "engine build: layer " + prefix + " loaded twice");
    linears_.push_back({prefix, &layer});
  }
  void tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data) override {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    Plain p{dtype, shape, {}};
    p.bytes.assign(static_cast<const uint8_t*>(data),
                   static_cast<const uint8_t*>(data) + static_cast<size_t>(count) * dtype_size(dtype));
    plain_[name] = std::move(p);  // a tensor read twice is stored once
  }
  WeightFormat format_for(const std::string& prefix, WeightFormat) override {
    return flux_fp8_ && fp8_keeps_bf16(prefix) ? WeightFormat::BF16 : format_;
  }

  const std::vector<std::pair<std::string, const backend::LinearLayer*>>& linears() const { return linears_; }
  const std::map<std::string, Plain>& plain() const { return plain_; }

 private:
  WeightFormat format_;
  bool flux_fp8_;
  std::set<std::string> seen_linears_;
  std::vector<std::pair<std::string, const backend::LinearLayer*>> linears_;
  std::map<std::string, Plain> plain_;
};

std::vector<int64_t> vector_shape(size_t count) { return {static_cast<int64_t>(count)}; }

// Writes the component's recorded tensors under `prefix`; returns its "linears" entry and parameter count.
json write_component(io::SafetensorsStreamWriter& out, backend::Backend& backend, const ComponentRecorder& rec,
                     const std::string& prefix, int64_t* parameters) {
  json linears = json::object();
  std::map<std::string, std::vector<float>> biases;
  *parameters = 0;
  for (const auto& [layer, packed_layer] : rec.linears()) {
    const backend::PackedLinear p = backend.export_linear(*packed_layer);
    const size_t esize = dtype_size(p.dtype);
    if (p.bytes % esize != 0) fail(FX_ERR_INTERNAL, "engine build: " + layer + " packs to a partial element");
    out.add({prefix + layer + ".weight.panels", p.dtype, vector_shape(p.bytes / esize), p.panels, p.bytes}, kAlign);
    if (p.scales != nullptr)
      out.add({prefix + layer + ".weight.scales", DType::F32, vector_shape(p.scale_count), p.scales,
               p.scale_count * sizeof(float)},
              kAlign);
    if (!p.bias.empty()) biases[layer + ".bias"] = p.bias;
    linears[layer] = {{"dtype", dtype_name(p.dtype)}, {"n", p.n}, {"k", p.k}, {"bias", !p.bias.empty()}};
    *parameters += p.n * p.k + static_cast<int64_t>(p.bias.size());
  }
  for (const auto& [name, bias] : biases)
    out.add({prefix + name, DType::F32, vector_shape(bias.size()), bias.data(), bias.size() * sizeof(float)}, kAlign);
  for (const auto& [name, t] : rec.plain()) {
    if (biases.count(name) != 0) continue;
    out.add({prefix + name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()}, kAlign);
    *parameters += static_cast<int64_t>(t.bytes.size() / dtype_size(t.dtype));
  }
  return linears;
}

const char* precision_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::AsStored: return "as_stored";
    case WeightFormat::F32: return "f32";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::FP8: return "fp8";
  }
  return "?";
}

}  // namespace

bool fp8_keeps_bf16(const std::string& layer) {
  for (const char* p : {"img_in", "txt_in", "time_in.", "vector_in.", "guidance_in.", "final_layer."})
    if (starts_with(layer, p)) return true;
  return ends_with(layer, "_mod.lin") || ends_with(layer, ".modulation.lin");
}

void build_engine(const BuildOptions& o, const std::string& path) {
  if (o.transformer == nullptr) fail(FX_ERR_INVALID_ARGUMENT, "engine build: the transformer is required");
  if (o.precision != WeightFormat::BF16 && o.precision != WeightFormat::FP8)
    fail(FX_ERR_INVALID_ARGUMENT, "engine build: the transformer's precision must be bf16 or fp8");
  if (o.t5_precision == WeightFormat::F32)
    fail(FX_ERR_INVALID_ARGUMENT, "engine build: T5's precision must be as stored, bf16 or fp8");
  if (!o.build_info.is_object()) fail(FX_ERR_INVALID_ARGUMENT, "engine build: the build information must be a JSON object");
  for (const io::Checkpoint* c : {o.transformer, o.autoencoder, o.clip, o.t5})
    if (c != nullptr && read_engine_json(c->metadata(), c->path()))
      fail(FX_ERR_INVALID_ARGUMENT, "engine build: " + c->path() + " is an engine already; build from the published weights");
  const std::shared_ptr<backend::Backend> backend = o.backend ? o.backend : backend::cpu_backend();
  const std::string layout = backend->weight_layout();
  if (layout.empty())
    fail(FX_ERR_UNSUPPORTED, "engine build: " + backend->describe() +
                                 " has no engine layout yet (engines are built for the CPU; CUDA packs at load)");

  // The header is written last, into space reserved before the data: ~1 KiB a tensor is several times what an
  // entry and its layer record take.
  uint64_t tensors = 0;
  for (const io::Checkpoint* c : {o.transformer, o.autoencoder, o.clip, o.t5})
    if (c != nullptr) tensors += c->tensors().size();
  const uint64_t reserve = (1ull << 20) + 1024 * (tensors + o.files.size()) + 2 * o.build_info.dump().size();
  io::SafetensorsStreamWriter out(path, reserve);

  json components = json::array();
  auto add_component = [&](const char* name, const io::Checkpoint& source, const std::string& kind,
                           ComponentRecorder& rec, auto&& load) {
    const json description = models::describe(source, kind);
    {
      auto model = load(rec);  // freed at the end of this scope, once written
      int64_t parameters = 0;
      const std::string prefix = std::string(name) + "/";
      json linears = write_component(out, *backend, rec, prefix, &parameters);
      components.push_back({{"name", name},
                            {"kind", kind},
                            {"prefix", prefix},
                            {"variant", description.value("variant", json())},
                            {"config", description["config"]},
                            {"parameter_count", parameters},
                            {"source", source.path()},
                            {"linears", std::move(linears)}});
    }
  };

  {
    ComponentRecorder rec(o.precision, o.precision == WeightFormat::FP8);
    add_component("transformer", *o.transformer, "flux_transformer", rec, [&](ComponentRecorder& r) {
      return models::FluxTransformer::load(*o.transformer, o.precision, backend::Precision::Exact, backend, {}, &r);
    });
  }
  if (o.t5 != nullptr) {
    ComponentRecorder rec(o.t5_precision, false);
    add_component("t5", *o.t5, "t5_encoder", rec, [&](ComponentRecorder& r) {
      return models::TextEncoder::load(*o.t5, o.t5_precision, backend, "t5_encoder", &r);
    });
  }
  if (o.clip != nullptr) {
    ComponentRecorder rec(WeightFormat::AsStored, false);
    add_component("clip", *o.clip, "clip_text", rec, [&](ComponentRecorder& r) {
      return models::TextEncoder::load(*o.clip, WeightFormat::AsStored, backend, "clip_text", &r);
    });
  }
  if (o.autoencoder != nullptr) {
    ComponentRecorder rec(WeightFormat::F32, false);
    add_component("autoencoder", *o.autoencoder, "autoencoder", rec,
                  [&](ComponentRecorder& r) { return models::Autoencoder::load(*o.autoencoder, backend, &r); });
  }

  json files = json::array();
  std::set<std::string> file_names;
  for (const EmbeddedFile& f : o.files) {
    if (f.name.empty() || !file_names.insert(f.name).second)
      fail(FX_ERR_INVALID_ARGUMENT, "engine build: embedded file names must be unique and non-empty (\"" + f.name + "\")");
    if (f.size > 0 && f.data == nullptr) fail(FX_ERR_INVALID_ARGUMENT, "engine build: embedded file " + f.name + " has no data");
    const std::string tensor = "files/" + f.name;
    out.add({tensor, DType::U8, vector_shape(f.size), f.data, f.size});
    files.push_back({{"name", f.name}, {"tensor", tensor}, {"bytes", f.size}});
  }

  const json engine = {{"format_version", kFormatVersion},
                       {"builder", std::string("FluxNative ") + fx_version()},
                       {"target", {{"backend", backend->device().name()}, {"layout", layout}}},
                       {"precision", precision_name(o.precision)},
                       {"t5_precision", precision_name(o.t5_precision)},
                       {"fp8_kept_bf16", o.precision == WeightFormat::FP8
                                             ? json::array({"img_in", "txt_in", "time_in.*", "vector_in.*",
                                                            "guidance_in.*", "*_mod.lin", "*.modulation.lin",
                                                            "final_layer.*"})
                                             : json::array()},
                       {"components", components},
                       {"files", files},
                       {"build", o.build_info}};
  out.finish({{kMetadataKey, engine.dump()}});
}

}  // namespace fx::engine
