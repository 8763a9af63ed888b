// Image files and 8-bit conversion: PNG (libpng), JPEG (libjpeg-turbo) and WebP (libwebp), all in
// memory, always as interleaved 8-bit RGB [height, width, 3].
//
// Failures are fx::Error: FX_ERR_INVALID_ARGUMENT for a bad size or quality, FX_ERR_FORMAT for input
// that is not a file of a known format or is corrupt or truncated (the message names the format and
// what failed), FX_ERR_UNSUPPORTED for valid files this build does not read (animated WebP), and
// FX_ERR_OUT_OF_MEMORY when an allocation fails. No codec ever prints or calls exit(): libpng and
// libjpeg report through setjmp/longjmp kept inside C-style frames that own nothing with a destructor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace fx::image {

enum class Format : int32_t { Png = 1, Jpeg = 2, Webp = 3 };  // the values of fx_image_format

const char* format_name(Format format);

// A byte vector whose resize() leaves new bytes uninitialised: a decoder's output is allocated from
// the header's size before a row is decoded, and a truncated file that claims a large image then costs
// only the pages actually written, not a memset of the whole claim.
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  DefaultInitAllocator() noexcept = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using Bytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

// The largest side the library encodes or decodes. WebP itself stops at 16383 (WEBP_MAX_DIMENSION).
inline constexpr int kMaxSide = 16384;
inline constexpr int kWebpMaxSide = 16383;

// Limits on what a decoder accepts, checked from the file's header before any pixel is allocated, so
// a small file that claims a huge image (a decompression bomb) is refused cheaply.
struct DecodeLimits {
  int max_side = kMaxSide;
  uint64_t max_pixels = static_cast<uint64_t>(kMaxSide) * kMaxSide;
  int max_jpeg_scans = 500;  // progressive JPEGs: each scan re-walks the whole image
};

struct Image {
  int width = 0;
  int height = 0;
  Format format = Format::Png;
  Bytes rgb;  // width * height * 3 bytes
};

// Encoders. rgb is [height, width, 3]; width and height are 1..kMaxSide (checked by the caller: the
// C ABI). quality is 1..100 for JPEG and WebP. `parameters` is the generation-parameters text to store
// in the file (image/metadata.h), empty for none; encode() checks it (length, UTF-8) and the per-format
// encoders take it as checked.
Bytes encode_png(const uint8_t* rgb, int width, int height, std::string_view parameters = {});
Bytes encode_jpeg(const uint8_t* rgb, int width, int height, int quality, std::string_view parameters = {});
Bytes encode_webp(const uint8_t* rgb, int width, int height, int quality, std::string_view parameters = {});
Bytes encode(const uint8_t* rgb, int width, int height, Format format, int quality, std::string_view parameters = {});

// The format a file's first bytes announce; false when they match none of PNG, JPEG, WebP.
bool sniff(const uint8_t* data, size_t size, Format* format);

// Decoders: the format from the signature (decode) or known (decode_*).
Image decode_png(const uint8_t* data, size_t size, const DecodeLimits& limits = {});
Image decode_jpeg(const uint8_t* data, size_t size, const DecodeLimits& limits = {});
Image decode_webp(const uint8_t* data, size_t size, const DecodeLimits& limits = {});
Image decode(const uint8_t* data, size_t size, const DecodeLimits& limits = {});

// Throws FX_ERR_FORMAT ("<FORMAT>: image is W x H, more than ... allows") when a header's size is
// outside the limits or zero. Shared by the decoders.
void check_decoded_size(Format format, uint64_t width, uint64_t height, const DecodeLimits& limits);

// Model pixels <-> 8-bit RGB.
enum class Rounding { Round = 0, Truncate = 1 };  // the values of fx_pixel_rounding

// planar float [3, height, width] -> interleaved [height, width, 3]: x clamped to [-1, 1], NaN -> 0,
// then v = 127.5f * (x + 1) in float32 and either rounded half to even (numpy's np.round, which
// diffusers uses) or truncated (PyTorch's .byte(), which BFL uses).
void pixels_to_rgb8(const float* pixels, int width, int height, Rounding rounding, uint8_t* rgb);
// interleaved [height, width, 3] -> planar [3, height, width], v / 127.5f - 1 in float32.
void rgb8_to_pixels(const uint8_t* rgb, int width, int height, float* pixels);

}  // namespace fx::image
