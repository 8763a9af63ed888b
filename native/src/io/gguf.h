// GGUF (ggml's single-file format, as stable-diffusion.cpp and ComfyUI-GGUF store FLUX): header parsing
// with full validation, memory-mapped zero-copy reading, and a writer for the project's tiny models.
//
// Layout (little-endian): "GGUF", u32 version (2 or 3), u64 tensor count, u64 KV count; the KVs (string
// key, u32 value type, value; strings are u64 length + bytes; arrays are u32 element type, u64 count,
// elements); the tensor infos (string name, u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type,
// u64 offset into the data section); padding to the alignment (KV "general.alignment", u32, default 32);
// the data section. Shapes here are outermost first (PyTorch order): ne reversed.
//
// Every violation is an fx::Error(FX_ERR_FORMAT) naming the file and, where one is at fault, the KV or
// tensor: bad magic or version, a count or length past the file, strings that are not UTF-8... (names
// and keys must be valid UTF-8), unknown KV or tensor types, more than 4 dims, a row length that is not
// whole blocks, element or byte counts that overflow, offsets not aligned, data outside the file,
// overlapping tensors, duplicate keys or tensor names. The parser never reads outside the bytes given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/block_quant.h"
#include "core/dtype.h"
#include "io/safetensors.h"

namespace fx::io {

constexpr uint32_t kGgufDefaultAlignment = 32;
constexpr int kGgufMaxDims = 4;

// GGUF KV value types.
enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, U64 = 10, I64 = 11,
  F64 = 12,
};

struct GgufKV {
  GgufValueType type;
  GgufValueType element_type = GgufValueType::U8;  // arrays only
  nlohmann::json value;                            // numbers, bools, strings; arrays as JSON arrays
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  DType dtype = DType::F32;           // F32, F16 or BF16; for block types F32, the decoded values' type
  std::optional<BlockType> block;     // set for the block-quantised types
  std::vector<int64_t> shape;         // outermost first
  uint64_t offset = 0;                // relative to the data section
  uint64_t byte_size = 0;
  uint64_t element_count() const;
};

struct GgufHeader {
  uint32_t version = 0;
  uint32_t alignment = kGgufDefaultAlignment;
  std::map<std::string, GgufKV> kvs;
  std::vector<GgufTensorInfo> tensors;  // in file order
  uint64_t data_start = 0;              // absolute offset of the data section
};

// Parses and validates the whole header of a GGUF file of `size` bytes held at `data`.
GgufHeader parse_gguf_header(const uint8_t* data, uint64_t size, const std::string& file_label);

// Whether the first bytes are GGUF's magic.
bool looks_like_gguf(const uint8_t* data, uint64_t size);

class GgufFile {
 public:
  static std::unique_ptr<GgufFile> open(const std::string& path);
  const std::string& path() const { return file_->path(); }
  const GgufHeader& header() const { return header_; }
  const uint8_t* tensor_data(const GgufTensorInfo& t) const { return file_->data() + header_.data_start + t.offset; }
  uint64_t absolute_offset(const GgufTensorInfo& t) const { return header_.data_start + t.offset; }
  // The KVs as text, for Checkpoint::metadata(): strings as they are, numbers and bools in JSON, arrays
  // as JSON arrays ("axes_dim" is a JSON list held in a string KV, the safetensors metadata convention).
  std::map<std::string, std::string> metadata() const;

 private:
  std::unique_ptr<MappedFile> file_;
  GgufHeader header_;
};

// One tensor to write: shape outermost first; dtype F32/F16/BF16 or, with `block`, the blocks' bytes.
struct GgufTensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::optional<BlockType> block;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t byte_size = 0;  // checked against shape and type
};

// Writes a version 3 file to `path + ".tmp"` and renames it over `path`; string KVs only (what the
// project's files carry), tensors in the given order, each at the next multiple of `alignment`.
// Throws FX_ERR_INVALID_ARGUMENT for bad tensors or duplicate names, FX_ERR_IO for file errors.
void write_gguf(const std::string& path, const std::vector<GgufTensorToWrite>& tensors,
                const std::map<std::string, std::string>& string_kvs = {}, uint32_t alignment = kGgufDefaultAlignment);

}  // namespace fx::io
