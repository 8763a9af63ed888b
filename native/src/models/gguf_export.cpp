// See gguf_export.h.
#include "models/gguf_export.h"

#include <cstring>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"

namespace fx::models {

void write_gguf_checkpoint(const io::Checkpoint& source, const std::string& path, std::optional<BlockType> type) {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<io::GgufTensorToWrite> tensors;
  storage.reserve(source.tensors().size());
  for (const io::Checkpoint::Tensor& t : source.tensors()) {
    if (t.shape.empty()) fail(FX_ERR_INVALID_ARGUMENT, source.path() + ": \"" + t.name + "\" is a scalar; GGUF tensors have dims");
    const uint64_t count = t.element_count();
    std::vector<float> values(static_cast<size_t>(count));
    if (t.block)
      dequantize_blocks(*t.block, t.data(), static_cast<int64_t>(count), values.data());
    else
      convert(t.dtype, t.data(), DType::F32, values.data(), values.size(), Overflow::Ieee);
    const bool linear = t.shape.size() == 2 && t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
    io::GgufTensorToWrite w{t.name, DType::F32, std::nullopt, t.shape, nullptr, 0};
    if (type && linear && t.shape[1] % block_layout(*type).elements == 0) {
      const BlockLayout& layout = block_layout(*type);
      storage.emplace_back(static_cast<size_t>(count / layout.elements * layout.bytes));
      quantize_blocks(*type, values.data(), static_cast<int64_t>(count), storage.back().data());
      w.block = type;
    } else {
      storage.emplace_back(values.size() * sizeof(float));
      std::memcpy(storage.back().data(), values.data(), storage.back().size());
    }
    w.data = storage.back().data();
    w.byte_size = storage.back().size();
    tensors.push_back(std::move(w));
  }
  io::write_gguf(path, tensors, source.metadata());
}

}  // namespace fx::models
