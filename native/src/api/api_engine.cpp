// C ABI: building engine files (engine/engine_build.h). Loading one goes through the models' own load calls.
#include <memory>
#include <string>
#include <vector>

#include "api/guard.h"
#include "api/handles.h"
#include "engine/engine_build.h"
#include "engine/engine_format.h"

using fx::api::guard;
using fx::api::require;

namespace {

fx::backend::WeightFormat format_of(int32_t value, const char* field) {
  switch (value) {
    case FX_WEIGHTS_AS_STORED: return fx::backend::WeightFormat::AsStored;
    case FX_WEIGHTS_F32: return fx::backend::WeightFormat::F32;
    case FX_WEIGHTS_BF16: return fx::backend::WeightFormat::BF16;
    case FX_WEIGHTS_FP8: return fx::backend::WeightFormat::FP8;
    default: fx::fail(FX_ERR_INVALID_ARGUMENT, std::string("fx_engine_build: ") + field + " must be an fx_weight_format");
  }
}

}  // namespace

extern "C" {

FX_API void fx_engine_build_params_init(fx_engine_build_params* params) {
  if (params == nullptr) return;
  *params = fx_engine_build_params{};
  params->struct_size = sizeof(fx_engine_build_params);
  params->precision = FX_WEIGHTS_BF16;
  params->t5_precision = FX_WEIGHTS_AS_STORED;
}

FX_API fx_status fx_engine_build(const fx_engine_build_params* params, const char* path) {
  return guard(__func__, [&] {
    require(params != nullptr, __func__, "params is NULL");
    require(path != nullptr && *path != '\0', __func__, "path is NULL or empty");
    fx_engine_build_params defaults;
    fx_engine_build_params_init(&defaults);
    const auto p = fx::api::read_versioned(params, __func__, defaults);
    require(p.transformer != nullptr, __func__, "the transformer is required");
    require(p.num_threads >= 0, __func__, "num_threads must be >= 0");
    require(p.file_count >= 0 && (p.file_count == 0 || p.files != nullptr), __func__,
            "files is NULL but file_count is not 0");
    std::unique_ptr<fx::ThreadPool> pool;  // outlives the backend below, which runs on it
    if (p.num_threads > 0) pool = std::make_unique<fx::ThreadPool>(p.num_threads);
    fx::engine::BuildOptions o;
    o.transformer = p.transformer->impl.get();
    o.autoencoder = p.autoencoder != nullptr ? p.autoencoder->impl.get() : nullptr;
    o.clip = p.clip != nullptr ? p.clip->impl.get() : nullptr;
    o.t5 = p.t5 != nullptr ? p.t5->impl.get() : nullptr;
    o.precision = format_of(p.precision, "precision");
    o.t5_precision = format_of(p.t5_precision, "t5_precision");
    if (p.build_json != nullptr) {
      try {
        o.build_info = nlohmann::json::parse(p.build_json);
      } catch (const nlohmann::json::exception& e) {
        fx::fail(FX_ERR_INVALID_ARGUMENT, std::string("fx_engine_build: build_json is not valid JSON: ") + e.what());
      }
    }
    for (int32_t i = 0; i < p.file_count; ++i) {
      require(p.files[i].name != nullptr, __func__, "an embedded file has no name");
      o.files.push_back({p.files[i].name, p.files[i].data, p.files[i].size});
    }
    o.backend = fx::api::backend_from(p.device, pool.get(), __func__);
    fx::engine::build_engine(o, path);
  });
}

FX_API fx_status fx_engine_amend_build_json(const char* path, const char* build_json) {
  return guard(__func__, [&] {
    require(path != nullptr && *path != '\0', __func__, "path is NULL or empty");
    require(build_json != nullptr, __func__, "build_json is NULL");
    nlohmann::json build;
    try {
      build = nlohmann::json::parse(build_json);
    } catch (const nlohmann::json::exception& e) {
      fx::fail(FX_ERR_INVALID_ARGUMENT, std::string("fx_engine_amend_build_json: not valid JSON: ") + e.what());
    }
    fx::engine::amend_build_info(path, build);
  });
}

}  // extern "C"
