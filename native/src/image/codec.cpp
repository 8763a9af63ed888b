// Format detection and dispatch shared by the three codecs.
#include <cstring>
#include <string>

#include "core/error.h"
#include "image/image_codec.h"
#include "image/metadata.h"

namespace fx::image {

const char* format_name(Format format) {
  switch (format) {
    case Format::Png: return "PNG";
    case Format::Jpeg: return "JPEG";
    case Format::Webp: return "WebP";
  }
  return "unknown format";
}

bool sniff(const uint8_t* data, size_t size, Format* format) {
  static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= sizeof(png) && std::memcmp(data, png, sizeof(png)) == 0) {
    *format = Format::Png;
    return true;
  }
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    *format = Format::Jpeg;
    return true;
  }
  if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0) {
    *format = Format::Webp;
    return true;
  }
  return false;
}

void check_decoded_size(Format format, uint64_t width, uint64_t height, const DecodeLimits& limits) {
  const std::string size = std::to_string(width) + " x " + std::to_string(height);
  if (width == 0 || height == 0) {
    fail(FX_ERR_FORMAT, std::string(format_name(format)) + ": the header gives an empty image (" + size + ")");
  }
  if (width > static_cast<uint64_t>(limits.max_side) || height > static_cast<uint64_t>(limits.max_side) ||
      width * height > limits.max_pixels) {
    fail(FX_ERR_FORMAT, std::string(format_name(format)) + ": the image is " + size +
                            " pixels, more than this decoder accepts (at most " + std::to_string(limits.max_side) +
                            " per side and " + std::to_string(limits.max_pixels) + " pixels)");
  }
  // width, height <= max_side <= 16384 here, so width * height * 3 < 2^30 and fits size_t.
}

Bytes encode(const uint8_t* rgb, int width, int height, Format format, int quality, std::string_view parameters) {
  check_parameters_text(parameters);  // before any pixel work: a bad text costs nothing
  switch (format) {
    case Format::Png: return encode_png(rgb, width, height, parameters);
    case Format::Jpeg: return encode_jpeg(rgb, width, height, quality, parameters);
    case Format::Webp: return encode_webp(rgb, width, height, quality, parameters);
  }
  fail(FX_ERR_INVALID_ARGUMENT, "image encode: unknown format " + std::to_string(static_cast<int>(format)));
}

Image decode(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  Format format;
  if (data == nullptr || !sniff(data, size, &format)) {
    fail(FX_ERR_FORMAT, size == 0 ? std::string("the input is empty")
                                  : "the data (" + std::to_string(size) +
                                        " bytes) is not a PNG, JPEG or WebP file (no known signature)");
  }
  switch (format) {
    case Format::Png: return decode_png(data, size, limits);
    case Format::Jpeg: return decode_jpeg(data, size, limits);
    case Format::Webp: return decode_webp(data, size, limits);
  }
  fail(FX_ERR_INTERNAL, "image decode: unreachable format");
}

}  // namespace fx::image
