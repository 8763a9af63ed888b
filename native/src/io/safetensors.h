// safetensors: header parsing with full validation, memory-mapped zero-copy reading, writing.
//
// Format: u64 little-endian N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets:[b,e]}, "__metadata__": {str: str}},
// then the data region. Offsets are relative to the first byte after the header.
// Every violation is an fx::Error(FX_ERR_FORMAT) whose message names the file and, where one is at
// fault, the tensor; the parser never reads outside the bytes it was given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace fx::io {

// Largest header we accept (the safetensors reference implementation's limit).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1024 * 1024;

struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // at most FX_MAX_DIMS dims; 0-d (scalar) allowed; zero-sized dims allowed
  uint64_t begin = 0;          // relative to the data region
  uint64_t end = 0;
  uint64_t element_count() const;
  uint64_t byte_size() const { return end - begin; }
};

struct SafetensorsHeader {
  uint64_t header_size = 0;                      // N
  std::vector<TensorEntry> tensors;              // in data-offset order
  std::map<std::string, std::string> metadata;   // "__metadata__"
  uint64_t data_start() const { return 8 + header_size; }
};

// Parses and validates the header of a safetensors file of `file_size` bytes. `data` holds the
// file's first `available` bytes (at least the whole header when the file is well formed).
// Checks: 8-byte prefix present; N <= kMaxSafetensorsHeaderBytes and 8 + N <= file_size; JSON is an
// object; each tensor has exactly dtype/shape/data_offsets of the right types; known dtype; shape of
// non-negative ints, at most FX_MAX_DIMS; element_count * dtype size (no overflow; the product of
// the non-zero dims must fit int64 even when a zero dim makes the tensor empty) == end - begin;
// begin <= end; data region [8+N+begin, 8+N+end) inside the file; no two tensors overlap; names
// unique and non-empty (a key repeated in the JSON is an error, not "last one wins"); __metadata__
// an object of strings. `file_label` is used in messages. A caller passing fewer than the 8 + N
// header bytes of a file that holds them gets FX_ERR_INVALID_ARGUMENT (its mistake, not the file's).
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t available, uint64_t file_size,
                                           const std::string& file_label);

// A read-only memory mapping of a whole file (empty files are allowed and map nothing).
class MappedFile {
 public:
  static std::unique_ptr<MappedFile> open(const std::string& path);  // FX_ERR_IO / FX_ERR_NOT_FOUND
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

class SafetensorsFile {
 public:
  // Maps the file and validates its header.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  const std::string& path() const { return file_->path(); }
  const SafetensorsHeader& header() const { return header_; }
  uint64_t file_size() const { return file_->size(); }
  // Zero-copy view of a tensor's bytes (entry must come from this file's header).
  const uint8_t* tensor_data(const TensorEntry& entry) const { return file_->data() + header_.data_start() + entry.begin; }
  uint64_t absolute_offset(const TensorEntry& entry) const { return header_.data_start() + entry.begin; }
  // The mapping itself, for memory that must outlive this object (an engine's weights used in place).
  std::shared_ptr<const MappedFile> mapping() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;        // element_count * dtype_size bytes
  uint64_t byte_size;      // checked against shape × dtype
};

// Writes tensors in the given order to `path + ".tmp"` and renames it over `path`. The header is
// padded with spaces so the data region starts 8-byte aligned; the data blocks follow one another
// without gaps (the reference safetensors reader rejects gaps), so a block is 8-byte aligned when the
// blocks before it have sizes that are multiples of 8. Throws fx::Error (FX_ERR_INVALID_ARGUMENT for bad
// tensors or duplicate names, FX_ERR_IO for file errors).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A safetensors file written tensor by tensor, for files too large to hold in memory at once (engines,
// engine/): the data is written as it comes, after a header reserve of `header_reserve` bytes (rounded up to
// 64), and finish() writes the header into that reserve (padded with spaces, so the data region starts at a
// multiple of 64) and renames `path + ".tmp"` over `path`. add() with `align` starts the tensor's bytes at a
// multiple of `align` in the file, placing a U8 padding tensor named kPaddingPrefix + N before it when needed
// (readers require a data region without holes). Destroyed before finish(), it removes the temporary file.
class TempFile;
class SafetensorsStreamWriter {
 public:
  static constexpr const char* kPaddingPrefix = "__padding__.";
  SafetensorsStreamWriter(std::string path, uint64_t header_reserve);
  ~SafetensorsStreamWriter();
  void add(const TensorToWrite& tensor, uint64_t align = 0);
  void finish(const std::map<std::string, std::string>& metadata);
  uint64_t data_bytes() const { return offset_; }

 private:
  std::string path_;
  uint64_t reserve_;
  std::unique_ptr<TempFile> file_;
  std::string entries_;
  std::set<std::string> seen_;
  uint64_t offset_ = 0;
  size_t count_ = 0, paddings_ = 0;
  bool finished_ = false;
};

}  // namespace fx::io
