// Engine files (`flux build`): a FLUX model's components with their linear weights already packed the way a
// backend runs them, so that loading is a memory map (docs/engines.md).
//
// The container is a safetensors file (any safetensors tool lists it). Its __metadata__ holds one key,
// kMetadataKey, whose value is this JSON:
//   { "format_version": 1, "builder": "FluxNative 0.9.0",
//     "target": {"backend": "cpu", "layout": "cpu-panels32.v1"},   the packing the weights are in
//     "precision": "bf16" | "fp8",                                   the transformer's linear layers
//     "components": [ { "name": "transformer" | "autoencoder" | "clip" | "t5",
//                       "kind": "flux_transformer" | "autoencoder" | "clip_text" | "t5_encoder",
//                       "prefix": "transformer/",   the component's tensors are prefix + the model's name
//                       "variant": "dev" | "schnell" | null, "config": {as describe() infers it},
//                       "parameter_count": N,
//                       "linears": { "<layer>": {"dtype": "BF16" | "F8_E4M3" | "F32", "n": N, "k": K,
//                                                "bias": bool} } } ],
//     "files": [ {"name": "tokenizer/vocab.json", "tensor": "files/tokenizer/vocab.json", "bytes": N} ],
//     "build": { what the builder's caller adds: sources and their hashes, the quality check } }
// A linear layer "<layer>" is the tensors prefix + "<layer>.weight.panels" (the backend's packed bytes, in
// the weights' dtype), "<layer>.weight.scales" (F32 per-channel scales, fp8 only) and "<layer>.bias" (F32);
// every other tensor a model reads is stored under its own name in the dtype the model keeps it in. Panels
// and scales start at multiples of 64 bytes in the file (padding tensors "__padding__.N" keep the data region
// without holes).
#pragma once

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace fx::io {
class Checkpoint;
}

namespace fx::engine {

constexpr const char* kMetadataKey = "fluxnative.engine";
constexpr int kFormatVersion = 1;
constexpr const char* kExtension = ".fluxengine";

// The engine JSON of a checkpoint's metadata, validated (types, known kinds, unique components, sizes that
// fit); nullopt when the metadata has no kMetadataKey. fx::Error: FX_ERR_FORMAT for malformed JSON or fields
// (naming `path` and the field), FX_ERR_UNSUPPORTED for another format version (saying which, and to rebuild).
std::optional<nlohmann::json> read_engine_json(const std::map<std::string, std::string>& metadata,
                                               const std::string& path);

// What models/recognize.h's describe() returns for an engine: the component of kind `want_kind` (or the first
// one when `want_kind` is empty) described as describe() describes a checkpoint, its key_prefix the
// component's, plus "engine": {format_version, builder, precision, target, layout, linears, components, files,
// build}. FX_ERR_UNSUPPORTED when the engine holds no component of that kind.
nlohmann::json describe_engine(const io::Checkpoint& checkpoint, const nlohmann::json& engine,
                               const std::string& want_kind);

// Replaces the engine JSON's "build" object of the engine file at `path` in place (engine_build.h leaves room in
// the header for it). Not atomic: meant for an engine not yet published (flux build amends OUTPUT.unchecked before
// renaming it), never one other processes are opening. fx::Error: FX_ERR_FORMAT when the file is not an engine, FX_ERR_INVALID_ARGUMENT when
// `build` is not an object or the new header would not fit the old one's space, FX_ERR_IO for file errors.
void amend_build_info(const std::string& path, const nlohmann::json& build);

}  // namespace fx::engine
