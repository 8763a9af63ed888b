// libFuzzer target for an engine file's header (engine/engine_format.h): the safetensors header, then the engine
// JSON in its metadata, the tensor list each component's configuration implies, then what the loader checks of each
// packed layer against the tensors the header lists
// (sizes and dtypes through PackedWeights::borrow, on an aligned stand-in buffer, since the data is not needed to
// reject a bad layout). fx::Error is the documented refusal; anything else escaping is a finding.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "core/error.h"
#include "engine/engine_format.h"
#include "io/safetensors.h"
#include "models/recognize.h"
#include "ops/cpu/linear.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  alignas(64) static uint8_t stand_in[1 << 16];
  try {
    const fx::io::SafetensorsHeader header = fx::io::parse_safetensors_header(data, size, size, "fuzz-input");
    const auto engine = fx::engine::read_engine_json(header.metadata, "fuzz-input");
    if (!engine) return 0;
    std::map<std::string, const fx::io::TensorEntry*> tensors;
    for (const auto& t : header.tensors) tensors[t.name] = &t;
    for (const auto& component : (*engine)["components"]) {
      const std::string prefix = component["prefix"].get<std::string>();
      // What a loader does with the configuration first: the tensor list it implies.
      const std::string kind = component["kind"].get<std::string>();
      fx::models::expected_tensors(kind, kind == "flux_transformer" || kind == "autoencoder" ? "bfl" : "hf",
                                   component["config"]);
      for (const auto& [layer, info] : component["linears"].items()) {
        const auto panels = tensors.find(prefix + layer + ".weight.panels");
        if (panels == tensors.end()) continue;
        fx::DType dtype;
        if (!fx::dtype_from_name(info["dtype"].get<std::string>(), &dtype)) __builtin_trap();  // validated above
        const auto scales = tensors.find(prefix + layer + ".weight.scales");
        const size_t bytes = static_cast<size_t>(panels->second->byte_size());
        const size_t scale_count = scales == tensors.end() ? 0 : static_cast<size_t>(scales->second->element_count());
        if (bytes > sizeof stand_in || scale_count * 4 > sizeof stand_in) continue;
        fx::cpu::PackedWeights::borrow(dtype, info["n"].get<int64_t>(), info["k"].get<int64_t>(), stand_in, bytes,
                                       scale_count > 0 ? reinterpret_cast<const float*>(stand_in) : nullptr, scale_count,
                                       nullptr);
      }
    }
  } catch (const fx::Error&) {
  }
  return 0;
}
