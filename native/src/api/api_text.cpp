// C ABI: the text encoders (CLIP text tower, T5 encoder).
#include <memory>
#include <mutex>
#include <string>

#include "api/guard.h"
#include "api/handles.h"
#include "models/text_encoders.h"

using fx::api::guard;
using fx::api::require;

struct fx_text_model {
  std::unique_ptr<fx::ThreadPool> own_pool;  // when the caller asked for a thread count (outlives the model)
  std::unique_ptr<fx::models::TextEncoder> model;
  std::mutex encode_mutex;                   // one encode at a time: two would fight over one pool
};

namespace {

// a·b for sizes that came from a caller, refusing anything that does not fit.
size_t checked_mul(const char* function, size_t a, size_t b) {
  size_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": the tensor sizes overflow");
  return r;
}

// Checks a caller buffer's element count against the shape it must hold; a NULL buffer must come with 0.
void check_count(const char* function, const char* name, const float* buffer, size_t count,
                 std::initializer_list<int64_t> shape) {
  if (buffer == nullptr) {
    if (count != 0)
      fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": " + name + " is NULL but " + name + "_count is " +
                                            std::to_string(count) + " (pass 0 with NULL)");
    return;
  }
  size_t expected = 1;
  std::string text("[");
  for (int64_t d : shape) {
    expected = checked_mul(function, expected, static_cast<size_t>(d));
    if (text.size() > 1) text += ", ";
    text += std::to_string(d);
  }
  text += ']';
  if (count != expected)
    fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": " + name + " holds " + std::to_string(count) +
                                          " floats but " + text + " needs " + std::to_string(expected));
}

}  // namespace

extern "C" {

FX_API void fx_text_load_params_init(fx_text_load_params* params) {
  if (params == nullptr) return;
  *params = fx_text_load_params{};
  params->struct_size = sizeof(fx_text_load_params);
  params->weight_format = FX_WEIGHTS_AS_STORED;
}

FX_API fx_status fx_text_model_load(const fx_checkpoint* checkpoint, const fx_text_load_params* params,
                                    fx_text_model** out) {
  return guard(__func__, [&] {
    require(out != nullptr, __func__, "out is NULL");
    *out = nullptr;
    require(checkpoint != nullptr, __func__, "checkpoint is NULL");
    fx_text_load_params defaults;
    fx_text_load_params_init(&defaults);
    const auto p = fx::api::read_versioned(params, __func__, defaults);
    fx::backend::WeightFormat format;
    switch (p.weight_format) {
      case FX_WEIGHTS_AS_STORED: format = fx::backend::WeightFormat::AsStored; break;
      case FX_WEIGHTS_F32: format = fx::backend::WeightFormat::F32; break;
      case FX_WEIGHTS_BF16: format = fx::backend::WeightFormat::BF16; break;
      case FX_WEIGHTS_FP8: format = fx::backend::WeightFormat::FP8; break;
      default: fx::fail(FX_ERR_INVALID_ARGUMENT, "fx_text_model_load: weight_format must be an fx_weight_format");
    }
    require(p.num_threads >= 0, __func__, "num_threads must be >= 0");
    auto handle = std::make_unique<fx_text_model>();
    if (p.num_threads > 0) handle->own_pool = std::make_unique<fx::ThreadPool>(p.num_threads);
    auto backend = fx::api::backend_from(p.device, handle->own_pool.get(), __func__);
    handle->model = fx::models::TextEncoder::load(*checkpoint->impl, format, std::move(backend),
                                                  p.kind != nullptr ? p.kind : "");
    *out = handle.release();
  });
}

FX_API void fx_text_model_free(fx_text_model* model) { delete model; }

FX_API fx_status fx_text_model_config_json(const fx_text_model* model, char* buffer, size_t capacity,
                                           size_t* needed) {
  fx_status status = FX_OK;
  fx_status guarded = guard(__func__, [&] {
    require(model != nullptr, __func__, "model is NULL");
    const auto& c = model->model->config();
    nlohmann::json j = {{"kind", c.kind_name()},
                        {"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden},
                        {"num_layers", c.layers},
                        {"num_heads", c.heads},
                        {"head_dim", c.head_dim},
                        {"intermediate_size", c.intermediate},
                        {"max_positions", c.max_positions},
                        {"num_buckets", c.num_buckets},
                        {"max_distance", c.max_distance},
                        {"eps", c.eps}};
    status = fx::api::copy_string_out(__func__, j.dump(), buffer, capacity, needed);
  });
  return guarded != FX_OK ? guarded : status;
}

FX_API fx_status fx_text_encode(fx_text_model* model, const int32_t* ids, int32_t batch, int32_t length,
                                float* hidden, size_t hidden_count, float* pooled, size_t pooled_count,
                                const volatile int32_t* cancel) {
  return guard(__func__, [&] {
    require(model != nullptr, __func__, "model is NULL");
    require(ids != nullptr, __func__, "ids is NULL");
    require(batch >= 1 && length >= 1, __func__, "batch and length must be >= 1");
    const auto& c = model->model->config();
    if (c.kind == fx::models::TextEncoderKind::T5Encoder && pooled != nullptr)
      fx::fail(FX_ERR_INVALID_ARGUMENT,
               std::string(__func__) + ": pooled must be NULL for a T5 encoder (only CLIP has a pooled output)");
    if (c.kind == fx::models::TextEncoderKind::ClipText && length > c.max_positions)
      fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(__func__) + ": length " + std::to_string(length) +
                                            " exceeds the " + std::to_string(c.max_positions) +
                                            " positions of this CLIP model");
    check_count(__func__, "hidden", hidden, hidden_count, {batch, length, c.hidden});
    check_count(__func__, "pooled", pooled, pooled_count, {batch, c.hidden});
    std::lock_guard<std::mutex> lock(model->encode_mutex);
    model->model->encode(ids, batch, length, hidden, pooled, cancel);
  });
}

}  // extern "C"
