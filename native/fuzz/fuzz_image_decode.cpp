// libFuzzer target for the image decoders (PNG, JPEG, WebP by signature), which read files a user
// hands in for image-to-image. fx::Error with FX_ERR_FORMAT / FX_ERR_UNSUPPORTED is the decoders'
// documented way to refuse input; anything else escaping (another status, another exception type, a
// sanitizer report, a crash, a longjmp gone wrong) is a finding. A small decoded image is also
// re-encoded in all three formats, and the PNG must come back bit-exact.
//
// Seeds: native/fuzz/corpus-image-decode/, small images of every kind the decoders handle (PNG grey,
// palette, alpha, 16-bit, interlaced; JPEG baseline 4:2:0 / 4:4:4, progressive, grey, CMYK, restart
// markers; WebP lossy, lossless, with alpha), written with libpng, libjpeg-turbo and libwebp.

#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "image/image_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Smaller limits than the library's own (16384 per side), so that one input stays far below
  // libFuzzer's memory limit and the run keeps its pace; the header checks are the same code.
  fx::image::DecodeLimits limits;
  limits.max_side = 4096;
  limits.max_pixels = 1u << 20;
  limits.max_jpeg_scans = 100;
  fx::image::Image image;
  try {
    image = fx::image::decode(data, size, limits);
  } catch (const fx::Error& e) {
    if (e.status() != FX_ERR_FORMAT && e.status() != FX_ERR_UNSUPPORTED) __builtin_trap();
    return 0;
  }
  if (image.width < 1 || image.height < 1 || image.width > limits.max_side || image.height > limits.max_side ||
      image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3) {
    __builtin_trap();
  }
  // Read every byte (a decoder that left some unwritten shows under MSan; ASan checks the bounds).
  unsigned sum = 0;
  for (const uint8_t v : image.rgb) sum += v;
  asm volatile("" : : "r"(sum));  // keep the reads
  if (image.width * image.height <= 4096) {
    const fx::image::Bytes png = fx::image::encode_png(image.rgb.data(), image.width, image.height);
    const fx::image::Image back = fx::image::decode(png.data(), png.size(), limits);
    if (back.width != image.width || back.height != image.height || back.rgb != image.rgb) __builtin_trap();
    for (const auto format : {fx::image::Format::Jpeg, fx::image::Format::Webp}) {
      const fx::image::Bytes file = fx::image::encode(image.rgb.data(), image.width, image.height, format, 75);
      const fx::image::Image lossy = fx::image::decode(file.data(), file.size(), limits);
      if (lossy.width != image.width || lossy.height != image.height) __builtin_trap();
    }
  }
  return 0;
}
