// WebP through libwebp, in memory. libwebp reports through return codes (no longjmp), so ordinary
// RAII holds its buffers here. Generation parameters go in an EXIF chunk through libwebpmux, which
// also writes the VP8X header that announces it (image/metadata.h says why EXIF and not XMP).
#include <webp/decode.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include <cstring>
#include <string>

#include "core/error.h"
#include "image/image_codec.h"
#include "image/metadata.h"

namespace fx::image {
namespace {

const char* encode_error_text(WebPEncodingError error) {
  switch (error) {
    case VP8_ENC_OK: return "no error";
    case VP8_ENC_ERROR_OUT_OF_MEMORY: return "out of memory allocating objects";
    case VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY: return "out of memory while flushing bits";
    case VP8_ENC_ERROR_NULL_PARAMETER: return "a NULL parameter";
    case VP8_ENC_ERROR_INVALID_CONFIGURATION: return "invalid configuration";
    case VP8_ENC_ERROR_BAD_DIMENSION: return "bad picture dimensions";
    case VP8_ENC_ERROR_PARTITION0_OVERFLOW: return "the first partition is larger than 512 KiB";
    case VP8_ENC_ERROR_PARTITION_OVERFLOW: return "a partition is larger than 16 MiB";
    case VP8_ENC_ERROR_BAD_WRITE: return "error while writing bytes";
    case VP8_ENC_ERROR_FILE_TOO_BIG: return "the file would be larger than 4 GiB";
    case VP8_ENC_ERROR_USER_ABORT: return "aborted";
    default: return "unknown error";
  }
}

const char* decode_status_text(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_OK: return "no error";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data (truncated)";
    default: return "unknown error";
  }
}

const char* mux_error_text(WebPMuxError error) {
  switch (error) {
    case WEBP_MUX_OK: return "no error";
    case WEBP_MUX_NOT_FOUND: return "not found";
    case WEBP_MUX_INVALID_ARGUMENT: return "invalid argument";
    case WEBP_MUX_BAD_DATA: return "bad data";
    case WEBP_MUX_MEMORY_ERROR: return "out of memory";
    case WEBP_MUX_NOT_ENOUGH_DATA: return "not enough data";
    default: return "unknown error";
  }
}

// The encoded still image with an EXIF chunk added (a VP8X container around the same bitstream).
Bytes with_exif(const uint8_t* file, size_t size, const Bytes& exif) {
  struct Release {
    WebPMux* mux = nullptr;
    WebPData out;
    ~Release() {
      WebPMuxDelete(mux);
      WebPDataClear(&out);
    }
  } r;
  WebPDataInit(&r.out);
  r.mux = WebPMuxNew();
  if (r.mux == nullptr) fail(FX_ERR_OUT_OF_MEMORY, "WebP: could not create the muxer (out of memory)");
  const WebPData image{file, size}, chunk{exif.data(), exif.size()};
  WebPMuxError error = WebPMuxSetImage(r.mux, &image, 0);  // 0: no copies; both outlive the muxer
  if (error == WEBP_MUX_OK) error = WebPMuxSetChunk(r.mux, "EXIF", &chunk, 0);
  if (error == WEBP_MUX_OK) error = WebPMuxAssemble(r.mux, &r.out);
  if (error != WEBP_MUX_OK) {
    fail(error == WEBP_MUX_MEMORY_ERROR ? FX_ERR_OUT_OF_MEMORY : FX_ERR_INTERNAL,
         std::string("WebP: adding the EXIF chunk failed: ") + mux_error_text(error));
  }
  return Bytes(r.out.bytes, r.out.bytes + r.out.size);
}

uint32_t read_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

Bytes encode_webp(const uint8_t* rgb, int width, int height, int quality, std::string_view parameters) {
  if (quality < 1 || quality > 100) {
    fail(FX_ERR_INVALID_ARGUMENT, "WebP: quality must be 1..100, got " + std::to_string(quality));
  }
  if (width > kWebpMaxSide || height > kWebpMaxSide) {
    fail(FX_ERR_INVALID_ARGUMENT, "WebP: the format holds at most " + std::to_string(kWebpMaxSide) +
                                      " pixels per side, the image is " + std::to_string(width) + " x " +
                                      std::to_string(height));
  }
  WebPConfig config;
  if (!WebPConfigInit(&config)) fail(FX_ERR_INTERNAL, "WebP: libwebp version mismatch (WebPConfigInit)");
  config.quality = static_cast<float>(quality);  // lossy (config.lossless = 0), method 4: as WebPEncodeRGB
  if (!WebPValidateConfig(&config)) fail(FX_ERR_INTERNAL, "WebP: the encoder configuration is invalid");

  WebPPicture picture;
  if (!WebPPictureInit(&picture)) fail(FX_ERR_INTERNAL, "WebP: libwebp version mismatch (WebPPictureInit)");
  WebPMemoryWriter writer;
  WebPMemoryWriterInit(&writer);
  struct Release {
    WebPPicture& picture;
    WebPMemoryWriter& writer;
    ~Release() {
      WebPPictureFree(&picture);
      WebPMemoryWriterClear(&writer);
    }
  } release{picture, writer};
  picture.width = width;
  picture.height = height;
  picture.use_argb = 0;  // lossy works in YUV 4:2:0: import converts straight to it
  if (!WebPPictureImportRGB(&picture, rgb, width * 3)) {
    fail(FX_ERR_OUT_OF_MEMORY, "WebP: could not import the picture (out of memory)");
  }
  picture.writer = WebPMemoryWrite;
  picture.custom_ptr = &writer;
  if (!WebPEncode(&config, &picture)) {
    const WebPEncodingError error = picture.error_code;
    const fx_status status =
        error == VP8_ENC_ERROR_OUT_OF_MEMORY || error == VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY ? FX_ERR_OUT_OF_MEMORY
        : error == VP8_ENC_ERROR_PARTITION0_OVERFLOW || error == VP8_ENC_ERROR_PARTITION_OVERFLOW ||
                error == VP8_ENC_ERROR_FILE_TOO_BIG
            ? FX_ERR_UNSUPPORTED
            : FX_ERR_INTERNAL;
    fail(status, std::string("WebP: encoding failed: ") + encode_error_text(error));
  }
  if (!parameters.empty()) return with_exif(writer.mem, writer.size, exif_with_user_comment(decode_utf8(parameters)));
  return Bytes(writer.mem, writer.mem + writer.size);
}

Image decode_webp(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  // The RIFF header's own size first: libwebp would also refuse a cut file, but not say so plainly.
  if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0) {
    const uint64_t riff_size = static_cast<uint64_t>(read_le32(data + 4)) + 8;
    if (size < riff_size) {
      fail(FX_ERR_FORMAT, "WebP: truncated: the RIFF header gives " + std::to_string(riff_size) +
                              " bytes, the data has " + std::to_string(size));
    }
  }
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) fail(FX_ERR_INTERNAL, "WebP: libwebp version mismatch (WebPInitDecoderConfig)");
  const VP8StatusCode features = WebPGetFeatures(data, size, &config.input);
  if (features != VP8_STATUS_OK) {
    fail(FX_ERR_FORMAT, std::string("WebP: bad header: ") + decode_status_text(features));
  }
  if (config.input.has_animation) {
    fail(FX_ERR_UNSUPPORTED, "WebP: animated WebP files are not supported (only still images)");
  }
  check_decoded_size(Format::Webp, static_cast<uint64_t>(config.input.width),
                     static_cast<uint64_t>(config.input.height), limits);

  Image image;
  image.width = config.input.width;
  image.height = config.input.height;
  image.format = Format::Webp;
  image.rgb.resize(static_cast<size_t>(image.width) * image.height * 3);
  config.output.colorspace = MODE_RGB;  // alpha, if any, dropped
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = image.rgb.data();
  config.output.u.RGBA.stride = image.width * 3;
  config.output.u.RGBA.size = image.rgb.size();
  const VP8StatusCode status = WebPDecode(data, size, &config);
  WebPFreeDecBuffer(&config.output);  // nothing to free for external memory; kept for symmetry with libwebp's docs
  if (status != VP8_STATUS_OK) {
    if (status == VP8_STATUS_OUT_OF_MEMORY) fail(FX_ERR_OUT_OF_MEMORY, "WebP: out of memory while decoding");
    fail(FX_ERR_FORMAT, std::string("WebP: corrupt or truncated image data: ") + decode_status_text(status));
  }
  return image;
}

}  // namespace fx::image
