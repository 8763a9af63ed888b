// libFuzzer target for the safetensors header parser, the first code to touch an untrusted file.
// fx::Error is the parser's documented way to refuse input; anything else escaping (another
// exception type, a sanitizer report, a crash) is a finding.

#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fx::io::SafetensorsHeader header = fx::io::parse_safetensors_header(data, size, size, "fuzz-input");
    // An accepted header must describe only bytes that exist: check the promises callers rely on.
    for (const fx::io::TensorEntry& tensor : header.tensors) {
      if (tensor.begin > tensor.end || header.data_start() + tensor.end > size ||
          tensor.byte_size() != tensor.element_count() * fx::dtype_size(tensor.dtype) || tensor.name.empty()) {
        __builtin_trap();
      }
    }
  } catch (const fx::Error&) {
  }
  return 0;
}
