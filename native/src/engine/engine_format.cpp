// Reading an engine's description (engine_format.h). Everything in the JSON comes from a file, so every
// field is checked for presence and type before use; the fuzz target fuzz_engine_header runs this on damaged
// headers.
#include "engine/engine_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/recognize.h"

namespace fx::engine {

namespace {

using nlohmann::json;

// The model naming each component kind asks in (models/weight_loader.h).
const char* naming_of(const std::string& kind) {
  if (kind == "flux_transformer" || kind == "autoencoder") return "bfl";
  if (kind == "clip_text" || kind == "t5_encoder") return "hf";
  return nullptr;
}

class Checker {
 public:
  explicit Checker(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void bad(const std::string& field, const std::string& what) const {
    fail(FX_ERR_FORMAT, path_ + ": engine metadata: " + field + " " + what);
  }
  const json& member(const json& object, const std::string& key, json::value_t type, const std::string& field) const {
    const auto it = object.find(key);
    if (it == object.end()) bad(field + "." + key, "is missing");
    const bool ok = type == json::value_t::number_integer ? it->is_number_integer() : it->type() == type;
    if (!ok) bad(field + "." + key, "has the wrong type");
    return *it;
  }
  std::string text(const json& object, const std::string& key, const std::string& field) const {
    return member(object, key, json::value_t::string, field).get<std::string>();
  }
  int64_t size(const json& object, const std::string& key, const std::string& field) const {
    const json& v = member(object, key, json::value_t::number_integer, field);
    const int64_t n = v.get<int64_t>();
    if (n < 1 || n > (int64_t{1} << 31)) bad(field + "." + key, "is " + v.dump() + ", outside [1, 2^31]");
    return n;
  }

 private:
  std::string path_;
};

}  // namespace

std::optional<json> read_engine_json(const std::map<std::string, std::string>& metadata, const std::string& path) {
  const auto entry = metadata.find(kMetadataKey);
  if (entry == metadata.end()) return std::nullopt;
  json e;
  try {
    e = json::parse(entry->second);
  } catch (const json::exception& ex) {
    fail(FX_ERR_FORMAT, path + ": engine metadata is not valid JSON: " + ex.what());
  }
  const Checker c(path);
  if (!e.is_object()) c.bad("(root)", "is not an object");
  const json& version = c.member(e, "format_version", json::value_t::number_integer, "(root)");
  const std::string builder = e.contains("builder") && e["builder"].is_string() ? e["builder"].get<std::string>()
                                                                                  : "an unknown builder";
  if (version.get<int64_t>() != kFormatVersion)
    fail(FX_ERR_UNSUPPORTED, path + ": engine format version " + version.dump() + " (built by " + builder +
                                 "); this FluxNative reads version " + std::to_string(kFormatVersion) +
                                 ": build the engine again with this version's `flux build`");
  const json& target = c.member(e, "target", json::value_t::object, "(root)");
  c.text(target, "backend", "target");
  c.text(target, "layout", "target");
  if (e.contains("fp8_kept_bf16")) {
    const json& kept = c.member(e, "fp8_kept_bf16", json::value_t::array, "(root)");
    for (const json& k : kept)
      if (!k.is_string()) c.bad("fp8_kept_bf16", "holds something other than names");
  }
  if (e.contains("t5_precision")) c.text(e, "t5_precision", "(root)");
  const std::string precision = c.text(e, "precision", "(root)");
  if (precision != "bf16" && precision != "fp8") c.bad("precision", "is \"" + precision + "\", not bf16 or fp8");

  const json& components = c.member(e, "components", json::value_t::array, "(root)");
  if (components.empty()) c.bad("components", "is empty");
  std::set<std::string> names, kinds, prefixes;
  for (size_t i = 0; i < components.size(); ++i) {
    const std::string field = "components[" + std::to_string(i) + "]";
    const json& comp = components[i];
    if (!comp.is_object()) c.bad(field, "is not an object");
    const std::string name = c.text(comp, "name", field);
    const std::string kind = c.text(comp, "kind", field);
    const std::string prefix = c.text(comp, "prefix", field);
    if (naming_of(kind) == nullptr) c.bad(field + ".kind", "\"" + kind + "\" is not a component kind");
    if (!names.insert(name).second || !kinds.insert(kind).second) c.bad(field, "repeats a component name or kind");
    if (prefix.empty() || prefix.back() != '/' || !prefixes.insert(prefix).second)
      c.bad(field + ".prefix", "must be a unique name ending in '/'");
    // The configuration drives the model's shapes and loops: plain values only, integers in a sane range.
    const json& config = c.member(comp, "config", json::value_t::object, field);
    for (const auto& [key, value] : config.items()) {
      const std::string cf = field + ".config." + key;
      auto check_number = [&](const json& v) {
        if (v.is_number_integer() && (v.get<int64_t>() < -1 || v.get<int64_t>() > (int64_t{1} << 20)))
          c.bad(cf, "is " + v.dump() + ", outside [-1, 2^20]");
        if (v.is_number_float() && !std::isfinite(v.get<double>())) c.bad(cf, "is not finite");
      };
      if (value.is_array()) {
        if (value.size() > 64) c.bad(cf, "has more than 64 entries");
        for (const json& v : value) {
          // Lists of sizes (ch_mult, axes_dim), and the recognizer's list of defaults it assumed.
          if (key == "defaults_used" ? !v.is_string() : !v.is_number()) c.bad(cf, "holds a value of the wrong type");
          check_number(v);
        }
      } else if (value.is_object()) {
        c.bad(cf, "is an object");
      } else {
        check_number(value);
      }
      // Counts of blocks and layers size loops over tensor names: far beyond any FLUX model is a damaged file.
      const bool count = key.find("depth") != std::string::npos || key.find("layers") != std::string::npos ||
                         key.find("num_res_blocks") != std::string::npos;
      if (count && value.is_number_integer() && value.get<int64_t>() > 1024) c.bad(cf, "is over 1024");
    }
    // The tensor list the configuration implies is what a loader builds first: it must be buildable.
    try {
      models::expected_tensors(kind, naming_of(kind), config);
    } catch (const json::exception& ex) {
      c.bad(field + ".config", std::string("does not describe a model: ") + ex.what());
    } catch (const Error& ex) {
      c.bad(field + ".config", std::string("does not describe a model: ") + ex.what());
    }
    if (comp.contains("parameter_count") && !comp["parameter_count"].is_number_integer())
      c.bad(field + ".parameter_count", "has the wrong type");
    if (comp.contains("variant") && !comp["variant"].is_string() && !comp["variant"].is_null())
      c.bad(field + ".variant", "has the wrong type");
    const json& linears = c.member(comp, "linears", json::value_t::object, field);
    for (const auto& [layer, info] : linears.items()) {
      const std::string lf = field + ".linears[\"" + layer + "\"]";
      if (!info.is_object()) c.bad(lf, "is not an object");
      DType dtype;
      const std::string dtype_text = c.text(info, "dtype", lf);
      if (!dtype_from_name(dtype_text, &dtype) ||
          (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F8_E4M3FN))
        c.bad(lf + ".dtype", "\"" + dtype_text + "\" is not F32, BF16 or F8_E4M3");
      c.size(info, "n", lf);
      c.size(info, "k", lf);
      c.member(info, "bias", json::value_t::boolean, lf);
    }
  }
  if (e.contains("files")) {
    const json& files = c.member(e, "files", json::value_t::array, "(root)");
    for (size_t i = 0; i < files.size(); ++i) {
      const std::string field = "files[" + std::to_string(i) + "]";
      if (!files[i].is_object()) c.bad(field, "is not an object");
      const std::string name = c.text(files[i], "name", field);
      // A carried file is extracted under its name by the .NET side: plain relative names only, from its own tensor.
      bool plain = !name.empty() && name.size() < 256 && name.front() != '/' && name.find("..") == std::string::npos;
      for (char ch : name) plain = plain && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.' || ch == '/');
      if (!plain) c.bad(field + ".name", "\"" + name + "\" is not a plain relative file name");
      if (c.text(files[i], "tensor", field) != "files/" + name) c.bad(field + ".tensor", "is not \"files/" + name + "\"");
    }
  }
  return e;
}

json describe_engine(const io::Checkpoint& checkpoint, const json& engine, const std::string& want_kind) {
  const json* chosen = nullptr;
  std::string held;
  for (const json& comp : engine["components"]) {
    held += (held.empty() ? "" : ", ") + comp["kind"].get<std::string>();
    if (chosen == nullptr && (want_kind.empty() || comp["kind"] == want_kind)) chosen = &comp;
  }
  if (chosen == nullptr)
    fail(FX_ERR_UNSUPPORTED, checkpoint.path() + ": the engine holds no " + want_kind + " (it holds " + held + ")");
  const json& comp = *chosen;
  const std::string prefix = comp["prefix"].get<std::string>();

  json d;
  d["kind"] = comp["kind"];
  d["layout"] = naming_of(comp["kind"].get<std::string>());
  d["variant"] = comp.value("variant", json());
  d["config"] = comp["config"];
  d["key_prefix"] = prefix;
  json components = json::array();
  uint64_t bytes = 0, component_tensors = 0;
  json dtypes = json::object();
  for (const io::Checkpoint::Tensor& t : checkpoint.tensors()) {
    bytes += t.byte_size;
    if (t.name.compare(0, prefix.size(), prefix) == 0) {
      ++component_tensors;
      dtypes[t.type_name()] = dtypes.value(t.type_name(), 0) + 1;
    }
  }
  for (const json& c : engine["components"]) {
    size_t n = 0;
    const std::string p = c["prefix"].get<std::string>();
    for (const io::Checkpoint::Tensor& t : checkpoint.tensors()) n += t.name.compare(0, p.size(), p) == 0;
    components.push_back({{"prefix", p}, {"kind", c["kind"]}, {"layout", naming_of(c["kind"].get<std::string>())},
                          {"tensor_count", n}});
  }
  d["components"] = components;
  d["parameter_count"] = comp.value("parameter_count", 0);
  d["tensor_count"] = component_tensors;
  d["total_bytes"] = bytes;
  d["dtypes"] = dtypes;
  d["source"] = "file";
  d["files"] = checkpoint.file_paths();
  d["metadata"] = json::object();  // the engine JSON is under "engine"
  d["has_config_json"] = false;
  d["checks"] = json::object();
  d["notes"] = json::array({"a FluxNative engine (format " + std::to_string(kFormatVersion) + ", " +
                            engine["precision"].get<std::string>() + ", packed as " +
                            engine["target"]["layout"].get<std::string>() + ")"});
  d["problems"] = json::array();
  json info = engine;
  info["layout"] = engine["target"]["layout"];
  info["linears"] = comp["linears"];
  d["engine"] = info;
  return d;
}

void amend_build_info(const std::string& path, const json& build) {
  if (!build.is_object()) fail(FX_ERR_INVALID_ARGUMENT, path + ": the build record must be a JSON object");
  json header;
  uint64_t header_size = 0;
  {
    const auto file = io::SafetensorsFile::open(path);  // validates the whole header
    header_size = file->header().header_size;
    json engine = read_engine_json(file->header().metadata, path).value_or(json());
    if (engine.is_null()) fail(FX_ERR_FORMAT, path + " is not a FluxNative engine (its metadata has no \"" +
                                                 std::string(kMetadataKey) + "\")");
    engine["build"] = build;
    const uint8_t* bytes = file->mapping()->data();
    header = json::parse(bytes + 8, bytes + 8 + header_size);
    header["__metadata__"][kMetadataKey] = engine.dump();
  }
  std::string text = header.dump();
  if (text.size() > header_size)
    fail(FX_ERR_INVALID_ARGUMENT, path + ": the new engine header takes " + std::to_string(text.size()) +
                                      " bytes, more than the " + std::to_string(header_size) + " it has");
  text.append(header_size - text.size(), ' ');  // the data region stays where it is
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(FX_ERR_IO, path + ": cannot open for writing: " + std::strerror(errno));
  ssize_t written = ::pwrite(fd, text.data(), text.size(), 8);
  if (written >= 0 && written != static_cast<ssize_t>(text.size())) errno = EIO;  // a short write sets no errno
  const bool synced = written == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (written != static_cast<ssize_t>(text.size()) || !synced)
    fail(FX_ERR_IO, path + ": rewriting the header failed: " + std::strerror(errno));
}

}  // namespace fx::engine
