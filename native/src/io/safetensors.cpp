// safetensors header validation, memory mapping and writing. See safetensors.h for the contract.
//
// The parser treats every header as hostile: a checkpoint downloaded from anywhere must produce a
// precise error, never a crash, an out-of-bounds read or an unbounded allocation.

#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace fx::io {
namespace {

using nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";

// A valid header nests three levels deep (root -> tensor -> shape). Anything far deeper is garbage;
// refusing it early bounds the work and memory spent on it and keeps messages short.
constexpr size_t kMaxJsonDepth = 16;

// Names and values from a hostile header can be megabytes long or hold control characters; messages
// show them JSON-escaped and clipped so the message stays one readable line.
std::string json_quoted(const std::string& text) {
  constexpr size_t kMaxShown = 200;
  const bool clipped = text.size() > kMaxShown;
  std::string shown = clipped ? text.substr(0, kMaxShown) : text;
  // Clipping may cut a UTF-8 sequence; `replace` keeps dump() from throwing on the broken tail.
  std::string out = json(shown).dump(-1, ' ', false, json::error_handler_t::replace);
  if (clipped) out += "...";
  return out;
}

// Describes a JSON value for an error message without dumping (possibly huge or deep) containers.
std::string describe(const json& value) {
  switch (value.type()) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "the string " + json_quoted(value.get_ref<const std::string&>());
    case json::value_t::boolean: return value.get<bool>() ? "true" : "false";
    case json::value_t::null: return "null";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "the number " + value.dump();
    default: return "a non-JSON value";
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string range_text(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

[[noreturn]] void fail_file(const std::string& file_label, const std::string& what) {
  fail(FX_ERR_FORMAT, file_label + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& file_label, const std::string& tensor, const std::string& what) {
  fail(FX_ERR_FORMAT, file_label + ": tensor " + json_quoted(tensor) + ": " + what);
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Element count of a shape whose dims are already known to be non-negative. Fails when the product
// of the non-zero dims exceeds int64: even when a zero dim makes the tensor empty, code downstream
// computes strides from the other dims, and those must not overflow either.
bool element_count_fits(const std::vector<int64_t>& shape, uint64_t* count) {
  uint64_t nonzero_product = 1;
  bool has_zero_dim = false;
  for (int64_t dim : shape) {
    if (dim == 0) {
      has_zero_dim = true;
      continue;
    }
    if (!checked_mul(nonzero_product, static_cast<uint64_t>(dim), &nonzero_product) ||
        nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return false;
    }
  }
  *count = has_zero_dim ? 0 : nonzero_product;
  return true;
}

// Builds a DOM like json::parse, but rejects duplicate object keys (json::parse silently keeps the
// last one, which would let a header describe one tensor twice and have us use whichever came
// last) and excessive nesting. Errors are recorded, not thrown, so the caller adds the file name.
class StrictJsonBuilder {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  json root;
  std::string error;  // empty while parsing succeeds

  bool null() { return add_value(json(nullptr)); }
  bool boolean(bool value) { return add_value(json(value)); }
  bool number_integer(number_integer_t value) { return add_value(json(value)); }
  bool number_unsigned(number_unsigned_t value) { return add_value(json(value)); }
  bool number_float(number_float_t value, const string_t&) { return add_value(json(value)); }
  bool string(string_t& value) { return add_value(json(std::move(value))); }
  bool binary(binary_t& value) { return add_value(json::binary(std::move(value))); }

  bool start_object(size_t) { return open_container(json::object()); }
  bool start_array(size_t) { return open_container(json::array()); }
  bool end_object() { return close_container(); }
  bool end_array() { return close_container(); }

  bool key(string_t& name) {
    json* object = open_.back();
    if (object->contains(name)) {
      error = duplicate_message(name);
      return false;
    }
    pending_key_ = std::move(name);
    return true;
  }

  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& ex) {
    error = std::string("header is not valid JSON: ") + ex.what();
    return false;
  }

 private:
  std::vector<json*> open_;       // containers being filled, innermost last
  std::string pending_key_;       // key of the next value when the innermost container is an object
  std::string top_level_key_;     // the tensor whose entry is being parsed, for messages

  std::string duplicate_message(const std::string& name) const {
    if (open_.size() == 1) return "tensor name " + json_quoted(name) + " appears twice in the header";
    return "key " + json_quoted(name) + " appears twice in the entry of " + json_quoted(top_level_key_);
  }

  // Stores `value` where it belongs and returns a pointer to the stored copy.
  json* place(json&& value) {
    if (open_.empty()) {
      root = std::move(value);
      return &root;
    }
    json* parent = open_.back();
    if (parent->is_array()) {
      parent->push_back(std::move(value));
      return &parent->back();
    }
    if (open_.size() == 1) top_level_key_ = pending_key_;
    json& slot = (*parent)[pending_key_];
    slot = std::move(value);
    return &slot;
  }

  bool add_value(json&& value) {
    place(std::move(value));
    return true;
  }

  bool open_container(json&& empty) {
    if (open_.size() >= kMaxJsonDepth) {
      error = "header JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return false;
    }
    open_.push_back(place(std::move(empty)));
    return true;
  }

  bool close_container() {
    open_.pop_back();
    return true;
  }
};

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// Reads a JSON integer that must be >= 0; false for anything else (negative, float, other type).
bool non_negative_integer(const json& value, uint64_t* out) {
  if (!value.is_number_unsigned()) {
    // nlohmann stores non-negative literals as unsigned; a signed one here is negative.
    return false;
  }
  *out = value.get<uint64_t>();
  return true;
}

TensorEntry parse_tensor_entry(const std::string& name, const json& entry, const std::string& file_label) {
  if (!entry.is_object()) fail_tensor(file_label, name, "entry must be a JSON object, got " + describe(entry));
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      fail_tensor(file_label, name, "unexpected key " + json_quoted(key) + " (allowed: dtype, shape, data_offsets)");
    }
  }
  for (const char* required : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(required)) fail_tensor(file_label, name, std::string("missing key \"") + required + "\"");
  }

  TensorEntry tensor;
  tensor.name = name;

  const json& dtype = entry.at("dtype");
  if (!dtype.is_string()) fail_tensor(file_label, name, "\"dtype\" must be a string, got " + describe(dtype));
  if (!dtype_from_name(dtype.get_ref<const std::string&>(), &tensor.dtype)) {
    fail_tensor(file_label, name, "unknown dtype " + json_quoted(dtype.get_ref<const std::string&>()));
  }

  const json& shape = entry.at("shape");
  if (!shape.is_array()) fail_tensor(file_label, name, "\"shape\" must be an array, got " + describe(shape));
  if (shape.size() > FX_MAX_DIMS) {
    fail_tensor(file_label, name, "shape has " + std::to_string(shape.size()) + " dims; at most " +
                                      std::to_string(FX_MAX_DIMS) + " are supported");
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    const json& dim = shape[i];
    uint64_t value = 0;
    if (!non_negative_integer(dim, &value)) {
      fail_tensor(file_label, name, "shape dim " + std::to_string(i) + " must be a non-negative integer, got " +
                                        describe(dim));
    }
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail_tensor(file_label, name, "shape dim " + std::to_string(i) + " is " + std::to_string(value) +
                                        ", larger than a 64-bit signed integer holds");
    }
    tensor.shape.push_back(static_cast<int64_t>(value));
  }

  const json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    fail_tensor(file_label, name, "\"data_offsets\" must be an array [begin, end], got " + describe(offsets));
  }
  for (size_t i = 0; i < 2; ++i) {
    uint64_t value = 0;
    if (!non_negative_integer(offsets[i], &value)) {
      fail_tensor(file_label, name, std::string("data_offsets ") + (i == 0 ? "begin" : "end") +
                                        " must be a non-negative integer, got " + describe(offsets[i]));
    }
    (i == 0 ? tensor.begin : tensor.end) = value;
  }
  if (tensor.begin > tensor.end) {
    fail_tensor(file_label, name, "data_offsets " + range_text(tensor.begin, tensor.end) + " end before they begin");
  }

  uint64_t count = 0;
  uint64_t needed = 0;
  if (!element_count_fits(tensor.shape, &count) || !checked_mul(count, dtype_size(tensor.dtype), &needed)) {
    fail_tensor(file_label, name, std::string(dtype_name(tensor.dtype)) + " " + shape_text(tensor.shape) +
                                      " has more elements or bytes than 64-bit sizes hold");
  }
  if (needed != tensor.end - tensor.begin) {
    fail_tensor(file_label, name, "data_offsets " + range_text(tensor.begin, tensor.end) + " hold " +
                                      std::to_string(tensor.end - tensor.begin) + " bytes but " +
                                      dtype_name(tensor.dtype) + " " + shape_text(tensor.shape) + " needs " +
                                      std::to_string(needed));
  }
  return tensor;
}

std::map<std::string, std::string> parse_metadata(const json& value, const std::string& file_label) {
  if (!value.is_object()) fail_file(file_label, "\"__metadata__\" must be an object, got " + describe(value));
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      fail_file(file_label, "\"__metadata__\" value of " + json_quoted(key) + " must be a string, got " + describe(item));
    }
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

}  // namespace

uint64_t TensorEntry::element_count() const {
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  return count;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t available, uint64_t file_size,
                                           const std::string& file_label) {
  if (available > file_size) {
    fail(FX_ERR_INVALID_ARGUMENT, file_label + ": " + std::to_string(available) + " bytes given for a file of " +
                                      std::to_string(file_size) + " bytes");
  }
  if (available > 0 && data == nullptr) fail(FX_ERR_INVALID_ARGUMENT, file_label + ": header bytes are NULL");
  if (file_size < 8) {
    fail_file(file_label, "file is " + std::to_string(file_size) +
                              " bytes, too short for the 8-byte header length of a safetensors file");
  }
  if (available < 8) {
    fail(FX_ERR_INVALID_ARGUMENT, file_label + ": only " + std::to_string(available) +
                                      " bytes given, the 8-byte header length is not among them");
  }

  SafetensorsHeader header;
  header.header_size = read_u64_le(data);
  if (header.header_size > kMaxSafetensorsHeaderBytes) {
    fail_file(file_label, "header length " + std::to_string(header.header_size) + " exceeds the limit of " +
                              std::to_string(kMaxSafetensorsHeaderBytes) + " bytes (not a safetensors file?)");
  }
  if (header.header_size > file_size - 8) {
    fail_file(file_label, "header length " + std::to_string(header.header_size) + " but the file holds only " +
                              std::to_string(file_size - 8) + " bytes after the length (truncated file?)");
  }
  if (header.header_size > available - 8) {
    fail(FX_ERR_INVALID_ARGUMENT, file_label + ": header length " + std::to_string(header.header_size) +
                                      " but only " + std::to_string(available - 8) + " header bytes were given");
  }
  if (header.header_size == 0) fail_file(file_label, "header is empty");

  const uint8_t* json_begin = data + 8;
  const uint8_t* json_end = json_begin + header.header_size;
  StrictJsonBuilder builder;
  bool parsed = false;
  try {
    parsed = json::sax_parse(json_begin, json_end, &builder, json::input_format_t::json, /*strict=*/true);
  } catch (const nlohmann::json::exception& ex) {
    // The SAX driver reports syntax errors through parse_error; this catches its other complaints.
    builder.error = std::string("header is not valid JSON: ") + ex.what();
  }
  if (!parsed || !builder.error.empty()) {
    fail_file(file_label, builder.error.empty() ? std::string("header is not valid JSON") : builder.error);
  }
  const json& root = builder.root;
  if (!root.is_object()) fail_file(file_label, "header must be a JSON object, got " + describe(root));

  const uint64_t data_region_size = file_size - header.data_start();
  for (const auto& [name, value] : root.items()) {
    if (name == kMetadataKey) {
      header.metadata = parse_metadata(value, file_label);
      continue;
    }
    if (name.empty()) fail_file(file_label, "a tensor has an empty name");
    TensorEntry tensor = parse_tensor_entry(name, value, file_label);
    if (tensor.end > data_region_size) {
      fail_tensor(file_label, name, "data_offsets " + range_text(tensor.begin, tensor.end) +
                                        " reach past the end of the file: the data region holds " +
                                        std::to_string(data_region_size) + " bytes (file is " +
                                        std::to_string(file_size) + " bytes, truncated?)");
    }
    header.tensors.push_back(std::move(tensor));
  }

  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // An empty byte range occupies nothing, so zero-sized tensors can share any offset.
  const TensorEntry* furthest = nullptr;  // the non-empty tensor reaching furthest so far
  for (const TensorEntry& tensor : header.tensors) {
    if (tensor.begin == tensor.end) continue;
    if (furthest && tensor.begin < furthest->end) {
      fail_file(file_label, "tensors " + json_quoted(furthest->name) + " " + range_text(furthest->begin, furthest->end) +
                                " and " + json_quoted(tensor.name) + " " + range_text(tensor.begin, tensor.end) +
                                " overlap");
    }
    if (!furthest || tensor.end > furthest->end) furthest = &tensor;
  }
  return header;
}

// ---- MappedFile -----------------------------------------------------------------------------------

std::unique_ptr<MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail(err == ENOENT ? FX_ERR_NOT_FOUND : FX_ERR_IO, path + ": cannot open: " + std::strerror(err));
  }
  // The descriptor is only needed until the mapping exists; close it on every path.
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat info {};
  if (::fstat(fd, &info) != 0) fail(FX_ERR_IO, path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(info.st_mode)) fail(FX_ERR_IO, path + ": not a regular file");

  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(info.st_size);
  if (file->size_ == 0) return file;  // mmap rejects length 0; an empty file has nothing to map
  if (file->size_ > std::numeric_limits<size_t>::max()) fail(FX_ERR_IO, path + ": too large to map");
  void* mapped = ::mmap(nullptr, static_cast<size_t>(file->size_), PROT_READ, MAP_PRIVATE, fd, 0);
  if (mapped == MAP_FAILED) {
    const int err = errno;
    fail(err == ENOMEM ? FX_ERR_OUT_OF_MEMORY : FX_ERR_IO, path + ": cannot map: " + std::strerror(err));
  }
  file->data_ = static_cast<const uint8_t*>(mapped);
  return file;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
}

// ---- SafetensorsFile ------------------------------------------------------------------------------

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->file_ = std::shared_ptr<MappedFile>(MappedFile::open(path));
  const uint64_t size = file->file_->size();
  file->header_ = parse_safetensors_header(file->file_->data(), static_cast<size_t>(size), size, path);
  return file;
}

// ---- writing --------------------------------------------------------------------------------------

// A file descriptor for the temporary file that removes the file unless the write was committed.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(FX_ERR_IO, path_ + ": cannot create: " + std::strerror(errno));
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write_all(const void* bytes, uint64_t size) {
    const auto* cursor = static_cast<const uint8_t*>(bytes);
    // Linux transfers at most ~2 GiB per write(); larger tensors take several calls.
    constexpr uint64_t kChunk = 1ull << 30;
    while (size > 0) {
      const size_t step = static_cast<size_t>(std::min(size, kChunk));
      const ssize_t written = ::write(fd_, cursor, step);
      if (written < 0) {
        if (errno == EINTR) continue;
        fail(FX_ERR_IO, path_ + ": write failed: " + std::strerror(errno));
      }
      cursor += written;
      size -= static_cast<uint64_t>(written);
    }
  }

  void seek(uint64_t offset) {
    if (::lseek(fd_, static_cast<off_t>(offset), SEEK_SET) < 0)
      fail(FX_ERR_IO, path_ + ": seek failed: " + std::strerror(errno));
  }

  // Flushes to disk and renames over `final_path`, so readers never see a half-written checkpoint.
  void commit(const std::string& final_path) {
    if (::fsync(fd_) != 0) fail(FX_ERR_IO, path_ + ": fsync failed: " + std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail(FX_ERR_IO, path_ + ": close failed: " + std::strerror(errno));
    if (::rename(path_.c_str(), final_path.c_str()) != 0) {
      fail(FX_ERR_IO, final_path + ": cannot rename " + path_ + " over it: " + std::strerror(errno));
    }
    committed_ = true;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

namespace {

// The string as a JSON literal. nlohmann refuses to serialize invalid UTF-8; catching that per string
// lets the error say which one is at fault.
std::string json_literal(const std::string& text, const std::string& path, const std::string& what) {
  try {
    return json(text).dump();
  } catch (const json::exception&) {
    fail(FX_ERR_INVALID_ARGUMENT, path + ": " + what + " is not valid UTF-8");
  }
}

// The header entry of tensor #`index` placed at `*offset` of the data region (advanced past it), after the
// checks every writer makes: a unique, non-empty, non-reserved name; a valid dtype; a shape whose bytes are
// exactly the bytes given.
std::string tensor_entry_text(const std::string& path, size_t i, const TensorToWrite& tensor,
                              std::set<std::string>& seen, uint64_t* offset) {
  auto invalid = [&](const std::string& name, const std::string& what) {
    fail(FX_ERR_INVALID_ARGUMENT, path + ": tensor " + json_quoted(name) + ": " + what);
  };
  if (tensor.name.empty()) fail(FX_ERR_INVALID_ARGUMENT, path + ": tensor #" + std::to_string(i) + " has an empty name");
  if (tensor.name == kMetadataKey) invalid(tensor.name, "name is reserved for the metadata entry");
  const std::string name_literal = json_literal(tensor.name, path, "name of tensor #" + std::to_string(i));
  if (!seen.insert(tensor.name).second) invalid(tensor.name, "name appears twice");
  if (!dtype_valid(static_cast<int32_t>(tensor.dtype))) {
    invalid(tensor.name, "invalid dtype value " + std::to_string(static_cast<int32_t>(tensor.dtype)));
  }
  if (tensor.shape.size() > FX_MAX_DIMS) {
    invalid(tensor.name, "shape has " + std::to_string(tensor.shape.size()) + " dims; at most " +
                             std::to_string(FX_MAX_DIMS) + " are supported");
  }
  for (int64_t dim : tensor.shape) {
    if (dim < 0) invalid(tensor.name, "shape " + shape_text(tensor.shape) + " has a negative dim");
  }
  uint64_t count = 0;
  uint64_t needed = 0;
  if (!element_count_fits(tensor.shape, &count) || !checked_mul(count, dtype_size(tensor.dtype), &needed)) {
    invalid(tensor.name, "shape " + shape_text(tensor.shape) + " has more elements than 64-bit sizes hold");
  }
  if (needed != tensor.byte_size) {
    invalid(tensor.name, std::string(dtype_name(tensor.dtype)) + " " + shape_text(tensor.shape) + " needs " +
                             std::to_string(needed) + " bytes but " + std::to_string(tensor.byte_size) +
                             " were given");
  }
  if (needed > 0 && tensor.data == nullptr) invalid(tensor.name, "data is NULL");
  uint64_t end = 0;
  if (__builtin_add_overflow(*offset, needed, &end)) invalid(tensor.name, "total data size overflows 64 bits");
  std::string text = name_literal + ":{\"dtype\":\"" + dtype_name(tensor.dtype) + "\",\"shape\":" +
                     json(tensor.shape).dump() + ",\"data_offsets\":[" + std::to_string(*offset) + "," +
                     std::to_string(end) + "]}";
  *offset = end;
  return text;
}

std::string metadata_text(const std::string& path, const std::map<std::string, std::string>& metadata) {
  if (metadata.empty()) return "";
  std::string text = std::string("\"") + kMetadataKey + "\":{";
  for (const auto& [key, value] : metadata) {
    if (text.back() != '{') text += ',';
    text += json_literal(key, path, "metadata key " + json_quoted(key)) + ":" +
            json_literal(value, path, "metadata value of " + json_quoted(key));
  }
  return text + "}";
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // The header text is assembled entry by entry: it must keep the caller's order (the data region
  // follows it), and nlohmann's ordered_json finds keys by linear search, quadratic over a large model.
  std::string header_text = "{" + metadata_text(path, metadata);

  std::set<std::string> seen;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (header_text.size() > 1) header_text += ',';
    header_text += tensor_entry_text(path, i, tensors[i], seen, &offset);
  }
  header_text += "}";
  // Padding the header to a multiple of 8 starts the data region 8-aligned in the file (and so in a
  // mapping of it). Data blocks stay contiguous because the reference reader requires exactly that.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  if (header_text.size() > kMaxSafetensorsHeaderBytes) {
    fail(FX_ERR_INVALID_ARGUMENT, path + ": header would be " + std::to_string(header_text.size()) +
                                      " bytes, over the " + std::to_string(kMaxSafetensorsHeaderBytes) +
                                      "-byte limit readers enforce");
  }

  uint8_t length_prefix[8];
  uint64_t length = header_text.size();
  for (int i = 0; i < 8; ++i) length_prefix[i] = static_cast<uint8_t>(length >> (8 * i));

  TempFile out(path + ".tmp");
  out.write_all(length_prefix, sizeof length_prefix);
  out.write_all(header_text.data(), header_text.size());
  for (const TensorToWrite& tensor : tensors) out.write_all(tensor.data, tensor.byte_size);
  out.commit(path);
}

SafetensorsStreamWriter::SafetensorsStreamWriter(std::string path, uint64_t header_reserve)
    : path_(std::move(path)), reserve_((std::max<uint64_t>(header_reserve, 64) + 63) / 64 * 64) {
  if (reserve_ > kMaxSafetensorsHeaderBytes)
    fail(FX_ERR_INVALID_ARGUMENT, path_ + ": a header reserve of " + std::to_string(reserve_) + " bytes is over the limit");
  file_ = std::make_unique<TempFile>(path_ + ".tmp");
  file_->seek(reserve_);
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

void SafetensorsStreamWriter::add(const TensorToWrite& tensor, uint64_t align) {
  if (finished_) fail(FX_ERR_INTERNAL, path_ + ": tensor added after finish()");
  if (align > 1 && (reserve_ + offset_) % align != 0) {
    // A data region without holes (as readers require) gets its alignment from a padding tensor.
    static const uint8_t zeros[4096] = {};
    const uint64_t pad = align - (reserve_ + offset_) % align;
    if (pad > sizeof zeros) fail(FX_ERR_INVALID_ARGUMENT, path_ + ": alignment " + std::to_string(align) + " is too large");
    const TensorToWrite filler{std::string(kPaddingPrefix) + std::to_string(paddings_++), DType::U8,
                               {static_cast<int64_t>(pad)}, zeros, pad};
    add(filler, 0);
  }
  const std::string entry = tensor_entry_text(path_, count_++, tensor, seen_, &offset_);
  entries_ += (entries_.empty() ? "" : ",") + entry;
  file_->write_all(tensor.data, tensor.byte_size);
}

void SafetensorsStreamWriter::finish(const std::map<std::string, std::string>& metadata) {
  if (finished_) fail(FX_ERR_INTERNAL, path_ + ": finish() called twice");
  std::string header_text = "{" + metadata_text(path_, metadata);
  if (!entries_.empty()) header_text += (header_text.size() > 1 ? "," : "") + entries_;
  header_text += "}";
  if (header_text.size() > reserve_ - 8)
    fail(FX_ERR_INTERNAL, path_ + ": the header takes " + std::to_string(header_text.size()) + " bytes, over the " +
                              std::to_string(reserve_ - 8) + " reserved for it");
  header_text.append(reserve_ - 8 - header_text.size(), ' ');
  uint8_t length_prefix[8];
  const uint64_t length = header_text.size();
  for (int i = 0; i < 8; ++i) length_prefix[i] = static_cast<uint8_t>(length >> (8 * i));
  file_->seek(0);
  file_->write_all(length_prefix, sizeof length_prefix);
  file_->write_all(header_text.data(), header_text.size());
  file_->commit(path_);
  finished_ = true;
}

}  // namespace fx::io
