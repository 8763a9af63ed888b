// C ABI: the FLUX transformer.
#include <string>

#include "api/guard.h"
#include "api/handles.h"

using fx::api::guard;
using fx::api::require;

extern "C" {

FX_API void fx_flux_load_params_init(fx_flux_load_params* params) {
  if (params == nullptr) return;
  *params = fx_flux_load_params{};
  params->struct_size = sizeof(fx_flux_load_params);
  params->weight_format = FX_WEIGHTS_AS_STORED;
}

FX_API fx_status fx_flux_model_load(const fx_checkpoint* checkpoint, const fx_flux_load_params* params,
                                    fx_flux_model** out) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(out != nullptr, function, "out is NULL");
    *out = nullptr;
    require(checkpoint != nullptr, function, "checkpoint is NULL");
    fx_flux_load_params defaults;
    fx_flux_load_params_init(&defaults);
    const auto p = fx::api::read_versioned(params, function, defaults);
    fx::backend::WeightFormat format;
    switch (p.weight_format) {
      case FX_WEIGHTS_AS_STORED: format = fx::backend::WeightFormat::AsStored; break;
      case FX_WEIGHTS_F32: format = fx::backend::WeightFormat::F32; break;
      case FX_WEIGHTS_BF16: format = fx::backend::WeightFormat::BF16; break;
      case FX_WEIGHTS_FP8: format = fx::backend::WeightFormat::FP8; break;
      default: fx::fail(FX_ERR_INVALID_ARGUMENT, "fx_flux_model_load: weight_format must be an fx_weight_format");
    }
    require(p.num_threads >= 0, function, "num_threads must be >= 0");
    require(p.activations == FX_ACTIVATIONS_F32 || p.activations == FX_ACTIVATIONS_BF16, function,
            "activations must be FX_ACTIVATIONS_F32 or FX_ACTIVATIONS_BF16");
    const auto precision =
        p.activations == FX_ACTIVATIONS_BF16 ? fx::backend::Precision::Bf16Activations : fx::backend::Precision::Exact;
    require(p.lora_count >= 0, function, "lora_count must be >= 0");
    require(p.lora_count == 0 || p.loras != nullptr, function, "loras is NULL but lora_count is not 0");
    std::vector<fx::models::LoraFile> loras;
    for (int32_t i = 0; i < p.lora_count; ++i) {
      require(p.loras[i].checkpoint != nullptr, function, ("loras[" + std::to_string(i) + "].checkpoint is NULL").c_str());
      loras.push_back({p.loras[i].checkpoint->impl.get(), p.loras[i].strength});
    }
    auto handle = std::make_unique<fx_flux_model>();
    if (p.num_threads > 0) handle->own_pool = std::make_unique<fx::ThreadPool>(p.num_threads);
    auto backend = fx::api::backend_from(p.device, handle->own_pool.get(), function);
    handle->model = fx::models::FluxTransformer::load(*checkpoint->impl, format, precision, std::move(backend), loras);
    *out = handle.release();
  });
}

FX_API void fx_flux_model_free(fx_flux_model* model) { delete model; }

FX_API fx_status fx_flux_model_config_json(const fx_flux_model* model, char* buffer, size_t capacity,
                                           size_t* needed) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  fx_status status = FX_OK;
  fx_status guarded = guard(function, [&] {
    require(model != nullptr, function, "model is NULL");
    const auto& c = model->model->config();
    nlohmann::json j = {{"in_channels", c.in_channels},       {"out_channels", c.out_channels},
                        {"hidden_size", c.hidden},            {"num_heads", c.heads},
                        {"head_dim", c.head_dim},             {"mlp_hidden", c.mlp_hidden},
                        {"context_in_dim", c.context_in_dim}, {"vec_in_dim", c.vec_in_dim},
                        {"time_embed_dim", c.time_embed_dim}, {"depth", c.depth},
                        {"depth_single", c.depth_single},     {"guidance_embed", c.guidance_embed},
                        {"axes_dim", c.axes_dim},             {"theta", c.theta}};
    status = fx::api::copy_string_out(function, j.dump(), buffer, capacity, needed);
  });
  return guarded != FX_OK ? guarded : status;
}

FX_API void fx_flux_inputs_init(fx_flux_inputs* inputs) {
  if (inputs == nullptr) return;
  *inputs = fx_flux_inputs{};
  inputs->struct_size = sizeof(fx_flux_inputs);
  inputs->batch = 1;
}

FX_API fx_status fx_flux_forward(fx_flux_model* model, const fx_flux_inputs* inputs, float* out, size_t out_count) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(model != nullptr, function, "model is NULL");
    fx_flux_inputs defaults;
    fx_flux_inputs_init(&defaults);
    const auto in = fx::api::read_versioned(inputs, function, defaults);
    const auto& c = model->model->config();
    require(in.batch >= 1 && in.img_tokens >= 1 && in.txt_tokens >= 1, function,
            "batch, img_tokens and txt_tokens must all be >= 1");
    const size_t expected = static_cast<size_t>(in.batch) * in.img_tokens * c.out_channels;
    if (out_count != expected) {
      fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": out holds " + std::to_string(out_count) +
                                            " floats but [" + std::to_string(in.batch) + ", " +
                                            std::to_string(in.img_tokens) + ", " + std::to_string(c.out_channels) +
                                            "] needs " + std::to_string(expected));
    }
    fx::models::FluxInputs f;
    f.batch = in.batch;
    f.img_tokens = in.img_tokens;
    f.txt_tokens = in.txt_tokens;
    f.img = in.img;
    f.img_ids = in.img_ids;
    f.txt = in.txt;
    f.txt_ids = in.txt_ids;
    f.y = in.y;
    f.timesteps = in.timesteps;
    f.guidance = in.guidance;
    f.cancel = in.cancel;
    std::lock_guard<std::mutex> lock(model->forward_mutex);
    model->model->forward(f, out);
  });
}

}  // extern "C"
