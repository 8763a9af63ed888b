// C ABI: errors, version and build information, dtypes, ABI self-description, the test hook.
#include <dlfcn.h>

#include <cstddef>
#include <cstdio>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "api/guard.h"
#include "core/cpu_features.h"
#include "core/dtype.h"
#include "backend/cuda_devices.h"  // stand-ins (no device) in a build without CUDA
#if defined(FX_WITH_CUDA)
#include "ops/cuda/convert.h"
#endif

namespace fx::api {

namespace {
thread_local std::string t_last_error;
}

fx_status set_error(fx_status status, const std::string& message) noexcept {
  try {
    t_last_error = message;
  } catch (...) {
    // Out of memory while recording the message: keep whatever was there; the status still tells.
  }
  return status;
}

fx_status copy_string_out(const char* function, const std::string& value, char* buffer, size_t capacity,
                          size_t* needed) {
  require(needed != nullptr, function, "needed is NULL");
  require(buffer != nullptr || capacity == 0, function, "buffer is NULL but capacity is not 0");
  *needed = value.size() + 1;
  if (capacity < value.size() + 1) {
    return set_error(FX_ERR_BUFFER_TOO_SMALL, std::string(function) + ": buffer of " + std::to_string(capacity) +
                                                  " bytes is too small, " + std::to_string(value.size() + 1) +
                                                  " needed");
  }
  std::memcpy(buffer, value.c_str(), value.size() + 1);
  return FX_OK;
}

}  // namespace fx::api

using fx::api::guard;
using fx::api::require;

extern "C" {

FX_API const char* fx_last_error(void) { return fx::api::t_last_error.c_str(); }

FX_API const char* fx_status_name(int32_t status) {
  switch (status) {
    case FX_OK: return "FX_OK";
    case FX_ERR_INVALID_ARGUMENT: return "FX_ERR_INVALID_ARGUMENT";
    case FX_ERR_OUT_OF_MEMORY: return "FX_ERR_OUT_OF_MEMORY";
    case FX_ERR_IO: return "FX_ERR_IO";
    case FX_ERR_FORMAT: return "FX_ERR_FORMAT";
    case FX_ERR_NOT_FOUND: return "FX_ERR_NOT_FOUND";
    case FX_ERR_UNSUPPORTED: return "FX_ERR_UNSUPPORTED";
    case FX_ERR_BUFFER_TOO_SMALL: return "FX_ERR_BUFFER_TOO_SMALL";
    case FX_ERR_CANCELLED: return "FX_ERR_CANCELLED";
    case FX_ERR_BACKEND: return "FX_ERR_BACKEND";
    case FX_ERR_INTERNAL: return "FX_ERR_INTERNAL";
    default: return "FX_UNKNOWN_STATUS";
  }
}

FX_API uint32_t fx_abi_version(void) { return FX_ABI_VERSION; }

FX_API const char* fx_version(void) { return FX_VERSION_STRING; }

FX_API void fx_build_info_init(fx_build_info* info) {
  if (info == nullptr) return;
  *info = fx_build_info{};
  info->struct_size = sizeof(fx_build_info);
}

FX_API fx_status fx_get_build_info(fx_build_info* info) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    fx_build_info value{};
    value.abi_version = FX_ABI_VERSION;
    value.backends = FX_BACKEND_CPU;
    value.cpu_features = fx::cpu_features();
    value.cpu_features_machine = fx::cpu_features_machine();
#if defined(FX_WITH_CUDA)
    value.backends |= FX_BACKEND_CUDA;
    value.cuda_toolkit_version = FX_CUDA_TOOLKIT_VERSION;
    value.cuda_driver_version = fx::cuda::driver_version();
    value.cuda_device_count = fx::cuda::device_count();
#endif
    fx::api::write_versioned(info, function, value);
  });
}

FX_API void fx_cuda_device_info_init(fx_cuda_device_info* info) {
  if (info == nullptr) return;
  *info = fx_cuda_device_info{};
  info->struct_size = sizeof(fx_cuda_device_info);
}

FX_API fx_status fx_cuda_device_info_get(int32_t device, fx_cuda_device_info* info) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(info != nullptr, function, "info is NULL");
    const fx::cuda::DeviceProperties p = fx::cuda::device_properties(device);
    const fx::cuda::ArenaUsage usage = fx::cuda::arena_usage(device);
    fx_cuda_device_info value{};
    std::snprintf(value.name, sizeof value.name, "%s", p.name.c_str());
    value.compute_major = p.compute_major;
    value.compute_minor = p.compute_minor;
    value.multiprocessors = p.multiprocessors;
    value.total_memory_bytes = p.total_bytes;
    value.free_memory_bytes = p.free_bytes;
    value.arena_bytes_held = usage.held;
    value.arena_bytes_peak = usage.peak;
    fx::api::write_versioned(info, function, value);
  });
}

FX_API fx_status fx_library_path(char* buffer, size_t capacity, size_t* needed) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  fx_status status = FX_OK;
  fx_status guarded = guard(function, [&] {
    Dl_info dl{};
    if (dladdr(reinterpret_cast<void*>(&fx_library_path), &dl) == 0 || dl.dli_fname == nullptr)
      fx::fail(FX_ERR_NOT_FOUND, "fx_library_path: the dynamic loader does not know this library's file");
    status = fx::api::copy_string_out(function, dl.dli_fname, buffer, capacity, needed);
  });
  return guarded != FX_OK ? guarded : status;
}

FX_API size_t fx_dtype_size(int32_t dtype) {
  return fx::dtype_valid(dtype) ? fx::dtype_size(static_cast<fx::DType>(dtype)) : 0;
}

FX_API const char* fx_dtype_name(int32_t dtype) {
  return fx::dtype_valid(dtype) ? fx::dtype_name(static_cast<fx::DType>(dtype)) : "?";
}

FX_API fx_status fx_convert(int32_t src_dtype, const void* src, int32_t dst_dtype, void* dst, size_t count,
                            int32_t overflow) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(fx::dtype_valid(src_dtype), function, "src_dtype is not a valid fx_dtype");
    require(fx::dtype_valid(dst_dtype), function, "dst_dtype is not a valid fx_dtype");
    require(overflow == FX_OVERFLOW_SATURATE || overflow == FX_OVERFLOW_IEEE, function,
            "overflow must be FX_OVERFLOW_SATURATE or FX_OVERFLOW_IEEE");
    require(count == 0 || (src != nullptr && dst != nullptr), function, "src or dst is NULL");
    fx::convert(static_cast<fx::DType>(src_dtype), src, static_cast<fx::DType>(dst_dtype), dst, count,
                static_cast<fx::Overflow>(overflow));
  });
}

// ---- ABI self-description -----------------------------------------------------------------------

namespace {
struct FieldOffset {
  const char* structure;
  const char* field;
  size_t offset;
};
struct StructSize {
  const char* structure;
  size_t size;
};

#define FX_FIELD(S, F) FieldOffset{#S, #F, offsetof(S, F)}
const FieldOffset kFieldOffsets[] = {
    FX_FIELD(fx_build_info, struct_size), FX_FIELD(fx_build_info, abi_version),
    FX_FIELD(fx_build_info, backends), FX_FIELD(fx_build_info, cpu_features),
    FX_FIELD(fx_build_info, cuda_toolkit_version), FX_FIELD(fx_build_info, cuda_driver_version),
    FX_FIELD(fx_build_info, cuda_device_count), FX_FIELD(fx_build_info, cpu_features_machine),
    FX_FIELD(fx_tensor_info, struct_size), FX_FIELD(fx_tensor_info, dtype), FX_FIELD(fx_tensor_info, name),
    FX_FIELD(fx_tensor_info, file), FX_FIELD(fx_tensor_info, ndim), FX_FIELD(fx_tensor_info, block_type),
    FX_FIELD(fx_tensor_info, shape), FX_FIELD(fx_tensor_info, byte_size), FX_FIELD(fx_tensor_info, file_offset),
    FX_FIELD(fx_tensor_view, name), FX_FIELD(fx_tensor_view, dtype), FX_FIELD(fx_tensor_view, ndim),
    FX_FIELD(fx_tensor_view, shape), FX_FIELD(fx_tensor_view, data), FX_FIELD(fx_tensor_view, byte_size),
    FX_FIELD(fx_tiny_model_params, struct_size), FX_FIELD(fx_tiny_model_params, kind),
    FX_FIELD(fx_tiny_model_params, layout), FX_FIELD(fx_tiny_model_params, dtype),
    FX_FIELD(fx_tiny_model_params, guidance), FX_FIELD(fx_tiny_model_params, shards),
    FX_FIELD(fx_tiny_model_params, seed), FX_FIELD(fx_tiny_model_params, hidden_size),
    FX_FIELD(fx_tiny_model_params, num_heads), FX_FIELD(fx_tiny_model_params, depth),
    FX_FIELD(fx_tiny_model_params, depth_single),
    FX_FIELD(fx_tiny_model_params, shapes),
    FX_FIELD(fx_flux_load_params, struct_size), FX_FIELD(fx_flux_load_params, weight_format),
    FX_FIELD(fx_flux_load_params, num_threads), FX_FIELD(fx_flux_load_params, activations),
    FX_FIELD(fx_flux_load_params, device), FX_FIELD(fx_flux_load_params, loras),
    FX_FIELD(fx_flux_load_params, lora_count), FX_FIELD(fx_lora, checkpoint), FX_FIELD(fx_lora, strength),
    FX_FIELD(fx_flux_inputs, struct_size), FX_FIELD(fx_flux_inputs, batch), FX_FIELD(fx_flux_inputs, img_tokens),
    FX_FIELD(fx_flux_inputs, txt_tokens), FX_FIELD(fx_flux_inputs, img), FX_FIELD(fx_flux_inputs, img_ids),
    FX_FIELD(fx_flux_inputs, txt), FX_FIELD(fx_flux_inputs, txt_ids), FX_FIELD(fx_flux_inputs, y),
    FX_FIELD(fx_flux_inputs, timesteps), FX_FIELD(fx_flux_inputs, guidance), FX_FIELD(fx_flux_inputs, cancel),
    FX_FIELD(fx_flux_inputs, step_caches), FX_FIELD(fx_flux_inputs, blocks_computed),
    FX_FIELD(fx_flux_step_cache_params, struct_size), FX_FIELD(fx_flux_step_cache_params, threshold),
    FX_FIELD(fx_flux_step_cache_params, head_blocks), FX_FIELD(fx_flux_step_cache_params, tail_blocks),
    FX_FIELD(fx_flux_step_cache_params, warmup_steps), FX_FIELD(fx_flux_step_cache_params, final_steps),
    FX_FIELD(fx_flux_step_cache_params, max_consecutive), FX_FIELD(fx_flux_step_cache_params, total_steps),
    FX_FIELD(fx_ae_load_params, struct_size), FX_FIELD(fx_ae_load_params, num_threads),
    FX_FIELD(fx_ae_load_params, device),
    FX_FIELD(fx_text_load_params, struct_size), FX_FIELD(fx_text_load_params, weight_format),
    FX_FIELD(fx_text_load_params, num_threads), FX_FIELD(fx_text_load_params, device),
    FX_FIELD(fx_text_load_params, kind),
    FX_FIELD(fx_engine_file, name), FX_FIELD(fx_engine_file, data), FX_FIELD(fx_engine_file, size),
    FX_FIELD(fx_engine_build_params, struct_size), FX_FIELD(fx_engine_build_params, transformer),
    FX_FIELD(fx_engine_build_params, autoencoder), FX_FIELD(fx_engine_build_params, clip),
    FX_FIELD(fx_engine_build_params, t5), FX_FIELD(fx_engine_build_params, precision),
    FX_FIELD(fx_engine_build_params, t5_precision), FX_FIELD(fx_engine_build_params, device),
    FX_FIELD(fx_engine_build_params, build_json), FX_FIELD(fx_engine_build_params, files),
    FX_FIELD(fx_engine_build_params, file_count), FX_FIELD(fx_engine_build_params, num_threads),
    FX_FIELD(fx_image_encode_params, struct_size), FX_FIELD(fx_image_encode_params, format),
    FX_FIELD(fx_image_encode_params, quality), FX_FIELD(fx_image_encode_params, reserved),
    FX_FIELD(fx_image_encode_params, parameters_text),
    FX_FIELD(fx_cuda_device_info, struct_size), FX_FIELD(fx_cuda_device_info, name),
    FX_FIELD(fx_cuda_device_info, compute_major), FX_FIELD(fx_cuda_device_info, compute_minor),
    FX_FIELD(fx_cuda_device_info, multiprocessors), FX_FIELD(fx_cuda_device_info, total_memory_bytes),
    FX_FIELD(fx_cuda_device_info, free_memory_bytes), FX_FIELD(fx_cuda_device_info, arena_bytes_held),
    FX_FIELD(fx_cuda_device_info, arena_bytes_peak),
};
#undef FX_FIELD

const StructSize kStructSizes[] = {
    {"fx_build_info", sizeof(fx_build_info)},
    {"fx_tensor_info", sizeof(fx_tensor_info)},
    {"fx_tensor_view", sizeof(fx_tensor_view)},
    {"fx_tiny_model_params", sizeof(fx_tiny_model_params)},
    {"fx_flux_load_params", sizeof(fx_flux_load_params)},
    {"fx_lora", sizeof(fx_lora)},
    {"fx_flux_inputs", sizeof(fx_flux_inputs)},
    {"fx_flux_step_cache_params", sizeof(fx_flux_step_cache_params)},
    {"fx_ae_load_params", sizeof(fx_ae_load_params)},
    {"fx_text_load_params", sizeof(fx_text_load_params)},
    {"fx_engine_file", sizeof(fx_engine_file)},
    {"fx_engine_build_params", sizeof(fx_engine_build_params)},
    {"fx_image_encode_params", sizeof(fx_image_encode_params)},
    {"fx_cuda_device_info", sizeof(fx_cuda_device_info)},
};
}  // namespace

FX_API fx_status fx_abi_struct_size(const char* struct_name, size_t* size) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(struct_name != nullptr && size != nullptr, function, "struct_name or size is NULL");
    for (const auto& entry : kStructSizes) {
      if (std::string_view(entry.structure) == struct_name) {
        *size = entry.size;
        return;
      }
    }
    fx::fail(FX_ERR_NOT_FOUND, std::string(function) + ": no struct named \"" + struct_name + "\" in the ABI");
  });
}

FX_API fx_status fx_abi_field_offset(const char* struct_name, const char* field_name, size_t* offset) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(struct_name != nullptr && field_name != nullptr && offset != nullptr, function,
            "struct_name, field_name or offset is NULL");
    for (const auto& entry : kFieldOffsets) {
      if (std::string_view(entry.structure) == struct_name && std::string_view(entry.field) == field_name) {
        *offset = entry.offset;
        return;
      }
    }
    fx::fail(FX_ERR_NOT_FOUND, std::string(function) + ": no field \"" + field_name + "\" in struct \"" +
                                   struct_name + "\"");
  });
}

FX_API fx_status fx_debug_throw(int32_t kind) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    switch (kind) {
      case 0: throw std::runtime_error("fx_debug_throw: a std::runtime_error, as asked");
      case 1: throw std::bad_alloc();
      case 2: throw 42;  // not derived from std::exception: only a catch (...) stops it
      default: fx::fail(FX_ERR_INVALID_ARGUMENT, "fx_debug_throw: kind must be 0, 1 or 2");
    }
  });
}

}  // extern "C"
