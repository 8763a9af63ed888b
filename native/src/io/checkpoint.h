// A checkpoint: one logical set of named tensors, stored as one safetensors file, a sharded set
// described by `*.safetensors.index.json`, or a folder holding either (plus an optional config.json).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace fx::io {

class Checkpoint {
 public:
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t byte_size;
    const SafetensorsFile* file;   // owning file (kept alive by the checkpoint)
    const TensorEntry* entry;      // entry in file->header()
    const uint8_t* data() const { return file->tensor_data(*entry); }
    uint64_t element_count() const { return entry->element_count(); }
  };

  enum class Source { File, Index, Folder };

  // path: a .safetensors file; a *.safetensors.index.json; or a folder containing exactly one
  // *.safetensors.index.json, or else exactly one *.safetensors file. With an index, every shard it
  // names is opened and every tensor must be in the shard the weight_map says (and nowhere else);
  // shards' extra tensors not in the weight_map are an error too. Duplicate names across files are
  // an error. Errors name the file (and tensor).
  static std::unique_ptr<Checkpoint> open(const std::string& path);

  const std::string& path() const { return path_; }          // as given
  Source source() const { return source_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }  // sorted by name
  const Tensor* find(std::string_view name) const;                // nullptr if absent
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // config.json from the checkpoint's folder (the folder given, or the folder of the file/index), if present and valid JSON.
  const std::optional<nlohmann::json>& config() const { return config_; }
  // Union of the files' __metadata__ (first file wins on conflicts).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  Source source_ = Source::File;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<Tensor> tensors_;
  std::optional<nlohmann::json> config_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fx::io
