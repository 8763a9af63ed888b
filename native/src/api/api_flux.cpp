// C ABI: the FLUX transformer.
#include <string>
#include <vector>

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
    std::vector<fx::models::FluxStepCache*> caches;
    if (in.step_caches != nullptr) {
      for (int32_t b = 0; b < in.batch; ++b) {
        const fx_flux_step_cache* cache = in.step_caches[b];
        if (cache != nullptr && cache->model != model)
          fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": step_caches[" + std::to_string(b) +
                                                "] was created for another model");
        caches.push_back(cache != nullptr ? cache->impl.get() : nullptr);
      }
      f.step_caches = caches.data();
    }
    f.blocks_computed = in.blocks_computed;
    std::lock_guard<std::mutex> lock(model->forward_mutex);
    model->model->forward(f, out);
  });
}

FX_API void fx_flux_step_cache_params_init(fx_flux_step_cache_params* params) {
  if (params == nullptr) return;
  const fx::models::StepCachePolicy defaults;
  *params = fx_flux_step_cache_params{};
  params->struct_size = sizeof(fx_flux_step_cache_params);
  params->threshold = static_cast<float>(defaults.threshold);
  params->head_blocks = defaults.head_blocks;
  params->tail_blocks = defaults.tail_blocks;
  params->warmup_steps = defaults.warmup_steps;
  params->final_steps = defaults.final_steps;
  params->max_consecutive = defaults.max_consecutive;
  params->total_steps = defaults.total_steps;
}

FX_API fx_status fx_flux_step_cache_create(const fx_flux_model* model, const fx_flux_step_cache_params* params,
                                           fx_flux_step_cache** out) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(out != nullptr, function, "out is NULL");
    *out = nullptr;
    require(model != nullptr, function, "model is NULL");
    fx_flux_step_cache_params defaults;
    fx_flux_step_cache_params_init(&defaults);
    const auto p = fx::api::read_versioned(params, function, defaults);
    fx::models::StepCachePolicy policy;
    policy.threshold = p.threshold;
    policy.head_blocks = p.head_blocks;
    policy.tail_blocks = p.tail_blocks;
    policy.warmup_steps = p.warmup_steps;
    policy.final_steps = p.final_steps;
    policy.max_consecutive = p.max_consecutive;
    policy.total_steps = p.total_steps;
    auto handle = std::make_unique<fx_flux_step_cache>();
    handle->model = model;
    handle->impl = std::make_unique<fx::models::FluxStepCache>(policy);
    *out = handle.release();
  });
}

FX_API void fx_flux_step_cache_free(fx_flux_step_cache* cache) { delete cache; }

FX_API fx_status fx_flux_step_cache_reset(fx_flux_step_cache* cache) {
  const char* const function = __func__;
  return guard(function, [&] {
    require(cache != nullptr, function, "cache is NULL");
    cache->impl->reset();
  });
}

FX_API fx_status fx_flux_step_cache_stats(const fx_flux_step_cache* cache, int32_t* steps, int32_t* reused_steps,
                                          double* last_change) {
  const char* const function = __func__;
  return guard(function, [&] {
    require(cache != nullptr, function, "cache is NULL");
    if (steps != nullptr) *steps = cache->impl->step();
    if (reused_steps != nullptr) *reused_steps = cache->impl->reused_steps();
    if (last_change != nullptr) *last_change = cache->impl->last_change();
  });
}

}  // extern "C"
