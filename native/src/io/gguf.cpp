// GGUF parsing and writing (see gguf.h). The parser reads through a bounds-checked cursor: every read
// first checks that its bytes are inside the file, and every count is checked against the bytes left
// before anything is allocated for it, so a hostile header costs at most its own size in memory.
#include "io/gguf.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/error.h"

namespace fx::io {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxStringBytes = 1ull << 20;  // keys, names, string values (GGUF names are short)
constexpr uint64_t kMaxArrayNesting = 2;

std::string text_quoted(const std::string& text) {
  constexpr size_t kMaxShown = 200;
  std::string out = json(text.size() > kMaxShown ? text.substr(0, kMaxShown) : text)
                        .dump(-1, ' ', false, json::error_handler_t::replace);
  return text.size() > kMaxShown ? out + "..." : out;
}

bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& label) : data_(data), size_(size), label_(label) {}

  [[noreturn]] void bad(const std::string& what) const {
    fail(FX_ERR_FORMAT, label_ + ": " + what + " (at byte " + std::to_string(pos_) + ")");
  }
  uint64_t left() const { return size_ - pos_; }
  uint64_t pos() const { return pos_; }

  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > left())
      bad(what + " needs " + std::to_string(bytes) + " bytes but the file has " + std::to_string(left()) + " left");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t length = read<uint64_t>(what + " length");
    if (length > kMaxStringBytes) bad(what + " is " + std::to_string(length) + " bytes long, over the 1 MiB limit");
    need(length, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(length));
    pos_ += length;
    if (!valid_utf8(s)) bad(what + " " + text_quoted(s) + " is not valid UTF-8");
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& label_;
};

uint64_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    default: return 0;
  }
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::F64); }

json read_scalar(Cursor& c, GgufValueType t, const std::string& what) {
  switch (t) {
    case GgufValueType::U8: return c.read<uint8_t>(what);
    case GgufValueType::I8: return c.read<int8_t>(what);
    case GgufValueType::U16: return c.read<uint16_t>(what);
    case GgufValueType::I16: return c.read<int16_t>(what);
    case GgufValueType::U32: return c.read<uint32_t>(what);
    case GgufValueType::I32: return c.read<int32_t>(what);
    case GgufValueType::F32: return c.read<float>(what);
    case GgufValueType::U64: return c.read<uint64_t>(what);
    case GgufValueType::I64: return c.read<int64_t>(what);
    case GgufValueType::F64: return c.read<double>(what);
    case GgufValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) c.bad(what + " is a bool holding " + std::to_string(b));
      return b == 1;
    }
    case GgufValueType::STRING: return c.string(what);
    default: c.bad(what + " has an unexpected type");
  }
}

json read_value(Cursor& c, GgufValueType t, const std::string& what, uint64_t depth, GgufValueType* element_type) {
  if (t != GgufValueType::ARRAY) return read_scalar(c, t, what);
  if (depth >= kMaxArrayNesting) c.bad(what + " nests arrays too deeply");
  const uint32_t et = c.read<uint32_t>(what + " element type");
  if (!known_value_type(et)) c.bad(what + " is an array of unknown type " + std::to_string(et));
  const uint64_t count = c.read<uint64_t>(what + " element count");
  // Every element takes at least one byte (strings eight): a count past the file is refused before
  // anything is allocated for it.
  const uint64_t min_size = et == uint32_t(GgufValueType::STRING) ? 8 : et == uint32_t(GgufValueType::ARRAY) ? 12 : scalar_size(GgufValueType(et));
  if (count > c.left() / min_size) c.bad(what + " claims " + std::to_string(count) + " elements, more than the file holds");
  if (element_type) *element_type = GgufValueType(et);
  json out = json::array();
  for (uint64_t i = 0; i < count; ++i) out.push_back(read_value(c, GgufValueType(et), what, depth + 1, nullptr));
  return out;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The type of a tensor: F32, F16, BF16 or a block type; false for anything else.
bool tensor_type(uint32_t ggml_type, DType* dtype, std::optional<BlockType>* block) {
  block->reset();
  if (ggml_type == 0) *dtype = DType::F32;
  else if (ggml_type == 1) *dtype = DType::F16;
  else if (ggml_type == 30) *dtype = DType::BF16;
  else {
    BlockType b;
    if (!block_type_from_ggml(ggml_type, &b)) return false;
    *dtype = DType::F32;
    *block = b;
  }
  return true;
}

uint32_t ggml_type_of(DType dtype, const std::optional<BlockType>& block) {
  if (block) return static_cast<uint32_t>(*block);
  switch (dtype) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::BF16: return 30;
    default: fail(FX_ERR_INVALID_ARGUMENT, std::string("GGUF holds no ") + dtype_name(dtype) + " tensors");
  }
}

// Bytes of a tensor of `shape` (outermost first): rows of whole blocks. False on overflow; `why` set when
// the row length is not whole blocks.
bool tensor_bytes(const std::vector<int64_t>& shape, DType dtype, const std::optional<BlockType>& block,
                  uint64_t* bytes, std::string* why) {
  const uint64_t row = shape.empty() ? 1 : static_cast<uint64_t>(shape.back());
  uint64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i)
    if (!checked_mul(rows, static_cast<uint64_t>(shape[i]), &rows)) return false;
  uint64_t row_bytes;
  if (block) {
    const BlockLayout& l = block_layout(*block);
    if (row % static_cast<uint64_t>(l.elements) != 0) {
      *why = "rows of " + std::to_string(row) + " values are not whole " + l.name + " blocks of " +
             std::to_string(l.elements);
      return false;
    }
    row_bytes = row / l.elements * l.bytes;
  } else if (!checked_mul(row, dtype_size(dtype), &row_bytes)) {
    return false;
  }
  uint64_t elements;
  if (!checked_mul(rows, row, &elements)) return false;  // the element count must fit too
  return checked_mul(rows, row_bytes, bytes);
}

}  // namespace

uint64_t GgufTensorInfo::element_count() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

bool looks_like_gguf(const uint8_t* data, uint64_t size) { return size >= 4 && std::memcmp(data, "GGUF", 4) == 0; }

GgufHeader parse_gguf_header(const uint8_t* data, uint64_t size, const std::string& label) {
  Cursor c(data, size, label);
  GgufHeader h;
  if (!looks_like_gguf(data, size)) c.bad("not a GGUF file (no \"GGUF\" magic)");
  c.read<uint32_t>("magic");
  h.version = c.read<uint32_t>("version");
  if (h.version != 2 && h.version != 3)
    c.bad("GGUF version " + std::to_string(h.version) + " is not supported (2 and 3 are; version 1 and " +
          "big-endian files are not)");
  const uint64_t tensor_count = c.read<uint64_t>("tensor count");
  const uint64_t kv_count = c.read<uint64_t>("KV count");
  // A KV takes at least 8 + 4 + 1 bytes and a tensor info 8 + 4 + 4 + 8.
  if (kv_count > c.left() / 13) c.bad("KV count " + std::to_string(kv_count) + " is more than the file holds");
  if (tensor_count > c.left() / 24) c.bad("tensor count " + std::to_string(tensor_count) + " is more than the file holds");

  for (uint64_t i = 0; i < kv_count; ++i) {
    const std::string key = c.string("KV " + std::to_string(i) + " key");
    const uint32_t type = c.read<uint32_t>("KV " + text_quoted(key) + " type");
    if (!known_value_type(type)) c.bad("KV " + text_quoted(key) + " has unknown value type " + std::to_string(type));
    GgufKV kv{GgufValueType(type), GgufValueType::U8, nullptr};
    kv.value = read_value(c, kv.type, "KV " + text_quoted(key), 0, &kv.element_type);
    if (!h.kvs.emplace(key, std::move(kv)).second) c.bad("KV " + text_quoted(key) + " appears twice");
  }
  if (auto it = h.kvs.find("general.alignment"); it != h.kvs.end()) {
    if (it->second.type != GgufValueType::U32) c.bad("general.alignment must be a u32");
    const uint32_t a = it->second.value.get<uint32_t>();
    if (a == 0 || (a & (a - 1)) != 0) c.bad("general.alignment " + std::to_string(a) + " is not a power of two");
    h.alignment = a;
  }

  std::set<std::string> names;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    t.name = c.string("tensor " + std::to_string(i) + " name");
    if (t.name.empty()) c.bad("tensor " + std::to_string(i) + " has an empty name");
    if (!names.insert(t.name).second) c.bad("tensor " + text_quoted(t.name) + " appears twice");
    const std::string what = "tensor " + text_quoted(t.name);
    const uint32_t dims = c.read<uint32_t>(what + " dim count");
    if (dims > kGgufMaxDims) c.bad(what + " has " + std::to_string(dims) + " dims; GGUF allows at most 4");
    std::vector<int64_t> ne(dims);
    for (uint32_t d = 0; d < dims; ++d) {
      const uint64_t v = c.read<uint64_t>(what + " dim");
      if (v > static_cast<uint64_t>(INT64_MAX)) c.bad(what + " dim " + std::to_string(d) + " is negative");
      ne[d] = static_cast<int64_t>(v);
    }
    t.shape.assign(ne.rbegin(), ne.rend());
    t.ggml_type = c.read<uint32_t>(what + " type");
    if (!tensor_type(t.ggml_type, &t.dtype, &t.block))
      c.bad(what + " has ggml type " + std::to_string(t.ggml_type) +
            ", which is not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K are)");
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % h.alignment != 0)
      c.bad(what + " offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
            std::to_string(h.alignment));
    std::string why;
    if (!tensor_bytes(t.shape, t.dtype, t.block, &t.byte_size, &why))
      c.bad(what + " " + shape_text(t.shape) + ": " + (why.empty() ? "its size overflows 64 bits" : why));
    h.tensors.push_back(std::move(t));
  }

  const uint64_t end_of_infos = c.pos();
  h.data_start = (end_of_infos + h.alignment - 1) / h.alignment * h.alignment;
  if (!h.tensors.empty() && h.data_start > size)
    c.bad("the data section would start at byte " + std::to_string(h.data_start) + ", past the end of the file");

  // Bounds, then overlaps (in offset order).
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : h.tensors) {
    uint64_t end;
    if (__builtin_add_overflow(t.offset, t.byte_size, &end) || __builtin_add_overflow(end, h.data_start, &end) ||
        end > size)
      fail(FX_ERR_FORMAT, label + ": tensor " + text_quoted(t.name) + " (" + std::to_string(t.byte_size) +
                              " bytes at data offset " + std::to_string(t.offset) + ") runs past the end of the file (" +
                              std::to_string(size) + " bytes)");
    if (t.byte_size > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->byte_size)
      fail(FX_ERR_FORMAT, label + ": tensors " + text_quoted(by_offset[i - 1]->name) + " and " + text_quoted(by_offset[i]->name) +
                              " overlap");
  return h;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  file->file_ = MappedFile::open(path);
  file->header_ = parse_gguf_header(file->file_->data(), file->file_->size(), path);
  return file;
}

std::map<std::string, std::string> GgufFile::metadata() const {
  std::map<std::string, std::string> out;
  for (const auto& [key, kv] : header_.kvs)
    out[key] = kv.value.is_string() ? kv.value.get<std::string>() : kv.value.dump(-1, ' ', false, json::error_handler_t::replace);
  return out;
}

void write_gguf(const std::string& path, const std::vector<GgufTensorToWrite>& tensors,
                const std::map<std::string, std::string>& string_kvs, uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    fail(FX_ERR_INVALID_ARGUMENT, path + ": alignment " + std::to_string(alignment) + " is not a power of two");
  std::vector<uint8_t> head;
  auto put = [&](const void* p, size_t n) { head.insert(head.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); };
  auto put_u32 = [&](uint32_t v) { put(&v, 4); };
  auto put_u64 = [&](uint64_t v) { put(&v, 8); };
  auto put_string = [&](const std::string& s) { put_u64(s.size()); put(s.data(), s.size()); };

  std::map<std::string, std::string> kvs = string_kvs;
  const bool write_alignment = alignment != kGgufDefaultAlignment;
  if (kvs.count("general.alignment")) fail(FX_ERR_INVALID_ARGUMENT, path + ": general.alignment is not a string KV");
  put("GGUF", 4);
  put_u32(3);
  put_u64(tensors.size());
  put_u64(kvs.size() + (write_alignment ? 1 : 0));
  if (write_alignment) {
    put_string("general.alignment");
    put_u32(static_cast<uint32_t>(GgufValueType::U32));
    put_u32(alignment);
  }
  for (const auto& [key, value] : kvs) {
    put_string(key);
    put_u32(static_cast<uint32_t>(GgufValueType::STRING));
    put_string(value);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const GgufTensorToWrite& t : tensors) {
    auto invalid = [&](const std::string& what) {
      fail(FX_ERR_INVALID_ARGUMENT, path + ": tensor " + text_quoted(t.name) + ": " + what);
    };
    if (t.name.empty() || !names.insert(t.name).second) invalid("empty or repeated name");
    if (t.shape.size() > kGgufMaxDims || t.shape.empty()) invalid("GGUF tensors have 1 to 4 dims");
    for (int64_t d : t.shape)
      if (d < 0) invalid("negative dim");
    uint64_t bytes;
    std::string why;
    if (!tensor_bytes(t.shape, t.dtype, t.block, &bytes, &why)) invalid(why.empty() ? "size overflows" : why);
    if (bytes != t.byte_size) invalid("needs " + std::to_string(bytes) + " bytes, " + std::to_string(t.byte_size) + " given");
    if (bytes > 0 && t.data == nullptr) invalid("data is NULL");
    put_string(t.name);
    put_u32(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put_u64(static_cast<uint64_t>(*it));
    put_u32(ggml_type_of(t.dtype, t.block));
    put_u64(offset);
    offsets.push_back(offset);
    offset = (offset + bytes + alignment - 1) / alignment * alignment;
  }
  head.resize((head.size() + alignment - 1) / alignment * alignment, 0);

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) fail(FX_ERR_IO, tmp + ": cannot create: " + std::strerror(errno));
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  uint64_t written = 0;
  static const uint8_t zeros[256] = {};
  for (size_t i = 0; ok && i < tensors.size(); ++i) {
    for (; ok && written < offsets[i]; ) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(sizeof zeros, offsets[i] - written));
      ok = std::fwrite(zeros, 1, n, f) == n;
      written += n;
    }
    ok = ok && std::fwrite(tensors[i].data, 1, tensors[i].byte_size, f) == tensors[i].byte_size;
    written += tensors[i].byte_size;
  }
  ok = (std::fclose(f) == 0) && ok;
  std::error_code ec;
  if (ok) std::filesystem::rename(tmp, path, ec);
  if (!ok || ec) {
    std::filesystem::remove(tmp, ec);
    fail(FX_ERR_IO, path + ": cannot write the GGUF file");
  }
}

}  // namespace fx::io
