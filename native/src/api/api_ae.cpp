// C ABI: the autoencoder.
#include <memory>
#include <mutex>
#include <string>

#include "api/guard.h"
#include "api/handles.h"
#include "models/autoencoder.h"

using fx::api::guard;
using fx::api::require;

struct fx_ae_model {
  std::unique_ptr<fx::ThreadPool> own_pool;  // when the caller asked for a thread count (outlives the model)
  std::unique_ptr<fx::models::Autoencoder> model;
  std::mutex run_mutex;                      // one decode/encode at a time: two would fight over one pool
};

namespace {

// a·b for sizes that came from a caller, refusing anything that does not fit.
size_t checked_mul(const char* function, size_t a, size_t b) {
  size_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": the tensor sizes overflow");
  return r;
}

std::string shape_text(int64_t b, int64_t c, int64_t h, int64_t w) {
  // Appended piece by piece: GCC 12 warns (falsely, -Wrestrict) on "[" + std::to_string(...).
  std::string s("[");
  for (int64_t d : {b, c, h, w}) {
    if (s.size() > 1) s += ", ";
    s += std::to_string(d);
  }
  s += ']';
  return s;
}

// Checks a caller buffer's element count against the shape it must hold.
void check_count(const char* function, const char* name, size_t count, int64_t b, int64_t c, int64_t h, int64_t w) {
  const size_t expected = checked_mul(function, checked_mul(function, checked_mul(function, size_t(b), size_t(c)), size_t(h)),
                                      size_t(w));
  if (count != expected)
    fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": " + name + " holds " + std::to_string(count) +
                                          " floats but " + shape_text(b, c, h, w) + " needs " + std::to_string(expected));
}

}  // namespace

extern "C" {

FX_API void fx_ae_load_params_init(fx_ae_load_params* params) {
  if (params == nullptr) return;
  *params = fx_ae_load_params{};
  params->struct_size = sizeof(fx_ae_load_params);
}

FX_API fx_status fx_ae_model_load(const fx_checkpoint* checkpoint, const fx_ae_load_params* params,
                                  fx_ae_model** out) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(out != nullptr, function, "out is NULL");
    *out = nullptr;
    require(checkpoint != nullptr, function, "checkpoint is NULL");
    fx_ae_load_params defaults;
    fx_ae_load_params_init(&defaults);
    const auto p = fx::api::read_versioned(params, function, defaults);
    require(p.num_threads >= 0, function, "num_threads must be >= 0");
    auto handle = std::make_unique<fx_ae_model>();
    if (p.num_threads > 0) handle->own_pool = std::make_unique<fx::ThreadPool>(p.num_threads);
    auto backend = fx::api::backend_from(p.device, handle->own_pool.get(), function);
    handle->model = fx::models::Autoencoder::load(*checkpoint->impl, std::move(backend));
    *out = handle.release();
  });
}

FX_API void fx_ae_model_free(fx_ae_model* model) { delete model; }

FX_API fx_status fx_ae_model_config_json(const fx_ae_model* model, char* buffer, size_t capacity, size_t* needed) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  fx_status status = FX_OK;
  fx_status guarded = guard(function, [&] {
    require(model != nullptr, function, "model is NULL");
    const auto& c = model->model->config();
    nlohmann::json j = {{"in_channels", c.in_channels},
                        {"out_channels", c.out_channels},
                        {"ch", c.ch},
                        {"ch_mult", c.ch_mult},
                        {"num_res_blocks", c.num_res_blocks},
                        {"z_channels", c.z_channels},
                        {"downscale", c.downscale()},
                        {"scale_factor", c.scale_factor},
                        {"shift_factor", c.shift_factor},
                        {"norm_num_groups", c.groups},
                        {"mid_attention", c.mid_attention},
                        {"has_encoder", c.has_encoder},
                        {"has_decoder", c.has_decoder}};
    status = fx::api::copy_string_out(function, j.dump(), buffer, capacity, needed);
  });
  return guarded != FX_OK ? guarded : status;
}

FX_API fx_status fx_ae_decode(fx_ae_model* model, const float* latents, int32_t batch, int32_t height, int32_t width,
                              float* pixels, size_t pixel_count, const volatile int32_t* cancel) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(model != nullptr, function, "model is NULL");
    const auto& c = model->model->config();
    if (!c.has_decoder) fx::fail(FX_ERR_UNSUPPORTED, std::string(function) + ": this checkpoint has no decoder");
    require(batch >= 1 && height >= 1 && width >= 1, function, "batch, height and width must all be >= 1");
    require(latents != nullptr && pixels != nullptr, function, "latents and pixels are required");
    const int64_t f = c.downscale();
    const size_t oh = checked_mul(function, size_t(height), size_t(f)), ow = checked_mul(function, size_t(width), size_t(f));
    check_count(function, "pixels", pixel_count, batch, c.out_channels, int64_t(oh), int64_t(ow));
    std::lock_guard<std::mutex> lock(model->run_mutex);
    model->model->decode(latents, batch, height, width, pixels, cancel);
  });
}

FX_API fx_status fx_ae_decode_tiled(fx_ae_model* model, const float* latents, int32_t batch, int32_t height,
                                    int32_t width, int32_t tile, int32_t overlap, float* pixels, size_t pixel_count,
                                    const volatile int32_t* cancel) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(model != nullptr, function, "model is NULL");
    const auto& c = model->model->config();
    if (!c.has_decoder) fx::fail(FX_ERR_UNSUPPORTED, std::string(function) + ": this checkpoint has no decoder");
    require(batch >= 1 && height >= 1 && width >= 1, function, "batch, height and width must all be >= 1");
    require(latents != nullptr && pixels != nullptr, function, "latents and pixels are required");
    const int64_t f = c.downscale();
    const size_t oh = checked_mul(function, size_t(height), size_t(f)), ow = checked_mul(function, size_t(width), size_t(f));
    check_count(function, "pixels", pixel_count, batch, c.out_channels, int64_t(oh), int64_t(ow));
    std::lock_guard<std::mutex> lock(model->run_mutex);
    model->model->decode_tiled(latents, batch, height, width, pixels, tile, overlap, cancel);
  });
}

FX_API fx_status fx_ae_encode(fx_ae_model* model, const float* pixels, int32_t batch, int32_t height, int32_t width,
                              float* latents, size_t latent_count, const volatile int32_t* cancel) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(model != nullptr, function, "model is NULL");
    const auto& c = model->model->config();
    if (!c.has_encoder) fx::fail(FX_ERR_UNSUPPORTED, std::string(function) + ": this checkpoint has no encoder");
    const int64_t f = c.downscale();
    require(batch >= 1 && height >= 1 && width >= 1, function, "batch, height and width must all be >= 1");
    if (height % f != 0 || width % f != 0)
      fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": height and width must be multiples of " +
                                            std::to_string(f) + " (got " + std::to_string(height) + "x" +
                                            std::to_string(width) + ")");
    require(latents != nullptr && pixels != nullptr, function, "pixels and latents are required");
    check_count(function, "latents", latent_count, batch, c.z_channels, height / f, width / f);
    std::lock_guard<std::mutex> lock(model->run_mutex);
    model->model->encode(pixels, batch, height, width, latents, cancel);
  });
}

}  // extern "C"
