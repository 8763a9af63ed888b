// Checkpoint resolution: a file, a sharded index, or a folder holding either. See checkpoint.h.
//
// An index is trusted for nothing: the shards must hold exactly the tensors it assigns to them, so
// a stale or hand-edited index fails loudly instead of silently loading a mix of weights.

#include "io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace fx::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
constexpr std::string_view kWeightsSuffix = ".safetensors";
constexpr const char* kConfigName = "config.json";

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string json_quoted(const std::string& text) { return json(text).dump(-1, ' ', false, json::error_handler_t::replace); }

std::string join_quoted(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + json_quoted(name);
  return out;
}

// Index and config files are small; refusing anything huge keeps a wrong path from parsing gigabytes.
constexpr uint64_t kMaxJsonFileBytes = 256ull * 1024 * 1024;

json read_json_file(const std::string& path) {
  std::unique_ptr<MappedFile> file = MappedFile::open(path);
  if (file->size() > kMaxJsonFileBytes) {
    fail(FX_ERR_FORMAT, path + ": " + std::to_string(file->size()) + " bytes is too large for a JSON file here");
  }
  const uint8_t* begin = file->data();
  try {
    return json::parse(begin, begin + file->size());
  } catch (const json::exception& ex) {
    fail(FX_ERR_FORMAT, path + ": invalid JSON: " + ex.what());
  }
}

// The folder a file sits in; "" (a bare file name) means the current directory.
fs::path folder_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

std::optional<json> read_config(const fs::path& folder) {
  const fs::path config_path = folder / kConfigName;
  std::error_code ec;
  if (!fs::exists(config_path, ec)) return std::nullopt;
  return read_json_file(config_path.string());
}

// A shard name from an index is joined to the index's folder; it must name a file in that folder and
// nothing else, whatever the index says.
void check_shard_name(const std::string& shard, const std::string& index_path, const std::string& tensor) {
  const bool escapes = shard.empty() || shard == "." || shard == ".." ||
                       shard.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos;
  if (escapes) {
    fail(FX_ERR_FORMAT, index_path + ": weight_map entry for tensor " + json_quoted(tensor) + " names shard " +
                            json_quoted(shard) + ", which is not a plain file name in the index's folder");
  }
}

struct IndexContents {
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::optional<uint64_t> total_size;
};

IndexContents parse_index(const json& index, const std::string& index_path) {
  if (!index.is_object()) fail(FX_ERR_FORMAT, index_path + ": index must be a JSON object");
  IndexContents contents;

  if (!index.contains("weight_map")) fail(FX_ERR_FORMAT, index_path + ": index has no \"weight_map\"");
  const json& weight_map = index.at("weight_map");
  if (!weight_map.is_object()) fail(FX_ERR_FORMAT, index_path + ": \"weight_map\" must be an object");
  if (weight_map.empty()) fail(FX_ERR_FORMAT, index_path + ": \"weight_map\" lists no tensors");
  for (const auto& [tensor, shard] : weight_map.items()) {
    if (!shard.is_string()) {
      fail(FX_ERR_FORMAT, index_path + ": weight_map entry for tensor " + json_quoted(tensor) + " must be a file name string");
    }
    check_shard_name(shard.get<std::string>(), index_path, tensor);
    contents.weight_map.emplace(tensor, shard.get<std::string>());
  }

  if (index.contains("metadata")) {
    const json& metadata = index.at("metadata");
    if (!metadata.is_object()) fail(FX_ERR_FORMAT, index_path + ": \"metadata\" must be an object");
    if (metadata.contains("total_size")) {
      const json& total = metadata.at("total_size");
      if (total.is_number_unsigned()) {
        contents.total_size = total.get<uint64_t>();
      } else if (total.is_number_float() && total.get<double>() >= 0 && total.get<double>() < 0x1p64 &&
                 total.get<double>() == static_cast<double>(static_cast<uint64_t>(total.get<double>()))) {
        // Some exporters write the byte count as a float ("1.0e9"); accept it when it is integral.
        contents.total_size = static_cast<uint64_t>(total.get<double>());
      } else {
        fail(FX_ERR_FORMAT, index_path + ": metadata.total_size must be a non-negative integer, got " + total.dump());
      }
    }
  }
  return contents;
}

std::unique_ptr<SafetensorsFile> open_shard(const fs::path& shard_path, const std::string& index_path) {
  try {
    return SafetensorsFile::open(shard_path.string());
  } catch (const Error& error) {
    // Keep the shard's own status (missing file vs. corrupt file) and say which index named it.
    throw Error(error.status(), std::string(error.what()) + " (shard named by " + index_path + ")");
  }
}

// Opens every shard the index names and checks that shards and weight_map agree exactly.
std::vector<std::unique_ptr<SafetensorsFile>> open_index(const std::string& index_path) {
  const IndexContents index = parse_index(read_json_file(index_path), index_path);
  const fs::path folder = folder_of(index_path);

  std::set<std::string> shard_names;
  for (const auto& [tensor, shard] : index.weight_map) shard_names.insert(shard);

  std::vector<std::unique_ptr<SafetensorsFile>> files;
  // shard name -> (tensor name -> entry), to check the weight_map against what the shards hold.
  std::map<std::string, std::map<std::string, const TensorEntry*>> held;
  for (const std::string& shard : shard_names) {
    files.push_back(open_shard(folder / shard, index_path));
    const SafetensorsFile& file = *files.back();
    auto& held_here = held[shard];
    for (const TensorEntry& entry : file.header().tensors) {
      auto listed = index.weight_map.find(entry.name);
      if (listed == index.weight_map.end()) {
        fail(FX_ERR_FORMAT, file.path() + ": tensor " + json_quoted(entry.name) + " is not listed in the weight_map of " +
                                index_path);
      }
      if (listed->second != shard) {
        fail(FX_ERR_FORMAT, file.path() + ": tensor " + json_quoted(entry.name) + " is in this shard but the weight_map of " +
                                index_path + " assigns it to " + json_quoted(listed->second));
      }
      held_here.emplace(entry.name, &entry);
    }
  }

  uint64_t total_bytes = 0;
  for (const auto& [tensor, shard] : index.weight_map) {
    const auto& held_here = held.at(shard);
    auto found = held_here.find(tensor);
    if (found == held_here.end()) {
      fail(FX_ERR_FORMAT, index_path + ": weight_map puts tensor " + json_quoted(tensor) + " in " + json_quoted(shard) +
                              ", but " + (folder / shard).string() + " does not hold it");
    }
    if (__builtin_add_overflow(total_bytes, found->second->byte_size(), &total_bytes)) {
      fail(FX_ERR_FORMAT, index_path + ": tensor sizes add up to more than 64 bits");
    }
  }
  if (index.total_size && *index.total_size != total_bytes) {
    fail(FX_ERR_FORMAT, index_path + ": metadata.total_size is " + std::to_string(*index.total_size) +
                            " but the tensors it lists hold " + std::to_string(total_bytes) + " bytes");
  }
  return files;
}

// GGUF by its magic (its files are named *.gguf, but a renamed one is still GGUF).
bool is_gguf(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;  // SafetensorsFile::open reports the error
  uint8_t magic[4] = {};
  const size_t got = std::fread(magic, 1, 4, f);
  std::fclose(f);
  return looks_like_gguf(magic, got);
}

struct FolderChoice {
  std::string path;
  bool is_index;
};

// Picks the index, or else the single weights file, in a folder.
FolderChoice choose_in_folder(const std::string& folder) {
  std::vector<std::string> indexes;
  std::vector<std::string> weights;
  std::error_code ec;
  fs::directory_iterator it(folder, ec);
  if (ec) fail(FX_ERR_IO, folder + ": cannot list folder: " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    // Follows symlinks: Hugging Face cache snapshots link every file to a blob elsewhere.
    std::error_code status_ec;
    if (!it->is_regular_file(status_ec)) continue;
    const std::string name = it->path().filename().string();
    if (ends_with(name, kIndexSuffix)) indexes.push_back(name);
    else if (ends_with(name, kWeightsSuffix) || ends_with(name, ".gguf")) weights.push_back(name);
  }
  if (ec) fail(FX_ERR_IO, folder + ": cannot list folder: " + ec.message());
  std::sort(indexes.begin(), indexes.end());
  std::sort(weights.begin(), weights.end());

  const fs::path base(folder);
  if (indexes.size() == 1) return {(base / indexes[0]).string(), true};
  if (indexes.size() > 1) {
    fail(FX_ERR_FORMAT, folder + ": holds several index files (" + join_quoted(indexes) +
                            "); open the one you mean directly");
  }
  if (weights.size() == 1) return {(base / weights[0]).string(), false};
  if (weights.empty()) {
    fail(FX_ERR_NOT_FOUND, folder + ": holds no *.safetensors or *.gguf file and no *.safetensors.index.json");
  }
  fail(FX_ERR_FORMAT, folder + ": holds several .safetensors / .gguf files (" + join_quoted(weights) +
                          ") and no *.safetensors.index.json to say how they belong together; open one file directly");
}

}  // namespace

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& path) {
  auto checkpoint = std::make_unique<Checkpoint>();
  checkpoint->path_ = path;

  std::error_code ec;
  const bool is_folder = fs::is_directory(path, ec);
  std::string target = path;
  bool is_index = ends_with(path, ".json");
  fs::path config_folder;
  if (is_folder) {
    const FolderChoice choice = choose_in_folder(path);
    checkpoint->source_ = Source::Folder;
    target = choice.path;
    is_index = choice.is_index;
    config_folder = fs::path(path);
  } else {
    checkpoint->source_ = is_index ? Source::Index : Source::File;
    config_folder = folder_of(path);
  }

  if (is_index) {
    checkpoint->files_ = open_index(target);
  } else if (is_gguf(target)) {
    checkpoint->gguf_ = GgufFile::open(target);
    for (const GgufTensorInfo& info : checkpoint->gguf_->header().tensors) {
      Tensor t{info.name, info.dtype, info.shape, info.byte_size, nullptr, nullptr, info.block,
               checkpoint->gguf_.get(), &info};
      checkpoint->tensors_.push_back(std::move(t));
    }
    checkpoint->metadata_ = checkpoint->gguf_->metadata();
  } else {
    checkpoint->files_.push_back(SafetensorsFile::open(target));
  }

  for (const auto& file : checkpoint->files_) {
    for (const TensorEntry& entry : file->header().tensors) {
      checkpoint->tensors_.push_back(
          Tensor{entry.name, entry.dtype, entry.shape, entry.byte_size(), file.get(), &entry, std::nullopt, nullptr, nullptr});
    }
    for (const auto& [key, value] : file->header().metadata) checkpoint->metadata_.emplace(key, value);
  }
  std::sort(checkpoint->tensors_.begin(), checkpoint->tensors_.end(),
            [](const Tensor& a, const Tensor& b) { return a.name < b.name; });
  // The index checks already make names unique; this guards the invariant find() relies on.
  for (size_t i = 1; i < checkpoint->tensors_.size(); ++i) {
    if (checkpoint->tensors_[i].name == checkpoint->tensors_[i - 1].name) {
      fail(FX_ERR_FORMAT, path + ": tensor " + json_quoted(checkpoint->tensors_[i].name) + " is in both " +
                              checkpoint->tensors_[i - 1].file_path() + " and " + checkpoint->tensors_[i].file_path());
    }
  }

  checkpoint->config_ = read_config(config_folder);
  return checkpoint;
}

std::vector<std::string> Checkpoint::file_paths() const {
  std::vector<std::string> paths;
  for (const auto& f : files_) paths.push_back(f->path());
  if (gguf_) paths.push_back(gguf_->path());
  return paths;
}

const Checkpoint::Tensor* Checkpoint::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const Tensor& tensor, std::string_view key) { return tensor.name < key; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

}  // namespace fx::io
