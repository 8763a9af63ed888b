// A checkpoint: one logical set of named tensors, stored as one safetensors file, one GGUF file, a sharded
// set described by `*.safetensors.index.json`, or a folder holding one of them (plus an optional config.json).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/block_quant.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace fx::io {

class Checkpoint {
 public:
  struct Tensor {
    std::string name;
    DType dtype;                     // block-quantised tensors: F32, the type of their decoded values
    std::vector<int64_t> shape;
    uint64_t byte_size;
    const SafetensorsFile* file;     // owning safetensors file (kept alive by the checkpoint), or null for GGUF
    const TensorEntry* entry;        // entry in file->header(), or null for GGUF
    std::optional<BlockType> block;  // GGUF block-quantised storage (Q8_0, Q4_K, ...)
    const GgufFile* gguf = nullptr;  // owning GGUF file, or null
    const GgufTensorInfo* gguf_entry = nullptr;
    const uint8_t* data() const { return file != nullptr ? file->tensor_data(*entry) : gguf->tensor_data(*gguf_entry); }
    uint64_t element_count() const { return file != nullptr ? entry->element_count() : gguf_entry->element_count(); }
    const std::string& file_path() const { return file != nullptr ? file->path() : gguf->path(); }
    uint64_t file_offset() const {
      return file != nullptr ? file->absolute_offset(*entry) : gguf->absolute_offset(*gguf_entry);
    }
    // "Q8_0" for block types, else the dtype's safetensors name.
    const char* type_name() const { return block ? block_layout(*block).name : dtype_name(dtype); }
  };

  enum class Source { File, Index, Folder };

  // path: a .safetensors file; a GGUF file (recognised by its magic, whatever its name); a
  // *.safetensors.index.json; or a folder containing exactly one *.safetensors.index.json, or else
  // exactly one *.safetensors or *.gguf file. With an index, every shard it
  // names is opened and every tensor must be in the shard the weight_map says (and nowhere else);
  // shards' extra tensors not in the weight_map are an error too. Duplicate names across files are
  // an error. Errors name the file (and tensor).
  static std::unique_ptr<Checkpoint> open(const std::string& path);

  const std::string& path() const { return path_; }          // as given
  Source source() const { return source_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }  // sorted by name
  const Tensor* find(std::string_view name) const;                // nullptr if absent
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }  // safetensors only
  const GgufFile* gguf() const { return gguf_.get(); }                                    // or null
  std::vector<std::string> file_paths() const;
  // config.json from the checkpoint's folder (the folder given, or the folder of the file/index), if present and valid JSON.
  const std::optional<nlohmann::json>& config() const { return config_; }
  // Union of the files' __metadata__ (first file wins on conflicts); a GGUF file's KVs as text.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  Source source_ = Source::File;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unique_ptr<GgufFile> gguf_;
  std::vector<Tensor> tensors_;
  std::optional<nlohmann::json> config_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fx::io
