// Model pixels (planar float32 in [-1, 1]) <-> interleaved 8-bit RGB.
//
// The arithmetic is the references' own, in float32: v = 127.5f * (x + 1) after clamping, then
//   Round:    round half to even, as numpy's np.round (diffusers' numpy_to_pil): 127.5 -> 128, 0.5 -> 0
//   Truncate: toward zero, as PyTorch's .byte() (BFL's sampling scripts); v >= 0 so this is floor.
// Rounding uses the 2^23 trick: for 0 <= v < 2^23, (v + 2^23) - 2^23 is v rounded to the nearest
// integer, ties to even, in the default rounding mode. It vectorises with plain SSE2, where
// nearbyint would be a libm call per element (the build does not assume SSE4.1). No -ffast-math in
// this project, so the compiler may not fold it away.
#include <algorithm>
#include <cstddef>

#include "image/image_codec.h"

namespace fx::image {
namespace {

inline float clamped(float x) {
  x = x == x ? x : 0.0f;  // NaN -> 0
  return std::min(std::max(x, -1.0f), 1.0f);
}

template <Rounding kRounding>
inline uint8_t to_u8(float x) {
  const float v = 127.5f * (clamped(x) + 1.0f);  // 0 <= v <= 255
  if constexpr (kRounding == Rounding::Round) {
    constexpr float kMagic = 8388608.0f;  // 2^23
    return static_cast<uint8_t>(static_cast<int>((v + kMagic) - kMagic));
  } else {
    return static_cast<uint8_t>(static_cast<int>(v));
  }
}

template <Rounding kRounding>
void convert_rows(const float* pixels, size_t width, size_t height, uint8_t* rgb) {
  const size_t plane = width * height;
  for (size_t y = 0; y < height; ++y) {
    const float* r = pixels + y * width;
    const float* g = r + plane;
    const float* b = g + plane;
    uint8_t* out = rgb + y * width * 3;
    for (size_t x = 0; x < width; ++x) {
      out[3 * x + 0] = to_u8<kRounding>(r[x]);
      out[3 * x + 1] = to_u8<kRounding>(g[x]);
      out[3 * x + 2] = to_u8<kRounding>(b[x]);
    }
  }
}

}  // namespace

void pixels_to_rgb8(const float* pixels, int width, int height, Rounding rounding, uint8_t* rgb) {
  // One thread: 2-3 ms for 1024 x 1024 on a 2-core machine (measured), close to what reading 12 MB of
  // floats costs; a pool would save at most that, next to the 5-400 ms of encoding the file after it.
  if (rounding == Rounding::Round) {
    convert_rows<Rounding::Round>(pixels, static_cast<size_t>(width), static_cast<size_t>(height), rgb);
  } else {
    convert_rows<Rounding::Truncate>(pixels, static_cast<size_t>(width), static_cast<size_t>(height), rgb);
  }
}

void rgb8_to_pixels(const uint8_t* rgb, int width, int height, float* pixels) {
  float table[256];
  for (int i = 0; i < 256; ++i) table[i] = static_cast<float>(i) / 127.5f - 1.0f;  // exactly the float32 formula
  const size_t plane = static_cast<size_t>(width) * static_cast<size_t>(height);
  float* r = pixels;
  float* g = pixels + plane;
  float* b = pixels + 2 * plane;
  for (size_t i = 0; i < plane; ++i) {
    r[i] = table[rgb[3 * i + 0]];
    g[i] = table[rgb[3 * i + 1]];
    b[i] = table[rgb[3 * i + 2]];
  }
}

}  // namespace fx::image
