// C ABI: latent packing and the Euler step (docs/flux-model.md §4.3, §6.2).
#include <cmath>
#include <string>

#include "api/guard.h"
#include "ops/cpu/latents.h"

using fx::api::guard;
using fx::api::require;

namespace {

fx::cpu::LatentShape latent_shape(const char* function, int32_t batch, int32_t channels, int32_t height,
                                  int32_t width, size_t count) {
  require(batch >= 1 && channels >= 1 && height >= 2 && width >= 2, function,
          "batch and channels must be >= 1, height and width >= 2");
  require(height % 2 == 0 && width % 2 == 0, function, "height and width must be even (2x2 patches)");
  const size_t expected = static_cast<size_t>(batch) * channels * height * width;
  if (count != expected)
    fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": count is " + std::to_string(count) + " but [" +
                                          std::to_string(batch) + ", " + std::to_string(channels) + ", " +
                                          std::to_string(height) + ", " + std::to_string(width) + "] holds " +
                                          std::to_string(expected));
  return {batch, channels, height, width};
}

}  // namespace

extern "C" {

FX_API fx_status fx_latents_pack(const float* latents, int32_t batch, int32_t channels, int32_t height, int32_t width,
                                 float* packed, size_t count) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(latents != nullptr && packed != nullptr, function, "latents and packed must not be NULL");
    require(latents != packed, function, "latents and packed must not be the same buffer");
    fx::cpu::pack_latents(latent_shape(function, batch, channels, height, width, count), latents, packed);
  });
}

FX_API fx_status fx_latents_unpack(const float* packed, int32_t batch, int32_t channels, int32_t height,
                                   int32_t width, float* latents, size_t count) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(latents != nullptr && packed != nullptr, function, "latents and packed must not be NULL");
    require(latents != packed, function, "latents and packed must not be the same buffer");
    fx::cpu::unpack_latents(latent_shape(function, batch, channels, height, width, count), packed, latents);
  });
}

FX_API fx_status fx_euler_step(float* x, const float* velocity, size_t count, float dt) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(x != nullptr && velocity != nullptr, function, "x and velocity must not be NULL");
    require(std::isfinite(dt), function, "dt must be finite");
    fx::cpu::euler_step(x, velocity, static_cast<int64_t>(count), dt);
  });
}

}  // extern "C"
