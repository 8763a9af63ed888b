// libFuzzer target for the GGUF header parser (io/gguf.h), the first code to touch an untrusted GGUF file.
// fx::Error is the parser's documented way to refuse input; anything else escaping (another exception
// type, a sanitizer report, a crash) is a finding. An accepted header is checked against the promises
// the loaders rely on; accepted block tensors are decoded once, so the decoder runs on hostile bytes too.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/block_quant.h"
#include "core/error.h"
#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fx::io::GgufHeader header = fx::io::parse_gguf_header(data, size, "fuzz-input");
    for (const fx::io::GgufTensorInfo& t : header.tensors) {
      if (t.name.empty() || t.shape.size() > 4 || header.data_start + t.offset + t.byte_size > size ||
          t.offset % header.alignment != 0)
        __builtin_trap();
      if (t.block && t.element_count() <= (1u << 16)) {
        std::vector<float> values(t.element_count());
        fx::dequantize_blocks(*t.block, data + header.data_start + t.offset, static_cast<int64_t>(values.size()),
                              values.data());
      }
    }
  } catch (const fx::Error&) {
  }
  return 0;
}
