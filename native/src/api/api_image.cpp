// C ABI: 8-bit conversion of model pixels and image files (PNG, JPEG, WebP) in memory.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/guard.h"
#include "image/image_codec.h"

using fx::api::guard;
using fx::api::require;

// Bytes the library allocated for the caller (an encoded file, decoded pixels).
struct fx_blob {
  fx::image::Bytes bytes;
};

namespace {

void require_size(int32_t width, int32_t height, const char* function) {
  if (width < 1 || height < 1 || width > fx::image::kMaxSide || height > fx::image::kMaxSide) {
    fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": width and height must be 1.." +
                                          std::to_string(fx::image::kMaxSide) + ", got " + std::to_string(width) +
                                          " x " + std::to_string(height));
  }
}

// width, height <= 16384 (checked), so the products below cannot overflow.
size_t pixel_count(int32_t width, int32_t height) { return static_cast<size_t>(width) * static_cast<size_t>(height); }

// Codec errors name the format ("JPEG: ..."); at the boundary they also name the entry point.
template <class Body>
void with_function_name(const char* function, Body&& body) {
  try {
    body();
  } catch (const fx::Error& e) {
    fx::fail(e.status(), std::string(function) + ": " + e.what());
  }
}

}  // namespace

extern "C" {

FX_API fx_status fx_blob_data(const fx_blob* blob, const uint8_t** data, size_t* size) {
  const char* const function = __func__;  // inside the lambda __func__ is "operator()"
  return guard(function, [&] {
    require(data != nullptr && size != nullptr, function, "data or size is NULL");
    *data = nullptr;
    *size = 0;
    require(blob != nullptr, function, "blob is NULL");
    *data = blob->bytes.data();
    *size = blob->bytes.size();
  });
}

FX_API void fx_blob_free(fx_blob* blob) { delete blob; }

FX_API fx_status fx_pixels_to_rgb8(const float* pixels, int32_t width, int32_t height, int32_t rounding,
                                   uint8_t* rgb, size_t rgb_size) {
  const char* const function = __func__;  // inside the lambda __func__ is "operator()"
  return guard(function, [&] {
    require(pixels != nullptr, function, "pixels is NULL");
    require(rgb != nullptr, function, "rgb is NULL");
    require_size(width, height, function);
    require(rounding == FX_PIXELS_ROUND || rounding == FX_PIXELS_TRUNCATE, function,
            "rounding must be FX_PIXELS_ROUND (0) or FX_PIXELS_TRUNCATE (1)");
    const size_t needed = pixel_count(width, height) * 3;
    if (rgb_size != needed) {
      fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": rgb_size is " + std::to_string(rgb_size) +
                                            " but [" + std::to_string(height) + ", " + std::to_string(width) +
                                            ", 3] needs exactly " + std::to_string(needed));
    }
    fx::image::pixels_to_rgb8(pixels, width, height, static_cast<fx::image::Rounding>(rounding), rgb);
  });
}

FX_API fx_status fx_rgb8_to_pixels(const uint8_t* rgb, int32_t width, int32_t height, float* pixels,
                                   size_t pixel_count_arg) {
  const char* const function = __func__;  // inside the lambda __func__ is "operator()"
  return guard(function, [&] {
    require(rgb != nullptr, function, "rgb is NULL");
    require(pixels != nullptr, function, "pixels is NULL");
    require_size(width, height, function);
    const size_t needed = pixel_count(width, height) * 3;
    if (pixel_count_arg != needed) {
      fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": pixel_count is " +
                                            std::to_string(pixel_count_arg) + " but [3, " + std::to_string(height) +
                                            ", " + std::to_string(width) + "] needs exactly " +
                                            std::to_string(needed) + " floats");
    }
    fx::image::rgb8_to_pixels(rgb, width, height, pixels);
  });
}

FX_API void fx_image_encode_params_init(fx_image_encode_params* params) {
  if (params == nullptr) return;
  *params = fx_image_encode_params{};
  params->struct_size = sizeof(fx_image_encode_params);
  params->format = FX_IMAGE_PNG;
  params->quality = 80;
}

FX_API fx_status fx_image_encode(const uint8_t* rgb, int32_t width, int32_t height,
                                 const fx_image_encode_params* params, fx_blob** out) {
  const char* const function = __func__;  // inside the lambda __func__ is "operator()"
  return guard(function, [&] {
    require(out != nullptr, function, "out is NULL");
    *out = nullptr;
    require(rgb != nullptr, function, "rgb is NULL");
    require_size(width, height, function);
    fx_image_encode_params defaults;
    fx_image_encode_params_init(&defaults);
    const auto p = fx::api::read_versioned(params, function, defaults);
    require(p.format == FX_IMAGE_PNG || p.format == FX_IMAGE_JPEG || p.format == FX_IMAGE_WEBP, function,
            "format must be FX_IMAGE_PNG (1), FX_IMAGE_JPEG (2) or FX_IMAGE_WEBP (3)");
    // PNG is lossless and ignores quality, but a value outside 0..100 is still a caller's mistake;
    // 0 is accepted for PNG as "no quality".
    if (p.format == FX_IMAGE_PNG) {
      require(p.quality >= 0 && p.quality <= 100, function, "quality must be 0..100 (PNG ignores it)");
    } else {
      require(p.quality >= 1 && p.quality <= 100, function, "quality must be 1..100 for JPEG and WebP");
    }
    require(p.reserved == 0, function, "reserved must be 0 (call fx_image_encode_params_init first)");
    const std::string_view parameters = p.parameters_text != nullptr ? p.parameters_text : std::string_view{};
    auto blob = std::make_unique<fx_blob>();
    with_function_name(function, [&] {
      blob->bytes = fx::image::encode(rgb, width, height, static_cast<fx::image::Format>(p.format), p.quality,
                                      parameters);
    });
    *out = blob.release();
  });
}

FX_API fx_status fx_image_decode(const void* data, size_t size, int32_t* width, int32_t* height, int32_t* format,
                                 fx_blob** rgb) {
  const char* const function = __func__;  // inside the lambda __func__ is "operator()"
  return guard(function, [&] {
    // Poison every output first, so a caller that ignores the status reads nothing stale.
    if (width != nullptr) *width = 0;
    if (height != nullptr) *height = 0;
    if (format != nullptr) *format = 0;
    if (rgb != nullptr) *rgb = nullptr;
    require(width != nullptr && height != nullptr && format != nullptr && rgb != nullptr, function,
            "width, height, format or rgb is NULL");
    require(data != nullptr || size == 0, function, "data is NULL but size is not 0");
    auto blob = std::make_unique<fx_blob>();
    fx::image::Image image;
    with_function_name(function, [&] { image = fx::image::decode(static_cast<const uint8_t*>(data), size); });
    blob->bytes = std::move(image.rgb);
    *width = image.width;
    *height = image.height;
    *format = static_cast<int32_t>(image.format);
    *rgb = blob.release();
  });
}

}  // extern "C"
